"""RMSProp as data: its hyperparameters and the state it keeps per parameter.

The update itself is the fused kernel `rmsprop_update` in each backend; this
module only says what it needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import Recipe


@dataclass(frozen=True)
class RMSProp:
    lr: float
    rho: float
    eps: float
    eps_outside: bool

    state_names = ("v",)

    @classmethod
    def from_recipe(cls, recipe: Recipe) -> "RMSProp":
        return cls(recipe.lr, recipe.rho, recipe.eps, recipe.eps_placement == "outside")

    def init(self, n_params: int) -> dict[str, np.ndarray]:
        """v, the running average of squared gradients, starts at zero (Keras, PyTorch)."""
        return {"v": np.zeros(n_params, dtype=np.float32)}

    def kernel_args(self) -> tuple:
        # float32 scalars: a Python float would make the kernel's loop float64.
        return (np.float32(self.lr), np.float32(self.rho), np.float32(self.eps), self.eps_outside)
