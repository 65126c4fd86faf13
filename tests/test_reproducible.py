"""Training gives the same numbers whether the kernels were just compiled or loaded from
Numba's cache: a run resumed in a new process continues exactly where an uninterrupted one
would be.  Each case compiles the training kernels from scratch (about 40 s)."""

import os
import subprocess
import sys

import numpy as np

# Trains a few recipes on 600 images and saves everything training produced.
SCRIPT = """
import sys
import numpy as np
from rmsprop_cli import data, model
from rmsprop_cli.backends.cpu import CpuBackend
from rmsprop_cli.config import Recipe
from rmsprop_cli.optim import Optimizer

out_file, data_dir = sys.argv[1], sys.argv[2]
X, Y, _ = data.load_mnist("train", data_dir=data_dir, limit=600)
Y = Y.astype(np.int64)
out = {}
recipes = [dict(batch_size=100, hidden=()), dict(batch_size=48, optimizer="adam"),
           dict(batch_size=77, centered=True, momentum=0.9, clip_norm=0.5)]
for i, options in enumerate(recipes):
    recipe = Recipe(**options)
    opt = Optimizer(recipe, 20)
    theta = model.glorot_init(recipe.sizes, np.random.default_rng(i))
    for shards in (1, 2):
        backend = CpuBackend(recipe.sizes, recipe.batch_size, opt, theta, opt.init(theta.size), X, Y)
        backend.shards = shards
        loss, correct, _, _ = backend.train_chunk(np.random.default_rng(9).permutation(600), 0, 7)
        out[f"{i}/{shards}/theta"] = backend.params()
        out[f"{i}/{shards}/loss"] = np.array([loss, correct])
        for name, values in backend.optimizer_state().items():
            out[f"{i}/{shards}/{name}"] = values
        out[f"{i}/{shards}/eval"] = np.array(backend.evaluate(X[:300], Y[:300])[:2])
np.savez(out_file, **out)
"""


def test_fresh_and_cached_kernels_train_the_same_numbers(tmp_path, data_dir):
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "kernels")}
    for run in ("fresh", "cached"):
        subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / f"{run}.npz"), str(data_dir)], env=env,
                       check=True, timeout=900)
    fresh, cached = np.load(tmp_path / "fresh.npz"), np.load(tmp_path / "cached.npz")
    assert sorted(fresh.files) == sorted(cached.files) and len(fresh.files) == 2 * (4 + 5 + 6)  # state: v; v, m; v, m, b
    for key in fresh.files:
        np.testing.assert_array_equal(fresh[key], cached[key], err_msg=key)
