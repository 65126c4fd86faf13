"""Host side of the CPU backend: owns the buffers the Numba kernels write into."""

from __future__ import annotations

import numpy as np

from .. import model
from ..kernels import cpu as K

EVAL_BATCH = 512  # rows per forward pass in evaluation: big enough to amortise, small enough for L2


class CpuBackend:
    name = "cpu"

    def __init__(self, sizes, batch_size, optimizer, theta, opt_state, X=None, y=None):
        self.sizes = tuple(sizes)
        self.batch_size = batch_size
        self.hyper = optimizer.kernel_args()
        self.theta = np.ascontiguousarray(theta, dtype=np.float32)
        self.v = np.ascontiguousarray(opt_state["v"], dtype=np.float32)
        self.grad = np.zeros_like(self.theta)
        tv, gv = model.views(self.theta, sizes), model.views(self.grad, sizes)
        # Tuples, not lists: Numba types a tuple of same-typed arrays as one
        # UniTuple and compiles once per depth of network.
        self.ws, self.bs = tuple(tv[0::2]), tuple(tv[1::2])
        self.gws, self.gbs = tuple(gv[0::2]), tuple(gv[1::2])
        self.train_bufs = self._buffers(batch_size)
        self.eval_bufs = self._buffers(EVAL_BATCH)
        self.X = self.y = None
        if X is not None:
            self.set_training_data(X, y)

    def _buffers(self, rows):
        acts = tuple(np.zeros((rows, s), np.float32) for s in self.sizes)
        deltas = tuple(np.zeros((rows, s), np.float32) for s in self.sizes[1:])
        return acts, deltas, np.zeros(rows, np.int64)

    def set_training_data(self, X, y):
        self.X = np.ascontiguousarray(X, dtype=np.float32)
        self.y = np.ascontiguousarray(y, dtype=np.int64)

    def train_chunk(self, order, start, n_batches):
        acts, deltas, labels = self.train_bufs
        loss, correct, seen, bad = K.train_chunk(
            self.X, self.y, order, start, n_batches, self.batch_size,
            self.ws, self.bs, self.gws, self.gbs, self.theta, self.grad, self.v,
            acts, deltas, labels, *self.hyper)
        return float(loss), int(correct), int(seen), int(bad)

    def evaluate(self, X, y):
        acts, deltas, labels = self.eval_bufs
        confusion = np.zeros((self.sizes[-1], self.sizes[-1]), np.int64)
        X = np.ascontiguousarray(X, dtype=np.float32)
        y = np.ascontiguousarray(y, dtype=np.int64)
        loss, correct = K.evaluate(X, y, self.ws, self.bs, acts, deltas, labels, confusion)
        return float(loss), int(correct), confusion

    def params(self):
        return self.theta.copy()

    def optimizer_state(self):
        return {"v": self.v.copy()}
