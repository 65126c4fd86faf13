"""The bounds of every option and recipe field, checked the same way wherever a
value comes from (the command line, a Python call, a checkpoint)."""

from __future__ import annotations

import numpy as np

from .errors import ConfigError

F32_MAX = float(np.finfo(np.float32).max)      # 3.4e38
F32_TINY = float(np.finfo(np.float32).tiny)    # 1.2e-38, the smallest normal float32

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
    # a sweep's local worker processes
    "workers": (1, 1024),
    # a path on a test surface (landscape): its points are kept, and printed by --json
    "steps": (1, 20_000),
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
