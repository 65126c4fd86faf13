"""The scalar maths both targets share: each optimizer's per-element update,
each activation with its derivative, the softmax term, and the host-side
scalars of a step (its learning rate and bias corrections).

Every function decorated @shared is one plain Python function, registered
with Numba for the CPU here (register_jitable: the CPU loops in cpu.py call it
and LLVM inlines it into them) and for CUDA by register_cuda(), which
kernels/cuda.py calls before it defines its kernels: the same source is
compiled for both targets, as umap compiles one function twice.

Conventions: the kernels are float32 (scalars come in as float32, literals
are the constants below; one float64 literal would promote a loop to float64);
Numba's math functions keep their argument's type, so the same functions also
run in float64 where a test needs it (finite differences).
p is the hyperparameter vector as float32 (hyper.py gives the indices): a
tuple on the CPU, read once before a loop so that LLVM hoists every option's
branch out of it and vectorises each case; a device array on CUDA.  An
update takes (theta, g, v, m, b) of one parameter and returns the new
(theta, v, m, b); buffers an optimizer does not keep pass through unchanged.
Selects rather than min/max wherever a NaN must survive (a diverging run is
detected by its loss): min and max may drop a NaN operand.
"""

import math

import numpy as np
from numba import njit
from numba.extending import register_jitable

from ..activations import RELU, SIGMOID, TANH
from ..config import FASTMATH, JIT
from ..hyper import (BETA1, BETA2, BIAS1, BIAS2, CENTERED, CLIP_VALUE, COSINE, DECAY_RATE, DECAY_STEPS, DECOUPLED, EPS,
                     EPS_OUTSIDE, EXPONENTIAL, LR, MOMENTUM, NESTEROV, ONE_MINUS_BETA1, ONE_MINUS_BETA2, ONE_MINUS_RHO,
                     RHO, SCHEDULE, STEP, TOTAL_STEPS, WARMUP, WEIGHT_DECAY)
from ..optim import ADAGRAD, ADAM, LION, MOMENTUM_SGD, RMSPROP, SGD

ZERO = np.float32(0.0)
ONE = np.float32(1.0)
# Running averages of squared gradients of dead units decay geometrically into
# float32 denormals, and denormal arithmetic made whole epochs 2x slower.
# Anything below this is flushed to zero; it is far below any useful v.
FLUSH = np.float32(1e-30)
# Classes 60 logits below the top get probability exactly 0 (it would be
# < 1e-26): their tiny gradients would otherwise become float32 denormals in
# backprop, and denormals made every step 2x slower.
LOGIT_FLOOR = np.float32(-60.0)

SHARED = []


def shared(fn):
    """Compile fn for the CPU now (CUDA: register_cuda); fn stays a plain Python function."""
    SHARED.append(fn)
    return register_jitable(fastmath=set(FASTMATH), error_model=JIT["error_model"])(fn)


_on_cuda = []


def register_cuda():
    """Make every shared function callable from CUDA kernels (once)."""
    if not _on_cuda:
        from numba.cuda.extending import register_jitable as register_for_cuda

        for fn in SHARED:
            register_for_cuda(fn)
        _on_cuda.append(True)


@shared
def flush(x):
    """x, or 0 when it is below FLUSH in size (a NaN is kept)."""
    return ZERO if abs(x) < FLUSH else x


@shared
def softmax_term(d):
    """exp(d) for d = logit - row maximum; 0 below LOGIT_FLOOR."""
    return ZERO if d <= LOGIT_FLOOR else math.exp(d)   # a NaN logit stays NaN, for the divergence check


# --- activations: forward and derivative side by side ------------------------------

@shared
def activate(kind, z):
    """The activation of pre-activation z (activations.py; kind 0: none)."""
    if kind == RELU:
        return ZERO if z < ZERO else z
    if kind == TANH:
        return math.tanh(z)
    if kind == SIGMOID:
        # exp of a negative number only, which never overflows (nor raises, on the CUDA simulator)
        if z >= ZERO:
            return ONE / (ONE + math.exp(-z))
        e = math.exp(z)
        return e / (ONE + e)
    return z


@shared
def activation_grad(kind, a):
    """d activation / dz, from the activation's output a."""
    if kind == RELU:
        return ONE if a > ZERO else ZERO
    if kind == TANH:
        return ONE - a * a
    if kind == SIGMOID:
        return a * (ONE - a)
    return ONE


# --- optimizers: the parts every one shares, then one update each ------------------

@shared
def prepare(theta, g, p, lr):
    """Clip g to [-c, c]; weight decay, decoupled (θ ← θ − η·λ·θ, Keras, AdamW,
    Lion) or as an L2 term of the gradient (g + λ·θ, PyTorch)."""
    c = p[CLIP_VALUE]
    if c > ZERO:
        g = -c if g < -c else (c if g > c else g)
    wd = p[WEIGHT_DECAY]
    if wd > ZERO:
        if p[DECOUPLED] != ZERO:
            theta = theta - lr * wd * theta
        else:
            g = g + wd * theta
    return theta, g


@shared
def finish(theta, u, b, p):
    """Momentum (b ← μ·b + u, the step b, or u + μ·b for Nesterov), then θ − step."""
    mu = p[MOMENTUM]
    if mu > ZERO:
        b = flush(mu * b + u)
        u = u + mu * b if p[NESTEROV] != ZERO else b
    return theta - u, b


@shared
def average(a, x, d, w):
    """The running average a ← d·a + (1−d)·x, w = 1−d rounded once (hyper.py).

    For d ≥ 1/2 as a + w·(x − a), with the one factor w: float32(d) +
    float32(1 − d) is not 1 (1 + 1.3e-8 for d = 0.999), and once t ≫ 1/(1 − d)
    the two-factor form's weights sum to 1 + 1.3e-5, a bias as large as the
    one computing 1 − d in float32 caused.  For d < 1/2 the memory is a step
    or two, so that bias cannot build up, while a + w·(x − a) would lose x
    where it is far below a (d = 0 must give x exactly)."""
    if d >= np.float32(0.5):
        return a + w * (x - a)
    return d * a + w * x


@shared
def scaled(u, s, p):
    """u/√(s + ε), or u/(√s + ε) with eps outside."""
    if p[EPS_OUTSIDE] != ZERO:
        return u / (math.sqrt(s) + p[EPS])
    return u / math.sqrt(s + p[EPS])


@shared
def rmsprop(theta, g, v, m, b, p, lr, bc1, bc2):
    """v ← ρv + (1−ρ)g²; centered: m ← ρm + (1−ρ)g and v − m² in its place;
    bias-corrected v/(1 − ρ^t) (bc2); θ ← θ − η·g/√(v + ε)."""
    theta, g = prepare(theta, g, p, lr)
    v = flush(average(v, g * g, p[RHO], p[ONE_MINUS_RHO]))
    s = v * bc2
    if p[CENTERED] != ZERO:
        m = flush(average(m, g, p[RHO], p[ONE_MINUS_RHO]))
        s = s - m * m
        s = ZERO if s < ZERO else s
    theta, b = finish(theta, scaled(lr * g, s, p), b, p)
    return theta, v, m, b


@shared
def sgd(theta, g, v, m, b, p, lr, bc1, bc2):
    """θ ← θ − η·g (momentum in finish)."""
    theta, g = prepare(theta, g, p, lr)
    theta, b = finish(theta, lr * g, b, p)
    return theta, v, m, b


@shared
def adagrad(theta, g, v, m, b, p, lr, bc1, bc2):
    """v ← v + g²; θ ← θ − η·g/√(v + ε)."""
    theta, g = prepare(theta, g, p, lr)
    v = v + g * g
    theta, b = finish(theta, scaled(lr * g, v, p), b, p)
    return theta, v, m, b


@shared
def adam(theta, g, v, m, b, p, lr, bc1, bc2):
    """m ← β₁m + (1−β₁)g; v ← β₂v + (1−β₂)g²; θ ← θ − η·m̂/(√v̂ + ε), m̂ = m·bc1, v̂ = v·bc2."""
    theta, g = prepare(theta, g, p, lr)
    m = flush(average(m, g, p[BETA1], p[ONE_MINUS_BETA1]))
    v = flush(average(v, g * g, p[BETA2], p[ONE_MINUS_BETA2]))
    theta, b = finish(theta, lr * (m * bc1) / (math.sqrt(v * bc2) + p[EPS]), b, p)
    return theta, v, m, b


@shared
def lion(theta, g, v, m, b, p, lr, bc1, bc2):
    """u = sign(β₁m + (1−β₁)g); m ← β₂m + (1−β₂)g; θ ← θ − η·u (decay decoupled, in prepare)."""
    theta, g = prepare(theta, g, p, lr)
    c = average(m, g, p[BETA1], p[ONE_MINUS_BETA1])
    u = ONE if c > ZERO else (-ONE if c < ZERO else c)   # sign, keeping 0 and NaN
    m = flush(average(m, g, p[BETA2], p[ONE_MINUS_BETA2]))
    theta, b = finish(theta, lr * u, b, p)
    return theta, v, m, b


@shared
def step(kind, theta, g, v, m, b, p, lr, bc1, bc2):
    """The update of optimizer `kind` (optim.py's registry), for one element:
    what a CUDA thread calls.  The CPU loop (updates.optimizer_update) makes the
    same choice inside its own loop, where LLVM can unswitch it."""
    if kind == RMSPROP:
        return rmsprop(theta, g, v, m, b, p, lr, bc1, bc2)
    if kind == ADAGRAD:
        return adagrad(theta, g, v, m, b, p, lr, bc1, bc2)
    if kind == ADAM:
        return adam(theta, g, v, m, b, p, lr, bc1, bc2)
    if kind == LION:
        return lion(theta, g, v, m, b, p, lr, bc1, bc2)
    if kind == SGD or kind == MOMENTUM_SGD:
        return sgd(theta, g, v, m, b, p, lr, bc1, bc2)
    return theta, v, m, b


# --- the host-side scalars of a step, in float64 -----------------------------------

@njit(**JIT)
def learning_rate_at(hp, count):
    """The learning rate of the update made after `count` updates (0 for the
    first), as Optax's and Keras' schedules define it: a linear warm-up from 0,
    then the schedule over the updates after it (hyper.SCHEDULES)."""
    base, warm = hp[LR], hp[WARMUP]
    if count < warm:
        return base * count / warm
    s = count - warm
    kind = int(hp[SCHEDULE])
    if kind == STEP:
        return base * hp[DECAY_RATE] ** np.floor(s / hp[DECAY_STEPS])
    if kind == EXPONENTIAL:
        return base * hp[DECAY_RATE] ** (s / hp[DECAY_STEPS])
    if kind == COSINE:
        span = max(hp[TOTAL_STEPS] - warm, 1.0)
        return base * 0.5 * (1.0 + np.cos(np.pi * min(s, span) / span))
    return base


@njit(**JIT)
def bias_corrections(hp, t):
    """(1/(1 − d₁^t), 1/(1 − d₂^t)) for update t (1-based), d the decays the
    vector names (Adam's β₁, β₂; ρ twice for RMSProp with bias correction);
    1 where there is none."""
    d1, d2 = hp[BIAS1], hp[BIAS2]
    c1 = 1.0 / (1.0 - d1 ** t) if d1 > 0 else 1.0
    c2 = 1.0 / (1.0 - d2 ** t) if d2 > 0 else 1.0
    return np.float32(c1), np.float32(c2)


@njit(**JIT)
def schedule_table(hp, step0, out):
    """out[i] = (learning rate, bias corrections) of update step0 + i + 1, as
    float32: a CUDA chunk's per-step scalars, which its kernels read from the
    device (kernels/cuda_layout.py) instead of taking them from the host."""
    for i in range(out.shape[0]):
        out[i, 0] = np.float32(learning_rate_at(hp, step0 + i))
        out[i, 1], out[i, 2] = bias_corrections(hp, step0 + i + 1)
