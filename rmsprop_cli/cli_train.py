"""The commands with a recipe's options: `rmsprop train` and `rmsprop compare`
(registered on the app by cli.py, in the order of `rmsprop --help`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .activations import activation_help
from . import cli_options as O
from .cli_common import (DataDir, Device, Json, Limit, Mirror, Threads, _device, _json, _reporter,
                         _user_errors)
from .optim import DEFAULT_LR, NAMES, optimizer_help


def train(
    epochs: Annotated[Optional[int], typer.Option(
        help="Passes over the training set, counting those of a resumed run \\[default: 10].", show_default=False)] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Images per mini-batch \\[default: 32].", show_default=False)] = None,
    lr: Annotated[Optional[float], typer.Option(help=O.LR_HELP, show_default=False)] = None,
    rho: O.Rho = None,
    eps: O.Eps = None,
    eps_placement: O.EpsPlacement = None,
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
    centered: O.Centered = False,
    momentum: O.Momentum = None,
    nesterov: O.Nesterov = False,
    weight_decay: O.WeightDecay = None,
    decoupled_decay: O.DecoupledDecay = False,
    initial_accumulator: O.InitialAccumulator = None,
    bias_correction: O.BiasCorrection = False,
    clip_norm: O.ClipNorm = None,
    clip_value: O.ClipValue = None,
    schedule: O.Schedule = None,
    warmup_steps: O.WarmupSteps = None,
    decay_steps: O.DecaySteps = None,
    decay_rate: O.DecayRate = None,
    beta1: O.Beta1 = None,
    beta2: O.Beta2 = None,
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
        from . import api, training

        options = dict(epochs=epochs, batch_size=batch_size, lr=lr, hidden=hidden, activation=activation,
                       val_split=val_split, seed=seed, limit=limit, optimizer=optimizer,
                       **O.optimizer_options(rho, eps, eps_placement, centered, momentum, nesterov, weight_decay,
                                             decoupled_decay, initial_accumulator, bias_correction, clip_norm,
                                             clip_value, schedule, warmup_steps, decay_steps, decay_rate, beta1,
                                             beta2))
        # SIGINT, SIGTERM and SIGHUP are the run's until its last line is printed (see StopSignals); one that
        # comes after the final save interrupts nothing, and the command says so and exits 0.  When this
        # process is the console script, they stay ignored until it has exited.
        import sys

        from .cli import main

        with training.StopSignals(then_ignore=getattr(sys.modules.get("__main__"), "main", None) is main) as signals:
            run = dict(device=_device(device, json_), data_dir=data_dir, mirror=mirror, output=output,
                       resume=resume, checkpoint_every=checkpoint_every, early_stopping=early_stopping, stop=signals,
                       threads=threads, **options)
            if json_:
                typer.echo(_json(api.train(**run)))
            else:
                from .console import TrainDisplay, render_train_result

                display = TrainDisplay()
                try:
                    result = api.train(**run, reporter=_reporter(False), callbacks=display)
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
        from . import api

        run = dict(optimizers=optimizers, lr=O.rates(lr), epochs=epochs, batch_size=batch_size, hidden=hidden,
                   val_split=val_split, seed=seed, limit=limit, device=_device(device, json_), data_dir=data_dir,
                   mirror=mirror, output=output, threads=threads)
        if json_:
            typer.echo(_json(api.compare(**run)))
            return
        from .console import TrainDisplay, render_comparison

        displays = []

        def callbacks_for(name, recipe):
            if displays:
                displays[-1].close()
            displays.append(TrainDisplay(title=f"{name}, lr {recipe.lr:g}"))
            return displays[-1]

        try:
            result = api.compare(**run, reporter=_reporter(False), callbacks_for=callbacks_for)
        finally:
            if displays:
                displays[-1].close()
        render_comparison(result)
