"""The first layer (784 -> 128, batch 32) on this tool's sparse kernels and on BLAS.

    pip install scipy          # numba's np.dot calls BLAS through scipy; not a dependency
    OPENBLAS_NUM_THREADS=1 python scripts/bench_blas.py

Times one epoch's worth (1,500 batches) of the forward pass and the weight
gradient of the layer that holds 90% of the network's arithmetic, both ways,
and prints the median of five runs.  It is the measurement behind the choice
of hand-written kernels over np.dot: MNIST's inputs are 81% zeros, which BLAS
cannot skip.
"""

import importlib.util
import statistics
import time

import numpy as np
from numba import njit

from rmsprop_cli import data
from rmsprop_cli.config import JIT
from rmsprop_cli.activations import RELU
from rmsprop_cli.kernels import columns as C
from rmsprop_cli.kernels import cpu as K


@njit(**JIT)
def sparse_kernels(X, order, w, b, h, d, gw):
    for s in range(1500):
        x = X[order[s * 32:(s + 1) * 32]]
        K.dense_forward(x, w, b, h, RELU)
        C.weight_grads(x, d, gw, 0, x.shape[1])


@njit(**JIT)
def blas(X, order, w, b, h, d, gw):
    for s in range(1500):
        x = X[order[s * 32:(s + 1) * 32]]
        h[:] = np.maximum(np.dot(x, w) + b, np.float32(0))
        gw[:] = np.dot(x.T.copy(), d)


def main():
    images, _, _ = data.load_mnist("train")
    X = images[:48000].reshape(48000, -1).astype(np.float32) / np.float32(255)
    rng = np.random.default_rng(0)
    w = (rng.normal(size=(784, 128)) * 0.05).astype(np.float32)
    b = np.zeros(128, np.float32)
    h, d = np.zeros((32, 128), np.float32), rng.normal(size=(32, 128)).astype(np.float32)
    gw, order = np.zeros_like(w), rng.permutation(48000)
    variants = {"sparse kernels": sparse_kernels, "BLAS (np.dot)": blas}
    if importlib.util.find_spec("scipy") is None:  # Numba's np.dot calls BLAS through SciPy
        del variants["BLAS (np.dot)"]
        print("scipy is not installed: timing the sparse kernels only (pip install scipy for BLAS)")
    for f in variants.values():
        f(X, order, w, b, h, d, gw)  # compile
    times = {name: [] for name in variants}
    for _ in range(5):
        for name, f in variants.items():
            t = time.perf_counter()
            f(X, order, w, b, h, d, gw)
            times[name].append(time.perf_counter() - t)
    for name, ts in times.items():
        print(f"{name:15s} {statistics.median(ts):.3f} s per epoch of layer-1 forward + weight gradient")


if __name__ == "__main__":
    main()
