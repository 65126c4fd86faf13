"""The CUDA backend through the command line on the real MNIST: the same run on
CUDA and on the CPU, and checkpoints that move between them."""

import json

import pytest
from typer.testing import CliRunner

from rmsprop_cli.cli import app

runner = CliRunner()
# One step of 32 images: on the simulator every CUDA thread is a Python thread.
RUN = ["--epochs", "1", "--limit", "64", "--hidden", "16,8", "--val-split", "0.5", "--json"]


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def runs(data_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("runs")
    return {device: (invoke("train", *RUN, "--device", device, "--data-dir", data_dir,
                            "--output", folder / device / "model.safetensors"), folder / device / "model.safetensors")
            for device in ("cuda", "cpu")}


def test_training_on_cuda_matches_the_cpu(runs):
    cuda, cpu = runs["cuda"][0], runs["cpu"][0]
    assert cuda["device"] == "cuda" and cpu["device"] == "cpu"
    (a,), (b,) = cuda["epochs"], cpu["epochs"]
    assert a["loss"] == pytest.approx(b["loss"], rel=1e-3)
    assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-3)
    assert cuda["test_loss"] == pytest.approx(cpu["test_loss"], rel=1e-3)
    assert cuda["test_accuracy"] == cpu["test_accuracy"]


@pytest.mark.parametrize("trained,evaluated", [("cuda", "cpu"), ("cpu", "cuda")])
def test_checkpoints_move_between_devices(runs, data_dir, trained, evaluated):
    summary, path = runs[trained]
    result = invoke("evaluate", path, "--limit", "64", "--device", evaluated, "--data-dir", data_dir, "--json")
    assert result["device"] == evaluated
    assert result["test_loss"] == pytest.approx(summary["test_loss"], rel=1e-5)
    assert result["test_accuracy"] == summary["test_accuracy"]


def test_auto_picks_cuda_where_it_is_usable(runs, data_dir):
    result = runner.invoke(app, ["evaluate", str(runs["cpu"][1]), "--limit", "16", "--device", "auto",
                                 "--data-dir", str(data_dir)])
    assert result.exit_code == 0, result.output
    assert "--device auto: using CUDA" in result.stderr and "(cuda)" in result.stdout
