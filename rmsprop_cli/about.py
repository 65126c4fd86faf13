"""What `rmsprop info` reports: versions, threads, CUDA, and where caches live."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from pathlib import Path

from . import __version__


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def kernel_cache_dir() -> Path:
    """Where Numba keeps the compiled kernels (cache=True): a folder named by a hash of
    their sources and flags (jitcache.py), under NUMBA_CACHE_DIR if set, else beside the
    kernel modules or in the user's cache."""
    from .kernels.math import learning_rate_at

    return Path(learning_rate_at.stats.cache_path)


def info() -> dict:
    import numba
    import numpy

    from . import threads
    from .backends import cuda_status
    from .backends.cpu import threading_layer, training_shards
    from .config import Recipe
    from .data import default_data_dir

    usable, detail, device = cuda_status()
    most = training_shards(Recipe().batch_size)
    return {
        "rmsprop_cli": __version__,
        "python": f"{platform.python_version()} ({sys.executable})",
        "numpy": numpy.__version__,
        "numba": numba.__version__,
        "numba_cuda": _version("numba-cuda"),
        "cpu_count": os.cpu_count(),
        "numba_threads": numba.get_num_threads(),
        "threading_layer": threading_layer(),
        "training_threads": most,
        "training_threads_choice": threads.describe(most),
        "cuda": {"usable": usable, "detail": detail, **device},
        "data_dir": str(default_data_dir()),
        "kernel_cache_dir": str(kernel_cache_dir()),
    }
