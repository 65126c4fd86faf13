"""Compute backends, chosen by --device. Each exposes the same small interface
(`Backend` below) so the training loop never knows which one it drives."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from ..errors import ConfigError

DEVICES = ("cpu",)


class Backend(Protocol):
    name: str

    def warm_up(self) -> None:
        """Compile (or load from cache) every kernel, changing nothing."""

    def train_chunk(self, order: np.ndarray, start: int, n_batches: int) -> tuple[float, int, int, int]:
        """Train on n_batches batches from order[start:]; (loss sum, correct, seen, bad batch or -1)."""

    def evaluate(self, images: np.ndarray, y: np.ndarray) -> tuple[float, int, np.ndarray]:
        """(loss sum, correct, confusion matrix) over uint8 images (N, 28, 28) or (N, 784)."""

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities (N, classes) of uint8 images."""

    def set_state(self, theta: np.ndarray, opt_state: dict[str, np.ndarray]) -> None:
        """Replace parameters and optimizer buffers (flat float32, from the host)."""

    def params(self) -> np.ndarray:
        """The flat float32 parameter vector, on the host."""

    def optimizer_state(self) -> dict[str, np.ndarray]:
        """Optimizer buffers by name, flat float32 on the host."""


def check_device(device: str) -> None:
    """Called before any data is fetched, so a typo costs nothing."""
    if device == "cuda":
        raise ConfigError("--device cuda is not available in this version, which has the CPU backend only; "
                          "use --device cpu")
    if device not in DEVICES:
        raise ConfigError(f"--device must be one of: {', '.join(DEVICES)}; got {device!r}")


def make_backend(device: str, sizes, batch_size, optimizer, theta, opt_state, images=None, y=None,
                 step: int = 0) -> Backend:
    check_device(device)
    if device == "cpu":
        from .cpu import CpuBackend

        return CpuBackend(sizes, batch_size, optimizer, theta, opt_state, images, y, step)
