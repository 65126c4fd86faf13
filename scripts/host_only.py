"""A stand-in CUDA driver for measuring the host's side of a CUDA run on a
machine without a GPU (scripts/bench_gpu.py --host-only).

numba-cuda runs exactly as it would on a GPU: it types and compiles the
kernels with NVVM for a compute capability of 9.0 (the `[cuda]` extra brings
NVVM), converts every argument of every launch, and makes every copy through
its own driver wrappers.  Only the calls into the driver are replaced:
- "device" memory is host memory (numpy buffers, at real addresses), and the
  driver's copies (cuMemcpyHtoD, DtoH, DtoD, cuMemsetD8) are memmoves into it;
- the current device and context are stand-ins; loading a compiled kernel
  returns a stand-in for it, and no cubin is built;
- the launch, cuda.core's launch(stream, config, kernel, *params) (the call
  both numba-cuda's public launch path and the backend's prepared launches
  end in), converts its parameters to the driver's (void **) array, as the
  real one does before it calls cuLaunchKernelEx, and launches nothing.
So the kernels never run and the numbers in the buffers mean nothing; what
is timed is everything the host does per step.

install() must run before numba.cuda is imported.  Tested with numba-cuda
0.30.4 and cuda-core 1.2.2; it checks nothing else.
"""

from __future__ import annotations

import contextlib
import ctypes

import numpy as np

COMPUTE_CAPABILITY = (9, 0)
launches = [0]   # what the stand-in launch was asked to do


class _Memory:
    """Device memory that is host memory: what numba-cuda's device arrays hold."""

    __cuda_memory__ = True

    def __init__(self, size, owner=None, offset=0):
        self.owner = owner if owner is not None else np.zeros(max(size, 1), np.uint8)
        self.size = size
        self.offset = offset
        self.ptr = self.owner.ctypes.data + offset
        self.device_ctypes_pointer = ctypes.c_void_p(self.ptr)

    def view(self, start, stop=None):
        stop = self.size if stop is None else stop
        return _Memory(stop - start, self.owner, self.offset + start)


class _Device:
    id = 0
    name = b"stand-in for a GPU (scripts/host_only.py)"
    compute_capability = COMPUTE_CAPABILITY


class _Module:
    initialized = True


class _Function:
    """What get_cufunc returns: a kernel loaded nowhere."""

    kernel = object()
    module = _Module()


class _Context:
    device = _Device()

    def memalloc(self, size):
        return _Memory(size)


def _copy(dst, src, size, *stream):
    ctypes.memmove(int(dst), int(src), size)


def _memset(dst, value, size, *stream):
    ctypes.memset(int(dst), value, size)


def install():
    """Replace numba-cuda's calls into the driver; returns the stand-in launch's counter."""
    import cuda.core
    from cuda.core._kernel_arg_handler import ParamHolder
    from numba.cuda import codegen, dispatcher
    from numba.cuda.cudadrv import devices, driver

    context = _Context()

    def launch(stream, config, kernel, *params):
        ParamHolder(params)   # the conversion the real launch makes before cuLaunchKernelEx
        launches[0] += 1

    devices.get_context = lambda devnum=None: context
    devices._runtime.ensure_context = contextlib.nullcontext
    dispatcher.get_current_device = lambda: context.device
    dispatcher.get_context = lambda devnum=None: context
    dispatcher.launch = launch
    cuda.core.launch = launch
    driver._to_core_stream = lambda stream: None
    codegen.CUDACodeLibrary.get_cufunc = lambda self: _Function()
    for name in ("cuMemcpyHtoD", "cuMemcpyDtoH", "cuMemcpyDtoD", "cuMemcpyHtoDAsync", "cuMemcpyDtoHAsync",
                 "cuMemcpyDtoDAsync"):
        setattr(driver.driver, name, _copy)
    for name in ("cuMemsetD8", "cuMemsetD8Async"):
        setattr(driver.driver, name, _memset)
    return launches
