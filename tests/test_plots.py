"""PNG figures of training curves (rmsprop_cli.plots); matplotlib is optional."""

import math
import random
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from rmsprop_cli.errors import ConfigError, OutputError


def naive_history(n_epochs, seed, with_val=True):
    """Loss falling and accuracy rising, with a little noise, one dict per epoch."""
    rnd = random.Random(seed)
    history = []
    for e in range(1, n_epochs + 1):
        loss = 2.3 * math.exp(-0.5 * e) + 0.05 * rnd.random()
        acc = min(1.0, 1 - 0.9 * math.exp(-0.6 * e) - 0.01 * rnd.random())
        history.append({"epoch": e, "loss": loss, "accuracy": acc,
                        "val_loss": loss * 1.1 if with_val else None,
                        "val_accuracy": acc * 0.98 if with_val else None,
                        "seconds": 1.0 + rnd.random()})
    return history


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# matplotlib's default cycle: C0 (training / first optimizer), C1, C2.
TAB = {"C0": (0x1F, 0x77, 0xB4), "C1": (0xFF, 0x7F, 0x0E), "C2": (0x2C, 0xA0, 0x2C)}


def load_png(path):
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    img = np.asarray(Image.open(path).convert("RGB"))
    h, w, _ = img.shape
    assert 300 <= w <= 3000 and 200 <= h <= 3000, (w, h)
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 3
    assert img.std() > 10
    return img


def pixels_of(img, colour, tol=12):
    return int((np.abs(img.astype(int) - colour).max(axis=2) <= tol).sum())


@pytest.fixture
def plots():
    pytest.importorskip("matplotlib")
    from rmsprop_cli import plots
    return plots


def test_plot_history_writes_a_png_with_both_curves(plots, tmp_path):
    out = plots.plot_history(naive_history(8, 0), tmp_path / "h.png", "RMSProp, lr 0.001")
    assert out == tmp_path / "h.png"
    img = load_png(out)
    assert pixels_of(img, TAB["C0"]) > 100 and pixels_of(img, TAB["C1"]) > 100


def test_plot_history_without_validation_omits_its_lines(plots, tmp_path):
    img = load_png(plots.plot_history(naive_history(5, 1, with_val=False), tmp_path / "h.png", "no val"))
    assert pixels_of(img, TAB["C0"]) > 100
    assert pixels_of(img, TAB["C1"]) < 10


def test_plot_history_one_epoch(plots, tmp_path):
    load_png(plots.plot_history(naive_history(1, 2), tmp_path / "one.png", "one epoch"))


def test_plot_comparison_one_colour_per_optimizer(plots, tmp_path):
    runs = {"rmsprop": naive_history(6, 0), "sgd": naive_history(6, 1), "adam": naive_history(6, 2, with_val=False)}
    img = load_png(plots.plot_comparison(runs, tmp_path / "c.png", "optimizers"))
    for colour in TAB.values():
        assert pixels_of(img, colour) > 100


def test_plot_comparison_without_any_validation(plots, tmp_path):
    runs = {"a": naive_history(4, 0, with_val=False), "b": naive_history(4, 1, with_val=False)}
    load_png(plots.plot_comparison(runs, tmp_path / "c.png", "no val"))


def test_plot_comparison_wide_loss_range(plots, tmp_path):
    fast = naive_history(30, 0)
    for m in fast:
        m["loss"] = m["val_loss"] = 2.3 * 10 ** (-m["epoch"] / 5)   # six decades: log scale
    load_png(plots.plot_comparison({"fast": fast, "slow": naive_history(30, 1)}, tmp_path / "c.png", "log"))


def test_written_atomically_and_overwrites(plots, tmp_path):
    dest = tmp_path / "out" / "h.png"
    plots.plot_history(naive_history(3, 0), dest, "first")
    first = dest.read_bytes()
    plots.plot_history(naive_history(9, 3), dest, "second")
    assert dest.read_bytes() != first
    assert sorted(p.name for p in dest.parent.iterdir()) == ["h.png"]


def test_unwritable_destination_is_an_output_error(plots, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(OutputError):
        plots.plot_history(naive_history(3, 0), blocker / "h.png", "x")
    with pytest.raises(OutputError):
        plots.plot_comparison({"a": naive_history(3, 0)}, blocker / "c.png", "x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_empty_history_is_a_config_error(plots, tmp_path):
    with pytest.raises(ConfigError):
        plots.plot_history([], tmp_path / "h.png", "x")
    with pytest.raises(ConfigError):
        plots.plot_comparison({}, tmp_path / "c.png", "x")
    assert not any(tmp_path.iterdir())


def test_missing_matplotlib_is_a_config_error(monkeypatch, tmp_path):
    from rmsprop_cli import plots
    for name in ("matplotlib", "matplotlib.pyplot"):
        monkeypatch.setitem(sys.modules, name, None)
    for call in (lambda: plots.plot_history(naive_history(2, 0), tmp_path / "h.png", "x"),
                 lambda: plots.plot_comparison({"a": naive_history(2, 0)}, tmp_path / "c.png", "x")):
        with pytest.raises(ConfigError, match="pip install") as info:
            call()
        assert info.value.exit_code == 2 and "\n" not in str(info.value)
    assert not any(tmp_path.iterdir())


def test_importing_plots_does_not_import_matplotlib():
    code = "import sys, rmsprop_cli.plots; assert 'matplotlib' not in sys.modules, 'matplotlib imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
