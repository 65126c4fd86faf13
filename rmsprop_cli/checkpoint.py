"""Checkpoints: safetensors files (tensors, never pickle) with JSON metadata.

Tensors: each layer's `dense_{l}.weight` (n_in, n_out) and `dense_{l}.bias`,
and the optimizer's buffers as `optimizer.{name}.dense_{l}.weight|bias`.
Metadata (safetensors allows str -> str only, so values are JSON): format,
format_version, recipe, history, dataset checksums, optimizer name and step.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import model
from .config import Recipe
from .errors import CheckpointError, ConfigError, OutputError

FORMAT = "rmsprop-cli"
FORMAT_VERSION = 1
METRIC_KEYS = {"epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds"}


@dataclass
class Checkpoint:
    recipe: Recipe
    theta: np.ndarray                      # flat float32 parameters
    opt_state: dict[str, np.ndarray]       # flat float32 optimizer buffers
    history: list[dict] = field(default_factory=list)
    info: dict = field(default_factory=dict)   # dataset checksums, optimizer step, device, ...


def _flat_tensors(prefix: str, flat: np.ndarray, sizes) -> dict[str, np.ndarray]:
    return {prefix + name: t for name, t in zip(model.param_names(sizes), model.views(flat, sizes))}


def atomic_write(path: Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, fsync, then rename over it, so a
    crash at any moment leaves either the old file or the complete new one."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise OutputError(f"cannot write {path}: {e.strerror or e}; choose another --output") from None
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; the result should be like any file the user saves
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:  # an OSError, or a second Ctrl-C mid-write: never leave the temporary behind
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise OutputError(f"cannot write {path}: {e.strerror or e}; choose another --output") from None
        raise
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (power loss, not just a killed process); POSIX only."""
    if os.name != "posix":
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_writable(path: Path, size: int = 0) -> None:
    """Fail before training, not after it, when a checkpoint of about `size`
    bytes cannot be written: a folder in the way, no permission, a read-only
    file system, or too little free space (twice the size: the new file is
    written beside the old one before it replaces it)."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"cannot write checkpoint to {path}: it is a folder; give a file name ending in .safetensors")
    if path.parent.exists() and not path.parent.is_dir():
        raise OutputError(f"cannot write checkpoint to {path}: {path.parent} is a file, not a folder; "
                          "choose another --output")
    atomic_write(path.parent / f".{path.name}.probe", b"")
    os.unlink(path.parent / f".{path.name}.probe")
    free = shutil.disk_usage(path.parent).free
    if free < 2 * size:
        raise OutputError(f"cannot write checkpoint to {path}: {free / 2**20:.1f} MiB free there, "
                          f"{2 * size / 2**20:.1f} MiB needed; free some space or choose another --output")


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

    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder; pass the model.safetensors file inside it that train wrote")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; pass the model.safetensors file that train wrote")
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
    try:
        version = int(metadata["format_version"])
    except (KeyError, ValueError):
        raise CheckpointError(f"{path} has no valid format version; it is damaged") from None
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format {version}, newer than this rmsprop-cli reads ({FORMAT_VERSION}); "
            "upgrade with: pip install -U rmsprop-cli")
    try:
        recipe = Recipe.from_dict(json.loads(metadata["recipe"]))
        history = json.loads(metadata.get("history", "[]"))
        info = json.loads(metadata.get("info", "{}"))
        if not isinstance(info, dict) or not isinstance(history, list) or not all(
                isinstance(m, dict) and METRIC_KEYS <= set(m) for m in history):
            raise ValueError("the history or info is not what rmsprop-cli writes")
    except (KeyError, ValueError, TypeError, AttributeError, ConfigError) as e:
        raise CheckpointError(f"{path} has damaged metadata: {e}") from None
    if (recipe.n_inputs, recipe.n_classes) != (784, 10):
        # The kernels index arrays by these without bounds checks: never trust them from a file.
        raise CheckpointError(f"{path} is for {recipe.n_inputs} inputs and {recipe.n_classes} classes; "
                              "MNIST has 784 and 10")

    sizes = recipe.sizes
    shapes = dict(zip(model.param_names(sizes), model.param_shapes(sizes)))
    opt_names = sorted({n.split(".")[1] for n in names if n.startswith("optimizer.")})
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
            parts.append(t.reshape(-1))
        return np.concatenate(parts).astype(np.float32, copy=False)

    theta = flat("")
    opt_state = {o: flat(f"optimizer.{o}.") for o in opt_names}
    return Checkpoint(recipe, theta, opt_state, history, info)
