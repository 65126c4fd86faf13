"""What every command shares: the Typer app, the options several commands take,
and the edge where the project's errors become one line and an exit code.

Heavy modules (numpy, numba, rich tables) are imported inside the functions so
that `rmsprop --help` stays instant.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer

from . import __version__

app = typer.Typer(
    name="rmsprop",
    help="Train and evaluate MNIST multilayer perceptrons with RMSProp on Numba-compiled kernels.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

DataDir = Annotated[Optional[Path], typer.Option(
    "--data-dir", envvar="RMSPROP_DATA_DIR", show_default=False,
    help="Where MNIST is cached \\[default: your user cache folder, e.g. ~/.cache/rmsprop-cli].")]
Mirror = Annotated[Optional[list[str]], typer.Option(
    "--mirror", envvar="RMSPROP_MIRROR", show_default=False, metavar="URL_OR_DIR",
    help="URL prefix or local folder holding the four MNIST files; repeat to give several "
         "(in RMSPROP_MIRROR separate them with spaces) \\[default: the public mirrors].")]
Limit = Annotated[Optional[int], typer.Option(
    help="Use only the first N training and N test images (quick runs).", show_default=False)]
CheckpointArg = Annotated[Path, typer.Argument(
    metavar="CHECKPOINT", help="A model.safetensors file written by `rmsprop train`.", show_default=False)]
Json = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout and nothing else.")]
Device = Annotated[str, typer.Option(
    help="Compute backend: cpu; cuda (an NVIDIA GPU, needs pip install 'rmsprop-cli\\[cuda]'); "
         "auto (cuda where usable, else cpu, saying which).")]


Threads = Annotated[Optional[int], typer.Option(
    show_default=False,
    help="CPU threads to compute on \\[default: chosen chunk by chunk by measured speed, up to all cores, "
         "so that other busy programs do not slow training down; NUMBA_NUM_THREADS also pins it].")]


def _version(value: bool):
    if value:
        typer.echo(f"rmsprop-cli {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Show the version and exit.")] = False,
):
    """Train and evaluate MNIST multilayer perceptrons with RMSProp on Numba-compiled kernels."""


def _device(device: str, quiet: bool) -> str:
    """Resolve --device here, at the edge, so that the choice --device auto made is said
    (on stderr) before any work starts; the library gets 'cpu' or 'cuda'."""
    from .backends import resolve_device

    resolved, message = resolve_device(device)
    if message and device == "auto" and not quiet:
        from .console import note

        note(message)
    return resolved


@contextmanager
def _user_errors():
    """The project's errors become one line on stderr and their exit code; Ctrl-C exits 130."""
    from .errors import RmspropError

    try:
        yield
    except RmspropError as e:
        from .console import error

        error(str(e), e.label)
        raise typer.Exit(e.exit_code) from None
    except MemoryError:   # train checks its estimate first (memory.py); this is what got past it
        from .console import error
        from .memory import out_of_memory

        try:
            from typer._click.globals import get_current_context   # the command running: Typer vendors click
            ctx = get_current_context(silent=True)
        except ImportError:
            ctx = None
        error(out_of_memory(ctx.info_name if ctx is not None else None))
        raise typer.Exit(1) from None
    except KeyboardInterrupt as e:   # StoppedAtOnce says which signal, and before what
        from .console import error

        error(str(e) or "stopped at once; nothing more was saved (files written before are intact)",
              getattr(e, "label", "Interrupted"))
        raise typer.Exit(getattr(e, "exit_code", 130)) from None


def _json(result) -> str:
    """Strict JSON: a NaN or infinite number (weights gone bad) becomes null."""
    from .outputs import strict_json

    return strict_json(result)


def _reporter(quiet: bool):
    if quiet:
        return None
    from .console import DownloadReporter

    return DownloadReporter()
