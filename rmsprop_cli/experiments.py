"""Experiments across runs: `rmsprop compare` (one network, several optimizers) and `rmsprop plot`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import checkpoint, files, model
from .backends import make_backend, resolve_device
from .config import build_recipe
from .errors import ConfigError, OutputError, path_errors
from .optim import Optimizer
from .outputs import default_output
from .fitting import Callbacks, Dataset, fit, scores


def compare(options: dict, names: list[str], lrs: dict[str, float], *, device: str = "cpu", data_dir=None,
            mirrors=None, output: Path | None = None, reporter=None, callbacks_for=None) -> dict:
    """Everything `rmsprop compare` does: the same network, from the same initial
    weights and through the same batch order, trained by each optimizer; a table
    of results and a figure of their curves."""
    from .optim import NAMES

    device, _ = resolve_device(device)
    unknown = [n for n in list(names) + list(lrs) if n not in NAMES]
    if unknown:
        raise ConfigError(f"unknown optimizer {unknown[0]!r}: choose from {', '.join(NAMES)}")
    if not names:
        raise ConfigError("--optimizers lists no optimizer")
    # Each optimizer with its own defaults (optim.py), its learning rate among them unless --lr gives one.
    recipes = {n: build_recipe({**options, "optimizer": n, "lr": lrs.get(n)}) for n in names}
    first = recipes[names[0]]
    figure = figure_path(output, "compare.png") if output is not None else default_output(first).with_name("compare.png")
    files.check_writable(figure, 2**20)

    d = Dataset.load(first, data_dir, mirrors, reporter)
    X_train, y_train, X_val, y_val, test_images, test_labels = (
        d.X_train, d.y_train, d.X_val, d.y_val, d.test_images, d.test_labels)
    n_batches = -(-len(X_train) // first.batch_size)

    rows, runs = [], {}
    for name, recipe in recipes.items():
        cb = callbacks_for(name, recipe) if callbacks_for else Callbacks()
        rng = np.random.default_rng(recipe.seed)   # the same weights and batch order for every optimizer
        theta = model.glorot_init(recipe.sizes, rng)
        optimizer = Optimizer(recipe, n_batches)
        backend = make_backend(device, recipe.sizes, recipe.batch_size, optimizer, theta,
                               optimizer.init(theta.size), X_train, y_train)
        backend.warm_up()
        history, _, _ = fit(recipe, backend, len(X_train), X_val, y_val, rng, cb)
        test_loss, test_correct, _ = backend.evaluate(test_images, test_labels)
        s = scores(history)
        rows.append({
            "optimizer": name, "lr": recipe.lr,
            "final_val_accuracy": s["final_val_accuracy"], "best_val_accuracy": s["best_val_accuracy"],
            "test_accuracy": test_correct / len(test_images), "test_loss": test_loss / len(test_images),
            "epochs_to_97": s["epochs_to_97"], "seconds": s["seconds"], "epochs": history})
        runs[f"{name} (lr {recipe.lr:g})"] = history

    from .plots import plot_comparison

    result = {"optimizers": rows, "figure": None}
    try:
        plot_comparison(runs, figure, f"{'-'.join(map(str, first.sizes))} on MNIST, batch {first.batch_size}, "
                                      f"same initial weights and batch order")
        result["figure"] = str(figure)
    except ConfigError as e:   # matplotlib is an optional extra: the table still stands
        result["figure_note"] = str(e)
    except OutputError as e:
        result["figure_note"] = str(e)
    return result


def figure_path(output: Path, name: str) -> Path:
    """Where --output puts a figure: a .png file, or `name` inside a folder; refused
    when that would replace anything but a PNG (a checkpoint, a user's other file).
    A name with another suffix (.safetensors, .jpg, .csv) is refused rather than
    taken for a folder to make."""
    output = Path(output)
    with path_errors(OutputError, output, "write", files.WRITE_HINT):
        is_folder = output.is_dir()
    if is_folder:
        output = output / name
    elif output.suffix.lower() != ".png" and output.suffix:
        raise ConfigError(f"--output {output}: a figure is a .png file (or a folder to put {name} in)")
    elif output.suffix.lower() != ".png":
        output = output / name
    from .plots import is_png

    output = files.through_links(output)   # a link the user made keeps pointing at the figure
    files.check_replaceable(output, "a PNG image", is_png)
    return output


def plot(path: Path, output: Path | None = None) -> Path:
    """Everything `rmsprop plot` does: a checkpoint's training curves as a PNG,
    `<stem>.curves.png` beside the checkpoint unless output says otherwise."""
    from .plots import plot_history

    ckpt = checkpoint.load(path)
    path = Path(path)
    out = figure_path(output if output is not None else path.parent, f"{path.stem}.curves.png")
    r = ckpt.recipe
    return plot_history(ckpt.history, out, f"{'-'.join(map(str, r.sizes))}, {r.optimizer} lr {r.lr:g}, "
                                           f"batch {r.batch_size}")
