"""The training loop, independent of the backend, and the run it belongs to.

Python runs only between chunks of mini-batches (progress, timing, the NaN
check); each chunk is one compiled call into the backend.
"""

from __future__ import annotations

import math
import time
from datetime import datetime
from pathlib import Path

import numpy as np

from . import checkpoint, data, model
from .backends import check_device, make_backend
from .config import Recipe
from .errors import ConfigError, TrainingDiverged
from .optim import RMSProp

UPDATES_PER_EPOCH = 40  # progress refreshes per epoch; each costs a return to Python


class Callbacks:
    """Progress hooks; the console implements them, tests and --json use these no-ops."""

    def status(self, message: str) -> None: ...
    def epoch_start(self, epoch: int, epochs: int, n_batches: int, n_samples: int) -> None: ...
    def chunk_end(self, batches_done: int, samples_done: int, loss: float, accuracy: float) -> None: ...
    def epoch_end(self, metrics: dict) -> None: ...


def split_validation(X, y, val_split: float):
    """The last val_split of the images are held out, before any shuffling (Keras' validation_split)."""
    n_train = int(math.floor(len(X) * (1.0 - val_split)))
    return X[:n_train], y[:n_train], X[n_train:], y[n_train:]


def fit(recipe: Recipe, backend, n_train: int, X_val, y_val, rng: np.random.Generator,
        callbacks: Callbacks | None = None, history: list | None = None) -> list[dict]:
    """Train for recipe.epochs epochs; returns the per-epoch metrics."""
    cb = callbacks or Callbacks()
    history = list(history or [])
    n_batches = -(-n_train // recipe.batch_size)
    chunk = max(1, -(-n_batches // UPDATES_PER_EPOCH))
    for epoch in range(len(history) + 1, recipe.epochs + 1):
        order = rng.permutation(n_train).astype(np.int64)
        cb.epoch_start(epoch, recipe.epochs, n_batches, n_train)
        t0 = time.perf_counter()
        loss_sum, correct, seen = 0.0, 0, 0
        for first in range(0, n_batches, chunk):
            count = min(chunk, n_batches - first)
            loss, corr, n, bad = backend.train_chunk(order, first * recipe.batch_size, count)
            if bad >= 0:
                raise TrainingDiverged(epoch, first + bad + 1)
            loss_sum, correct, seen = loss_sum + loss, correct + corr, seen + n
            cb.chunk_end(first + count, seen, loss_sum / seen, correct / seen)
        metrics = {"epoch": epoch, "loss": loss_sum / seen, "accuracy": correct / seen,
                   "val_loss": None, "val_accuracy": None}
        if len(X_val):
            vloss, vcorrect, _ = backend.evaluate(X_val, y_val)
            metrics["val_loss"], metrics["val_accuracy"] = vloss / len(X_val), vcorrect / len(X_val)
        metrics["seconds"] = time.perf_counter() - t0
        history.append(metrics)
        cb.epoch_end(metrics)
    return history


def default_output(recipe: Recipe, root: Path = Path("runs")) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return root / f"{stamp}-{recipe.describe()}" / "model.safetensors"


def resolve_output(output: Path | None, recipe: Recipe) -> Path:
    """--output may name the checkpoint file or a folder to put model.safetensors in."""
    if output is None:
        return default_output(recipe)
    output = Path(output)
    if output.suffix != ".safetensors":
        return output / "model.safetensors"
    return output


def run(recipe: Recipe, *, device: str = "cpu", data_dir=None, mirrors=None, output: Path | None = None,
        reporter=None, callbacks: Callbacks | None = None) -> dict:
    """Everything `rmsprop train` does: data, model, fit, test, checkpoint."""
    cb = callbacks or Callbacks()
    check_device(device)
    path = resolve_output(output, recipe)
    checkpoint.check_writable(path)

    images, labels, train_sums = data.load_mnist("train", data_dir, mirrors, reporter, recipe.limit)
    test_images, test_labels, test_sums = data.load_mnist("test", data_dir, mirrors, reporter, recipe.limit)
    X_train, y_train, X_val, y_val = split_validation(images, labels.astype(np.int64), recipe.val_split)
    if len(X_train) == 0:
        raise ConfigError(f"no training images left: --limit {recipe.limit} with --val-split {recipe.val_split}")

    rng = np.random.default_rng(recipe.seed)
    theta = model.glorot_init(recipe.sizes, rng)
    optimizer = RMSProp.from_recipe(recipe)
    backend = make_backend(device, recipe.sizes, recipe.batch_size, optimizer, theta,
                           optimizer.init(theta.size), X_train, y_train)
    cb.status("Compiling kernels (the first run only; later runs load them from the cache)")
    backend.warm_up()   # so that compiling is not counted in the first epoch's time
    history = fit(recipe, backend, len(X_train), X_val, y_val, rng, cb)

    test_loss, test_correct, _ = backend.evaluate(test_images, test_labels)
    result = {
        "test_accuracy": test_correct / len(test_images),
        "test_loss": test_loss / len(test_images),
        "checkpoint": str(path),
        "device": backend.name,
        "epochs": history,
    }
    info = {"dataset": {**train_sums, **test_sums}, "device": backend.name,
            "steps": len(history) * -(-len(X_train) // recipe.batch_size),
            "test_accuracy": result["test_accuracy"], "test_loss": result["test_loss"],
            "optimizer": "rmsprop"}
    checkpoint.save(path, checkpoint.Checkpoint(recipe, backend.params(), backend.optimizer_state(), history, info))
    return result


def evaluate(path: Path, *, device: str = "cpu", data_dir=None, mirrors=None, limit: int | None = None,
             reporter=None) -> dict:
    """Everything `rmsprop evaluate` does: checkpoint, test set, metrics."""
    check_device(device)
    ckpt = checkpoint.load(path)
    images, labels, _ = data.load_mnist("test", data_dir, mirrors, reporter, limit)
    optimizer = RMSProp.from_recipe(ckpt.recipe)
    opt_state = ckpt.opt_state if "v" in ckpt.opt_state else optimizer.init(ckpt.theta.size)
    backend = make_backend(device, ckpt.recipe.sizes, ckpt.recipe.batch_size, optimizer, ckpt.theta, opt_state)
    loss, correct, confusion = backend.evaluate(images, labels)
    per_class = [float(confusion[c, c] / row) if (row := confusion[c].sum()) else None
                 for c in range(confusion.shape[0])]
    return {
        "test_accuracy": correct / len(images),
        "test_loss": loss / len(images),
        "per_class_accuracy": per_class,
        "confusion_matrix": confusion.tolist(),
    }
