"""--device and `rmsprop info` in the CPU test process: what a user sees when CUDA
cannot be used here (the CUDA kernels themselves are tested in tests/cuda)."""

import json

import pytest
from typer.testing import CliRunner

from rmsprop_cli import backends
from rmsprop_cli.backends import _driver_problem, resolve_device
from rmsprop_cli.cli import app
from rmsprop_cli.errors import ConfigError, DeviceError

runner = CliRunner()
NO_DRIVER = "no NVIDIA driver was found (libcuda is not installed); install the NVIDIA driver for your GPU"


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(backends, "cuda_status", lambda: (False, NO_DRIVER, {}))


@pytest.fixture
def tiny_run(data_dir, tmp_path):
    return ["--epochs", "1", "--limit", "200", "--hidden", "8", "--data-dir", str(data_dir),
            "--output", str(tmp_path / "m.safetensors")]


@pytest.mark.parametrize("text,expected", [
    ("Error at driver init: \n\nCUDA driver library cannot be found.\nEnsure that a compatible NVIDIA driver is "
     "installed", "no NVIDIA driver"),
    ("[CUresult.CUDA_ERROR_NO_DEVICE] Call to cuInit results in CUDA_ERROR_NO_DEVICE", "found no GPU"),
    ("CUDA_ERROR_INSUFFICIENT_DRIVER", "older than the CUDA runtime"),
    ("[CUresult.CUDA_ERROR_UNSUPPORTED_PTX_VERSION] Call to cuModuleLoadData results in "
     "CUDA_ERROR_UNSUPPORTED_PTX_VERSION", "update the driver"),
    ("[CUresult.CUDA_ERROR_OUT_OF_MEMORY] Call to cuMemAlloc results in CUDA_ERROR_OUT_OF_MEMORY",
     "ran out of memory"),
    ("something\nelse entirely", "CUDA failed (RuntimeError: something else entirely)"),
])
def test_driver_errors_become_one_line_that_says_what_is_missing(text, expected):
    message = _driver_problem(RuntimeError(text))
    assert expected in message and "\n" not in message


def test_this_machines_cuda_status_is_one_line():
    usable, detail, _ = backends.cuda_status()
    assert isinstance(usable, bool) and detail and "\n" not in detail


def test_resolve_device(no_cuda):
    assert resolve_device("cpu") == ("cpu", "")
    device, message = resolve_device("auto")
    assert device == "cpu" and "using the CPU" in message and NO_DRIVER in message
    with pytest.raises(DeviceError, match="--device cuda cannot be used: no NVIDIA driver"):
        resolve_device("cuda")
    with pytest.raises(ConfigError, match="cpu, cuda, auto"):
        resolve_device("gpu")


@pytest.mark.parametrize("command", [["train"], ["evaluate", "model.safetensors"], ["predict", "m.safetensors", "x.png"],
                                     ["compare"]])
def test_device_cuda_without_a_gpu_is_one_line_before_any_work(no_cuda, command, tmp_path):
    result = runner.invoke(app, [*command, "--device", "cuda", "--data-dir", str(tmp_path)]
                           if command[0] != "predict" else [*command, "--device", "cuda"])
    assert result.exit_code == 7, result.output
    message = result.stderr.strip()
    assert message.startswith("Error: --device cuda cannot be used: no NVIDIA driver") and "\n" not in message
    assert "--device cpu" in message and "Traceback" not in result.output
    assert not any(tmp_path.iterdir()), "nothing is downloaded or written before the device is checked"


def test_device_auto_falls_back_to_cpu_and_says_so(no_cuda, tiny_run):
    result = runner.invoke(app, ["train", *tiny_run, "--device", "auto"])
    assert result.exit_code == 0, result.output
    assert "--device auto: using the CPU, since CUDA cannot be used: no NVIDIA driver" in result.stderr
    assert "(cpu)" in result.stdout


def test_device_auto_json_names_the_device_and_keeps_stdout_json(no_cuda, tiny_run):
    result = runner.invoke(app, ["train", *tiny_run, "--device", "auto", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["device"] == "cpu"


def test_info_reports_versions_threads_cuda_and_caches(no_cuda):
    result = runner.invoke(app, ["info", "--json"])
    assert result.exit_code == 0, result.output
    about = json.loads(result.stdout)
    import numba
    import numpy

    assert about["numba"] == numba.__version__ and about["numpy"] == numpy.__version__
    assert about["cpu_count"] >= 1 and about["numba_threads"] >= 1
    assert about["threading_layer"] == numba.threading_layer()
    split = about["threading_layer"] == "omp" and about["numba_threads"] > 1
    assert about["training_threads"] == (min(about["numba_threads"], 4) if split else 1)
    assert about["cuda"] == {"usable": False, "detail": NO_DRIVER}
    assert about["data_dir"] and about["kernel_cache_dir"]
    result = runner.invoke(app, ["info"])
    assert result.exit_code == 0, result.output
    for words in ("numba", "CPU threads", "threading layer", "not usable", "no NVIDIA driver", "MNIST cache",
                  "Kernel cache"):
        assert words in result.stdout


def test_info_shows_the_gpu_where_there_is_one(monkeypatch):
    monkeypatch.setattr(backends, "cuda_status", lambda: (True, "NVIDIA H100 80GB HBM3, compute capability 9.0",
                                                           {"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}))
    about = json.loads(runner.invoke(app, ["info", "--json"]).stdout)
    assert about["cuda"]["usable"] and about["cuda"]["compute_capability"] == "9.0"
    assert "usable: NVIDIA H100" in runner.invoke(app, ["info"]).stdout


class FakeDevice:
    name = b"NVIDIA Stand-in"
    compute_capability = (9, 0)


@pytest.fixture
def a_gpu_that_cannot_run_kernels(monkeypatch):
    """A driver and a device are found, but loading any kernel fails as an old driver does."""
    from numba import cuda
    from numba.cuda.cudadrv import nvvm

    def fail(_cuda):
        raise RuntimeError("[CUresult.CUDA_ERROR_UNSUPPORTED_PTX_VERSION] Call to cuLibraryLoadData results in "
                           "CUDA_ERROR_UNSUPPORTED_PTX_VERSION")

    monkeypatch.setattr(cuda, "get_current_device", lambda: FakeDevice())
    monkeypatch.setattr(nvvm, "is_available", lambda: True)
    monkeypatch.setattr(backends, "_probe", fail)
    backends.cuda_status.cache_clear()
    yield
    backends.cuda_status.cache_clear()


def test_cuda_is_usable_only_where_a_test_kernel_runs(a_gpu_that_cannot_run_kernels, tiny_run):
    usable, detail, details = backends.cuda_status()
    assert not usable and details["name"] == "NVIDIA Stand-in"
    assert "a test kernel could not run on it" in detail and "UNSUPPORTED_PTX_VERSION" in detail
    result = runner.invoke(app, ["train", *tiny_run, "--device", "auto"])
    assert result.exit_code == 0, result.output
    assert "--device auto: using the CPU, since CUDA cannot be used: found NVIDIA Stand-in" in result.stderr
    result = runner.invoke(app, ["info"])
    assert "a test kernel could not run" in result.stdout


def test_a_cuda_failure_while_setting_up_is_one_line_with_exit_7(monkeypatch, tiny_run):
    """CUDA said usable, then failed on the first allocation (here: there is no driver at all)."""
    monkeypatch.setattr(backends, "cuda_status", lambda: (True, "a GPU", {}))
    result = runner.invoke(app, ["train", *tiny_run, "--device", "cuda"])
    assert result.exit_code == 7, result.output
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("Error: --device cuda failed while setting up the GPU's buffers: ")
    assert "--device cpu" in message and "Traceback" not in result.output


def test_cuda_failures_at_warm_up_and_later_are_device_errors(monkeypatch):
    from numba.cuda.cudadrv.driver import CudaAPIError

    from rmsprop_cli.backends.cuda import CudaBackend

    def fail(self, *args):
        raise CudaAPIError(2, "Call to cuMemAlloc results in CUDA_ERROR_OUT_OF_MEMORY")

    class Buffer:
        copy_to_host = fail

    backend = object.__new__(CudaBackend)
    backend.y, backend.simulator, backend.buf, backend.step, backend.launches = [1], False, Buffer(), 0, 0
    for method in ("_train_chunk", "_evaluate"):
        monkeypatch.setattr(CudaBackend, method, fail)
    with pytest.raises(DeviceError, match="while compiling and starting the kernels: the GPU ran out of memory"):
        backend.warm_up()
    with pytest.raises(DeviceError, match="failed while training: the GPU ran out of memory"):
        backend.train_chunk(None, 0, 1)
    with pytest.raises(DeviceError, match="failed while evaluating: the GPU ran out of memory.*--device cpu$"):
        backend.evaluate(None, None)


def test_a_bug_is_not_disguised_as_a_cuda_failure(monkeypatch):
    from rmsprop_cli.backends.cuda import CudaBackend

    backend = object.__new__(CudaBackend)
    monkeypatch.setattr(CudaBackend, "_train_chunk", lambda self, *a: {}["no such key"])
    with pytest.raises(KeyError):
        backend.train_chunk(None, 0, 1)
