"""The test surfaces of `rmsprop landscape`, each once, as data: its formula (for
help and figures), standard starting point, known minimum, plotted window and
default learning rates.  Its value and analytic gradient are compiled in
kernels/surfaces.py, under the kind (position here) given below.

Pure Python, like optim.py: nothing here imports numba.

Default learning rates: SGD (plain and with momentum 0.9) near the largest
step that stays stable where the surface is steepest along the path, since a
larger one diverges and a smaller one only crawls; the four adaptive
optimizers (adagrad, rmsprop, adam, lion) one shared η per surface, since
each divides the gradient by a measure of its own size, so that its steps are
set by η and not by the gradient's scale (Adam's and Lion's first step is η
per coordinate, RMSProp's η/√(1 − ρ), Adagrad's at most η): how their steps
evolve from there is the difference the figure shows.
"""

from __future__ import annotations

from dataclasses import dataclass

TOLERANCE = 1e-3   # "reached": the loss within this of the minimum's


@dataclass(frozen=True)
class Surface:
    """start: the standard starting point; minimum: a point of least value
    (min_loss); xlim, ylim: the window drawn; log_levels: contour levels spaced
    by factors (for surfaces whose values span decades); steps: default path
    length; lrs: the default learning rate of every optimizer."""

    name: str
    summary: str
    formula: str
    start: tuple[float, float]
    minimum: tuple[float, float]
    min_loss: float
    xlim: tuple[float, float]
    ylim: tuple[float, float]
    steps: int
    lrs: dict
    log_levels: bool = False

    @property
    def kind(self) -> int:
        return NAMES.index(self.name)


def _adaptive(sgd: float, momentum: float, eta: float) -> dict:
    return {"sgd": sgd, "momentum": momentum, "adagrad": eta, "rmsprop": eta, "adam": eta, "lion": eta}


REGISTRY = (
    Surface("ravine", "a narrow valley, 100 times more curved across (y) than along (x): RMSProp's textbook case",
            "(x² + 100·y²)/20", (-2.0, 1.0), (0.0, 0.0), 0.0, (-2.4, 0.6), (-1.2, 1.2), 300,
            # SGD diverges above 2/10 = 0.2 (the curvature across is 10); 0.18 zigzags across the valley
            # and moves along it by 1.8% of the distance per step.
            _adaptive(0.18, 0.02, 0.02)),
    Surface("rosenbrock", "Rosenbrock's banana: a curved valley whose floor falls slowly to (1, 1)",
            "(1 − x)² + 100·(y − x²)²", (-1.2, 1.0), (1.0, 1.0), 0.0, (-2.0, 2.0), (-1.0, 3.0), 1000,
            # the curvature at the start is about 1330: SGD diverges above about 0.0015.
            _adaptive(0.001, 0.001, 0.005), log_levels=True),
    Surface("beale", "Beale's function: flat plateaus and steep walls around a minimum at (3, 0.5)",
            "(1.5 − x + xy)² + (2.25 − x + xy²)² + (2.625 − x + xy³)²", (1.0, 1.5), (3.0, 0.5), 0.0,
            (-4.5, 4.5), (-4.5, 4.5), 1000, _adaptive(0.01, 0.002, 0.01), log_levels=True),
    Surface("saddle", "a saddle point at (0, 0) between two minima at (0, ±1): a start beside it barely moves "
                      "at first, the gradient across being almost 0",
            "x² + y⁴/4 − y²/2", (-1.5, 1e-4), (0.0, 1.0), -0.25, (-1.75, 1.75), (-1.6, 1.6), 300,
            _adaptive(0.1, 0.02, 0.02)),
)
NAMES = tuple(s.name for s in REGISTRY)
SURFACES = {s.name: s for s in REGISTRY}
RAVINE, ROSENBROCK, BEALE, SADDLE = (SURFACES[n].kind for n in NAMES)


def surface_help() -> str:
    return "; ".join(f"{s.name}: {s.formula}, {s.summary}" for s in REGISTRY) + " \\[default: ravine]."
