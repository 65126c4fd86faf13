"""The training loop, independent of the backend: epochs of chunks of
mini-batches, validation, early stopping, and the position a stopped run
continues from.

Python runs only between chunks of mini-batches (progress, timing, the NaN
check); each chunk is one compiled call into the backend.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import numpy as np

from . import data
from .config import Recipe
from .errors import ConfigError, TrainingDiverged

UPDATES_PER_EPOCH = 40  # progress refreshes per epoch; each costs a return to Python


class Callbacks:
    """Progress hooks; the console implements them, tests and --json use these no-ops."""

    def status(self, message: str) -> None: ...
    def epoch_start(self, epoch: int, epochs: int, n_batches: int, n_samples: int) -> None: ...
    def chunk_end(self, batches_done: int, samples_done: int, loss: float, accuracy: float) -> None: ...
    def epoch_end(self, metrics: dict) -> None: ...


def scores(history: list[dict]) -> dict:
    """What compare and sweep report of a run's epochs: final and best validation accuracy, the
    first epoch at 97% validation accuracy (None: never), and the seconds of training."""
    val = [m["val_accuracy"] for m in history if m["val_accuracy"] is not None]
    return {"final_val_accuracy": val[-1] if val else None, "best_val_accuracy": max(val) if val else None,
            "epochs_to_97": next((m["epoch"] for m in history if (m["val_accuracy"] or 0) >= 0.97), None),
            "seconds": sum(m["seconds"] for m in history)}


def split_validation(X, y, val_split: float):
    """The last val_split of the images are held out, before any shuffling (Keras' validation_split)."""
    n_train = int(math.floor(len(X) * (1.0 - val_split)))
    return X[:n_train], y[:n_train], X[n_train:], y[n_train:]


@dataclass
class Dataset:
    """The images a run trains, validates and tests on, and the checksums of their files."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    checksums: dict

    @classmethod
    def load(cls, recipe: Recipe, data_dir=None, mirrors=None, reporter=None) -> "Dataset":
        images, labels, train_sums = data.load_mnist("train", data_dir, mirrors, reporter, recipe.limit)
        test_images, test_labels, test_sums = data.load_mnist("test", data_dir, mirrors, reporter, recipe.limit)
        X_train, y_train, X_val, y_val = split_validation(images, labels.astype(np.int64), recipe.val_split)
        if len(X_train) == 0:
            raise ConfigError(f"no training images left: --limit {recipe.limit} with --val-split {recipe.val_split}")
        return cls(X_train, y_train, X_val, y_val, test_images, test_labels, {**train_sums, **test_sums})


@dataclass
class Position:
    """Where a run stands: enough to continue it bit for bit.

    rng is the bit generator's state at the start of `epoch`, before that
    epoch's shuffle, so a resumed run draws the same batch order; the partial
    sums let the epoch's metrics cover the batches trained before the stop.
    """

    epoch: int
    rng: dict
    batch: int = 0
    loss_sum: float = 0.0
    correct: int = 0
    seen: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Position":
        return cls(**d)


def fit(recipe: Recipe, backend, n_train: int, X_val, y_val, rng: np.random.Generator,
        callbacks: Callbacks | None = None, history: list | None = None, position: Position | None = None,
        stop=None, after_epoch=None) -> tuple[list[dict], Position, bool]:
    """Train until epoch recipe.epochs is done; returns (history, position, finished).

    stop() is polled after every chunk of batches: when it says so, fit
    returns early (finished False) with the position reached.  after_epoch(
    history, position) runs after every epoch and may end training by
    returning True (early stopping).
    """
    cb = callbacks or Callbacks()
    history = list(history or [])
    pos = position or Position(epoch=len(history) + 1, rng=rng.bit_generator.state)
    rng.bit_generator.state = pos.rng
    n_batches = -(-n_train // recipe.batch_size)
    chunk = max(1, -(-n_batches // UPDATES_PER_EPOCH))
    while pos.epoch <= recipe.epochs:
        epoch_rng = rng.bit_generator.state
        order = rng.permutation(n_train).astype(np.int64)
        cb.epoch_start(pos.epoch, recipe.epochs, n_batches, n_train)
        t0 = time.perf_counter() - pos.seconds
        for first in range(pos.batch, n_batches, chunk):
            count = min(chunk, n_batches - first)
            loss, corr, n, bad = backend.train_chunk(order, first * recipe.batch_size, count)
            if bad >= 0:
                raise TrainingDiverged(pos.epoch, first + bad + 1)
            pos.batch, pos.loss_sum, pos.correct, pos.seen = first + count, pos.loss_sum + loss, pos.correct + corr, pos.seen + n
            cb.chunk_end(pos.batch, pos.seen, pos.loss_sum / pos.seen, pos.correct / pos.seen)
            if stop is not None and pos.batch < n_batches and stop():
                pos.rng, pos.seconds = epoch_rng, time.perf_counter() - t0
                return history, pos, False
        metrics = {"epoch": pos.epoch, "loss": pos.loss_sum / pos.seen, "accuracy": pos.correct / pos.seen,
                   "val_loss": None, "val_accuracy": None}
        if len(X_val):
            vloss, vcorrect, _ = backend.evaluate(X_val, y_val)
            metrics["val_loss"], metrics["val_accuracy"] = vloss / len(X_val), vcorrect / len(X_val)
        metrics["seconds"] = time.perf_counter() - t0
        history.append(metrics)
        pos = Position(epoch=pos.epoch + 1, rng=rng.bit_generator.state)
        cb.epoch_end(metrics)
        if after_epoch is not None and after_epoch(history, pos):
            break
        if stop is not None and pos.epoch <= recipe.epochs and stop():
            return history, pos, False
    return history, pos, True


class EarlyStopping:
    """Stop when validation loss has not improved for `patience` epochs, and
    put back the weights (and optimizer state) of the best epoch.  Both live in
    memory: a resumed run starts counting afresh."""

    def __init__(self, patience: int, backend):
        self.patience, self.backend = patience, backend
        self.best_loss, self.best_epoch, self.best_state, self.wait = math.inf, None, None, 0
        self.stopped = False

    def __call__(self, history: list[dict]) -> bool:
        last = history[-1]
        if last["val_loss"] < self.best_loss:
            self.best_loss, self.best_epoch, self.wait = last["val_loss"], last["epoch"], 0
            self.best_state = (self.backend.params(), self.backend.optimizer_state())
            return False
        self.wait += 1
        self.stopped = self.wait >= self.patience
        return self.stopped

    def restore(self) -> None:
        if self.best_state is not None:
            self.backend.set_state(*self.best_state)
