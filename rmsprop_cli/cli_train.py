"""The commands with a recipe's options: `rmsprop train` and `rmsprop compare`
(registered on the app by cli.py, in the order of `rmsprop --help`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .activations import activation_help
from .cli_common import (DataDir, Device, Json, Limit, Mirror, Threads, _device, _json, _pin_threads, _reporter,
                         _user_errors)
from .hyper import SCHEDULES
from .optim import DEFAULT_LR, NAMES, help_for, optimizer_help

_LR_HELP = ("Learning rate η (the first update's, with a schedule) \\[default: "
            + ", ".join(f"{name} {rate:g}" for name, rate in DEFAULT_LR.items()) + "].")
_SCHEDULE_HELP = ("Learning rate over the updates n = 0, 1, ... after any warm-up, as Keras and Optax define "
                  "them: " + "; ".join(f"{name}: {formula}" for name, formula in SCHEDULES.items())
                  + " \\[default: constant].")


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

        from .cli import main

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
