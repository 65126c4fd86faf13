"""`rmsprop sweep` (registered on the app by cli.py).

Its fixed recipe options are `rmsprop train`'s own parameters, taken from train's
signature (help, types and panels included), so that each is written once."""

from __future__ import annotations

import inspect
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from .cli_common import DataDir, Device, Json, Mirror, _device, _json, _user_errors
from .cli_train import train

# train's parameters that are not recipe options a sweep fixes (the rest are grid.SWEPT, which a test
# checks; grid itself is not imported here, so that `rmsprop --help` does not import numpy).
NOT_RECIPE = ("seed", "output", "resume", "checkpoint_every", "early_stopping", "data_dir", "mirror", "device",
              "threads", "json_")
RECIPE = [p for name, p in inspect.signature(train, eval_str=True).parameters.items() if name not in NOT_RECIPE]


def sweep(
    grid: Annotated[Optional[list[str]], typer.Option(
        "--grid", metavar="NAME=V1,V2,...", show_default=False,
        help="Values of one option of train to try, e.g. --grid lr=1e-3,3e-3 or --grid optimizer=rmsprop,adam "
             "(hidden widths as 128:64); repeat for several: every combination is trained. The first two "
             "are the heatmap's axes.")] = None,
    seeds: Annotated[str, typer.Option(help="Seeds to train every combination with, comma-separated.")] = "0",
    workers: Annotated[Optional[int], typer.Option(
        show_default=False, help="Trials run at once on this machine, one thread each \\[default: one per core].")] = None,
    scheduler: Annotated[Optional[str], typer.Option(
        envvar="DASK_SCHEDULER_ADDRESS", show_default=False, metavar="ADDRESS",
        help="Run the trials on this Dask cluster instead, e.g. tcp://10.0.0.5:8786 "
             "(needs pip install 'rmsprop-cli\\[cluster]'; its workers need rmsprop-cli too).")] = None,
    output: Annotated[Optional[Path], typer.Option(
        show_default=False, help="The sweep's folder; run the same command with the same --output to continue "
                                 "it \\[default: a new runs/<time>-sweep-<names>].")] = None,
    data_dir: DataDir = None,
    mirror: Mirror = None,
    device: Device = "cpu",
    json_: Json = False,
    **options,
):
    """Train every combination of the --grid values, over --seeds, side by side on all cores (or a Dask cluster).

    Prints mean ± spread over seeds of the final and best validation accuracy, test accuracy, epochs to 97% and seconds per combination, best first, and writes sweep.csv, sweep.json, every trial's checkpoint and a heatmap (needs matplotlib). Running the same command again (with its --output) skips finished trials, continues interrupted ones and reruns failed ones; Ctrl-C or SIGTERM saves what runs (exit 130 or 143). Exit 1 when a trial failed.
    """
    with _user_errors():
        from . import api
        from .errors import shell_command
        from .signals import StopSignals

        # The console script: its command again, with the folder it chose, for a sweep that is stopped.
        again = (lambda folder: shell_command("rmsprop", *sys.argv[1:],
                                              *(() if output is not None else ("--output", Path(folder)))))
        again = again if sys.argv[1:2] == ["sweep"] else None
        run = dict(grid=grid or [], seeds=seeds, workers=workers, scheduler=scheduler, output=output,
                   data_dir=data_dir, mirror=mirror or None, device=_device(device, json_), **options)
        from .cli import main

        # As train's: when this process is the console script, a signal after the table stays ignored.
        with StopSignals(then_ignore=getattr(sys.modules.get("__main__"), "main", None) is main) as signals:
            if json_:
                table = api.sweep(**run, again=again, stop=signals)
                typer.echo(_json(table.to_dict()))
            else:
                from .console import DownloadReporter
                from .console_sweep import SweepDisplay, render_sweep

                display = SweepDisplay()
                try:
                    table = api.sweep(**run, again=again, stop=signals, reporter=DownloadReporter(), progress=display)
                finally:
                    display.close()
                render_sweep(table)
        _outcome(table)


def _outcome(table) -> None:
    """Exit 1 when a trial failed, 5 when the figure could not be written; the rest is in the table."""
    from .console import error

    failed = [r for r in table if r["status"] == "failed"]
    if failed:
        error(f"{len(failed)} of {len(table)} trials failed (the first: {failed[0]['error']}); their errors are "
              f"in {Path(table.folder) / 'sweep.csv'}; run the same command again to rerun them")
        raise typer.Exit(1)
    if table.figure_error is not None:
        error(str(table.figure_error))
        raise typer.Exit(table.figure_error.exit_code)


_own = inspect.signature(sweep, eval_str=True)
sweep.__signature__ = _own.replace(parameters=[
    *(p for p in _own.parameters.values() if p.kind is not p.VAR_KEYWORD),
    *(p.replace(kind=p.KEYWORD_ONLY) for p in RECIPE)])
