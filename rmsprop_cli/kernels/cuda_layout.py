"""Where everything a CUDA training step touches lives: one float32 device
buffer (parameters, optimizer state, the batch's activations and deltas, the
step's scalars, the chunk's results) and one int64 vector, `meta`, of its
offsets and of the step counters.  The kernels of kernels/cuda_steps.py take
these two arrays (and the images and batch order), so a launch marshals four
arrays and no scalar, and every step of a chunk is launched with the same
arguments: nothing the host computes per step reaches the GPU.

Per chunk the host writes the chunk's first row and a table of each step's
learning rate and bias corrections (kernels/math.py's schedule, in float64
on the host, rounded once to float32), and reads back each step's loss sum
and correct count.  The step counters advance on the device: batch_rows
reads STEP_A and copies it to STEP_B; the last kernel of a step reads STEP_B
and writes STEP_B + 1 to STEP_A.  No kernel writes a counter that its own
blocks read, so no block can see a half-finished step.  A step whose loss is
not finite is not applied, and its last kernel writes -1 to STEP_A: every
later kernel of the chunk then returns at once, as the CPU stops there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..hyper import N_HYPER

# Steps a chunk's table holds; a longer chunk is launched in parts.
TABLE_STEPS = 1024
ROW_THREADS = 128      # threads per block of batch_rows: one block per row of the batch
UPDATE_THREADS = 256   # threads per block of weight_rows and update_whole: one thread per parameter

# meta[...]: the counters and the chunk's rows, then offsets into the float buffer.
(STEP_A, STEP_B, START, N_ROWS, BATCH, LAYERS, N_PARAMS, THETA, V, M, B, GRAD, ACTS, DELTAS, ROW_LOSS, STATS, TABLE,
 HYPER, PARTIALS, N_PARTIALS, CLIP, SIZES) = range(22)
# meta[SIZES:] holds, for L layers: sizes[0..L], then each layer's parameter offset, then each layer's
# input (activation) offset for rows of the batch, then each layer's delta offset (its output's gradient).


def blocks(n: int, per: int) -> int:
    return max(1, -(-n // per))


@dataclass(frozen=True)
class Layout:
    """The buffer and meta of a network `sizes` trained in batches of `rows`."""

    sizes: tuple[int, ...]
    rows: int
    clip: bool

    @property
    def layers(self) -> int:
        return len(self.sizes) - 1

    @property
    def n_params(self) -> int:
        return sum(a * b + b for a, b in zip(self.sizes[:-1], self.sizes[1:]))

    @property
    def update_blocks(self) -> int:
        return blocks(self.n_params, UPDATE_THREADS)

    def regions(self) -> dict[str, int]:
        """Offset of each region of the float buffer, and 'end', its size."""
        n, rows = self.n_params, self.rows
        lengths = [("theta", n), ("v", n), ("m", n), ("b", n), ("grad", n if self.clip else 0),
                   ("acts", rows * sum(self.sizes)), ("deltas", rows * sum(self.sizes[1:])),
                   # each row's loss, then 1 where its argmax is the label
                   ("row_loss", 2 * rows),
                   ("stats", 2 * TABLE_STEPS), ("table", 3 * TABLE_STEPS), ("hyper", N_HYPER),
                   ("partials", 2 * self.update_blocks)]
        out, at = {}, 0
        for name, length in lengths:
            out[name] = at
            at += length
        out["end"] = at
        return out

    def meta(self) -> np.ndarray:
        r, sizes, rows = self.regions(), self.sizes, self.rows
        head = [0, 0, 0, 0, rows, self.layers, self.n_params, r["theta"], r["v"], r["m"], r["b"], r["grad"], r["acts"],
                r["deltas"], r["row_loss"], r["stats"], r["table"], r["hyper"], r["partials"], self.update_blocks,
                int(self.clip)]
        assert len(head) == SIZES
        params, acts, deltas = [], [], []
        p, a, d = r["theta"], r["acts"], r["deltas"]
        for l in range(self.layers):
            params.append(p)
            p += sizes[l] * sizes[l + 1] + sizes[l + 1]
            acts.append(a)
            a += rows * sizes[l]
            deltas.append(d)
            d += rows * sizes[l + 1]
        acts.append(a)   # the logits
        return np.array(head + list(sizes) + params + acts + deltas, np.int64)
