"""Numba CUDA kernels of evaluation and prediction: the twins of kernels/cpu.py
by the same names where they compute the same thing (dense_forward,
evaluate_rows, predict_proba).  A training step's kernels are in
kernels/cuda_steps.py.  The activations and the softmax term are the scalar
functions of kernels/math.py, the very ones the CPU loops inline.

Layout as on the CPU: activations are (rows, features) row-major; parameters
are a flat vector, layer by layer, W (n_in, n_out) row-major then b, and a
kernel finds its layer at offset `off`.  A batch's input rows are
x[rows[lo + r]] (the identity for data already in order).

Threads come in TILE x TILE blocks; threadIdx.x runs along the contiguous axis
(the output column j), so neighbouring threads read neighbouring addresses
and global loads coalesce.  Products stage TILE x DEPTH tiles of both
operands through shared memory, so a value read from global memory serves
TILE multiply-adds: evaluation is wide (8,192 rows a pass), where tiles pay.

Every kernel is float32 with IEEE division and square root (config.CUDA_JIT),
so the two backends agree to float32 rounding.
"""

import math

import numpy as np
from numba import cuda

from ..config import CUDA_DEVICE, CUDA_JIT
from .math import ZERO, activate, register_cuda, softmax_term

register_cuda()   # before any kernel below is compiled: they call math.py's functions

TILE = 16
# Depth of a tile along the summed axis: 64 inputs per pass.  Deeper tiles
# mean fewer barriers per product (and fewer loop trips), at 8 KiB of shared
# memory per block.
DEPTH = 4 * TILE


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


@cuda.jit(**CUDA_JIT)
def probe(out):
    """out[0] = 1: the one-thread kernel that tells whether CUDA can compile, load and run anything here."""
    if cuda.grid(1) == 0:
        out[0] = 1
