"""Host side of the CPU backend: owns the buffers the Numba kernels write into."""

from __future__ import annotations

import time
from contextlib import contextmanager

import numpy as np

from .. import threads
from ..activations import ACTIVATIONS
from ..hyper import CLIP_NORM
from ..kernels import steps as K

EVAL_ROWS = 512  # rows per forward pass in evaluation: big enough to amortise, small enough for L2
STATE_ROWS = {"v": 0, "m": 1, "b": 2}
MIN_SHARD_ROWS = 8  # below this a thread's share of a batch costs more to hand out than to compute


# Numba threading layers under which a training step is split across threads.
# A step at batch 32 takes about a quarter of a millisecond, in two parallel
# regions, so the threads must wait for the next region spinning: OpenMP's
# do (two threads trained up to 1.4 times faster than one here), while
# Numba's fallback 'workqueue' layer, used where neither an OpenMP nor a TBB
# runtime is found, made two threads train twice as slowly as one.  TBB
# could not be loaded here to be measured, so under it training stays on one
# thread too.
SPLIT_LAYERS = ("omp",)


def threading_layer() -> str:
    """The threading layer Numba runs parallel kernels on.  Numba picks it at
    the first parallel launch, so if none has happened, an empty evaluation
    (a cached kernel) makes one."""
    import numba

    try:
        return numba.threading_layer()
    except ValueError:
        one = np.ones(2, np.int64)
        K.evaluate(np.zeros((0, 1), np.uint8), np.zeros(0, np.int64), np.zeros(2, np.float32), one,
                   *shard_buffers(one, 1, 1), np.zeros((1, 1), np.int64), 0)
        return numba.threading_layer()


def training_shards(rows: int) -> int:
    """The most threads a training step on `rows` rows is split across (see
    SPLIT_LAYERS); threads.ThreadPolicy chooses how many of them each chunk uses."""
    return n_shards(rows) if threading_layer() in SPLIT_LAYERS else 1


@contextmanager
def numba_threads(n: int):
    """Numba's parallel regions on n threads for a while.  Where n is below the
    pool's size, the pool's other threads would otherwise join every region
    with nothing to do, and wait in it like the rest."""
    import numba

    before = numba.get_num_threads()
    if n >= before:  # more shards than threads share the threads
        yield
        return
    numba.set_num_threads(n)
    try:
        yield
    finally:
        numba.set_num_threads(before)


def n_shards(rows: int) -> int:
    """Threads for `rows` rows at a time: one per Numba thread, unless there are too few rows to split."""
    import numba

    return max(1, min(numba.get_num_threads(), rows // MIN_SHARD_ROWS))


LINE = 64  # bytes in a cache line
LINE_FLOATS = LINE // 4


def aligned_zeros(shape, dtype=np.float32) -> np.ndarray:
    """Zeros whose data starts on a cache-line boundary.

    numpy only promises 16-byte alignment, so where the kernels' buffers began
    was down to chance: an 8-float vector load or store that straddles two
    cache lines costs two, and training ran 5-10% slower when the optimizer
    state and the activations started 16 or 48 bytes past a line (32, where
    no 8-float vector straddles a line, measured as fast as 0).
    """
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    raw = np.zeros(nbytes + LINE, np.uint8)
    start = -raw.ctypes.data % LINE
    return raw[start:start + nbytes].view(dtype).reshape(shape)


def shard_buffers(sizes: np.ndarray, rows: int, shards: int):
    """Per-shard flat activation and delta buffers of `rows` rows of every layer, and labels."""
    width = -(-rows * int(sizes.sum()) // LINE_FLOATS) * LINE_FLOATS  # whole lines, so every shard is aligned
    return (aligned_zeros((shards, width)), aligned_zeros((shards, width)), np.zeros((shards, rows), np.int64))


def column_buffers(sizes: np.ndarray, rows: int, shards: int):
    """The lists of a training step (kernels/columns.py): each row's non-zero pixels (row_cols,
    row_vals, row_counts), and each pixel's non-zero rows (counts, listed, values), with room
    for `shards` threads' shares."""
    n_in = int(sizes[0])
    room = n_in * shards * max(1, -(-rows // shards))   # steps.list_stride: at most n_in * (rows + shards)
    return (np.zeros((rows, n_in), np.int32), aligned_zeros((rows, n_in)), np.zeros(rows, np.int64),
            np.zeros(shards * n_in, np.int64), np.zeros(room, np.int32), aligned_zeros(room))


def pixels(images: np.ndarray, n_pixels: int) -> np.ndarray:
    """uint8 images as contiguous (N, pixels) rows; the kernels scale them to [0, 1]."""
    return np.ascontiguousarray(images.reshape(len(images), n_pixels), dtype=np.uint8)


class CpuBackend:
    name = "cpu"

    def __init__(self, sizes, batch_size, optimizer, theta, opt_state, images=None, y=None, step=0):
        self.sizes = np.asarray(sizes, np.int64)
        self.batch_size = batch_size
        self.names = optimizer.state_names
        self.hp = optimizer.hyperparameters()
        self.plain = optimizer.is_plain_rmsprop()
        self.act = ACTIVATIONS[optimizer.recipe.activation].kind
        self.step = step  # updates made so far: the schedule and bias correction depend on it
        self.theta = aligned_zeros(np.shape(theta))
        # Rows v, m, b of the kernels' state, each padded to whole cache lines so
        # that all three start aligned (the kernels never read the padding); the
        # rows this optimizer lacks stay zero.
        n = self.theta.size
        self.state = aligned_zeros((3, -(-n // LINE_FLOATS) * LINE_FLOATS))
        self.set_state(theta, opt_state)
        self.grad = aligned_zeros(n if self.hp[CLIP_NORM] > 0 else 0)
        # A batch never holds more rows than there are images; evaluation-only backends train nothing.
        rows = max(1, min(batch_size, len(images))) if images is not None else 1
        self.train_bufs = tuple(buf[0] for buf in shard_buffers(self.sizes, rows, 1))
        self.columns = column_buffers(self.sizes, rows, 1)
        self.eval_bufs = shard_buffers(self.sizes, EVAL_ROWS, n_shards(EVAL_ROWS))
        self.images, self.y = np.zeros((0, self.sizes[0]), np.uint8), np.zeros(0, np.int64)
        self.policy = threads.ThreadPolicy((1,))  # how many threads each chunk uses; decided once there is data
        if images is not None:
            self.set_training_data(images, y)

    def warm_up(self):
        """Compile the kernels, or load them from Numba's cache, without changing any state."""
        self.train_chunk(np.zeros(0, np.int64), 0, 0)
        self.evaluate(self.images[:0], self.y[:0])

    def set_training_data(self, images, y):
        self.images = pixels(images, self.sizes[0])
        self.y = np.ascontiguousarray(y, dtype=np.int64)
        self.policy = threads.policy(training_shards(len(self.train_bufs[2])))

    @property
    def shards(self) -> int:
        """The threads the next chunk's steps are split across."""
        return self.policy.threads

    @shards.setter
    def shards(self, n: int) -> None:
        self.policy = threads.ThreadPolicy((n,))

    def train_chunk(self, order, start, n_batches):
        """Train on n_batches batches, in parts as the thread policy plans them
        (a probe of another thread count first, now and then), each part timed
        for the policy.  Every number is the same as in one call on one thread."""
        loss, correct, seen, done = 0.0, 0, 0, 0
        while True:
            n_threads, count = self.policy.part(n_batches - done)
            t0 = time.perf_counter()
            self.room_for(n_threads)
            acts, deltas, labels = self.train_bufs
            with numba_threads(n_threads):
                loss, corr, n, bad = K.train_chunk(
                    self.images, self.y, order, start + done * self.batch_size, count, self.batch_size, self.sizes,
                    self.theta, self.state, self.grad, self.step, self.hp, self.plain, acts, deltas, *self.columns,
                    labels, n_threads, loss)
            correct, seen = correct + corr, seen + n
            if bad >= 0:
                self.step += bad
                return float(loss), int(correct), int(seen), done + int(bad)
            self.policy.record(n_threads, n / self.batch_size, time.perf_counter() - t0)
            self.step += -(-n // self.batch_size)
            done += count
            if done >= n_batches or n < count * self.batch_size:
                break  # all done, or the order ran out (the last batch was ragged or absent)
        return float(loss), int(correct), int(seen), -1

    def room_for(self, shards: int) -> None:
        """Pixel lists with room for `shards` shares of a batch (each share writes its own)."""
        rows, n_in = len(self.train_bufs[2]), int(self.sizes[0])
        if self.columns[3].size < shards * n_in or self.columns[4].size < n_in * shards * max(1, -(-rows // shards)):
            self.columns = column_buffers(self.sizes, rows, max(shards, self.columns[3].size // n_in))

    def evaluate(self, images, y):
        """On all threads; during training, when the thread policy has found
        fewer threads faster for training steps, on that many: a machine too
        busy for all threads in a step is too busy for them here too.  No
        number depends on it."""
        n_classes = int(self.sizes[-1])
        confusion = np.zeros((n_classes, n_classes), np.int64)
        shards = len(self.eval_bufs[2])
        if self.policy.threads < self.policy.counts[0]:
            shards = min(shards, self.policy.threads)
        with numba_threads(shards):
            loss, correct = K.evaluate(pixels(images, self.sizes[0]), np.ascontiguousarray(y, dtype=np.int64),
                                       self.theta, self.sizes, *(buf[:shards] for buf in self.eval_bufs), confusion,
                                       self.act)
        return float(loss), int(correct), confusion

    def predict_proba(self, images):
        n_classes = int(self.sizes[-1])
        probs = np.zeros((len(images), n_classes), np.float32)
        K.predict_proba(pixels(images, self.sizes[0]), self.theta, self.sizes, self.eval_bufs[0][0], probs, self.act)
        return probs

    def set_state(self, theta, opt_state):
        self.theta[:] = theta
        for name in self.names:
            self.state[STATE_ROWS[name], :self.theta.size] = opt_state[name]

    def params(self):
        return self.theta.copy()

    def optimizer_state(self):
        return {name: self.state[STATE_ROWS[name], :self.theta.size].copy() for name in self.names}
