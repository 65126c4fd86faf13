"""The kernel loops scripts/profile_step.py times: each of a training step's kernels alone
(one thread), over an epoch's worth of batches, on buffers filled by real steps."""

from __future__ import annotations

import numpy as np
from numba import njit

from rmsprop_cli.backends.cpu import aligned_zeros, column_buffers
from rmsprop_cli.config import JIT as _JIT
from rmsprop_cli.kernels import columns as CC
from rmsprop_cli.kernels import cpu as C
from rmsprop_cli.kernels import steps as K
from rmsprop_cli.kernels import tiles as T

# Not cached: Numba would check only this file for changes, not the kernels it compiles in.
JIT = {**_JIT, "cache": False}
SAVED = 4  # batches whose buffers are kept, the loops cycling through them: in L2, as a real step's are


@njit(**JIT)
def gather_loop(images, order, sizes, rows, lists, n_batches):
    row_cols, row_vals, row_counts, counts, listed, values = lists
    for bi in range(n_batches):
        CC.clear_lists(counts, 0, sizes[0])
        for r in range(rows):
            row_counts[r] = CC.add_row(images, order[bi * rows + r], r, counts, listed, values, 0, rows, row_cols[r],
                                       row_vals[r])


@njit(**JIT)
def forward_loop(acts, row_cols, row_vals, row_counts, sizes, theta, rows, l, act, n_batches):
    for bi in range(n_batches):
        s = bi % acts.shape[0]
        w, b = K.param_layer(theta, sizes, l)
        out = K.act_view(acts[s], sizes, rows, l + 1)
        kind = 0 if l == sizes.size - 2 else act
        if l == 0:
            CC.forward_listed(row_cols[s], row_vals[s], row_counts[s], 0, rows, w, b, out)
            C.activate_rows(out, 0, rows, kind)
        else:
            T.forward_rows(K.act_view(acts[s], sizes, rows, l), w, b, out)
            C.activate_rows(out, 0, rows, kind)


@njit(**JIT)
def softmax_loop(acts, deltas, labels, sizes, rows, n_batches):
    n_layers = sizes.size - 1
    scale = np.float32(1.0 / rows)
    for bi in range(n_batches):
        s = bi % acts.shape[0]
        C.softmax_xent(K.act_view(acts[s], sizes, rows, n_layers), labels[s],
                       K.act_view(deltas[s], sizes, rows, n_layers), scale)


@njit(**JIT)
def input_grad_loop(acts, deltas, sizes, theta, rows, l, act, n_batches):
    for bi in range(n_batches):
        s = bi % acts.shape[0]
        w, _ = K.param_layer(theta, sizes, l)
        T.input_grad_rows(K.act_view(acts[s], sizes, rows, l), w, K.act_view(deltas[s], sizes, rows, l + 1),
                          K.act_view(deltas[s], sizes, rows, l), act)


@njit(**JIT)
def grad_loop(acts, deltas, counts, listed, values, sizes, theta, state, rows, l, p, plain, n_batches, update):
    lr = np.float32(1e-3)
    one = np.float32(1.0)
    for bi in range(n_batches):
        s = bi % deltas.shape[0]
        w, b = K.param_layer(theta, sizes, l)
        delta = K.act_view(deltas[s], sizes, rows, l + 1)
        x = K.act_view(acts[s], sizes, rows, l)
        vw, mw, bw = (K.param_layer(state[0], sizes, l)[0], K.param_layer(state[1], sizes, l)[0],
                      K.param_layer(state[2], sizes, l)[0])
        if update and l == 0:
            CC.update_listed(counts[s], listed[s], values[s], rows, 1, w, delta, vw, mw, bw, p, plain, lr, one, one, 0,
                             w.shape[0])
        elif update:
            CC.update_dense(x, w, delta, vw, mw, bw, p, plain, lr, one, one, 0, w.shape[0])
        elif l == 0:
            g = np.empty(w.shape[1], np.float32)
            for k in range(w.shape[0]):
                CC.listed_grad(delta, counts[s], listed[s], values[s], w.shape[0], rows, k, 1, g)
        else:
            T.grads_rows(x, delta, vw.copy(), 0, w.shape[0])
        if update:
            C.bias_update(b, delta, K.param_layer(state[0], sizes, l)[1], K.param_layer(state[1], sizes, l)[1],
                          K.param_layer(state[2], sizes, l)[1], p, plain, lr, one, one)


def kernels(backend, order, n_batches):
    """(name, zero-argument callable timing one epoch of it, useful work, 'GFLOP' or 'GB') per kernel."""
    from rmsprop_cli.hyper import ACTIVATION

    sizes, rows = backend.sizes, backend.batch_size
    act = int(backend.hp[ACTIVATION])
    p = tuple(np.float32(v) for v in backend.hp)
    acts_one, deltas_one, _ = backend.train_bufs
    # Aligned like the backend's own buffers: a vector load that straddles two cache lines costs two.
    theta, state = aligned_zeros(backend.theta.shape), aligned_zeros(backend.state.shape)
    theta[:], state[:] = backend.theta, backend.state
    acts, deltas = aligned_zeros((SAVED, acts_one.size)), aligned_zeros((SAVED, deltas_one.size))
    saved = [column_buffers(sizes, rows, 1) for _ in range(SAVED)]
    lists = [np.stack([b[i] for b in saved]) for i in range(6)]
    row_cols, row_vals, row_counts, counts, listed, values = lists
    labels = np.zeros((SAVED, rows), np.int64)
    row_loss = np.zeros(rows)
    nz = np.zeros(sizes.size - 1)
    for s in range(SAVED):
        K.batch_rows(backend.images, backend.y, order, s * rows, theta, sizes, acts[s], deltas[s], row_cols[s],
                     row_vals[s], row_counts[s], counts[s], listed[s], values[s], labels[s], row_loss, 0, rows, 0, 1,
                     np.float32(1.0 / rows), act)
        nz[0] += np.count_nonzero(backend.images[order[s * rows:(s + 1) * rows]])
        for l in range(1, sizes.size - 1):
            nz[l] += np.count_nonzero(K.act_view(acts[s], sizes, rows, l))
    density = nz / (SAVED * rows * sizes[:-1])   # non-zero fraction of each layer's input
    macs = [float(density[l]) * sizes[l] * sizes[l + 1] * rows * n_batches for l in range(sizes.size - 1)]
    bytes_in = [rows * n_batches * sizes[l] * (1 if l == 0 else 4) for l in range(sizes.size - 1)]
    one = column_buffers(sizes, rows, 1)
    out = [("gather into lists", lambda: gather_loop(backend.images, order, sizes, rows, one, n_batches),
            bytes_in[0], "GB")]
    for l in range(sizes.size - 1):
        out.append((f"forward {l + 1} ({sizes[l]}->{sizes[l + 1]})",
                    lambda l=l: forward_loop(acts, row_cols, row_vals, row_counts, sizes, theta, rows, l, act,
                                             n_batches), 2 * macs[l], "GFLOP"))
    out.append(("softmax cross-entropy", lambda: softmax_loop(acts, deltas, labels, sizes, rows, n_batches),
                rows * n_batches * sizes[-1] * 4 * 3, "GB"))
    for l in range(sizes.size - 2, 0, -1):
        out.append((f"input grad {l + 1} ({sizes[l + 1]}->{sizes[l]})",
                    lambda l=l: input_grad_loop(acts, deltas, sizes, theta, rows, l, act, n_batches),
                    2 * float(density[l]) * sizes[l] * sizes[l + 1] * rows * n_batches, "GFLOP"))
    for l in range(sizes.size - 1):
        out.append((f"weight grad {l + 1}",
                    lambda l=l: grad_loop(acts, deltas, counts, listed, values, sizes, theta, state, rows, l, p,
                                          backend.plain, n_batches, False), 2 * macs[l], "GFLOP"))
        out.append((f"weight grad+update {l + 1}",
                    lambda l=l: grad_loop(acts, deltas, counts, listed, values, sizes, theta, state, rows, l, p,
                                          backend.plain, n_batches, True), 2 * macs[l], "GFLOP"))
    return out
