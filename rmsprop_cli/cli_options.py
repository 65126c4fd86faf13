"""The optimizer options `rmsprop train` and `rmsprop landscape` share, each once:
its type, help text (from the registries) and panel.  A flag that is not given
is None for the library, as every other option that is not given."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from .hyper import SCHEDULES
from .optim import DEFAULT_LR, help_for

PANEL = "Optimizer"
LR_HELP = ("Learning rate η (the first update's, with a schedule) \\[default: "
           + ", ".join(f"{name} {rate:g}" for name, rate in DEFAULT_LR.items()) + "].")
SCHEDULE_HELP = ("Learning rate over the updates n = 0, 1, ... after any warm-up, as Keras and Optax define "
                 "them: " + "; ".join(f"{name}: {formula}" for name, formula in SCHEDULES.items())
                 + " \\[default: constant].")


def _number(kind, text: str):
    return Annotated[Optional[kind], typer.Option(help=text, show_default=False, rich_help_panel=PANEL)]


def _flag(name: str, text: str):
    return Annotated[bool, typer.Option(f"--{name}", help=text, rich_help_panel=PANEL)]


Rho = _number(float, help_for("rho"))
Eps = _number(float, help_for("eps"))
EpsPlacement = _number(str, help_for("eps_placement"))
Centered = _flag("centered", help_for("centered"))
Momentum = _number(float, help_for("momentum"))
Nesterov = _flag("nesterov", help_for("nesterov"))
WeightDecay = _number(float, "λ: L2 penalty added to the gradient, g + λ·θ (PyTorch) \\[default: 0].")
DecoupledDecay = _flag("decoupled-decay", "Apply weight decay on its own, θ ← θ − η·λ·θ (Keras, AdamW), not through "
                                          "the gradient (Lion's always is).")
InitialAccumulator = _number(float, help_for("initial_accumulator"))
BiasCorrection = _flag("bias-correction", help_for("bias_correction"))
ClipNorm = _number(float, "Scale the whole gradient down to this global L2 norm.")
ClipValue = _number(float, "Clip every gradient value to [−c, c].")
Schedule = _number(str, SCHEDULE_HELP)
WarmupSteps = _number(int, "Raise the learning rate linearly from 0 over this many steps first \\[default: 0].")
DecaySteps = _number(int, "Updates per decay of the step and exponential schedules \\[default: one epoch; "
                          "landscape: a tenth of --steps].")
DecayRate = _number(float, "Factor per decay steps of the step and exponential schedules \\[default: 0.5].")
Beta1 = _number(float, help_for("beta1"))
Beta2 = _number(float, help_for("beta2"))


def optimizer_options(rho, eps, eps_placement, centered, momentum, nesterov, weight_decay, decoupled_decay,
                      initial_accumulator, bias_correction, clip_norm, clip_value, schedule, warmup_steps,
                      decay_steps, decay_rate, beta1, beta2) -> dict:
    """The options as the library takes them (recipe field names; None: not given)."""
    return dict(rho=rho, eps=eps, eps_placement=eps_placement, centered=centered or None, momentum=momentum,
                nesterov=nesterov or None, weight_decay=weight_decay, decoupled_decay=decoupled_decay or None,
                initial_accumulator=initial_accumulator, bias_correction=bias_correction or None,
                clip_norm=clip_norm, clip_value=clip_value, schedule=schedule, warmup_steps=warmup_steps,
                decay_steps=decay_steps, decay_rate=decay_rate, beta1=beta1, beta2=beta2)


def rates(items: list[str] | None) -> dict[str, float]:
    """--lr NAME=VALUE, repeated: {name: rate}."""
    from .errors import ConfigError

    out = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise ConfigError(f"--lr takes NAME=VALUE, such as --lr sgd=0.1; got {item!r}") from None
        if not sep:
            raise ConfigError(f"--lr takes NAME=VALUE, such as --lr sgd=0.1; got {item!r}")
    return out
