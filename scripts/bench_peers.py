"""This tool side by side with PyTorch (and Keras, where installed) on the default recipe.

    python scripts/bench_peers.py [--epochs 4] [--batch-sizes 32,128,1024] [--load K]
                                  [--python torch=/path/to/python] [--python keras=/path/to/python]

Every framework trains the same network (784-128-64-10, ReLU, softmax
cross-entropy) with RMSProp (lr 0.001, rho 0.9, eps 1e-7) on the same 48,000
MNIST training images, batch by batch in a shuffled order, one after the other
on this machine, each in its own process so that its peak memory is its own.
Reported per framework and batch size: median epoch seconds over the epochs
after the first (the warm-up), training samples/s, test accuracy after the
epochs run, the time of one evaluation pass over the 10,000 test images, peak
resident memory, and the ratio of its epoch time to this tool's.  With --load
K, every run is made twice, quiet and then with K CPU-bound busy processes
beside it (bounded in time, ended by PID), as a user's busy machine would be.

Peers are optional: a framework that does not import is skipped with a note.
Install them in a separate environment, so they never become this project's
dependencies, and point --python at it:

    python -m venv ~/peers && ~/peers/bin/pip install torch numpy
    python scripts/bench_peers.py --python torch=~/peers/bin/python

MNIST is read from RMSPROP_DATA_DIR/mnist (run `rmsprop download` first).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from contextlib import nullcontext
from pathlib import Path

RECIPE = dict(hidden=(128, 64), lr=0.001, rho=0.9, eps=1e-7, n_train=48000)


def read_mnist(folder: Path):
    import numpy as np

    def idx(name, offset):
        return np.frombuffer((folder / name).read_bytes(), np.uint8, offset=offset)

    X = idx("train-images-idx3-ubyte", 16).reshape(-1, 784)
    y = idx("train-labels-idx1-ubyte", 8)
    Xt = idx("t10k-images-idx3-ubyte", 16).reshape(-1, 784)
    yt = idx("t10k-labels-idx1-ubyte", 8)
    return X[:RECIPE["n_train"]], y[:RECIPE["n_train"]], Xt, yt


def peak_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def median_seconds(fn, repeats=3):
    import time

    seconds = []
    for _ in range(repeats):
        t = time.perf_counter()
        result = fn()
        seconds.append(time.perf_counter() - t)
    return result, statistics.median(seconds)


def timed_epochs(train_epoch, epochs):
    import time

    seconds = []
    for _ in range(epochs):
        t = time.perf_counter()
        train_epoch()
        seconds.append(time.perf_counter() - t)
    return seconds


def run_rmsprop_cli(folder, batch, epochs):
    import numpy as np

    from rmsprop_cli import model
    from rmsprop_cli.backends import make_backend
    from rmsprop_cli.config import Recipe
    from rmsprop_cli.optim import Optimizer

    X, y, Xt, yt = read_mnist(folder)
    recipe = Recipe(batch_size=batch)
    rng = np.random.default_rng(0)
    theta = model.glorot_init(recipe.sizes, rng)
    opt = Optimizer(recipe, -(-len(X) // batch))
    backend = make_backend("cpu", recipe.sizes, batch, opt, theta, opt.init(theta.size), X, y.astype(np.int64))
    backend.warm_up()
    n_batches = -(-len(X) // batch)
    seconds = timed_epochs(lambda: backend.train_chunk(rng.permutation(len(X)).astype(np.int64), 0, n_batches), epochs)
    (_, correct, _), eval_seconds = median_seconds(lambda: backend.evaluate(Xt, yt))
    return seconds, correct / len(Xt), eval_seconds


def run_torch(folder, batch, epochs):
    import numpy as np
    import torch

    torch.manual_seed(0)
    X, y, Xt, yt = read_mnist(folder)
    X = torch.from_numpy(X.astype(np.float32) / 255)
    y = torch.from_numpy(y.astype(np.int64))
    Xt = torch.from_numpy(Xt.astype(np.float32) / 255)
    layers, n_in = [], 784
    for h in RECIPE["hidden"]:
        layers += [torch.nn.Linear(n_in, h), torch.nn.ReLU()]
        n_in = h
    net = torch.nn.Sequential(*layers, torch.nn.Linear(n_in, 10))
    opt = torch.optim.RMSprop(net.parameters(), lr=RECIPE["lr"], alpha=RECIPE["rho"], eps=RECIPE["eps"])
    loss_fn = torch.nn.CrossEntropyLoss()

    def epoch():
        order = torch.randperm(len(X))
        for i in range(0, len(X), batch):
            idx = order[i:i + batch]
            opt.zero_grad()
            loss_fn(net(X[idx]), y[idx]).backward()
            opt.step()

    seconds = timed_epochs(epoch, epochs)
    with torch.no_grad():
        pred, eval_seconds = median_seconds(lambda: net(Xt).argmax(1).numpy())
    return seconds, float((pred == yt).mean()), eval_seconds


def run_keras(folder, batch, epochs):
    import keras
    import numpy as np

    X, y, Xt, yt = read_mnist(folder)
    X, Xt = X.astype(np.float32) / 255, Xt.astype(np.float32) / 255
    net = keras.Sequential([keras.Input((784,))] + [keras.layers.Dense(h, activation="relu") for h in RECIPE["hidden"]]
                           + [keras.layers.Dense(10, activation="softmax")])
    net.compile(optimizer=keras.optimizers.RMSprop(RECIPE["lr"], rho=RECIPE["rho"], epsilon=RECIPE["eps"]),
                loss="sparse_categorical_crossentropy")
    seconds = timed_epochs(lambda: net.fit(X, y, batch_size=batch, epochs=1, shuffle=True, verbose=0), epochs)
    pred, eval_seconds = median_seconds(lambda: net.predict(Xt, batch_size=1024, verbose=0).argmax(1))
    return seconds, float((pred == yt).mean()), eval_seconds


RUNNERS = {"rmsprop-cli": run_rmsprop_cli, "torch": run_torch, "keras": run_keras}


def worker(name, folder, batch, epochs):
    seconds, accuracy, eval_seconds = RUNNERS[name](Path(folder), batch, epochs)
    print(json.dumps({"seconds": seconds, "accuracy": accuracy, "eval_seconds": eval_seconds, "peak_mib": peak_mib()}))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=4, help="epochs per run; the first is a warm-up (default 4)")
    ap.add_argument("--batch-sizes", default="32,128,1024")
    ap.add_argument("--python", action="append", default=[], metavar="PEER=PATH",
                    help="interpreter for a peer (torch or keras); default: this one")
    ap.add_argument("--load", type=int, default=0, metavar="K", help="also run beside K busy processes")
    ap.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        name, folder, batch, epochs = args.worker
        worker(name, folder, int(batch), int(epochs))
        return

    from rmsprop_cli import data

    folder = data.default_data_dir() / "mnist"
    data.fetch(data.MNIST_FILES.values(), data.default_data_dir(), os.environ.get("RMSPROP_MIRROR", "").split() or None)
    pythons = {name: sys.executable for name in RUNNERS}
    for item in args.python:
        name, _, path = item.partition("=")
        pythons[name] = os.path.expanduser(path)

    from bench import busy

    rows = []
    for batch in [int(b) for b in args.batch_sizes.split(",")]:
        for load in sorted({0, args.load}):
            base = None
            for name in RUNNERS:
                env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
                with busy(load) if load else nullcontext():
                    proc = subprocess.run([pythons[name], __file__, "--worker", name, str(folder), str(batch),
                                           str(args.epochs)], capture_output=True, text=True, env=env)
                if proc.returncode != 0:
                    last = (proc.stderr.strip().splitlines() or ["failed"])[-1]
                    print(f"skipped {name} (batch {batch}): {last}", file=sys.stderr)
                    continue
                r = json.loads(proc.stdout.strip().splitlines()[-1])
                epoch = statistics.median(r["seconds"][1:] or r["seconds"])
                base = base or epoch
                rows.append((name, batch, load, epoch, RECIPE["n_train"] / epoch, r["accuracy"], r["eval_seconds"],
                             r["peak_mib"], epoch / base))
                print(f"{name:12s} batch {batch:5d} busy {load}: epochs {[round(s, 3) for s in r['seconds']]}",
                      file=sys.stderr)

    print(f"{'framework':12s} {'batch':>5s} {'busy':>4s} {'epoch s':>8s} {'samples/s':>10s} {'test acc':>8s} "
          f"{'eval 10k s':>10s} {'peak MiB':>8s} {'x ours':>7s}")
    for name, batch, load, epoch, rate, acc, ev, mib, ratio in rows:
        print(f"{name:12s} {batch:5d} {load:4d} {epoch:8.3f} {rate:10,.0f} {acc:8.4f} {ev:10.4f} {mib:8.0f} {ratio:7.2f}")


if __name__ == "__main__":
    main()
