"""What a sweep shows: live progress over its trials, then the table of its combinations."""

from __future__ import annotations

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from .console import err, out

SHOWN = 40   # combinations in the table; the rest are in sweep.csv and sweep.json


class SweepDisplay:
    """progress(counts, total, running), as sweeps.sweep calls it: a bar over the trials that have
    ended, the counts, and rich's estimate of the time left from the pace so far (on stderr)."""

    def __init__(self, console: Console = err):
        self.progress = Progress(TextColumn("Trials"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.description}"), TimeElapsedColumn(), TextColumn("left"),
                                 TimeRemainingColumn(), console=console, transient=False)
        self.task = None

    def __call__(self, counts: dict, total: int, running: int) -> None:
        ended = counts["finished"] + counts["diverged"] + counts["failed"]
        text = (f"done {counts['finished']} · running {running} · failed {counts['failed']}"
                + (f" · diverged {counts['diverged']}" if counts["diverged"] else ""))
        if self.task is None:
            self.progress.start()
            self.task = self.progress.add_task(text, total=total, completed=ended)
        self.progress.update(self.task, completed=ended, description=text)

    def close(self) -> None:
        if self.task is not None:
            self.progress.stop()


def _stat(s: dict, percent: bool = True) -> str:
    if s["mean"] is None:
        return "—"
    if percent:
        return f"{100 * s['mean']:.2f}" + (f"±{100 * s['spread']:.2f}" if s["spread"] is not None else "")
    digits = 1 if s["mean"] >= 1 else 2
    return f"{s['mean']:.{digits}f}" + (f"±{s['spread']:.{digits}f}" if s["spread"] is not None else "")


def _value(v) -> str:
    return "n/a" if v is None else f"{v:g}" if type(v) in (int, float) else str(v)


def render_sweep(table, console: Console = out) -> None:
    names = list(table.grid)
    t = Table(box=box.SIMPLE_HEAD, title_justify="left", caption_justify="left",
              title=f"Sweep of {len(table)} trials: mean ± spread over seeds {', '.join(map(str, table.seeds))}, "
                    "best first")
    for col in names:
        head = col.replace("_", "-")   # as the option is written
        t.add_column(head, min_width=max(len(head), *(len(_value(c["options"].get(col)))
                                                      for c in table.combinations[:SHOWN])))
    for col in ("seeds", "final val %", "best val %", "test %", "epochs to 97%", "seconds"):
        t.add_column(col, justify="right", no_wrap=True)
    for c in table.combinations[:SHOWN]:
        seeds = f"{c['finished']}/{len(c['seeds'])}"
        for status in ("diverged", "failed", "interrupted", "pending"):
            if c[status]:
                seeds += f", {c[status]} {status}"
        e97 = c["epochs_to_97"]
        reached = "never" if not e97["reached"] else _stat(e97, percent=False) + (
            f" ({e97['reached']}/{c['finished']})" if e97["reached"] < c["finished"] else "")
        t.add_row(*(_value(c["options"].get(n)) for n in names), seeds, _stat(c["final_val_accuracy"]),
                  _stat(c["best_val_accuracy"]), _stat(c["test_accuracy"]), reached if c["finished"] else "—",
                  _stat(c["seconds"], percent=False))
    if len(table.combinations) > SHOWN:
        t.caption = f"… and {len(table.combinations) - SHOWN} more combinations in sweep.csv and sweep.json"
    # Piped (a file, a log), the table is as wide as it needs; on a terminal, as wide as that.
    from rich.measure import Measurement

    wide = Measurement.get(console, console.options.update(max_width=10_000), t).maximum
    if not console.is_terminal and wide > console.width:   # print clamps to the console's width: a wider one
        Console(file=console.file, width=wide, color_system=console.color_system, highlight=False).print(t)
    else:
        console.print(t)
    console.print(f"Results: [bold]{escape(str(table.folder))}[/bold] (sweep.csv, sweep.json, trials/)",
                  highlight=False, soft_wrap=True)
    if table.figure:
        console.print(f"Figure: [bold]{escape(str(table.figure))}[/bold]", highlight=False, soft_wrap=True)
    elif table.figure_note:
        console.print(f"[yellow]No figure:[/yellow] {escape(table.figure_note)}", highlight=False, soft_wrap=True)
