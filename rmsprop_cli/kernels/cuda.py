"""Numba CUDA kernels: the twins of kernels/cpu.py, by the same names where
they compute the same thing (dense_forward, dense_backward_update,
optimizer_update, evaluate_rows, predict_proba).  The optimizers' updates,
the activations and the softmax term are the scalar functions of
kernels/math.py, the very ones the CPU loops inline.

Layout as on the CPU: activations are (rows, features) row-major; parameters
and optimizer state are flat vectors, layer by layer, W (n_in, n_out)
row-major then b, and a kernel finds its layer at offset `off`.  A batch's
input rows are x[rows[lo + r]] (the shuffled order for images, the identity
for a hidden layer's activations); its labels are labels[ylo + r].

Threads come in TILE x TILE blocks; threadIdx.x runs along the contiguous axis
(the output column j, or the input k), so neighbouring threads read
neighbouring addresses and global loads coalesce.  Products stage TILE x TILE
tiles of both operands through shared memory, so a value read from global
memory serves TILE multiply-adds.

A training step is two launches per layer, six for 784-128-64-10:
- dense_forward, one per layer;
- dense_backward_update, one per layer, last first: the weight and bias
  gradients, the optimizer step, and dLoss/dx from the weights as they were
  before the step, in one partial sum per column of blocks (no atomics, so a
  run is reproducible bit for bit).  The last layer's computes softmax
  cross-entropy and its gradient from the logits itself (no launch of its
  own); a hidden layer's kernel adds the partial sums of the layer above in a
  fixed order and applies its activation's derivative where it reads them.
Clipping by the global norm adds one launch (optimizer_update): no weight may
move before the norm of the whole gradient is known.

Every kernel is float32 with IEEE division and square root (config.CUDA_JIT),
with the same flush of denormal running averages as the CPU twins, so the two
backends agree to float32 rounding.
"""

import math

import numpy as np
from numba import cuda

from ..config import CUDA_DEVICE, CUDA_JIT
from ..hyper import KIND
from .math import ONE, ZERO, activate, activation_grad, register_cuda, softmax_term, step

register_cuda()   # before any kernel below is compiled: they call math.py's functions

TILE = 16
# Depth of a tile along the summed axis: 64 inputs per pass in dense_forward,
# 32 batch rows per pass in dense_backward_update (a whole default batch).
# Deeper tiles mean fewer barriers per product (and fewer loop trips), at
# 8-12 KiB of shared memory per block.
DEPTH = 4 * TILE
ROWS = 2 * TILE
PER_THREAD = DEPTH // TILE  # weights per thread in dense_backward_update: a block covers DEPTH inputs
# One column of padding: threads reading down a column of a tile then hit
# distinct shared-memory banks instead of queueing on one.
PAD = TILE + 1


@cuda.jit(**CUDA_DEVICE)
def load_input(x, rows, lo, m, scale, r, k):
    """Input k of row r of the batch, x[rows[lo + r], k] / scale; 0 past the batch or the row.

    scale is 255 for uint8 images, which gives the CPU's PIXELS table bit for
    bit (one IEEE division), and 1 for activations."""
    if r < m and k < x.shape[1]:
        return np.float32(x[rows[lo + r], k]) / scale
    return ZERO


@cuda.jit(**CUDA_DEVICE)
def softmax_stats(z, r):
    """(max logit, sum of softmax_term, argmax: the first of tied maxima) of row r."""
    zmax = z[r, 0]
    best = 0
    for j in range(1, z.shape[1]):
        if z[r, j] > zmax:
            zmax = z[r, j]
            best = j
    total = ZERO
    for j in range(z.shape[1]):
        total += softmax_term(z[r, j] - zmax)
    return zmax, total, best


@cuda.jit(**CUDA_DEVICE)
def row_loss(z, r, label, zmax, total):
    """Cross-entropy of row r as log-sum-exp minus the label's logit: finite even
    when the label's probability underflows (as softmax_xent on the CPU).
    NaN when the row holds NaN or infinite logits (total is then 0), for the
    host's divergence check."""
    if not total > ZERO:
        return np.float32(math.nan)
    return np.float32(math.log(total)) - (z[r, label] - zmax)


@cuda.jit(**CUDA_DEVICE)
def optimizer_step(theta, state, i, g, p, lr, bc1, bc2):
    """The optimizer's update (math.step) of the one parameter theta[i] with
    gradient g; p is the float32 hyperparameter vector, state rows are v, m, b."""
    theta[i], state[0, i], state[1, i], state[2, i] = step(
        int(p[KIND]), theta[i], g, state[0, i], state[1, i], state[2, i], p, lr, bc1, bc2)


@cuda.jit(**CUDA_JIT)
def dense_forward(x, rows, lo, m, scale, theta, off, act, out):
    """out[r] = activation act (activations.py) of x[rows[lo + r]] / scale @ W + b,
    for the m rows of a batch; W, b are the layer at theta[off:].  One thread per output.
    """
    xs = cuda.shared.array((TILE, DEPTH), np.float32)
    ws = cuda.shared.array((DEPTH, TILE), np.float32)
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    j = cuda.blockIdx.x * TILE + tx
    r = cuda.blockIdx.y * TILE + ty
    n_in, n_out = x.shape[1], out.shape[1]
    acc = ZERO
    for k0 in range(0, n_in, DEPTH):
        for q in range(0, DEPTH, TILE):
            xs[ty, q + tx] = load_input(x, rows, lo, m, scale, r, k0 + q + tx)
            k = k0 + q + ty
            ws[q + ty, tx] = theta[off + k * n_out + j] if k < n_in and j < n_out else ZERO
        cuda.syncthreads()
        if r < m:  # rows past the batch only help to load tiles
            for t in range(min(DEPTH, n_in - k0)):
                acc += xs[ty, t] * ws[t, tx]
        cuda.syncthreads()
    if r < m and j < n_out:
        acc += theta[off + n_in * n_out + j]
        out[r, j] = activate(act, acc)


@cuda.jit(**CUDA_JIT)
def dense_backward_update(x, rows, lo, m, scale, theta, off, act, act_kind, dout, labels, ylo, state, hyper, lr, bc1,
                          bc2, dx, grad, sumsq, parity, losses, corrects, bi):
    """Backward pass and optimizer step of one layer (W, b at theta[off:]), for
    the m rows of a batch whose inputs are x[rows[lo + r]] / scale.

    dLoss/d(pre-activation), delta, is read in one of two ways:
    - last layer (dout has no parts): from the logits act and labels[ylo + r],
      softmax(z) - onehot(label), over m for the batch mean.  Block (0, 0)
      also writes the batch's loss sum and correct count to losses[bi] and
      corrects[bi];
    - hidden layer: dLoss/d output, the sum over parts of dout (the layer
      above's partial sums, added in order), times the derivative of the
      activation act_kind at its output act.
    Thread (ty, tx) of block (bx, by) owns the PER_THREAD weights W[k, j] with
    k = by*DEPTH + ty + q*TILE, j = bx*TILE + tx (more work per thread, fewer
    blocks to schedule); their gradients sum x[r, k] * delta[r, j] over the
    batch, ROWS rows per pass through shared memory; blocks with by == 0 also sum
    delta over rows for the bias.  With the same tiles, and the layer's weights
    before the update, block (bx, by) writes its share of delta @ W.T, the
    sum over its TILE outputs, to dx[bx] (dLoss/dx, unmasked; one writer per
    element), unless dx has no parts (layer 0).

    Then either the optimizer step, or, when grad has elements (clipping by
    global norm), the gradient is stored there and its squared sum added to
    sumsq[parity] for optimizer_update to finish.
    """
    xs = cuda.shared.array((ROWS, DEPTH), np.float32)  # xs[row, input of this block]
    ds = cuda.shared.array((ROWS, TILE), np.float32)   # ds[row, output of this block]
    ws = cuda.shared.array((DEPTH, PAD), np.float32)   # ws[input, output]: W before the step
    zmax_s = cuda.shared.array(ROWS, np.float32)
    zsum_s = cuda.shared.array(ROWS, np.float32)
    loss_s = cuda.shared.array(ROWS, np.float32)
    correct_s = cuda.shared.array(ROWS, np.int32)
    sq_s = cuda.shared.array((TILE, TILE), np.float64)
    g = cuda.local.array(PER_THREAD, np.float32)      # gradients of this thread's PER_THREAD weights
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    bx, by = cuda.blockIdx.x, cuda.blockIdx.y
    n_in, n_out = x.shape[1], act.shape[1]
    j = bx * TILE + tx
    k0 = by * DEPTH
    logits = dout.shape[0] == 0
    want_dx = dx.shape[0] > 0
    first_block = bx == 0 and by == 0
    for q in range(PER_THREAD):
        k = k0 + q * TILE + ty
        ws[q * TILE + ty, tx] = theta[off + k * n_out + j] if k < n_in and j < n_out else ZERO
        g[q] = ZERO
    g_bias = ZERO
    loss = ZERO
    correct = 0
    stats_row = tx * TILE + ty  # the row of a tile whose softmax statistics this thread computes (tx < ROWS/TILE)
    for r0 in range(0, m, ROWS):
        if logits and stats_row < ROWS and r0 + stats_row < m:
            r = r0 + stats_row
            zmax, total, best = softmax_stats(act, r)
            zmax_s[stats_row] = zmax
            zsum_s[stats_row] = total
            if first_block:
                label = labels[ylo + r]
                loss += row_loss(act, r, label, zmax, total)
                correct += best == label
        cuda.syncthreads()
        for q in range(0, ROWS, TILE):
            r = r0 + q + ty
            for p in range(0, DEPTH, TILE):
                xs[q + ty, p + tx] = load_input(x, rows, lo, m, scale, r, k0 + p + tx)
            d = ZERO
            if r < m and j < n_out:
                if logits:
                    # The CPU's order of operations: e * (1/m / total), minus 1/m at the label.
                    d = softmax_term(act[r, j] - zmax_s[q + ty]) * ((ONE / np.float32(m)) / zsum_s[q + ty])
                    if j == labels[ylo + r]:
                        d -= ONE / np.float32(m)
                else:
                    slope = activation_grad(act_kind, act[r, j])
                    if slope != ZERO:
                        for part in range(dout.shape[0]):
                            d += dout[part, r, j]
                        d *= slope
            ds[q + ty, tx] = d
        cuda.syncthreads()
        n_rows = min(ROWS, m - r0)  # the last tile of a batch may be partly empty
        for t in range(n_rows):
            d = ds[t, tx]
            for q in range(PER_THREAD):
                g[q] += xs[t, q * TILE + ty] * d
        if by == 0 and ty == 0:
            for t in range(n_rows):
                g_bias += ds[t, tx]
        if want_dx:
            # Thread (ty, tx) writes delta[r] . W[k] over this block's outputs, for rows
            # r0 + ty, r0 + ty + TILE, ... and the block's inputs k0 + tx, k0 + tx + TILE, ...
            for q in range(0, n_rows, TILE):
                r = r0 + q + ty
                for p in range(0, DEPTH, TILE):
                    if r < m and k0 + p + tx < n_in:
                        s = ZERO
                        for jj in range(TILE):
                            s += ds[q + ty, jj] * ws[p + tx, jj]
                        dx[bx, r, k0 + p + tx] = s
        cuda.syncthreads()
    if logits and first_block:
        # A fixed-order sum, so the reported loss does not depend on thread timing.
        if stats_row < ROWS:
            loss_s[stats_row] = loss
            correct_s[stats_row] = correct
        cuda.syncthreads()
        if tx == 0 and ty == 0:
            total_loss = ZERO
            total_correct = 0
            for t in range(min(ROWS, m)):
                total_loss += loss_s[t]
                total_correct += correct_s[t]
            losses[bi] = total_loss
            corrects[bi] = total_correct
    b_index = off + n_in * n_out + j
    owns_bias = by == 0 and ty == 0 and j < n_out
    if grad.size > 0:
        sq = np.float64(0.0)
        for q in range(PER_THREAD):
            k = k0 + q * TILE + ty
            if k < n_in and j < n_out:
                grad[off + k * n_out + j] = g[q]
                sq += np.float64(g[q]) * g[q]
        if owns_bias:
            grad[b_index] = g_bias
            sq += np.float64(g_bias) * g_bias
        sq_s[ty, tx] = sq
        cuda.syncthreads()
        if tx == 0 and ty == 0:
            block_sum = np.float64(0.0)
            for a in range(TILE):
                for c in range(TILE):
                    block_sum += sq_s[a, c]
            cuda.atomic.add(sumsq, parity, block_sum)
        return
    for q in range(PER_THREAD):
        k = k0 + q * TILE + ty
        if k < n_in and j < n_out:
            optimizer_step(theta, state, off + k * n_out + j, g[q], hyper, lr, bc1, bc2)
    if owns_bias:
        optimizer_step(theta, state, b_index, g_bias, hyper, lr, bc1, bc2)


@cuda.jit(**CUDA_JIT)
def optimizer_update(theta, state, grad, p, lr, bc1, bc2, sumsq, parity, max_norm):
    """The optimizer step of every parameter from the stored gradient, scaled
    so that its global L2 norm is at most max_norm (clip_global_norm on the CPU).

    sumsq[parity] holds this step's squared sum; the other slot, which the
    next step accumulates into, is cleared here, after every block of this
    step's backward kernels has finished with it."""
    i = cuda.grid(1)
    if i == 0:
        sumsq[1 - parity] = 0.0
    if i < theta.size:
        norm = math.sqrt(sumsq[parity])
        g = grad[i]
        if norm > max_norm:
            g *= np.float32(max_norm / norm)
        optimizer_step(theta, state, i, g, p, lr, bc1, bc2)


@cuda.jit(**CUDA_JIT)
def evaluate_rows(z, labels, lo, m, losses, correct, confusion):
    """For the m rows of logits z, which are rows lo.. of the evaluated set:
    losses[lo + r], correct[0] += 1 when the argmax is the label, and
    confusion[label, argmax] += 1.  One thread per row."""
    r = cuda.grid(1)
    if r < m:
        zmax, total, best = softmax_stats(z, r)
        label = labels[lo + r]
        losses[lo + r] = row_loss(z, r, label, zmax, total)
        cuda.atomic.add(confusion, (label, best), 1)
        if best == label:
            cuda.atomic.add(correct, 0, 1)


@cuda.jit(**CUDA_JIT)
def predict_proba(z, lo, m, probs):
    """probs[lo + r] = softmax of logits row r, for r < m.  One thread per row."""
    r = cuda.grid(1)
    if r < m:
        top = z[r, 0]
        for j in range(1, z.shape[1]):
            top = max(top, z[r, j])
        total = ZERO
        for j in range(z.shape[1]):
            e = np.float32(math.exp(z[r, j] - top))
            probs[lo + r, j] = e
            total += e
        for j in range(z.shape[1]):
            probs[lo + r, j] /= total
