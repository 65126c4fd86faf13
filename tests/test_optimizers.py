"""Every optimizer of the registry, with every option that applies to it: the
compiled float32 step (kernels/updates.py optimizer_update, after clip_global_norm
as the training driver runs them) against float64 numpy references of the
published formulas (naive_optim.py), over 200 updates of random gradients whose
scale is drawn log-uniformly from 1e-4 to 1 at each update."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import naive_optim as N
from rmsprop_cli import hyper, optim
from rmsprop_cli.bounds import option
from rmsprop_cli.config import OPTIMIZER_FIELDS, Recipe
from rmsprop_cli.errors import ConfigError
from rmsprop_cli.kernels import updates as K
from rmsprop_cli.kernels import math as KM

STEPS = 200
RUN = dict(limit=1000, batch_size=40, epochs=10)   # 20 batches an epoch: 200 updates in all
# Error allowed after 200 updates: max|ours − exact| / the largest |exact| reached in the run.  Buffers
# 5e-6 (measured ≤ 3.1e-6).  θ: 200 float32 roundings of half an ulp, which add up when the updates
# are alike (Lion's ±lr, a decoupled decay): 1.2e-5 (measured ≤ 6e-6).  The old float32(1 − float32(ρ)),
# 1.3e-5 off for ρ = 0.999, gave 1.2e-5 on v and 6e-6 on θ (θ bound THETA_RHO in test_one_minus_rho_*).
TOL = {"theta": STEPS * 2.0 ** -24, "v": 5e-6, "m": 5e-6, "b": 5e-6}
THETA_RHO = 2e-6

# The values each option is tried with, and the companions an option needs to be accepted.
VALUES = {
    "lr": [3e-4, 0.01], "rho": [0.5, 0.99, 0.999], "eps": [1e-8, 1e-3], "eps_placement": ["outside"],
    "centered": [True], "momentum": [0.5, 0.9], "nesterov": [True], "initial_accumulator": [0.0, 1.0],
    "bias_correction": [True], "beta1": [0.0, 0.5], "beta2": [0.9, 0.999], "weight_decay": [0.05, 0.5],
    "decoupled_decay": [True], "clip_norm": [0.01, 1.0], "clip_value": [0.0625],
    "schedule": ["step", "exponential", "cosine"], "warmup_steps": [30], "decay_steps": [7], "decay_rate": [0.9],
}
NEEDS = {"nesterov": {"momentum": 0.9}, "decoupled_decay": {"weight_decay": 0.05},
         "decay_steps": {"schedule": "step"}, "decay_rate": {"schedule": "exponential"}}
assert set(VALUES) == set(OPTIMIZER_FIELDS), "every option is tried"


def gradients(n, seed, steps=STEPS):
    """theta0, and one gradient per update, N(0, 1) times a scale log-uniform in [1e-4, 1] per update."""
    rng = np.random.default_rng(seed)
    theta0 = (rng.standard_normal(n) * 1e-2).astype(np.float32)
    return theta0, [(rng.standard_normal(n) * 10 ** rng.uniform(-4, 0)).astype(np.float32) for _ in range(steps)]


def run_kernel(recipe, theta0, grads, fill=None, steps=None):
    """theta and v, m, b (Optimizer.init's buffers, zeros for the others; all `fill` if given) after
    the updates with gradients grads (a list, or a function of theta for `steps` updates)."""
    opt = optim.Optimizer(recipe, recipe.steps_per_epoch)
    hp, theta = opt.hyperparameters(), theta0.copy()
    p = tuple(np.float32(x) for x in hp)
    state = {k: np.full(theta.size, fill or 0.0, np.float32) for k in "vmb"}
    state.update({} if fill else opt.init(theta.size))
    for count in range(len(grads) if steps is None else steps):
        g = (grads(theta) if callable(grads) else grads[count]).copy()
        if recipe.clip_norm:
            K.clip_global_norm(g, np.float32(recipe.clip_norm))
        given_grad = g.copy()
        K.optimizer_update(theta, g, state["v"], state["m"], state["b"], p, np.float32(KM.learning_rate_at(hp, count)),
                           *KM.bias_corrections(hp, count + 1))
        np.testing.assert_array_equal(g, given_grad, err_msg="optimizer_update wrote to its gradient")
    return theta, state


def run_reference(recipe, theta0, grads, step=N.update):
    """theta, state, the largest |value| each reached, and the elements to compare (all but those
    where a Lion sign was moot), after the float64 reference's updates."""
    o = recipe.to_dict()
    lr_of = N.optax_schedule_of(o, recipe.steps_per_epoch)
    theta, s = theta0.astype(np.float64), {k: np.zeros(theta0.size) for k in "vmb"}
    if "v" in optim.buffers(recipe):
        s["v"][:] = recipe.initial_accumulator or 0.0
    sizes = dict.fromkeys(["theta", "v", "m", "b"], 0.0)
    moot = np.zeros(theta.size, bool)
    for count, g in enumerate(grads):
        g = g.astype(np.float64)
        if recipe.optimizer == "lion":
            moot |= N.lion_sign_is_moot(o, s, g)
        theta = step(o, theta, g, s, lr_of(count), count + 1)
        for k, a in [("theta", theta), *s.items()]:
            sizes[k] = max(sizes[k], float(np.max(np.abs(a))))
    assert moot.sum() <= max(1, moot.size // 100), "almost every Lion sign is decided"
    return theta, s, sizes, ~moot


def errors(recipe, ours, exact):
    (theta, state), (theta_ref, s, sizes, keep) = ours, exact
    out = {"theta": np.max(np.abs(theta - theta_ref)[keep], initial=0.0) / sizes["theta"]}
    out.update({k: np.max(np.abs(state[k] - s[k])) / max(sizes[k], 1e-30) for k in optim.buffers(recipe)})
    return {k: float(v) for k, v in out.items()}


def check(recipe, n, seed):
    theta0, grads = gradients(n, seed)
    errs = errors(recipe, run_kernel(recipe, theta0, grads), run_reference(recipe, theta0, grads))
    assert all(e <= TOL[k] for k, e in errs.items()), errs


def single_cases():
    for spec in optim.REGISTRY:
        yield pytest.param(spec.name, {}, id=f"{spec.name}-defaults")
        for name in spec.options:
            for value in VALUES[name]:
                needs = {k: v for k, v in NEEDS.get(name, {}).items() if k in spec.options}
                yield pytest.param(spec.name, {**needs, name: value}, id=f"{spec.name}-{name}={value}")


@pytest.mark.parametrize("name,options", list(single_cases()))
@pytest.mark.parametrize("n,seed", [(1, 0), (257, 1), (1000, 2)])
def test_each_option_matches_reference(name, options, n, seed):
    check(Recipe(optimizer=name, **RUN, **options), n, seed)


@st.composite
def recipes(draw, name):
    """A random subset of optimizer `name`'s options, mended into a recipe the Recipe accepts."""
    spec = optim.OPTIMIZERS[name]
    opts = {k: draw(st.sampled_from(VALUES[k])) for k in spec.options if draw(st.booleans())}
    if opts.get("schedule") not in hyper.DECAYING:
        opts.pop("decay_steps", None), opts.pop("decay_rate", None)
    if not opts.get("momentum", spec.defaults.get("momentum")):
        opts.pop("nesterov", None)
    if not opts.get("weight_decay"):
        opts.pop("decoupled_decay", None)
    if opts.get("centered"):
        opts.pop("bias_correction", None)
    return Recipe(optimizer=name, **RUN, **opts)


@pytest.mark.parametrize("name", optim.NAMES)
@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), n=st.sampled_from([5, 64, 300]), seed=st.integers(0, 2**32 - 1))
def test_option_combinations_match_reference(name, data, n, seed):
    check(data.draw(recipes(name)), n, seed)


RHO_999 = [("rmsprop", {"rho": 0.999}), ("rmsprop", {"rho": 0.999, "momentum": 0.9}),
           ("rmsprop", {"rho": 0.999, "bias_correction": True}), ("adam", {"beta2": 0.999})]


@pytest.mark.parametrize("name,options", RHO_999)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_one_minus_rho_in_float64(name, options, seed):
    """Within bounds of the exact formula, while that formula with its factor 1 − ρ replaced by the
    old kernels' float32(1 − float32(ρ)) is outside them: the bounds catch that defect."""
    recipe = Recipe(optimizer=name, **RUN, **options)
    theta0, grads = gradients(1000, seed)
    exact = run_reference(recipe, theta0, grads)
    ours = errors(recipe, run_kernel(recipe, theta0, grads), exact)
    assert ours["theta"] <= THETA_RHO and ours["v"] <= TOL["v"], ours
    old = float(np.float32(1) - np.float32(0.999))
    assert abs(old / (1 - 0.999) - 1) > 1.2e-5

    def old_step(o, theta, g, s, lr, t):
        if name == "adam":
            return N.adam(theta, g, s, lr, t, o["beta1"], o["beta2"], o["eps"], one_minus_beta2=old)
        return N.rmsprop(theta, g, s, lr, t, o["rho"], o["eps"], momentum=o["momentum"],
                         bias_correction=o["bias_correction"], one_minus_rho=old)
    theta_old, s_old, *_ = run_reference(recipe, theta0, grads, old_step)
    errs = errors(recipe, (theta_old, s_old), exact)
    assert errs["theta"] > THETA_RHO and errs["v"] > TOL["v"], errs


@pytest.mark.parametrize("name,options", [RHO_999[0], RHO_999[3]])
def test_v_stays_exact_long_after_one_over_one_minus_rho(name, options):
    """float32(ρ) + float32(1 − ρ) is 1 + 1.3e-8 for ρ = 0.999: with those two factors the average's weights
    sum to 1 + 1.29e-5 once t ≫ 1/(1 − ρ) (v 9e-6 off at t = 4000). math.average uses the one factor 1 − ρ."""
    recipe = Recipe(optimizer=name, **options)
    theta0, grads = gradients(300, 0, steps=4000)
    errs = errors(recipe, run_kernel(recipe, theta0, grads), run_reference(recipe, theta0, grads))
    assert errs["v"] <= TOL["v"], errs


# --- documented examples --------------------------------------------------------------

def test_keras_rmsprop_docs_example():
    """keras.optimizers.RMSprop(learning_rate=0.1), var1 = 10.0, loss = var1²/2: 9.683772 after one step."""
    recipe = Recipe(lr=0.1)
    assert (recipe.rho, recipe.eps) == (0.9, 1e-7)
    theta, _ = run_kernel(recipe, np.array([10.0], np.float32), lambda var: var, steps=1)
    assert str(theta[0]) == "9.683772"
    assert abs(float(theta[0]) - (10 - 0.1 * 10 / np.sqrt(0.1 * 100 + 1e-7))) < 1e-6


def test_optax_rmsprop_docs_example():
    """optax.rmsprop(learning_rate=0.003) (decay 0.9, eps 1e-8 inside the root) on f(x) = Σx², x = [1, 2, 3]."""
    recipe = Recipe(lr=0.003, eps=1e-8)
    x0 = np.array([1.0, 2.0, 3.0], np.float32)
    assert f"{np.sum(x0 ** 2)}" == "14.0"
    xs = [run_kernel(recipe, x0, lambda x: 2 * x, steps=k)[0] for k in range(1, 6)]
    printed = ["Objective function: {:.2E}".format(np.sum(x.astype(np.float64) ** 2)) for x in xs]
    assert printed == [f"Objective function: {v}" for v in ("1.39E+01", "1.38E+01", "1.37E+01", "1.37E+01",
                                                            "1.36E+01")]
    ref, s = np.array([1.0, 2.0, 3.0]), {"v": np.zeros(3)}
    for t in range(1, 6):
        ref = N.rmsprop(ref, 2 * ref, s, 0.003, t, 0.9, 1e-8)
    np.testing.assert_allclose(xs[-1], ref, rtol=1e-6)


# --- state buffers ---------------------------------------------------------------------

BUFFERS = [("rmsprop", {}, "v"), ("rmsprop", {"centered": True}, "vm"), ("rmsprop", {"momentum": 0.9}, "vb"),
           ("rmsprop", {"centered": True, "momentum": 0.9}, "vmb"), ("rmsprop", {"bias_correction": True}, "v"),
           ("sgd", {}, ""), ("sgd", {"momentum": 0.9, "nesterov": True}, "b"), ("momentum", {}, "b"),
           ("adagrad", {}, "v"), ("adam", {}, "vm"), ("adam", {"weight_decay": 0.1, "decoupled_decay": True}, "vm"),
           ("lion", {}, "m"), ("lion", {"weight_decay": 0.1}, "m")]


@pytest.mark.parametrize("name,options,expected", BUFFERS)
def test_declared_buffers(name, options, expected):
    recipe = Recipe(optimizer=name, **options)
    opt = optim.Optimizer(recipe, recipe.steps_per_epoch)
    assert optim.buffers(recipe) == opt.state_names == tuple(expected)
    init = opt.init(7)
    assert tuple(init) == tuple(expected)
    for k, a in init.items():
        assert a.dtype == np.float32 and a.shape == (7,)
        np.testing.assert_array_equal(a, np.float32(recipe.initial_accumulator or 0.0) if k == "v" else 0.0)


@pytest.mark.parametrize("name,options", [c.values for c in single_cases()] + [c[:2] for c in BUFFERS])
def test_step_changes_only_declared_buffers(name, options):
    recipe = Recipe(optimizer=name, **RUN, **options)
    theta0, grads = gradients(64, 3)
    _, state = run_kernel(recipe, theta0, grads[:5], fill=0.25)
    for k in "vmb":
        unchanged = bool(np.all(state[k] == np.float32(0.25)))
        assert unchanged != (k in optim.buffers(recipe)), (k, optim.buffers(recipe))


# --- refusals and defaults --------------------------------------------------------------

@pytest.mark.parametrize("name,opt", [(s.name, o) for s in optim.REGISTRY for o in OPTIMIZER_FIELDS
                                      if o not in s.options])
def test_inapplicable_option_is_refused(name, opt):
    with pytest.raises(ConfigError) as caught:
        Recipe(optimizer=name, **{opt: VALUES[opt][0]})
    message = str(caught.value)
    assert option(opt) in message and name in message
    assert set(message.rsplit("applies to", 1)[1].strip(" .").split(", ")) == set(optim.applies_to(opt))


@pytest.mark.parametrize("options", [dict(optimizer="adam", centered=True), dict(centered=True, bias_correction=True),
                                     dict(decay_steps=5), dict(schedule="cosine", decay_rate=0.5), dict(nesterov=True),
                                     dict(decoupled_decay=True), dict(optimizer="sgd", nesterov=True),
                                     dict(optimizer="momentum", momentum=0.0, nesterov=True)])
def test_inconsistent_options_are_refused(options):
    with pytest.raises(ConfigError):
        Recipe(**options)


# The published defaults: Keras' RMSprop, SGD, SGD(momentum=0.9), Adagrad and Adam; optax.lion (e).
PUBLISHED = {"rmsprop": dict(lr=1e-3, rho=0.9, eps=1e-7, momentum=0.0, centered=False, initial_accumulator=0.0),
             "sgd": dict(lr=0.01, momentum=0.0, nesterov=False), "momentum": dict(lr=0.01, momentum=0.9),
             "adagrad": dict(lr=1e-3, eps=1e-7, initial_accumulator=0.1),
             "adam": dict(lr=1e-3, eps=1e-7, beta1=0.9, beta2=0.999), "lion": dict(lr=1e-4, beta1=0.9, beta2=0.99)}


@pytest.mark.parametrize("spec", optim.REGISTRY, ids=optim.NAMES)
def test_published_defaults_are_filled(spec):
    recipe = Recipe(optimizer=spec.name)
    for k, value in PUBLISHED[spec.name].items():
        assert getattr(recipe, k) == value, k
    for k in OPTIMIZER_FIELDS:
        if k not in spec.options:
            assert getattr(recipe, k) in (None, False), k


# --- Lion --------------------------------------------------------------------------------

def lion_step(theta, g, m, **options):
    recipe = Recipe(optimizer="lion", **options)
    hp = optim.Optimizer(recipe, 1).hyperparameters()
    theta, g, m = (np.array(a, np.float32) for a in (theta, g, m))
    K.optimizer_update(theta, g, np.zeros_like(theta), m, np.zeros_like(theta), tuple(np.float32(x) for x in hp),
                       np.float32(recipe.lr), *KM.bias_corrections(hp, 1))
    return theta, m


def test_lion_sign_of_zero_is_zero():
    theta, m = lion_step([0.5, 0.5, 0.5], [0.0, 0.0, 0.0], [0.0, 1e-3, -1e-3])
    assert theta[0] == 0.5 and m[0] == 0, "sign(0) = 0: no step"
    np.testing.assert_allclose(theta[1:], [0.5 - 1e-4, 0.5 + 1e-4], rtol=1e-7)
    p = tuple(np.float32(x) for x in optim.Optimizer(Recipe(optimizer="lion"), 1).hyperparameters())
    z = np.float32(0)
    assert KM.lion(np.float32(0.5), z, z, z, z, p, np.float32(1e-4), np.float32(1), np.float32(1))[0] == 0.5


def test_lion_weight_decay_is_decoupled():
    """θ = −1, g = +1e-3, λ = 0.5: optax.lion steps by −lr·(sign(g) + λθ) = −lr·0.5, and m sees g alone;
    as an L2 term the gradient would be g + λθ < 0 and θ would rise by lr instead."""
    hp = optim.Optimizer(Recipe(optimizer="lion", weight_decay=0.5), 1).hyperparameters()
    assert hp[hyper.INDEX["decoupled"]] == 1 and hp[hyper.INDEX["weight_decay"]] == 0.5
    theta, m = lion_step([-1.0], [1e-3], [0.0], weight_decay=0.5, lr=1e-3)
    s = {"m": np.zeros(1)}
    ref = N.lion(np.array([-1.0]), np.array([1e-3]), s, 1e-3, 1, 0.9, 0.99, 0.5)
    np.testing.assert_allclose(theta, ref, rtol=1e-7)
    np.testing.assert_allclose(theta, [-1.0 - 1e-3 * 0.5], rtol=1e-7)
    np.testing.assert_allclose(m, s["m"], rtol=1e-6)


# --- global-norm clipping -------------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 10, 1000, 100_000])
@pytest.mark.parametrize("scale", [1e-6, 1e-2, 1.0, 1e3, 1e30])
@pytest.mark.parametrize("max_norm", [1e-3, 1.0, 100.0])
def test_clip_global_norm_matches_numpy(n, scale, max_norm):
    g = (np.random.default_rng(n).standard_normal(n) * scale).astype(np.float32)
    ours = g.copy()
    K.clip_global_norm(ours, np.float32(max_norm))
    norm = np.linalg.norm(g.astype(np.float64))
    if norm <= max_norm:
        np.testing.assert_array_equal(ours, g)
    else:
        np.testing.assert_allclose(ours, N.clip_by_global_norm(g.astype(np.float64), max_norm), rtol=2.5e-7)
        assert np.linalg.norm(ours.astype(np.float64)) == pytest.approx(max_norm, rel=5e-7)


@pytest.mark.parametrize("value", [["adam"], {"adam": 1}, 3, None])
def test_an_optimizer_that_is_not_a_name_is_refused(value):
    with pytest.raises(ConfigError, match="--optimizer must be one of"):
        Recipe(optimizer=value)
