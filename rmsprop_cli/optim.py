"""Optimizers as data: every option of RMSProp the big frameworks offer, and
its rivals, as one vector of hyperparameters that a single fused kernel reads.

The kernels (`optimizer_update` in each backend) branch on these values; there
is no copy of the training loop per optimizer.  Which state buffers a choice
needs is also decided here, so checkpoints hold exactly those.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import Recipe

OPTIMIZERS = ("rmsprop", "sgd", "momentum", "adagrad", "adam")
SCHEDULES = ("constant", "step", "exponential", "cosine")
# The usual default learning rates (Keras'), used by `rmsprop compare`.
DEFAULT_LR = {"rmsprop": 0.001, "sgd": 0.01, "momentum": 0.01, "adagrad": 0.001, "adam": 0.001}

# Positions in the hyperparameter vector; read by the kernels at run time.
(KIND, LR, RHO, EPS, EPS_OUTSIDE, CENTERED, MOMENTUM, NESTEROV, WEIGHT_DECAY, DECOUPLED, BIAS_CORRECTION,
 CLIP_NORM, CLIP_VALUE, BETA1, BETA2, SCHEDULE, WARMUP, DECAY_STEPS, DECAY_RATE, TOTAL_STEPS) = range(20)
N_HYPER = 20
RMSPROP, SGD, MOMENTUM_SGD, ADAGRAD, ADAM = range(5)


@dataclass(frozen=True)
class Optimizer:
    recipe: Recipe
    steps_per_epoch: int

    @property
    def kind(self) -> str:
        return self.recipe.optimizer

    @property
    def momentum(self) -> float:
        """The momentum optimizer is SGD with momentum 0.9 unless --momentum says otherwise."""
        r = self.recipe
        if r.optimizer == "momentum" and r.momentum == 0:
            return 0.9
        return r.momentum

    @property
    def state_names(self) -> tuple[str, ...]:
        """v: squared-gradient average or sum; m: mean gradient; b: momentum buffer."""
        r, names = self.recipe, []
        if r.optimizer in ("rmsprop", "adagrad", "adam"):
            names.append("v")
        if r.optimizer == "adam" or (r.optimizer == "rmsprop" and r.centered):
            names.append("m")
        if r.optimizer != "adam" and self.momentum > 0:
            names.append("b")
        return tuple(names)

    def init(self, n_params: int) -> dict[str, np.ndarray]:
        r = self.recipe
        first_v = r.initial_accumulator if r.initial_accumulator is not None else (
            0.1 if r.optimizer == "adagrad" else 0.0)  # Keras' Adagrad starts its sum at 0.1
        return {name: np.full(n_params, first_v if name == "v" else 0.0, dtype=np.float32)
                for name in self.state_names}

    def hyperparameters(self) -> np.ndarray:
        r = self.recipe
        h = np.zeros(N_HYPER)
        h[KIND] = OPTIMIZERS.index(r.optimizer)
        h[LR], h[RHO], h[EPS] = r.lr, r.rho, r.eps
        h[EPS_OUTSIDE] = r.eps_placement == "outside"
        h[CENTERED], h[MOMENTUM], h[NESTEROV] = r.centered, self.momentum, r.nesterov
        h[WEIGHT_DECAY], h[DECOUPLED], h[BIAS_CORRECTION] = r.weight_decay, r.decoupled_decay, r.bias_correction
        h[CLIP_NORM], h[CLIP_VALUE] = r.clip_norm or 0.0, r.clip_value or 0.0
        h[BETA1], h[BETA2] = r.beta1, r.beta2
        h[SCHEDULE], h[WARMUP] = SCHEDULES.index(r.schedule), r.warmup_steps
        h[DECAY_STEPS] = r.decay_steps or self.steps_per_epoch
        h[DECAY_RATE] = r.decay_rate
        h[TOTAL_STEPS] = r.epochs * self.steps_per_epoch
        return h

    def is_plain_rmsprop(self) -> bool:
        """The recipe's update is exactly v <- rho v + (1-rho) g^2, theta -= lr g / denominator."""
        r = self.recipe
        return (r.optimizer == "rmsprop" and not r.centered and self.momentum == 0 and r.weight_decay == 0
                and not r.bias_correction and not r.clip_value and r.schedule == "constant" and r.warmup_steps == 0)
