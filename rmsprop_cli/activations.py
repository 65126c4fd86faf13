"""The activation registry: the hidden layers' nonlinearity, each written once.

Its forward formula and its derivative, side by side, are the scalar
functions `activate` and `activation_grad` of kernels/math.py, compiled for
the CPU and for CUDA; the derivative is expressed through the activation's
output a, which is what the backward pass has.  ReLU is the default; its
outputs are half zeros, and the CPU kernels skip those (its specialisation).
Kind 0 is no activation at all: the last layer's logits.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Activation:
    name: str
    kind: int
    formula: str
    derivative: str


IDENTITY = 0
_ALL = (
    Activation("relu", 1, "max(z, 0)", "1 where a > 0, else 0"),
    Activation("tanh", 2, "tanh(z)", "1 − a²"),
    Activation("sigmoid", 3, "1/(1 + e^−z)", "a·(1 − a)"),
)
ACTIVATIONS = {a.name: a for a in _ALL}
RELU, TANH, SIGMOID = (ACTIVATIONS[name].kind for name in ACTIVATIONS)


def activation_help() -> str:
    return ("Hidden layers' activation: " + "; ".join(f"{a.name} {a.formula}" for a in _ALL)
            + " \\[default: relu].")
