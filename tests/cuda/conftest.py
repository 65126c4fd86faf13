"""The CUDA tests run wherever CUDA is usable: on a GPU, or on Numba's CUDA
simulator, which must be switched on before numba is imported, so in a pytest
process of its own:

    NUMBA_ENABLE_CUDASIM=1 pytest tests/cuda

Elsewhere (a plain `pytest` on a machine without a GPU) they are skipped, saying how to run them.
"""

import pytest


def pytest_collection_modifyitems(config, items):
    from rmsprop_cli.backends import cuda_status

    usable, detail, _ = cuda_status()
    if usable:
        return
    skip = pytest.mark.skip(reason=f"CUDA is not usable here ({detail}); run them on Numba's simulator: "
                                   "NUMBA_ENABLE_CUDASIM=1 pytest tests/cuda")
    for item in items:
        if "tests/cuda/" in item.nodeid.replace("\\", "/") or item.nodeid.startswith("cuda/"):
            item.add_marker(skip)
