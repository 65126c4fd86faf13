"""Numba CPU loops of the optimizer step over arrays: the scalar updates of
kernels/math.py (which the CUDA kernels share) applied to matching
parameter, gradient and state arrays, and clipping by the global norm.

The hyperparameters arrive as p, a float32 tuple (hyper.py), so that a
loop's options are plain values LLVM can hoist its branches on.
"""

import numpy as np
from numba import njit
from numba.cpython.unsafe.tuple import tuple_setitem

from ..config import JIT, JIT_INLINE
from ..hyper import CENTERED, CLIP_NORM, CLIP_VALUE, KIND, MOMENTUM, WEIGHT_DECAY
from ..optim import ADAGRAD, ADAM, LION, RMSPROP
from .math import ONE, ZERO, adagrad, adam, bias_corrections, learning_rate_at, lion, rmsprop, sgd


@njit(**JIT_INLINE)
def optimizer_update(theta, grad, v, m, b, p, lr, bc1, bc2):
    """One step of the optimizer p describes over matching parameter, gradient
    and state arrays (v, m, b: see math.py).  lr is this step's learning rate,
    bc1 and bc2 its bias corrections (math.learning_rate_at, bias_corrections).

    math.step's choice, made here inside the loop: LLVM inlines each small
    update and moves the loop-invariant choice (and the options' branches) out
    of the loop, one vectorised loop per case; math.step as one call per
    element was too large to inline, and 10x slower.  Each case stores only
    the buffers its optimizer keeps (optim.py): a store of an unchanged value
    still costs its memory traffic."""
    kind = int(p[KIND])
    for i in range(theta.size):
        if kind == RMSPROP:
            theta[i], v[i], m[i], b[i] = rmsprop(theta[i], grad[i], v[i], m[i], b[i], p, lr, bc1, bc2)
        elif kind == ADAM:
            theta[i], v[i], m[i], _ = adam(theta[i], grad[i], v[i], m[i], ZERO, p, lr, bc1, bc2)
        elif kind == ADAGRAD:
            theta[i], v[i], _, b[i] = adagrad(theta[i], grad[i], v[i], ZERO, b[i], p, lr, bc1, bc2)
        elif kind == LION:
            theta[i], _, m[i], _ = lion(theta[i], grad[i], ZERO, m[i], ZERO, p, lr, bc1, bc2)
        else:  # SGD, with or without momentum
            theta[i], _, _, b[i] = sgd(theta[i], grad[i], ZERO, ZERO, b[i], p, lr, bc1, bc2)


@njit(**JIT)
def plain(p):
    """p with the options plain RMSProp lacks (optim.Optimizer.is_plain_rmsprop) as
    constant zeros, so that the compiler drops their code from the update."""
    for index in (CENTERED, MOMENTUM, WEIGHT_DECAY):
        p = tuple_setitem(p, index, ZERO)
    return p


@njit(**JIT_INLINE)
def rmsprop_update(theta, grad, v, p, lr, bc2):
    """optimizer_update for plain RMSProp, which keeps only v: the same scalar
    update, with m and b and the options it lacks left out of the loop."""
    q = plain(p)
    for i in range(theta.size):
        theta[i], v[i], _, _ = rmsprop(theta[i], grad[i], v[i], ZERO, ZERO, q, lr, ONE, bc2)


@njit(**JIT_INLINE)
def rmsprop_decay(v, p):
    """rmsprop_update where every gradient is 0: the same update, of which only
    v ← ρ·v (flushed) is left, since θ does not move."""
    q = tuple_setitem(plain(p), CLIP_VALUE, ZERO)
    for i in range(v.size):
        _, v[i], _, _ = rmsprop(ZERO, ZERO, v[i], ZERO, ZERO, q, ONE, ONE, ONE)


@njit(**JIT)
def clip_global_norm(grad, max_norm):
    """Scale the whole gradient so that its L2 norm is at most max_norm."""
    total = 0.0
    for i in range(grad.size):
        total += np.float64(grad[i]) * grad[i]
    norm = np.sqrt(total)
    if norm > max_norm:
        scale = np.float32(max_norm / norm)
        for i in range(grad.size):
            grad[i] *= scale


@njit(**JIT)
def update_whole(theta, grad, v, m, b, p, hp, count):
    """The update made after `count` updates, from the whole gradient at once:
    its learning rate and bias corrections, clipping by the global norm, then
    optimizer_update.  A training step that clips by the norm ends with this
    (steps.train_chunk); every step of a path on a test surface is this
    (kernels/surfaces.py).  hp is hyper.vector (float64), p the same as float32."""
    lr = np.float32(learning_rate_at(hp, count))
    bc1, bc2 = bias_corrections(hp, count + 1)
    if hp[CLIP_NORM] > 0:
        clip_global_norm(grad, np.float32(hp[CLIP_NORM]))
    optimizer_update(theta, grad, v, m, b, p, lr, bc1, bc2)
