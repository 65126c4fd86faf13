"""The first layer's input, listed as the batch is gathered: each image's
non-zero pixels (for the forward pass), and each pixel's non-zero images (for
the weight gradient); and the weight rows' gradients and optimizer steps of
every layer.

Why lists: 81% of MNIST pixels are 0.  A row of the first layer's weight
gradient, x[:, k] @ delta, needs exactly the images where pixel k is non-zero
(about 6 of 32); they are listed once, as the batch is gathered, not searched
for in every row of the gradient.  A hidden layer's input is half zeros, and
listing them cost more than the multiply-adds by zero (each of which leaves
its sum unchanged), so its gradient takes every row.

Layout, for a batch buffer of `rows` rows split into `shards` threads' shares
(steps.share; backends/cpu.py allocates the buffers):
- row_cols, row_vals (rows, n_in), row_counts (rows): each image's non-zero pixels;
- counts (int64): per share, per pixel k, how many images are listed;
- listed (int32) and values (float32): per share, per pixel k, room for a
  share's rows (stride = ceil(rows / shards) entries: the buffers need no more
  than a batch's worth however many threads share it): the images (ascending)
  and x[image, k].
Each thread lists only its share's images, into its share's own lists, so no
two threads write one entry.  Reading pixel k's lists share by share visits
its images in ascending order on any number of threads, so every sum is taken
in the same order and the weights come out the same to the bit.
"""

import numpy as np
from numba import njit
from numba.core import types
from numba.extending import overload

from ..config import JIT, JIT_INLINE
from .cpu import INV_255, TILE, bias_grad, bias_update, grad_row, nonzero_cols
from .simd import LANES, load, load_first, store, store_first
from .tiles import CHUNK, grads_chunk, input_grad_rows
from .updates import optimizer_update, rmsprop_decay, rmsprop_update

# Inputs per block of the first layer's forward pass: a block of w's rows times a
# tile of columns (TILE * LANES) is 32 KB, which stays in L1 while every row of
# the share adds its products from that block (w itself, 400 KB, does not).
BLOCK = 128


def input_value(v):
    """A layer's input as the kernels use it: a pixel byte scaled to [0, 1] (as load_row), else itself."""
    return v


@overload(input_value)
def _input_value(v):
    if v == types.uint8:
        return lambda v: np.float32(v * INV_255)
    return lambda v: v


@njit(**JIT)
def clear_lists(counts, s, n_in):
    """Empty share s's lists."""
    for q in range(s * n_in, (s + 1) * n_in):
        counts[q] = 0


@njit(**JIT_INLINE)
def add_row(x, src, i, counts, listed, values, s, stride, cols, row_values):
    """Row i of the batch, whose input is row src of x (pixel bytes, or floats in
    the tests), into share s's lists: each non-zero input k gets i and its
    value.  The row's own non-zero inputs are left in cols[:count] and their
    values in row_values[:count]; returns count."""
    n_in = x.shape[1]
    count = nonzero_cols(x, src, 0, n_in, cols)
    for t in range(count):
        k = cols[t]
        v = input_value(x[src, k])
        row_values[t] = v
        q = s * n_in + k
        c = counts[q]
        listed[q * stride + c] = i
        values[q * stride + c] = v
        counts[q] = c + 1
    return count


@njit(**JIT)
def forward_listed(cols, vals, counts, r0, r1, w, b, out):
    """Rows r0:r1 of out = x @ w + b (no activation), from each row's non-zero
    inputs (cols[i, :counts[i]], values vals[i, :counts[i]], ascending), block of
    inputs by block: the block of w stays in L1 while every row adds its part,
    the row's sums in registers, where row by row w would come from L2 once per
    image.  Each output is b plus its products in ascending input order, as in
    cpu.dense_forward, to the bit."""
    n_in, n_out = w.shape
    ends = np.empty(r1 - r0, np.int64)
    j = 0
    while j + TILE * LANES <= n_out:
        for i in range(r0, r1):
            o = i * n_out + j
            store(out, o, load(b, j))
            store(out, o + LANES, load(b, j + LANES))
            store(out, o + 2 * LANES, load(b, j + 2 * LANES))
            store(out, o + 3 * LANES, load(b, j + 3 * LANES))
            ends[i - r0] = 0
        for k1 in range(BLOCK, n_in + BLOCK, BLOCK):
            for i in range(r0, r1):
                o = i * n_out + j
                a0, a1, a2, a3 = load(out, o), load(out, o + LANES), load(out, o + 2 * LANES), load(out, o + 3 * LANES)
                t = ends[i - r0]
                while t < counts[i] and cols[i, t] < k1:
                    s = vals[i, t]
                    q = cols[i, t] * n_out + j
                    a0 = a0 + s * load(w, q)
                    a1 = a1 + s * load(w, q + LANES)
                    a2 = a2 + s * load(w, q + 2 * LANES)
                    a3 = a3 + s * load(w, q + 3 * LANES)
                    t += 1
                ends[i - r0] = t
                store(out, o, a0)
                store(out, o + LANES, a1)
                store(out, o + 2 * LANES, a2)
                store(out, o + 3 * LANES, a3)
        j += TILE * LANES
    while j < n_out:   # the last columns, fewer than a tile, a vector at a time (as cpu.forward_lanes)
        r = min(LANES, n_out - j)
        for i in range(r0, r1):
            a = load_first(b, j, r)
            for t in range(counts[i]):
                a = a + vals[i, t] * load_first(w, cols[i, t] * n_out + j, r)
            store_first(out, i * n_out + j, a, r)
        j += LANES


@njit(**JIT_INLINE)
def listed_grad(delta, counts, listed, values, n_in, stride, k, shards, g):
    """g = x[:, k] @ delta from input k's lists, share by share: its rows in
    ascending order, one sum per column, whatever the number of shares."""
    for s in range(shards):
        q = s * n_in + k
        grad_row(delta, listed, values, q * stride, q * stride + counts[q], g, s == 0)


@njit(**JIT_INLINE)
def step_row(w, g, vw, mw, bw, k, p, plain, lr, bc1, bc2):
    """The optimizer's step on row k of W from its gradient g."""
    if plain:
        rmsprop_update(w[k], g, vw[k], p, lr, bc2)
    else:
        optimizer_update(w[k], g, vw[k], mw[k], bw[k], p, lr, bc1, bc2)


@njit(**JIT)
def update_listed(counts, listed, values, stride, shards, w, delta, vw, mw, bw, p, plain, lr, bc1, bc2, k0, k1):
    """Rows k0:k1 of W, whose input is listed (`shards` shares of a batch buffer
    whose lists are `stride` entries apart): each row's gradient, then the
    optimizer's step on it.

    Each gradient row is used while it is in L1 and never written out, so a
    step streams W and its state once instead of also writing and re-reading
    a gradient as large as W.  v/m/b (vw, mw, bw) are the layer's views of the
    optimizer's state (see optimizer_update); plain says the recipe is plain
    RMSProp (optim.Optimizer.is_plain_rmsprop), which has faster loops.
    """
    n_in = w.shape[0]
    g = np.empty(w.shape[1], w.dtype)
    for k in range(k0, k1):
        if plain and not any_listed(counts, n_in, k, shards):
            # A pixel that is 0 in the whole batch (42% of them, on average)
            # has g = 0: plain RMSProp leaves W unchanged and only decays v.
            rmsprop_decay(vw[k], p)
            continue
        listed_grad(delta, counts, listed, values, n_in, stride, k, shards, g)
        step_row(w, g, vw, mw, bw, k, p, plain, lr, bc1, bc2)


@njit(**JIT)
def update_dense(x, w, delta, vw, mw, bw, p, plain, lr, bc1, bc2, k0, k1):
    """update_listed for a hidden layer's input x, every row taken: a chunk of
    W's gradient rows in register tiles (tiles.grads_chunk), then each row's step."""
    g = np.empty((CHUNK, w.shape[1]), w.dtype)
    for c0 in range(k0, k1, CHUNK):
        c1 = min(c0 + CHUNK, k1)
        grads_chunk(x, delta, c0, c1, g)
        for k in range(c0, c1):
            step_row(w, g[k - c0], vw, mw, bw, k, p, plain, lr, bc1, bc2)


@njit(**JIT_INLINE)
def any_nonzero(x, k):
    for i in range(x.shape[0]):
        if x[i, k] != 0:
            return True
    return False


@njit(**JIT_INLINE)
def any_listed(counts, n_in, k, shards):
    for s in range(shards):
        if counts[s * n_in + k] > 0:
            return True
    return False


@njit(**JIT)
def grads_listed(counts, listed, values, stride, shards, delta, gw, k0, k1):
    """Rows k0:k1 of gw = x.T @ delta, from x's lists (as update_listed)."""
    for k in range(k0, k1):
        listed_grad(delta, counts, listed, values, gw.shape[0], stride, k, shards, gw[k])


@njit(**JIT)
def columns_of(x):
    """The lists of a whole dense x (n, n_in), as one share: (counts, listed, values, rows)."""
    n, n_in = x.shape
    rows = max(n, 1)
    counts = np.zeros(n_in, np.int64)
    listed = np.empty(n_in * rows, np.int32)
    values = np.empty(n_in * rows, x.dtype)
    cols = np.empty(n_in, np.int32)
    row_values = np.empty(n_in, x.dtype)
    for i in range(n):
        add_row(x, i, i, counts, listed, values, 0, rows, cols, row_values)
    return counts, listed, values, rows


@njit(**JIT)
def weight_grads(x, delta, gw, k0, k1):
    """Rows k0:k1 of gw = x.T @ delta."""
    counts, listed, values, rows = columns_of(x)
    grads_listed(counts, listed, values, rows, 1, delta, gw, k0, k1)


@njit(**JIT)
def dense_backward(x, w, delta, gw, gb, dx, want_dx, act):
    """Gradients of one dense layer given delta = dLoss/d(pre-activation):
    gw = x.T @ delta, gb = column sums of delta, and dx (through activation
    act of the layer below, whose output x is) if want_dx."""
    weight_grads(x, delta, gw, 0, x.shape[1])
    bias_grad(delta, gb)
    if want_dx:
        input_grad_rows(x, w, delta, dx, act)


@njit(**JIT)
def dense_backward_update(x, w, b, delta, vw, vb, mw, mb, bw, bb, dx, want_dx, act, p, plain, lr, bc1, bc2):
    """dense_backward fused with the optimizer step, one row of W at a time
    (update_listed); dx comes first, from W before its update."""
    if want_dx:
        input_grad_rows(x, w, delta, dx, act)
    counts, listed, values, rows = columns_of(x)
    update_listed(counts, listed, values, rows, 1, w, delta, vw, mw, bw, p, plain, lr, bc1, bc2, 0, x.shape[1])
    bias_update(b, delta, vb, mb, bb, p, plain, lr, bc1, bc2)
