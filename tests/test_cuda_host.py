"""The CUDA backend's host side without a GPU: scripts/bench_gpu.py --host-only
with the stand-in driver of scripts/host_only.py (numba-cuda compiling with
NVVM as on a GPU) and on Numba's simulator, the prepared launches' check at
warm-up, and scripts/ptx_report.py.  Each runs in a process of its own: the
stand-in replaces numba-cuda's driver calls, and the simulator must be on
before numba is imported.  No time is asserted; the benchmark reports it."""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"
needs_nvvm = pytest.mark.skipif(importlib.util.find_spec("nvidia.cuda_nvcc") is None,
                                reason="needs NVVM and ptxas: pip install -e '.[test]' brings numba-cuda[cu12]")


def run(args, env=None, timeout=600):
    done = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, env={**os.environ, **(env or {})})
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@needs_nvvm
def test_host_only_benchmark_with_the_stand_in_driver():
    out = json.loads(run([SCRIPTS / "bench_gpu.py", "--host-only", "--rounds", "1", "--steps", "120", "--json"]))
    assert out["driver"].startswith("stand-in") and out["launch_path"] == "prepared"
    assert out["launches_per_step"] == 2.0
    assert out["host_us_per_step"] > 0 and out["host_us_per_step_public"] > 0
    assert out["network"] == [784, 128, 64, 10] and out["batch_size"] == 32


def test_host_only_benchmark_on_the_simulator():
    out = json.loads(run([SCRIPTS / "bench_gpu.py", "--host-only", "--rounds", "1", "--steps", "80", "--json"],
                         env={"NUMBA_ENABLE_CUDASIM": "1"}))
    assert out["driver"].startswith("Numba's simulator") and out["launches_per_step"] == 2.0
    assert out["launch_path"] == "public"   # the simulator has no prepared launches


# A backend on the stand-in driver whose prepared launches are broken in one of three ways; prints
# the launch path warm_up chose and the launches made per step after it.
CHECK = textwrap.dedent("""
    import sys
    sys.path.insert(0, {scripts!r})
    import host_only
    counter = host_only.install()
    import numpy as np
    from rmsprop_cli import model
    from rmsprop_cli.backends import cuda_launch
    from rmsprop_cli.backends.cuda import CudaBackend
    from rmsprop_cli.config import Recipe
    from rmsprop_cli.optim import Optimizer

    how = sys.argv[1]
    prepare = cuda_launch.Launch.prepare

    def broken(self):
        if how == "raises":
            raise AttributeError("this numba-cuda has no _prepare_args")
        prepare(self)
        if how == "differs":   # a prepared launch that writes something the public one does not
            buf = self.args[-2]
            self.prepared = (lambda *a: buf[:1].copy_to_device(np.ones(1, np.float32)), ())

    cuda_launch.Launch.prepare = broken
    recipe = Recipe(hidden=(8,), batch_size=4, clip_norm=1.0 if how == "clip" else None)
    opt = Optimizer(recipe, 3)
    theta = model.glorot_init(recipe.sizes, np.random.default_rng(0))
    images, y = np.zeros((12, 784), np.uint8), np.arange(12) % 10
    backend = CudaBackend(recipe.sizes, 4, opt, theta, opt.init(theta.size), images, y)
    backend.warm_up()
    before = counter[0]
    backend.train_chunk(np.arange(12), 0, 3)
    print(backend.launch_path, (counter[0] - before) / 3, backend.step)
""")


@needs_nvvm
@pytest.mark.parametrize("how,path,launches", [("works", "prepared", 2), ("clip", "prepared", 3),
                                                ("raises", "public", 2), ("differs", "public", 2)])
def test_prepared_launches_are_checked_against_the_public_path(tmp_path, how, path, launches):
    script = tmp_path / "check.py"
    script.write_text(CHECK.format(scripts=str(SCRIPTS)))
    chosen, per_step, steps = run([script, how]).split()
    assert (chosen, float(per_step), int(steps)) == (path, launches, 3)


@needs_nvvm
def test_every_kernel_compiles_for_sm70_and_sm90_without_float64_or_spills():
    rows = json.loads(run([SCRIPTS / "ptx_report.py", "--cc", "70,90", "--json"], timeout=900))
    names = {"batch_rows", "weight_rows", "update_whole", "dense_forward (pixels)", "dense_forward (activations)",
             "evaluate_rows", "predict_proba", "probe"}
    assert {(r["kernel"], r["cc"]) for r in rows} == {(n, cc) for n in names for cc in (70, 90)}
    for r in rows:
        assert r["f64_instructions"] == 0, r
        assert r["spill_stores"] == r["spill_loads"] == 0, r
        assert 0 < r["registers"] <= 255, r
