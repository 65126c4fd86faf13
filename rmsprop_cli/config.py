"""The training recipe, and the one place that owns Numba's jit flags."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

import numpy as np

from . import optim
from .activations import ACTIVATIONS
from .errors import ConfigError
from .hyper import DECAYING, SCHEDULES

# "fast" maths without nnan/ninf: those two would let LLVM delete the NaN and
# Inf checks that stop a diverging run (which also must not be np.isfinite:
# see kernels.cpu.finite).  Without arcp too: it lets LLVM replace a division
# by a multiplication with the reciprocal wherever it likes, and it did so
# differently in kernels compiled fresh than in the same kernels loaded from
# Numba's cache, so a run that compiled its kernels and a run resumed from its
# checkpoint disagreed in the last bit for any batch size that is not a power
# of two (tests/test_reproducible.py).  Kernels never hard-code fastmath.
FASTMATH = frozenset({"nsz", "contract", "afn", "reassoc"})
JIT = {"cache": True, "fastmath": set(FASTMATH), "error_model": "numpy", "nogil": True}
# Only the drivers that split one kernel's work across threads are parallel
# (a prange over shards: evaluate, and the *_threads drivers of a training
# step); the kernels they call stay serial, so threads never nest.
JIT_PARALLEL = {**JIT, "parallel": True}
# CUDA kernels: IEEE division and square root (fastmath would make them
# approximate and flush denormals), so that each kernel matches its CPU twin to
# float32 rounding; cache=True keeps the PTX between runs as on the CPU.
CUDA_JIT = {"cache": True, "fastmath": False}
CUDA_DEVICE = {"device": True, "fastmath": False}

EPS_PLACEMENTS = ("inside", "outside")
F32_MAX = float(np.finfo(np.float32).max)      # 3.4e38
F32_TINY = float(np.finfo(np.float32).tiny)    # 1.2e-38, the smallest normal float32
MNIST_TRAIN_IMAGES = 60_000

# The bounds of every whole-number option and recipe field, in one table.
# Counts stop at 2**31 - 1 so that the products the kernels form from two of
# them (a run's steps, epochs x batches; a layer's weights, width x width) stay
# exact in int64, and a step number stays exact in the float64 vector of
# hyperparameters the kernels read.  The seed only seeds numpy's generator.
INT_MAX = 2**31 - 1
INTEGERS: dict[str, tuple[int, int]] = {
    "epochs": (1, INT_MAX), "batch_size": (1, INT_MAX), "seed": (0, 2**63 - 1), "limit": (1, INT_MAX),
    "hidden": (1, INT_MAX), "warmup_steps": (0, INT_MAX), "decay_steps": (1, INT_MAX),
    "n_inputs": (1, INT_MAX), "n_classes": (1, INT_MAX),
    # options that are not part of the recipe
    "checkpoint_every": (1, INT_MAX), "early_stopping": (1, INT_MAX),
}
MAX_HIDDEN_LAYERS = 100

# Every real-valued option, by what the kernels do with it in float32.  A value
# that float32 rounds to 0, to 1 or to infinity, or to a denormal (which the
# kernels flush or compute slowly), is not the value asked for: refuse it.
POSITIVE = "a positive number that float32 can hold (1.2e-38 to 3.4e38)"
NONNEGATIVE = "0 or a positive number that float32 can hold (1.2e-38 to 3.4e38)"
FRACTION = "in [0, 1) and below 1 in float32 (0, or 1.2e-38 to 0.99999994)"
RATE = "in (0, 1] and not 0 in float32 (1.2e-38 to 1)"
SPLIT = "in [0, 1)"
FLOATS: dict[str, str] = {
    "lr": POSITIVE, "eps": POSITIVE, "rho": FRACTION, "momentum": FRACTION, "beta1": FRACTION, "beta2": FRACTION,
    "weight_decay": NONNEGATIVE, "initial_accumulator": NONNEGATIVE, "clip_norm": POSITIVE,
    "clip_value": POSITIVE, "decay_rate": RATE, "val_split": SPLIT,
}


def option(name: str) -> str:
    return "--" + name.replace("_", "-")


def shown(value) -> str:
    """A value for a message, cut short if it is long (a number of 400 digits, a long string)."""
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 40 else f"{text[:24]}... ({len(text)} characters)"


def integer_problem(name: str, value) -> str | None:
    """Why `value` is not a valid whole number for option `name` (INTEGERS), or None."""
    lo, hi = INTEGERS[name]
    if type(value) is not int or not lo <= value <= hi:
        return f"must be a whole number from {lo} to {hi}; got {shown(value)}"
    return None


def float_problem(name: str, value) -> str | None:
    """Why `value` is not valid for option `name` in the float32 arithmetic of the kernels (FLOATS), or None."""
    kind = FLOATS[name]
    if type(value) not in (int, float):
        return f"must be a number; got {shown(value)}"
    try:
        x = float(value)
    except OverflowError:  # an int beyond float64
        return f"must be {kind}; got {shown(value)}"
    if kind == SPLIT:
        return None if 0 <= x < 1 else f"must be {kind}; got {shown(value)}"
    if not (abs(x) <= F32_MAX):  # also NaN; np.float32 of a larger number would warn and give inf
        return f"must be {kind}; got {shown(value)}"
    f = np.float32(x)
    ok = {POSITIVE: x > 0 and f >= F32_TINY,
          NONNEGATIVE: x == 0 or (x > 0 and f >= F32_TINY),
          FRACTION: x == 0 or (0 < x < 1 and F32_TINY <= f < 1),
          RATE: 0 < x <= 1 and f >= F32_TINY}[kind]
    return None if ok else f"must be {kind}; got {value}"


def check_option(name: str, value) -> None:
    """Raise ConfigError unless `value` (None: not given) is within the bounds of option `name`."""
    if value is None:
        return
    problem = integer_problem(name, value) if name in INTEGERS else float_problem(name, value)
    if problem:
        raise ConfigError(f"{option(name)} {problem}")


def parse_hidden(text: str) -> tuple[int, ...]:
    """'128,64' -> (128, 64); '' or 'none' -> no hidden layer."""
    text = text.strip()
    if text.lower() in ("", "none"):
        return ()
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ConfigError(
            f"--hidden must be comma-separated layer widths such as 128,64; got {text[:100]!r}"
        ) from None
    _check_hidden(sizes)
    return sizes


def _check_hidden(sizes) -> None:
    lo, hi = INTEGERS["hidden"]
    if len(sizes) > MAX_HIDDEN_LAYERS:
        raise ConfigError(f"--hidden gives {len(sizes)} layers; at most {MAX_HIDDEN_LAYERS} are allowed")
    for s in sizes:
        if type(s) is not int or not lo <= s <= hi:
            raise ConfigError(f"--hidden layer widths must be whole numbers from {lo} to {hi}; got {shown(s)}")


CHOICES = {"eps_placement": EPS_PLACEMENTS, "optimizer": optim.NAMES, "schedule": tuple(SCHEDULES),
           "activation": tuple(ACTIVATIONS)}
# The options that apply to some optimizers only (optim.py); when not given they are None (False for a
# flag), and a new recipe fills in its optimizer's defaults.
OPTIMIZER_FIELDS = optim.COMMON + optim.SPECIFIC


@dataclass(frozen=True)
class Recipe:
    """Everything that determines a run; stored in every checkpoint."""

    epochs: int = 10
    batch_size: int = 32
    lr: float | None = None
    rho: float | None = None
    eps: float | None = None
    eps_placement: str | None = None
    hidden: tuple[int, ...] = (128, 64)
    activation: str = "relu"
    val_split: float = 0.2
    seed: int = 0
    limit: int | None = None
    n_inputs: int = 784
    n_classes: int = 10
    # The optimizer and its options (optim.py); None: the optimizer's default, or not its option.
    optimizer: str = "rmsprop"
    centered: bool = False
    momentum: float | None = None
    nesterov: bool = False
    weight_decay: float = 0.0
    decoupled_decay: bool = False
    initial_accumulator: float | None = None
    bias_correction: bool = False
    clip_norm: float | None = None
    clip_value: float | None = None
    schedule: str = "constant"
    warmup_steps: int = 0
    decay_steps: int | None = None
    decay_rate: float | None = None
    beta1: float | None = None
    beta2: float | None = None

    def __post_init__(self):
        if isinstance(self.hidden, (list, tuple)):
            object.__setattr__(self, "hidden", tuple(self.hidden))
        self._fill_defaults()
        self.validate()

    def _fill_defaults(self) -> None:
        """Refuse an option that does not apply to the optimizer (it would be
        silently ignored), and fill in the optimizer's defaults for the others."""
        if self.optimizer not in optim.OPTIMIZERS:
            raise ConfigError(f"--optimizer must be one of {', '.join(optim.NAMES)}; got {shown(self.optimizer)}")
        spec = optim.OPTIMIZERS[self.optimizer]
        for name in OPTIMIZER_FIELDS:
            value = getattr(self, name)
            if name not in spec.options:
                if value is not None and value is not False:
                    raise ConfigError(f"{option(name)} does not apply to --optimizer {self.optimizer}; it applies "
                                      f"to {', '.join(optim.applies_to(name))}")
            elif value is None and name in spec.defaults:
                object.__setattr__(self, name, spec.defaults[name])
        decaying = self.schedule in DECAYING
        for name in ("decay_steps", "decay_rate"):
            if getattr(self, name) is not None and not decaying and self.schedule in SCHEDULES:
                raise ConfigError(f"{option(name)} does not apply to --schedule {self.schedule}; it applies to "
                                  f"the {' and '.join(DECAYING)} schedules")
        if decaying and self.decay_rate is None:
            object.__setattr__(self, "decay_rate", 0.5)

    @property
    def sizes(self) -> tuple[int, ...]:
        return (self.n_inputs, *self.hidden, self.n_classes)

    @property
    def n_train(self) -> int:
        """Training images of an MNIST run: the first --limit of the 60,000, less the validation split."""
        n = MNIST_TRAIN_IMAGES if self.limit is None else min(self.limit, MNIST_TRAIN_IMAGES)
        return int(math.floor(n * (1.0 - self.val_split)))

    @property
    def steps_per_epoch(self) -> int:
        return -(-self.n_train // self.batch_size)

    def validate(self) -> None:
        """Every field against its bounds (INTEGERS, FLOATS), then the fields against each other."""
        def bad(msg: str):
            raise ConfigError(msg)

        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "hidden":
                if type(value) is not tuple:
                    bad(f"--hidden must be a list of layer widths; got {shown(value)}")
                _check_hidden(value)
            elif f.name in CHOICES:
                if not (value is None and f.default is None) and value not in CHOICES[f.name]:
                    bad(f"{option(f.name)} must be one of {', '.join(CHOICES[f.name])}; got {shown(value)}")
            elif isinstance(f.default, bool):
                if type(value) is not bool:
                    bad(f"{option(f.name)} is a flag, true or false; got {shown(value)}")
            elif not (f.default is None and value is None):
                problem = integer_problem(f.name, value) if f.name in INTEGERS else float_problem(f.name, value)
                if problem:
                    bad(f"{option(f.name)} {problem}")

        if self.nesterov and not self.momentum:
            bad("--nesterov needs --momentum above 0")
        if self.decoupled_decay and not self.weight_decay:
            bad("--decoupled-decay needs --weight-decay above 0")
        if self.centered and self.bias_correction:
            # v/(1-rho^t) - (m/(1-rho^t))^2 is exactly 0 at the first step and float32 rounding noise the size
            # of eps in practice: the first update would be lr*g/sqrt(eps) or garbage (Optax gives NaN).
            bad("--centered with --bias-correction is refused: at the first step the bias-corrected variance "
                "is exactly 0, so the first update would be lr·g/√ε, thousands of times lr; use one of them")
        n = MNIST_TRAIN_IMAGES if self.limit is None else min(self.limit, MNIST_TRAIN_IMAGES)
        if self.n_train == 0:
            bad(f"no training images left: --limit {self.limit} with --val-split {self.val_split}"
                if self.limit is not None else f"no training images left: --val-split {self.val_split} of {n}")
        if self.val_split > 0 and self.n_train == n:
            bad(f"--val-split {self.val_split} of {n} images leaves none for validation; "
                f"use 0 for no validation set, or at least {1 / n:.2g}")
        total = self.epochs * self.steps_per_epoch
        if self.warmup_steps > total:
            bad(f"--warmup-steps {self.warmup_steps} is longer than the whole run ({total} steps: {self.epochs} "
                f"epochs of {self.steps_per_epoch} batches), so the learning rate would never reach --lr")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Recipe":
        if not isinstance(d, dict):
            raise ConfigError(f"a recipe is a JSON object, not {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in known}
        if "hidden" in kwargs:
            kwargs["hidden"] = tuple(kwargs["hidden"])
        return cls(**kwargs)

    def describe(self) -> str:
        """A short name for run folders: mlp784-128-64-10-rmsprop-lr0.001-b32.  Repeated widths are
        written once with a count (784-128x3-10), and a network whose name would still be long (a
        folder name may hold 255 bytes) by its number of hidden layers (784-100layers-10)."""
        groups = []
        for width in self.hidden:
            if groups and groups[-1][0] == width:
                groups[-1][1] += 1
            else:
                groups.append([width, 1])
        hidden = [f"{w}x{n}" if n > 1 else str(w) for w, n in groups]
        if len("-".join(hidden)) > 80:
            hidden = [f"{len(self.hidden)}layers"]
        sizes = "-".join([str(self.n_inputs), *hidden, str(self.n_classes)])
        return f"mlp{sizes}-{self.optimizer}-lr{self.lr:g}-b{self.batch_size}"


def build_recipe(options: dict, resumed: Recipe | None = None) -> Recipe:
    """The recipe from the options a user gave (None: not given).

    A new run fills the rest with the defaults.  A resumed run keeps its
    checkpoint's recipe: only --epochs may change (it counts all epochs of the
    run); any other option that differs is an error, since continuing with a
    different recipe would not be the same run.
    """
    given = {k: v for k, v in options.items() if v is not None}
    if "hidden" in given:
        given["hidden"] = parse_hidden(given["hidden"])
    if resumed is None:
        return Recipe(**given)
    for name, value in given.items():
        if name != "epochs" and getattr(resumed, name) != value:
            if getattr(resumed, name) is None:
                replace(resumed, **{name: value})   # an option the run's optimizer does not take: says so
            raise ConfigError(
                f"--{name.replace('_', '-')} {value} differs from the checkpoint's ({getattr(resumed, name)}): "
                "a resumed run keeps its recipe; start a new run to change it")
    return replace(resumed, epochs=given.get("epochs", resumed.epochs))
