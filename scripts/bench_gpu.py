"""The CUDA backend's costs: on a GPU, or the host's side alone without one.

    pip install -e '.[cuda]'
    python scripts/bench_gpu.py [--epochs 5] [--batch-size 32] [--hidden 128,64] [--json]
    python scripts/bench_gpu.py --host-only [--rounds 5] [--json]

On a GPU: the median epoch of the default recipe (training and validation),
host and GPU microseconds per training step, launches per step, evaluation
images/s, and how far the GPU's weights and loss are from the CPU's after
one epoch from the same start.  Host µs: the time the host takes to issue a
chunk of steps (the launches are asynchronous); GPU µs: CUDA events around
the same steps.  While the host is faster, the GPU never waits for it.

--host-only needs no GPU: scripts/host_only.py stands in for the CUDA driver
(numba-cuda compiles with NVVM and converts every argument as on a GPU; the
driver's launch and copies do nothing real), and each round trains one epoch
of steps of the default network (1,500 steps of 32 in chunks as training
makes them), once with the launches prepared at warm-up and once through
numba-cuda's public launch, interleaved; the medians are reported.  Under
NUMBA_ENABLE_CUDASIM=1 it runs on Numba's simulator instead, with the
kernels not run: only the counts and the code path mean anything there
(CI runs it so, so that it cannot rot).

Exits with the reason when CUDA cannot be used.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def arguments():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host-only", action="store_true", help="measure the host's work per step, no GPU needed")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--hidden", default="128,64")
    ap.add_argument("--limit", type=int, default=None, help="only the first N training and test images")
    ap.add_argument("--rounds", type=int, default=5, help="--host-only: interleaved rounds (default 5)")
    ap.add_argument("--steps", type=int, default=None, help="--host-only: steps per round (default: one epoch)")
    ap.add_argument("--json", action="store_true", help="one JSON object on stdout")
    return ap.parse_args()


def _network(args):
    from rmsprop_cli import model
    from rmsprop_cli.config import Recipe
    from rmsprop_cli.optim import Optimizer

    recipe = Recipe(epochs=args.epochs, batch_size=args.batch_size, limit=args.limit,
                    hidden=tuple(int(h) for h in args.hidden.split(",")))
    opt = Optimizer(recipe, recipe.steps_per_epoch)
    theta = model.glorot_init(recipe.sizes, np.random.default_rng(0))
    return recipe, opt, theta


def _epoch_of_steps(backend, order, steps, batch):
    """Seconds the host takes for `steps` steps in chunks as fitting.fit makes them."""
    from rmsprop_cli import fitting

    chunk = max(1, -(-steps // fitting.UPDATES_PER_EPOCH))
    t = time.perf_counter()
    for first in range(0, steps, chunk):
        backend.train_chunk(order, first * batch, min(chunk, steps - first))
    return time.perf_counter() - t


def host_only(args) -> dict:
    import numba

    simulator = bool(numba.config.ENABLE_CUDASIM)
    if simulator:
        from numba.cuda.simulator import kernel

        kernel.FakeCUDAKernel.__call__ = lambda self, *a: None   # the simulator would run the kernels in Python
    else:
        sys.path.insert(0, HERE)
        import host_only as stand_in

        stand_in.install()
    from rmsprop_cli.backends.cuda import CudaBackend

    recipe, opt, theta = _network(args)
    n = recipe.n_train
    rng = np.random.default_rng(0)
    images, y = np.zeros((n, recipe.n_inputs), np.uint8), rng.integers(0, recipe.n_classes, n)
    backend = CudaBackend(recipe.sizes, recipe.batch_size, opt, theta, opt.init(theta.size), images, y)
    backend.warm_up()
    order = rng.permutation(n)
    steps = args.steps or recipe.steps_per_epoch
    rounds = {"prepared": [], "public": []}
    for r in range(args.rounds + 1):   # round 0 warms up, and is not counted
        for path in rounds:
            for launch in backend.steps:
                launch.unprepare()
                if path == "prepared" and backend.launch_path == "prepared":
                    launch.prepare()
            if r == 1 and path == "prepared":
                launches = backend.launches
            seconds = _epoch_of_steps(backend, order, steps, recipe.batch_size)
            if r:
                rounds[path].append(seconds / steps * 1e6)
    per_step = (backend.launches - launches) / (2 * args.rounds * steps)
    from importlib.metadata import version

    return {"host_us_per_step": statistics.median(rounds["prepared"]),
            "host_us_per_step_public": statistics.median(rounds["public"]),
            "launches_per_step": per_step, "launch_path": backend.launch_path,
            "driver": "Numba's simulator, kernels not run" if simulator else "stand-in (scripts/host_only.py)",
            "steps_per_round": steps, "rounds_us_per_step": rounds,
            "numba_cuda": version("numba-cuda"), "network": list(recipe.sizes),
            "batch_size": recipe.batch_size}


def on_gpu(args) -> dict:
    from bench import measure

    from rmsprop_cli import data, fitting
    from rmsprop_cli.backends.cpu import CpuBackend

    args.device, args.threads, args.set = "cuda", None, []
    log = sys.stderr if args.json else sys.stdout
    stdout, sys.stdout = sys.stdout, log
    try:
        backend, history, evaluation = measure(args, details=True)
    finally:
        sys.stdout = stdout
    launches_per_step = backend.launches / backend.step   # training's own, before the timing below
    # Host and GPU time of the same steps: the host issues them, CUDA events time the GPU's work.
    from numba import cuda

    recipe, opt, theta = _network(args)
    mirrors = os.environ.get("RMSPROP_MIRROR", "").split() or None
    images, labels, _ = data.load_mnist("train", None, mirrors, None, args.limit)
    X, y, _, _ = fitting.split_validation(images, labels.astype(np.int64), recipe.val_split)
    order = np.random.default_rng(1).permutation(len(X))
    count = min(1000, recipe.steps_per_epoch)
    host, gpu = [], []
    for _ in range(5):
        backend.start_part(0, count, len(order))
        backend._use_order(order)
        cuda.synchronize()
        start, end = cuda.event(), cuda.event()
        start.record()
        t = time.perf_counter()
        backend.launch_steps(count)
        host.append((time.perf_counter() - t) / count * 1e6)
        end.record()
        end.synchronize()
        gpu.append(start.elapsed_time(end) * 1e3 / count)
    # One epoch from the same start on both backends.
    pair = []
    for cls in (CpuBackend, type(backend)):
        b = cls(recipe.sizes, recipe.batch_size, opt, theta, opt.init(theta.size), X, y)
        b.warm_up()
        pair.append((b.train_chunk(order, 0, recipe.steps_per_epoch), b.params()))
    (cpu_stats, cpu_theta), (gpu_stats, gpu_theta) = pair
    name = getattr(backend.cuda.get_current_device(), "name", "Numba's simulator")
    return {"device": name.decode() if isinstance(name, bytes) else str(name), "median_epoch_s": evaluation["median_epoch_s"],
            "epochs_s": [m["seconds"] for m in history], "host_us_per_step": statistics.median(host),
            "gpu_us_per_step": statistics.median(gpu), "launches_per_step": launches_per_step,
            "launch_path": backend.launch_path, "eval_images_per_s": evaluation["eval_images_per_s"],
            "test_accuracy": evaluation["test_accuracy"],
            "one_epoch_loss_cpu": cpu_stats[0] / cpu_stats[2], "one_epoch_loss_gpu": gpu_stats[0] / gpu_stats[2],
            "one_epoch_max_abs_weight_difference": float(np.abs(cpu_theta - gpu_theta).max())}


def main():
    args = arguments()
    sys.path.insert(0, HERE)
    if args.host_only:
        result = host_only(args)
    else:
        from rmsprop_cli.backends import cuda_status

        usable, detail, _ = cuda_status()
        if not usable:
            sys.exit(f"CUDA cannot be used here: {detail}")
        result = on_gpu(args)
    if args.json:
        print(json.dumps(result))
        return
    for key, value in result.items():
        print(f"{key}: {value:.2f}" if isinstance(value, float) else f"{key}: {value}")


if __name__ == "__main__":
    main()
