"""A sweep's results: one row per trial, and per combination of the swept values the mean
and spread over its seeds, best first; sweep.csv and sweep.json.  Pure Python."""

from __future__ import annotations

import csv
import io
import statistics

from .grid import Trial

# What a trial reports (from fitting.scores and the test evaluation), in the order of the table's columns.
SCORES = ("final_val_accuracy", "best_val_accuracy", "test_accuracy", "epochs_to_97", "seconds")
STATUSES = ("finished", "diverged", "failed", "interrupted", "pending")
CSV_TAIL = ("seed", "status", *SCORES, "test_loss", "epochs_trained", "checkpoint", "worker", "error")


def trial_row(trial: Trial, status: str, result: dict | None = None, *, checkpoint=None, error=None,
              worker=None, diverged_at=None) -> dict:
    """One trial as sweep.json and sweep.csv hold it."""
    from .fitting import scores

    row = {"name": trial.name, "options": dict(trial.options), "seed": trial.seed, "status": status,
           **{k: None for k in SCORES}, "test_loss": None, "epochs_trained": 0,
           "checkpoint": str(checkpoint) if checkpoint is not None else None, "worker": worker, "error": error}
    if result is not None:
        row.update(scores(result["epochs"]))
        row.update(test_accuracy=result["test_accuracy"], test_loss=result["test_loss"],
                   epochs_trained=len(result["epochs"]), epochs=result["epochs"])
    if diverged_at is not None:
        row["diverged_at"] = diverged_at
    row["recipe"] = trial.recipe.to_dict()
    return row


def _stat(values: list) -> dict:
    """Mean and spread (the sample standard deviation, n − 1 in the denominator; None for one value)."""
    values = [v for v in values if v is not None]
    if not values:
        return {"mean": None, "spread": None}
    return {"mean": statistics.fmean(values), "spread": statistics.stdev(values) if len(values) > 1 else None}


def combinations(rows: list[dict]) -> list[dict]:
    """Per combination of swept values: how many seeds finished, diverged or failed, and the mean and
    spread of each score over its finished seeds; the best first (by mean final validation accuracy,
    or test accuracy without a validation set), combinations with no finished trial last."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row["options"].items()), []).append(row)
    out = []
    for key, group in groups.items():
        done = [r for r in group if r["status"] == "finished"]
        combo = {"options": dict(key), "seeds": [r["seed"] for r in group],
                 **{s: sum(r["status"] == s for r in group) for s in STATUSES}}
        for score in SCORES:
            combo[score] = _stat([r[score] for r in done])
        reached = [r["epochs_to_97"] for r in done if r["epochs_to_97"] is not None]
        combo["epochs_to_97"]["reached"] = len(reached)
        out.append(combo)

    def rank(c):
        score = c["final_val_accuracy"]["mean"]
        if score is None:
            score = c["test_accuracy"]["mean"]
        return (score is None, -(score or 0.0))

    return sorted(out, key=rank)   # stable: equal combinations keep the grid's order


class SweepTable(list):
    """The rows of a sweep, one dict per trial (pandas.DataFrame(table) makes a frame of them),
    with the per-combination summary, the grid, and where the files went."""

    def __init__(self, rows, *, grid: dict, seeds: list, fixed: dict, folder=None, figure=None, figure_note=None):
        super().__init__(rows)
        self.grid, self.seeds, self.fixed = grid, seeds, fixed
        self.folder, self.figure, self.figure_note = folder, figure, figure_note
        self.figure_error = None   # the OutputError that kept the figure from being written
        self.combinations = combinations(rows)

    @property
    def counts(self) -> dict:
        return {s: sum(r["status"] == s for r in self) for s in STATUSES}

    def to_dict(self) -> dict:
        """What sweep.json holds and `rmsprop sweep --json` prints."""
        d = {"grid": self.grid, "seeds": self.seeds, "fixed": self.fixed, "counts": self.counts,
             "combinations": self.combinations, "trials": list(self),
             "folder": str(self.folder) if self.folder is not None else None,
             "figure": str(self.figure) if self.figure is not None else None}
        if self.figure_note:
            d["figure_note"] = self.figure_note
        return d

    def to_pandas(self):
        """The trials as a pandas DataFrame, one column per swept option (pandas must be installed)."""
        import pandas as pd

        return pd.DataFrame([{**r["options"], **{k: r[k] for k in CSV_TAIL}} for r in self])

    def to_csv(self) -> str:
        """sweep.csv: one line per trial, the swept options first."""
        names = list(self.grid)
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow([*names, *CSV_TAIL])
        for r in self:
            writer.writerow(["" if r["options"].get(n) is None else r["options"][n] for n in names]
                            + ["" if r.get(k) is None else r[k] for k in CSV_TAIL])
        return out.getvalue()
