"""Numba CPU kernels: dense layers, softmax cross-entropy, RMSProp, and the
fused training and evaluation loops that call them.

Layout: activations are (batch, features), row-major; a weight matrix is
(n_in, n_out), as Keras stores it, so row k of W (input k's fan-out) is
contiguous and the inner loops run along it, where LLVM vectorises them.
Every kernel is float32 end to end: scalars arrive as np.float32 and literals
are np.float32, because one float64 literal promotes a whole loop to float64.
"""

import numpy as np
from numba import njit

from ..config import JIT

ZERO = np.float32(0.0)
ONE = np.float32(1.0)
# Running averages of squared gradients of dead units decay geometrically into
# float32 denormals, and denormal arithmetic made whole epochs 2x slower.
# Anything below this is flushed to zero; it is far below any useful v.
FLUSH = np.float32(1e-30)


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
def dense_forward(x, w, b, out, relu):
    """out = x @ w + b, then ReLU if asked.  x (n, n_in), w (n_in, n_out).

    k runs outermost so that row k of w is read once per batch while the
    (n, n_out) output block stays in L1; inputs that are exactly zero (most
    MNIST pixels, about half of the ReLU outputs) are skipped.
    """
    n, n_in = x.shape
    n_out = w.shape[1]
    for i in range(n):
        for j in range(n_out):
            out[i, j] = b[j]
    rows = np.empty(n, np.int64)
    for k in range(n_in):
        count = nonzero_rows(x, k, rows)
        for t in range(count):
            i = rows[t]
            a = x[i, k]
            for j in range(n_out):
                out[i, j] += a * w[k, j]
    if relu:
        for i in range(n):
            for j in range(n_out):
                if out[i, j] < ZERO:
                    out[i, j] = ZERO


@njit(**JIT)
def dense_backward(x, w, delta, gw, gb, dx, want_dx):
    """Gradients of one dense layer given delta = dLoss/d(pre-activation).

    gw = x.T @ delta, gb = delta summed over the batch, and, if want_dx,
    dx = (delta @ w.T) masked by x > 0: x is the previous layer's ReLU output,
    so the mask is ReLU's derivative and masked entries need no dot product.
    """
    n, n_in = x.shape
    n_out = w.shape[1]
    for j in range(n_out):
        gb[j] = ZERO
    for i in range(n):
        for j in range(n_out):
            gb[j] += delta[i, j]
    rows = np.empty(n, np.int64)
    for k in range(n_in):
        for j in range(n_out):
            gw[k, j] = ZERO
        count = nonzero_rows(x, k, rows)
        for t in range(count):
            i = rows[t]
            a = x[i, k]
            for j in range(n_out):
                gw[k, j] += a * delta[i, j]
    if want_dx:
        for i in range(n):
            for k in range(n_in):
                if x[i, k] > ZERO:
                    s = ZERO
                    for j in range(n_out):
                        s += delta[i, j] * w[k, j]
                    dx[i, k] = s
                else:
                    dx[i, k] = ZERO


@njit(**JIT)
def softmax_xent(z, labels, delta):
    """Mean softmax cross-entropy of logits z (n, c) against integer labels.

    Writes delta = d(mean loss)/dz = (softmax(z) - onehot) / n and returns
    (sum of per-row losses, number of rows whose argmax is the label).
    Subtracting the row maximum keeps exp() finite for logits of any size;
    the loss is computed as log-sum-exp minus the label's logit, never as
    log(probability), so it stays finite when a probability underflows.
    """
    n, c = z.shape
    inv_n = ONE / np.float32(n)
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
            e = np.exp(z[i, j] - zmax)
            delta[i, j] = e
            total += e
        y = labels[i]
        loss += np.log(total) - (z[i, y] - zmax)
        correct += best == y
        scale = inv_n / total
        for j in range(c):
            delta[i, j] *= scale
        delta[i, y] -= inv_n
    return loss, correct


@njit(**JIT)
def rmsprop_update(theta, grad, v, lr, rho, eps, eps_outside):
    """One RMSProp step over flat parameter, gradient and accumulator arrays.

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
def forward(ws, bs, acts, m):
    """Run the first m rows of acts[0] through every layer; logits in acts[-1]."""
    n_layers = len(ws)
    for l in range(n_layers):
        dense_forward(acts[l][:m], ws[l], bs[l], acts[l + 1][:m], l < n_layers - 1)


@njit(**JIT)
def train_chunk(X, y, order, start, n_batches, batch_size,
                ws, bs, gws, gbs, theta, grad, v, acts, deltas, labels,
                lr, rho, eps, eps_outside):
    """Train on n_batches mini-batches taken from order[start:], in one call.

    ws/bs/gws/gbs are per-layer views into the flat theta and grad arrays, so
    the optimizer sweeps one contiguous array.  acts[l] and deltas[l] are
    preallocated (batch_size, width) buffers; acts[0] receives the gathered
    batch.  Returns (loss sum, correct count, samples seen, index of the batch
    whose loss was not finite or -1).
    """
    n_layers = len(ws)
    n_total = order.size
    loss_sum = 0.0
    correct = 0
    seen = 0
    for bi in range(n_batches):
        lo = start + bi * batch_size
        hi = min(lo + batch_size, n_total)
        m = hi - lo
        if m <= 0:
            break
        x0 = acts[0]
        for r in range(m):
            src = order[lo + r]
            x0[r, :] = X[src]
            labels[r] = y[src]
        forward(ws, bs, acts, m)
        loss, corr = softmax_xent(acts[n_layers][:m], labels[:m], deltas[n_layers - 1][:m])
        if not np.isfinite(loss):
            return loss_sum, correct, seen, bi
        loss_sum += loss
        correct += corr
        seen += m
        for l in range(n_layers - 1, -1, -1):
            # deltas[l-1] is only written when l > 0; index 0 is a placeholder.
            dense_backward(acts[l][:m], ws[l], deltas[l][:m], gws[l], gbs[l],
                           deltas[max(l - 1, 0)][:m], l > 0)
        rmsprop_update(theta, grad, v, lr, rho, eps, eps_outside)
    return loss_sum, correct, seen, -1


@njit(**JIT)
def evaluate(X, y, ws, bs, acts, deltas, labels, confusion):
    """Loss sum and correct count over all of X; confusion[true, pred] += 1."""
    n_layers = len(ws)
    batch = acts[0].shape[0]
    loss_sum = 0.0
    correct = 0
    for lo in range(0, X.shape[0], batch):
        m = min(batch, X.shape[0] - lo)
        acts[0][:m] = X[lo:lo + m]
        labels[:m] = y[lo:lo + m]
        forward(ws, bs, acts, m)
        z = acts[n_layers][:m]
        loss, corr = softmax_xent(z, labels[:m], deltas[n_layers - 1][:m])
        loss_sum += loss
        correct += corr
        for i in range(m):
            confusion[labels[i], np.argmax(z[i])] += 1
    return loss_sum, correct
