"""The drivers that compose the CPU loops (kernels/cpu.py) into a training
step, a chunk of steps, an evaluation and a prediction, each one compiled
call from the host (backends/cpu.py).
"""

import numpy as np
from numba import njit, prange
from numba.np.unsafe.ndarray import to_fixed_tuple

from ..activations import IDENTITY
from ..config import JIT, JIT_PARALLEL
from ..hyper import ACTIVATION, CLIP_NORM, N_HYPER
from .columns import add_row, clear_lists, forward_listed, grads_listed, update_dense, update_listed
from .tiles import forward_rows, grads_rows, input_grad_rows
from .cpu import activate_rows, bias_grad, bias_update, dense_forward, load_row, softmax_xent
from .simd import prefetch
from .updates import update_whole
from .math import ONE, ZERO, bias_corrections, learning_rate_at

# Parameters, gradients and optimizer buffers are flat vectors, layer by layer
# (W (n_in, n_out) row-major, then b); activations and deltas are flat buffers
# holding `rows` rows of every layer's width (one set per evaluation thread;
# a training step's threads share one set, each writing only its own rows).
# Views are carved out inside compiled code because Numba's parallel regions cannot take tuples of
# arrays, and flat buffers let one kernel serve any depth of network.

@njit(**JIT)
def param_layer(theta, sizes, l):
    """Views (W, b) of layer l in a flat parameter-shaped vector."""
    off = 0
    for j in range(l):
        off += sizes[j] * sizes[j + 1] + sizes[j + 1]
    n_in, n_out = sizes[l], sizes[l + 1]
    w = theta[off:off + n_in * n_out].reshape((n_in, n_out))
    return w, theta[off + n_in * n_out:off + n_in * n_out + n_out]


@njit(**JIT)
def act_view(buf, sizes, rows, l):
    """Layer l's (rows, sizes[l]) block in a flat activation or delta buffer."""
    off = 0
    for j in range(l):
        off += rows * sizes[j]
    return buf[off:off + rows * sizes[l]].reshape((rows, sizes[l]))


@njit(**JIT)
def forward(theta, sizes, acts, rows, r0, r1, act):
    """Run rows r0:r1 of layer 0's block through every layer, the hidden ones
    with activation act; logits in the last block."""
    n_layers = sizes.size - 1
    for l in range(n_layers):
        w, b = param_layer(theta, sizes, l)
        dense_forward(act_view(acts, sizes, rows, l)[r0:r1], w, b, act_view(acts, sizes, rows, l + 1)[r0:r1],
                      act if l < n_layers - 1 else IDENTITY)


@njit(**JIT)
def batch_rows(images, y, order, lo, theta, sizes, acts, deltas, row_cols, row_vals, row_counts, counts, listed, values,
               labels, row_loss, r0, r1, s, shards, scale, act):
    """Rows r0:r1 of the batch that starts at order[lo], share s of `shards`
    shares of the batch's rows, on their own: gather them, each with its list of non-zero pixels
    (row_cols, row_vals, row_counts) and into the lists of each pixel
    (kernels/columns.py), run them forward through every layer, take their softmax
    loss (row_loss[r]) and its gradient, and propagate that back to every
    layer's delta, from the weights before this step's update.  Returns the
    correct count.  The losses are kept per row so that the caller sums them in
    row order: the batch's loss is then the same to the bit on any number of
    threads."""
    n_layers = sizes.size - 1
    rows = labels.size
    clear_lists(counts, s, sizes[0])
    # The images of this share's rows of the next batch, from memory into cache
    # while this batch computes: in random order, each one's first access
    # waited for memory (the gather was a fifth of a step at batch 256).
    ahead = min(order.size, lo + rows + r1)
    for nxt in range(min(order.size, lo + rows + r0), ahead):
        for q in range(0, images.shape[1], 64):
            prefetch(images, order[nxt] * images.shape[1] + q)
    for r in range(r0, r1):
        src = order[lo + r]
        row_counts[r] = add_row(images, src, r, counts, listed, values, s, list_stride(rows, shards), row_cols[r],
                                row_vals[r])
        labels[r] = y[src]
    w, b = param_layer(theta, sizes, 0)
    h = act_view(acts, sizes, rows, 1)
    forward_listed(row_cols, row_vals, row_counts, r0, r1, w, b, h)
    activate_rows(h, r0, r1, act if n_layers > 1 else IDENTITY)
    for l in range(1, n_layers):
        x = act_view(acts, sizes, rows, l)
        w, b = param_layer(theta, sizes, l)
        h = act_view(acts, sizes, rows, l + 1)
        forward_rows(x[r0:r1], w, b, h[r0:r1])
        activate_rows(h, r0, r1, act if l < n_layers - 1 else IDENTITY)
    z, delta = act_view(acts, sizes, rows, n_layers), act_view(deltas, sizes, rows, n_layers)
    correct = 0
    for r in range(r0, r1):
        row_loss[r], c = softmax_xent(z[r:r + 1], labels[r:r + 1], delta[r:r + 1], scale)
        correct += c
    for l in range(n_layers - 1, 0, -1):
        w, _ = param_layer(theta, sizes, l)
        input_grad_rows(act_view(acts, sizes, rows, l)[r0:r1], w, act_view(deltas, sizes, rows, l + 1)[r0:r1],
                        act_view(deltas, sizes, rows, l)[r0:r1], act)
    return correct


@njit(**JIT)
def weight_rows(theta, sizes, acts, deltas, counts, listed, values, rows, m, batch_shards, state, grad, p, plain, lr,
                bc1, bc2, s, shards):
    """Part s of `shards` of every layer's weight rows (biases aside): their
    gradients from the m rows of the batch (its pixels listed by batch_shards shares),
    then, unless the gradient norm is clipped (which needs the whole gradient
    first: into grad instead), the optimizer's step on them."""
    clip_norm = p[CLIP_NORM] > 0
    for l in range(sizes.size - 1):
        delta = act_view(deltas, sizes, rows, l + 1)[:m]
        x = act_view(acts, sizes, rows, l)[:m]
        w, _ = param_layer(theta, sizes, l)
        k0, k1 = share(w.shape[0], shards, s)
        if clip_norm:
            gw = param_layer(grad, sizes, l)[0]
            if l == 0:
                grads_listed(counts, listed, values, list_stride(rows, batch_shards), batch_shards, delta, gw, k0, k1)
            else:
                grads_rows(x, delta, gw, k0, k1)
            continue
        vw, mw, bw = (param_layer(state[0], sizes, l)[0], param_layer(state[1], sizes, l)[0],
                      param_layer(state[2], sizes, l)[0])
        if l == 0:
            update_listed(counts, listed, values, list_stride(rows, batch_shards), batch_shards, w, delta, vw, mw, bw,
                          p, plain, lr, bc1, bc2, k0, k1)
        else:
            update_dense(x, w, delta, vw, mw, bw, p, plain, lr, bc1, bc2, k0, k1)


@njit(**JIT)
def finite(x):
    """Whether x is neither NaN nor infinite, in a form the fast-math flags cannot remove.

    Numba lowers np.isfinite(x) as x - x == 0, and when x is a sum (the loss
    added up across threads) the reassociation that JIT allows cancels x - x
    to 0: a diverged run went on training.  A NaN fails every comparison, and
    no reassociation turns this one into a constant.
    """
    return abs(x) < np.inf


# A training step on several threads is two parallel regions: one over the
# rows of the batch (batch_rows: the forward pass, the loss and back-
# propagation are row by row), one over the rows of the weights (weight_rows).
# No two threads ever write the same row, and every row is computed exactly
# as on one thread, so the weights come out bit for bit the same.  The
# default network's wide rows (128 and 64 floats) are whole cache lines, as
# the buffers start on one; narrower rows may share a line at the boundary
# between two threads' parts, which costs a little time, never correctness.
# The prange bodies only call plain kernels (array expressions written
# directly in a prange body become nested parallel loops, which gave wrong
# results), and the scratch arrays come from the caller (np.zeros in a
# parallel function is a parallel region of its own).

@njit(**JIT)
def list_stride(rows, shards):
    """Entries between two pixels' lists of one share: the most rows a share of
    a batch of `rows` rows can have (share's own split), so that a batch's lists
    need n_in * (rows + shards) entries however many threads share it."""
    return max(1, -(-rows // shards))


@njit(**JIT)
def share(n, shards, s):
    """Bounds (lo, hi) of part s when n items are split into `shards` contiguous parts."""
    per = -(-n // shards)
    return min(s * per, n), min((s + 1) * per, n)


@njit(**JIT_PARALLEL)
def batch_rows_threads(images, y, order, lo, m, theta, sizes, acts, deltas, row_cols, row_vals, row_counts, counts,
                       listed, values, labels, row_loss, scale, act, corrects):
    shards = corrects.size
    for s in prange(shards):
        r0, r1 = share(m, shards, s)
        corrects[s] = batch_rows(images, y, order, lo, theta, sizes, acts, deltas, row_cols, row_vals, row_counts,
                                 counts, listed, values, labels, row_loss, r0, r1, s, shards, scale, act)


@njit(**JIT_PARALLEL)
def weight_rows_threads(theta, sizes, acts, deltas, counts, listed, values, rows, m, state, grad, p, plain, lr, bc1,
                        bc2, shards):
    for s in prange(shards):
        weight_rows(theta, sizes, acts, deltas, counts, listed, values, rows, m, shards, state, grad, p, plain, lr,
                    bc1, bc2, s, shards)


@njit(**JIT)
def train_chunk(images, y, order, start, n_batches, batch_size, sizes, theta, state, grad, step0, hp, plain,
                acts, deltas, row_cols, row_vals, row_counts, counts, listed, values, labels, shards, loss0=0.0):
    """Train on n_batches mini-batches taken from order[start:], in one call.

    state is (3, n_params): the optimizer's v, m and b (rows it does not use
    are ignored); grad is a gradient-sized buffer used only when the global
    gradient norm is clipped, which needs the whole gradient before any
    update.  step0 is the number of updates made before this chunk (for the
    schedule and bias correction); hp is hyper.vector, in float64.  acts and deltas are flat buffers of
    batch_size rows of every layer (deltas block l+1 holds dLoss/d(pre-
    activation) of layer l); row_cols, row_vals, row_counts list each row's
    non-zero pixels, and counts, listed, values each pixel's non-zero rows
    (kernels/columns.py), with room for `shards` shares.

    shards is the number of threads each step is split across (two parallel
    regions, see above); 1 runs everything on this thread.  It changes no
    number, so the host may choose it chunk by chunk (threads.py).

    Returns (loss0 + the batches' loss sum, correct count, samples seen, index
    of the batch whose loss was not finite, or -1).  Passing the previous
    part's sum as loss0 makes a chunk run in several parts sum its losses in
    the same order, to the bit, as one call.
    """
    n_layers = sizes.size - 1
    rows = labels.size
    clip_norm = hp[CLIP_NORM]
    act = int(hp[ACTIVATION])
    p = to_fixed_tuple(hp.astype(np.float32), N_HYPER)   # read once: see cpu.py
    v, m, b = state[0], state[1], state[2]
    row_loss, corrects = np.zeros(rows), np.zeros(shards, np.int64)
    loss_sum = loss0
    correct = 0
    seen = 0
    for bi in range(n_batches):
        lo = start + bi * batch_size
        m_rows = min(lo + batch_size, order.size) - lo
        if m_rows <= 0:
            break
        count = step0 + bi   # updates made before this one
        lr = np.float32(learning_rate_at(hp, count))
        bc1, bc2 = bias_corrections(hp, count + 1)
        scale = ONE / np.float32(m_rows)
        if shards > 1:
            batch_rows_threads(images, y, order, lo, m_rows, theta, sizes, acts, deltas, row_cols, row_vals,
                               row_counts, counts, listed, values, labels, row_loss, scale, act, corrects)
            corr = 0
            for s in range(shards):
                corr += corrects[s]
        else:
            corr = batch_rows(images, y, order, lo, theta, sizes, acts, deltas, row_cols, row_vals, row_counts,
                              counts, listed, values, labels, row_loss, 0, m_rows, 0, 1, scale, act)
        loss = 0.0
        for r in range(m_rows):
            loss += row_loss[r]
        if not finite(loss):
            return loss_sum, correct, seen, bi
        loss_sum += loss
        correct += corr
        seen += m_rows
        if shards > 1:
            weight_rows_threads(theta, sizes, acts, deltas, counts, listed, values, rows, m_rows, state, grad, p, plain,
                                lr, bc1, bc2, shards)
        else:
            weight_rows(theta, sizes, acts, deltas, counts, listed, values, rows, m_rows, 1, state, grad, p, plain, lr,
                        bc1, bc2, 0, 1)
        for l in range(n_layers):
            delta = act_view(deltas, sizes, rows, l + 1)[:m_rows]
            if clip_norm > 0:
                bias_grad(delta, param_layer(grad, sizes, l)[1])
            else:
                bias_update(param_layer(theta, sizes, l)[1], delta, param_layer(v, sizes, l)[1],
                            param_layer(m, sizes, l)[1], param_layer(b, sizes, l)[1], p, plain, lr, bc1, bc2)
        if clip_norm > 0:
            update_whole(theta, grad, v, m, b, p, hp, count)
    return loss_sum, correct, seen, -1


@njit(**JIT)
def predict_proba(images, theta, sizes, acts, probs, act):
    """Class probabilities (softmax of the logits) of every image, in blocks of the buffer's height."""
    n_layers = sizes.size - 1
    rows = acts.size // sizes.sum()
    for start in range(0, images.shape[0], rows):
        m = min(rows, images.shape[0] - start)
        x0 = act_view(acts, sizes, rows, 0)
        for r in range(m):
            load_row(images, start + r, x0[r])
        forward(theta, sizes, acts, rows, 0, m, act)
        z = act_view(acts, sizes, rows, n_layers)
        for i in range(m):
            top = z[i].max()
            total = ZERO
            for j in range(z.shape[1]):
                e = np.exp(z[i, j] - top)
                probs[start + i, j] = e
                total += e
            for j in range(z.shape[1]):
                probs[start + i, j] /= total


@njit(**JIT)
def evaluate_rows(images, y, b0, b1, theta, sizes, acts, deltas, labels, confusion, block_loss, act):
    """Blocks b0:b1 of images, a block being as many rows as the buffers hold:
    each block's loss sum into block_loss[b], confusion[true, pred] += 1 for
    each row; returns the correct count."""
    n_layers = sizes.size - 1
    rows = labels.size
    correct = 0
    for blk in range(b0, b1):
        start = blk * rows
        m = min(rows, images.shape[0] - start)
        x0 = act_view(acts, sizes, rows, 0)
        for r in range(m):
            load_row(images, start + r, x0[r])
            labels[r] = y[start + r]
        forward(theta, sizes, acts, rows, 0, m, act)
        z = act_view(acts, sizes, rows, n_layers)[:m]
        block_loss[blk], corr = softmax_xent(z, labels[:m], act_view(deltas, sizes, rows, n_layers)[:m], ONE)
        correct += corr
        for i in range(m):
            confusion[labels[i], np.argmax(z[i])] += 1
    return correct


@njit(**JIT_PARALLEL)
def evaluate(images, y, theta, sizes, acts, deltas, labels, confusion, act):
    """Loss sum and correct count over all images; confusion[true, pred] += 1.

    Rows are split into one contiguous range of blocks per shard, each on its
    own thread with its own buffers and counts.  The blocks' losses are summed
    in block order at the end, so the loss is the same to the bit on any
    number of threads.  Weights are only read here, so the threads share them
    without contention.  (The shard's work is a separate function: array
    expressions written directly inside a prange body are turned into nested
    parallel loops, which gave wrong results.)
    """
    n_shards, rows = labels.shape
    n_blocks = -(-images.shape[0] // rows)
    block_loss = np.zeros(n_blocks)
    corrects = np.zeros(n_shards, np.int64)
    confusions = np.zeros((n_shards, confusion.shape[0], confusion.shape[1]), np.int64)
    for s in prange(n_shards):
        b0, b1 = share(n_blocks, n_shards, s)
        corrects[s] = evaluate_rows(images, y, b0, b1, theta, sizes, acts[s], deltas[s], labels[s], confusions[s],
                                    block_loss, act)
    loss = 0.0
    for blk in range(n_blocks):
        loss += block_loss[blk]
    for s in range(n_shards):
        confusion += confusions[s]
    return loss, corrects.sum()
