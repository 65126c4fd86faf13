"""PTX of every CUDA kernel, for compute capabilities 7.0 to 9.0, with the
argument types the backend passes, and what ptxas says of each: registers,
spills, shared and stack memory, and the float64 instructions in the PTX.
No GPU or driver is needed, only the `[cuda]` extra (NVVM, and ptxas from
the nvidia-cuda-nvcc wheel).

    python scripts/ptx_report.py [--cc 70,75,80,86,89,90] [--json] [--keep DIR]

numba.cuda.compile_ptx(kernel, signature, cc=...) compiles a kernel for the
compute capability it is given, but the device functions the kernel calls
(kernels/math.py's updates, the activations) are compiled for "the current
device", which it asks the driver for: without one, compile_ptx fails with
"CUDA driver library cannot be found".  The way around it: replace
numba.cuda.dispatcher.get_current_device with a stand-in whose
compute_capability is the wanted one, before compiling.  Device functions
are compiled once per process and kept, so each compute capability is
compiled in a process of its own (this script starts one per cc).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

CCS = (70, 75, 80, 86, 89, 90)


def signatures():
    """(name, kernel, argument types) of every kernel launch the backend makes."""
    import numba
    import numpy as np

    from rmsprop_cli.kernels import cuda as K
    from rmsprop_cli.kernels import cuda_steps as S

    def t(dtype, ndim=1):
        return numba.typeof(np.zeros((1,) * ndim, dtype))

    f32, i64, u8, i32 = np.float32, np.int64, np.uint8, np.int32
    step = (t(u8, 2), t(i32, 2), t(f32), t(i64))
    forward = (t(i64), numba.int64, numba.int64, numba.float32, t(f32), numba.int64, numba.int64, t(f32, 2))
    return [
        ("batch_rows", S.batch_rows, step),
        ("weight_rows", S.weight_rows, step[2:]),
        ("update_whole", S.update_whole, step[2:]),
        ("dense_forward (pixels)", K.dense_forward, (t(u8, 2),) + forward),
        ("dense_forward (activations)", K.dense_forward, (t(f32, 2),) + forward),
        ("evaluate_rows", K.evaluate_rows, (t(f32, 2), t(i32), numba.int64, numba.int64, t(f32), t(i64), t(i64, 2))),
        ("predict_proba", K.predict_proba, (t(f32, 2), numba.int64, numba.int64, t(f32, 2))),
        ("probe", K.probe, (t(i32),)),
    ]


def ptxas():
    import nvidia.cuda_nvcc   # a namespace package: no __file__

    return os.path.join(list(nvidia.cuda_nvcc.__path__)[0], "bin", "ptxas")


def one_cc(cc: int, keep: str | None) -> list[dict]:
    """Compile every kernel for cc in this process; run ptxas on each."""
    from numba.cuda import dispatcher

    class StandIn:
        compute_capability = divmod(cc, 10)

    dispatcher.get_current_device = lambda: StandIn()
    from numba import cuda

    rows = []
    for name, kernel, sig in signatures():
        ptx, _ = cuda.compile_ptx(kernel.py_func, sig, cc=divmod(cc, 10), fastmath=False)
        f64 = len(re.findall(r"^\s*[a-z][\w.]*\.f64\b", ptx, re.M))
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(keep or tmp, f"{re.sub(r'[^a-z0-9]+', '_', name)}.sm_{cc}.ptx")
            with open(path, "w") as f:
                f.write(ptx)
            out = subprocess.run([ptxas(), f"-arch=sm_{cc}", "-v", path, "-o", os.devnull],
                                 capture_output=True, text=True, check=True).stderr

        def grab(pattern):
            m = re.search(pattern, out)
            return int(m.group(1)) if m else 0

        rows.append({"kernel": name, "cc": cc, "registers": grab(r"Used (\d+) registers"),
                     "spill_stores": grab(r"(\d+) bytes spill stores"), "spill_loads": grab(r"(\d+) bytes spill loads"),
                     "shared_bytes": grab(r"(\d+) bytes smem"), "stack_bytes": grab(r"(\d+) bytes stack frame"),
                     "f64_instructions": f64, "ptx_lines": ptx.count("\n")})
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cc", default=",".join(map(str, CCS)), help="compute capabilities, e.g. 70,80,90")
    ap.add_argument("--json", action="store_true", help="one JSON list on stdout")
    ap.add_argument("--keep", default=None, help="write the PTX files to this folder")
    ap.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)   # a child process: one cc
    args = ap.parse_args()
    if args.one is not None:
        print(json.dumps(one_cc(args.one, args.keep)))
        return
    if args.keep:
        os.makedirs(args.keep, exist_ok=True)
    rows = []
    for cc in (int(c) for c in args.cc.split(",")):
        cmd = [sys.executable, os.path.abspath(__file__), "--one", str(cc)] + (["--keep", args.keep] if args.keep else [])
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"compiling for sm_{cc} failed:\n{done.stderr[-2000:]}")
        rows += json.loads(done.stdout)
    if args.json:
        print(json.dumps(rows))
        return
    print(f"{'kernel':28s} {'sm':>3s} {'regs':>5s} {'spill st/ld':>11s} {'smem':>6s} {'stack':>6s} {'f64':>4s}")
    for r in rows:
        print(f"{r['kernel']:28s} {r['cc']:>3d} {r['registers']:>5d} {r['spill_stores']:>5d}/{r['spill_loads']:<5d} "
              f"{r['shared_bytes']:>6d} {r['stack_bytes']:>6d} {r['f64_instructions']:>4d}")


if __name__ == "__main__":
    main()
