"""Compute backends, chosen by --device. Each exposes the same small interface
(`Backend` below) so the training loop never knows which one it drives."""

from __future__ import annotations

import functools
from typing import Protocol

import numpy as np

from ..errors import ConfigError, DeviceError

DEVICES = ("cpu", "cuda", "auto")
INSTALL_CUDA = "pip install 'rmsprop-cli[cuda]'"


class Backend(Protocol):
    name: str

    def warm_up(self) -> None:
        """Compile (or load from cache) every kernel, changing nothing."""

    def train_chunk(self, order: np.ndarray, start: int, n_batches: int) -> tuple[float, int, int, int]:
        """Train on n_batches batches from order[start:]; (loss sum, correct, seen, bad batch or -1)."""

    def evaluate(self, images: np.ndarray, y: np.ndarray) -> tuple[float, int, np.ndarray]:
        """(loss sum, correct, confusion matrix) over uint8 images (N, 28, 28) or (N, 784)."""

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities (N, classes) of uint8 images."""

    def set_state(self, theta: np.ndarray, opt_state: dict[str, np.ndarray]) -> None:
        """Replace parameters and optimizer buffers (flat float32, from the host)."""

    def params(self) -> np.ndarray:
        """The flat float32 parameter vector, on the host."""

    def optimizer_state(self) -> dict[str, np.ndarray]:
        """Optimizer buffers by name, flat float32 on the host."""


def _driver_problem(exc: Exception) -> str:
    """A CUDA error (from initialising the driver, compiling, loading or launching a kernel,
    allocating memory) as one line that says what is wrong and what to do."""
    text = " ".join(str(exc).split())
    lowered = text.lower()
    if "driver library cannot be found" in lowered or "libcuda" in lowered:
        return "no NVIDIA driver was found (libcuda is not installed); install the NVIDIA driver for your GPU"
    if "no_device" in lowered or "no cuda-capable device" in lowered:
        return "the NVIDIA driver found no GPU (CUDA_ERROR_NO_DEVICE)"
    if "insufficient_driver" in lowered or "driver version is insufficient" in lowered:
        return "the NVIDIA driver is older than the CUDA runtime needs; update the driver"
    if "unsupported_ptx_version" in lowered or "ptx version" in lowered:
        return ("the NVIDIA driver is too old to load code from this CUDA compiler "
                "(CUDA_ERROR_UNSUPPORTED_PTX_VERSION); update the driver, or install the numba-cuda extra that "
                "matches it (pip install 'numba-cuda[cu12]' for a CUDA 12 driver)")
    if "out_of_memory" in lowered or "out of memory" in lowered:
        return ("the GPU ran out of memory (CUDA_ERROR_OUT_OF_MEMORY); close what else uses it "
                "(nvidia-smi lists it), or use a smaller --batch-size or --hidden")
    return f"CUDA failed ({type(exc).__name__}: {text[:200]})"


def is_cuda_error(exc: BaseException) -> bool:
    """Whether exc comes from CUDA itself: numba-cuda's driver, NVVM or linker, or cuda-python
    (cuda.core, cuda.bindings).  Anything else is a bug of this tool, and keeps its traceback."""
    return (type(exc).__module__ or "").startswith(("numba.cuda.cudadrv", "cuda."))


def cuda_failure(exc: Exception, when: str) -> Exception:
    """What to raise for exc, met `when`: a DeviceError (exit 7) for anything CUDA raised, exc itself
    otherwise."""
    if not is_cuda_error(exc):
        return exc
    return DeviceError(f"--device cuda failed {when}: {_driver_problem(exc)}; or use --device cpu")


def _probe(cuda) -> None:
    """Compile, load and run a one-thread kernel; raises whatever CUDA raises when it cannot."""
    from ..kernels import cuda as kernels

    out = cuda.to_device(np.zeros(1, np.int32))
    kernels.probe[1, 1](out)
    if out.copy_to_host()[0] != 1:
        raise RuntimeError("a one-thread test kernel ran but did not write its result")


@functools.lru_cache(maxsize=1)
def cuda_status() -> tuple[bool, str, dict]:
    """(usable, one line: the GPU or why CUDA cannot be used, details for `rmsprop info`).
    Usable means a one-thread kernel compiled, loaded and ran here."""
    try:
        import numba
        from numba import cuda
    except Exception as e:  # numba built without CUDA support, or a broken numba-cuda install
        return False, f"Numba's CUDA target cannot be imported ({e}); {INSTALL_CUDA}", {}
    if numba.config.ENABLE_CUDASIM:
        return True, "Numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1): the CUDA kernels run on the CPU, slowly", {
            "simulator": True}
    try:
        device = cuda.get_current_device()
    except Exception as e:  # CudaSupportError and driver errors; each means "not usable here"
        return False, _driver_problem(e), {}
    try:
        from numba.cuda.cudadrv import nvvm

        have_nvvm = nvvm.is_available()
    except Exception:
        have_nvvm = False
    name = device.name.decode() if isinstance(device.name, bytes) else str(device.name)
    cc = ".".join(map(str, device.compute_capability))
    details = {"name": name, "compute_capability": cc}
    if not have_nvvm:
        return False, f"found {name}, but not the CUDA compiler (NVVM) that Numba needs; {INSTALL_CUDA} brings it", details
    try:
        _probe(cuda)
    except Exception as e:
        return False, f"found {name}, but a test kernel could not run on it: {_driver_problem(e)}", details
    return True, f"{name}, compute capability {cc}", details


def resolve_device(device: str) -> tuple[str, str]:
    """The backend for --device ('cpu' or 'cuda') and a line saying which was chosen and
    why ('' for plain cpu).  Called before any data is fetched, so a mistake costs nothing."""
    if device not in DEVICES:
        raise ConfigError(f"--device must be one of: {', '.join(DEVICES)}; got {device!r}")
    if device == "cpu":
        return "cpu", ""
    usable, detail, _ = cuda_status()
    if device == "cuda":
        if not usable:
            raise DeviceError(f"--device cuda cannot be used: {detail}; or use --device cpu")
        return "cuda", f"Using CUDA: {detail}"
    if usable:
        return "cuda", f"--device auto: using CUDA ({detail})"
    return "cpu", f"--device auto: using the CPU, since CUDA cannot be used: {detail}"


def make_backend(device: str, sizes, batch_size, optimizer, theta, opt_state, images=None, y=None,
                 step: int = 0) -> Backend:
    device, _ = resolve_device(device)
    if device == "cuda":
        from .cuda import CudaBackend

        return CudaBackend(sizes, batch_size, optimizer, theta, opt_state, images, y, step)
    from .cpu import CpuBackend

    return CpuBackend(sizes, batch_size, optimizer, theta, opt_state, images, y, step)
