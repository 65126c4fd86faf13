"""The test surfaces of `rmsprop landscape` (surfaces.py names them) and the
compiled path of an optimizer over one: the same update a network's training
step makes (updates.update_whole, from the optimizer's scalar function in
math.py), applied to two parameters whose gradient is the surface's.

Values and gradients are computed in float64 from the float32 point, then the
gradient is rounded to float32 as a network's is: the path's arithmetic is the
training kernels' own.
"""

import numpy as np
from numba import njit
from numba.np.unsafe.ndarray import to_fixed_tuple

from ..config import JIT
from ..hyper import N_HYPER
from ..surfaces import BEALE, RAVINE, ROSENBROCK
from .updates import update_whole


@njit(**JIT)
def value(kind, x, y):
    """The surface's value at (x, y)."""
    if kind == RAVINE:
        return (x * x + 100.0 * y * y) / 20.0
    if kind == ROSENBROCK:
        return (1.0 - x) ** 2 + 100.0 * (y - x * x) ** 2
    if kind == BEALE:
        return (1.5 - x + x * y) ** 2 + (2.25 - x + x * y * y) ** 2 + (2.625 - x + x * y ** 3) ** 2
    return x * x + y ** 4 / 4.0 - y * y / 2.0   # SADDLE


@njit(**JIT)
def gradient(kind, x, y):
    """(∂f/∂x, ∂f/∂y) at (x, y), analytic."""
    if kind == RAVINE:
        return x / 10.0, 10.0 * y
    if kind == ROSENBROCK:
        r = y - x * x
        return -2.0 * (1.0 - x) - 400.0 * x * r, 200.0 * r
    if kind == BEALE:
        t1, t2, t3 = 1.5 - x + x * y, 2.25 - x + x * y * y, 2.625 - x + x * y ** 3
        return (2.0 * (t1 * (y - 1.0) + t2 * (y * y - 1.0) + t3 * (y ** 3 - 1.0)),
                2.0 * x * (t1 + 2.0 * y * t2 + 3.0 * y * y * t3))
    return 2.0 * x, y ** 3 - y   # SADDLE


@njit(**JIT)
def grid(kind, xs, ys, out):
    """out[i, j] = the value at (xs[j], ys[i]): the contour plot's grid."""
    for i in range(ys.size):
        for j in range(xs.size):
            out[i, j] = value(kind, xs[j], ys[i])


@njit(**JIT)
def descend(kind, theta, v, m, b, hp, path, losses):
    """path.shape[0] − 1 updates of the optimizer hp describes (hyper.vector),
    from theta (two float32 parameters; v, m, b its state, as a network's
    optimizer keeps them): path[t] the point after t updates, losses[t] its
    value.  Stops at the first point whose value is not finite or exceeds
    1e30 (diverged) and returns the number of updates made."""
    p = to_fixed_tuple(hp.astype(np.float32), N_HYPER)
    grad = np.empty(2, np.float32)
    steps = path.shape[0] - 1
    for t in range(steps + 1):
        x, y = np.float64(theta[0]), np.float64(theta[1])
        f = value(kind, x, y)
        path[t, 0], path[t, 1], losses[t] = theta[0], theta[1], f
        if not abs(f) < 1e30:   # NaN fails it too
            return t
        if t == steps:
            break
        gx, gy = gradient(kind, x, y)
        grad[0], grad[1] = np.float32(gx), np.float32(gy)
        update_whole(theta, grad, v, m, b, p, hp, t)
    return steps
