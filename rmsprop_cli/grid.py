"""A sweep's trials: `--grid NAME=V1,V2,...` parsed by the recipe field's type, the
product of the grids over the seeds, each combination a Recipe that `train` would
accept, and each trial's name in the sweep folder, derived from its recipe.

Pure Python over config.py: no numpy, numba or files.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, fields, replace

from .bounds import FLOATS, INTEGERS, option, parse_hidden, shown
from .config import CHOICES, OPTIMIZER_FIELDS, Recipe, build_recipe
from .errors import ConfigError
from .hyper import DECAYING

# Recipe fields a grid may not sweep: the seeds are --seeds; the MNIST shape is fixed.
NOT_SWEPT = ("seed", "n_inputs", "n_classes")
SWEPT = tuple(f.name for f in fields(Recipe) if f.name not in NOT_SWEPT)
FLAGS = tuple(f.name for f in fields(Recipe) if isinstance(f.default, bool))
MAX_VALUES = 1000      # values in one --grid
MAX_TRIALS = 10_000    # combinations times seeds
TRUE, FALSE = ("true", "yes", "1", "on"), ("false", "no", "0", "off")


def field_name(text: str) -> str:
    """'batch-size', '--batch-size' or 'batch_size' -> 'batch_size'; refused unless a recipe field that can be swept."""
    name = text.strip().lstrip("-").replace("-", "_")
    if name == "seed":
        raise ConfigError("--grid cannot sweep seed: give the seeds with --seeds 0,1,2")
    if name not in SWEPT:
        raise ConfigError(f"--grid {shown(text)}: not an option of rmsprop train that a sweep can vary; "
                          f"choose from {', '.join(option(n)[2:] for n in SWEPT)}")
    return name


def parse_value(name: str, text: str):
    """One grid value, typed as `rmsprop train` types the option (hidden widths are written 128:64)."""
    t = text.strip()
    try:
        if not t.isascii():   # int() and float() would take other scripts' digits
            raise ValueError
        if name == "hidden":
            return ",".join(map(str, parse_hidden(t.replace(":", ",")))) or "none"
        if name in FLAGS:
            if t.lower() in TRUE + FALSE:
                return t.lower() in TRUE
            raise ValueError
        if name in CHOICES:
            return t
        if name in INTEGERS:
            return int(t)
        return float(t)
    except ValueError:
        kind = ("true or false" if name in FLAGS else "a whole number" if name in INTEGERS else "a number")
        raise ConfigError(f"--grid {option(name)[2:]}: {shown(t)} is not {kind}") from None


def parse_grid(items: list[str] | None) -> dict[str, list]:
    """--grid NAME=V1,V2,..., repeated: {field: [values]}, in the order given (the first two are the heatmap's axes)."""
    grid: dict[str, list] = {}
    for item in items or []:
        head, sep, values = item.partition("=")
        if not sep or not values.strip():
            raise ConfigError(f"--grid takes NAME=V1,V2,..., such as --grid lr=1e-3,3e-3; got {shown(item)}")
        name = field_name(head)
        if name in grid:
            raise ConfigError(f"--grid {option(name)[2:]} is given twice; list all its values in one --grid")
        parts = values.split(",")
        if len(parts) > MAX_VALUES:
            raise ConfigError(f"--grid {option(name)[2:]} lists {len(parts)} values; at most {MAX_VALUES} are allowed")
        parsed = list(dict.fromkeys(parse_value(name, p) for p in parts))   # a value given twice is one trial
        grid[name] = parsed
    return grid


def parse_seeds(text: str | list | None) -> list[int]:
    """--seeds 0,1,2 (default: 0)."""
    if text is None:
        return [0]
    import numbers

    parts = text.split(",") if isinstance(text, str) else [text] if isinstance(text, numbers.Integral) else list(text)
    if len(parts) > MAX_VALUES:
        raise ConfigError(f"--seeds lists {len(parts)} seeds; at most {MAX_VALUES} are allowed")
    lo, hi = INTEGERS["seed"]
    seeds = []
    for p in parts:
        try:
            s = int(p) if isinstance(p, numbers.Integral) and not isinstance(p, bool) else int(str(p).strip())
        except ValueError:
            raise ConfigError(f"--seeds takes whole numbers separated by commas, such as 0,1,2; got {shown(p)}") from None
        if not lo <= s <= hi:
            raise ConfigError(f"--seeds: each seed must be from {lo} to {hi}; got {s}")
        seeds.append(s)
    if not seeds:
        raise ConfigError("--seeds lists no seed")
    return list(dict.fromkeys(seeds))


@dataclass(frozen=True)
class Trial:
    """One training run of a sweep.  options: the swept fields' values as the run has them (None where the
    option does not apply to its optimizer or schedule); key: the combination, for grouping over seeds."""

    recipe: Recipe
    options: dict
    name: str

    @property
    def seed(self) -> int:
        return self.recipe.seed

    @property
    def key(self) -> tuple:
        return tuple(self.options.items())


def trial_name(recipe: Recipe) -> str:
    """`<recipe>-seed<seed>-<hash>`: the recipe's short name and a digest of all of it, so that
    a trial of the same command run again finds its own checkpoint, and no other."""
    d = recipe.to_dict()
    for name in FLOATS:   # lr=1 from Python and --lr 1.0 are one trial
        if type(d.get(name)) is int:
            d[name] = float(d[name])
    digest = hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]
    return f"{recipe.describe()}-seed{recipe.seed}-{digest}"


def _applies(name: str, options: dict) -> bool:
    """Whether option `name` applies to the optimizer and schedule these options choose."""
    from .optim import spec_of

    if name in OPTIMIZER_FIELDS and name not in spec_of(options.get("optimizer") or "rmsprop").options:
        return False
    if name in ("decay_steps", "decay_rate") and (options.get("schedule") or "constant") not in DECAYING:
        return False
    return True


def _combination(values: dict) -> str:
    return ", ".join(f"{option(k)[2:]}={v}" for k, v in values.items())


def expand(grid: dict[str, list], fixed: dict, seeds: list[int]) -> list[Trial]:
    """Every combination of the grids' values, over the seeds: one Trial each, in the order of the grids
    (the last varies fastest) with the seeds innermost.

    fixed are the other options (None: not given).  When the optimizer or the schedule is swept, an option
    (given or swept) is left out of the combinations whose optimizer or schedule does not take it, so that
    `--grid optimizer=rmsprop,adam --grid rho=0.5,0.9` is two RMSProp combinations and one Adam; an option
    that applies to none of them is refused, as is a combination that `rmsprop train` would refuse."""
    names = list(grid)
    for name in names:
        if fixed.get(name) is not None and fixed.get(name) is not False:   # 0 is given
            raise ConfigError(f"{option(name)} is both given and swept by --grid; give it one way")
    count = len(seeds)
    for values in grid.values():
        count *= len(values)
    if count > MAX_TRIALS:
        raise ConfigError(f"the grids and seeds make {count} trials; at most {MAX_TRIALS} are allowed in one sweep")
    dependent = "optimizer" in grid or "schedule" in grid
    given = {k: v for k, v in fixed.items() if v is not None and v is not False}
    combos, seen, used = [], set(), set()
    for values in itertools.product(*grid.values()):
        swept = dict(zip(names, values))
        options = {**given, **swept}
        if dependent:
            options = {k: v for k, v in options.items() if _applies(k, options)}
            used.update(options)
            swept = {k: (v if k in options else None) for k, v in swept.items()}
        try:
            recipe = build_recipe(options)
        except ConfigError as e:
            raise ConfigError(f"the combination {_combination(swept)} cannot be trained: {e}" if swept else str(e)) \
                from None
        key = tuple(swept.items())
        if key not in seen:
            seen.add(key)
            combos.append((swept, recipe))
    if dependent:
        unused = [k for k in list(given) + names if k not in used]
        if unused:
            raise ConfigError(f"{option(unused[0])} applies to none of the swept optimizers and schedules")
    trials = []
    for swept, recipe in combos:
        for seed in seeds:
            r = replace(recipe, seed=seed)
            trials.append(Trial(r, swept, trial_name(r)))
    return trials


def train_options(recipe: Recipe) -> dict:
    """The options that make `rmsprop train` (training.run) train exactly this recipe."""
    d = recipe.to_dict()
    d["hidden"] = ",".join(map(str, recipe.hidden)) or "none"
    return d
