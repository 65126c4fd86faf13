"""The vector operations the CPU kernels' register tiles are built from (kernels/simd.py),
and the sparse lists built on them, against plain numpy."""

import numpy as np
import pytest
from numba import njit

from rmsprop_cli.backends.cpu import column_buffers
from rmsprop_cli.kernels import columns as CC
from rmsprop_cli.kernels import cpu as C
from rmsprop_cli.kernels.steps import list_stride, share
from rmsprop_cli.kernels.simd import LANES, load, load_first, nonzero_lanes, splat_like, store, store_first, total


@njit
def _axpy_first(a, x, y, n):
    """y[:n] += a * x[:n] through one masked vector; returns the sum of the new lanes."""
    v = load_first(y, 0, n) + a * load_first(x, 0, n)
    store_first(y, 0, v, n)
    return total(v)


@njit
def _scaled_sum(x, s):
    acc = splat_like(x, 0)
    for i in range(0, x.size, LANES):
        acc = acc + s * load(x, i)
    store(x, 0, acc)
    return total(acc)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [0, 1, 5, LANES - 1, LANES])
def test_masked_lanes_leave_the_rest_of_memory_alone(dtype, n):
    x = np.arange(1, LANES + 1, dtype=dtype)
    y = np.full(LANES + 3, 7, dtype)
    y[n:] = np.nan   # lanes past n are neither read into the sum nor written
    total_ = _axpy_first(dtype(2), x, y, n)
    np.testing.assert_array_equal(y[:n], 7 + 2 * x[:n])
    assert np.isnan(y[n:]).all()
    assert total_ == pytest.approx(float((7 + 2 * x[:n]).sum()))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vector_sums_match_numpy(dtype, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=LANES * 7).astype(dtype)
    expected = 3 * x.reshape(7, LANES).astype(np.float64).sum(0)
    got = _scaled_sum(x, 3.0)
    np.testing.assert_allclose(x[:LANES], expected, rtol=1e-5)
    assert got == pytest.approx(expected.sum(), rel=1e-5)


@njit
def _nonzero(x, out):
    count = 0
    for i in range(0, x.size - x.size % LANES, LANES):
        count = nonzero_lanes(x, i, 100 + i, out, count)
    return count


@pytest.mark.parametrize("seed", range(5))
def test_nonzero_lanes_lists_nonzero_indices_in_order(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=LANES * 9).astype(np.float32)
    x[rng.random(x.size) < 0.6] = 0
    x[rng.random(x.size) < 0.05] = -0.0   # equal to zero: skipped
    x[rng.random(x.size) < 0.05] = np.nan  # a NaN must reach the loss: kept
    out = np.full(x.size, -1, np.int32)
    count = _nonzero(x, out)
    expected = np.flatnonzero((x != 0) | np.isnan(x)) + 100
    np.testing.assert_array_equal(out[:count], expected)


@pytest.mark.parametrize("n,n_in", [(32, 784), (7, 50), (3, 16), (70, 9), (130, 3), (1, 1)])
@pytest.mark.parametrize("shards", [1, 2, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.uint8])
def test_lists_hold_each_inputs_nonzero_rows_in_order(n, n_in, shards, dtype):
    """Rows gathered share by share (as a training step's threads do) come back, input by input, as
    exactly x's non-zero rows, ascending, with their values; and each row's own list is its
    non-zero inputs."""
    rng = np.random.default_rng(n * n_in + shards)
    x = rng.integers(1, 256, (n, n_in)).astype(dtype) if dtype == np.uint8 else rng.random((n, n_in)).astype(dtype)
    x[rng.random(x.shape) < 0.7] = 0
    order = rng.permutation(n)
    sizes = np.array([n_in, 1])
    row_cols, row_vals, row_counts, counts, listed, values = column_buffers(sizes, n, shards)
    stride = list_stride(n, shards)
    for s in range(shards):
        r0, r1 = share(n, shards, s)
        CC.clear_lists(counts, s, n_in)
        for r in range(r0, r1):
            row_counts[r] = CC.add_row(x, order[r], r, counts, listed, values, s, stride, row_cols[r], row_vals[r])
    expected = x[order].astype(np.float32) / np.float32(255) if dtype == np.uint8 else x[order]
    for k in range(n_in):
        q = [(s * n_in + k) * stride + np.arange(counts[s * n_in + k]) for s in range(shards)]
        q = np.concatenate(q).astype(np.int64)
        np.testing.assert_array_equal(listed[q], np.flatnonzero(expected[:, k]))
        np.testing.assert_array_equal(values[q], expected[expected[:, k] != 0, k])
    # and the gradient rows from the lists: share by share, the same bits as from one share
    delta = rng.normal(size=(n, 70)).astype(np.float32)
    g, g1 = np.empty(70, np.float32), np.empty(70, np.float32)
    one = column_buffers(sizes, n, 1)
    CC.clear_lists(one[3], 0, n_in)
    for r in range(n):
        CC.add_row(x, order[r], r, *one[3:], 0, n, one[0][r], one[1][r])
    for k in range(n_in):
        CC.listed_grad(delta, counts, listed, values, n_in, stride, k, shards, g)
        CC.listed_grad(delta, *one[3:], n_in, n, k, 1, g1)
        np.testing.assert_array_equal(g, g1)
        np.testing.assert_allclose(g, expected[:, k].astype(np.float64) @ delta, rtol=1e-5, atol=1e-6)
    for r in range(n):
        np.testing.assert_array_equal(row_cols[r, :row_counts[r]], np.flatnonzero(expected[r]))
        np.testing.assert_array_equal(row_vals[r, :row_counts[r]], expected[r, expected[r] != 0])


@pytest.mark.parametrize("n_out", [1, 10, 64, 100, 128, 200])
def test_forward_from_lists_is_dense_forward_to_the_bit(n_out):
    """The training step's first layer (block by block from each row's list) and evaluation's
    (cpu.dense_forward, row by row) give the same bits, and match float64 numpy."""
    rng = np.random.default_rng(n_out)
    n, n_in = 9, 300
    x = rng.random((n, n_in)).astype(np.float32)
    x[rng.random(x.shape) < 0.8] = 0
    w = rng.normal(size=(n_in, n_out)).astype(np.float32)
    b = rng.normal(size=n_out).astype(np.float32)
    cols, vals, counts = np.zeros((n, n_in), np.int32), np.zeros((n, n_in), np.float32), np.zeros(n, np.int64)
    for i in range(n):
        nz = np.flatnonzero(x[i])
        cols[i, :nz.size], vals[i, :nz.size], counts[i] = nz, x[i, nz], nz.size
    listed, dense = np.full((n, n_out), np.nan, np.float32), np.full((n, n_out), np.nan, np.float32)
    CC.forward_listed(cols, vals, counts, 2, n, w, b, listed)
    C.dense_forward(x, w, b, dense, 0)
    np.testing.assert_array_equal(listed[2:], dense[2:])
    assert np.isnan(listed[:2]).all()   # rows outside r0:r1 untouched
    np.testing.assert_allclose(dense, x.astype(np.float64) @ w + b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n_out", [1, 10, 16, 64, 100, 128, 200, 1024])
def test_grad_row_sums_rows_in_order(n_out):
    """Widths that take every tile path (8 and 4 vectors, one at a time, a short last one)."""
    rng = np.random.default_rng(n_out)
    delta = rng.normal(size=(40, n_out)).astype(np.float32)
    rows = np.sort(rng.choice(40, 23, replace=False)).astype(np.int64)
    vals = rng.random(23).astype(np.float32)
    g = np.full(n_out, np.nan, np.float32)
    C.grad_row(delta, rows, vals, 0, rows.size, g, True)
    np.testing.assert_allclose(g, vals.astype(np.float64) @ delta[rows].astype(np.float64), rtol=1e-5, atol=1e-6)
    parts = np.full(n_out, np.nan, np.float32)   # the same sum in three parts: the same bits
    for a, e in ((0, 5), (5, 6), (6, rows.size)):
        C.grad_row(delta, rows, vals, a, e, parts, a == 0)
    np.testing.assert_array_equal(parts, g)
