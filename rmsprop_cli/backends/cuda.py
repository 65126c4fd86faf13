"""Host side of the CUDA backend: uploads, launches, and the few numbers that come back.

For a whole run the images, labels, weights and optimizer state stay on the
GPU.  Per epoch, the shuffled order (drawn by the same numpy generator as on
the CPU, so both backends see the same batches) and the labels in that order
are uploaded once.  Per training step the host only launches kernels (two per
layer); per chunk of steps, the batches' loss sums and correct counts (a few
floats) come back for the progress bar and the NaN check.
"""

from __future__ import annotations

import numpy as np

from .. import model
from ..activations import ACTIVATIONS, IDENTITY
from ..hyper import CLIP_NORM
from ..kernels import math as schedule  # learning_rate_at and bias_corrections: host-side scalars, one definition
from .cpu import STATE_ROWS, pixels

EVAL_ROWS = 8192          # rows per forward pass in evaluation and prediction
ROW_THREADS = 128         # threads per block of the one-thread-per-row kernels
UPDATE_THREADS = 256      # threads per block of optimizer_update
PIXEL_SCALE = np.float32(255.0)
ACT_SCALE = np.float32(1.0)


def _blocks(n: int, per: int) -> int:
    return max(1, -(-n // per))


class CudaBackend:
    name = "cuda"

    def __init__(self, sizes, batch_size, optimizer, theta, opt_state, images=None, y=None, step=0):
        import warnings

        import numba
        from numba import cuda

        from ..kernels import cuda as kernels

        # A batch of 32 is a small grid by design (the forward pass of layer 0 is 16 blocks);
        # Numba's warning about it would print on every run.
        warnings.filterwarnings("ignore", message=r"Grid size .* will likely result in GPU under-utilization")
        self.simulator = bool(numba.config.ENABLE_CUDASIM)

        self.cuda, self.K = cuda, kernels
        self.sizes = tuple(int(s) for s in sizes)
        self.n_layers = len(self.sizes) - 1
        self.batch_size = batch_size
        self.names = optimizer.state_names
        self.hp = optimizer.hyperparameters()
        self.d_p = cuda.to_device(self.hp.astype(np.float32))   # what the kernels read: float32 (hyper.py)
        self.act = ACTIVATIONS[optimizer.recipe.activation].kind
        self.max_norm = np.float32(self.hp[CLIP_NORM])
        self.step = step  # updates made so far: the schedule and bias correction depend on it
        self.offsets = np.cumsum([0] + [int(np.prod(s)) for s in model.param_shapes(self.sizes)])[0::2][:-1]
        n = model.n_params(self.sizes)
        self.theta = cuda.to_device(np.zeros(n, np.float32))
        self.state = cuda.to_device(np.zeros((3, n), np.float32))  # rows v, m, b; unused rows stay zero
        self.set_state(theta, opt_state)
        self.grad = cuda.device_array(n if self.max_norm > 0 else 0, np.float32)
        self.sumsq = cuda.to_device(np.zeros(2))
        rows = max(1, min(batch_size, len(images))) if images is not None else 1
        self.acts = [cuda.device_array((rows, s), np.float32) for s in self.sizes[1:]]
        # dx[l]: dLoss/d(input of layer l) from layer l's backward kernel, as one partial sum
        # per column of its blocks (the layer below adds them); layer 0 needs none.
        tile = kernels.TILE
        self.dx = [cuda.device_array((0, rows, self.sizes[0]), np.float32)]
        self.dx += [cuda.device_array((_blocks(self.sizes[l + 1], tile), rows, self.sizes[l]), np.float32)
                    for l in range(1, self.n_layers)]
        self.no_parts = cuda.device_array((0, rows, self.sizes[-1]), np.float32)
        self.ident = cuda.to_device(np.arange(max(rows, EVAL_ROWS), dtype=np.int64))
        self.metrics = (cuda.device_array(0, np.float32), cuda.device_array(0, np.int32))
        self.eval_acts = None
        self.block = (kernels.TILE, kernels.TILE)
        self.launches = 0  # kernel launches of training steps (scripts/bench_gpu.py reports them per step)
        self._order = self._eval = None
        self._grids_cache, self._configured = {}, {}
        self.images = cuda.to_device(np.zeros((1, self.sizes[0]), np.uint8))
        self.y = np.zeros(0, np.int64)
        if images is not None:
            self._upload_training_data(images, y)

    # --- data -----------------------------------------------------------------------

    def _upload_training_data(self, images, y):
        """Once, from the constructor, which sized the batch buffers for these images."""
        self.images = self.cuda.to_device(pixels(images, self.sizes[0]))
        self.y = np.asarray(y, np.int64)
        self.first_image = images[:1]  # what warm_up evaluates
        self._order = None

    def _ident(self, n: int):
        """A device arange of at least n: the rows of data that is already in batch order."""
        if self.ident.size < n:
            self.ident = self.cuda.to_device(np.arange(n, dtype=np.int64))
        return self.ident

    def _use_order(self, order):
        """Upload an epoch's order and its labels once; fit() passes the same array for every chunk."""
        if order is not self._order:
            self._order = order
            self.d_order = self.cuda.to_device(np.ascontiguousarray(order, dtype=np.int64))
            self.d_labels = self.cuda.to_device(self.y[order].astype(np.int32))

    # --- training ---------------------------------------------------------------------

    def _launch(self, kernel, grid, block=None):
        """kernel[grid, block], configured once and kept (building a configuration is part of
        the launch overhead that dominates small batches).  Not on the simulator, whose
        kernel[grid, block] returns the kernel itself, reconfigured."""
        block = block or self.block
        if self.simulator:
            return kernel[grid, block]
        key = (id(kernel), grid, block)
        if key not in self._configured:
            self._configured[key] = kernel[grid, block]
        return self._configured[key]

    def _grids(self, l: int, m: int):
        """Grids of layer l's forward and backward kernels for batches of m rows (cached)."""
        key = (l, m)
        if key not in self._grids_cache:
            n_in, n_out = self.sizes[l], self.sizes[l + 1]
            tile = self.K.TILE
            self._grids_cache[key] = ((_blocks(n_out, tile), _blocks(m, tile)),
                                      (_blocks(n_out, tile), _blocks(n_in, self.K.DEPTH)))
        return self._grids_cache[key]

    def _layer_input(self, l: int, lo: int):
        """(x, rows, lo, scale) of layer l in a training step: the batch's images through the
        shuffled order for layer 0, else the previous layer's activations, already in batch order."""
        if l == 0:
            return self.images, self.d_order, lo, PIXEL_SCALE
        return self.acts[l - 1], self.ident, 0, ACT_SCALE

    def _train_step(self, lo: int, m: int, t: int, bi: int):
        """One mini-batch: rows order[lo:lo + m]; t is the 1-based update number."""
        lr = np.float32(schedule.learning_rate_at(self.hp, t - 1))
        bc1, bc2 = (np.float32(c) for c in schedule.bias_corrections(self.hp, t))
        last = self.n_layers - 1
        losses, corrects = self.metrics
        for l in range(self.n_layers):
            x, rows, xlo, scale = self._layer_input(l, lo)
            self._launch(self.K.dense_forward, self._grids(l, m)[0])(
                x, rows, xlo, m, scale, self.theta, self.offsets[l], self.act if l < last else IDENTITY,
                self.acts[l])
        parity = t % 2
        for l in range(last, -1, -1):
            x, rows, xlo, scale = self._layer_input(l, lo)
            dout = self.no_parts if l == last else self.dx[l + 1]
            self._launch(self.K.dense_backward_update, self._grids(l, m)[1])(
                x, rows, xlo, m, scale, self.theta, self.offsets[l], self.acts[l],
                self.act if l < last else IDENTITY, dout, self.d_labels, lo, self.state, self.d_p, lr, bc1, bc2, self.dx[l], self.grad, self.sumsq, parity, losses, corrects, bi)
        self.launches += 2 * self.n_layers
        if self.grad.size:
            self._launch(self.K.optimizer_update, _blocks(self.grad.size, UPDATE_THREADS), UPDATE_THREADS)(
                self.theta, self.state, self.grad, self.d_p, lr, bc1, bc2, self.sumsq, parity, self.max_norm)
            self.launches += 1

    def train_chunk(self, order, start, n_batches):
        self._use_order(order)
        if self.metrics[0].size < n_batches:
            self.metrics = (self.cuda.device_array(n_batches, np.float32),
                            self.cuda.device_array(n_batches, np.int32))
        sizes = []
        for bi in range(n_batches):
            lo = start + bi * self.batch_size
            m = min(lo + self.batch_size, len(order)) - lo
            if m <= 0:
                break
            self._train_step(lo, m, self.step + bi + 1, bi)
            sizes.append(m)
        done = len(sizes)
        losses = self.metrics[0].copy_to_host()[:done].astype(np.float64)
        corrects = self.metrics[1].copy_to_host()[:done]
        finite = np.isfinite(losses)
        bad = -1 if finite.all() else int(np.argmin(finite))
        kept = done if bad < 0 else bad
        self.step += kept
        return float(losses[:kept].sum()), int(corrects[:kept].sum()), int(sum(sizes[:kept])), bad

    def warm_up(self):
        """Compile every kernel of a run (or load it from the cache) on one real step, then put
        the weights, optimizer state and step counter back as they were."""
        if len(self.y) == 0 or self.simulator:
            return  # nothing to train on, or the simulator, which compiles nothing
        saved, step, launches = (self.params(), self.optimizer_state()), self.step, self.launches
        self.train_chunk(np.arange(1, dtype=np.int64), 0, 1)
        self.set_state(*saved)
        self.sumsq.copy_to_device(np.zeros(2))
        self.step, self.launches, self._order = step, launches, None
        self.evaluate(self.first_image, self.y[:1])
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

    def _forward_rows(self, d_images, start: int, m: int):
        """Logits of rows start:start + m of d_images, through every layer; returns the device logits."""
        if self.eval_acts is None:
            self.eval_acts = [self.cuda.device_array((EVAL_ROWS, s), np.float32) for s in self.sizes[1:]]
        tile = self.K.TILE
        x, rows, xlo, scale = d_images, self._ident(start + m), start, PIXEL_SCALE
        for l in range(self.n_layers):
            out = self.eval_acts[l]
            self._launch(self.K.dense_forward, (_blocks(self.sizes[l + 1], tile), _blocks(m, tile)))(
                x, rows, xlo, m, scale, self.theta, self.offsets[l],
                self.act if l < self.n_layers - 1 else IDENTITY, out)
            x, rows, xlo, scale = out, self.ident, 0, ACT_SCALE
        return self.eval_acts[-1]

    def evaluate(self, images, y):
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
            self._launch(self.K.evaluate_rows, _blocks(m, ROW_THREADS), ROW_THREADS)(
                z, d_y, start, m, losses, correct, d_confusion)
        loss = float(losses.copy_to_host().astype(np.float64).sum())
        return loss, int(correct.copy_to_host()[0]), d_confusion.copy_to_host()

    def predict_proba(self, images):
        n = len(images)
        probs = self.cuda.device_array((n, self.sizes[-1]), np.float32)
        d_images, _ = self._device_set(images)
        for start in range(0, n, EVAL_ROWS):
            m = min(EVAL_ROWS, n - start)
            z = self._forward_rows(d_images, start, m)
            self._launch(self.K.predict_proba, _blocks(m, ROW_THREADS), ROW_THREADS)(z, start, m, probs)
        return probs.copy_to_host()

    # --- state --------------------------------------------------------------------------

    def set_state(self, theta, opt_state):
        self.theta.copy_to_device(np.ascontiguousarray(theta, dtype=np.float32))
        state = np.zeros((3, self.theta.size), np.float32)
        for name in self.names:
            state[STATE_ROWS[name]] = opt_state[name]
        self.state.copy_to_device(state)

    def params(self):
        return self.theta.copy_to_host()

    def optimizer_state(self):
        state = self.state.copy_to_host()
        return {name: state[STATE_ROWS[name]].copy() for name in self.names}
