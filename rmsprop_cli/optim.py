"""The optimizer registry: each optimizer once, as data.

An entry says which state buffers the optimizer keeps (so a checkpoint saves
exactly those and a resumed run restores them), its default hyperparameters,
which options apply to it (any other is refused, naming the optimizers it
applies to) and where its formula comes from.  Its per-element update is one
scalar function of the same name in kernels/math.py, compiled for the CPU and
for CUDA.  The CLI's choices and help are read from here.

Pure Python: nothing here imports numba or the recipe, so config.py and the
kernels can all read it.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import hyper

# Options every optimizer takes: the learning rate and its schedule, gradient
# clipping and weight decay (added to the gradient, or decoupled).
COMMON = ("lr", "schedule", "warmup_steps", "decay_steps", "decay_rate", "clip_norm", "clip_value", "weight_decay",
          "decoupled_decay")

# What each optimizer-specific option does, for --help; "applies to" is added from the registry.
HELP = {
    "rho": "Decay ρ of the squared-gradient average v.",
    "eps": "ε, which keeps the division finite.",
    "eps_placement": "inside: θ -= η·g/√(v+ε) (Keras, Optax); outside: θ -= η·g/(√v+ε) (PyTorch).",
    "centered": "Divide by √(v − m² + ε), m the running mean gradient.",
    "momentum": "μ: b ← μ·b + η·g/denominator, θ ← θ − b.",
    "nesterov": "Nesterov's form of the momentum: θ ← θ − (η·g/denominator + μ·b).",
    "initial_accumulator": "Starting value of v.",
    "bias_correction": "Divide v by (1 − ρ^t) (Optax).",
    "beta1": "Decay β₁ of the mean gradient m (Adam); Lion's interpolation of m and g.",
    "beta2": "Decay β₂ of the squared gradient v (Adam); of the mean gradient m (Lion).",
}


@dataclass(frozen=True)
class Spec:
    """One optimizer.  buffers: (name, option) pairs, the buffer kept always
    (option None) or when that option is set; v is a squared-gradient average
    or sum, m a mean gradient, b a momentum buffer.  options: the recipe
    fields that apply.  defaults: the values of those options when not given.
    bias: the recipe fields whose decays bias-correct m and v, always or when
    the option bias_option is set.  decoupled: weight decay is always
    decoupled (Lion)."""

    name: str
    summary: str
    formula: str
    buffers: tuple[tuple[str, str | None], ...]
    options: tuple[str, ...]
    defaults: dict
    source: str
    bias: tuple[str, str] | None = None
    bias_option: str | None = None
    decoupled: bool = False

    @property
    def kind(self) -> int:
        return NAMES.index(self.name)


REGISTRY = (
    Spec("rmsprop", "RMSProp (Hinton 2012), with every option Keras, PyTorch and Optax give it",
         "v ← ρv + (1−ρ)g²;  θ ← θ − η·g/√(v + ε)",
         (("v", None), ("m", "centered"), ("b", "momentum")),
         COMMON + ("rho", "eps", "eps_placement", "centered", "momentum", "nesterov", "initial_accumulator",
                   "bias_correction"),
         {"lr": 0.001, "rho": 0.9, "eps": 1e-7, "eps_placement": "inside", "momentum": 0.0,
          "initial_accumulator": 0.0},
         "keras.optimizers.RMSprop; torch.optim.RMSprop; optax.rmsprop",
         bias=("rho", "rho"), bias_option="bias_correction"),
    Spec("sgd", "plain stochastic gradient descent", "θ ← θ − η·g",
         (("b", "momentum"),), COMMON + ("momentum", "nesterov"), {"lr": 0.01, "momentum": 0.0},
         "keras.optimizers.SGD"),
    Spec("momentum", "SGD with momentum (0.9 unless --momentum says otherwise)", "b ← μb + η·g;  θ ← θ − b",
         (("b", None),), COMMON + ("momentum", "nesterov"), {"lr": 0.01, "momentum": 0.9},
         "keras.optimizers.SGD(momentum=0.9)"),
    Spec("adagrad", "Adagrad (Duchi et al. 2011): steps shrink with the sum of all squared gradients",
         "v ← v + g²;  θ ← θ − η·g/√(v + ε)",
         (("v", None), ("b", "momentum")), COMMON + ("eps", "eps_placement", "initial_accumulator", "momentum",
                                                    "nesterov"),
         {"lr": 0.001, "eps": 1e-7, "eps_placement": "inside", "initial_accumulator": 0.1, "momentum": 0.0},
         "keras.optimizers.Adagrad"),
    Spec("adam", "Adam (Kingma and Ba 2015): momentum and RMSProp, bias-corrected",
         "m ← β₁m + (1−β₁)g;  v ← β₂v + (1−β₂)g²;  θ ← θ − η·m̂/(√v̂ + ε)",
         (("v", None), ("m", None)), COMMON + ("eps", "beta1", "beta2"),
         {"lr": 0.001, "eps": 1e-7, "beta1": 0.9, "beta2": 0.999},
         "keras.optimizers.Adam; with --weight-decay --decoupled-decay, AdamW", bias=("beta1", "beta2")),
    Spec("lion", "Lion (Chen et al. 2023): the sign of an interpolated momentum; weight decay always decoupled",
         "u = sign(β₁m + (1−β₁)g);  m ← β₂m + (1−β₂)g;  θ ← θ − η·(u + λθ)",
         (("m", None),), tuple(o for o in COMMON if o != "decoupled_decay") + ("beta1", "beta2"),
         {"lr": 1e-4, "beta1": 0.9, "beta2": 0.99},
         "optax.lion", decoupled=True),
)
NAMES = tuple(spec.name for spec in REGISTRY)
OPTIMIZERS = {spec.name: spec for spec in REGISTRY}
RMSPROP, SGD, MOMENTUM_SGD, ADAGRAD, ADAM, LION = (OPTIMIZERS[n].kind for n in NAMES)
# Every optimizer-specific option, in the order of --help.
SPECIFIC = tuple(dict.fromkeys(o for spec in REGISTRY for o in spec.options if o not in COMMON))
DEFAULT_LR = {spec.name: spec.defaults["lr"] for spec in REGISTRY}


def spec_of(name) -> Spec | None:
    """The registry entry named `name`, or None for any other value (also one that is not a string:
    a recipe may come from a file or a Python call)."""
    return OPTIMIZERS.get(name) if isinstance(name, str) else None


def applies_to(option: str) -> tuple[str, ...]:
    return tuple(spec.name for spec in REGISTRY if option in spec.options)


def help_for(option: str) -> str:
    """--help of an optimizer option: what it does, which optimizers take it, and its defaults."""
    names = applies_to(option)
    defaults = [f"{spec.name} {spec.defaults[option]:g}" if isinstance(spec.defaults[option], float)
                else f"{spec.name} {spec.defaults[option]}"
                for spec in REGISTRY if spec.name in names and option in spec.defaults]
    text = f"{HELP[option]} For: {', '.join(names)}."
    if defaults:
        text += " \\[default: " + ", ".join(defaults) + "]."
    return text


def optimizer_help() -> str:
    return "; ".join(f"{spec.name}: {spec.summary}" for spec in REGISTRY) + " \\[default: rmsprop]."


def buffers(recipe) -> tuple[str, ...]:
    """The state buffers this recipe's optimizer keeps, in the order v, m, b."""
    spec = OPTIMIZERS[recipe.optimizer]
    return tuple(name for name, option in spec.buffers if option is None or getattr(recipe, option))


@dataclass(frozen=True)
class Optimizer:
    """A recipe's optimizer for a run of steps_per_epoch batches an epoch: its
    state and the hyperparameter vector the kernels read (hyper.py)."""

    recipe: object
    steps_per_epoch: int

    @property
    def spec(self) -> Spec:
        return OPTIMIZERS[self.recipe.optimizer]

    @property
    def state_names(self) -> tuple[str, ...]:
        return buffers(self.recipe)

    def init(self, n_params: int) -> dict:
        import numpy as np

        first_v = self.recipe.initial_accumulator or 0.0
        return {name: np.full(n_params, first_v if name == "v" else 0.0, dtype=np.float32)
                for name in self.state_names}

    def hyperparameters(self):
        """hyper.vector: the float64 numpy array the kernels read."""
        return hyper.vector(self.recipe, self.spec, self.steps_per_epoch)

    def is_plain_rmsprop(self) -> bool:
        """Whether a zero gradient leaves the weights as they are and only decays v
        (plain RMSProp): the CPU loops then skip the weights of blank inputs."""
        r = self.recipe
        return self.spec.kind == RMSPROP and not r.centered and not r.momentum and r.weight_decay == 0
