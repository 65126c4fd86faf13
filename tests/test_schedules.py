"""The learning rate of every update, kernels/math.py learning_rate_at(hp, count) with count the
number of updates already made (0 for the first), against Optax's and Keras' schedules as those
libraries define them (naive_optim.py); and the bias corrections of every update."""

import numpy as np
import pytest

import naive_optim as N
from rmsprop_cli import optim
from rmsprop_cli.config import Recipe
from rmsprop_cli.kernels.math import bias_corrections, learning_rate_at

REL = 1e-12
# (limit, batch size, epochs): 20 batches an epoch and 200 updates; 150 and 450; 375 and 750.
RUNS = [dict(limit=1000, batch_size=40, epochs=10), dict(limit=6000, batch_size=32, epochs=3),
        dict(limit=None, batch_size=128, epochs=2)]
IDS = ["200-updates", "450-updates", "750-updates"]


def schedule(**options):
    """The recipe, the lr of each of its updates 1..N (count 0..N-1) and N."""
    recipe = Recipe(**options)
    hp = optim.Optimizer(recipe, recipe.steps_per_epoch).hyperparameters()
    total = recipe.epochs * recipe.steps_per_epoch
    return recipe, [learning_rate_at(hp, count) for count in range(total)], total


def assert_matches(ours, reference, total):
    expected = [reference(count) for count in range(total)]
    assert ours == pytest.approx(expected, rel=REL, abs=0)


@pytest.mark.parametrize("run", RUNS, ids=IDS)
@pytest.mark.parametrize("lr", [1e-3, 0.1])
def test_constant(run, lr):
    recipe, ours, total = schedule(lr=lr, **run)
    assert ours == [lr] * total
    assert_matches(ours, N.optax_constant_schedule(lr), total)


@pytest.mark.parametrize("run", RUNS, ids=IDS)
@pytest.mark.parametrize("decay_steps", [None, 1, 7, 64])
@pytest.mark.parametrize("decay_rate", [None, 0.9])
def test_step(run, decay_steps, decay_rate):
    """Keras ExponentialDecay(staircase=True), optax.exponential_decay(staircase=True)."""
    recipe, ours, total = schedule(schedule="step", decay_steps=decay_steps, decay_rate=decay_rate, **run)
    d, rate = decay_steps or recipe.steps_per_epoch, recipe.decay_rate
    assert rate == (decay_rate or 0.5)
    assert_matches(ours, N.optax_exponential_decay(recipe.lr, d, rate, staircase=True), total)
    assert_matches(ours, N.keras_exponential_decay(recipe.lr, d, rate, staircase=True), total)
    assert ours[0] == recipe.lr
    assert ours[d - 1] == recipe.lr and ours[d] == recipe.lr * rate     # update d + 1 is the first decayed
    if decay_rate is None:
        assert ours[d] == recipe.lr / 2                                  # halved, exactly


@pytest.mark.parametrize("run", RUNS, ids=IDS)
@pytest.mark.parametrize("decay_steps", [None, 1, 7, 64])
@pytest.mark.parametrize("decay_rate", [None, 0.9])
def test_exponential(run, decay_steps, decay_rate):
    """Keras ExponentialDecay, optax.exponential_decay."""
    recipe, ours, total = schedule(schedule="exponential", decay_steps=decay_steps, decay_rate=decay_rate, **run)
    d = decay_steps or recipe.steps_per_epoch
    assert_matches(ours, N.optax_exponential_decay(recipe.lr, d, recipe.decay_rate), total)
    assert_matches(ours, N.keras_exponential_decay(recipe.lr, d, recipe.decay_rate), total)
    assert ours[0] == recipe.lr
    assert all(a > b for a, b in zip(ours, ours[1:]))


@pytest.mark.parametrize("run", RUNS, ids=IDS)
@pytest.mark.parametrize("lr", [1e-3, 0.1])
def test_cosine(run, lr):
    """optax.cosine_decay_schedule(lr, decay_steps=N), Keras CosineDecay(lr, decay_steps=N)."""
    recipe, ours, total = schedule(schedule="cosine", lr=lr, **run)
    assert_matches(ours, N.optax_cosine_decay_schedule(lr, total), total)
    assert_matches(ours, N.keras_cosine_decay(lr, total), total)
    assert ours[0] == lr and ours[-1] > 0
    assert all(a > b for a, b in zip(ours, ours[1:]))


@pytest.mark.parametrize("run", RUNS, ids=IDS)
@pytest.mark.parametrize("warmup", [1, 7, 100])
def test_warmup_cosine(run, warmup):
    """optax.warmup_cosine_decay_schedule(0, lr, W, decay_steps=N) and Keras CosineDecay(0,
    decay_steps=N − W, warmup_target=lr, warmup_steps=W)."""
    recipe, ours, total = schedule(schedule="cosine", lr=0.01, warmup_steps=warmup, **run)
    assert_matches(ours, N.optax_warmup_cosine_decay_schedule(0.0, 0.01, warmup, total), total)
    assert_matches(ours, N.keras_cosine_decay(0.0, total - warmup, warmup_target=0.01, warmup_steps=warmup), total)
    assert ours[0] == 0 and ours[warmup] == 0.01 and ours[-1] > 0
    assert all(a < b for a, b in zip(ours[:warmup], ours[1:warmup + 1]))


@pytest.mark.parametrize("run", RUNS, ids=IDS)
@pytest.mark.parametrize("warmup", [1, 7, 100])
@pytest.mark.parametrize("kind", ["step", "exponential"])
@pytest.mark.parametrize("decay_steps", [None, 5])
def test_warmup_exponential(run, warmup, kind, decay_steps):
    """optax.warmup_exponential_decay_schedule(0, lr, W, transition_steps, rate, staircase)."""
    recipe, ours, total = schedule(schedule=kind, lr=0.01, warmup_steps=warmup, decay_steps=decay_steps,
                                   decay_rate=0.8, **run)
    d = decay_steps or recipe.steps_per_epoch
    assert_matches(ours, N.optax_warmup_exponential_decay_schedule(0.0, 0.01, warmup, d, 0.8,
                                                                   staircase=kind == "step"), total)
    assert ours[0] == 0 and ours[warmup] == 0.01


@pytest.mark.parametrize("run", RUNS, ids=IDS)
@pytest.mark.parametrize("warmup", [1, 7, 100])
def test_warmup_constant(run, warmup):
    """optax.warmup_constant_schedule(0, lr, W): linear_schedule(0, lr, W)."""
    recipe, ours, total = schedule(lr=0.01, warmup_steps=warmup, **run)
    assert_matches(ours, N.optax_linear_schedule(0.0, 0.01, warmup), total)
    assert ours[0] == 0 and ours[warmup:] == [0.01] * (total - warmup)


# --- bias corrections ---------------------------------------------------------------------

def corrections(recipe, n):
    hp = optim.Optimizer(recipe, recipe.steps_per_epoch).hyperparameters()
    return [bias_corrections(hp, t) for t in range(1, n + 1)]


def assert_float32_of(ours, exact):
    """ours are float32 values (Numba boxes them as Python floats), exact rounded once: half an ulp, 2^-24."""
    assert all(float(np.float32(c)) == c for c in ours)
    np.testing.assert_allclose(np.float64(ours), exact, rtol=2.0 ** -24 * (1 + 1e-9), atol=0)


@pytest.mark.parametrize("beta1,beta2", [(None, None), (0.5, 0.99), (0.0, 0.9999)])
def test_adam_bias_corrections(beta1, beta2):
    recipe = Recipe(optimizer="adam", beta1=beta1, beta2=beta2)
    b1, b2 = recipe.beta1, recipe.beta2
    ours = corrections(recipe, 3000)
    t = np.arange(1, 3001, dtype=np.float64)
    assert_float32_of([c[0] for c in ours], 1 / (1 - b1 ** t) if b1 else np.ones(3000))
    assert_float32_of([c[1] for c in ours], 1 / (1 - b2 ** t))
    assert ours[0][1] == np.float32(1 / (1 - b2))


@pytest.mark.parametrize("rho", [0.9, 0.999])
def test_rmsprop_bias_corrections(rho):
    """optax.scale_by_rms(bias_correction=True): v/(1 − ρ^t); bias_corrections gives 1/(1 − ρ^t) twice."""
    ours = corrections(Recipe(rho=rho, bias_correction=True), 3000)
    exact = 1 / (1 - rho ** np.arange(1, 3001, dtype=np.float64))
    assert_float32_of([c[0] for c in ours], exact)
    assert_float32_of([c[1] for c in ours], exact)


@pytest.mark.parametrize("options", [dict(), dict(rho=0.999, centered=True), dict(optimizer="sgd"),
                                     dict(optimizer="momentum"), dict(optimizer="adagrad"), dict(optimizer="lion"),
                                     dict(optimizer="lion", beta1=0.5, beta2=0.999)])
def test_no_bias_correction_is_one(options):
    assert corrections(Recipe(**options), 50) == [(1.0, 1.0)] * 50
