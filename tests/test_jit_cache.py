"""Numba's on-disk cache follows everything the kernels compile from (rmsprop_cli/jitcache.py).

Each test copies the package, compiles in fresh processes (a few seconds each) and reads
whether a kernel came from the cache (dispatcher.stats).  The copy gets two modules of the
test's own: kernels/_probe.py, a kernel for each target that reads a constant from
_probe_scale.py, a module no list names (found by following imports, as a new module of
the package would be).  The package's own kernels are checked too: all of them must be
cached under the hashed folder, and KERNEL is called.  The CUDA kernels (the
package's and the probe's cuda.jit(cache=True)) are checked by the folder
numba-cuda's locators chose for them, which needs no GPU (they compile at their
first launch); the subprocesses run without the simulator, which caches nothing.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from rmsprop_cli import jitcache

# A cheap CPU kernel of the package, looked up by name in every kernels/*.py and called as
# KERNEL(np.float32(1.0)): if it is renamed or takes other arguments, change this line.
KERNEL = "finite"

PROBE = '''
import numpy as np
from numba import njit

from ..config import JIT
from .._probe_scale import SCALE

try:
    from numba import cuda
except ImportError:  # no numba-cuda
    cuda = None


@njit(**JIT)
def scaled(x):
    return x * SCALE


if cuda is not None:
    @cuda.jit(cache=True)
    def scaled_cuda(out):
        out[0] = SCALE
'''

SCRIPT = '''
import importlib, json, pkgutil, sys
import numpy as np
import rmsprop_cli.kernels as kernels
from rmsprop_cli import jitcache

modules = [importlib.import_module("rmsprop_cli.kernels." + m.name) for m in pkgutil.iter_modules(kernels.__path__)]
real = [getattr(m, sys.argv[1]) for m in modules if hasattr(getattr(m, sys.argv[1], None), "stats")]
if not real:
    sys.exit(f"no kernel {sys.argv[1]!r} in rmsprop_cli/kernels: set KERNEL in tests/test_jit_cache.py")
probe = sys.modules["rmsprop_cli.kernels._probe"]
value = float(probe.scaled(np.float32(1.0)))
real[0](np.float32(1.0))
counts = lambda f: [sum(f.stats.cache_hits.values()), sum(f.stats.cache_misses.values())]
paths = {f._cache.cache_path for m in modules for f in vars(m).values()
         if getattr(getattr(f, "_cache", None), "cache_path", None)}
cuda = getattr(probe, "scaled_cuda", None)
print(json.dumps({"digest": jitcache.digest(), "modes": jitcache.MODES, "value": value, "probe": counts(probe.scaled),
                  "real": counts(real[0]), "paths": sorted(paths), "cuda": cuda and cuda._cache.cache_path}))
'''

AS_ROOT = getattr(os, "geteuid", lambda: -1)() == 0


def without_dac_override():
    """Root writes into read-only folders: the read-only runs drop the capabilities that let it (Linux)."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP, in effect from the exec on
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


@pytest.fixture
def package_copy():
    """A copy of the package with the probe."""
    base = Path(tempfile.mkdtemp(prefix="jitcache-"))
    package = base / "rmsprop_cli"
    shutil.copytree(Path(jitcache.__file__).parent, package, ignore=shutil.ignore_patterns("__pycache__", "*.nb[ic]"))
    (package / "kernels" / "_probe.py").write_text(PROBE)
    (package / "_probe_scale.py").write_text("SCALE = 2.0\n")
    yield package
    for folder, dirs, files in os.walk(base):
        os.chmod(folder, 0o755)
    shutil.rmtree(base)


def compile_in_fresh_process(package: Path, read_only: bool = False, **env) -> dict:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_")}  # no simulator, no user cache dir
    # No .pyc: an edit that keeps a file's size and mtime would otherwise be read from a stale one.
    clean.update(PYTHONPATH=str(package.parent), PYTHONDONTWRITEBYTECODE="1", **env)
    done = subprocess.run([sys.executable, "-c", SCRIPT, KERNEL], env=clean, cwd=package.parent,
                          capture_output=True, text=True, timeout=300,
                          preexec_fn=without_dac_override if read_only and AS_ROOT else None)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def assert_all_under(result: dict, folder: Path):
    assert folder.name == f"rmsprop-cli-{result['digest'][:16]}"
    assert result["paths"] and all(Path(p) == folder for p in result["paths"]), result["paths"]
    assert result["modes"]["numba.core.caching"] == "locator"  # "cache_dir": numba's internals changed
    if result["cuda"] is not None:  # a cuda.jit(cache=True) kernel on the real target, not the simulator
        assert Path(result["cuda"]) == folder
        assert result["modes"]["numba.cuda.core.caching"] == "locator"


def test_kernels_recompile_when_any_file_they_compile_from_changes(package_copy):
    cache = package_copy.parent / "cache"
    first = compile_in_fresh_process(package_copy, NUMBA_CACHE_DIR=str(cache))
    assert first["probe"] == [0, 1] and first["real"] == [0, 1] and first["value"] == 2.0
    assert_all_under(first, cache / f"rmsprop-cli-{first['digest'][:16]}")

    again = compile_in_fresh_process(package_copy, NUMBA_CACHE_DIR=str(cache))  # (a) nothing changed
    assert again["digest"] == first["digest"] and again["probe"] == [1, 0] and again["real"] == [1, 0]

    config = package_copy / "config.py"  # (b) a jit flag
    text = config.read_text()
    edited = text.replace(', "reassoc"', "").replace('"reassoc", ', "")
    assert edited != text, "config.py's FASTMATH no longer lists 'reassoc': edit another flag here"
    config.write_text(edited)
    flags = compile_in_fresh_process(package_copy, NUMBA_CACHE_DIR=str(cache))
    assert flags["digest"] != first["digest"] and flags["probe"] == [0, 1] and flags["real"] == [0, 1]
    assert_all_under(flags, cache / f"rmsprop-cli-{flags['digest'][:16]}")

    scale = package_copy / "_probe_scale.py"  # (c) an imported constant, same size and mtime: only the content tells
    before = scale.stat()
    scale.write_text("SCALE = 3.0\n")
    os.utime(scale, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (scale.stat().st_size, scale.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    constant = compile_in_fresh_process(package_copy, NUMBA_CACHE_DIR=str(cache))
    assert constant["value"] == 3.0 and constant["probe"] == [0, 1] and constant["real"] == [0, 1]
    assert constant["digest"] not in (first["digest"], flags["digest"])


def test_read_only_package_caches_in_the_user_cache_folder(package_copy):
    # (d) as from a site-packages owned by root: no NUMBA_CACHE_DIR, so numba's user-wide folder
    for folder, dirs, files in os.walk(package_copy):
        os.chmod(folder, 0o555)
    env = {"HOME": str(package_copy.parent / "home"), "XDG_CACHE_HOME": str(package_copy.parent / "home" / "cache")}
    try:
        first = compile_in_fresh_process(package_copy, read_only=True, **env)
    except subprocess.SubprocessError:  # the capabilities could not be dropped
        pytest.skip("running as root, which can write into a read-only folder here")
    assert_all_under(first, package_copy.parent / "home" / "cache" / "numba" / f"rmsprop-cli-{first['digest'][:16]}")
    assert first["probe"] == [0, 1]
    assert not any("rmsprop-cli-" in d for _, dirs, _ in os.walk(package_copy) for d in dirs)
    again = compile_in_fresh_process(package_copy, read_only=True, **env)
    assert again["probe"] == [1, 0] and again["real"] == [1, 0]


def test_discovery_finds_config_and_every_kernel_module():
    found = set(jitcache.sources())
    package = Path(jitcache.__file__).parent
    assert str(package / "config.py") in found
    assert {str(p) for p in (package / "kernels").glob("*.py")} <= found
    assert not any("cli.py" == Path(p).name for p in found)  # not the whole package: only what the kernels import


@pytest.mark.parametrize("docstring", ["", '"""An import in a docstring:\nimport x (as the whole file is parsed)\n"""\n'])
def test_discovery_reads_every_form_of_import(docstring):
    text = docstring + ("from ..config import (JIT,\n    FASTMATH)\nimport rmsprop_cli.kernels\nimport numpy\n"
                        "from .. import \\\n    jitcache\n\n\ndef f():\n    from ..errors import X\n")
    found = jitcache._imports(os.path.join(jitcache.KERNELS, "example.py"), text)
    package = Path(jitcache.__file__).parent
    assert {Path(p) for p in found} == {package / "config.py", package / "jitcache.py", package / "errors.py",
                                        package / "__init__.py", package / "kernels" / "__init__.py"}
