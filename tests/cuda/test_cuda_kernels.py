"""Each CUDA kernel against its CPU twin (kernels/cpu.py) and the plain numpy
references, on small shapes that are not multiples of the tile sizes.

On the simulator every CUDA thread is a Python thread, so shapes stay small.
"""

import numpy as np
import pytest

from naive import naive_dense_backward, naive_dense_forward, naive_softmax_xent, sparse_images, sparse_inputs
from naive import ACTIVATIONS as NAIVE_ACTIVATIONS
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


def _backward(x, w, b, act, dout, labels, hp, lr=F32(0.01), act_kind=RELU):
    """Run dense_backward_update on one layer; dout holds the layer above's partial sums of
    dLoss/d(output), or no parts for the last layer.  Returns (W, b, state, dx, loss, correct),
    dx summed over its parts."""
    n, n_in = x.shape
    n_out = w.shape[1]
    theta = np.concatenate([w.ravel(), b]).astype(F32)
    state = np.zeros((3, theta.size), F32)
    state[0] = 0.5  # a non-zero accumulator, so that v's decay shows
    dx = np.full((blocks(n_out, T), n, n_in), np.nan, F32)  # every element is written
    losses, corrects = np.zeros(2, F32), np.zeros(2, np.int32)
    cuda_kernels.dense_backward_update[(blocks(n_out, T), blocks(n_in, cuda_kernels.DEPTH)), BLOCK](
        x, np.arange(n), 0, n, F32(1), theta, 0, act, act_kind, dout, labels, 0,
        state, hp[0], lr, F32(1), F32(1), dx, np.zeros(0, F32), np.zeros(2), 0, losses, corrects, 1)
    return (theta[:w.size].reshape(w.shape), theta[w.size:], state, dx.sum(0), losses[1], corrects[1])


def _cpu_backward(x, w, b, delta, hp, lr=F32(0.01)):
    w, b = w.copy(), b.copy()
    vw, vb = np.full_like(w, 0.5), np.full_like(b, 0.5)
    dx = np.zeros_like(x)
    K.dense_backward_update(x, w, b, delta, vw, vb, np.zeros_like(w), np.zeros_like(b), np.zeros_like(w),
                            np.zeros_like(b), dx, True, RELU, hp[1], False, lr, F32(1), F32(1))
    return w, b, vw, vb, dx


@pytest.mark.parametrize("n,n_in,n_out", SHAPES)
@pytest.mark.parametrize("placement", ["inside", "outside"])
@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_hidden_layer_backward_update_matches_cpu_twin(n, n_in, n_out, placement, activation):
    """Gradient, RMSProp step and dx (masked by ReLU where the next layer reads it), for a layer
    whose own output went through `activation`."""
    rng = np.random.default_rng(n + n_in * n_out)
    x = sparse_inputs(rng, n, n_in)
    w = rng.normal(size=(n_in, n_out)).astype(F32)
    b = rng.normal(size=n_out).astype(F32)
    forward, derivative = NAIVE_ACTIVATIONS[activation]
    act = forward(rng.normal(size=(n, n_out))).astype(F32)   # the layer's output
    parts = rng.normal(size=(2, n, n_out)).astype(F32)       # the layer above's partial sums
    hp = hp_of(eps_placement=placement)
    w_gpu, b_gpu, state, dx, _, _ = _backward(x, w, b, act, parts, np.zeros(n, np.int32), hp,
                                              act_kind=KINDS[activation])
    delta = ((parts[0] + parts[1]) * derivative(act.astype(np.float64))).astype(F32)
    w_cpu, b_cpu, vw, vb, dx_cpu = _cpu_backward(x, w, b, delta, hp)
    np.testing.assert_allclose(w_gpu, w_cpu, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b_gpu, b_cpu, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state[0], np.concatenate([vw.ravel(), vb]), rtol=1e-5, atol=1e-7)
    # dx is written unmasked; the mask of the layer below (x > 0) is applied where it is read.
    np.testing.assert_allclose(dx * (x > 0), dx_cpu, rtol=1e-5, atol=1e-5)
    gw, gb, ref_dx = naive_dense_backward(x, w, delta)
    np.testing.assert_allclose(dx * (x > 0), ref_dx, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("n,c", [(1, 2), (7, 3), (33, 10)])
@pytest.mark.parametrize("scale", [0.1, 5.0, 80.0])
def test_last_layer_softmax_loss_and_update_match_cpu_twin(n, c, scale):
    """The last layer's kernel computes softmax cross-entropy itself: loss, correct count, gradient."""
    rng = np.random.default_rng(n * c)
    n_in = 19
    x = sparse_inputs(rng, n, n_in)
    w = rng.normal(size=(n_in, c)).astype(F32)
    b = rng.normal(size=c).astype(F32)
    z = (rng.normal(size=(n, c)) * scale).astype(F32)
    y = rng.integers(0, c, n)
    hp = hp_of()
    w_gpu, b_gpu, state, dx, loss, correct = _backward(x, w, b, z, np.zeros((0, n, c), F32), y.astype(np.int32), hp)
    delta = np.zeros_like(z)
    cpu_loss, cpu_correct = K.softmax_xent(z, y, delta, F32(1 / n))
    ref_loss, ref_correct, _ = naive_softmax_xent(z, y)
    assert np.isfinite(loss)
    assert loss == pytest.approx(cpu_loss, rel=1e-5, abs=1e-5)
    assert loss == pytest.approx(ref_loss, rel=1e-4, abs=1e-4)
    assert correct == cpu_correct == ref_correct
    w_cpu, b_cpu, vw, vb, dx_cpu = _cpu_backward(x, w, b, delta, hp)
    np.testing.assert_allclose(w_gpu, w_cpu, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b_gpu, b_cpu, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dx * (x > 0), dx_cpu, rtol=1e-5, atol=1e-5)


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
    recipe = Recipe(lr=0.01, hidden=sizes[1:-1], n_inputs=sizes[0], epochs=1, batch_size=batch, **options)
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
    assert gpu.launches == 3 * (2 * 3 + (1 if options.get("clip_norm") else 0))


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
