"""`rmsprop landscape` (registered on the app by cli.py): the optimizers' paths over a test surface."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from . import cli_options as O
from .cli_common import Json, _json, _user_errors
from .optim import NAMES
from .surfaces import REGISTRY, surface_help


def landscape(
    surface: Annotated[str, typer.Option(help=surface_help(), show_default=False)] = "ravine",
    optimizers: Annotated[str, typer.Option(
        help=f"Comma-separated optimizers to run, of: {', '.join(NAMES)}.")] = ",".join(NAMES),
    steps: Annotated[Optional[int], typer.Option(
        help="Updates per path, at most 20000 \\[default: "
             + ", ".join(f"{s.name} {s.steps}" for s in REGISTRY) + "].", show_default=False)] = None,
    lr: Annotated[Optional[list[str]], typer.Option(
        "--lr", metavar="NAME=VALUE", show_default=False,
        help="Learning rate for one optimizer, e.g. --lr rmsprop=0.01; repeat for several \\[default: the "
             "surface's own, shown in the table].")] = None,
    rho: O.Rho = None,
    eps: O.Eps = None,
    eps_placement: O.EpsPlacement = None,
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
    animate: Annotated[bool, typer.Option(
        "--animate", help="Also write an animated GIF of the paths growing, beside the PNG.")] = False,
    output: Annotated[Optional[Path], typer.Option(
        help="Where the figure goes: a .png file or a folder \\[default: runs/<time>-landscape-<surface>/"
             "<surface>.png]; the GIF goes beside it, as <stem>.gif.", show_default=False)] = None,
    json_: Json = False,
):
    """Run each optimizer from the same start over a classic test surface, with the compiled updates that train
    the networks; print where each got to and how many steps it took to come within 1e-3 of the minimum's
    loss, and draw the paths over the surface's contours (needs matplotlib: pip install 'rmsprop-cli\\[plot]').

    An optimizer option (--momentum, --centered, ...) applies to every listed optimizer that takes it.
    """
    with _user_errors():
        from .landscape import landscape as run

        names = [n.strip() for n in optimizers.split(",") if n.strip()]
        options = O.optimizer_options(rho, eps, eps_placement, centered, momentum, nesterov, weight_decay,
                                      decoupled_decay, initial_accumulator, bias_correction, clip_norm, clip_value,
                                      schedule, warmup_steps, decay_steps, decay_rate, beta1, beta2)
        result = run(surface, names, steps=steps, lrs=O.rates(lr), options=options, output=output, animate=animate)
        if json_:
            typer.echo(_json(result))
            return
        from .console import render_landscape

        render_landscape(result)
