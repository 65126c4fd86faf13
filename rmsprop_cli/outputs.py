"""Where a run's files go: its run folder (`runs/<time>-<recipe>-seed<seed>`), its checkpoint's
path, and the metrics file beside the checkpoint, one CSV row per epoch.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
from datetime import datetime
from pathlib import Path

from . import files
from .config import Recipe
from .errors import OutputError, os_reason, path_errors

METRICS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds")
METRICS_HEADER = ",".join(METRICS) + "\n"


def metrics_path(path: Path) -> Path:
    """A checkpoint's own metrics file: `<stem>.metrics.csv` beside `<stem>.safetensors`."""
    path = Path(path)
    return path.with_name(path.stem + ".metrics.csv")


def is_metrics(f) -> bool:
    """Whether an open file is a metrics file that train wrote (it starts with our header)."""
    return f.read(len(METRICS_HEADER)) == METRICS_HEADER.encode()


def _metrics_rows(history: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=METRICS, lineterminator="\n")
    for m in history:
        writer.writerow({k: "" if m[k] is None else m[k] for k in METRICS})
    return out.getvalue()


def write_metrics(path: Path, history: list[dict]) -> None:
    """The checkpoint's metrics file, written whole and atomically: at the start of a
    run, so that it holds exactly the epochs of the checkpoint it continues."""
    files.atomic_write(metrics_path(path), (METRICS_HEADER + _metrics_rows(history)).encode())


def append_metrics(path: Path, metrics: dict) -> None:
    """One epoch's row appended to the metrics file: the same cost at epoch 10 as at epoch
    10 million.  Not fsynced: the checkpoint is the record; its next --resume rewrites
    this file from the checkpoint's history, a row torn by a crash included."""
    target = metrics_path(path)
    try:
        with open(target, "a") as f:
            if f.tell() == 0:   # removed while we ran
                f.write(METRICS_HEADER)
            f.write(_metrics_rows([metrics]))
    except OSError as e:
        error = OutputError(f"cannot write {target}: {os_reason(e)}; {files.WRITE_HINT}")
        error.reason = os_reason(e)
        raise error from None


def default_output(recipe: Recipe, root: Path = Path("runs")) -> Path:
    """model.safetensors in a new run folder, `runs/<time>-<recipe>-seed<seed>`, made here.

    mkdir is atomic: when the folder exists (another run started in the same second
    with the same recipe and seed), -2, -3, ... is tried, so no two runs ever share one."""
    return new_folder(f"{recipe.describe()}-seed{recipe.seed}", root) / "model.safetensors"


def new_folder(name: str, root: Path = Path("runs")) -> Path:
    """A new folder `runs/<time>-<name>`, made here (see default_output)."""
    base = f"{datetime.now().strftime('%Y%m%d-%H%M%S')}-{name}"
    files.make_folder(root / base)
    with path_errors(OutputError, root / base, "make the run folder", files.WRITE_HINT):
        for n in itertools.count(1):
            folder = root / (base if n == 1 else f"{base}-{n}")
            try:
                folder.mkdir()
            except FileExistsError:
                continue
            return folder


def resolve_output(output: Path | None, recipe: Recipe) -> Path:
    """--output may name the checkpoint file or a folder to put model.safetensors in;
    without it, a new run folder is made (default_output)."""
    if output is None:
        return default_output(recipe)
    output = Path(output)
    if output.suffix.lower() != ".safetensors":
        return output / "model.safetensors"
    return output


def strict_json(obj) -> str:
    """JSON that every parser reads: a NaN or infinite number (a loss gone bad) becomes null."""
    def clean(x):
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        return x

    return json.dumps(clean(obj), allow_nan=False)
