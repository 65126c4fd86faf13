"""The training recipe, and the one place that owns Numba's jit flags (the bounds of every
option are bounds.py's)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

from . import optim
from .activations import ACTIVATIONS
from .bounds import INTEGERS, _check_hidden, float_problem, integer_problem, option, parse_hidden, shown
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
# Kernels called once per row of a layer's weights or of a batch: inlined where
# they are called (Numba's own inliner), since a call passes every array as a
# struct of seven fields and counts its references, which cost more than a
# short row's arithmetic (the first layer's weight gradient ran 2.6 times
# slower through two such calls per row).
JIT_INLINE = {**JIT, "inline": "always"}
# CUDA kernels: IEEE division and square root (fastmath would make them
# approximate and flush denormals), so that each kernel matches its CPU twin to
# float32 rounding; cache=True keeps the PTX between runs as on the CPU.
CUDA_JIT = {"cache": True, "fastmath": False}
CUDA_DEVICE = {"device": True, "fastmath": False}

EPS_PLACEMENTS = ("inside", "outside")
MNIST_TRAIN_IMAGES = 60_000

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
        spec = optim.spec_of(self.optimizer)
        if spec is None:
            raise ConfigError(f"--optimizer must be one of {', '.join(optim.NAMES)}; got {shown(self.optimizer)}")
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
