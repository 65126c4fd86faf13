"""The vector operations the CPU kernels' register tiles are built from (kernels/simd.py),
and the sparse lists built on them, against plain numpy."""

import numpy as np
import pytest
from numba import njit

from rmsprop_cli.kernels import cpu as C
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


@pytest.mark.parametrize("n,n_in,k0,k1", [(32, 784, 0, 784), (7, 50, 3, 41), (3, 16, 0, 16), (5, 9, 2, 9), (1, 1, 0, 1)])
@pytest.mark.parametrize("seed", [0, 1])
def test_column_lists_are_each_inputs_nonzero_rows(n, n_in, k0, k1, seed):
    rng = np.random.default_rng(seed)
    x = rng.random((n, n_in)).astype(np.float32)
    x[rng.random(x.shape) < 0.7] = 0
    cols, starts, rows, vals = C.column_scratch(x, k0, k1)
    C.column_lists(x, k0, k1, cols, starts, rows, vals)
    for k in range(k0, k1):
        a, e = starts[k - k0], starts[k - k0 + 1]
        np.testing.assert_array_equal(rows[a:e], np.flatnonzero(x[:, k]))
        np.testing.assert_array_equal(vals[a:e], x[x[:, k] != 0, k])


@pytest.mark.parametrize("n_out", [1, 10, 16, 64, 100, 128, 200, 1024])
def test_grad_row_sums_rows_in_order(n_out):
    """Widths that take every tile path (8 and 4 vectors, one at a time, a short last one)."""
    rng = np.random.default_rng(n_out)
    delta = rng.normal(size=(40, n_out)).astype(np.float32)
    rows = np.sort(rng.choice(40, 23, replace=False)).astype(np.int64)
    vals = rng.random(23).astype(np.float32)
    g = np.full(n_out, np.nan, np.float32)
    C.grad_row(delta, rows, vals, 0, rows.size, g)
    np.testing.assert_allclose(g, vals.astype(np.float64) @ delta[rows].astype(np.float64), rtol=1e-5, atol=1e-6)
