"""The multilayer perceptron's shapes, parameter layout and initialisation.

All parameters live in one flat float32 vector, layer by layer (W then b), so
the optimizer and checkpoint see one array; each layer's W (n_in, n_out) and
b (n_out,) are views into it.
"""

from __future__ import annotations

import numpy as np


def param_names(sizes: tuple[int, ...]) -> list[str]:
    names = []
    for l in range(len(sizes) - 1):
        names += [f"dense_{l}.weight", f"dense_{l}.bias"]
    return names


def param_shapes(sizes: tuple[int, ...]) -> list[tuple[int, ...]]:
    shapes = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        shapes += [(n_in, n_out), (n_out,)]
    return shapes


def n_params(sizes: tuple[int, ...]) -> int:
    return sum(int(np.prod(s)) for s in param_shapes(sizes))


def views(flat: np.ndarray, sizes: tuple[int, ...]) -> list[np.ndarray]:
    """Per-tensor views (W0, b0, W1, b1, ...) into a flat parameter-sized array."""
    out, offset = [], 0
    for shape in param_shapes(sizes):
        size = int(np.prod(shape))
        out.append(flat[offset:offset + size].reshape(shape))
        offset += size
    return out


def glorot_init(sizes: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Glorot-uniform weights, U(-a, a) with a = sqrt(6 / (n_in + n_out)), zero biases."""
    theta = np.zeros(n_params(sizes), dtype=np.float32)
    tensors = views(theta, sizes)
    for w in tensors[0::2]:
        limit = np.sqrt(6.0 / (w.shape[0] + w.shape[1]))
        w[...] = rng.uniform(-limit, limit, size=w.shape)
    return theta
