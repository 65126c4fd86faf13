"""The command line: parse options, call the library, render the result.

The commands are registered here in the order `rmsprop --help` lists them;
train and compare, with a recipe's many options, live in cli_train.py, and
what all commands share in cli_common.py.  Heavy modules (numpy, numba, rich
tables) are imported inside the commands so that `rmsprop --help` stays instant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from . import cli_landscape, cli_sweep, cli_train
from .cli_common import (CheckpointArg, DataDir, Device, Json, Limit, Mirror, Threads, _device, _json,
                         _reporter, _user_errors, app)

@app.command()
def download(data_dir: DataDir = None, mirror: Mirror = None):
    """Download MNIST (if not cached), verify its checksums and cache it."""
    with _user_errors():
        from . import data
        from .console import render_download

        render_download(data.fetch(data.MNIST_FILES.values(), data_dir, mirror or None, _reporter(False)))


app.command()(cli_train.train)


@app.command()
def evaluate(
    checkpoint: CheckpointArg,
    data_dir: DataDir = None,
    mirror: Mirror = None,
    limit: Limit = None,
    device: Device = "cpu",
    threads: Threads = None,
    json_: Json = False,
):
    """Score a saved model on the MNIST test set: loss, accuracy, per-class accuracy, confusion matrix."""
    with _user_errors():
        from . import api

        result = api.evaluate(checkpoint, device=_device(device, json_), data_dir=data_dir, mirror=mirror,
                              limit=limit, threads=threads, reporter=None if json_ else _reporter(False))
        if json_:
            typer.echo(_json(result))
            return
        from .console import render_evaluation

        render_evaluation(result)


@app.command()
def predict(
    checkpoint: CheckpointArg,
    images: Annotated[list[Path], typer.Argument(
        metavar="IMAGE", help="PNG or JPEG files of single digits, any size, dark on light or light on dark; "
             "or MNIST-style IDX image files (see --index).", show_default=False)],
    index: Annotated[Optional[list[int]], typer.Option(
        metavar="N", help="Which images of an IDX file to classify; repeat for several \\[default: 0].", show_default=False)] = None,
    device: Device = "cpu",
    threads: Threads = None,
    json_: Json = False,
):
    """Classify your own digit images: the predicted digit and the three most likely, with probabilities."""
    with _user_errors():
        from . import api

        result = api.predict(checkpoint, images, index=index, device=_device(device, json_), threads=threads)
        if json_:
            typer.echo(_json(result))
            return
        from .console import render_predictions

        render_predictions(result["predictions"])


app.command()(cli_train.compare)
app.command()(cli_landscape.landscape)
app.command()(cli_sweep.sweep)


@app.command()
def plot(
    checkpoint: CheckpointArg,
    output: Annotated[Optional[Path], typer.Option(
        help="The .png file to write, or a folder to put it in \\[default: <stem>.curves.png beside the checkpoint].",
        show_default=False)] = None,
):
    """Draw a run's training and validation loss and accuracy per epoch as a PNG (needs matplotlib)."""
    with _user_errors():
        from . import experiments

        path = experiments.plot(checkpoint, output)
        typer.echo(f"Wrote {path}")


@app.command()
def info(json_: Json = False):
    """Show versions, CPU threads, whether CUDA is usable (and the GPU), and where data and compiled kernels are cached."""
    with _user_errors():
        from .about import info as gather

        about = gather()
        if json_:
            typer.echo(_json(about))
            return
        from .console import render_info

        render_info(about)


def main():
    """The console script: usage errors (a wrong type, a missing argument, an
    unknown option) become the same one-line message as every other error."""
    import sys

    try:
        code = app(standalone_mode=False)
    except typer.Abort:
        code = 130
    except KeyboardInterrupt as e:   # Ctrl-C before any command's own handling (typer still building them)
        # A plain line: the console module would import train and numpy here.
        print(f"{getattr(e, 'label', 'Interrupted')}: stopped at once; nothing more was saved "
              "(files written before are intact)", file=sys.stderr, flush=True)
        code = getattr(e, "exit_code", 130)
    except Exception as e:
        # Typer's usage errors are click's (vendored by recent Typer): they carry
        # exit_code and format_message; anything else is a bug and propagates.
        if not (hasattr(e, "format_message") and hasattr(e, "exit_code")):
            raise
        ctx = getattr(e, "ctx", None)
        if type(e).__name__ == "NoArgsIsHelpError" and ctx is not None:
            typer.echo(ctx.get_help())
        else:
            from .console import error

            hint = f" (see: {ctx.command_path} --help)" if ctx is not None else ""
            error(" ".join(e.format_message().split()) + hint)
        code = e.exit_code
    sys.exit(code or 0)
