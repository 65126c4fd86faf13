"""Everything the user sees: rich progress bars, tables and messages."""

from __future__ import annotations

import time
from collections import deque

from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.progress import (BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TextColumn,
                           TimeRemainingColumn, TransferSpeedColumn)
from rich.table import Table

from .fitting import Callbacks
from .training import evaluate_command

out = Console()
err = Console(stderr=True)


def _pct(x) -> str:
    return "—" if x is None else f"{100 * x:.2f}%"


def _num(x) -> str:
    return "—" if x is None else f"{x:.4f}"


class DownloadReporter:
    """download.Reporter: one transient progress bar per file."""

    def __init__(self, console: Console = err):
        self.console = console
        self.progress = None

    def start(self, name: str, total: int | None) -> None:
        if not self.console.is_terminal:
            return  # a transient bar leaves only blank lines in a log
        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(),
                                 TransferSpeedColumn(), TimeRemainingColumn(), console=self.console, transient=True)
        self.progress.start()
        self.task = self.progress.add_task(f"Fetching {name}", total=total)

    def advance(self, nbytes: int) -> None:
        if self.progress is not None:
            self.progress.advance(self.task, nbytes)

    def finish(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def note(self, message: str) -> None:
        """A line while fetching goes on (a mirror given up): above the bar, like every other note."""
        note(message)


class TrainDisplay(Callbacks):
    """A table with a row per epoch, the last `rows` of them (earlier ones counted in one
    line, so that a refresh costs the same at epoch 10 million as at epoch 10), with a
    live bar over the current epoch's batches."""

    COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds")

    def __init__(self, console: Console = out, title: str = "Training", rows: int = 20):
        self.console, self.title = console, title
        self.rows, self.epochs_shown = deque(maxlen=rows), 0
        self.progress = Progress(
            TextColumn("epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}  acc {task.fields[acc]:.4f}  {task.fields[rate]:,.0f} samples/s"),
            TimeRemainingColumn(), console=console, transient=True)
        self.table = self._table()
        self.live = Live(Group(self.table, self.progress), console=console, refresh_per_second=8)
        self.task = None
        self.spinner = None

    def _table(self) -> Table:
        table = Table(title=self.title, title_justify="left")
        for col in self.COLUMNS:
            table.add_column(col, justify="right")
        hidden = self.epochs_shown - len(self.rows)
        if hidden:
            first = int(self.rows[0][0])
            table.add_row(f"{first - hidden}–{first - 1}", *["…"] * (len(self.COLUMNS) - 1), style="dim")
            table.caption = f"{hidden} earlier epochs not shown (see the metrics file)"
        for row in self.rows:
            table.add_row(*row)
        return table

    def status(self, message: str) -> None:
        """A transient spinner (nothing when output is not a terminal) until the first epoch starts."""
        self.spinner = self.console.status(message)
        self.spinner.start()

    def _stop_spinner(self):
        if self.spinner is not None:
            self.spinner.stop()
            self.spinner = None

    def epoch_start(self, epoch, epochs, n_batches, n_samples):
        self._stop_spinner()
        if not self.live.is_started:
            self.live.start()
        self.t0 = time.perf_counter()
        if self.task is not None:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task("", total=n_batches, epoch=f"{epoch}/{epochs}", loss=0.0, acc=0.0, rate=0.0)

    def chunk_end(self, batches_done, samples_done, loss, accuracy):
        rate = samples_done / max(time.perf_counter() - self.t0, 1e-9)
        self.progress.update(self.task, completed=batches_done, loss=loss, acc=accuracy, rate=rate)

    def epoch_end(self, m):
        self.rows.append((str(m["epoch"]), _num(m["loss"]), _pct(m["accuracy"]), _num(m["val_loss"]),
                          _pct(m["val_accuracy"]), f"{m['seconds']:.2f}"))
        self.epochs_shown += 1
        self.table = self._table()
        self.live.update(Group(self.table, self.progress))

    def close(self):
        self._stop_spinner()
        if self.task is not None:
            self.progress.remove_task(self.task)
        if self.live.is_started:
            self.live.stop()
            if not self.console.is_terminal:
                self.console.print()  # Live leaves the cursor after the table only on a terminal


def render_train_result(result: dict, console: Console = out) -> None:
    if "early_stopping" in result:
        info = result["early_stopping"]
        console.print(f"Early stopping after epoch {info['stopped_after_epoch']}: kept the weights of epoch "
                      f"{info['best_epoch']} (val_loss {info['best_val_loss']:.4f})")
    console.print(f"Test accuracy [bold]{_pct(result['test_accuracy'])}[/bold], "
                  f"test loss {_num(result['test_loss'])} ({result['device']})")
    console.print(f"Checkpoint saved to [bold]{escape(result['checkpoint'])}[/bold]", soft_wrap=True)
    console.print(f"Evaluate it later with: {escape(evaluate_command(result['checkpoint'], result['recipe'].get('limit')))}",
                  soft_wrap=True, highlight=False)


def render_evaluation(result: dict, console: Console = out) -> None:
    device = f" ({result['device']})" if "device" in result else ""
    console.print(f"Test accuracy [bold]{_pct(result['test_accuracy'])}[/bold], test loss {_num(result['test_loss'])}{device}")
    per_class = Table(title="Per-class accuracy", title_justify="left")
    per_class.add_column("digit", justify="right")
    per_class.add_column("accuracy", justify="right")
    per_class.add_column("images", justify="right")
    confusion = result["confusion_matrix"]
    for c, acc in enumerate(result["per_class_accuracy"]):
        per_class.add_row(str(c), _pct(acc), str(sum(confusion[c])))
    console.print(per_class)
    cm = Table(title="Confusion matrix (rows: true digit, columns: predicted)", title_justify="left")
    cm.add_column("", justify="right", style="bold")
    for c in range(len(confusion)):
        cm.add_column(str(c), justify="right")
    for c, row in enumerate(confusion):
        cm.add_row(str(c), *(f"[bold green]{n}[/]" if j == c else (str(n) if n else "[dim]·[/]")
                             for j, n in enumerate(row)))
    console.print(cm)


def render_predictions(results: list[dict], console: Console = out) -> None:
    table = Table(title="Predictions", title_justify="left")
    table.add_column("image", overflow="fold")
    table.add_column("digit", justify="center", style="bold")
    table.add_column("top 3", justify="left")
    for r in results:
        top = "   ".join(f"{t['digit']} {100 * t['probability']:6.2f}%" for t in r["top3"])
        table.add_row(r["image"], str(r["digit"]), top)
    console.print(table)


def render_comparison(result: dict, console: Console = out) -> None:
    table = Table(title="Optimizers compared (same initial weights, same batch order)", title_justify="left")
    for col in ("optimizer", "lr", "final val_acc", "best val_acc", "test acc", "epochs to 97% val", "seconds"):
        table.add_column(col, justify="left" if col == "optimizer" else "right")
    for r in result["optimizers"]:
        table.add_row(r["optimizer"], f"{r['lr']:g}", _pct(r["final_val_accuracy"]), _pct(r["best_val_accuracy"]),
                      _pct(r["test_accuracy"]), "—" if r["epochs_to_97"] is None else str(r["epochs_to_97"]),
                      f"{r['seconds']:.1f}")
    console.print(table)
    if result["figure"]:
        console.print(f"Figure: [bold]{result['figure']}[/bold]")
    else:
        console.print(f"[yellow]No figure:[/yellow] {escape(result['figure_note'])}", highlight=False, soft_wrap=True)


def render_landscape(result: dict, console: Console = out) -> None:
    table = Table(box=box.SIMPLE_HEAD, title_justify="left", caption_justify="left",
                  title=f"{result['surface']}: f = {result['formula']}, {result['steps']} steps from "
                        f"({result['start'][0]:g}, {result['start'][1]:g}); minimum {result['min_loss']:g} at "
                        f"({result['minimum'][0]:g}, {result['minimum'][1]:g})")
    table.caption = (f"reached: the first step within {result['tolerance']:g} of the minimum's loss; "
                     "stays: the step from which it stays within")
    for col in ("optimizer", "lr", "final point", "final loss", "reached", "stays"):
        table.add_column(col, justify="left" if col == "optimizer" else "right", no_wrap=col != "final loss")
    for r in result["optimizers"]:
        x, y = r["final_point"]
        final = f"diverged at step {r['diverged_at']}" if r["diverged_at"] is not None else f"{r['final_loss']:.3g}"
        reached = "not reached" if r["steps_to_tolerance"] is None else str(r["steps_to_tolerance"])
        stays = "—" if r["stays_within_from"] is None else str(r["stays_within_from"])
        table.add_row(r["optimizer"], f"{r['lr']:g}", f"({x:.3g}, {y:.3g})", final, reached, stays)
    console.print(table)
    for key, what in (("figure", "Figure"), ("animation", "Animation")):
        if result[key]:
            console.print(f"{what}: [bold]{result[key]}[/bold]")
    if result.get("figure_note"):
        console.print(f"[yellow]No figure:[/yellow] {escape(result['figure_note'])}", highlight=False, soft_wrap=True)


def render_download(paths: dict, console: Console = out) -> None:
    for name, path in paths.items():
        console.print(f"[green]✓[/green] {name} → {path}")


def render_info(about: dict, console: Console = out) -> None:
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    cuda = about["cuda"]
    rows = [
        ("rmsprop-cli", about["rmsprop_cli"]),
        ("Python", about["python"]),
        ("numpy", about["numpy"]),
        ("numba", about["numba"]),
        ("numba-cuda", about["numba_cuda"] or "not installed (pip install 'rmsprop-cli[cuda]')"),
        ("CPU threads", f"{about['cpu_count']} (Numba uses {about['numba_threads']}, "
                        f"threading layer {about['threading_layer']}; "
                        f"a training step of the default recipe runs on up to {about['training_threads']})"),
        ("Training threads", escape(about["training_threads_choice"])),
        ("CUDA", ("[green]usable[/green]: " if cuda["usable"] else "[yellow]not usable[/yellow]: ") + escape(cuda["detail"])),
        ("MNIST cache", escape(about["data_dir"])),
        ("Kernel cache", escape(about["kernel_cache_dir"])),
    ]
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)


def note(message: str) -> None:
    """A line of information on stderr, where it does not mix with --json output."""
    err.print(escape(message), highlight=False, soft_wrap=True)


def error(message: str, label: str = "Error") -> None:
    # escape: messages hold paths and hints like 'rmsprop-cli[plot]' that are not markup
    err.print(f"[bold red]{label}:[/bold red] {escape(message)}", highlight=False, soft_wrap=True)
