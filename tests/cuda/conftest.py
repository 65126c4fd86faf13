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


@pytest.fixture(autouse=True)
def fewer_threads_on_the_simulator(request, monkeypatch):
    """On the simulator every CUDA thread is a Python thread: batch_rows runs with a warp per
    block (its loops take any number), except in tests marked full_block, which keep the GPU's."""
    import numba

    if numba.config.ENABLE_CUDASIM and not request.node.get_closest_marker("full_block"):
        from rmsprop_cli.backends.cuda import CudaBackend

        monkeypatch.setattr(CudaBackend, "row_threads", 32)


def pytest_configure(config):
    config.addinivalue_line("markers", "full_block: run batch_rows with the GPU's block size on the simulator too")
