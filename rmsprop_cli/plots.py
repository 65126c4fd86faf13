"""PNG figures of training curves. matplotlib is optional and imported only when
a figure is drawn, so importing this module never needs it."""

from __future__ import annotations

import math
from io import BytesIO
from pathlib import Path

from .errors import ConfigError
from .files import atomic_write

LOG_DECADES = 1.5   # loss panels of plot_comparison go log scale past this range


def is_png(f) -> bool:
    return f.read(8) == b"\x89PNG\r\n\x1a\n"


def _pyplot():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator, PercentFormatter
    except ImportError:
        raise ConfigError("plotting needs matplotlib, which is not installed: "
                          "pip install 'rmsprop-cli[plot]' (or pip install matplotlib)") from None
    return plt, MaxNLocator, PercentFormatter


def _series(history: list[dict], key: str) -> tuple[list[int], list[float]] | None:
    """Epochs and values of one metric (None becomes NaN, a gap); None if never recorded."""
    values = [m.get(key) for m in history]
    if all(v is None for v in values):
        return None
    return [m["epoch"] for m in history], [math.nan if v is None else float(v) for v in values]


def _check(history: list[dict], what: str) -> None:
    if not history:
        raise ConfigError(f"nothing to plot: {what} has no epochs")


def _style(ax, ylabel: str, percent: bool, MaxNLocator, PercentFormatter) -> None:
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if percent:
        ax.yaxis.set_major_formatter(PercentFormatter(xmax=1))
    ax.grid(True, alpha=0.3)


def _save(plt, fig, path: Path) -> Path:
    buf = BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    finally:
        plt.close(fig)
    path = Path(path)
    atomic_write(path, buf.getvalue())
    return path


def plot_history(history: list[dict], path: Path, title: str) -> Path:
    """One run: loss (left) and accuracy (right) per epoch, training and validation."""
    _check(history, "the history")
    plt, MaxNLocator, PercentFormatter = _pyplot()
    marker = "o" if len(history) <= 30 else None
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, label in ((ax_loss, "loss", "loss"), (ax_acc, "accuracy", "accuracy")):
        for prefix, name, colour in (("", "training", "C0"), ("val_", "validation", "C1")):
            s = _series(history, prefix + key)
            if s is not None:
                ax.plot(*s, color=colour, marker=marker, markersize=3, label=name)
        _style(ax, label, key == "accuracy", MaxNLocator, PercentFormatter)
        ax.set_title(label.capitalize())
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    return _save(plt, fig, path)


def plot_comparison(runs: dict[str, list[dict]], path: Path, title: str) -> Path:
    """Several optimizers (name -> history) on a 2x2 grid, one colour per optimizer."""
    if not runs:
        raise ConfigError("nothing to plot: no runs to compare")
    for name, history in runs.items():
        _check(history, f"the run {name!r}")
    plt, MaxNLocator, PercentFormatter = _pyplot()
    marker = "o" if max(len(h) for h in runs.values()) <= 30 else None
    fig, axes = plt.subplots(2, 2, figsize=(10, 7.5), sharex=True, sharey="row")
    panels = (("loss", "Training loss"), ("val_loss", "Validation loss"),
              ("accuracy", "Training accuracy"), ("val_accuracy", "Validation accuracy"))
    losses = []
    for ax, (key, panel_title) in zip(axes.flat, panels):
        drawn = False
        for i, (name, history) in enumerate(runs.items()):
            s = _series(history, key)
            if s is not None:
                ax.plot(*s, color=f"C{i % 10}", marker=marker, markersize=3, label=name)
                drawn = True
                if "loss" in key:
                    losses += [v for v in s[1] if math.isfinite(v) and v > 0]
        if not drawn:
            ax.text(0.5, 0.5, "no validation set", transform=ax.transAxes, ha="center", va="center", color="grey")
        _style(ax, "accuracy" if "accuracy" in key else "loss", "accuracy" in key, MaxNLocator, PercentFormatter)
        ax.set_title(panel_title)
        ax.tick_params(labelbottom=True, labelleft=True)
    if losses and max(losses) / min(losses) > 10 ** LOG_DECADES:
        axes[0, 0].set_yscale("log")   # the row shares its y axis
        axes[0, 0].set_ylabel("loss (log scale)")
        axes[0, 1].set_ylabel("loss (log scale)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.035, 1, 1))
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 5), frameon=False)
    return _save(plt, fig, path)
