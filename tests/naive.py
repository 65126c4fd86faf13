"""Plain numpy references, float64, one line of maths each: what the CPU kernels
(tests/test_kernels.py) and their CUDA twins (tests/cuda/) are compared with."""

import numpy as np

from rmsprop_cli import model


ACTIVATIONS = {  # (forward of z, derivative from the output a)
    None: (lambda z: z, lambda a: np.ones_like(a)),
    "relu": (lambda z: np.maximum(z, 0), lambda a: (a > 0).astype(np.float64)),
    "tanh": (np.tanh, lambda a: 1 - a * a),
    "sigmoid": (lambda z: 1 / (1 + np.exp(-z)), lambda a: a * (1 - a)),
}


def _act(act):
    """An activation name; True and False stand for relu and none."""
    return {True: "relu", False: None}.get(act, act) if isinstance(act, bool) else act


def naive_dense_forward(x, w, b, act):
    z = x.astype(np.float64) @ w + b
    return ACTIVATIONS[_act(act)][0](z)


def naive_dense_backward(x, w, delta, act="relu"):
    """Gradients of a dense layer whose input x is the output of activation act."""
    x, delta = x.astype(np.float64), delta.astype(np.float64)
    return x.T @ delta, delta.sum(0), (delta @ w.T) * ACTIVATIONS[_act(act)][1](x)


def naive_softmax_xent(z, y):
    z = z.astype(np.float64)
    logp = z - z.max(1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(1, keepdims=True))
    n = len(y)
    delta = np.exp(logp)
    delta[np.arange(n), y] -= 1
    return -logp[np.arange(n), y].sum(), int((z.argmax(1) == y).sum()), delta / n


def naive_rmsprop(theta, g, v, lr, rho, eps, outside):
    v = rho * v + (1 - rho) * g * g
    denom = np.sqrt(v) + eps if outside else np.sqrt(v + eps)
    return theta - lr * g / denom, v


def naive_mlp_loss(theta, sizes, X, y, act="relu"):
    """Mean cross-entropy of the MLP, float64 throughout."""
    tensors = model.views(theta, sizes)
    h = X.astype(np.float64)
    for l in range(len(sizes) - 1):
        h = naive_dense_forward(h, tensors[2 * l], tensors[2 * l + 1], act if l < len(sizes) - 2 else None)
    return naive_softmax_xent(h, y)[0] / len(y)


def sparse_inputs(rng, n, d, zero_fraction=0.6):
    """Like MNIST pixels: in [0, 1], most exactly zero (the kernels skip zeros)."""
    x = rng.random((n, d)).astype(np.float32)
    x[rng.random((n, d)) < zero_fraction] = 0
    return x


def sparse_images(rng, n, d, zero_fraction=0.6):
    """uint8 pixels, mostly zero, and the [0, 1] floats they stand for."""
    images = rng.integers(1, 256, (n, d)).astype(np.uint8)
    images[rng.random((n, d)) < zero_fraction] = 0
    return images, images.astype(np.float32) / np.float32(255)
