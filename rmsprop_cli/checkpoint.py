"""Checkpoints: safetensors files (tensors, never pickle) with JSON metadata.

Tensors: each layer's `dense_{l}.weight` (n_in, n_out) and `dense_{l}.bias`,
and the optimizer's buffers as `optimizer.{name}.dense_{l}.weight|bias`.
Metadata (safetensors allows str -> str only, so values are JSON): format,
format_version, recipe, history, dataset checksums, optimizer name and step.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import model, paths, schema
from .bounds import shown
from .config import Recipe
from .optim import Optimizer
from .errors import CheckpointError, path_errors
from .files import atomic_write

FORMAT = "rmsprop-cli"
# 2: the recipe records the activation, and only the options of its optimizer (schema.py reads 1 too).
FORMAT_VERSION = schema.FORMAT_VERSION
VERSION_TEXT = re.compile(r"[1-9][0-9]{0,17}", re.ASCII)


@dataclass
class Checkpoint:
    recipe: Recipe
    theta: np.ndarray                      # flat float32 parameters
    opt_state: dict[str, np.ndarray]       # flat float32 optimizer buffers
    history: list[dict] = field(default_factory=list)
    info: dict = field(default_factory=dict)   # dataset checksums, optimizer step, device, ...


def _flat_tensors(prefix: str, flat: np.ndarray, sizes) -> dict[str, np.ndarray]:
    return {prefix + name: t for name, t in zip(model.param_names(sizes), model.views(flat, sizes))}


def is_checkpoint(f) -> bool:
    """Whether an open file is an rmsprop-cli checkpoint, from its safetensors header alone."""
    head = f.read(8)
    if len(head) < 8:
        return False
    n = int.from_bytes(head, "little")
    if not 2 <= n <= 100 * 2**20:
        return False
    try:
        return json.loads(f.read(n)).get("__metadata__", {}).get("format") == FORMAT
    except (ValueError, AttributeError):
        return False


def size_estimate(sizes, n_buffers: int = 1) -> int:
    """Bytes of a checkpoint: float32 parameters and optimizer buffers, plus room for metadata."""
    return 4 * model.n_params(sizes) * (1 + n_buffers) + 2**16


def save(path: Path, ckpt: Checkpoint) -> None:
    from safetensors.numpy import save as st_save

    sizes = ckpt.recipe.sizes
    tensors = _flat_tensors("", ckpt.theta, sizes)
    for name, buf in ckpt.opt_state.items():
        tensors.update(_flat_tensors(f"optimizer.{name}.", buf, sizes))
    tensors = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "recipe": json.dumps(ckpt.recipe.to_dict()),
        "history": json.dumps(ckpt.history),
        "info": json.dumps(ckpt.info),
    }
    atomic_write(path, st_save(tensors, metadata=metadata))


def load(path: Path) -> Checkpoint:
    from safetensors import safe_open

    path = paths.regular_file(path, "checkpoint", CheckpointError, "; pass the model.safetensors file that train wrote")
    with path_errors(CheckpointError, path, "read checkpoint"):
        open(path, "rb").close()   # no permission: say so, not 'not a readable safetensors file'
    try:
        with safe_open(str(path), framework="numpy") as f:
            metadata = f.metadata() or {}
            names = set(f.keys())
            tensors = {name: f.get_tensor(name) for name in names}
    except Exception as e:  # safetensors raises its own and OS errors; any of them means unreadable
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{path} is not a readable safetensors checkpoint (truncated or another format?): {reason}") from None
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a safetensors file but not an rmsprop-cli checkpoint (no rmsprop-cli metadata)")
    # Written as str(FORMAT_VERSION): ASCII digits, no sign, space, underscore or leading zero
    # (int() would take " 1 ", "0_1" and "١").  Versions count from 1.
    text = metadata.get("format_version")
    if not (isinstance(text, str) and VERSION_TEXT.fullmatch(text)):
        raise CheckpointError(f"{path} has no valid format version; it is damaged")
    version = int(text)
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format {version}, newer than this rmsprop-cli reads ({FORMAT_VERSION}); "
            "upgrade with: pip install -U rmsprop-cli")
    recipe, history, info = schema.read(path, metadata, version)   # the whole metadata, against one schema
    if (recipe.n_inputs, recipe.n_classes) != (784, 10):
        # The kernels index arrays by these without bounds checks: never trust them from a file.
        raise CheckpointError(f"{path} is for {recipe.n_inputs} inputs and {recipe.n_classes} classes; "
                              "MNIST has 784 and 10")

    sizes = recipe.sizes
    shapes = dict(zip(model.param_names(sizes), model.param_shapes(sizes)))
    opt_names = sorted({n.split(".")[1] for n in names if n.startswith("optimizer.")})
    # Exactly the optimizer's own buffers, or none of some (evaluate and predict need none; resume
    # says which it lacks).  Another buffer is not the optimizer's state: never load it as if it were.
    kept = Optimizer(recipe, 1).state_names
    unknown = [o for o in opt_names if o not in kept]
    if unknown:
        keeps = f"keeps only {', '.join(kept)}" if kept else "keeps none"
        raise CheckpointError(
            f"{path} holds optimizer state {', '.join(shown(o) for o in unknown[:3])} that its {recipe.optimizer} "
            f"optimizer does not keep (it {keeps}); the file is damaged or was edited, and cannot be used")
    expected = set(shapes) | {f"optimizer.{o}.{n}" for o in opt_names for n in shapes}
    if names != expected:
        missing, extra = sorted(expected - names), sorted(names - expected)
        what = "; ".join(s for s in (f"missing {', '.join(missing[:3])}" if missing else "",
                                     f"unexpected {', '.join(extra[:3])}" if extra else "") if s)
        raise CheckpointError(f"{path} does not match its recorded network {'-'.join(map(str, sizes))}: {what}")

    def flat(prefix: str) -> np.ndarray:
        parts = []
        for name, shape in shapes.items():
            t = tensors[prefix + name]
            if t.shape != shape or t.dtype != np.float32:
                raise CheckpointError(
                    f"{path}: tensor {prefix + name} is {t.dtype}{list(t.shape)}, expected float32{list(shape)}")
            # Weights or state that are NaN or infinite, or a negative average of squared gradients,
            # are never what training writes (it stops when the loss stops being finite).
            if not np.isfinite(t).all():
                raise CheckpointError(f"{path} is damaged: tensor {prefix + name} holds NaN or infinite values; "
                                      "it cannot be used")
            if prefix == "optimizer.v." and (t < 0).any():
                raise CheckpointError(f"{path} is damaged: tensor {prefix + name} holds negative values, but it is "
                                      "an average (or sum) of squared gradients; it cannot be used")
            parts.append(t.reshape(-1))
        return np.concatenate(parts).astype(np.float32, copy=False)

    theta = flat("")
    opt_state = {o: flat(f"optimizer.{o}.") for o in opt_names}
    return Checkpoint(recipe, theta, opt_state, history, info)
