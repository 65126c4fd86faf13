"""This tool side by side with JAX + Optax, PyTorch and Keras (where installed) on one recipe.

    python scripts/bench_peers.py [--epochs 4] [--hidden 128,64] [--batch-sizes 32,128,1024]
        [--shapes "128,64/32;512,512/128"] [--peers rmsprop-cli,jax,torch,keras] [--rounds N] [--load K]
        [--taskset CPUS] [--threads N] [--json FILE] [--python jax=/path/to/python] [--python torch=...]

Every framework trains the same network (784-hidden...-10, ReLU, softmax
cross-entropy, Glorot-uniform weights, zero biases) with RMSProp (lr 0.001, rho
0.9, eps 1e-7 inside the square root) on the same 48,000 MNIST training images
(float32 /255) in a fresh shuffled order each epoch, each run in its own
process so that its peak memory is its own.  JAX trains n_train // batch full
batches an epoch (its one jitted lax.scan needs equal batches); the others every
image, the last batch ragged.  --shapes (hidden/batch pairs separated by ';')
overrides --hidden and --batch-sizes.  Reported per framework and shape: the
median epoch seconds over the epochs after the first (the warm-up), training
samples/s, test accuracy, one evaluation pass over the 10,000 test images, peak
resident memory, and "x ours": its time per training sample over this tool's
(its epoch over ours where both train every image).  --rounds N makes every run
N times, round after round, and reports medians over the rounds.  --load K also
makes every run beside K CPU-bound busy processes (bounded in time, ended by
PID).  --taskset CPUS runs the workers (and busy processes) under `taskset -c
CPUS`; --threads N pins this tool's and PyTorch's thread counts (JAX and Keras:
--taskset alone bounds them).

Peers are optional: one that does not import is skipped with a note.  Install
each in its own environment, never this project's, and point --python at it:

    python -m venv ~/jax && ~/jax/bin/pip install jax optax numpy
    python -m venv ~/torch && ~/torch/bin/pip install torch numpy
    python scripts/bench_peers.py --python jax=~/jax/bin/python --python torch=~/torch/bin/python

MNIST is read from RMSPROP_DATA_DIR/mnist, fetched there first if missing
(RMSPROP_MIRROR: URLs or folders, separated by spaces).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from contextlib import nullcontext
from itertools import product
from pathlib import Path

RECIPE = dict(lr=0.001, rho=0.9, eps=1e-7, n_train=48000)
PEERS = ("rmsprop-cli", "jax", "torch", "keras")


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


def timed(fn, repeats):
    """fn's last result and the seconds of each of `repeats` calls."""
    import time

    seconds = []
    for _ in range(repeats):
        t = time.perf_counter()
        result = fn()
        seconds.append(time.perf_counter() - t)
    return result, seconds


def run_rmsprop_cli(folder, hidden, batch, epochs, threads):
    import numpy as np

    from rmsprop_cli import model, threads as thread_policy
    from rmsprop_cli.backends import make_backend
    from rmsprop_cli.config import Recipe
    from rmsprop_cli.optim import Optimizer

    if threads:
        thread_policy.pin(threads)
    X, y, Xt, yt = read_mnist(folder)
    recipe = Recipe(batch_size=batch, hidden=hidden)
    rng = np.random.default_rng(0)
    theta = model.glorot_init(recipe.sizes, rng)
    n_batches = -(-len(X) // batch)
    opt = Optimizer(recipe, n_batches)
    backend = make_backend("cpu", recipe.sizes, batch, opt, theta, opt.init(theta.size), X, y.astype(np.int64))
    backend.warm_up()
    _, seconds = timed(lambda: backend.train_chunk(rng.permutation(len(X)).astype(np.int64), 0, n_batches), epochs)
    (_, correct, _), eval_seconds = timed(lambda: backend.evaluate(Xt, yt), 3)
    return seconds, correct / len(Xt), eval_seconds, len(X)


def run_jax(folder, hidden, batch, epochs, threads):
    import jax
    import jax.numpy as jnp
    import optax

    X, y, Xt, yt = read_mnist(folder)
    X, Xt, y = jnp.asarray(X, jnp.float32) / 255, jnp.asarray(Xt, jnp.float32) / 255, jnp.asarray(y, jnp.int32)
    sizes, glorot = (784, *hidden, 10), jax.nn.initializers.glorot_uniform()
    keys = jax.random.split(jax.random.key(0), len(sizes))
    params = [(glorot(k, (m, n), jnp.float32), jnp.zeros(n, jnp.float32)) for k, m, n in zip(keys, sizes, sizes[1:])]
    # eps_in_sqrt=True: θ -= η·g/√(v + ε), this tool's default (eps_placement "inside", as Keras); like the
    # tool's default, v starts at 0 (initial_scale=0), no bias correction, not centered, no momentum.
    tx = optax.rmsprop(RECIPE["lr"], decay=RECIPE["rho"], eps=RECIPE["eps"], eps_in_sqrt=True)
    n_batches = len(X) // batch  # scan needs equal batches: the ragged rest of the permutation is dropped

    def logits(params, x):
        for w, b in params[:-1]:
            x = jax.nn.relu(x @ w + b)
        return x @ params[-1][0] + params[-1][1]

    def loss(params, x, t):
        return optax.softmax_cross_entropy_with_integer_labels(logits(params, x), t).mean()

    def epoch(params, state, key, X, y):
        key, sub = jax.random.split(key)
        order = jax.random.permutation(sub, len(X))[:n_batches * batch].reshape(n_batches, batch)

        def step(carry, idx):
            params, state = carry
            updates, state = tx.update(jax.grad(loss)(params, X[idx], y[idx]), state, params)
            return (optax.apply_updates(params, updates), state), None

        (params, state), _ = jax.lax.scan(step, (params, state), order)
        return params, state, key

    carry = (params, tx.init(params), keys[-1])
    epoch = jax.jit(epoch, donate_argnums=(0, 1)).lower(*carry, X, y).compile()
    predict = jax.jit(lambda params, x: jnp.argmax(logits(params, x), 1)).lower(params, Xt).compile()

    def train():
        nonlocal carry
        carry = jax.block_until_ready(epoch(*carry, X, y))

    _, seconds = timed(train, epochs)
    pred, eval_seconds = timed(lambda: jax.block_until_ready(predict(carry[0], Xt)), 3)
    return seconds, float((jax.device_get(pred) == yt).mean()), eval_seconds, n_batches * batch


def run_torch(folder, hidden, batch, epochs, threads):
    import numpy as np
    import torch

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    X, y, Xt, yt = read_mnist(folder)
    X = torch.from_numpy(X.astype(np.float32) / 255)
    y = torch.from_numpy(y.astype(np.int64))
    Xt = torch.from_numpy(Xt.astype(np.float32) / 255)
    layers, n_in = [], 784
    for h in hidden:
        layers += [torch.nn.Linear(n_in, h), torch.nn.ReLU()]
        n_in = h
    net = torch.nn.Sequential(*layers, torch.nn.Linear(n_in, 10))
    for layer in net[::2]:
        torch.nn.init.xavier_uniform_(layer.weight)
        torch.nn.init.zeros_(layer.bias)
    opt = torch.optim.RMSprop(net.parameters(), lr=RECIPE["lr"], alpha=RECIPE["rho"], eps=RECIPE["eps"])
    loss_fn = torch.nn.CrossEntropyLoss()

    def epoch():
        order = torch.randperm(len(X))
        for i in range(0, len(X), batch):
            idx = order[i:i + batch]
            opt.zero_grad()
            loss_fn(net(X[idx]), y[idx]).backward()
            opt.step()

    _, seconds = timed(epoch, epochs)
    with torch.no_grad():
        pred, eval_seconds = timed(lambda: net(Xt).argmax(1).numpy(), 3)
    return seconds, float((pred == yt).mean()), eval_seconds, len(X)


def run_keras(folder, hidden, batch, epochs, threads):
    import keras
    import numpy as np

    X, y, Xt, yt = read_mnist(folder)
    X, Xt = X.astype(np.float32) / 255, Xt.astype(np.float32) / 255
    net = keras.Sequential([keras.Input((784,))] + [keras.layers.Dense(h, activation="relu") for h in hidden]
                           + [keras.layers.Dense(10, activation="softmax")])
    net.compile(optimizer=keras.optimizers.RMSprop(RECIPE["lr"], rho=RECIPE["rho"], epsilon=RECIPE["eps"]),
                loss="sparse_categorical_crossentropy")
    _, seconds = timed(lambda: net.fit(X, y, batch_size=batch, epochs=1, shuffle=True, verbose=0), epochs)
    pred, eval_seconds = timed(lambda: net.predict(Xt, batch_size=1024, verbose=0).argmax(1), 3)
    return seconds, float((pred == yt).mean()), eval_seconds, len(X)


RUNNERS = {"rmsprop-cli": run_rmsprop_cli, "jax": run_jax, "torch": run_torch, "keras": run_keras}


def worker(name, folder, hidden, batch, epochs, threads):
    hidden = tuple(int(h) for h in hidden.split(","))
    seconds, accuracy, eval_seconds, samples = RUNNERS[name](Path(folder), hidden, int(batch), int(epochs),
                                                             int(threads))
    print(json.dumps({"seconds": seconds, "accuracy": accuracy, "eval_seconds": statistics.median(eval_seconds),
                      "samples": samples, "peak_mib": peak_mib()}))


def cpu_list(text):
    """The CPUs of a taskset list such as "0" or "0-3,6"."""
    return {c for part in text.split(",") for a, _, b in [part.partition("-")] for c in range(int(a), int(b or a) + 1)}


def cpu_model():
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    return next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), "?")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=4, help="epochs per run; the first is a warm-up (default 4)")
    ap.add_argument("--hidden", default="128,64", help="hidden layer widths (default 128,64)")
    ap.add_argument("--batch-sizes", default="32,128,1024")
    ap.add_argument("--shapes", help='hidden/batch pairs, e.g. "128,64/256;1024,1024/256"; overrides both above')
    ap.add_argument("--peers", default=",".join(PEERS), help=f"runners to run (default {','.join(PEERS)})")
    ap.add_argument("--rounds", type=int, default=1, help="repeat every run N times, interleaved (default 1)")
    ap.add_argument("--python", action="append", default=[], metavar="PEER=PATH",
                    help="interpreter for a peer (jax, torch or keras); default: this one")
    ap.add_argument("--load", type=int, default=0, metavar="K", help="also run beside K busy processes")
    ap.add_argument("--taskset", metavar="CPUS", help="run workers and busy processes on these CPUs only")
    ap.add_argument("--threads", type=int, default=0, help="threads of rmsprop-cli and torch (default: theirs)")
    ap.add_argument("--json", metavar="FILE", help="write every run and every row here")
    ap.add_argument("--worker", nargs=6, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(*args.worker)
        return

    from rmsprop_cli import data

    if args.shapes:
        shapes = [(h.replace(" ", ""), int(b)) for h, _, b in (s.partition("/") for s in args.shapes.split(";") if s.strip())]
    else:
        shapes = [(args.hidden.replace(" ", ""), int(b)) for b in args.batch_sizes.split(",")]
    peers = [p.strip() for p in args.peers.split(",")]
    if unknown := set(peers) - set(RUNNERS):
        ap.error(f"unknown peers {sorted(unknown)}; choose from {', '.join(RUNNERS)}")
    folder = data.default_data_dir() / "mnist"
    data.fetch(data.MNIST_FILES.values(), data.default_data_dir(), os.environ.get("RMSPROP_MIRROR", "").split() or None)
    pythons = {name: sys.executable for name in RUNNERS}
    for item in args.python:
        name, _, path = item.partition("=")
        pythons[name] = os.path.expanduser(path)
    prefix = ["taskset", "-c", args.taskset] if args.taskset else []
    if args.taskset:
        os.sched_setaffinity(0, cpu_list(args.taskset))  # the busy processes inherit it
    cpu = cpu_model()
    print(f"CPU: {cpu}" + (f", taskset -c {args.taskset}" if args.taskset else ""), flush=True)

    from bench import busy

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    runs, skipped, loads = [], set(), sorted({0, args.load})
    for round_, (hidden, batch), load, name in product(range(1, args.rounds + 1), shapes, loads, peers):
        if name in skipped:
            continue
        with busy(load) if load else nullcontext():
            argv = [pythons[name], __file__, "--worker", name, str(folder), hidden, str(batch), str(args.epochs),
                    str(args.threads)]
            proc = subprocess.run(prefix + argv, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["failed"])[-1]
            print(f"skipped {name} ({hidden}/{batch}): {last}", file=sys.stderr)
            if "ModuleNotFoundError" in last or "ImportError" in last:
                skipped.add(name)  # not again in later shapes and rounds
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        r.update(round=round_, framework=name, hidden=hidden, batch=batch, busy=load,
                 epoch=statistics.median(r["seconds"][1:] or r["seconds"]))
        runs.append(r)
        print(f"round {round_} {name:12s} {hidden:>10s}/{batch:<5d} busy {load}: epochs "
              f"{[round(s, 3) for s in r['seconds']]} acc {r['accuracy']:.4f}", file=sys.stderr)

    rows, groups = [], {}
    for r in runs:
        groups.setdefault((r["hidden"], r["batch"], r["busy"], r["framework"]), []).append(r)
    for (hidden, batch, load, name), rs in groups.items():
        epoch = statistics.median(r["epoch"] for r in rs)
        rows.append(dict(framework=name, hidden=hidden, batch=batch, busy=load, epoch=epoch,
                         samples_per_s=rs[0]["samples"] / epoch, accuracy=statistics.median(r["accuracy"] for r in rs),
                         eval_seconds=statistics.median(r["eval_seconds"] for r in rs),
                         peak_mib=max(r["peak_mib"] for r in rs), rounds=len(rs)))
    ours = {(r["hidden"], r["batch"], r["busy"]): r["samples_per_s"] for r in rows if r["framework"] == "rmsprop-cli"}
    for r in rows:
        base = ours.get((r["hidden"], r["batch"], r["busy"]))
        r["x_ours"] = base / r["samples_per_s"] if base else None

    print(f"{'framework':12s} {'hidden':>10s} {'batch':>5s} {'busy':>4s} {'epoch s':>8s} {'samples/s':>10s} "
          f"{'test acc':>8s} {'eval 10k s':>10s} {'peak MiB':>8s} {'x ours':>7s}")
    for r in rows:
        ratio = f"{r['x_ours']:7.2f}" if r["x_ours"] else f"{'-':>7s}"
        print(f"{r['framework']:12s} {r['hidden']:>10s} {r['batch']:5d} {r['busy']:4d} {r['epoch']:8.3f} "
              f"{r['samples_per_s']:10,.0f} {r['accuracy']:8.4f} {r['eval_seconds']:10.4f} {r['peak_mib']:8.0f} "
              f"{ratio}")
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu": cpu, "args": vars(args), "runs": runs, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
