"""The figures of `rmsprop landscape`: the optimizers' paths over a surface's
contours as a PNG, and growing step by step as a GIF.  matplotlib (the [plot]
extra) is imported only when one is drawn; the GIF's frames are assembled by
Pillow in memory and written atomically, as every output is."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import numpy as np

from .files import atomic_write
from .plots import _pyplot, _save

FRAMES = 60            # frames of a GIF, the last held for HOLD_MS
FRAME_MS, HOLD_MS = 60, 2000
LEVELS = 24


def is_gif(f) -> bool:
    return f.read(6) in (b"GIF87a", b"GIF89a")


def _levels(surface, z: np.ndarray) -> np.ndarray:
    """Contour levels: spaced by equal factors above the minimum for surfaces whose values span decades,
    else by equal steps of the square root (a quadratic's ellipses then come evenly spaced)."""
    lo, hi = surface.min_loss, float(z.max())
    if surface.log_levels:
        return surface.min_loss + np.geomspace(1e-3, hi - lo, LEVELS)
    return lo + (hi - lo) * np.linspace(0.0, 1.0, LEVELS + 1)[1:] ** 2


def _label(r: dict) -> str:
    end = f"diverged at step {r['diverged_at']}" if r["diverged_at"] is not None else f"loss {r['final_loss']:.3g}"
    return f"{r['optimizer']} (lr {r['lr']:g}): {end}"


def _figure(surface, rows: list[dict], grid, steps: int):
    """The contours, the start and the minimum, and one empty line per optimizer (returned) to draw paths in."""
    plt, _, _ = _pyplot()
    xs, ys, z = grid
    width = 8.0
    height = min(max(width * (surface.ylim[1] - surface.ylim[0]) / (surface.xlim[1] - surface.xlim[0]), 4.5), 8.0)
    fig, ax = plt.subplots(figsize=(width, height + 1.2))
    levels = _levels(surface, z)
    ax.contourf(xs, ys, z, levels=levels, cmap="Greys", alpha=0.35, extend="both")
    ax.contour(xs, ys, z, levels=levels, colors="grey", linewidths=0.4, alpha=0.7)
    ax.plot(*surface.start, "o", color="black", markersize=6, label="start", zorder=5)
    ax.plot(*surface.minimum, "*", color="gold", markeredgecolor="black", markersize=14, label="minimum", zorder=5)
    lines = [ax.plot([], [], "-", color=f"C{i % 10}", linewidth=1.6, label=_label(r), zorder=4)[0]
             for i, r in enumerate(rows)]
    heads = [ax.plot([], [], "o", color=f"C{i % 10}", markeredgecolor="black", markersize=5, zorder=6)[0]
             for i in range(len(rows))]
    ax.set_xlim(*surface.xlim)
    ax.set_ylim(*surface.ylim)
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_title(f"{surface.name}: f = {surface.formula}, {steps} steps")
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.legend(loc="lower center", ncol=2, frameon=False, fontsize=8)
    return plt, fig, ax, lines, heads


def plot_paths(surface, rows: list[dict], grid, steps: int, path: Path) -> Path:
    """Every optimizer's whole path (of `steps` updates, or until it diverged) over the surface's contours,
    as a PNG."""
    plt, fig, _, lines, heads = _figure(surface, rows, grid, steps)
    for line, head, r in zip(lines, heads, rows):
        pts = np.asarray(r["path"])
        line.set_data(pts[:, 0], pts[:, 1])
        head.set_data(pts[-1:, 0], pts[-1:, 1])
    return _save(plt, fig, path)


def frame_steps(steps: int) -> list[int]:
    """The step each frame of the GIF shows: FRAMES of them from 0 to steps (fewer for a short path)."""
    return sorted(set(np.linspace(0, steps, min(FRAMES, steps + 1)).round().astype(int).tolist()))


def _palette(Image, n_paths: int):
    """A GIF's 256 colours, the same for every frame: the paths' own colours, the markers', and greys for
    the contours.  An adaptive palette gave the thin paths' colours too few pixels to keep them apart."""
    from matplotlib.colors import to_rgb

    named = [to_rgb(f"C{i % 10}") for i in range(n_paths)] + [to_rgb("gold")]
    colours = [tuple(round(255 * c) for c in rgb) for rgb in named]
    colours += [(g, g, g) for g in np.linspace(0, 255, 256 - len(colours)).round().astype(int).tolist()]
    image = Image.new("P", (1, 1))
    image.putpalette([c for rgb in colours for c in rgb])
    return image


def animate_paths(surface, rows: list[dict], grid, steps: int, path: Path) -> Path:
    """The paths growing from the start, one frame per frame_steps step, as an animated GIF (a path that
    diverged stops where it did)."""
    from PIL import Image

    plt, fig, ax, lines, heads = _figure(surface, rows, grid, steps)
    paths = [np.asarray(r["path"]) for r in rows]
    frames = []
    palette = _palette(Image, len(rows))
    try:
        fig.set_dpi(80)
        for t in frame_steps(steps):
            for line, head, pts in zip(lines, heads, paths):
                line.set_data(pts[:t + 1, 0], pts[:t + 1, 1])
                head.set_data(pts[min(t, len(pts) - 1):t + 1, 0], pts[min(t, len(pts) - 1):t + 1, 1])
            ax.set_title(f"{surface.name}: f = {surface.formula}, step {t} of {steps}")
            fig.canvas.draw()
            rgb = Image.fromarray(np.asarray(fig.canvas.buffer_rgba())[..., :3])
            frames.append(rgb.quantize(palette=palette, dither=Image.Dither.NONE))
    finally:
        plt.close(fig)
    buf = BytesIO()
    durations = [FRAME_MS] * (len(frames) - 1) + [HOLD_MS]
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=durations, loop=0)
    path = Path(path)
    atomic_write(path, buf.getvalue())
    return path
