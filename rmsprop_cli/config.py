"""The training recipe, and the one place that owns Numba's jit flags."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

import numpy as np

from .errors import ConfigError

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
F32_MAX = float(np.finfo(np.float32).max)


def parse_hidden(text: str) -> tuple[int, ...]:
    """'128,64' -> (128, 64); '' or 'none' -> no hidden layer."""
    text = text.strip()
    if text.lower() in ("", "none"):
        return ()
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ConfigError(
            f"--hidden must be comma-separated layer widths such as 128,64; got {text!r}"
        ) from None
    if any(s < 1 for s in sizes):
        raise ConfigError(f"--hidden layer widths must be at least 1; got {text!r}")
    return sizes


@dataclass(frozen=True)
class Recipe:
    """Everything that determines a run; stored in every checkpoint."""

    epochs: int = 10
    batch_size: int = 32
    lr: float = 0.001
    rho: float = 0.9
    eps: float = 1e-7
    eps_placement: str = "inside"
    hidden: tuple[int, ...] = (128, 64)
    val_split: float = 0.2
    seed: int = 0
    limit: int | None = None
    n_inputs: int = 784
    n_classes: int = 10
    # The optimizer and RMSProp's options (see optim.py); the defaults are plain RMSProp.
    optimizer: str = "rmsprop"
    centered: bool = False
    momentum: float = 0.0
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
    decay_rate: float = 0.5
    beta1: float = 0.9
    beta2: float = 0.999

    def __post_init__(self):
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        self.validate()

    @property
    def sizes(self) -> tuple[int, ...]:
        return (self.n_inputs, *self.hidden, self.n_classes)

    def validate(self) -> None:
        def bad(msg: str):
            raise ConfigError(msg)

        for name in ("epochs", "batch_size", "seed", "warmup_steps", "n_inputs", "n_classes"):
            if type(getattr(self, name)) is not int:
                bad(f"--{name.replace('_', '-')} must be a whole number; got {getattr(self, name)!r}")
        for name in ("lr", "rho", "eps", "val_split", "momentum", "weight_decay", "decay_rate", "beta1", "beta2"):
            if type(getattr(self, name)) not in (int, float):
                bad(f"--{name.replace('_', '-')} must be a number; got {getattr(self, name)!r}")
        if self.seed < 0:
            bad(f"--seed must be 0 or more; got {self.seed}")
        # The kernels compute in float32: a value that rounds to 0, 1 or infinity there is not the one asked for.
        if not (0 < self.lr <= F32_MAX and np.float32(self.lr) > 0):
            bad(f"--lr must be a positive number that float32 can hold (1e-38 to 3e38); got {self.lr}")
        if not (0 < self.eps <= F32_MAX and np.float32(self.eps) > 0):
            bad(f"--eps must be a positive number that float32 can hold (1e-38 to 3e38); got {self.eps}")
        if not (np.float32(self.rho) < 1):
            bad(f"--rho must be in [0, 1) and below 1 in float32 (at most 0.99999994); got {self.rho}")
        if self.limit is not None and type(self.limit) is int and self.limit >= 1 and 0 <= self.val_split < 1 \
                and math.floor(self.limit * (1.0 - self.val_split)) == 0:
            bad(f"no training images left: --limit {self.limit} with --val-split {self.val_split}")

        if not (self.lr > 0 and math.isfinite(self.lr)):
            bad(f"--lr must be a positive number; got {self.lr}")
        if not (0 <= self.rho < 1):
            bad(f"--rho must be in [0, 1); got {self.rho}")
        if not (self.eps > 0 and math.isfinite(self.eps)):
            bad(f"--eps must be a positive number; got {self.eps}")
        if self.eps_placement not in EPS_PLACEMENTS:
            bad(f"--eps-placement must be 'inside' or 'outside'; got {self.eps_placement!r}")
        if self.batch_size < 1:
            bad(f"--batch-size must be at least 1; got {self.batch_size}")
        if self.epochs < 1:
            bad(f"--epochs must be at least 1; got {self.epochs}")
        if not (0 <= self.val_split < 1):
            bad(f"--val-split must be in [0, 1); got {self.val_split}")
        if self.limit is not None and self.limit < 1:
            bad(f"--limit must be at least 1; got {self.limit}")
        if any(h < 1 for h in self.hidden):
            bad(f"--hidden layer widths must be at least 1; got {self.hidden}")
        from .optim import OPTIMIZERS, SCHEDULES

        if self.optimizer not in OPTIMIZERS:
            bad(f"--optimizer must be one of {', '.join(OPTIMIZERS)}; got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            bad(f"--schedule must be one of {', '.join(SCHEDULES)}; got {self.schedule!r}")
        if not (0 <= self.momentum < 1):
            bad(f"--momentum must be in [0, 1); got {self.momentum}")
        if self.nesterov and self.momentum == 0 and self.optimizer != "momentum":
            bad("--nesterov needs --momentum above 0")
        if not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)):
            bad(f"--weight-decay must be 0 or more; got {self.weight_decay}")
        if self.initial_accumulator is not None and not (self.initial_accumulator >= 0):
            bad(f"--initial-accumulator must be 0 or more; got {self.initial_accumulator}")
        for name in ("clip_norm", "clip_value"):
            value = getattr(self, name)
            if value is not None and not (value > 0 and math.isfinite(value)):
                bad(f"--{name.replace('_', '-')} must be a positive number; got {value}")
        if self.warmup_steps < 0:
            bad(f"--warmup-steps must be 0 or more; got {self.warmup_steps}")
        if self.decay_steps is not None and self.decay_steps < 1:
            bad(f"--decay-steps must be at least 1; got {self.decay_steps}")
        if not (0 < self.decay_rate <= 1):
            bad(f"--decay-rate must be in (0, 1]; got {self.decay_rate}")
        for name in ("beta1", "beta2"):
            if not (0 <= getattr(self, name) < 1):
                bad(f"--{name} must be in [0, 1); got {getattr(self, name)}")

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
        """A short name for run folders: mlp784-128-64-10-rmsprop-lr0.001-b32."""
        return "mlp" + "-".join(map(str, self.sizes)) + f"-{self.optimizer}-lr{self.lr:g}-b{self.batch_size}"


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
            raise ConfigError(
                f"--{name.replace('_', '-')} {value} differs from the checkpoint's ({getattr(resumed, name)}): "
                "a resumed run keeps its recipe; start a new run to change it")
    return replace(resumed, epochs=given.get("epochs", resumed.epochs))
