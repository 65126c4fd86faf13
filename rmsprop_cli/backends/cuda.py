"""Host side of the CUDA backend: uploads, launches, and the few numbers that come back.

For a whole run the images, weights and optimizer state stay on the GPU, in
the one float buffer of kernels/cuda_layout.py.  Per epoch, the shuffled
order (drawn by the same numpy generator as on the CPU, so both backends see
the same batches) and the labels in that order are uploaded once.  Per chunk
of steps, the chunk's first row and each step's learning rate and bias
corrections go up and each step's loss sum and correct count (a few floats)
come back, for the progress bar and the divergence check.  Per training step
the host only launches two kernels (three with --clip-norm), with the same
arguments every time (cuda_launch.py).
"""

from __future__ import annotations

import functools

import numpy as np

from .. import model
from ..activations import ACTIVATIONS, IDENTITY
from ..hyper import CLIP_NORM
from ..kernels import math as schedule  # the per-step scalars: one definition, on the host
from ..kernels.cuda_layout import (N_ROWS, ROW_THREADS, START, STEP_A, TABLE_STEPS, UPDATE_THREADS, Layout, blocks)
from . import cuda_failure, is_cuda_error
from .cpu import STATE_ROWS, pixels
from .cuda_launch import Launch

EVAL_ROWS = 8192          # rows per forward pass in evaluation and prediction
PIXEL_SCALE = np.float32(255.0)
ACT_SCALE = np.float32(1.0)


def _cuda_errors(when: str):
    """A method whose CUDA failures (a launch that failed, a GPU that fell off the bus) become one line, exit 7."""
    def wrap(method):
        @functools.wraps(method)
        def call(self, *args, **kwargs):
            try:
                return method(self, *args, **kwargs)
            except Exception as e:
                if not is_cuda_error(e):
                    raise
                raise cuda_failure(e, when) from e   # the CLI prints one line; the cause stays for a debugger
        return call
    return wrap


class CudaBackend:
    name = "cuda"
    # Threads per block of batch_rows.  Its loops take any number, and the tests on the simulator
    # (where each thread is a Python thread) use fewer; on a GPU, 128.
    row_threads = ROW_THREADS

    @_cuda_errors("while setting up the GPU's buffers")
    def __init__(self, sizes, batch_size, optimizer, theta, opt_state, images=None, y=None, step=0):
        import warnings

        import numba
        from numba import cuda

        from ..kernels import cuda as kernels
        from ..kernels import cuda_steps

        # A batch of 32 is a small grid by design; Numba's warning about it would print on every run.
        warnings.filterwarnings("ignore", message=r"Grid size .* will likely result in GPU under-utilization")
        self.simulator = bool(numba.config.ENABLE_CUDASIM)
        self.cuda, self.K, self.S = cuda, kernels, cuda_steps
        self.sizes = tuple(int(s) for s in sizes)
        self.n_layers = len(self.sizes) - 1
        self.batch_size = batch_size
        self.names = optimizer.state_names
        self.hp = optimizer.hyperparameters()
        self.act = ACTIVATIONS[optimizer.recipe.activation].kind
        self.step = step  # updates made so far: the schedule and bias correction depend on it
        self.offsets = np.cumsum([0] + [int(np.prod(s)) for s in model.param_shapes(self.sizes)])[0::2][:-1]
        rows = max(1, min(batch_size, len(images))) if images is not None else 1
        self.layout = Layout(self.sizes, rows, bool(self.hp[CLIP_NORM] > 0))
        self.regions = r = self.layout.regions()
        self.meta_host = self.layout.meta()
        n = self.layout.n_params
        self.buf = cuda.to_device(np.zeros(r["end"], np.float32))
        self.meta = cuda.to_device(self.meta_host)
        self.theta = self.buf[r["theta"]:r["theta"] + n]
        self.state = self.buf[r["v"]:r["v"] + 3 * n]       # rows v, m, b; unused rows stay zero
        self.d_stats = self.buf[r["stats"]:r["stats"] + 2 * TABLE_STEPS]
        self.d_table = self.buf[r["table"]:r["table"] + 3 * TABLE_STEPS]
        self.buf[r["hyper"]:r["hyper"] + self.hp.size].copy_to_device(self.hp.astype(np.float32))
        self.set_state(theta, opt_state)
        self.table = np.zeros((TABLE_STEPS, 3), np.float32)
        self.ident = cuda.to_device(np.arange(EVAL_ROWS, dtype=np.int64))
        self.eval_acts = None
        self.launches = 0  # kernel launches of training steps (scripts/bench_gpu.py reports them per step)
        self.launch_path = "public"   # or "prepared", once warm_up has checked it
        self._order = self._eval = None
        self.images = cuda.to_device(np.zeros((1, self.sizes[0]), np.uint8))
        self.order = cuda.to_device(np.zeros((2, 1), np.int32))
        self.y = np.zeros(0, np.int64)
        if images is not None:
            self.images = cuda.to_device(pixels(images, self.sizes[0]))
            self.y = np.asarray(y, np.int64)
            self.first_image = images[:1]  # what warm_up evaluates
            self.order = cuda.to_device(np.zeros((2, max(1, len(self.y))), np.int32))
        self.steps = self._step_launches()

    def _step_launches(self) -> list[Launch]:
        S, layout, sim = self.S, self.layout, self.simulator
        launches = [Launch(S.batch_rows, layout.rows, self.row_threads, (self.images, self.order, self.buf, self.meta), sim),
                    Launch(S.weight_rows, layout.update_blocks, UPDATE_THREADS, (self.buf, self.meta), sim)]
        if layout.clip:
            launches.append(Launch(S.update_whole, layout.update_blocks, UPDATE_THREADS, (self.buf, self.meta), sim))
        return launches

    # --- training ---------------------------------------------------------------------

    def _use_order(self, order):
        """Upload an epoch's order and its labels once; fit() passes the same array for every chunk."""
        if order is not self._order:
            self._order = order
            both = np.zeros((2, self.order.shape[1]), np.int32)
            both[0, :len(order)] = order
            both[1, :len(order)] = self.y[order]
            self.order.copy_to_device(both)

    def start_part(self, lo: int, count: int, n_rows: int):
        """Before count steps from position lo of an order of n_rows: their scalars and the counters."""
        schedule.schedule_table(self.hp, self.step, self.table[:count])
        self.d_table[:3 * count].copy_to_device(self.table[:count].ravel())
        self.meta_host[[STEP_A, START, N_ROWS]] = 0, lo, n_rows
        self.meta.copy_to_device(self.meta_host)

    def launch_steps(self, count: int):
        """count training steps: the host's whole work per step (scripts/bench_gpu.py times it)."""
        steps = self.steps
        for _ in range(count):
            for launch in steps:
                launch()
        self.launches += count * len(steps)

    def _run_part(self, lo: int, count: int, n_rows: int):
        """count steps from position lo of the order; returns the device's (mean loss, correct) of each,
        correct -1 for the step whose loss was not finite (none runs after it)."""
        self.start_part(lo, count, n_rows)
        self.launch_steps(count)
        return self.d_stats[:2 * count].copy_to_host().reshape(count, 2)

    @_cuda_errors("while training")
    def train_chunk(self, order, start, n_batches):
        return self._train_chunk(order, start, n_batches)

    def _train_chunk(self, order, start, n_batches):
        self._use_order(order)
        n_rows, batch = len(order), self.batch_size
        losses, corrects, seen = [], [], 0
        for first in range(0, n_batches, TABLE_STEPS):
            lo = start + first * batch
            count = min(TABLE_STEPS, n_batches - first, blocks(n_rows - lo, batch) if lo < n_rows else 0)
            if count <= 0:
                break
            stats = self._run_part(lo, count, n_rows)
            rows = np.minimum(batch, n_rows - (lo + batch * np.arange(count)))
            bad = np.flatnonzero(stats[:, 1] < 0)   # the device's own verdict: it stopped there
            kept = count if bad.size == 0 else int(bad[0])
            losses.append(stats[:kept, 0].astype(np.float64) * rows[:kept])
            corrects.append(stats[:kept, 1].astype(np.int64))
            seen += int(rows[:kept].sum())
            self.step += kept
            if bad.size:
                return float(np.concatenate(losses).sum()), int(np.concatenate(corrects).sum()), seen, first + kept
        if not losses:
            return 0.0, 0, 0, -1
        return float(np.concatenate(losses).sum()), int(np.concatenate(corrects).sum()), seen, -1

    def warm_up(self):
        """Compile every kernel of a run (or load it from the cache) on one real step, check the
        prepared launches against the public ones on that step, then put everything back as it was.
        Any CUDA failure here (a driver too old for the PTX, too little memory) is a DeviceError."""
        if len(self.y) == 0 or self.simulator:
            return  # nothing to train on, or the simulator, which compiles nothing
        self._warm_up()

    def _one_step(self):
        self._train_chunk(np.arange(1, dtype=np.int64), 0, 1)
        return self.buf.copy_to_host().view(np.uint32), self.meta.copy_to_host()

    @_cuda_errors("while compiling and starting the kernels")
    def _warm_up(self):
        saved, step, launches = self.buf.copy_to_host(), self.step, self.launches
        public = self._one_step()
        self.buf.copy_to_device(saved)
        self.step = step
        try:
            for launch in self.steps:
                launch.prepare()
            prepared = self._one_step()
            same = all(np.array_equal(a, b) for a, b in zip(public, prepared))
        except Exception:
            same = False
        if same:
            self.launch_path = "prepared"
        else:
            for launch in self.steps:
                launch.unprepare()
        self.buf.copy_to_device(saved)
        self.step, self.launches, self._order = step, launches, None
        self._evaluate(self.first_image, self.y[:1])
        self._eval = None

    # --- inference --------------------------------------------------------------------

    def _device_set(self, images, y=None):
        """The evaluated images (and labels) on the device, kept while the same arrays come back
        (the validation set, every epoch)."""
        if self._eval is None or self._eval[0] is not images or self._eval[1] is not y:
            d_images = self.cuda.to_device(pixels(images, self.sizes[0]))
            d_y = self.cuda.to_device(np.asarray(y, np.int32)) if y is not None else None
            self._eval = (images, y, d_images, d_y)
        return self._eval[2], self._eval[3]

    def _ident(self, n: int):
        """A device arange of at least n: the rows of data that is already in order."""
        if self.ident.size < n:
            self.ident = self.cuda.to_device(np.arange(n, dtype=np.int64))
        return self.ident

    def _forward_rows(self, d_images, start: int, m: int):
        """Logits of rows start:start + m of d_images, through every layer; returns the device logits."""
        if self.eval_acts is None:
            self.eval_acts = [self.cuda.device_array((EVAL_ROWS, s), np.float32) for s in self.sizes[1:]]
        tile = self.K.TILE
        x, rows, xlo, scale = d_images, self._ident(start + m), start, PIXEL_SCALE
        for l in range(self.n_layers):
            out = self.eval_acts[l]
            self.K.dense_forward[(blocks(self.sizes[l + 1], tile), blocks(m, tile)), (tile, tile)](
                x, rows, xlo, m, scale, self.theta, self.offsets[l],
                self.act if l < self.n_layers - 1 else IDENTITY, out)
            x, rows, xlo, scale = out, self.ident, 0, ACT_SCALE
        return self.eval_acts[-1]

    @_cuda_errors("while evaluating")
    def evaluate(self, images, y):
        return self._evaluate(images, y)

    def _evaluate(self, images, y):
        n, n_classes = len(images), self.sizes[-1]
        confusion = np.zeros((n_classes, n_classes), np.int64)
        if n == 0:
            return 0.0, 0, confusion
        d_images, d_y = self._device_set(images, y)
        losses = self.cuda.device_array(n, np.float32)
        correct = self.cuda.to_device(np.zeros(1, np.int64))
        d_confusion = self.cuda.to_device(confusion)
        for start in range(0, n, EVAL_ROWS):
            m = min(EVAL_ROWS, n - start)
            z = self._forward_rows(d_images, start, m)
            self.K.evaluate_rows[blocks(m, ROW_THREADS), ROW_THREADS](z, d_y, start, m, losses, correct, d_confusion)
        loss = float(losses.copy_to_host().astype(np.float64).sum())
        return loss, int(correct.copy_to_host()[0]), d_confusion.copy_to_host()

    @_cuda_errors("while predicting")
    def predict_proba(self, images):
        n = len(images)
        probs = self.cuda.device_array((n, self.sizes[-1]), np.float32)
        d_images, _ = self._device_set(images)
        for start in range(0, n, EVAL_ROWS):
            m = min(EVAL_ROWS, n - start)
            z = self._forward_rows(d_images, start, m)
            self.K.predict_proba[blocks(m, ROW_THREADS), ROW_THREADS](z, start, m, probs)
        return probs.copy_to_host()

    # --- state --------------------------------------------------------------------------

    @_cuda_errors("while copying the weights")
    def set_state(self, theta, opt_state):
        n = self.layout.n_params
        self.theta.copy_to_device(np.ascontiguousarray(theta, dtype=np.float32))
        state = np.zeros((3, n), np.float32)
        for name in self.names:
            state[STATE_ROWS[name]] = opt_state[name]
        self.state.copy_to_device(state.ravel())

    @_cuda_errors("while copying the weights")
    def params(self):
        return self.theta.copy_to_host()

    @_cuda_errors("while copying the weights")
    def optimizer_state(self):
        state = self.state.copy_to_host().reshape(3, -1)
        return {name: state[STATE_ROWS[name]].copy() for name in self.names}
