"""The kernel loops scripts/profile_step.py times: each of a training step's kernels alone,
over an epoch's worth of batches, on buffers filled by real steps."""

from __future__ import annotations

import numpy as np
from numba import njit

from rmsprop_cli.config import JIT as _JIT

# Not cached: Numba would check only this file for changes, not the kernels it compiles in.
JIT = {**_JIT, "cache": False}
from rmsprop_cli.kernels import cpu as C
from rmsprop_cli.backends.cpu import aligned_zeros
from rmsprop_cli.kernels import steps as K

SAVED = 48  # batches whose activations and deltas are kept; the loops cycle through them


@njit(**JIT)
def gather_loop(images, order, rows, x0, n_batches):
    for bi in range(n_batches):
        for r in range(rows):
            C.load_row(images, order[bi * rows + r], x0[r])


@njit(**JIT)
def forward_loop(acts, sizes, theta, rows, l, act, n_batches):
    for bi in range(n_batches):
        a = acts[bi % acts.shape[0]]
        w, b = K.param_layer(theta, sizes, l)
        last = l == sizes.size - 2
        C.dense_forward(K.act_view(a, sizes, rows, l), w, b, K.act_view(a, sizes, rows, l + 1).copy() if False else
                        K.act_view(a, sizes, rows, l + 1), 0 if last else act)


@njit(**JIT)
def softmax_loop(acts, deltas, labels, sizes, rows, n_batches):
    n_layers = sizes.size - 1
    scale = np.float32(1.0 / rows)
    for bi in range(n_batches):
        s = bi % acts.shape[0]
        C.softmax_xent(K.act_view(acts[s], sizes, rows, n_layers), labels[s], K.act_view(deltas[s], sizes, rows, n_layers),
                       scale)


@njit(**JIT)
def input_grad_loop(acts, deltas, sizes, theta, rows, l, act, n_batches):
    for bi in range(n_batches):
        s = bi % acts.shape[0]
        w, _ = K.param_layer(theta, sizes, l)
        C.input_grad(K.act_view(acts[s], sizes, rows, l), w, K.act_view(deltas[s], sizes, rows, l + 1),
                     K.act_view(deltas[s], sizes, rows, l), act)


@njit(**JIT)
def update_loop(acts, deltas, sizes, theta, state, rows, l, p, plain, n_batches):
    lr = np.float32(1e-3)
    one = np.float32(1.0)
    for bi in range(n_batches):
        s = bi % acts.shape[0]
        w, b = K.param_layer(theta, sizes, l)
        x, delta = K.act_view(acts[s], sizes, rows, l), K.act_view(deltas[s], sizes, rows, l + 1)
        C.update_rows(x, w, delta, K.param_layer(state[0], sizes, l)[0], K.param_layer(state[1], sizes, l)[0],
                      K.param_layer(state[2], sizes, l)[0], p, plain, lr, one, one, 0, w.shape[0])
        C.bias_update(b, delta, K.param_layer(state[0], sizes, l)[1], K.param_layer(state[1], sizes, l)[1],
                      K.param_layer(state[2], sizes, l)[1], p, plain, lr, one, one)


@njit(**JIT)
def grad_loop(acts, deltas, sizes, theta, rows, l, n_batches, lists_only):
    for bi in range(n_batches):
        s = bi % acts.shape[0]
        w, _ = K.param_layer(theta, sizes, l)
        x, delta = K.act_view(acts[s], sizes, rows, l), K.act_view(deltas[s], sizes, rows, l + 1)
        cols, starts, rws, vals = C.column_scratch(x, 0, x.shape[1])
        C.column_lists(x, 0, x.shape[1], cols, starts, rws, vals)
        if not lists_only:
            g = np.empty(w.shape[1], np.float32)
            for k in range(x.shape[1]):
                C.grad_row(delta, rws, vals, starts[k], starts[k + 1], g)


def kernels(backend, order, n_batches):
    """(name, zero-argument callable timing one epoch of it, useful work, 'GFLOP' or 'GB') per kernel."""
    from numba.np.unsafe.ndarray import to_fixed_tuple  # noqa: F401  (p below is built like train_chunk's)

    from rmsprop_cli.hyper import N_HYPER, ACTIVATION

    sizes, rows = backend.sizes, backend.batch_size
    act = int(backend.hp[ACTIVATION])
    p = tuple(np.float32(v) for v in backend.hp)
    assert len(p) == N_HYPER
    acts_one, deltas_one, labels_one = backend.train_bufs
    theta = backend.theta.copy()
    state = backend.state.copy()
    # Aligned like the backend's own buffers: a vector load that straddles two cache lines costs two.
    acts = aligned_zeros((SAVED, acts_one.size))
    deltas = aligned_zeros((SAVED, deltas_one.size))
    labels = np.zeros((SAVED, rows), np.int64)
    row_loss = np.zeros(rows)
    nz = np.zeros(sizes.size - 1)
    for s in range(SAVED):
        K.batch_rows(backend.images, backend.y, order, s * rows, theta, sizes, acts[s], deltas[s], labels[s], row_loss,
                     0, rows, np.float32(1.0 / rows), act)
        for l in range(sizes.size - 1):
            nz[l] += np.count_nonzero(K.act_view(acts[s], sizes, rows, l))
    density = nz / (SAVED * rows * sizes[:-1])   # non-zero fraction of each layer's input
    macs = [float(density[l]) * sizes[l] * sizes[l + 1] * rows * n_batches for l in range(sizes.size - 1)]
    x0 = aligned_zeros((rows, sizes[0]))
    out = [("gather (uint8 -> float)", lambda: gather_loop(backend.images, order, rows, x0, n_batches),
            rows * n_batches * sizes[0] * 5 / 1e0, "GB")]
    for l in range(sizes.size - 1):
        out.append((f"forward {l + 1} ({sizes[l]}->{sizes[l + 1]})",
                    lambda l=l: forward_loop(acts, sizes, theta, rows, l, act, n_batches), 2 * macs[l], "GFLOP"))
    out.append(("softmax cross-entropy", lambda: softmax_loop(acts, deltas, labels, sizes, rows, n_batches),
                rows * n_batches * sizes[-1] * 4 * 3, "GB"))
    for l in range(sizes.size - 2, 0, -1):
        dens = float(density[l])
        out.append((f"input grad {l + 1} ({sizes[l + 1]}->{sizes[l]})",
                    lambda l=l: input_grad_loop(acts, deltas, sizes, theta, rows, l, act, n_batches),
                    2 * dens * sizes[l] * sizes[l + 1] * rows * n_batches, "GFLOP"))
    for l in range(sizes.size - 1):
        out.append((f"column lists {l + 1}", lambda l=l: grad_loop(acts, deltas, sizes, theta, rows, l, n_batches, True),
                    rows * n_batches * sizes[l] * 4, "GB"))
        out.append((f"lists+weight grad {l + 1}",
                    lambda l=l: grad_loop(acts, deltas, sizes, theta, rows, l, n_batches, False), 2 * macs[l], "GFLOP"))
        out.append((f"weight grad+update {l + 1}",
                    lambda l=l: update_loop(acts, deltas, sizes, theta, state, rows, l, p, backend.plain, n_batches),
                    2 * macs[l], "GFLOP"))
    return out
