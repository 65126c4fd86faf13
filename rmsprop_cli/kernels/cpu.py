"""Numba CPU loops of the layers row by row: the dense forward pass skipping
zero inputs, a weight-gradient row from given rows, softmax cross-entropy, around the scalar maths of kernels/math.py that the CUDA kernels
(kernels/cuda.py, same names) share.  Evaluation and prediction run on these;
a training step also on kernels/columns.py (the first layer, from lists) and
kernels/tiles.py (the hidden layers, in register tiles), which give the same
bits.  kernels/steps.py composes them.

Layout: activations are (batch, features), row-major; a weight matrix is
(n_in, n_out), as Keras stores it, so row k of W (input k's fan-out) is
contiguous and the inner loops run along it, in vectors of simd.LANES floats.
Every kernel is float32 end to end: scalars arrive as np.float32 and literals
are np.float32, because one float64 literal promotes a whole loop to float64.
No BLAS call runs during training: MNIST's inputs are 81% zeros, which BLAS
cannot skip, and no BLAS thread pool then competes with Numba's for the cores
(README, "How it is fast").
"""

import numpy as np
from numba import njit

from ..activations import IDENTITY, RELU
from ..config import JIT, JIT_INLINE
from .math import ZERO, activate, softmax_term
from .simd import LANES, load, load_first, nonzero_lanes, splat_like, store, store_first, total
from .updates import optimizer_update, rmsprop_update

# Vectors of accumulators in a register tile: four 16-lane sums are four AVX-512
# registers or eight AVX2 ones, with room left for their loads.  Eight vectors
# (a whole 128-wide row) measured no faster on AVX-512: the loads of w are the limit.
TILE = 4

# Images stay uint8 (a quarter of the memory traffic of float32 when a batch
# is gathered).  A byte times 1/255 in float64, rounded once to float32, is
# the float32 that numpy's byte / np.float32(255) gives, for all 256 bytes
# (tests/test_kernels.py); in float32 it is not, and a float32 division, or
# a table look-up per pixel, cost more.
INV_255 = 1.0 / 255.0


@njit(**JIT)
def load_row(images, src, x_row):
    """x_row = images[src] scaled to [0, 1]."""
    for k in range(x_row.size):
        x_row[k] = np.float32(images[src, k] * INV_255)


@njit(**JIT_INLINE)
def nonzero_cols(x, i, k0, k1, cols):
    """Indices k in k0:k1 with x[i, k] != 0 (a NaN counts) into cols[:count],
    ascending; returns count.  Sixteen at a time by a compress store
    (simd.nonzero_lanes): whether a pixel or a ReLU output is zero is a coin
    flip, and a branch per entry cost more than the multiply-adds it skipped."""
    count = 0
    k = k0
    base = i * x.shape[1]
    while k + LANES <= k1:
        count = nonzero_lanes(x, base + k, k, cols, count)
        k += LANES
    for kk in range(k, k1):
        cols[count] = kk
        count += x[i, kk] != ZERO
    return count


@njit(**JIT)
def forward_tile(x, cols, counts, w, b, out, j):
    """Columns j:j + TILE * LANES of out = x @ w + b, every row, from the listed
    non-zero inputs.  The tile's sums stay in registers while the row's inputs
    stream past, one broadcast and TILE multiply-adds each."""
    n_out = w.shape[1]
    for i in range(x.shape[0]):
        a0, a1, a2, a3 = load(b, j), load(b, j + LANES), load(b, j + 2 * LANES), load(b, j + 3 * LANES)
        for t in range(counts[i]):
            k = cols[i, t]
            s = x[i, k]
            o = k * n_out + j
            a0 = a0 + s * load(w, o)
            a1 = a1 + s * load(w, o + LANES)
            a2 = a2 + s * load(w, o + 2 * LANES)
            a3 = a3 + s * load(w, o + 3 * LANES)
        o = i * n_out + j
        store(out, o, a0)
        store(out, o + LANES, a1)
        store(out, o + 2 * LANES, a2)
        store(out, o + 3 * LANES, a3)


@njit(**JIT)
def forward_lanes(x, cols, counts, w, b, out, j):
    """forward_tile for one vector of columns from j, the last ones possibly
    fewer than LANES.  One sum, in the same order as the tile's and as
    columns.forward_columns: the first layer's outputs in training and in
    evaluation are the same to the bit."""
    n_out = w.shape[1]
    r = min(LANES, n_out - j)
    for i in range(x.shape[0]):
        a = load_first(b, j, r)
        for t in range(counts[i]):
            k = cols[i, t]
            a = a + x[i, k] * load_first(w, k * n_out + j, r)
        store_first(out, i * n_out + j, a, r)


@njit(**JIT)
def dense_forward(x, w, b, out, act):
    """out = activation(x @ w + b), act an activation kind (activations.py;
    IDENTITY for logits).  x (n, n_in), w (n_in, n_out).

    Only the non-zero inputs of each row are visited (about 19% of MNIST
    pixels, half of the ReLU outputs).  Columns go in register tiles of
    TILE vectors, the tiles outermost, so that the part of w a tile reads
    stays in cache across the rows however large w is.  Each output is b plus
    its products in ascending input order, whatever the rows or threads.
    """
    n, n_in = x.shape
    n_out = w.shape[1]
    cols = np.empty((n, n_in), np.int32)
    counts = np.empty(n, np.int64)
    for i in range(n):
        counts[i] = nonzero_cols(x, i, 0, n_in, cols[i])
    j = 0
    while j + TILE * LANES <= n_out:
        forward_tile(x, cols, counts, w, b, out, j)
        j += TILE * LANES
    while j < n_out:
        forward_lanes(x, cols, counts, w, b, out, j)
        j += LANES
    activate_rows(out, 0, n, act)


@njit(**JIT)
def activate_rows(out, r0, r1, act):
    """out[r0:r1] = activation(out[r0:r1]), in place."""
    if act == RELU:   # the default, with its kind a constant: the choice is compiled away
        for i in range(r0, r1):
            for j in range(out.shape[1]):
                out[i, j] = activate(RELU, out[i, j])  # a select, not a branch: the sign is a coin flip
    elif act != IDENTITY:
        for i in range(r0, r1):
            for j in range(out.shape[1]):
                out[i, j] = activate(act, out[i, j])


@njit(**JIT_INLINE)
def grad_row(delta, rows, vals, a, e, g, first):
    """g = x[:, k] @ delta over the rows rows[a:e] with their values x[i, k] in
    vals[a:e] (only input k's non-zero rows need be given), summed in that
    order; unless `first`, added to g, in the same order again, so that a sum
    given in several parts is the same to the bit as in one.  The sums of a tile
    of columns stay in registers: eight vectors (a 128-wide row in AVX-512
    registers) while they fit, which ran 1.7 times faster than two passes of
    four; then four; then one vector at a time."""
    n_out = delta.shape[1]
    j = 0
    while j + 2 * TILE * LANES <= n_out:
        if first:
            z = splat_like(delta, 0)
            a0, a1, a2, a3, a4, a5, a6, a7 = z, z, z, z, z, z, z, z
        else:
            a0, a1, a2, a3 = load(g, j), load(g, j + LANES), load(g, j + 2 * LANES), load(g, j + 3 * LANES)
            a4, a5 = load(g, j + 4 * LANES), load(g, j + 5 * LANES)
            a6, a7 = load(g, j + 6 * LANES), load(g, j + 7 * LANES)
        for t in range(a, e):
            s = vals[t]
            o = rows[t] * n_out + j
            a0 = a0 + s * load(delta, o)
            a1 = a1 + s * load(delta, o + LANES)
            a2 = a2 + s * load(delta, o + 2 * LANES)
            a3 = a3 + s * load(delta, o + 3 * LANES)
            a4 = a4 + s * load(delta, o + 4 * LANES)
            a5 = a5 + s * load(delta, o + 5 * LANES)
            a6 = a6 + s * load(delta, o + 6 * LANES)
            a7 = a7 + s * load(delta, o + 7 * LANES)
        store(g, j, a0)
        store(g, j + LANES, a1)
        store(g, j + 2 * LANES, a2)
        store(g, j + 3 * LANES, a3)
        store(g, j + 4 * LANES, a4)
        store(g, j + 5 * LANES, a5)
        store(g, j + 6 * LANES, a6)
        store(g, j + 7 * LANES, a7)
        j += 2 * TILE * LANES
    while j + TILE * LANES <= n_out:
        if first:
            z = splat_like(delta, 0)
            a0, a1, a2, a3 = z, z, z, z
        else:
            a0, a1, a2, a3 = load(g, j), load(g, j + LANES), load(g, j + 2 * LANES), load(g, j + 3 * LANES)
        for t in range(a, e):
            s = vals[t]
            o = rows[t] * n_out + j
            a0 = a0 + s * load(delta, o)
            a1 = a1 + s * load(delta, o + LANES)
            a2 = a2 + s * load(delta, o + 2 * LANES)
            a3 = a3 + s * load(delta, o + 3 * LANES)
        store(g, j, a0)
        store(g, j + LANES, a1)
        store(g, j + 2 * LANES, a2)
        store(g, j + 3 * LANES, a3)
        j += TILE * LANES
    while j < n_out:
        r = min(LANES, n_out - j)
        acc = splat_like(delta, 0) if first else load_first(g, j, r)
        for t in range(a, e):
            acc = acc + vals[t] * load_first(delta, rows[t] * n_out + j, r)
        store_first(g, j, acc, r)
        j += LANES


@njit(**JIT)
def bias_grad(delta, g):
    """g = delta summed over the batch."""
    for j in range(g.size):
        g[j] = ZERO
    for i in range(delta.shape[0]):
        for j in range(g.size):
            g[j] += delta[i, j]


@njit(**JIT)
def bias_update(b, delta, vb, mb, bb, p, plain, lr, bc1, bc2):
    """The bias's gradient (delta summed over the batch), then the optimizer's step on it."""
    g = np.empty(b.size, np.float32)
    bias_grad(delta, g)
    if plain:
        rmsprop_update(b, g, vb, p, lr, bc2)
    else:
        optimizer_update(b, g, vb, mb, bb, p, lr, bc1, bc2)


@njit(**JIT)
def softmax_xent(z, labels, delta, scale):
    """Softmax cross-entropy of logits z (n, c) against integer labels.

    Writes delta = (softmax(z) - onehot) * scale, the gradient of the batch
    mean when scale = 1 / batch size (a shard sees only part of the batch), and returns
    (sum of per-row losses, number of rows whose argmax is the label).
    Subtracting the row maximum keeps exp() finite for logits of any size;
    the loss is computed as log-sum-exp minus the label's logit, never as
    log(probability), so it stays finite when a probability underflows.
    """
    n, c = z.shape
    loss = 0.0
    correct = 0
    for i in range(n):
        zmax = z[i, 0]
        best = 0
        for j in range(1, c):
            if z[i, j] > zmax:
                zmax = z[i, j]
                best = j
        total = ZERO
        for j in range(c):
            e = softmax_term(z[i, j] - zmax)
            delta[i, j] = e
            total += e
        y = labels[i]
        loss += np.log(total) - (z[i, y] - zmax)
        correct += best == y
        norm = scale / total
        for j in range(c):
            delta[i, j] *= norm
        delta[i, y] -= scale
    return loss, correct
