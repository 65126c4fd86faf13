"""The hidden layers' register-tiled products (kernels/tiles.py) against float64 numpy, and to
the bit against the row-by-row kernels that skip zeros, on shapes that take every path (rows and
units in fours and left over, whole tiles of columns, single and short vectors)."""

import numpy as np
import pytest

from naive import naive_dense_backward, naive_dense_forward, sparse_inputs
from rmsprop_cli.activations import ACTIVATIONS, IDENTITY
from rmsprop_cli.kernels import cpu as C
from rmsprop_cli.kernels import tiles as T

SHAPES = [(1, 3, 1), (4, 16, 64), (9, 40, 200), (7, 65, 10), (32, 128, 64), (32, 64, 10), (13, 33, 100),
          (8, 256, 512)]


def _layer(n, n_in, n_out, seed, act="relu"):
    rng = np.random.default_rng(seed)
    x = sparse_inputs(rng, n, n_in, 0.5)   # like ReLU outputs: about half exactly 0
    if act == "tanh":
        x = x * 2 - 1
    w = rng.normal(size=(n_in, n_out)).astype(np.float32)
    b = rng.normal(size=n_out).astype(np.float32)
    delta = rng.normal(size=(n, n_out)).astype(np.float32)
    return x, w, b, delta


@pytest.mark.parametrize("n,n_in,n_out", SHAPES)
@pytest.mark.parametrize("seed", [0, 1])
def test_forward_rows_is_dense_forward_to_the_bit(n, n_in, n_out, seed):
    x, w, b, _ = _layer(n, n_in, n_out, seed)
    tiled, rows = np.full((n, n_out), np.nan, np.float32), np.full((n, n_out), np.nan, np.float32)
    T.forward_rows(x, w, b, tiled)
    C.dense_forward(x, w, b, rows, IDENTITY)
    np.testing.assert_array_equal(tiled, rows)
    np.testing.assert_allclose(tiled, naive_dense_forward(x, w, b, None), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("n,n_in,n_out", SHAPES)
@pytest.mark.parametrize("act", list(ACTIVATIONS))
def test_input_grad_rows_matches_numpy(n, n_in, n_out, act):
    x, w, _, delta = _layer(n, n_in, n_out, n_out, act)
    dx = np.full((n, n_in), np.nan, np.float32)
    T.input_grad_rows(x, w, delta, dx, ACTIVATIONS[act].kind)
    np.testing.assert_allclose(dx, naive_dense_backward(x, w, delta, act)[2], rtol=1e-4, atol=1e-4)
    if act == "relu":
        assert (dx[x == 0] == 0).all()   # exactly 0 where the unit is off, whatever the sum


@pytest.mark.parametrize("n,n_in,n_out", SHAPES)
@pytest.mark.parametrize("k0,k1", [(0, None), (1, 6)])
def test_grads_rows_is_the_row_by_row_gradient_to_the_bit(n, n_in, n_out, k0, k1):
    x, _, _, delta = _layer(n, n_in, n_out, n + n_in)
    k1 = min(k1 or n_in, n_in)
    k0 = min(k0, k1)
    tiled, rows = np.full((n_in, n_out), np.nan, np.float32), np.full((n_in, n_out), np.nan, np.float32)
    T.grads_rows(x, delta, tiled, k0, k1)
    every = np.arange(n).astype(np.int32)
    for k in range(k0, k1):
        C.grad_row(delta, every, np.ascontiguousarray(x[:, k]), 0, n, rows[k], True)
    np.testing.assert_array_equal(tiled[k0:k1], rows[k0:k1])
    assert np.isnan(tiled[:k0]).all() and np.isnan(tiled[k1:]).all()
    np.testing.assert_allclose(tiled[k0:k1], naive_dense_backward(x, np.zeros((n_in, n_out)), delta)[0][k0:k1],
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("n,n_in,n_out", SHAPES)
@pytest.mark.parametrize("act", ["relu", "tanh"])
def test_rows_in_any_split_give_the_same_bits(n, n_in, n_out, act):
    """A training step's threads each take a share of the rows: every split (fours and leftovers
    falling differently) must give the bits of one call over all rows."""
    x, w, b, delta = _layer(n, n_in, n_out, 3, act)
    kind = ACTIVATIONS[act].kind
    out, dx = np.empty((n, n_out), np.float32), np.empty((n, n_in), np.float32)
    T.forward_rows(x, w, b, out)
    T.input_grad_rows(x, w, delta, dx, kind)
    for cuts in ([1], [3, 5], [n // 2], [2, 7, 9]):
        bounds = [0] + [c for c in cuts if 0 < c < n] + [n]
        part_out, part_dx = np.empty_like(out), np.empty_like(dx)
        for r0, r1 in zip(bounds, bounds[1:]):
            T.forward_rows(x[r0:r1], w, b, part_out[r0:r1])
            T.input_grad_rows(x[r0:r1], w, delta[r0:r1], part_dx[r0:r1], kind)
        np.testing.assert_array_equal(part_out, out)
        np.testing.assert_array_equal(part_dx, dx)
