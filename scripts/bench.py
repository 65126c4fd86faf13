"""Epoch time of the default recipe on one backend (this tool alone, no peers).

    python scripts/bench.py [--epochs 5] [--batch-size 32] [--hidden 128,64] [--device cpu] [--limit N]

Reads MNIST like the CLI does (RMSPROP_DATA_DIR / RMSPROP_MIRROR). Prints each
epoch's seconds (training + validation pass), the median, samples/s of the
training part, evaluation throughput on the 10,000 test images, and the test
accuracy reached.  scripts/bench_gpu.py runs it on CUDA.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

from rmsprop_cli import data, model, train
from rmsprop_cli.backends import make_backend
from rmsprop_cli.config import Recipe
from rmsprop_cli.optim import Optimizer


def dense_flop_per_sample(sizes) -> int:
    """Multiply-adds x 2 of one training sample done densely: the forward product, the
    weight gradient, and the input gradient of every layer but the first (which needs none)."""
    macs = [a * b for a, b in zip(sizes[:-1], sizes[1:])]
    return 2 * (2 * sum(macs) + sum(macs[1:]))


def arguments(doc: str, device: str = "cpu") -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--hidden", default="128,64")
    ap.add_argument("--device", default=device)
    ap.add_argument("--limit", type=int, default=None, help="only the first N training and test images (smoke tests)")
    return ap.parse_args()


def measure(args: argparse.Namespace):
    """Train args.epochs epochs of the default recipe on args.device, printing as it goes;
    returns the backend, so callers can read backend-specific counters."""
    mirrors = os.environ.get("RMSPROP_MIRROR", "").split() or None
    recipe = Recipe(epochs=args.epochs, batch_size=args.batch_size,
                    hidden=tuple(int(h) for h in args.hidden.split(",")))
    images, labels, _ = data.load_mnist("train", None, mirrors, None, args.limit)
    test_images, test_labels, _ = data.load_mnist("test", None, mirrors, None, args.limit)
    X_train, y_train, X_val, y_val = train.split_validation(images, labels.astype(np.int64),
                                                            recipe.val_split)
    rng = np.random.default_rng(0)
    theta = model.glorot_init(recipe.sizes, rng)
    n_batches = -(-len(X_train) // recipe.batch_size)
    opt = Optimizer(recipe, n_batches)
    backend = make_backend(args.device, recipe.sizes, recipe.batch_size, opt, theta, opt.init(theta.size),
                           X_train, y_train)
    t0 = time.perf_counter()
    backend.warm_up()
    print(f"device {backend.name}; compile or cache load: {time.perf_counter() - t0:.2f} s")

    train_seconds = []

    class Timer(train.Callbacks):
        def epoch_start(self, *a):
            self.t = time.perf_counter()

        def chunk_end(self, batches_done, *a):
            if batches_done == n_batches:
                train_seconds.append(time.perf_counter() - self.t)

    history, _, _ = train.fit(recipe, backend, len(X_train), X_val, y_val, rng, Timer())
    print(f"{'epoch':>5} {'seconds':>8} {'train s':>8} {'samples/s':>10} {'val_acc':>8}")
    for m, ts in zip(history, train_seconds):
        print(f"{m['epoch']:>5} {m['seconds']:>8.3f} {ts:>8.3f} {len(X_train) / ts:>10,.0f} {m['val_accuracy']:>8.4f}")
    epoch = statistics.median(m["seconds"] for m in history)
    ts = statistics.median(train_seconds)
    print(f"median epoch {epoch:.3f} s (training {ts:.3f} s, {len(X_train) / ts:,.0f} samples/s); "
          f"first {history[0]['seconds']:.3f} s, last {history[-1]['seconds']:.3f} s")
    flop = len(X_train) * dense_flop_per_sample(recipe.sizes)
    print(f"arithmetic of a dense implementation: {flop / 1e9:.1f} GFLOP per epoch; "
          f"achieved {flop / ts / 1e9:.1f} GFLOP/s (skipping zeros does less)")

    runs = []
    for _ in range(5):
        t = time.perf_counter()
        _, correct, _ = backend.evaluate(test_images, test_labels)
        runs.append(time.perf_counter() - t)
    ev = statistics.median(runs)
    print(f"evaluation of {len(test_images):,} test images: median {ev * 1000:.1f} ms "
          f"({len(test_images) / ev:,.0f} samples/s); test accuracy after {len(history)} epochs "
          f"{correct / len(test_images):.2%}")
    return backend


if __name__ == "__main__":
    measure(arguments(__doc__))
