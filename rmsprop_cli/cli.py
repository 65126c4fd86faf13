"""The command line: parse options, call the library, render the result.

Heavy modules (numpy, numba, rich tables) are imported inside the commands so
that `rmsprop --help` stays instant.
"""

from __future__ import annotations

import json
import math
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer

from . import __version__
from .activations import activation_help
from .hyper import SCHEDULES
from .optim import DEFAULT_LR, NAMES, help_for, optimizer_help

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


def _pin_threads(threads: int | None) -> None:
    """--threads N pins; without it, the count is chosen by measurement (even
    if an earlier command in this process pinned it)."""
    from . import threads as policy

    policy.pin(threads)


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
    def clean(x):
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, list):
            return [clean(v) for v in x]
        return x

    return json.dumps(clean(result), allow_nan=False)


def _reporter(quiet: bool):
    if quiet:
        return None
    from .console import DownloadReporter

    return DownloadReporter()


@app.command()
def download(data_dir: DataDir = None, mirror: Mirror = None):
    """Download MNIST (if not cached), verify its checksums and cache it."""
    with _user_errors():
        from . import data
        from .console import render_download

        render_download(data.fetch(data.MNIST_FILES.values(), data_dir, mirror or None, _reporter(False)))


_LR_HELP = ("Learning rate η (the first update's, with a schedule) \\[default: "
            + ", ".join(f"{name} {rate:g}" for name, rate in DEFAULT_LR.items()) + "].")
_SCHEDULE_HELP = ("Learning rate over the updates n = 0, 1, ... after any warm-up, as Keras and Optax define "
                  "them: " + "; ".join(f"{name}: {formula}" for name, formula in SCHEDULES.items())
                  + " \\[default: constant].")


@app.command()
def train(
    epochs: Annotated[Optional[int], typer.Option(
        help="Passes over the training set, counting those of a resumed run \\[default: 10].", show_default=False)] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Images per mini-batch \\[default: 32].", show_default=False)] = None,
    lr: Annotated[Optional[float], typer.Option(help=_LR_HELP, show_default=False)] = None,
    rho: Annotated[Optional[float], typer.Option(help=help_for("rho"), show_default=False)] = None,
    eps: Annotated[Optional[float], typer.Option(help=help_for("eps"), show_default=False)] = None,
    eps_placement: Annotated[Optional[str], typer.Option(help=help_for("eps_placement"), show_default=False)] = None,
    hidden: Annotated[Optional[str], typer.Option(
        help="Hidden layer widths, comma-separated \\[default: 128,64].", show_default=False)] = None,
    activation: Annotated[Optional[str], typer.Option(help=activation_help(), show_default=False)] = None,
    val_split: Annotated[Optional[float], typer.Option(
        help="Fraction of the training set, taken from its end, held out for validation \\[default: 0.2].",
        show_default=False)] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed for initial weights and batch order \\[default: 0].",
                                                show_default=False)] = None,
    limit: Limit = None,
    optimizer: Annotated[Optional[str], typer.Option(
        help=optimizer_help(), show_default=False, rich_help_panel="Optimizer")] = None,
    centered: Annotated[bool, typer.Option(
        "--centered", help=help_for("centered"), rich_help_panel="Optimizer")] = False,
    momentum: Annotated[Optional[float], typer.Option(
        help=help_for("momentum"), show_default=False, rich_help_panel="Optimizer")] = None,
    nesterov: Annotated[bool, typer.Option(
        "--nesterov", help=help_for("nesterov"), rich_help_panel="Optimizer")] = False,
    weight_decay: Annotated[Optional[float], typer.Option(
        help="λ: L2 penalty added to the gradient, g + λ·θ (PyTorch) \\[default: 0].", show_default=False,
        rich_help_panel="Optimizer")] = None,
    decoupled_decay: Annotated[bool, typer.Option(
        "--decoupled-decay", help="Apply weight decay on its own, θ ← θ − η·λ·θ (Keras, AdamW), not through the "
                                  "gradient (Lion's always is).", rich_help_panel="Optimizer")] = False,
    initial_accumulator: Annotated[Optional[float], typer.Option(
        help=help_for("initial_accumulator"), show_default=False, rich_help_panel="Optimizer")] = None,
    bias_correction: Annotated[bool, typer.Option(
        "--bias-correction", help=help_for("bias_correction"), rich_help_panel="Optimizer")] = False,
    clip_norm: Annotated[Optional[float], typer.Option(
        help="Scale the whole gradient down to this global L2 norm.", show_default=False,
        rich_help_panel="Optimizer")] = None,
    clip_value: Annotated[Optional[float], typer.Option(
        help="Clip every gradient value to [−c, c].", show_default=False, rich_help_panel="Optimizer")] = None,
    schedule: Annotated[Optional[str], typer.Option(
        help=_SCHEDULE_HELP, show_default=False, rich_help_panel="Optimizer")] = None,
    warmup_steps: Annotated[Optional[int], typer.Option(
        help="Raise the learning rate linearly from 0 over this many steps first \\[default: 0].",
        show_default=False, rich_help_panel="Optimizer")] = None,
    decay_steps: Annotated[Optional[int], typer.Option(
        help="Updates per decay of the step and exponential schedules \\[default: one epoch].", show_default=False,
        rich_help_panel="Optimizer")] = None,
    decay_rate: Annotated[Optional[float], typer.Option(
        help="Factor per decay steps of the step and exponential schedules \\[default: 0.5].", show_default=False,
        rich_help_panel="Optimizer")] = None,
    beta1: Annotated[Optional[float], typer.Option(
        help=help_for("beta1"), show_default=False, rich_help_panel="Optimizer")] = None,
    beta2: Annotated[Optional[float], typer.Option(
        help=help_for("beta2"), show_default=False, rich_help_panel="Optimizer")] = None,
    output: Annotated[Optional[Path], typer.Option(
        help="Checkpoint file (.safetensors) or folder to write model.safetensors into "
             "\\[default: a new runs/<time>-<recipe>-seed<seed>/model.safetensors, or the resumed checkpoint]. "
             "Its metrics go beside it, in <stem>.metrics.csv.", show_default=False)] = None,
    resume: Annotated[Optional[Path], typer.Option(
        help="Continue the run saved in this checkpoint (after Ctrl-C, --checkpoint-every or a finished run); "
             "its recipe is kept, --epochs may grow.", show_default=False)] = None,
    checkpoint_every: Annotated[Optional[int], typer.Option(
        help="Also save the checkpoint every N epochs during training.", show_default=False)] = None,
    early_stopping: Annotated[Optional[int], typer.Option(
        help="Stop when validation loss has not improved for this many epochs, keeping the best weights.",
        show_default=False)] = None,
    data_dir: DataDir = None,
    mirror: Mirror = None,
    device: Device = "cpu",
    threads: Threads = None,
    json_: Json = False,
):
    """Train a multilayer perceptron on MNIST with RMSProp, then report test accuracy and save a checkpoint.

    Ctrl-C, SIGTERM or SIGHUP saves a checkpoint of the last finished chunk of batches and prints the command
    that resumes it (exit code 130, 143 or 129).
    """
    with _user_errors():
        _pin_threads(threads)
        from . import train as training

        options = dict(epochs=epochs, batch_size=batch_size, lr=lr, rho=rho, eps=eps, eps_placement=eps_placement,
                       hidden=hidden, activation=activation, val_split=val_split, seed=seed, limit=limit, optimizer=optimizer,
                       centered=centered or None, momentum=momentum, nesterov=nesterov or None,
                       weight_decay=weight_decay, decoupled_decay=decoupled_decay or None,
                       initial_accumulator=initial_accumulator, bias_correction=bias_correction or None,
                       clip_norm=clip_norm, clip_value=clip_value, schedule=schedule, warmup_steps=warmup_steps,
                       decay_steps=decay_steps, decay_rate=decay_rate, beta1=beta1, beta2=beta2)
        # SIGINT, SIGTERM and SIGHUP are the run's until its last line is printed (see StopSignals); one that
        # comes after the final save interrupts nothing, and the command says so and exits 0.  When this
        # process is the console script, they stay ignored until it has exited.
        import sys

        with training.StopSignals(then_ignore=getattr(sys.modules.get("__main__"), "main", None) is main) as signals:
            run = dict(device=_device(device, json_), data_dir=data_dir, mirrors=mirror or None, output=output,
                       resume=resume, checkpoint_every=checkpoint_every, early_stopping=early_stopping, stop=signals)
            if json_:
                typer.echo(_json(training.run(options, **run)))
            else:
                from .console import TrainDisplay, render_train_result

                display = TrainDisplay()
                try:
                    result = training.run(options, **run, reporter=_reporter(False), callbacks=display)
                finally:
                    display.close()
                render_train_result(result)
            if signals():
                from .console import note
                from .errors import stopped_by

                note(f"{stopped_by(signals.signum)[0]} after the run had finished: nothing was cut short; "
                     "the checkpoint is complete and saved")


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
        _pin_threads(threads)
        from . import inference

        from .config import check_option

        check_option("limit", limit)
        result = inference.evaluate(checkpoint, device=_device(device, json_), data_dir=data_dir, mirrors=mirror or None,
                                   limit=limit, reporter=None if json_ else _reporter(False))
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
        _pin_threads(threads)
        from . import inference

        results = inference.predict(checkpoint, images, indices=index, device=_device(device, json_))
        if json_:
            typer.echo(_json({"predictions": results}))
            return
        from .console import render_predictions

        render_predictions(results)


@app.command()
def compare(
    optimizers: Annotated[str, typer.Option(
        help=f"Comma-separated optimizers to train, of: {', '.join(NAMES)}.")] = "sgd,adagrad,rmsprop,adam",
    lr: Annotated[Optional[list[str]], typer.Option(
        "--lr", metavar="NAME=VALUE", show_default=False,
        help="Learning rate for one optimizer, e.g. --lr sgd=0.1; repeat for several "
             "\\[default: each one's usual default: "
             + ", ".join(f"{name} {rate:g}" for name, rate in DEFAULT_LR.items()) + "].")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="\\[default: 10].", show_default=False)] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="\\[default: 32].", show_default=False)] = None,
    hidden: Annotated[Optional[str], typer.Option(help="\\[default: 128,64].", show_default=False)] = None,
    val_split: Annotated[Optional[float], typer.Option(help="\\[default: 0.2].", show_default=False)] = None,
    seed: Annotated[Optional[int], typer.Option(help="\\[default: 0].", show_default=False)] = None,
    limit: Limit = None,
    output: Annotated[Optional[Path], typer.Option(
        help="Where the figure goes: a .png file or a folder \\[default: runs/<time>-<recipe>/compare.png].",
        show_default=False)] = None,
    data_dir: DataDir = None,
    mirror: Mirror = None,
    device: Device = "cpu",
    threads: Threads = None,
    json_: Json = False,
):
    """Train the same network from the same initial weights and batch order with several optimizers, and compare.

    Prints final and best validation accuracy, test accuracy, epochs to reach 97% validation accuracy and
    seconds per optimizer, and draws their loss and accuracy curves (needs matplotlib: pip install 'rmsprop-cli\\[plot]').
    """
    with _user_errors():
        _pin_threads(threads)
        from . import experiments
        from .errors import ConfigError

        rates = {}
        for item in lr or []:
            name, sep, value = item.partition("=")
            try:
                rates[name.strip()] = float(value)
            except ValueError:
                raise ConfigError(f"--lr takes NAME=VALUE, such as --lr sgd=0.1; got {item!r}") from None
            if not sep:
                raise ConfigError(f"--lr takes NAME=VALUE, such as --lr sgd=0.1; got {item!r}")
        names = [n.strip() for n in optimizers.split(",") if n.strip()]
        options = dict(epochs=epochs, batch_size=batch_size, hidden=hidden, val_split=val_split, seed=seed, limit=limit)
        run = dict(device=_device(device, json_), data_dir=data_dir, mirrors=mirror or None, output=output)
        if json_:
            typer.echo(_json(experiments.compare(options, names, rates, **run)))
            return
        from .console import TrainDisplay, render_comparison

        displays = []

        def callbacks_for(name, recipe):
            if displays:
                displays[-1].close()
            displays.append(TrainDisplay(title=f"{name}, lr {recipe.lr:g}"))
            return displays[-1]

        try:
            result = experiments.compare(options, names, rates, **run, reporter=_reporter(False),
                                      callbacks_for=callbacks_for)
        finally:
            if displays:
                displays[-1].close()
        render_comparison(result)


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
