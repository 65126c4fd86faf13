"""`rmsprop landscape`: each optimizer's path over a test surface (surfaces.py),
made by the same compiled update that trains the networks (kernels/surfaces.py),
with a table of where each one got to and a figure of the paths."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import optim
from .bounds import check_option, option
from .config import OPTIMIZER_FIELDS, Recipe
from .errors import ConfigError
from .hyper import DECAYING
from .surfaces import NAMES as SURFACES_NAMES
from .surfaces import SURFACES, TOLERANCE

GRID = 300   # points a side of the contour plot's grid
DECAYS = 10  # the step and exponential schedules decay this many times over a path unless --decay-steps says
# The options that may be given for all the optimizers at once: the learning rate is per optimizer (lrs).
OPTIONS = tuple(name for name in OPTIMIZER_FIELDS if name != "lr")


def recipes(surface, names, steps: int, lrs: dict, options: dict) -> dict[str, Recipe]:
    """Each optimizer's recipe: its learning rate (lrs, else the surface's default) and each given option that
    applies to it.  An option that applies to none of them is refused, as train refuses it."""
    if not names:
        raise ConfigError("--optimizers lists no optimizer")
    unknown = [n for n in list(names) + list(lrs) if optim.spec_of(n) is None]
    if unknown:
        raise ConfigError(f"unknown optimizer {unknown[0]!r}: choose from {', '.join(optim.NAMES)}")
    if len(set(names)) < len(names):
        raise ConfigError(f"--optimizers names an optimizer twice: {','.join(names)}")
    strays = [n for n in lrs if n not in names]
    if strays:
        raise ConfigError(f"--lr {strays[0]}=... names an optimizer that --optimizers {','.join(names)} leaves out; "
                          f"add it there or drop the --lr")
    given = {k: v for k, v in options.items() if v is not None and v is not False}
    check_option("warmup_steps", given.get("warmup_steps"))
    for name in given:
        if name not in OPTIONS:
            raise ConfigError(f"{option(name)} is not an option of rmsprop landscape")
        if not any(name in optim.OPTIMIZERS[n].options for n in names):
            raise ConfigError(f"{option(name)} applies to {', '.join(optim.applies_to(name))}, and none of "
                              f"--optimizers {','.join(names)} takes it")
    if given.get("warmup_steps", 0) > steps:
        raise ConfigError(f"--warmup-steps {given['warmup_steps']} is longer than the path (--steps {steps}), so "
                          "the learning rate would never reach --lr")
    if given.get("schedule") in DECAYING and "decay_steps" not in given:
        given["decay_steps"] = max(1, steps // DECAYS)
    out = {}
    for n in names:
        spec = optim.OPTIMIZERS[n]
        # A recipe of one epoch of `steps` batches of one image: its bounds and the rules between its options
        # are train's, and its run is exactly the path's length (for the cosine schedule and the warm-up).
        out[n] = Recipe(epochs=1, batch_size=1, limit=steps, val_split=0.0, optimizer=n,
                        lr=lrs.get(n, surface.lrs[n]), **{k: v for k, v in given.items() if k in spec.options})
    return out


def path(surface, recipe: Recipe, steps: int) -> tuple[np.ndarray, np.ndarray, int | None]:
    """The optimizer's path from the surface's start: (points, their values, the step at which it diverged or
    None).  Points and values stop before the first point that is not finite (or beyond 1e30)."""
    from .kernels.surfaces import descend

    opt = optim.Optimizer(recipe, steps)   # an "epoch" is the whole path: the default decay steps
    state = opt.init(2)
    v, m, b = (state.get(name, np.zeros(2, np.float32)) for name in ("v", "m", "b"))
    theta = np.array(surface.start, np.float32)
    points, losses = np.empty((steps + 1, 2), np.float32), np.empty(steps + 1)
    n = descend(surface.kind, theta, v, m, b, opt.hyperparameters(), points, losses)
    if abs(losses[n]) < 1e30:
        return points[:n + 1], losses[:n + 1], None
    return points[:n], losses[:n], n


def row(surface, name: str, recipe: Recipe, points, losses, diverged) -> dict:
    within = losses - surface.min_loss <= TOLERANCE
    reached = np.nonzero(within)[0]
    outside = np.nonzero(~within)[0]
    stays = None if diverged is not None or not within[-1] else int(outside[-1]) + 1 if outside.size else 0
    end = points[-1].astype(float)
    return {"optimizer": name, "lr": recipe.lr,
            "final_point": [float(end[0]), float(end[1])], "final_loss": float(losses[-1]),
            "distance": float(np.hypot(*(end - np.array(surface.minimum)))),
            "steps_to_tolerance": int(reached[0]) if reached.size else None, "stays_within_from": stays,
            "diverged_at": diverged,
            "path": points.astype(float).tolist()}


def contour_grid(surface) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from .kernels.surfaces import grid

    xs, ys = np.linspace(*surface.xlim, GRID), np.linspace(*surface.ylim, GRID)
    z = np.empty((GRID, GRID))
    grid(surface.kind, xs, ys, z)
    return xs, ys, z


def outputs(output: Path | None, surface, animate: bool) -> tuple[Path, Path | None]:
    """Where the PNG (and with animate the GIF beside it, of the same stem) go: a new
    runs/<time>-landscape-<surface>/ folder unless output names a .png file or a folder."""
    from .experiments import figure_path
    from .files import check_replaceable, through_links
    from .outputs import new_folder
    from .plots_landscape import is_gif

    name = f"{surface.name}.png"
    png = figure_path(output, name) if output is not None else new_folder(f"landscape-{surface.name}") / name
    gif = through_links(png.with_suffix(".gif")) if animate else None
    if gif is not None:
        check_replaceable(gif, "a GIF image", is_gif)
    return png, gif


def landscape(surface: str = "ravine", optimizers=None, *, steps: int | None = None, lrs: dict | None = None,
              options: dict | None = None, output: Path | None = None, animate: bool = False,
              figure: bool = True) -> dict:
    """Everything `rmsprop landscape` does: every optimizer's path over the surface, the table's rows (with the
    paths) and the figure (and the GIF), which needs matplotlib; without it the rows still come back, with a
    figure_note.  figure=False draws nothing."""
    if not isinstance(surface, str) or surface not in SURFACES:
        raise ConfigError(f"--surface must be one of {', '.join(SURFACES_NAMES)}; got {surface!r}")
    s = SURFACES[surface]
    steps = s.steps if steps is None else steps
    check_option("steps", steps)
    if optimizers is None:
        optimizers = optim.NAMES
    elif isinstance(optimizers, str):
        optimizers = [n.strip() for n in optimizers.split(",") if n.strip()]
    for what, value in (("lrs", lrs), ("options", options)):
        if value is not None and not isinstance(value, dict):
            raise ConfigError(f"{what} is a dict of name: value, not {type(value).__name__}")
    names = list(optimizers)
    rates = {k: v for k, v in (lrs or {}).items() if v is not None}
    chosen = recipes(s, names, steps, rates, dict(options or {}))
    note = None
    if figure:
        from .plots import _pyplot

        try:
            _pyplot()
        except ConfigError as e:   # matplotlib is an optional extra: the table still stands
            figure, note = False, str(e)
    png, gif = outputs(output, s, animate) if figure else (None, None)
    rows = [row(s, name, recipe, *path(s, recipe, steps)) for name, recipe in chosen.items()]
    result = {"surface": s.name, "formula": s.formula, "start": list(s.start), "minimum": list(s.minimum),
              "min_loss": s.min_loss, "tolerance": TOLERANCE, "steps": steps, "optimizers": rows,
              "figure": None, "animation": None}
    if note:
        result["figure_note"] = note
    if figure:
        from . import plots_landscape

        grid = contour_grid(s)
        result["figure"] = str(plots_landscape.plot_paths(s, rows, grid, steps, png))
        if gif is not None:
            result["animation"] = str(plots_landscape.animate_paths(s, rows, grid, steps, gif))
    return result
