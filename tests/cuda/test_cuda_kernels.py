"""Each CUDA kernel against its CPU twin (kernels/cpu.py) and the plain numpy
references, on small shapes that are not multiples of the tile sizes.

On the simulator every CUDA thread is a Python thread, so shapes stay small.
"""

import numpy as np
import pytest

from naive import naive_dense_backward, naive_dense_forward, naive_softmax_xent, sparse_images
from rmsprop_cli import model
from rmsprop_cli.activations import ACTIVATIONS, IDENTITY, RELU
from rmsprop_cli.backends.cpu import CpuBackend
from rmsprop_cli.backends.cuda import CudaBackend
from rmsprop_cli.config import Recipe
from rmsprop_cli.kernels import cpu as K
from rmsprop_cli.optim import Optimizer

cuda_kernels = pytest.importorskip("rmsprop_cli.kernels.cuda")
T = cuda_kernels.TILE
BLOCK = (T, T)
F32 = np.float32


def blocks(n, per):
    return max(1, -(-n // per))


def hp_of(**options):
    """The hyperparameters as each target reads them: a float32 array (CUDA), a float32 tuple (CPU)."""
    hp = Optimizer(Recipe(**options), 10).hyperparameters().astype(F32)
    return hp, tuple(hp)


KINDS = {None: IDENTITY, **{name: a.kind for name, a in ACTIVATIONS.items()}}


# (rows, inputs, outputs): one tile, several, and ragged edges on every axis
SHAPES = [(1, 1, 1), (5, 20, 7), (17, 70, 20), (33, 17, 33)]


@pytest.mark.parametrize("n,n_in,n_out", SHAPES)
@pytest.mark.parametrize("act", list(KINDS))
def test_dense_forward_matches_cpu_twin(n, n_in, n_out, act):
    rng = np.random.default_rng(n * n_in + n_out)
    images, x = sparse_images(rng, n + 3, n_in)
    order = rng.permutation(n + 3)
    w = rng.normal(size=(n_in, n_out)).astype(F32)
    b = rng.normal(size=n_out).astype(F32)
    theta = np.concatenate([rng.normal(size=5).astype(F32), w.ravel(), b])  # the layer at offset 5
    out = np.full((n, n_out), np.nan, F32)
    lo = 2  # the batch is order[2:2 + n]
    rows = order[lo:lo + n]
    cuda_kernels.dense_forward[(blocks(n_out, T), blocks(n, T)), BLOCK](
        images, order, lo, n, F32(255), theta, 5, KINDS[act], out)
    cpu = np.zeros_like(out)
    K.dense_forward(x[rows], w, b, cpu, KINDS[act])
    np.testing.assert_allclose(out, cpu, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out, naive_dense_forward(x[rows], w, b, act), rtol=1e-4, atol=1e-4)


def test_relu_keeps_nan_for_the_divergence_check():
    theta = np.array([np.nan, 1.0, 0.0, 0.0], F32)  # W (1, 2), b (2)
    out = np.zeros((1, 2), F32)
    cuda_kernels.dense_forward[(1, 1), BLOCK](np.array([[1.0]], F32), np.arange(1), 0, 1, F32(1), theta, 0, RELU, out)
    assert np.isnan(out[0, 0]) and out[0, 1] == 1.0


def _buffers(gpu):
    """Each layer's inputs and deltas for the rows of the batch, as batch_rows left them in the buffer."""
    buf, layout = gpu.buf.copy_to_host(), gpu.layout
    r, sizes, rows = layout.regions(), layout.sizes, layout.rows
    acts, deltas, at, dt = [], [], r["acts"], r["deltas"]
    for l, width in enumerate(sizes):
        acts.append(buf[at:at + rows * width].reshape(rows, width))
        at += rows * width
        if l:
            deltas.append(buf[dt:dt + rows * width].reshape(rows, width))
            dt += rows * width
    return acts, deltas, buf[r["row_loss"]:r["row_loss"] + 2 * rows].reshape(2, rows)


def naive_step(theta, sizes, x, y, act):
    """Float64: every layer's output, the loss sum, the correct count, every layer's delta and the gradient."""
    tensors = model.views(theta.astype(np.float64), sizes)
    outs, n_layers = [x.astype(np.float64)], len(sizes) - 1
    for l in range(n_layers):
        outs.append(naive_dense_forward(outs[-1], tensors[2 * l], tensors[2 * l + 1], act if l < n_layers - 1 else None))
    loss, correct, delta = naive_softmax_xent(outs[-1], y)
    deltas, grads = [delta], []
    for l in range(n_layers - 1, -1, -1):
        gw, gb, dx = naive_dense_backward(outs[l], tensors[2 * l], deltas[0], act)
        grads = [gw.ravel(), gb] + grads
        if l:
            deltas.insert(0, dx)
    return outs, loss, correct, deltas, np.concatenate(grads)


# Networks: no hidden layer, the usual two, one wider than a block of batch_rows' threads, three hidden.
NETWORKS = [(5, 3), (20, 12, 6, 10), (9, 130, 4), (17, 7, 5, 3, 4)]


@pytest.mark.parametrize("sizes", NETWORKS, ids=str)
@pytest.mark.parametrize("activation", list(ACTIVATIONS))
@pytest.mark.parametrize("m", [1, 7])
def test_a_training_step_matches_the_float64_reference(sizes, activation, m):
    """batch_rows (forward, loss, deltas) and weight_rows (gradient, step) against plain float64 numpy:
    with SGD at lr 1, the step moves each parameter by exactly its gradient."""
    rng = np.random.default_rng(len(sizes) * 10 + m)
    images, x = sparse_images(rng, 11, sizes[0])
    y = rng.integers(0, sizes[-1], 11)
    recipe = Recipe(optimizer="sgd", lr=1.0, hidden=sizes[1:-1], n_inputs=sizes[0], n_classes=sizes[-1], epochs=1,
                    batch_size=7, activation=activation)
    opt = Optimizer(recipe, 2)
    theta = model.glorot_init(sizes, rng)
    gpu = CudaBackend(sizes, 7, opt, theta, opt.init(theta.size), images, y)
    order = rng.permutation(11).astype(np.int64)
    start = 11 - m   # m = 7: a whole batch; m = 1: the ragged last row alone
    loss, correct, seen, bad = gpu.train_chunk(order, start, 1)
    rows = order[start:]
    outs, ref_loss, ref_correct, ref_deltas, grad = naive_step(theta, sizes, x[rows], y[rows], activation)
    acts, deltas, row_stats = _buffers(gpu)
    assert (seen, bad, correct) == (m, -1, ref_correct)
    assert loss == pytest.approx(ref_loss, rel=1e-5, abs=1e-6)
    np.testing.assert_allclose(row_stats[0, :m].sum(), ref_loss, rtol=1e-5)
    for l, out in enumerate(outs):
        np.testing.assert_allclose(acts[l][:m], out, rtol=1e-4, atol=1e-5)
    for l, delta in enumerate(ref_deltas):
        np.testing.assert_allclose(deltas[l][:m], delta, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(theta - gpu.params(), grad, rtol=1e-4, atol=1e-6)


@pytest.mark.full_block
def test_the_full_width_of_layer_0():
    """784 pixels, as MNIST, and the GPU's block size: every input column of layer 0 reaches the
    forward pass and the gradient."""
    rng = np.random.default_rng(7)
    sizes = (784, 8, 10)
    images, x = sparse_images(rng, 4, 784)
    y = rng.integers(0, 10, 4)
    opt = Optimizer(Recipe(optimizer="sgd", lr=1.0, hidden=(8,), epochs=1, batch_size=4), 1)
    theta = model.glorot_init(sizes, rng)
    gpu = CudaBackend(sizes, 4, opt, theta, opt.init(theta.size), images, y)
    loss, correct, seen, bad = gpu.train_chunk(np.arange(4, dtype=np.int64), 0, 1)
    _, ref_loss, ref_correct, _, grad = naive_step(theta, sizes, x, y, "relu")
    assert loss == pytest.approx(ref_loss, rel=1e-5) and correct == ref_correct and seen == 4
    np.testing.assert_allclose(theta - gpu.params(), grad, rtol=1e-4, atol=1e-6)


OPTIONS = [
    {}, {"eps_placement": "outside"}, {"centered": True, "momentum": 0.9, "nesterov": True},
    {"optimizer": "adam"}, {"bias_correction": True}, {"optimizer": "adagrad", "schedule": "cosine", "warmup_steps": 2},
    {"optimizer": "lion", "weight_decay": 0.1}, {"activation": "tanh"}, {"activation": "sigmoid", "optimizer": "adam"},
    {"optimizer": "momentum", "weight_decay": 0.01}, {"decoupled_decay": True, "weight_decay": 0.1},
    {"clip_value": 0.001, "schedule": "step", "decay_steps": 1}, {"clip_norm": 0.05},
    {"optimizer": "adam", "clip_norm": 0.05},
]


def _pair(options, sizes=(20, 12, 6, 10), n=48, batch=16, seed=3):
    rng = np.random.default_rng(seed)
    images, _ = sparse_images(rng, n, sizes[0])
    y = rng.integers(0, sizes[-1], n)
    recipe = Recipe(**{"lr": 0.01, **options}, hidden=sizes[1:-1], n_inputs=sizes[0], epochs=1, batch_size=batch)
    opt = Optimizer(recipe, -(-n // batch))
    theta = model.glorot_init(sizes, rng)
    state = opt.init(theta.size)
    backends = [cls(sizes, batch, opt, theta, state, images, y) for cls in (CpuBackend, CudaBackend)]
    return backends, images, y, rng


@pytest.mark.parametrize("options", OPTIONS, ids=str)
def test_training_steps_match_cpu_backend(options):
    """Three steps of every optimizer family through both backends: same losses, weights and state.
    The batch of 16 leaves a last batch of 16 and exercises the clip-norm path's extra kernel."""
    (cpu, gpu), images, y, rng = _pair(options)
    order = rng.permutation(len(y)).astype(np.int64)
    for first in (0, 2):
        count = 2 if first == 0 else 1
        a, b = cpu.train_chunk(order, first * 16, count), gpu.train_chunk(order, first * 16, count)
        assert b[0] == pytest.approx(a[0], rel=1e-5) and b[1:] == a[1:]
        np.testing.assert_allclose(gpu.params(), cpu.params(), rtol=1e-4, atol=1e-6)
    for name, value in cpu.optimizer_state().items():
        np.testing.assert_allclose(gpu.optimizer_state()[name], value, rtol=1e-4, atol=1e-7)
    assert gpu.step == cpu.step == 3
    assert gpu.launches == 3 * (2 + (1 if options.get("clip_norm") else 0))


def test_a_ragged_last_batch_matches_cpu_backend():
    (cpu, gpu), images, y, rng = _pair({}, n=45, batch=16)
    order = rng.permutation(45).astype(np.int64)
    a, b = cpu.train_chunk(order, 0, 3), gpu.train_chunk(order, 0, 3)
    assert b[2] == a[2] == 45 and b[1] == a[1]
    assert b[0] == pytest.approx(a[0], rel=1e-5)
    np.testing.assert_allclose(gpu.params(), cpu.params(), rtol=1e-4, atol=1e-6)


def test_a_diverging_batch_is_reported_like_on_cpu():
    (cpu, gpu), images, y, rng = _pair({}, seed=4)
    theta = cpu.params()
    theta[:5] = np.inf   # weights gone bad: the first batch's loss is not finite
    for backend in (cpu, gpu):
        backend.set_state(theta, {"v": np.zeros_like(theta)})
    order = np.arange(len(y), dtype=np.int64)
    assert gpu.train_chunk(order, 0, 2)[3] == cpu.train_chunk(order, 0, 2)[3] == 0


@pytest.mark.parametrize("options", [{"optimizer": "sgd", "lr": 1e30}, {"optimizer": "sgd", "lr": 1e30, "clip_norm": 1e30}],
                         ids=["plain", "clip-norm"])
def test_a_run_that_diverges_mid_chunk_stops_where_the_cpu_does(options):
    """The first step is fine and throws the weights far out, the second's loss is not finite: both
    backends report batch 1, count batch 0 only, and keep the weights of after step 1."""
    (cpu, gpu), images, y, rng = _pair(options, seed=5)
    order = np.arange(len(y), dtype=np.int64)
    a, b = cpu.train_chunk(order, 0, 3), gpu.train_chunk(order, 0, 3)
    assert a[1:] == b[1:] and a[3] == 1 and a[2] == 16
    assert b[0] == pytest.approx(a[0], rel=1e-5)
    assert gpu.step == cpu.step == 1
    theta = cpu.params()
    assert np.isfinite(theta).all() and np.abs(theta).max() > 1e20   # step 1 was taken, step 2 was not
    # lr 1e30 magnifies float32 rounding in a gradient's cancelling terms: compare on the weights' scale.
    np.testing.assert_allclose(gpu.params(), theta, rtol=1e-4, atol=1e-5 * np.abs(theta).max())


def test_clipping_a_gradient_whose_squares_overflow_float32():
    """A gradient norm near 1e21: its squares would overflow float32, and the step must still be
    the CPU's (which sums them in float64), clipped to the norm asked for."""
    (cpu, gpu), images, y, rng = _pair({"optimizer": "sgd", "lr": 0.1, "clip_norm": 1.0}, seed=6)
    theta = cpu.params()
    theta[-70:] *= np.float32(1e20)   # the last layer's weights (6 x 10 and its bias): huge logits
    for backend in (cpu, gpu):
        backend.set_state(theta, {})
    order = np.arange(len(y), dtype=np.int64)
    a, b = cpu.train_chunk(order, 0, 1), gpu.train_chunk(order, 0, 1)
    assert np.isfinite(a[0]) and b[0] == pytest.approx(a[0], rel=1e-5) and b[3] == a[3] == -1
    moved = cpu.params() - theta
    assert 0 < np.abs(moved[:-70]).max() and np.linalg.norm(moved.astype(np.float64)) <= 0.1 * 1.0001
    np.testing.assert_allclose(gpu.params() - theta, moved, rtol=1e-3, atol=1e-9)


def test_evaluate_and_predict_match_cpu_backend():
    (cpu, gpu), images, y, rng = _pair({}, n=40)
    test_images, _ = sparse_images(rng, 37, 20)
    test_y = rng.integers(0, 10, 37)
    loss_a, correct_a, conf_a = cpu.evaluate(test_images, test_y)
    loss_b, correct_b, conf_b = gpu.evaluate(test_images, test_y)
    assert loss_b == pytest.approx(loss_a, rel=1e-5)
    assert correct_b == correct_a and conf_b.sum() == 37
    np.testing.assert_array_equal(conf_b, conf_a)
    np.testing.assert_allclose(gpu.predict_proba(test_images), cpu.predict_proba(test_images), rtol=1e-5, atol=1e-7)
    assert gpu.evaluate(test_images[:0], test_y[:0])[1] == 0
