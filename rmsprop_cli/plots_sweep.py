"""A sweep's figure: the heatmap of mean validation accuracy over the first two swept
options, each cell annotated with mean ± spread; with one swept option, a line
with a band.  The cells are computed by `cells` (plain data, which the tests
check) and drawn by `draw`; matplotlib is imported only to draw."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

LOG_RATIO = 10   # an axis of positive numbers spanning this factor or more is drawn on a log scale
MAX_VALUES = 60  # values on an axis that a figure can show legibly (and draw in bounded time)
MAX_LABELLED = 400   # cells annotated with mean ± spread; more would overlap


def _metric(table) -> tuple[str, str]:
    """The score the figure shows: validation accuracy, or test accuracy when no run held out a validation set."""
    if any(r["final_val_accuracy"] is not None for r in table):
        return "final_val_accuracy", "validation accuracy"
    return "test_accuracy", "test accuracy"


def _values(table, name: str) -> list:
    """An axis' values in the grid's order, then None (the option did not apply) if any trial lacks it."""
    values = list(table.grid[name])
    if any(r["options"].get(name) is None for r in table):
        values.append(None)
    return [v for v in values if any(r["options"].get(name) == v for r in table)]


def _scale(values: list) -> str:
    """log for positive numbers spanning LOG_RATIO (learning rates); log1m for decays in [0, 1) whose
    1 − value spans it (ρ 0.5, 0.9, 0.99: memories of 2, 10 and 100 steps); else linear, or categories."""
    numbers = [v for v in values if v is not None]
    if numbers and all(type(v) in (int, float) for v in numbers) and len(numbers) == len(values):
        if min(numbers) > 0 and max(numbers) / min(numbers) >= LOG_RATIO:
            return "log"
        if 0 <= min(numbers) and max(numbers) < 1 and (1 - min(numbers)) / (1 - max(numbers)) >= LOG_RATIO:
            return "log1m"
        return "linear"
    return "category"


def _positions(values: list, scale: str) -> list[float]:
    if scale == "log":
        return [math.log10(v) for v in values]
    if scale == "log1m":   # −log10(1 − v): increasing with v, one unit per factor of 10 in 1 − v
        return [-math.log10(1 - v) for v in values]
    if scale == "linear":
        return [float(v) for v in values]
    return [float(i) for i in range(len(values))]


def _edges(centres: list[float]) -> list[float]:
    """Cell edges halfway between neighbours (in the axis' scale), the ends as far out as the next gap."""
    if len(centres) == 1:
        return [centres[0] - 0.5, centres[0] + 0.5]
    mids = [(a + b) / 2 for a, b in zip(centres, centres[1:])]
    return [centres[0] - (mids[0] - centres[0]), *mids, centres[-1] + (centres[-1] - mids[-1])]


def cells(table) -> dict:
    """What the figure draws: per axis its option, values, scale, positions and edges; the mean and spread
    (sample standard deviation) of the score over each cell's finished trials, its seeds and the values of
    any other swept option, and how many trials each holds; None where none finished."""
    names = list(table.grid)[:2]
    if not names:
        raise ValueError("a sweep figure needs a swept option")
    metric, label = _metric(table)
    axes = []
    for name in names:
        values = _values(table, name)
        scale = _scale(values)
        centres = _positions(values, scale)
        axes.append({"option": name, "values": values, "scale": scale, "positions": centres,
                     "edges": _edges(centres)})
    shape = [len(a["values"]) for a in reversed(axes)]   # rows: the second option; columns: the first

    def cell(*index):
        chosen = {a["option"]: a["values"][i] for a, i in zip(axes, index)}
        done = [r for r in table if r["status"] == "finished" and all(r["options"].get(k) == v
                                                                      for k, v in chosen.items())]
        scores = [r[metric] for r in done if r[metric] is not None]
        mean = statistics.fmean(scores) if scores else None
        spread = statistics.stdev(scores) if len(scores) > 1 else None
        return mean, spread, len(scores), len(done)

    if len(axes) == 1:
        got = [cell(i) for i in range(shape[0])]
    else:
        got = [[cell(i, j) for i in range(shape[1])] for j in range(shape[0])]
    pick = (lambda k: [g[k] for g in got]) if len(axes) == 1 else (lambda k: [[g[k] for g in row] for row in got])
    others = list(table.grid)[2:]
    return {"axes": axes, "metric": metric, "label": label, "mean": pick(0), "spread": pick(1), "count": pick(2),
            "finished": pick(3), "pooled_over": others}


def _scale_note(axis: dict) -> str:
    return {"log": " (log scale)", "log1m": f" (log scale of 1 − {axis['option']})"}.get(axis["scale"], "")


def _tick(v) -> str:
    return "n/a" if v is None else f"{v:g}" if type(v) in (int, float) else str(v)


def _annotation(mean, spread, finished: int = 0) -> str:
    if mean is None:
        return "no validation\nset" if finished else "—"
    return f"{100 * mean:.2f}%" + (f"\n± {100 * spread:.2f}" if spread is not None else "")


def draw(table, title: str | None = None):
    """The matplotlib Figure of `cells(table)`, and those cells."""
    from .plots import _pyplot

    from .errors import ConfigError

    c = cells(table)
    sizes = [len(a["values"]) for a in c["axes"]]
    if max(sizes) > MAX_VALUES:
        raise ConfigError(f"no figure: {max(sizes)} values of one option are more than a figure shows legibly "
                          f"({MAX_VALUES}); the results are in sweep.csv and sweep.json")
    plt, _, PercentFormatter = _pyplot()
    x = c["axes"][0]
    pooled = f"; pooled over {', '.join(c['pooled_over'])}" if c["pooled_over"] else ""
    seeds = len(table.seeds)
    epochs = {r["recipe"]["epochs"] for r in table}
    after = f" after {epochs.pop()} epochs" if len(epochs) == 1 else ""
    heading = title or (f"Mean final {c['label']}{after} over {seeds} seed{'s' * (seeds > 1)}{pooled} "
                        "(± sample standard deviation)")
    if len(c["axes"]) == 1:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        pts = [(p, m, s or 0.0) for p, m, s in zip(x["positions"], c["mean"], c["spread"]) if m is not None]
        if pts:
            p, m, s = zip(*pts)
            ax.fill_between(p, [a - b for a, b in zip(m, s)], [a + b for a, b in zip(m, s)], alpha=0.25,
                            color="C0", label="± spread over seeds")
            ax.plot(p, m, marker="o", color="C0", label=f"mean {c['label']}")
            for pi, mi, si in pts:
                ax.annotate(_annotation(mi, si if si else None).replace("\n", " "), (pi, mi),
                            textcoords="offset points", xytext=(0, 8), ha="center", fontsize=8)
        ax.yaxis.set_major_formatter(PercentFormatter(xmax=1))
        ax.set_ylabel(c["label"])
        if pts:
            ax.legend(loc="lower right")
        ax.grid(True, alpha=0.3)
    else:
        y = c["axes"][1]
        import numpy as np

        fig, ax = plt.subplots(figsize=(max(6.0, 2.2 + 1.2 * len(x["values"])), max(3.5, 1.4 + 0.8 * len(y["values"]))))
        grid = np.array([[math.nan if m is None else m for m in row] for row in c["mean"]])
        mesh = ax.pcolormesh(x["edges"], y["edges"], np.ma.masked_invalid(grid), cmap="viridis", shading="flat")
        finite = grid[np.isfinite(grid)]
        middle = (finite.min() + finite.max()) / 2 if finite.size else 0.0
        for j, yp in enumerate(y["positions"]):
            for i, xp in enumerate(x["positions"]):
                m, s = c["mean"][j][i], c["spread"][j][i]
                if sizes[0] * sizes[1] <= MAX_LABELLED:
                    ax.text(xp, yp, _annotation(m, s, c["finished"][j][i]), ha="center", va="center", fontsize=8,
                            color="black" if m is not None and m > middle else "white" if m is not None else "grey")
        bar = fig.colorbar(mesh, ax=ax, format=PercentFormatter(xmax=1))
        bar.set_label(f"mean {c['label']}")
        ax.set_yticks(y["positions"], [_tick(v) for v in y["values"]])
        ax.set_ylabel(y["option"] + _scale_note(y))
        ax.set_facecolor("#dddddd")   # a cell with no finished trial
    ax.set_xticks(x["positions"], [_tick(v) for v in x["values"]])
    ax.set_xlabel(x["option"] + _scale_note(x))
    ax.set_title(heading, fontsize=10)
    fig.tight_layout()
    return fig, c


def plot_sweep(table, path: Path) -> Path:
    """The figure as a PNG at `path`, replacing only a PNG."""
    from . import files
    from .plots import _pyplot, _save, is_png

    plt = _pyplot()[0]
    path = files.through_links(Path(path))
    files.check_replaceable(path, "a PNG image", is_png)
    fig, _ = draw(table)
    return _save(plt, fig, path)
