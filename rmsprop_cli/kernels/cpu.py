"""Numba CPU kernels: dense layers, softmax cross-entropy, RMSProp, and the
fused training and evaluation loops that call them.

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
from numba import njit, prange

from ..config import JIT, JIT_PARALLEL
from ..optim import (ADAGRAD, ADAM, BETA1, BETA2, BIAS_CORRECTION, CENTERED, CLIP_NORM, CLIP_VALUE, DECAY_RATE,
                     DECAY_STEPS, DECOUPLED, EPS, EPS_OUTSIDE, KIND, LR, MOMENTUM, NESTEROV, RHO, RMSPROP, SCHEDULE,
                     TOTAL_STEPS, WARMUP, WEIGHT_DECAY)

ZERO = np.float32(0.0)
ONE = np.float32(1.0)
# Running averages of squared gradients of dead units decay geometrically into
# float32 denormals, and denormal arithmetic made whole epochs 2x slower.
# Anything below this is flushed to zero; it is far below any useful v.
FLUSH = np.float32(1e-30)
LOGIT_FLOOR = np.float32(-60.0)
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
def dense_forward(x, w, b, out, relu):
    """out = x @ w + b, then ReLU if asked.  x (n, n_in), w (n_in, n_out).

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
        if relu:
            for j in range(n_out):
                o[j] = max(o[j], ZERO)  # a select, not a branch: the sign is a coin flip


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
def input_grad(x, w, delta, dx):
    """dx = (delta @ w.T) masked by x > 0.

    x is the previous layer's ReLU output, so the mask is ReLU's derivative:
    only the active units of each row (found branch-free, since which units
    are active is a coin flip) get a dot product; the rest are zero.
    """
    n, n_in = x.shape
    n_out = w.shape[1]
    active = np.empty(n_in, np.int64)
    for i in range(n):
        count = nonzero_cols(x, i, active)  # ReLU outputs are >= 0: non-zero means active
        for k in range(n_in):
            dx[i, k] = ZERO
        for t in range(count):
            k = active[t]
            s = ZERO
            for j in range(n_out):
                s += delta[i, j] * w[k, j]
            dx[i, k] = s


@njit(**JIT)
def weight_grads(x, delta, gw, k0, k1):
    """Rows k0:k1 of gw = x.T @ delta."""
    rows = np.empty(x.shape[0], np.int64)
    for k in range(k0, k1):
        weight_grad_row(x, delta, k, rows, gw[k])


@njit(**JIT)
def dense_backward(x, w, delta, gw, gb, dx, want_dx):
    """Gradients of one dense layer given delta = dLoss/d(pre-activation):
    gw = x.T @ delta, gb = column sums of delta, and dx if want_dx."""
    weight_grads(x, delta, gw, 0, x.shape[1])
    bias_grad(delta, gb)
    if want_dx:
        input_grad(x, w, delta, dx)


@njit(**JIT)
def update_rows(x, w, delta, vw, mw, bw, hp, plain, lr, bc1, bc2, k0, k1):
    """Rows k0:k1 of W: each one's gradient, then the optimizer's step on it.

    Each gradient row is used while it is in L1 and never written out, so a
    step streams W and its state once instead of also writing and re-reading
    a gradient as large as W.  v/m/b (vw, mw, bw) are the layer's views of the
    optimizer's state (see optimizer_update); plain says the recipe is plain
    RMSProp, which has a faster loop.
    """
    rows = np.empty(x.shape[0], np.int64)
    g = np.empty(w.shape[1], np.float32)
    rho, eps, eps_outside = np.float32(hp[RHO]), np.float32(hp[EPS]), hp[EPS_OUTSIDE] != 0
    for k in range(k0, k1):
        nonzero = weight_grad_row(x, delta, k, rows, g)
        if not plain:
            optimizer_update(w[k], g, vw[k], mw[k], bw[k], hp, lr, bc1, bc2)
        elif nonzero:
            rmsprop_update(w[k], g, vw[k], lr, rho, eps, eps_outside)
        else:
            # A pixel that is blank in the whole batch (42% of them, on
            # average) has g = 0: plain RMSProp leaves W unchanged and only
            # decays v, exactly as the full formula would.
            rmsprop_decay(vw[k], rho)


@njit(**JIT)
def bias_update(b, delta, vb, mb, bb, hp, plain, lr, bc1, bc2):
    """The bias's gradient (delta summed over the batch), then the optimizer's step on it."""
    g = np.empty(b.size, np.float32)
    bias_grad(delta, g)
    if plain:
        rmsprop_update(b, g, vb, lr, np.float32(hp[RHO]), np.float32(hp[EPS]), hp[EPS_OUTSIDE] != 0)
    else:
        optimizer_update(b, g, vb, mb, bb, hp, lr, bc1, bc2)


@njit(**JIT)
def dense_backward_update(x, w, b, delta, vw, vb, mw, mb, bw, bb, dx, want_dx, hp, plain, lr, bc1, bc2):
    """dense_backward fused with the optimizer step, one row of W at a time
    (update_rows); dx comes first, from W before its update."""
    if want_dx:
        input_grad(x, w, delta, dx)
    update_rows(x, w, delta, vw, mw, bw, hp, plain, lr, bc1, bc2, 0, x.shape[1])
    bias_update(b, delta, vb, mb, bb, hp, plain, lr, bc1, bc2)


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
            # Classes 60 logits below the top get probability exactly 0 (it would
            # be < 1e-26): their tiny gradients would otherwise become float32
            # denormals in backprop, and denormals made every step 2x slower.
            d = z[i, j] - zmax
            e = np.exp(d) if d > LOGIT_FLOOR else ZERO
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


@njit(**JIT)
def rmsprop_update(theta, grad, v, lr, rho, eps, eps_outside):
    """One RMSProp step over matching parameter, gradient and accumulator arrays.

    v <- rho*v + (1-rho)*g^2;  theta <- theta - lr*g/sqrt(v + eps)  (Keras),
    or theta - lr*g/(sqrt(v) + eps) when eps_outside (PyTorch).
    """
    one_minus_rho = ONE - rho
    for i in range(theta.size):
        g = grad[i]
        vi = rho * v[i] + one_minus_rho * g * g
        if vi < FLUSH:
            vi = ZERO
        v[i] = vi
        if eps_outside:
            denom = np.sqrt(vi) + eps
        else:
            denom = np.sqrt(vi + eps)
        theta[i] -= lr * g / denom


@njit(**JIT)
def rmsprop_decay(v, rho):
    """rmsprop_update's effect on v when g = 0: v <- rho*v, flushed; theta is unchanged."""
    for i in range(v.size):
        vi = rho * v[i]
        v[i] = vi if vi >= FLUSH else ZERO


@njit(**JIT)
def optimizer_update(theta, grad, v, m, b, hp, lr, bc1, bc2):
    """One step of the optimizer that the hyperparameter vector hp describes
    (indices from optim.py), over matching parameter, gradient and state arrays.

    v: RMSProp's and Adam's squared-gradient average, Adagrad's sum; m: the
    mean gradient (centered RMSProp, Adam); b: the momentum buffer.  lr is this
    step's learning rate (schedule applied); bc1 and bc2 are the bias-correction
    factors 1/(1 - beta1^t) and 1/(1 - beta2^t) (or 1/(1 - rho^t)), 1 when off.
    In order: clip by value; weight decay, added to g (L2, PyTorch) or applied to
    theta on its own (decoupled, Keras); the optimizer's scaling; momentum
    b <- mu*b + update, the step being b or, Nesterov, update + mu*b.

    Each stage is its own loop over the arrays, with the options tested once
    outside it, so every loop is branch-free and vectorised; grad is
    overwritten with the step (it is scratch for the callers).
    """
    n = theta.size
    kind = int(hp[KIND])
    rho, eps, outside = np.float32(hp[RHO]), np.float32(hp[EPS]), hp[EPS_OUTSIDE] != 0
    one_minus_rho = ONE - rho
    mu, nesterov = np.float32(hp[MOMENTUM]), hp[NESTEROV] != 0
    wd, decoupled = np.float32(hp[WEIGHT_DECAY]), hp[DECOUPLED] != 0
    clip = np.float32(hp[CLIP_VALUE])
    beta1, beta2 = np.float32(hp[BETA1]), np.float32(hp[BETA2])
    g = grad
    if clip > ZERO:
        for i in range(n):
            g[i] = min(max(g[i], -clip), clip)
    if wd > ZERO and decoupled:
        for i in range(n):
            theta[i] -= lr * wd * theta[i]
    elif wd > ZERO:
        for i in range(n):
            g[i] += wd * theta[i]
    if kind == RMSPROP:
        for i in range(n):
            vi = rho * v[i] + one_minus_rho * g[i] * g[i]
            v[i] = vi if vi >= FLUSH else ZERO
        if hp[CENTERED] != 0:
            for i in range(n):
                mi = rho * m[i] + one_minus_rho * g[i]
                m[i] = mi
                mean = mi * bc2
                var = max(v[i] * bc2 - mean * mean, ZERO)
                g[i] = lr * g[i] / (np.sqrt(var) + eps if outside else np.sqrt(var + eps))
        elif outside:
            for i in range(n):
                g[i] = lr * g[i] / (np.sqrt(v[i] * bc2) + eps)
        else:
            for i in range(n):
                g[i] = lr * g[i] / np.sqrt(v[i] * bc2 + eps)
    elif kind == ADAGRAD:
        for i in range(n):
            vi = v[i] + g[i] * g[i]
            v[i] = vi
            g[i] = lr * g[i] / (np.sqrt(vi) + eps if outside else np.sqrt(vi + eps))
    elif kind == ADAM:
        for i in range(n):
            mi = beta1 * m[i] + (ONE - beta1) * g[i]
            vi = beta2 * v[i] + (ONE - beta2) * g[i] * g[i]
            m[i] = mi if abs(mi) >= FLUSH else ZERO
            v[i] = vi if vi >= FLUSH else ZERO
            g[i] = lr * (m[i] * bc1) / (np.sqrt(v[i] * bc2) + eps)
    else:  # SGD, and SGD with momentum
        for i in range(n):
            g[i] = lr * g[i]
    if mu > ZERO:
        for i in range(n):
            bi = mu * b[i] + g[i]
            b[i] = bi if abs(bi) >= FLUSH else ZERO
        if nesterov:
            for i in range(n):
                g[i] += mu * b[i]
        else:
            for i in range(n):
                g[i] = b[i]
    for i in range(n):
        theta[i] -= g[i]


@njit(**JIT)
def learning_rate_at(hp, t):
    """The learning rate of update t (1-based): linear warm-up, then the schedule."""
    base, warm = hp[LR], hp[WARMUP]
    if t <= warm:
        return base * t / warm
    s = t - warm
    kind = int(hp[SCHEDULE])
    if kind == 1:
        return base * hp[DECAY_RATE] ** np.floor(s / hp[DECAY_STEPS])
    if kind == 2:
        return base * hp[DECAY_RATE] ** (s / hp[DECAY_STEPS])
    if kind == 3:
        span = max(hp[TOTAL_STEPS] - warm, 1.0)
        return base * 0.5 * (1.0 + np.cos(np.pi * min(s, span) / span))
    return base


@njit(**JIT)
def bias_corrections(hp, t):
    """(1/(1 - beta1^t), 1/(1 - beta2^t)) for Adam; 1/(1 - rho^t) twice for
    RMSProp with bias correction; (1, 1) otherwise."""
    kind = int(hp[KIND])
    if kind == ADAM:
        return np.float32(1.0 / (1.0 - hp[BETA1] ** t)), np.float32(1.0 / (1.0 - hp[BETA2] ** t))
    if kind == RMSPROP and hp[BIAS_CORRECTION] != 0:
        c = np.float32(1.0 / (1.0 - hp[RHO] ** t))
        return c, c
    return ONE, ONE


# Parameters, gradients and optimizer buffers are flat vectors, layer by layer
# (W (n_in, n_out) row-major, then b); activations and deltas are flat buffers
# holding `rows` rows of every layer's width (one set per evaluation thread;
# a training step's threads share one set, each writing only its own rows).
# Views are carved out inside compiled code because Numba's parallel regions cannot take tuples of
# arrays, and flat buffers let one kernel serve any depth of network.

@njit(**JIT)
def param_layer(theta, sizes, l):
    """Views (W, b) of layer l in a flat parameter-shaped vector."""
    off = 0
    for j in range(l):
        off += sizes[j] * sizes[j + 1] + sizes[j + 1]
    n_in, n_out = sizes[l], sizes[l + 1]
    w = theta[off:off + n_in * n_out].reshape((n_in, n_out))
    return w, theta[off + n_in * n_out:off + n_in * n_out + n_out]


@njit(**JIT)
def act_view(buf, sizes, rows, l):
    """Layer l's (rows, sizes[l]) block in a flat activation or delta buffer."""
    off = 0
    for j in range(l):
        off += rows * sizes[j]
    return buf[off:off + rows * sizes[l]].reshape((rows, sizes[l]))


@njit(**JIT)
def forward(theta, sizes, acts, rows, r0, r1):
    """Run rows r0:r1 of layer 0's block through every layer; logits in the last block."""
    n_layers = sizes.size - 1
    for l in range(n_layers):
        w, b = param_layer(theta, sizes, l)
        dense_forward(act_view(acts, sizes, rows, l)[r0:r1], w, b, act_view(acts, sizes, rows, l + 1)[r0:r1],
                      l < n_layers - 1)


@njit(**JIT)
def batch_rows(images, y, order, lo, theta, sizes, acts, deltas, labels, row_loss, r0, r1, scale):
    """Rows r0:r1 of the batch that starts at order[lo], on their own: gather
    them, run them forward through every layer, take their softmax loss
    (row_loss[r]) and its gradient, and propagate that back to every layer's
    delta, from the weights before this step's update.  Returns the correct
    count.  The losses are kept per row so that the caller sums them in row
    order: the batch's loss is then the same to the bit on any number of threads."""
    n_layers = sizes.size - 1
    rows = labels.size
    x0 = act_view(acts, sizes, rows, 0)
    for r in range(r0, r1):
        src = order[lo + r]
        load_row(images, src, x0[r])
        labels[r] = y[src]
    forward(theta, sizes, acts, rows, r0, r1)
    z, delta = act_view(acts, sizes, rows, n_layers), act_view(deltas, sizes, rows, n_layers)
    correct = 0
    for r in range(r0, r1):
        row_loss[r], c = softmax_xent(z[r:r + 1], labels[r:r + 1], delta[r:r + 1], scale)
        correct += c
    for l in range(n_layers - 1, 0, -1):
        w, _ = param_layer(theta, sizes, l)
        input_grad(act_view(acts, sizes, rows, l)[r0:r1], w, act_view(deltas, sizes, rows, l + 1)[r0:r1],
                   act_view(deltas, sizes, rows, l)[r0:r1])
    return correct


@njit(**JIT)
def weight_rows(theta, sizes, acts, deltas, rows, m, state, grad, hp, plain, lr, bc1, bc2, s, shards):
    """Part s of `shards` of every layer's weight rows (biases aside): their
    gradients from the m rows of the batch, then, unless the gradient norm is
    clipped (which needs the whole gradient first: into grad instead), the
    optimizer's step on them."""
    clip_norm = hp[CLIP_NORM] > 0
    for l in range(sizes.size - 1):
        x, delta = act_view(acts, sizes, rows, l)[:m], act_view(deltas, sizes, rows, l + 1)[:m]
        w, _ = param_layer(theta, sizes, l)
        k0, k1 = share(w.shape[0], shards, s)
        if clip_norm:
            weight_grads(x, delta, param_layer(grad, sizes, l)[0], k0, k1)
        else:
            update_rows(x, w, delta, param_layer(state[0], sizes, l)[0], param_layer(state[1], sizes, l)[0],
                        param_layer(state[2], sizes, l)[0], hp, plain, lr, bc1, bc2, k0, k1)


@njit(**JIT)
def finite(x):
    """Whether x is neither NaN nor infinite, in a form the fast-math flags cannot remove.

    Numba lowers np.isfinite(x) as x - x == 0, and when x is a sum (the loss
    added up across threads) the reassociation that JIT allows cancels x - x
    to 0: a diverged run went on training.  A NaN fails every comparison, and
    no reassociation turns this one into a constant.
    """
    return abs(x) < np.inf


# A training step on several threads is two parallel regions: one over the
# rows of the batch (batch_rows: the forward pass, the loss and back-
# propagation are row by row), one over the rows of the weights (weight_rows).
# No two threads ever write the same row, and every row is computed exactly
# as on one thread, so the weights come out bit for bit the same.  The
# default network's wide rows (128 and 64 floats) are whole cache lines, as
# the buffers start on one; narrower rows may share a line at the boundary
# between two threads' parts, which costs a little time, never correctness.
# The prange bodies only call plain kernels (array expressions written
# directly in a prange body become nested parallel loops, which gave wrong
# results), and the scratch arrays come from the caller (np.zeros in a
# parallel function is a parallel region of its own).

@njit(**JIT)
def share(n, shards, s):
    """Bounds (lo, hi) of part s when n items are split into `shards` contiguous parts."""
    per = -(-n // shards)
    return min(s * per, n), min((s + 1) * per, n)


@njit(**JIT_PARALLEL)
def batch_rows_threads(images, y, order, lo, m, theta, sizes, acts, deltas, labels, row_loss, scale, corrects):
    shards = corrects.size
    for s in prange(shards):
        r0, r1 = share(m, shards, s)
        corrects[s] = batch_rows(images, y, order, lo, theta, sizes, acts, deltas, labels, row_loss, r0, r1, scale)


@njit(**JIT_PARALLEL)
def weight_rows_threads(theta, sizes, acts, deltas, rows, m, state, grad, hp, plain, lr, bc1, bc2, shards):
    for s in prange(shards):
        weight_rows(theta, sizes, acts, deltas, rows, m, state, grad, hp, plain, lr, bc1, bc2, s, shards)


@njit(**JIT)
def train_chunk(images, y, order, start, n_batches, batch_size, sizes, theta, state, grad, step0, hp, plain,
                acts, deltas, labels, shards, loss0=0.0):
    """Train on n_batches mini-batches taken from order[start:], in one call.

    state is (3, n_params): the optimizer's v, m and b (rows it does not use
    are ignored); grad is a gradient-sized buffer used only when the global
    gradient norm is clipped, which needs the whole gradient before any
    update.  step0 is the number of updates made before this chunk (for the
    schedule and bias correction).  acts and deltas are flat buffers of
    batch_size rows of every layer (deltas block l+1 holds dLoss/d(pre-
    activation) of layer l).

    shards is the number of threads each step is split across (two parallel
    regions, see above); 1 runs everything on this thread.  It changes no
    number, so the host may choose it chunk by chunk (threads.py).

    Returns (loss0 + the batches' loss sum, correct count, samples seen, index
    of the batch whose loss was not finite, or -1).  Passing the previous
    part's sum as loss0 makes a chunk run in several parts sum its losses in
    the same order, to the bit, as one call.
    """
    n_layers = sizes.size - 1
    rows = labels.size
    clip_norm = hp[CLIP_NORM]
    v, m, b = state[0], state[1], state[2]
    row_loss, corrects = np.zeros(rows), np.zeros(shards, np.int64)
    loss_sum = loss0
    correct = 0
    seen = 0
    for bi in range(n_batches):
        lo = start + bi * batch_size
        m_rows = min(lo + batch_size, order.size) - lo
        if m_rows <= 0:
            break
        t = step0 + bi + 1
        lr = np.float32(learning_rate_at(hp, t))
        bc1, bc2 = bias_corrections(hp, t)
        scale = ONE / np.float32(m_rows)
        if shards > 1:
            batch_rows_threads(images, y, order, lo, m_rows, theta, sizes, acts, deltas, labels, row_loss, scale,
                               corrects)
            corr = 0
            for s in range(shards):
                corr += corrects[s]
        else:
            corr = batch_rows(images, y, order, lo, theta, sizes, acts, deltas, labels, row_loss, 0, m_rows, scale)
        loss = 0.0
        for r in range(m_rows):
            loss += row_loss[r]
        if not finite(loss):
            return loss_sum, correct, seen, bi
        loss_sum += loss
        correct += corr
        seen += m_rows
        if shards > 1:
            weight_rows_threads(theta, sizes, acts, deltas, rows, m_rows, state, grad, hp, plain, lr, bc1, bc2,
                                shards)
        else:
            weight_rows(theta, sizes, acts, deltas, rows, m_rows, state, grad, hp, plain, lr, bc1, bc2, 0, 1)
        for l in range(n_layers):
            delta = act_view(deltas, sizes, rows, l + 1)[:m_rows]
            if clip_norm > 0:
                bias_grad(delta, param_layer(grad, sizes, l)[1])
            else:
                bias_update(param_layer(theta, sizes, l)[1], delta, param_layer(v, sizes, l)[1],
                            param_layer(m, sizes, l)[1], param_layer(b, sizes, l)[1], hp, plain, lr, bc1, bc2)
        if clip_norm > 0:
            clip_global_norm(grad, np.float32(clip_norm))
            optimizer_update(theta, grad, v, m, b, hp, lr, bc1, bc2)
    return loss_sum, correct, seen, -1


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
def predict_proba(images, theta, sizes, acts, probs):
    """Class probabilities (softmax of the logits) of every image, in blocks of the buffer's height."""
    n_layers = sizes.size - 1
    rows = acts.size // sizes.sum()
    for start in range(0, images.shape[0], rows):
        m = min(rows, images.shape[0] - start)
        x0 = act_view(acts, sizes, rows, 0)
        for r in range(m):
            load_row(images, start + r, x0[r])
        forward(theta, sizes, acts, rows, 0, m)
        z = act_view(acts, sizes, rows, n_layers)
        for i in range(m):
            top = z[i].max()
            total = ZERO
            for j in range(z.shape[1]):
                e = np.exp(z[i, j] - top)
                probs[start + i, j] = e
                total += e
            for j in range(z.shape[1]):
                probs[start + i, j] /= total


@njit(**JIT)
def evaluate_rows(images, y, b0, b1, theta, sizes, acts, deltas, labels, confusion, block_loss):
    """Blocks b0:b1 of images, a block being as many rows as the buffers hold:
    each block's loss sum into block_loss[b], confusion[true, pred] += 1 for
    each row; returns the correct count."""
    n_layers = sizes.size - 1
    rows = labels.size
    correct = 0
    for blk in range(b0, b1):
        start = blk * rows
        m = min(rows, images.shape[0] - start)
        x0 = act_view(acts, sizes, rows, 0)
        for r in range(m):
            load_row(images, start + r, x0[r])
            labels[r] = y[start + r]
        forward(theta, sizes, acts, rows, 0, m)
        z = act_view(acts, sizes, rows, n_layers)[:m]
        block_loss[blk], corr = softmax_xent(z, labels[:m], act_view(deltas, sizes, rows, n_layers)[:m], ONE)
        correct += corr
        for i in range(m):
            confusion[labels[i], np.argmax(z[i])] += 1
    return correct


@njit(**JIT_PARALLEL)
def evaluate(images, y, theta, sizes, acts, deltas, labels, confusion):
    """Loss sum and correct count over all images; confusion[true, pred] += 1.

    Rows are split into one contiguous range of blocks per shard, each on its
    own thread with its own buffers and counts.  The blocks' losses are summed
    in block order at the end, so the loss is the same to the bit on any
    number of threads.  Weights are only read here, so the threads share them
    without contention.  (The shard's work is a separate function: array
    expressions written directly inside a prange body are turned into nested
    parallel loops, which gave wrong results.)
    """
    n_shards, rows = labels.shape
    n_blocks = -(-images.shape[0] // rows)
    block_loss = np.zeros(n_blocks)
    corrects = np.zeros(n_shards, np.int64)
    confusions = np.zeros((n_shards, confusion.shape[0], confusion.shape[1]), np.int64)
    for s in prange(n_shards):
        b0, b1 = share(n_blocks, n_shards, s)
        corrects[s] = evaluate_rows(images, y, b0, b1, theta, sizes, acts[s], deltas[s], labels[s], confusions[s],
                                    block_loss)
    loss = 0.0
    for blk in range(n_blocks):
        loss += block_loss[blk]
    for s in range(n_shards):
        confusion += confusions[s]
    return loss, corrects.sum()
