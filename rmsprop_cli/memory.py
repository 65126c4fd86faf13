"""How much memory a run needs, and how much the machine has: checked before anything big is allocated.

The estimate counts what is resident at a training run's peak, which is the
save of the checkpoint at its end.  Against `ru_maxrss` of real runs of
784-6000-6000-10 (plain RMSProp, Adam with --clip-norm, --early-stopping, a
resumed run) and 784-3000-3000-10 on all the data, it came within 2%:

- the parameters P (4 bytes each) and the optimizer's k buffers: once as the
  run holds them (initial weights or the resumed checkpoint's), once in the
  backend (its three state rows are calloc'ed, so rows an optimizer does not use
  never become resident), plus a gradient buffer for --clip-norm and a copy
  of the best epoch's weights and state for --early-stopping;
- the save: a copy of the weights and state, their bytes, and the serialised
  file, 3 (1 + k) P;
- activation and delta buffers: a batch's rows for training, 512 rows per
  thread for evaluation, of every layer's width;
- the lists of a training batch's pixels (kernels/columns.py): each row's
  non-zero pixels, and each pixel's non-zero rows, share by share (counted as
  if all were touched);
- the images and labels held, and the interpreter with numpy and Numba (BASE,
  measured with a tiny network).
"""

from __future__ import annotations

import os

from .errors import ConfigError

BASE = 176 * 2**20   # Python, numpy, Numba and MNIST: a 16-unit network on 600 images peaked at 205 MiB
EVAL_ROWS = 512      # rows per evaluation thread (backends.cpu.EVAL_ROWS)
MNIST_IMAGES, MNIST_TEST_IMAGES = 60_000, 10_000


def training_bytes(recipe, n_buffers: int, *, early_stopping: bool = False, threads: int | None = None) -> int:
    """Bytes resident at the peak of a training run of `recipe` with `n_buffers` optimizer buffers."""
    from . import model

    p = 4 * model.n_params(recipe.sizes)
    k = n_buffers
    held = (2 + 2 * k + (recipe.clip_norm is not None) + (1 + k) * early_stopping) * p
    saving = 3 * (1 + k) * p
    width = sum(recipe.sizes)
    rows = max(1, min(recipe.batch_size, recipe.n_train))
    threads = threads or os.cpu_count() or 1
    buffers = 2 * 4 * width * (rows + EVAL_ROWS * threads)
    shares = max(1, min(threads, rows // 8))   # backends.cpu.n_shards: MIN_SHARD_ROWS rows a share at least
    lists = 8 * recipe.n_inputs * rows + 8 * recipe.n_inputs * (shares + shares * -(-rows // shares))
    n = MNIST_IMAGES if recipe.limit is None else min(recipe.limit, MNIST_IMAGES)
    data = (recipe.n_inputs + 9) * (n + min(n, MNIST_TEST_IMAGES))  # uint8 pixels, uint8 and int64 labels
    return BASE + held + saving + buffers + lists + data


def _meminfo() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            text = f.read().strip()
        return int(text)
    except (OSError, ValueError):  # missing, or "max" (no limit)
        return None


def _cgroup_headroom() -> int | None:
    """Bytes left under this process's cgroup memory limit (containers, Slurm), page cache counted as free."""
    for limit, usage, stat in (
            ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current", "/sys/fs/cgroup/memory.stat"),
            ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes",
             "/sys/fs/cgroup/memory/memory.stat")):
        cap, used = _read_int(limit), _read_int(usage)
        if cap is None or used is None or cap >= 2**60:
            continue
        cache = 0
        try:
            with open(stat) as f:
                for line in f:
                    key, _, value = line.partition(" ")
                    if key in ("inactive_file", "total_inactive_file"):
                        cache = int(value)
                        break
        except (OSError, ValueError):
            pass
        return max(0, cap - max(0, used - cache))
    return None


def available() -> int | None:
    """Bytes of memory this process can still use: Linux's MemAvailable (else the
    free pages, else all physical memory), lowered to what a cgroup limit leaves;
    None where the system says nothing (Windows: the check is skipped)."""
    avail = _meminfo()
    if avail is None:
        for name in ("SC_AVPHYS_PAGES", "SC_PHYS_PAGES"):   # macOS has only the second: an upper bound
            try:
                avail = os.sysconf(name) * os.sysconf("SC_PAGE_SIZE")
                break
            except (AttributeError, ValueError, OSError):
                continue
    headroom = _cgroup_headroom()
    if headroom is not None:
        avail = headroom if avail is None else min(avail, headroom)
    return avail


def gib(n: int) -> str:
    if n >= 2**40:
        return f"{n / 2**40:,.1f} TiB"
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def check_training(recipe, n_buffers: int, *, early_stopping: bool = False, resumed=None) -> None:
    """Refuse, before anything big is allocated, a run that cannot fit the memory available."""
    needed = training_bytes(recipe, n_buffers, early_stopping=early_stopping)
    avail = available()
    if avail is None or needed <= avail:
        return
    network = "-".join(map(str, recipe.sizes))
    if resumed is not None:
        advice = f"{resumed} keeps its network, so resume it on a machine with more memory, or close other programs"
    else:
        advice = "try a smaller --hidden" + (" or --batch-size" if 4 * 2 * sum(recipe.sizes) * recipe.batch_size
                                             > needed // 4 else "") + ", or close other programs"
    raise ConfigError(f"not enough memory: training the {network} network with {recipe.optimizer} needs about "
                      f"{gib(needed)} of memory (weights, optimizer state, buffers and data), and {gib(avail)} "
                      f"is available; {advice}")


def out_of_memory(command: str | None) -> str:
    """The message for a MemoryError that got past the estimates, fitting the command that ran out."""
    what = {
        "train": "to train this network; try a smaller --hidden or --batch-size, or close other programs",
        "compare": "to train this network; try a smaller --hidden or --batch-size, or close other programs",
        "evaluate": "to evaluate this checkpoint's network; close other programs, or use a machine with more memory",
        "predict": "to classify these images with this checkpoint's network; give fewer or smaller images, "
                   "or close other programs",
        "download": "to unpack and verify the MNIST files; close other programs",
        "plot": "to draw the figure; close other programs",
    }.get(command, "for this command; close other programs, or use a machine with more memory")
    return f"ran out of memory {what}"
