"""A sweep's folder, trial by trial: trials/<name>.safetensors (with <name>.metrics.csv) and
trials/<name>.json, the trial's status and row, written by the sweep alone and atomically; and
what they say to skip, continue or rerun when the same sweep runs again.  A record is checked
whole before it is believed: one that is damaged, or of another recipe, means the trial runs."""

from __future__ import annotations

import json
from pathlib import Path

from . import files
from .grid import Trial
from .outputs import write_metrics
from .sweep_table import SCORES, trial_row

MAX_RECORD = 64 * 2**20   # bytes: a record holds every epoch's metrics, about 150 bytes each


def _record_path(folder: Path, name: str) -> Path:
    return folder / "trials" / f"{name}.json"


def _checkpoint_path(folder: Path, name: str) -> Path:
    return folder / "trials" / f"{name}.safetensors"


def _read_record(folder: Path, trial: Trial) -> dict | None:
    """A trial's record, if it is one that this trial's recipe wrote and whole; else None (rerun it).
    Its row is rebuilt around the trial as this sweep names it (another grid may have written it)."""
    try:
        with open(_record_path(folder, trial.name), "rb") as f:
            text = f.read(MAX_RECORD + 1)
        record = json.loads(text) if len(text) <= MAX_RECORD else None
    except (OSError, ValueError, RecursionError):
        return None
    if not (isinstance(record, dict) and record.get("recipe") == trial.recipe.to_dict()
            and record.get("status") in ("finished", "diverged", "failed", "interrupted")):
        return None
    done = record["status"] == "finished"
    scores = {k: record.get(k) for k in (*SCORES, "test_loss")}
    if done and not (all(_number(scores[k]) or scores[k] is None for k in scores) and _number(scores["test_accuracy"])
                     and isinstance(record.get("epochs"), list) and all(map(_epoch, record["epochs"]))):
        return None
    result = {"test_accuracy": scores["test_accuracy"], "test_loss": scores["test_loss"],
              "epochs": record["epochs"]} if done else None
    try:
        row = trial_row(trial, record["status"], result, checkpoint=_checkpoint_path(folder, trial.name) if done
                        else None, error=_text(record.get("error")), worker=_text(record.get("worker")),
                        diverged_at=record.get("diverged_at") if isinstance(record.get("diverged_at"), dict) else None)
    except (KeyError, TypeError, ValueError):   # epochs of another shape: not a record this version wrote
        return None
    if record["status"] == "interrupted" and type(record.get("epochs_trained")) is int:
        row["epochs_trained"] = record["epochs_trained"]
    return row


def _number(x) -> bool:
    return type(x) in (int, float)


def _epoch(m) -> bool:
    """One epoch's metrics as fitting writes them (validation ones None without a validation set)."""
    return (isinstance(m, dict) and type(m.get("epoch")) is int and all(_number(m.get(k)) for k in
            ("loss", "accuracy", "seconds")) and all(m.get(k) is None or _number(m.get(k))
                                                     for k in ("val_loss", "val_accuracy")))


def _text(value) -> str | None:
    return value[:2000] if isinstance(value, str) else None


def plan(folder: Path, trials: list[Trial]) -> tuple[dict[str, dict], dict[str, Path | None]]:
    """What the folder already holds: ({name: row} of the trials that are done, finished with their
    checkpoint or diverged (which a rerun would repeat exactly)), and {name: its checkpoint or None}
    of those to run: an interrupted trial (or one whose record was lost) from its checkpoint, a
    failed one from the start."""
    done, todo = {}, {}
    for trial in trials:
        record = _read_record(folder, trial)
        ckpt = _checkpoint_path(folder, trial.name)
        status = record["status"] if record else None
        if status == "diverged" or (status == "finished" and ckpt.is_file()):
            done[trial.name] = record
            continue
        todo[trial.name] = ckpt if status != "failed" and ckpt.is_file() else None
    return done, todo


def _save(folder: Path, trial: Trial, outcome: dict) -> dict:
    """An ended trial into the folder: its checkpoint and metrics (if it has one), then its record."""
    ckpt = _checkpoint_path(folder, trial.name)
    kept = outcome.get("checkpoint") is not None
    if kept:
        files.atomic_write(ckpt, outcome["checkpoint"])
        if outcome["result"] is not None:
            write_metrics(ckpt, outcome["result"]["epochs"])
    error = outcome.get("error")
    if error and outcome.get("temporary"):   # the worker's copy is gone: name the sweep's
        error = error.replace(outcome["temporary"], str(ckpt))
    row = trial_row(trial, outcome["status"], outcome.get("result"), checkpoint=ckpt if kept else None,
                    error=error, worker=outcome.get("worker"), diverged_at=outcome.get("diverged_at"))
    if outcome["status"] == "interrupted":
        row["epochs_trained"] = outcome.get("epochs_trained", 0)
    files.atomic_write(_record_path(folder, trial.name), json.dumps(row).encode())
    return row
