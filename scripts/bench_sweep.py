"""Trials per minute: a sweep's trials side by side (one thread each) against the same
trials one after another (each on all cores).

    python scripts/bench_sweep.py [--rounds 3] [--epochs 2] [--limit N] [--busy K] [--json]

The 12 trials are the default recipe at lr 3e-4, 1e-3, 3e-3, 1e-2 x rho 0.5, 0.9,
0.99, seed 0, for --epochs epochs each.  In each round, in a rotating order:

  train      12 `rmsprop train` processes, one after another (the threads chosen by
             measurement, up to all cores): what a user's shell loop does;
  api        the 12 trials one after another in one process (rmsprop_cli.train with
             threads=None), so that starting a process is not counted against it;
  sweep      one `rmsprop sweep` over the 12 (--workers: one per core, one thread each).

Every setting reads MNIST from the cache (RMSPROP_DATA_DIR / RMSPROP_MIRROR) and
writes into a fresh temporary folder; kernels come from Numba's cache (a first,
untimed sweep fills it).  Prints each run and the medians (trials per minute,
seconds), and the speed-up of sweep over train and over api.  --busy K runs K
CPU-bound processes beside every run (each bounded in time, ended by PID).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import busy  # noqa: E402

LRS, RHOS = ("3e-4", "1e-3", "3e-3", "1e-2"), ("0.5", "0.9", "0.99")
API = """
import sys, time
from rmsprop_cli import train
epochs, limit, out = int(sys.argv[1]), (int(sys.argv[2]) or None), sys.argv[3]
t = time.perf_counter()
for lr in {lrs}:
    for rho in {rhos}:
        train(epochs=epochs, limit=limit, lr=float(lr), rho=float(rho), output=f"{{out}}/{{lr}}-{{rho}}")
print(time.perf_counter() - t)
"""


def cli(*args) -> list[str]:
    return [sys.executable, "-m", "rmsprop_cli", *map(str, args)]


def run(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def setting(name: str, epochs: int, limit: int | None, workers: int) -> float:
    """Seconds for the 12 trials in one setting, in a fresh folder."""
    lim = ["--limit", limit] if limit else []
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        if name == "train":
            return sum(run(cli("train", "--epochs", epochs, "--lr", lr, "--rho", rho, *lim, "--output",
                               f"{tmp}/{lr}-{rho}", "--json")) for lr in LRS for rho in RHOS)
        if name == "api":
            code = API.format(lrs=LRS, rhos=RHOS)
            t = time.perf_counter()
            subprocess.run([sys.executable, "-c", code, str(epochs), str(limit or 0), tmp], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            return time.perf_counter() - t
        return run(cli("sweep", "--grid", "lr=" + ",".join(LRS), "--grid", "rho=" + ",".join(RHOS),
                       "--epochs", epochs, *lim, "--workers", workers, "--output", f"{tmp}/sweep", "--json"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--limit", type=int, default=None, help="only the first N images (smoke tests)")
    ap.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                    else os.cpu_count())
    ap.add_argument("--busy", type=int, default=0, metavar="K", help="K CPU-bound processes beside every run")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()
    trials = len(LRS) * len(RHOS)
    setting("sweep", args.epochs, args.limit, args.workers)   # fills the kernel cache; not timed
    names = ["train", "api", "sweep"]
    seconds = {n: [] for n in names}
    for r in range(args.rounds):
        for name in names[r % 3:] + names[:r % 3]:   # rotating, so that drift spreads over all three
            with busy(args.busy) if args.busy else nullcontext():
                s = setting(name, args.epochs, args.limit, args.workers)
            seconds[name].append(s)
            if not args.json:
                print(f"round {r + 1} {name:6s} {s:7.2f} s  {60 * trials / s:6.1f} trials/min", flush=True)
    median = {n: statistics.median(v) for n, v in seconds.items()}
    result = {"trials": trials, "epochs": args.epochs, "limit": args.limit, "workers": args.workers,
              "busy": args.busy, "rounds": args.rounds, "seconds": seconds,
              "median_seconds": median, "trials_per_minute": {n: 60 * trials / s for n, s in median.items()},
              "speedup_over_train": median["train"] / median["sweep"],
              "speedup_over_api": median["api"] / median["sweep"]}
    if args.json:
        print(json.dumps(result))
        return
    for n in names:
        print(f"median {n:6s} {median[n]:7.2f} s  {result['trials_per_minute'][n]:6.1f} trials/min")
    print(f"sweep is {result['speedup_over_train']:.2f}x the train loop, {result['speedup_over_api']:.2f}x the "
          "in-process loop")


if __name__ == "__main__":
    main()
