"""Epoch time of the default recipe on one backend (this tool alone, no peers).

    python scripts/bench.py [--epochs 5] [--batch-size 32] [--hidden 128,64] [--device cpu] [--limit N]
                            [--threads N] [--load K [--rounds 3]]

Reads MNIST like the CLI does (RMSPROP_DATA_DIR / RMSPROP_MIRROR). Prints each
epoch's seconds (training + validation pass), the median, samples/s of the
training part, evaluation throughput on the 10,000 test images, and the test
accuracy reached.  scripts/bench_gpu.py runs it on CUDA.

--load K measures a busy machine: in each of --rounds rounds it runs the
benchmark in fresh processes with the threads chosen by measurement (the
default), pinned to all cores, and pinned to one (and with --wait-policies,
all cores under OpenMP's other ways of waiting), first on a
quiet machine, then with K CPU-bound busy processes beside it (each bounded in
time and ended by PID when its run is over); then it prints every run and the
medians.  Interleaving the rounds spreads the machine's drift over all settings.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager, nullcontext

import numpy as np

from rmsprop_cli import data, fitting, model
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
    ap.add_argument("--threads", type=int, default=None, help="pin the CPU threads (default: chosen by measurement)")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="another recipe field, e.g. --set optimizer=adam --set centered=true --set momentum=0.9")
    ap.add_argument("--load", type=int, default=None, metavar="K",
                    help="compare quiet and K busy processes, default and pinned threads (see above)")
    ap.add_argument("--rounds", type=int, default=3, help="with --load: interleaved rounds (default 3)")
    ap.add_argument("--wait-policies", action="store_true",
                    help="with --load: also all threads under OpenMP's passive wait policy and short spin counts")
    return ap.parse_args()


def recipe_fields(items: list[str]) -> dict:
    """--set FIELD=VALUE pairs as recipe fields: true/false, numbers, else text."""
    fields = {}
    for item in items:
        name, _, text = item.partition("=")
        value = {"true": True, "false": False}.get(text.lower(), text)
        if isinstance(value, str):
            for kind in (int, float):
                try:
                    value = kind(text)
                    break
                except ValueError:
                    pass
        fields[name.replace("-", "_")] = value
    return fields


def measure(args: argparse.Namespace, details: bool = False):
    """Train args.epochs epochs of the default recipe on args.device, printing as it goes;
    returns the backend, so callers can read backend-specific counters (with details: also the
    history and a dict of the median epoch, evaluation images/s and test accuracy)."""
    if getattr(args, "threads", None):
        from rmsprop_cli import threads

        threads.pin(args.threads)
    mirrors = os.environ.get("RMSPROP_MIRROR", "").split() or None
    recipe = Recipe(epochs=args.epochs, batch_size=args.batch_size,
                    hidden=tuple(int(h) for h in args.hidden.split(",")), **recipe_fields(args.set))
    images, labels, _ = data.load_mnist("train", None, mirrors, None, args.limit)
    test_images, test_labels, _ = data.load_mnist("test", None, mirrors, None, args.limit)
    X_train, y_train, X_val, y_val = fitting.split_validation(images, labels.astype(np.int64),
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

    class Timer(fitting.Callbacks):
        def epoch_start(self, *a):
            self.t = time.perf_counter()

        def chunk_end(self, batches_done, *a):
            if batches_done == n_batches:
                train_seconds.append(time.perf_counter() - self.t)

    history, _, _ = fitting.fit(recipe, backend, len(X_train), X_val, y_val, rng, Timer())
    policy = getattr(backend, "policy", None)
    if policy is not None:
        print(f"threads: now {policy.threads} of {', '.join(map(str, policy.counts))}; {policy.probes} probes, "
              f"{policy.switches} switches")
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
    if details:
        return backend, history, {"median_epoch_s": epoch, "eval_images_per_s": len(test_images) / ev,
                                  "test_accuracy": correct / len(test_images)}
    return backend


BUSY = "import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end:\n    pass\n"


@contextmanager
def busy(k: int, seconds: float = 900.0):
    """k CPU-bound processes, each ending by itself after `seconds` at the latest, killed by PID on exit."""
    procs = [subprocess.Popen([sys.executable, "-c", BUSY.format(seconds=seconds)]) for _ in range(k)]
    try:
        time.sleep(0.2)  # let them get going
        yield
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()


def under_load(args: argparse.Namespace) -> None:
    import numba

    every = ["--threads", str(numba.config.NUMBA_NUM_THREADS)]
    most = f"{numba.config.NUMBA_NUM_THREADS} threads"
    settings = {"chosen (default)": ([], {}), most: (every, {}), "1 thread": (["--threads", "1"], {})}
    if args.wait_policies:  # OpenMP's own answers to waiting threads, all on every thread
        settings.update({f"{most}, OMP_WAIT_POLICY=passive": (every, {"OMP_WAIT_POLICY": "passive"}),
                         f"{most}, GOMP_SPINCOUNT=10000": (every, {"GOMP_SPINCOUNT": "10000"}),
                         f"{most}, KMP_BLOCKTIME=0": (every, {"KMP_BLOCKTIME": "0"})})
    base = [sys.executable, os.path.abspath(__file__), "--epochs", str(args.epochs), "--batch-size",
            str(args.batch_size), "--hidden", args.hidden, "--device", args.device]
    if args.limit:
        base += ["--limit", str(args.limit)]
    runs, firsts, evals = {}, {}, {}
    for r in range(args.rounds):
        for load in (0, args.load):
            for name, (extra, env) in settings.items():
                with busy(load) if load else nullcontext():
                    out = subprocess.run(base + extra, capture_output=True, text=True, check=True,
                                         env={**os.environ, **env}).stdout
                epochs = [float(m.group(1)) for m in re.finditer(r"^\s+\d+\s+([\d.]+)\s", out, re.M)]
                median = statistics.median(epochs[1:] or epochs)  # the first epoch warms up
                runs.setdefault((load, name), []).append(median)
                firsts.setdefault((load, name), []).append(epochs[0])
                evals.setdefault((load, name), []).append(float(re.search(r"test images: median ([\d.]+) ms", out).group(1)))
                threads = re.search(r"^threads: .*$", out, re.M)
                print(f"round {r + 1}, {'quiet' if not load else f'{load} busy'}, {name}: "
                      f"epochs {[round(e, 3) for e in epochs]}, median of epochs 2+ {median:.3f} s"
                      + (f" ({threads.group(0)})" if threads else ""), flush=True)
    print(f"\nmedian epoch (epochs 2-{args.epochs}), seconds; {args.rounds} interleaved rounds, each run listed")
    print(f"{'':36s} {'quiet':>24s} {f'{args.load} busy':>24s}")
    for name in settings:
        cells = []
        for load in (0, args.load):
            v = runs[(load, name)]
            cells.append(f"{statistics.median(v):.3f} ({', '.join(f'{x:.2f}' for x in v)})")
        print(f"{name:36s} {cells[0]:>24s} {cells[1]:>24s}")
    print("first epochs (the thread policy's learning falls here), median of rounds: " + "; ".join(
        f"{name} {'quiet' if not load else 'busy'} {statistics.median(v):.3f}" for (load, name), v in firsts.items()))
    print("evaluation of the 10,000 test images after training, ms, median of rounds: " + "; ".join(
        f"{name} {'quiet' if not load else 'busy'} {statistics.median(v):.1f}" for (load, name), v in evals.items()))
    for load in (0, args.load):
        ratio = statistics.median(runs[(load, "chosen (default)")]) / statistics.median(runs[(load, "1 thread")])
        print(f"chosen / one thread, {'quiet' if not load else f'{load} busy'}: {ratio:.2f}")


if __name__ == "__main__":
    options = arguments(__doc__)
    if options.load:
        under_load(options)
    else:
        measure(options)
