"""A CUDA training step in two launches, the twins of kernels/steps.py by the
same names:

- batch_rows, one block per row of the batch: the row's pixels through the
  shuffled order, the forward pass of every layer, softmax cross-entropy and
  every layer's delta (dLoss/d pre-activation), from the weights as they are
  before the step.  Back-propagation is row by row, so a block needs no
  other block's work;
- weight_rows, one thread per parameter: its gradient summed over the batch
  in row order, then the optimizer's step (kernels/math.py's scalar update,
  the one the CPU loops inline).  With --clip-norm it stores the gradient
  and its block's sum of squares instead, and update_whole (a third launch:
  no weight may move before the whole gradient's norm is known) scales and
  applies it.

Every sum runs in a fixed order and nothing is added with atomics, so a run
gives the same numbers every time.  The kernels are float32 throughout, with
IEEE division and square root (config.CUDA_JIT); the hyperparameters and each
step's learning rate and bias corrections are float32 in the buffer.  Every
kernel takes the same few arrays: the float buffer and meta of
kernels/cuda_layout.py (and the uint8 images and the batch order).
"""

import math

import numpy as np
from numba import cuda

from ..activations import IDENTITY
from ..config import CUDA_DEVICE, CUDA_JIT
from ..hyper import ACTIVATION, CLIP_NORM, KIND, N_HYPER
from .cuda_layout import (BATCH, CLIP, GRAD, HYPER, LAYERS, M, N_PARAMS, N_PARTIALS, N_ROWS,
                          PARTIALS, ROW_LOSS, SIZES, START, STATS, STEP_A, STEP_B, TABLE, THETA,
                          UPDATE_THREADS, B, V)
from .math import ONE, ZERO, activate, activation_grad, register_cuda, softmax_term, step

register_cuda()   # before any kernel below is compiled: they call math.py's functions

PIXEL_SCALE = np.float32(255.0)
INF = np.float32(math.inf)


@cuda.jit(**CUDA_DEVICE)
def width(meta, l):
    return meta[SIZES + l]


@cuda.jit(**CUDA_DEVICE)
def param_at(meta, l):
    """Offset of layer l's W (n_in, n_out, row-major), followed by its b."""
    return meta[SIZES + meta[LAYERS] + 1 + l]


@cuda.jit(**CUDA_DEVICE)
def act_at(meta, l):
    """Offset of layer l's inputs for the rows of the batch (l = layers: the logits)."""
    return meta[SIZES + 2 * meta[LAYERS] + 1 + l]


@cuda.jit(**CUDA_DEVICE)
def delta_at(meta, l):
    """Offset of dLoss/d(pre-activation) of layer l's outputs, for the rows of the batch."""
    return meta[SIZES + 3 * meta[LAYERS] + 2 + l]


@cuda.jit(**CUDA_DEVICE)
def batch_of(meta, bi):
    """(first position in the order, rows) of step bi of the chunk."""
    lo = meta[START] + bi * meta[BATCH]
    return lo, min(meta[BATCH], meta[N_ROWS] - lo)


@cuda.jit(**CUDA_DEVICE)
def larger(a, b):
    """The larger of a and b, NaN if either is (max may drop a NaN)."""
    return a if a >= b or a != a else b


@cuda.jit(**CUDA_DEVICE)
def block_reduce(values, t, n, biggest):
    """values[0] = the sum (or, with biggest, the largest) of values[:n], n a power of two, in
    the same order in every block; every thread of the block must call it."""
    half = n // 2
    while half > 0:
        cuda.syncthreads()
        if t < half:
            values[t] = larger(values[t], values[t + half]) if biggest else values[t] + values[t + half]
        half //= 2
    cuda.syncthreads()


@cuda.jit(**CUDA_JIT)
def batch_rows(images, order, buf, meta):
    """Block r: row r of the current step's batch, through every layer and back.

    order[0] is the epoch's shuffled order of the images, order[1] the labels
    in that order.  Writes the row's inputs to every layer, its loss and
    whether its argmax is the label, and every layer's delta.  Rows past a
    ragged last batch return at once."""
    stats = cuda.shared.array(3, np.float32)   # row maximum, sum of softmax terms, argmax
    r = cuda.blockIdx.x
    t, nt = cuda.threadIdx.x, cuda.blockDim.x
    bi = meta[STEP_A]
    if r == 0 and t == 0:
        meta[STEP_B] = bi   # for the step's later kernels; no block of this one reads it
    if bi < 0:
        return   # halted: an earlier step's loss was not finite
    lo, m = batch_of(meta, bi)
    if r >= m:
        return
    layers, act, rows = meta[LAYERS], int(buf[meta[HYPER] + ACTIVATION]), meta[BATCH]
    n0 = width(meta, 0)
    x0 = act_at(meta, 0) + r * n0
    src = order[0, lo + r]
    for k in range(t, n0, nt):
        buf[x0 + k] = np.float32(images[src, k]) / PIXEL_SCALE   # the CPU's PIXELS table, bit for bit
    cuda.syncthreads()
    for l in range(layers):
        n_in, n_out = width(meta, l), width(meta, l + 1)
        x, w, out = act_at(meta, l) + r * n_in, param_at(meta, l), act_at(meta, l + 1) + r * n_out
        kind = act if l < layers - 1 else IDENTITY
        for j in range(t, n_out, nt):
            acc = ZERO
            for k in range(n_in):
                acc += buf[x + k] * buf[w + k * n_out + j]
            buf[out + j] = activate(kind, acc + buf[w + n_in * n_out + j])
        cuda.syncthreads()
    c = width(meta, layers)
    z, dz = act_at(meta, layers) + r * c, delta_at(meta, layers - 1) + r * c
    label = order[1, lo + r]
    if t == 0:
        zmax, best = buf[z], 0
        for j in range(1, c):
            if buf[z + j] > zmax:
                zmax, best = buf[z + j], j
        total = ZERO
        for j in range(c):
            total += softmax_term(buf[z + j] - zmax)
        # log-sum-exp minus the label's logit: finite when the label's probability underflows,
        # NaN when the logits are (total is then 0 or NaN), for the host's divergence check.
        loss = np.float32(math.log(total)) - (buf[z + label] - zmax) if total > ZERO else np.float32(math.nan)
        buf[meta[ROW_LOSS] + r] = loss
        stats[0], stats[1], stats[2] = zmax, total, np.float32(best == label)
    cuda.syncthreads()
    scale = ONE / np.float32(m)
    for j in range(t, c, nt):
        # The CPU's order of operations (softmax_xent): e * (scale / total), minus scale at the label.
        d = softmax_term(buf[z + j] - stats[0]) * (scale / stats[1])
        buf[dz + j] = d - scale if j == label else d
    if t == 0:
        buf[meta[ROW_LOSS] + rows + r] = stats[2]
    for l in range(layers - 1, 0, -1):
        n_in, n_out = width(meta, l), width(meta, l + 1)
        a, w = act_at(meta, l) + r * n_in, param_at(meta, l)
        d, below = delta_at(meta, l) + r * n_out, delta_at(meta, l - 1) + r * n_in
        cuda.syncthreads()
        for k in range(t, n_in, nt):
            slope = activation_grad(act, buf[a + k])
            s = ZERO
            if slope != ZERO:
                for j in range(n_out):
                    s += buf[d + j] * buf[w + k * n_out + j]
            buf[below + k] = s * slope


@cuda.jit(**CUDA_DEVICE)
def gradient(buf, meta, i, m):
    """Parameter i's gradient: x[r, k] * delta[r, j] summed over the m rows of the batch for
    W[k, j], delta[r, j] for b[j], in row order, as the CPU's loops sum them (they skip the rows
    where x is zero and fuse each product into its addition: the two agree to rounding)."""
    l = 0
    while l + 1 < meta[LAYERS] and param_at(meta, l + 1) <= meta[THETA] + i:
        l += 1
    n_in, n_out = width(meta, l), width(meta, l + 1)
    local = meta[THETA] + i - param_at(meta, l)
    d = delta_at(meta, l)
    g = ZERO
    if local < n_in * n_out:
        k, j = local // n_out, local % n_out
        x = act_at(meta, l) + k
        for r in range(m):
            g += buf[x + r * n_in] * buf[d + r * n_out + j]
    else:
        j = local - n_in * n_out
        for r in range(m):
            g += buf[d + r * n_out + j]
    return g


@cuda.jit(**CUDA_DEVICE)
def apply_step(buf, meta, i, g, bi):
    """The optimizer's update (math.step) of parameter i with gradient g, at step bi of the chunk's table."""
    h, s = meta[HYPER], meta[TABLE] + 3 * bi
    p = buf[h:h + N_HYPER]
    th, v, m, b = meta[THETA] + i, meta[V] + i, meta[M] + i, meta[B] + i
    buf[th], buf[v], buf[m], buf[b] = step(int(p[KIND]), buf[th], g, buf[v], buf[m], buf[b], p, buf[s], buf[s + 1],
                                           buf[s + 2])


@cuda.jit(**CUDA_DEVICE)
def batch_finite(buf, meta, m, t):
    """Whether every row's loss is finite, which is when the CPU's float64 batch loss is: a step
    whose loss is not finite is not applied, and no step after it runs (as on the CPU).  The
    block's threads share the rows; every thread of the block must call it."""
    bad = 0
    for r in range(t, m, UPDATE_THREADS):
        if not abs(buf[meta[ROW_LOSS] + r]) < INF:
            bad = 1
    return cuda.syncthreads_or(bad) == 0


@cuda.jit(**CUDA_DEVICE)
def step_done(buf, meta, bi, m, finite):
    """The batch's mean loss and correct count, in row order, into the chunk's results (the mean
    of finite losses cannot overflow, where their float32 sum could: the host multiplies by m in
    float64), correct -1 for a loss that is not finite; then the next step's counter, or for that
    loss -1: the chunk's later steps return at once."""
    loss, correct = ZERO, ZERO
    share = ONE / np.float32(m)
    for r in range(m):
        loss += buf[meta[ROW_LOSS] + r] * share
        correct += buf[meta[ROW_LOSS] + meta[BATCH] + r]
    buf[meta[STATS] + 2 * bi] = loss if finite else np.float32(math.nan)
    buf[meta[STATS] + 2 * bi + 1] = correct if finite else -ONE
    meta[STEP_A] = bi + 1 if finite else -1


@cuda.jit(**CUDA_JIT)
def weight_rows(buf, meta):
    """Thread i: parameter i's gradient, then its optimizer step.  Clipping by the global norm,
    the gradient instead, and this block's largest |g| and sum of (g / largest)², for update_whole:
    scaled, the squares of a gradient as large as 1e20 do not overflow float32."""
    scratch = cuda.shared.array(UPDATE_THREADS, np.float32)
    i, t = cuda.grid(1), cuda.threadIdx.x
    bi = meta[STEP_B]
    if bi < 0:
        return
    lo, m = batch_of(meta, bi)
    g = gradient(buf, meta, i, m) if i < meta[N_PARAMS] else ZERO
    if meta[CLIP] == 0:
        finite = batch_finite(buf, meta, m, t)
        if i < meta[N_PARAMS] and finite:
            apply_step(buf, meta, i, g, bi)
        if i == 0:
            step_done(buf, meta, bi, m, finite)
        return
    if i < meta[N_PARAMS]:
        buf[meta[GRAD] + i] = g
    scratch[t] = abs(g)
    block_reduce(scratch, t, UPDATE_THREADS, True)
    top = scratch[0]
    cuda.syncthreads()
    scratch[t] = (g / top) * (g / top) if top > ZERO else ZERO
    block_reduce(scratch, t, UPDATE_THREADS, False)
    if t == 0:
        q = meta[PARTIALS] + 2 * cuda.blockIdx.x
        buf[q], buf[q + 1] = top, scratch[0]


@cuda.jit(**CUDA_JIT)
def update_whole(buf, meta):
    """With --clip-norm: the whole gradient's norm (from the blocks' partial sums, combined in
    the same order by every block), the gradient scaled to at most max_norm, then the optimizer's
    step (updates.update_whole on the CPU)."""
    scratch = cuda.shared.array(UPDATE_THREADS, np.float32)
    i, t = cuda.grid(1), cuda.threadIdx.x
    bi = meta[STEP_B]
    if bi < 0:
        return
    lo, m = batch_of(meta, bi)
    parts, q0 = meta[N_PARTIALS], meta[PARTIALS]
    top = ZERO
    for q in range(t, parts, UPDATE_THREADS):
        top = larger(top, buf[q0 + 2 * q])
    scratch[t] = top
    block_reduce(scratch, t, UPDATE_THREADS, True)
    top = scratch[0]
    cuda.syncthreads()
    s = ZERO
    if top > ZERO:
        for q in range(t, parts, UPDATE_THREADS):
            ratio = buf[q0 + 2 * q] / top
            s += buf[q0 + 2 * q + 1] * (ratio * ratio)
    scratch[t] = s
    block_reduce(scratch, t, UPDATE_THREADS, False)
    finite = batch_finite(buf, meta, m, t)
    if i < meta[N_PARAMS] and finite:
        # norm = top * r, NaN when the gradient holds a NaN (top is NaN and r is 0: no clipping,
        # as on the CPU); an infinite gradient leaves 0 where it was finite and NaN where not.
        r = math.sqrt(scratch[0])
        max_norm = buf[meta[HYPER] + CLIP_NORM]
        g = buf[meta[GRAD] + i]
        if top == INF:
            g *= ZERO
        elif top * r > max_norm:
            norm = top * r
            # A norm past float32's largest value (every element finite) is scaled in two parts.
            g = g * (max_norm / norm) if norm < INF else (g / top) * (max_norm / r)
        apply_step(buf, meta, i, g, bi)
    if i == 0:
        step_done(buf, meta, bi, m, finite)
