"""Where a training step's time goes, kernel by kernel, against this CPU's measured peak.

    python scripts/profile_step.py [--hidden 128,64] [--batch-size 32] [--repeats 5] [--json FILE]

Each kernel runs alone in one compiled loop over an epoch's batches (the
training split, shuffled, from a network trained for one epoch so that its
ReLU sparsity is a trained network's), so that nothing but the kernel is
timed; its seconds per epoch are the median of --repeats runs.  Beside each:
the useful arithmetic it does (multiply-adds of non-zero inputs only, x 2 for
FLOP) or the bytes it must move, as GFLOP/s or GB/s, and the fraction of the
peak measured here by two loops compiled by the same Numba: a multiply-add
throughput loop (independent accumulators in registers) and a streaming
read-write loop over a buffer the size of the first layer's weights and
RMSProp state.  --json writes the figures for scripts/plot_roofline.py.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np
from numba import njit

from rmsprop_cli import data, fitting, model
from rmsprop_cli.backends import make_backend
from rmsprop_cli.config import JIT, Recipe
from rmsprop_cli.kernels import steps as K
from rmsprop_cli.kernels.simd import LANES, load, splat_like, store
from rmsprop_cli.optim import Optimizer

F32 = np.float32


@njit(**JIT)
def fma_peak(n, a):
    """n rounds of 12 independent vector multiply-add chains (simd.LANES lanes each), in
    registers: enough chains to cover a multiply-add's latency on two pipes."""
    m, c = load(a, 0), load(a, LANES)
    z = splat_like(a, 0)
    a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11 = z, z, z, z, z, z, z, z, z, z, z, z
    for _ in range(n):
        a0, a1, a2, a3 = a0 * m + c, a1 * m + c, a2 * m + c, a3 * m + c
        a4, a5, a6, a7 = a4 * m + c, a5 * m + c, a6 * m + c, a7 * m + c
        a8, a9, a10, a11 = a8 * m + c, a9 * m + c, a10 * m + c, a11 * m + c
    store(a, 0, ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7)) + ((a8 + a9) + (a10 + a11)))
    return a[0]


@njit(**JIT)
def stream_peak(x, y, n):
    """n passes of y = y * 0.5 + x over buffers the size of the first layer's weights and
    RMSProp state (in L2): 12 bytes a float (two loads, one store)."""
    h = np.float32(0.5)
    for r in range(n):
        for i in range(x.size):
            y[i] = y[i] * h + x[i]
    return y[0]


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def best_of(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def peaks(repeats, n_floats):
    a = np.full(2 * LANES, 0.5, F32)
    fma_peak(1, a)
    rounds = 20_000_000
    t = best_of(lambda: fma_peak(rounds, a), repeats)
    gflops = rounds * 12 * LANES * 2 / t / 1e9
    x, y = np.ones(n_floats, F32), np.ones(n_floats, F32)
    stream_peak(x, y, 1)
    passes = max(1, 400_000_000 // n_floats)
    t = best_of(lambda: stream_peak(x, y, passes), repeats)
    return gflops, passes * n_floats * 12 / t / 1e9


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hidden", default="128,64")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    import profile_kernels as P

    mirrors = os.environ.get("RMSPROP_MIRROR", "").split() or None
    recipe = Recipe(batch_size=args.batch_size, hidden=tuple(int(h) for h in args.hidden.split(",")), epochs=1)
    images, labels, _ = data.load_mnist("train", None, mirrors)
    X, y, _, _ = fitting.split_validation(images, labels.astype(np.int64), recipe.val_split)
    rng = np.random.default_rng(0)
    theta = model.glorot_init(recipe.sizes, rng)
    n_batches = len(X) // recipe.batch_size   # whole batches: the kernel loops index order without a ragged end
    opt = Optimizer(recipe, n_batches)
    backend = make_backend("cpu", recipe.sizes, recipe.batch_size, opt, theta, opt.init(theta.size), X, y)
    backend.shards = 1
    backend.train_chunk(rng.permutation(len(X)).astype(np.int64), 0, n_batches)  # a trained network's sparsity
    order = rng.permutation(len(X)).astype(np.int64)
    rows = []
    for name, fn, work, unit in P.kernels(backend, order, n_batches):
        fn()
        seconds = best_of(fn, args.repeats)
        rows.append({"kernel": name, "seconds": seconds, "work": float(work), "unit": unit, "rate": float(work) / seconds / 1e9})
    step = best_of(lambda: backend.train_chunk(order, 0, n_batches), args.repeats)
    gflops, gbs = peaks(args.repeats, int(backend.state[0].size) * 2)
    print(f"{cpu_name()}; hidden {args.hidden}, batch {args.batch_size}; one thread; "
          f"median of {args.repeats}; seconds per epoch of {len(X):,} images")
    print(f"measured peak of one core: {gflops:.1f} GFLOP/s (multiply-add loop), {gbs:.1f} GB/s (stream over "
          f"{backend.state[0].size * 8 / 1e6:.1f} MB)")
    print(f"{'kernel':28s} {'s/epoch':>8s} {'work':>10s} {'rate':>12s} {'of peak':>8s}")
    for r in rows:
        peak = gflops if r["unit"] == "GFLOP" else gbs
        print(f"{r['kernel']:28s} {r['seconds']:8.4f} {r['work'] / 1e9:8.2f} {r['unit']:5s} "
              f"{r['rate']:8.1f} {r['unit']}/s {r['rate'] / peak:8.1%}")
    total = sum(r["seconds"] for r in rows)
    print(f"{'sum of kernels':28s} {total:8.4f}")
    print(f"{'whole training epoch':28s} {step:8.4f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cpu": cpu_name(), "hidden": args.hidden, "batch_size": args.batch_size,
                       "peak_gflops": gflops, "peak_gbs": gbs, "epoch_seconds": step, "kernels": rows}, f, indent=1)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main()
