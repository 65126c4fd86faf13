"""The hidden layers' products, every input taken, in register tiles of four rows
(or four units) by TILE vectors of columns: each vector loaded is used in four
multiply-adds, and each broadcast value in TILE, so a tile runs at the
machine's multiply-add rate instead of its load rate.  Row by row (cpu.py), a
hidden layer's weights were loaded once per image, from L2 once they outgrow
L1 (a 512-wide layer's are 1 MB), and its input gradient was a dot product per
unit; XLA's dense products ran faster there than skipping the ReLU zeros did.

A multiply-add by an input of 0 leaves its sum as it was, so these products
give the same bits as the row-by-row kernels that skip zeros: every sum is
taken in the same order (b, then ascending inputs; ascending batch rows for a
weight gradient).  Rows or units left over after the fours go through those
kernels.
"""

import numpy as np
from numba import njit

from ..activations import RELU
from ..config import JIT, JIT_INLINE
from .cpu import TILE, dense_forward, grad_row
from .math import ZERO, activation_grad
from .simd import LANES, load, load_first, splat_like, store, store_first, total

# Units (rows of w) per chunk of the input gradient: 32 rows of a 1024-wide
# layer are 128 KB, which stay in L2 while every row of the batch passes.
UNITS = 32
# Units per chunk of a hidden layer's weight gradient (update_dense): their
# gradient rows (256 KB at 1024 wide) are made together, then stepped.
CHUNK = 64
# Layers at most this wide take their input gradient through w's transpose (input_grad_rows).
NARROW = 4 * LANES


@njit(**JIT)
def forward_rows(x, w, b, out):
    """out = x @ w + b (no activation), x (n, n_in), in tiles of four rows."""
    n = x.shape[0]
    n_out = w.shape[1]
    fours = n - n % 4
    j = 0
    while j < n_out:   # columns outermost: their panel of w stays in L2 while every row passes
        full = j + TILE * LANES <= n_out
        for i in range(0, fours, 4):
            if full:
                forward_tile4(x, w, b, out, i, j)
            else:
                forward_lanes4(x, w, b, out, i, j)
        j += TILE * LANES if full else LANES
    if fours < n:
        dense_forward(x[fours:], w, b, out[fours:], 0)


@njit(**JIT)
def forward_tile4(x, w, b, out, i, j):
    """Rows i:i + 4, columns j:j + TILE * LANES of forward_rows: 16 sums in registers."""
    n_in, n_out = w.shape
    b0, b1, b2, b3 = load(b, j), load(b, j + LANES), load(b, j + 2 * LANES), load(b, j + 3 * LANES)
    a00, a01, a02, a03 = b0, b1, b2, b3
    a10, a11, a12, a13 = b0, b1, b2, b3
    a20, a21, a22, a23 = b0, b1, b2, b3
    a30, a31, a32, a33 = b0, b1, b2, b3
    for k in range(n_in):
        o = k * n_out + j
        w0, w1, w2, w3 = load(w, o), load(w, o + LANES), load(w, o + 2 * LANES), load(w, o + 3 * LANES)
        s = x[i, k]
        a00, a01, a02, a03 = a00 + s * w0, a01 + s * w1, a02 + s * w2, a03 + s * w3
        s = x[i + 1, k]
        a10, a11, a12, a13 = a10 + s * w0, a11 + s * w1, a12 + s * w2, a13 + s * w3
        s = x[i + 2, k]
        a20, a21, a22, a23 = a20 + s * w0, a21 + s * w1, a22 + s * w2, a23 + s * w3
        s = x[i + 3, k]
        a30, a31, a32, a33 = a30 + s * w0, a31 + s * w1, a32 + s * w2, a33 + s * w3
    for r, (c0, c1, c2, c3) in enumerate(((a00, a01, a02, a03), (a10, a11, a12, a13), (a20, a21, a22, a23),
                                          (a30, a31, a32, a33))):
        o = (i + r) * n_out + j
        store(out, o, c0)
        store(out, o + LANES, c1)
        store(out, o + 2 * LANES, c2)
        store(out, o + 3 * LANES, c3)


@njit(**JIT)
def forward_lanes4(x, w, b, out, i, j):
    """Rows i:i + 4 of forward_rows, one vector of columns from j (the last ones possibly fewer)."""
    n_in, n_out = w.shape
    r = min(LANES, n_out - j)
    a0 = load_first(b, j, r)
    a1, a2, a3 = a0, a0, a0
    for k in range(n_in):
        v = load_first(w, k * n_out + j, r)
        a0, a1, a2, a3 = a0 + x[i, k] * v, a1 + x[i + 1, k] * v, a2 + x[i + 2, k] * v, a3 + x[i + 3, k] * v
    store_first(out, i * n_out + j, a0, r)
    store_first(out, (i + 1) * n_out + j, a1, r)
    store_first(out, (i + 2) * n_out + j, a2, r)
    store_first(out, (i + 3) * n_out + j, a3, r)


@njit(**JIT)
def input_grad_rows(x, w, delta, dx, act):
    """dx = (delta @ w.T) times the activation's derivative at x (the layer
    below's output), in tiles of four rows by four units, each a dot product
    along delta's row kept as a vector of partial sums (added up once at the
    end, in a fixed order: the same bits on any number of threads)."""
    n, n_in = x.shape
    n_out = w.shape[1]
    if n_out <= NARROW:
        # Short dot products (the logits, a 64-wide layer): summing across each
        # one's vector of partial sums would cost more than its multiply-adds (a
        # 64-wide layer's input gradient ran at 15% of the peak at batch 256).
        # As the forward product of delta and w's transpose instead, four rows
        # by a tile of units at a time, sums in registers; transposing a narrow
        # w costs less than the sums across vectors it saves.  The choice
        # depends on the layer alone, never on how many rows a thread has, so
        # that every thread count gives the same bits.
        wt = np.ascontiguousarray(w.T)
        forward_rows(delta, wt, np.zeros(n_in, w.dtype), dx)
        for i in range(n):
            for u in range(n_in):
                dx[i, u] = through(dx[i, u], act, x[i, u])
        return
    fours, units = n - n % 4, n_in - n_in % 4
    for k0 in range(0, units, UNITS):   # a chunk of w's rows stays in L2 while every row passes
        for i in range(0, fours, 4):
            for k in range(k0, min(k0 + UNITS, units), 4):
                dots_tile(x, w, delta, dx, act, i, k)
    for i in range(n):   # what is left over: one row and one unit at a time (the same sums)
        for u in range(units if i < fours else 0, n_in):
            dx[i, u] = through(dot(delta, i, w, u), act, x[i, u])


@njit(**JIT_INLINE)
def through(s, act, a):
    """The gradient s at a unit whose activation's output is a, through the
    activation: ReLU passes it where a > 0 and gives exactly 0 elsewhere."""
    if act == RELU:
        return s if a > ZERO else ZERO
    return s * activation_grad(act, a)


@njit(**JIT)
def dot(delta, i, w, k):
    """delta[i] @ w[k], as dots_tile takes it."""
    n_out = w.shape[1]
    a = splat_like(delta, 0)
    for j in range(0, n_out, LANES):
        rem = n_out - j
        a = a + load_first(delta, i * n_out + j, rem) * load_first(w, k * n_out + j, rem)
    return total(a)


@njit(**JIT)
def dots_tile(x, w, delta, dx, act, i, k):
    """dx[i:i + 4, k:k + 4] of input_grad_rows: 16 vectors of partial sums."""
    n_out = w.shape[1]
    z = splat_like(delta, 0)
    a00, a01, a02, a03, a10, a11, a12, a13 = z, z, z, z, z, z, z, z
    a20, a21, a22, a23, a30, a31, a32, a33 = z, z, z, z, z, z, z, z
    for j in range(0, n_out, LANES):
        rem = n_out - j
        v0, v1 = load_first(w, k * n_out + j, rem), load_first(w, (k + 1) * n_out + j, rem)
        v2, v3 = load_first(w, (k + 2) * n_out + j, rem), load_first(w, (k + 3) * n_out + j, rem)
        d = load_first(delta, i * n_out + j, rem)
        a00, a01, a02, a03 = a00 + d * v0, a01 + d * v1, a02 + d * v2, a03 + d * v3
        d = load_first(delta, (i + 1) * n_out + j, rem)
        a10, a11, a12, a13 = a10 + d * v0, a11 + d * v1, a12 + d * v2, a13 + d * v3
        d = load_first(delta, (i + 2) * n_out + j, rem)
        a20, a21, a22, a23 = a20 + d * v0, a21 + d * v1, a22 + d * v2, a23 + d * v3
        d = load_first(delta, (i + 3) * n_out + j, rem)
        a30, a31, a32, a33 = a30 + d * v0, a31 + d * v1, a32 + d * v2, a33 + d * v3
    for r, (c0, c1, c2, c3) in enumerate(((a00, a01, a02, a03), (a10, a11, a12, a13), (a20, a21, a22, a23),
                                          (a30, a31, a32, a33))):
        row = i + r
        dx[row, k] = through(total(c0), act, x[row, k])
        dx[row, k + 1] = through(total(c1), act, x[row, k + 1])
        dx[row, k + 2] = through(total(c2), act, x[row, k + 2])
        dx[row, k + 3] = through(total(c3), act, x[row, k + 3])


@njit(**JIT)
def grad_units(x, delta, k, j, g, o):
    """Rows k:k + 4 of x.T @ delta, the columns of one tile from j (TILE vectors,
    or one possibly short vector where fewer are left), into rows o:o + 4 of g:
    each column's sum over the batch rows in ascending order (as cpu.grad_row),
    16 sums in registers.  Returns the next tile's first column."""
    m, n_out = delta.shape
    if j + TILE * LANES <= n_out:
        z = splat_like(delta, 0)
        a00, a01, a02, a03, a10, a11, a12, a13 = z, z, z, z, z, z, z, z
        a20, a21, a22, a23, a30, a31, a32, a33 = z, z, z, z, z, z, z, z
        for i in range(m):
            q = i * n_out + j
            d0, d1, d2, d3 = load(delta, q), load(delta, q + LANES), load(delta, q + 2 * LANES), load(delta, q + 3 * LANES)
            s = x[i, k]
            a00, a01, a02, a03 = a00 + s * d0, a01 + s * d1, a02 + s * d2, a03 + s * d3
            s = x[i, k + 1]
            a10, a11, a12, a13 = a10 + s * d0, a11 + s * d1, a12 + s * d2, a13 + s * d3
            s = x[i, k + 2]
            a20, a21, a22, a23 = a20 + s * d0, a21 + s * d1, a22 + s * d2, a23 + s * d3
            s = x[i, k + 3]
            a30, a31, a32, a33 = a30 + s * d0, a31 + s * d1, a32 + s * d2, a33 + s * d3
        for u, (c0, c1, c2, c3) in enumerate(((a00, a01, a02, a03), (a10, a11, a12, a13), (a20, a21, a22, a23),
                                              (a30, a31, a32, a33))):
            q = (o + u) * n_out + j
            store(g, q, c0)
            store(g, q + LANES, c1)
            store(g, q + 2 * LANES, c2)
            store(g, q + 3 * LANES, c3)
        return j + TILE * LANES
    r = min(LANES, n_out - j)
    z = splat_like(delta, 0)
    a0, a1, a2, a3 = z, z, z, z
    for i in range(m):
        d = load_first(delta, i * n_out + j, r)
        a0, a1, a2, a3 = a0 + x[i, k] * d, a1 + x[i, k + 1] * d, a2 + x[i, k + 2] * d, a3 + x[i, k + 3] * d
    store_first(g, o * n_out + j, a0, r)
    store_first(g, (o + 1) * n_out + j, a1, r)
    store_first(g, (o + 2) * n_out + j, a2, r)
    store_first(g, (o + 3) * n_out + j, a3, r)
    return j + LANES


@njit(**JIT)
def grads_chunk(x, delta, k0, k1, g):
    """Rows k0:k1 of x.T @ delta into g[:k1 - k0] (g has at least that many
    rows), four at a time in register tiles.  Columns go outermost: a column
    tile of delta (every batch row) then stays in L2 while all the chunk's
    units pass, where unit by unit all of delta was read again for each four
    (1 MB at 1024,1024/256, from L3)."""
    n_out = delta.shape[1]
    fours = k0 + (k1 - k0) // 4 * 4
    j = 0
    while j < n_out:
        nxt = j
        for k in range(k0, fours, 4):
            nxt = grad_units(x, delta, k, j, g, k - k0)
        j = nxt if fours > k0 else n_out
    rows = np.arange(x.shape[0]).astype(np.int32)
    for u in range(fours, k1):
        grad_row(delta, rows, x[:, u], 0, x.shape[0], g[u - k0], True)


@njit(**JIT)
def grads_rows(x, delta, gw, k0, k1):
    """Rows k0:k1 of gw = x.T @ delta."""
    grads_chunk(x, delta, k0, k1, gw[k0:k1])
