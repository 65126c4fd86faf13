"""The CPU backend's host buffers (cache-line alignment, optimizer state that
round-trips through the padded rows the kernels see) and its training threads."""

import numpy as np
import pytest

from rmsprop_cli import model
from rmsprop_cli.backends.cpu import LINE, CpuBackend, aligned_zeros
from rmsprop_cli.config import Recipe
from rmsprop_cli.optim import Optimizer


@pytest.mark.parametrize("shape", [(0,), (1,), (7,), (3, 109386), (2, 5, 11)])
@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.uint8])
def test_aligned_zeros_start_on_a_cache_line(shape, dtype):
    for _ in range(5):  # where malloc puts the block varies; every one must come out aligned
        a = aligned_zeros(shape, dtype)
        assert a.shape == shape and a.dtype == dtype and a.flags.c_contiguous and a.flags.writeable
        assert not a.any()
        if a.size:
            assert a.ctypes.data % LINE == 0


def backend(optimizer="adam", images=None, y=None, hidden=(5, 3), seed=0, batch_size=4, **options):
    recipe = Recipe(optimizer=optimizer, hidden=hidden, batch_size=batch_size, **options)
    opt = Optimizer(recipe, 10)
    theta = model.glorot_init(recipe.sizes, np.random.default_rng(seed))
    rng = np.random.default_rng(seed + 1)
    state = {name: rng.random(theta.size).astype(np.float32) for name in opt.state_names}
    return CpuBackend(recipe.sizes, recipe.batch_size, opt, theta, state, images, y), theta, state


def test_kernel_buffers_start_on_cache_lines():
    be, _, _ = backend(images=np.zeros((9, 28, 28), np.uint8), y=np.zeros(9, np.int64))
    for row in be.state:
        assert row.ctypes.data % LINE == 0
    for buf in (be.theta, *be.train_bufs[:2], *be.eval_bufs[0][:2]):
        assert buf.ctypes.data % LINE == 0
    for shard in be.eval_bufs[0]:
        assert shard.ctypes.data % LINE == 0


def test_optimizer_state_round_trips_exactly_through_padded_rows():
    be, theta, state = backend("adam")
    assert set(be.optimizer_state()) == {"v", "m"}
    for name, values in be.optimizer_state().items():
        np.testing.assert_array_equal(values, state[name])
    np.testing.assert_array_equal(be.params(), theta)


def test_training_never_reads_the_padding():
    rng = np.random.default_rng(3)
    images = (rng.random((24, 28, 28)) < 0.2).astype(np.uint8) * 200
    y = rng.integers(0, 10, 24)
    order = rng.permutation(24)
    results = []
    for poison in (False, True):
        be, _, _ = backend("adam", images, y)
        n = be.theta.size
        assert be.state.shape[1] > n  # this network's parameter count is not a multiple of a line
        if poison:
            be.state[:, n:] = np.nan
        be.train_chunk(order, 0, 6)
        results.append((be.params(), be.optimizer_state()))
    (theta_a, state_a), (theta_b, state_b) = results
    np.testing.assert_array_equal(theta_a, theta_b)
    assert np.isfinite(theta_b).all()
    for name in state_a:
        np.testing.assert_array_equal(state_a[name], state_b[name])


@pytest.mark.parametrize("options", [
    {}, {"optimizer": "adam"}, {"clip_norm": 0.5, "weight_decay": 0.01},
    {"centered": True, "momentum": 0.9, "nesterov": True}, {"eps_placement": "outside"},
    {"optimizer": "sgd", "lr": 0.01}, {"optimizer": "momentum", "lr": 0.01, "schedule": "step", "decay_steps": 2},
    {"optimizer": "adagrad", "clip_value": 0.01, "decoupled_decay": True, "weight_decay": 0.01},
    {"optimizer": "lion", "weight_decay": 0.1}, {"activation": "tanh"}, {"activation": "sigmoid", "optimizer": "adam"},
], ids=str)
def test_threads_train_bit_for_bit_like_one_thread(options):
    """Splitting each step across threads (forward and dx by batch rows, W by rows) changes
    nothing: every row is computed as on one thread.  The last batch is ragged."""
    rng = np.random.default_rng(7)
    images = (rng.random((70, 28, 28)) < 0.25).astype(np.uint8) * rng.integers(1, 256, (70, 28, 28)).astype(np.uint8)
    y = rng.integers(0, 10, 70)
    order = rng.permutation(70)
    results = {}
    for shards in (1, 2, 3):
        be, _, _ = backend(**{"optimizer": "rmsprop", **options}, images=images, y=y, hidden=(40, 20), batch_size=16)
        be.shards = shards
        out = be.train_chunk(order, 0, 5)
        results[shards] = (out, be.params(), be.optimizer_state())
    (out1, theta1, state1) = results[1]
    assert out1[2:] == (70, -1)
    for shards in (2, 3):
        out, theta, state = results[shards]
        assert out == out1  # the loss too, to the bit: it is summed per row, in row order
        np.testing.assert_array_equal(theta, theta1)
        for name in state1:
            np.testing.assert_array_equal(state[name], state1[name])


def test_backend_splits_steps_across_numba_threads_when_the_batch_allows(monkeypatch):
    import numba

    monkeypatch.setattr(numba, "threading_layer", lambda: "omp")
    images, y = np.zeros((64, 28, 28), np.uint8), np.zeros(64, np.int64)
    assert backend(images=images, y=y, batch_size=32)[0].shards == min(numba.get_num_threads(), 4)
    assert backend(images=images, y=y, batch_size=4)[0].shards == 1  # too few rows to be worth a thread


def test_training_stays_on_one_thread_under_a_threading_layer_that_sleeps(monkeypatch):
    import numba

    monkeypatch.setattr(numba, "threading_layer", lambda: "workqueue")
    images, y = np.zeros((64, 28, 28), np.uint8), np.zeros(64, np.int64)
    assert backend(images=images, y=y, batch_size=32)[0].shards == 1
