"""The training recipe, and the one place that owns Numba's jit flags."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

from .errors import ConfigError

# "fast" maths without nnan/ninf: those two would let LLVM delete the NaN and
# Inf checks that stop a diverging run. Kernels never hard-code fastmath.
FASTMATH = frozenset({"nsz", "arcp", "contract", "afn", "reassoc"})
JIT = {"cache": True, "fastmath": set(FASTMATH), "error_model": "numpy", "nogil": True}
# Only the per-batch drivers are parallel (a prange over shards of the batch);
# the kernels they call stay serial, so threads never nest.
JIT_PARALLEL = {**JIT, "parallel": True}

EPS_PLACEMENTS = ("inside", "outside")


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

    def __post_init__(self):
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        self.validate()

    @property
    def sizes(self) -> tuple[int, ...]:
        return (self.n_inputs, *self.hidden, self.n_classes)

    def validate(self) -> None:
        def bad(msg: str):
            raise ConfigError(msg)

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

    def to_dict(self) -> dict:
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Recipe":
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in known}
        if "hidden" in kwargs:
            kwargs["hidden"] = tuple(kwargs["hidden"])
        return cls(**kwargs)

    def describe(self) -> str:
        """A short name for run folders: mlp784-128-64-10-rmsprop-lr0.001-b32."""
        return "mlp" + "-".join(map(str, self.sizes)) + f"-rmsprop-lr{self.lr:g}-b{self.batch_size}"


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
