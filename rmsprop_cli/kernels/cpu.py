"""Numba CPU loops of the layers: dense forward and backward passes (fused
with the optimizer step of kernels/updates.py) and softmax cross-entropy,
around the scalar maths of kernels/math.py that the CUDA kernels
(kernels/cuda.py, same names) share.  kernels/steps.py composes them into a
training step.

Layout: activations are (batch, features), row-major; a weight matrix is
(n_in, n_out), as Keras stores it, so row k of W (input k's fan-out) is
contiguous and the inner loops run along it, where LLVM vectorises them.
Every kernel is float32 end to end: scalars arrive as np.float32 and literals
are np.float32, because one float64 literal promotes a whole loop to float64.
Why hand-written loops and not BLAS (np.dot): MNIST's inputs are 81% zeros and
these kernels skip them; on the first layer, which holds 90% of the
arithmetic, an epoch's forward pass and weight gradient took 0.27-0.32 s here
against 0.48-0.57 s through OpenBLAS (scripts/bench_blas.py, 1 and 2 BLAS
threads).  No BLAS call runs during training, so no BLAS thread pool competes
with Numba's for the cores.
"""

import numpy as np
from numba import njit

from ..activations import IDENTITY, RELU
from ..config import JIT
from .math import ZERO, activate, activation_grad, softmax_term
from .updates import optimizer_update, rmsprop_decay, rmsprop_update

# Images stay uint8 (a quarter of the memory traffic of float32 when a batch
# is gathered); this table turns a pixel byte into the float32 that numpy's
# byte / 255 gives, bit for bit.
PIXELS = np.arange(256, dtype=np.float32) / np.float32(255.0)


@njit(**JIT)
def load_row(images, src, x_row):
    """x_row = images[src] scaled to [0, 1]."""
    for k in range(x_row.size):
        x_row[k] = PIXELS[images[src, k]]


@njit(**JIT)
def nonzero_rows(x, k, rows):
    """Indices i with x[i, k] != 0 into rows[:count]; returns count.

    Branch-free compaction: whether a pixel or a ReLU output is zero is
    unpredictable, and a mispredicted branch per entry cost more than the
    multiply-adds it skipped.
    """
    count = 0
    for i in range(x.shape[0]):
        rows[count] = i
        count += x[i, k] != ZERO
    return count


@njit(**JIT)
def nonzero_cols(x, i, cols):
    """Indices k with x[i, k] != 0 into cols[:count]; returns count (branch-free)."""
    count = 0
    for k in range(x.shape[1]):
        cols[count] = k
        count += x[i, k] != ZERO
    return count


@njit(**JIT)
def dense_forward(x, w, b, out, act):
    """out = activation(x @ w + b), act an activation kind (activations.py;
    IDENTITY for logits).  x (n, n_in), w (n_in, n_out).

    Only the non-zero inputs of each row are visited (about 19% of MNIST
    pixels, half of the ReLU outputs), four at a time, so that each pass over
    the output row does four multiply-adds per load and store of it.
    """
    n, n_in = x.shape
    n_out = w.shape[1]
    cols = np.empty(n_in, np.int64)
    for i in range(n):
        o = out[i]
        for j in range(n_out):
            o[j] = b[j]
        count = nonzero_cols(x, i, cols)
        t = 0
        while t < count:
            # A short last group repeats its last column with weight 0: a no-op add.
            k0, k1, k2, k3 = cols[t], cols[min(t + 1, count - 1)], cols[min(t + 2, count - 1)], cols[min(t + 3, count - 1)]
            a0 = x[i, k0]
            a1 = x[i, k1] if t + 1 < count else ZERO
            a2 = x[i, k2] if t + 2 < count else ZERO
            a3 = x[i, k3] if t + 3 < count else ZERO
            w0, w1, w2, w3 = w[k0], w[k1], w[k2], w[k3]
            for j in range(n_out):
                o[j] += a0 * w0[j] + a1 * w1[j] + a2 * w2[j] + a3 * w3[j]
            t += 4
        if act == RELU:   # the default, with its kind a constant: the choice is compiled away
            for j in range(n_out):
                o[j] = activate(RELU, o[j])  # a select, not a branch: the sign is a coin flip
        elif act != IDENTITY:
            for j in range(n_out):
                o[j] = activate(act, o[j])


@njit(**JIT)
def weight_grad_row(x, delta, k, rows, g):
    """g = x[:, k] @ delta, row k of dLoss/dW; rows is scratch of len(x).
    Returns False when input k is zero in every row, so g is all zero.

    Only rows with x[i, k] != 0 contribute, taken four at a time (the same
    trick as dense_forward) so g is loaded and stored once per four rows.
    """
    for j in range(g.size):
        g[j] = ZERO
    count = nonzero_rows(x, k, rows)
    if count == 0:
        return False
    t = 0
    while t < count:
        i0, i1, i2, i3 = rows[t], rows[min(t + 1, count - 1)], rows[min(t + 2, count - 1)], rows[min(t + 3, count - 1)]
        a0 = x[i0, k]
        a1 = x[i1, k] if t + 1 < count else ZERO
        a2 = x[i2, k] if t + 2 < count else ZERO
        a3 = x[i3, k] if t + 3 < count else ZERO
        d0, d1, d2, d3 = delta[i0], delta[i1], delta[i2], delta[i3]
        for j in range(g.size):
            g[j] += a0 * d0[j] + a1 * d1[j] + a2 * d2[j] + a3 * d3[j]
        t += 4
    return True


@njit(**JIT)
def bias_grad(delta, g):
    """g = delta summed over the batch."""
    for j in range(g.size):
        g[j] = ZERO
    for i in range(delta.shape[0]):
        for j in range(g.size):
            g[j] += delta[i, j]


@njit(**JIT)
def input_grad(x, w, delta, dx, act):
    """dx = (delta @ w.T) times the activation's derivative at x, the previous
    layer's output.

    ReLU's derivative is 0 wherever its output is, so for ReLU only the active
    units of each row (found branch-free, since which units are active is a
    coin flip) get a dot product; the rest are zero.  Other activations have a
    derivative everywhere (tanh's is 1 at an output of 0), so every unit does.
    """
    n, n_in = x.shape
    n_out = w.shape[1]
    units = np.arange(n_in)
    for i in range(n):
        count = nonzero_cols(x, i, units) if act == RELU else n_in
        for k in range(n_in):
            dx[i, k] = ZERO
        for t in range(count):
            k = units[t]
            s = ZERO
            for j in range(n_out):
                s += delta[i, j] * w[k, j]
            # ReLU's derivative is 1 on every active unit: its specialisation skips the product.
            dx[i, k] = s if act == RELU else s * activation_grad(act, x[i, k])


@njit(**JIT)
def weight_grads(x, delta, gw, k0, k1):
    """Rows k0:k1 of gw = x.T @ delta."""
    rows = np.empty(x.shape[0], np.int64)
    for k in range(k0, k1):
        weight_grad_row(x, delta, k, rows, gw[k])


@njit(**JIT)
def dense_backward(x, w, delta, gw, gb, dx, want_dx, act):
    """Gradients of one dense layer given delta = dLoss/d(pre-activation):
    gw = x.T @ delta, gb = column sums of delta, and dx (through activation
    act of the layer below, whose output x is) if want_dx."""
    weight_grads(x, delta, gw, 0, x.shape[1])
    bias_grad(delta, gb)
    if want_dx:
        input_grad(x, w, delta, dx, act)


@njit(**JIT)
def update_rows(x, w, delta, vw, mw, bw, p, plain, lr, bc1, bc2, k0, k1):
    """Rows k0:k1 of W: each one's gradient, then the optimizer's step on it.

    Each gradient row is used while it is in L1 and never written out, so a
    step streams W and its state once instead of also writing and re-reading
    a gradient as large as W.  v/m/b (vw, mw, bw) are the layer's views of the
    optimizer's state (see optimizer_update); plain says the recipe is plain
    RMSProp (optim.Optimizer.is_plain_rmsprop), which has faster loops.
    """
    rows = np.empty(x.shape[0], np.int64)
    g = np.empty(w.shape[1], np.float32)
    for k in range(k0, k1):
        nonzero = weight_grad_row(x, delta, k, rows, g)
        if not plain:
            optimizer_update(w[k], g, vw[k], mw[k], bw[k], p, lr, bc1, bc2)
        elif nonzero:
            rmsprop_update(w[k], g, vw[k], p, lr, bc2)
        else:
            # A pixel that is blank in the whole batch (42% of them, on
            # average) has g = 0: plain RMSProp leaves W unchanged and only
            # decays v.
            rmsprop_decay(vw[k], p)


@njit(**JIT)
def bias_update(b, delta, vb, mb, bb, p, plain, lr, bc1, bc2):
    """The bias's gradient (delta summed over the batch), then the optimizer's step on it."""
    g = np.empty(b.size, np.float32)
    bias_grad(delta, g)
    if plain:
        rmsprop_update(b, g, vb, p, lr, bc2)
    else:
        optimizer_update(b, g, vb, mb, bb, p, lr, bc1, bc2)


@njit(**JIT)
def dense_backward_update(x, w, b, delta, vw, vb, mw, mb, bw, bb, dx, want_dx, act, p, plain, lr, bc1, bc2):
    """dense_backward fused with the optimizer step, one row of W at a time
    (update_rows); dx comes first, from W before its update."""
    if want_dx:
        input_grad(x, w, delta, dx, act)
    update_rows(x, w, delta, vw, mw, bw, p, plain, lr, bc1, bc2, 0, x.shape[1])
    bias_update(b, delta, vb, mb, bb, p, plain, lr, bc1, bc2)


@njit(**JIT)
def softmax_xent(z, labels, delta, scale):
    """Softmax cross-entropy of logits z (n, c) against integer labels.

    Writes delta = (softmax(z) - onehot) * scale, the gradient of the batch
    mean when scale = 1 / batch size (a shard sees only part of the batch), and returns
    (sum of per-row losses, number of rows whose argmax is the label).
    Subtracting the row maximum keeps exp() finite for logits of any size;
    the loss is computed as log-sum-exp minus the label's logit, never as
    log(probability), so it stays finite when a probability underflows.
    """
    n, c = z.shape
    loss = 0.0
    correct = 0
    for i in range(n):
        zmax = z[i, 0]
        best = 0
        for j in range(1, c):
            if z[i, j] > zmax:
                zmax = z[i, j]
                best = j
        total = ZERO
        for j in range(c):
            e = softmax_term(z[i, j] - zmax)
            delta[i, j] = e
            total += e
        y = labels[i]
        loss += np.log(total) - (z[i, y] - zmax)
        correct += best == y
        norm = scale / total
        for j in range(c):
            delta[i, j] *= norm
        delta[i, y] -= scale
    return loss, correct
