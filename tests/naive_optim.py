"""Float64 numpy references of the optimizers and learning-rate schedules, as
their sources define them (Keras 3, PyTorch, Optax; Kingma & Ba 2015; Chen et
al. 2023), written from those definitions and not from rmsprop_cli/kernels.

An optimizer is a function f(theta, g, s, lr, t, ...) -> new theta, which
updates the float64 arrays of its state dict s in place: s["v"] the squared-
gradient average or sum, s["m"] the mean gradient, s["b"] the momentum buffer
(the size of the step, as Keras' RMSprop keeps it).  lr is this update's
learning rate, t its 1-based number (for bias corrections).  A schedule is a
function of the number of updates already made (0 for the first), which is
how optax.GradientTransformation and Keras' LearningRateSchedule call it.
Nothing here imports the project.
"""

import math

import numpy as np


# --- gradient preprocessing -------------------------------------------------------

def clip_by_global_norm(g, max_norm):
    """optax.clip_by_global_norm, torch.nn.utils.clip_grad_norm_: g·min(1, max_norm/‖g‖₂)."""
    norm = math.sqrt(float(np.sum(g * g)))
    return g * (max_norm / norm) if norm > max_norm else g


def clip_by_value(g, c):
    """Keras clipvalue, optax.clip(c), torch clip_grad_value_: every element into [-c, c]."""
    return np.clip(g, -c, c)


def l2_decay(g, theta, wd):
    """PyTorch's weight_decay of RMSprop, SGD, Adagrad and Adam: grad = grad + wd·param."""
    return g + wd * theta


def decoupled_decay(theta, lr, wd):
    """Keras' weight_decay (Optimizer._apply_weight_decay: var -= var·wd·lr, before the step) and
    torch.optim.AdamW (param.mul_(1 − lr·wd)): the weights shrink, the gradient is untouched."""
    return theta - lr * wd * theta


# --- the optimizers ----------------------------------------------------------------

def rmsprop(theta, g, s, lr, t, rho=0.9, eps=1e-7, eps_outside=False, centered=False, momentum=0.0,
            nesterov=False, bias_correction=False, one_minus_rho=None):
    """Keras RMSprop: v = ρv + (1−ρ)g²; θ −= lr·g/√(v + ε); centered: √(v − m² + ε) with
    m = ρm + (1−ρ)g; momentum: b = μb + increment, θ −= b.
    PyTorch RMSprop puts ε outside: lr·g/(√(v − m²) + ε) (eps_outside).
    optax.scale_by_rms(bias_correction=True) divides v by 1 − ρ^t.
    Nesterov is optax.rmsprop(momentum=μ, nesterov=True): optax.trace after the learning rate,
    b = u + μb and the step u + μb (new b), u the increment; it is PyTorch SGD's Nesterov
    (g + μ·buf) applied to RMSProp's increment.
    one_minus_rho: the factor 1 − ρ (default: exact); a test passes float32's to model a defect."""
    a = 1.0 - rho if one_minus_rho is None else one_minus_rho
    s["v"] = rho * s["v"] + a * g * g
    v = s["v"] / (1.0 - rho ** t) if bias_correction else s["v"]
    if centered:
        s["m"] = rho * s["m"] + a * g
        v = v - s["m"] ** 2
    increment = lr * g / (np.sqrt(v) + eps) if eps_outside else lr * g / np.sqrt(v + eps)
    if momentum > 0:
        s["b"] = momentum * s["b"] + increment
        return theta - (increment + momentum * s["b"]) if nesterov else theta - s["b"]
    return theta - increment


def sgd(theta, g, s, lr, t, momentum=0.0, nesterov=False):
    """Keras SGD: velocity = μ·velocity − lr·g; θ += velocity, or with Nesterov θ += μ·velocity − lr·g.
    s["b"] keeps −velocity (the size of the step)."""
    if momentum == 0:
        return theta - lr * g
    velocity = momentum * -s["b"] - lr * g
    s["b"] = -velocity
    return theta + (momentum * velocity - lr * g if nesterov else velocity)


def adagrad(theta, g, s, lr, t, eps=1e-7, eps_outside=False, momentum=0.0, nesterov=False):
    """Keras Adagrad: accumulator += g²; θ −= lr·g/√(accumulator + ε) (also optax.scale_by_rss);
    PyTorch Adagrad: lr·g/(√state_sum + ε).  The accumulator starts at initial_accumulator_value
    (Keras and optax 0.1, PyTorch 0): the caller fills s["v"].  With momentum (no framework has
    it; this tool's earlier versions did): the increment goes through a trace, as in rmsprop."""
    s["v"] = s["v"] + g * g
    increment = lr * g / (np.sqrt(s["v"]) + eps) if eps_outside else lr * g / np.sqrt(s["v"] + eps)
    if momentum > 0:
        s["b"] = momentum * s["b"] + increment
        return theta - (increment + momentum * s["b"]) if nesterov else theta - s["b"]
    return theta - increment


def adam(theta, g, s, lr, t, beta1=0.9, beta2=0.999, eps=1e-7, one_minus_beta2=None):
    """Kingma & Ba Algorithm 1, torch.optim.Adam, optax.adam: m̂ = m/(1−β₁^t), v̂ = v/(1−β₂^t),
    θ −= lr·m̂/(√v̂ + ε).  (Keras 3 Adam scales lr by √(1−β₂^t)/(1−β₁^t) and adds ε unscaled,
    "epsilon hat": the same but for ε.)"""
    a2 = 1.0 - beta2 if one_minus_beta2 is None else one_minus_beta2
    s["m"] = beta1 * s["m"] + (1.0 - beta1) * g
    s["v"] = beta2 * s["v"] + a2 * g * g
    m_hat = s["m"] / (1.0 - beta1 ** t)
    v_hat = s["v"] / (1.0 - beta2 ** t)
    return theta - lr * m_hat / (np.sqrt(v_hat) + eps)


def lion(theta, g, s, lr, t, beta1=0.9, beta2=0.99, weight_decay=0.0):
    """optax.lion = chain(scale_by_lion(b1, b2), add_decayed_weights(wd), scale_by_learning_rate):
    u = sign(b1·m + (1−b1)·g); m = b2·m + (1−b2)·g; θ −= lr·(u + wd·θ)."""
    u = np.sign(beta1 * s["m"] + (1.0 - beta1) * g)
    s["m"] = beta2 * s["m"] + (1.0 - beta2) * g
    return theta - lr * (u + weight_decay * theta)


def lion_sign_is_moot(o, s, g):
    """Where lion's sign(b1·m + (1−b1)·g) of this update is within rounding of 0 (float32, whose m is
    itself a few 1e-6 off, may take the other sign); o and g as update() takes them."""
    if o.get("clip_norm"):
        g = clip_by_global_norm(g, o["clip_norm"])
    if o.get("clip_value"):
        g = clip_by_value(g, o["clip_value"])
    a, b = o["beta1"] * s["m"], (1 - o["beta1"]) * g
    return np.abs(a + b) <= 1e-5 * (np.abs(a) + np.abs(b))


def update(o, theta, g, s, lr, t):
    """One update of the optimizer that options o (a mapping with the recipe's field names) name:
    global-norm clipping, value clipping, weight decay, then the optimizer's formula."""
    name = o["optimizer"]
    if o.get("clip_norm"):
        g = clip_by_global_norm(g, o["clip_norm"])
    if o.get("clip_value"):
        g = clip_by_value(g, o["clip_value"])
    wd = o.get("weight_decay") or 0.0
    if name == "lion":
        return lion(theta, g, s, lr, t, o["beta1"], o["beta2"], wd)
    if wd and o.get("decoupled_decay"):
        theta = decoupled_decay(theta, lr, wd)
    elif wd:
        g = l2_decay(g, theta, wd)
    outside = o.get("eps_placement") == "outside"
    if name == "rmsprop":
        return rmsprop(theta, g, s, lr, t, o["rho"], o["eps"], outside, o.get("centered", False),
                       o.get("momentum") or 0.0, o.get("nesterov", False), o.get("bias_correction", False))
    if name in ("sgd", "momentum"):
        return sgd(theta, g, s, lr, t, o.get("momentum") or 0.0, o.get("nesterov", False))
    if name == "adagrad":
        return adagrad(theta, g, s, lr, t, o["eps"], outside, o.get("momentum") or 0.0, o.get("nesterov", False))
    if name == "adam":
        return adam(theta, g, s, lr, t, o["beta1"], o["beta2"], o["eps"])
    raise ValueError(name)


# --- learning-rate schedules: Optax ------------------------------------------------

def optax_constant_schedule(value):
    return lambda count: value


def optax_linear_schedule(init_value, end_value, transition_steps):
    """polynomial_schedule(power=1): count clipped to [0, T], init + (end − init)·count/T."""
    if transition_steps <= 0:
        return lambda count: init_value
    return lambda count: (init_value - end_value) * (1 - min(max(count, 0), transition_steps) / transition_steps) \
        + end_value


def optax_exponential_decay(init_value, transition_steps, decay_rate, transition_begin=0, staircase=False):
    """init·rate^((count − begin)/T), the exponent floored with staircase; init until count > begin."""
    def schedule(count):
        c = count - transition_begin
        p = c / transition_steps
        if staircase:
            p = math.floor(p)
        return init_value if c <= 0 else init_value * decay_rate ** p
    return schedule


def optax_cosine_decay_schedule(init_value, decay_steps, alpha=0.0, exponent=1.0):
    """init·((1 − α)·(½(1 + cos(π·min(count, T)/T)))^exponent + α)."""
    def schedule(count):
        count = min(count, decay_steps)
        cosine = 0.5 * (1 + math.cos(math.pi * count / decay_steps))
        return init_value * ((1 - alpha) * cosine ** exponent + alpha)
    return schedule


def optax_join_schedules(schedules, boundaries):
    """schedules[i](count − boundaries[i−1]) from boundaries[i−1] on."""
    def schedule(count):
        out = schedules[0](count)
        for boundary, later in zip(boundaries, schedules[1:]):
            out = out if count < boundary else later(count - boundary)
        return out
    return schedule


def optax_warmup_cosine_decay_schedule(init_value, peak_value, warmup_steps, decay_steps, end_value=0.0):
    """Linear warm-up to peak, then cosine decay over decay_steps − warmup_steps (decay_steps is the total)."""
    alpha = 0.0 if peak_value == 0.0 else end_value / peak_value
    return optax_join_schedules([optax_linear_schedule(init_value, peak_value, warmup_steps),
                                 optax_cosine_decay_schedule(peak_value, decay_steps - warmup_steps, alpha)],
                                [warmup_steps])


def optax_warmup_exponential_decay_schedule(init_value, peak_value, warmup_steps, transition_steps, decay_rate,
                                            transition_begin=0, staircase=False):
    return optax_join_schedules([optax_linear_schedule(init_value, peak_value, warmup_steps),
                                 optax_exponential_decay(peak_value, transition_steps, decay_rate, transition_begin,
                                                         staircase)],
                                [warmup_steps])


# --- learning-rate schedules: Keras ------------------------------------------------

def keras_exponential_decay(initial_learning_rate, decay_steps, decay_rate, staircase=False):
    """initial·rate^(step/decay_steps), the exponent floored with staircase."""
    def schedule(step):
        p = step / decay_steps
        return initial_learning_rate * decay_rate ** (math.floor(p) if staircase else p)
    return schedule


def keras_cosine_decay(initial_learning_rate, decay_steps, alpha=0.0, warmup_target=None, warmup_steps=0):
    """Keras CosineDecay: without warmup_target, initial·decayed(min(step, T)); with it, a linear
    warm-up from initial to warmup_target over warmup_steps, then warmup_target·decayed(step − W),
    decayed(x) = (1 − α)·½(1 + cos(π·x/T)) + α, step capped at T + W."""
    def decay(step, decay_from):
        completed_fraction = step / decay_steps
        return decay_from * ((1 - alpha) * 0.5 * (1.0 + math.cos(math.pi * completed_fraction)) + alpha)

    def schedule(step):
        if warmup_target is None:
            return decay(min(step, decay_steps), initial_learning_rate)
        step = min(step, decay_steps + warmup_steps)
        if step < warmup_steps:
            return (warmup_target - initial_learning_rate) * (step / warmup_steps) + initial_learning_rate
        return decay(step - warmup_steps, warmup_target)
    return schedule


def optax_schedule_of(o, steps_per_epoch):
    """The Optax schedule that a recipe's --schedule, --lr, --warmup-steps, --decay-steps and
    --decay-rate name (o: a mapping with those field names and epochs), as hyper.SCHEDULES says."""
    lr, warm, total = o["lr"], o.get("warmup_steps") or 0, o["epochs"] * steps_per_epoch
    kind = o.get("schedule") or "constant"
    if kind == "constant":
        return optax_linear_schedule(0.0, lr, warm) if warm else optax_constant_schedule(lr)
    if kind in ("step", "exponential"):
        steps, rate, stair = o.get("decay_steps") or steps_per_epoch, o["decay_rate"], kind == "step"
        if warm:
            return optax_warmup_exponential_decay_schedule(0.0, lr, warm, steps, rate, staircase=stair)
        return optax_exponential_decay(lr, steps, rate, staircase=stair)
    if kind == "cosine":
        return optax_warmup_cosine_decay_schedule(0.0, lr, warm, total) if warm \
            else optax_cosine_decay_schedule(lr, total)
    raise ValueError(kind)
