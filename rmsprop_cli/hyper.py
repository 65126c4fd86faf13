"""The vector of hyperparameters the kernels read, generated from one ordered
list of fields; the kernels index it by the named constants below, so no
position is kept in step by hand.

The host keeps it in float64, for the schedule and the bias corrections,
which are computed once per step in float64 and rounded once.  The per-element
update reads it as float32 (a tuple on the CPU, a device array on CUDA).
Factors such as 1 − ρ are fields of their own, computed here in float64 and
rounded once: float32(1 − float32(ρ)) is 1.3e-5 off for ρ = 0.999, an error of
the same sign in every step.  Nothing here depends on the Recipe class (any
object with the recipe's fields will do) or on the registry (the optimizer's
entry is an argument).
"""

from __future__ import annotations

from .activations import ACTIVATIONS

FIELDS = (
    "kind",              # the optimizer's position in optim.REGISTRY (optim's constants name them)
    "lr", "rho", "one_minus_rho", "eps", "eps_outside", "centered", "momentum", "nesterov",
    "weight_decay", "decoupled", "clip_norm", "clip_value",
    "beta1", "one_minus_beta1", "beta2", "one_minus_beta2",
    "bias1", "bias2",    # the decays whose powers correct m and v (1/(1 − d^t)); 0: no correction
    "schedule", "warmup", "decay_steps", "decay_rate", "total_steps",
    "activation",        # the hidden layers' activation (activations.py)
)
N_HYPER = len(FIELDS)
INDEX = {name: i for i, name in enumerate(FIELDS)}
(KIND, LR, RHO, ONE_MINUS_RHO, EPS, EPS_OUTSIDE, CENTERED, MOMENTUM, NESTEROV, WEIGHT_DECAY, DECOUPLED, CLIP_NORM,
 CLIP_VALUE, BETA1, ONE_MINUS_BETA1, BETA2, ONE_MINUS_BETA2, BIAS1, BIAS2, SCHEDULE, WARMUP, DECAY_STEPS, DECAY_RATE,
 TOTAL_STEPS, ACTIVATION) = (INDEX[name] for name in FIELDS)

# Learning-rate schedules, evaluated at the number of updates already made
# (0 for the first), as Optax and Keras do (kernels/math.py: learning_rate_at).
SCHEDULES = {
    "constant": "η",
    "step": "η·rate^⌊n/decay steps⌋ (Keras ExponentialDecay(staircase=True), optax.exponential_decay)",
    "exponential": "η·rate^(n/decay steps) (Keras ExponentialDecay, optax.exponential_decay)",
    "cosine": "η·(1 + cos(π·n/N))/2 over the N updates after the warm-up (Keras CosineDecay, "
              "optax.warmup_cosine_decay_schedule)",
}
SCHEDULE_KIND = {name: i for i, name in enumerate(SCHEDULES)}
CONSTANT, STEP, EXPONENTIAL, COSINE = (SCHEDULE_KIND[name] for name in SCHEDULES)
DECAYING = ("step", "exponential")  # the schedules that read decay_steps and decay_rate


def vector(recipe, spec, steps_per_epoch: int):
    """The float64 hyperparameters of a recipe whose optimizer's registry entry
    is spec (optim.Spec), in the order of FIELDS (a numpy array)."""
    import numpy as np

    r = recipe

    def given(value, default=0.0):
        return default if value is None else value

    rho, beta1, beta2 = given(r.rho), given(r.beta1), given(r.beta2)
    corrected = spec.bias is not None and (spec.bias_option is None or getattr(r, spec.bias_option))
    bias = tuple(given(getattr(r, name)) for name in spec.bias) if corrected else (0.0, 0.0)
    values = {
        "kind": spec.kind, "lr": r.lr, "rho": rho, "one_minus_rho": 1.0 - rho, "eps": given(r.eps),
        "eps_outside": r.eps_placement == "outside", "centered": r.centered, "momentum": given(r.momentum),
        "nesterov": r.nesterov, "weight_decay": r.weight_decay,
        "decoupled": r.decoupled_decay or spec.decoupled,
        "clip_norm": given(r.clip_norm), "clip_value": given(r.clip_value),
        "beta1": beta1, "one_minus_beta1": 1.0 - beta1, "beta2": beta2, "one_minus_beta2": 1.0 - beta2,
        "bias1": bias[0], "bias2": bias[1],
        "schedule": SCHEDULE_KIND[r.schedule], "warmup": r.warmup_steps,
        "decay_steps": r.decay_steps or steps_per_epoch, "decay_rate": given(r.decay_rate, 1.0),
        "total_steps": r.epochs * steps_per_epoch,
        "activation": ACTIVATIONS[r.activation].kind,
    }
    assert values.keys() == set(FIELDS), "every field of the vector is set, and nothing else"
    return np.array([float(values[name]) for name in FIELDS])
