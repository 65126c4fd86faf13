"""Using a trained model: `rmsprop evaluate` on the test set, `rmsprop predict` on a user's images."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import checkpoint, data, paths
from .backends import make_backend, resolve_device
from .errors import CheckpointError
from .optim import Optimizer

CHECKPOINT_HINT = "; pass the model.safetensors file that train wrote"


def _checkpoint_file(path: Path) -> Path:
    """Refuse a checkpoint path that is not a regular file, by its type, before anything opens it
    (a FIFO would block the open for ever)."""
    return paths.regular_file(path, "checkpoint", CheckpointError, CHECKPOINT_HINT)


def _inference_backend(ckpt, device: str):
    """A backend holding a checkpoint's weights, for evaluation and prediction only."""
    optimizer = Optimizer(ckpt.recipe, 1)
    return make_backend(device, ckpt.recipe.sizes, ckpt.recipe.batch_size, optimizer, ckpt.theta,
                        optimizer.init(ckpt.theta.size))


def evaluate(path: Path, *, device: str = "cpu", data_dir=None, mirrors=None, limit: int | None = None,
             reporter=None) -> dict:
    """Everything `rmsprop evaluate` does: checkpoint, test set, metrics."""
    device, _ = resolve_device(device)
    ckpt = checkpoint.load(_checkpoint_file(path))
    images, labels, _ = data.load_mnist("test", data_dir, mirrors, reporter, limit)
    backend = _inference_backend(ckpt, device)
    loss, correct, confusion = backend.evaluate(images, labels)
    per_class = [float(confusion[c, c] / row) if (row := confusion[c].sum()) else None
                 for c in range(confusion.shape[0])]
    return {
        "test_accuracy": correct / len(images),
        "test_loss": loss / len(images),
        "per_class_accuracy": per_class,
        "confusion_matrix": confusion.tolist(),
        "device": backend.name,
    }


def predict(path: Path, images: list, *, indices: list[int] | None = None, device: str = "cpu") -> list[dict]:
    """Everything `rmsprop predict` does: each image file (or IDX file, at the
    given indices) made MNIST-like and classified, most likely digits first."""
    from .images import load_inputs

    device, _ = resolve_device(device)
    path = _checkpoint_file(path)  # cheap, before the images are read; loaded after them
    named = load_inputs(images, indices)
    ckpt = checkpoint.load(path)
    backend = _inference_backend(ckpt, device)
    probs = backend.predict_proba(np.stack([pixels for _, pixels in named]))
    results = []
    for (name, _), p in zip(named, probs):
        ranked = np.argsort(-p, kind="stable")
        results.append({"image": name, "digit": int(ranked[0]),
                        "top3": [{"digit": int(d), "probability": float(p[d])} for d in ranked[:3]],
                        "probabilities": [float(x) for x in p]})
    return results
