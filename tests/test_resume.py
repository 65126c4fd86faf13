"""Runs that stop and continue: Ctrl-C, --resume, --checkpoint-every, --early-stopping, the metrics file."""

import csv
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from typer.testing import CliRunner

from rmsprop_cli import checkpoint, training as train
from rmsprop_cli.cli import app
from rmsprop_cli.errors import Interrupted

OPTIONS = dict(epochs=3, limit=1500, hidden="32,16", batch_size=50)


class StopAfter:
    """A stop request after the n-th poll, as Ctrl-C would raise one."""

    def __init__(self, n):
        self.n = n

    def __call__(self):
        self.n -= 1
        return self.n < 0


def _run(data_dir, path, stop=None, resume=None, checkpoint_every=None, early_stopping=None, **options):
    return train.run({**OPTIONS, **options}, data_dir=data_dir, output=path, stop=stop, resume=resume,
                     checkpoint_every=checkpoint_every, early_stopping=early_stopping)


@pytest.fixture(scope="module")
def uninterrupted(data_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("full") / "model.safetensors"
    result = _run(data_dir, path)
    return result, checkpoint.load(path)


# 24 batches a chunk of 1 each: stops at (epoch, batch) (1, 1), (1, 12), (2, 0) via the epoch-end poll, (2, 3), (3, 4)
@pytest.mark.parametrize("polls", [0, 11, 23, 26, 51])
def test_interrupted_then_resumed_equals_uninterrupted_bit_for_bit(data_dir, tmp_path, uninterrupted, polls):
    path = tmp_path / "model.safetensors"
    with pytest.raises(Interrupted) as stopped:
        _run(data_dir, path, stop=StopAfter(polls))
    assert str(path) in str(stopped.value) and "--resume" in str(stopped.value)
    saved = checkpoint.load(path)
    assert saved.info["position"]["batch"] > 0 or saved.history

    result = _run(data_dir, path, resume=path)
    full_result, full = uninterrupted
    end = checkpoint.load(path)
    np.testing.assert_array_equal(end.theta, full.theta)
    np.testing.assert_array_equal(end.opt_state["v"], full.opt_state["v"])
    assert result["test_accuracy"] == full_result["test_accuracy"]
    assert [e["epoch"] for e in end.history] == [1, 2, 3]
    for mine, theirs in zip(end.history, full.history):
        assert mine["val_loss"] == theirs["val_loss"] and mine["accuracy"] == theirs["accuracy"]
        assert mine["loss"] == pytest.approx(theirs["loss"], rel=1e-12)  # summed in other chunks


def test_finished_run_continues_with_more_epochs(data_dir, tmp_path, uninterrupted):
    path = tmp_path / "model.safetensors"
    _run(data_dir, path, epochs=1)
    _run(data_dir, path, resume=path, epochs=3)
    np.testing.assert_array_equal(checkpoint.load(path).theta, uninterrupted[1].theta)


def test_metrics_csv_beside_the_checkpoint(data_dir, tmp_path, uninterrupted):
    path = tmp_path / "model.safetensors"
    result = _run(data_dir, path)
    with open(tmp_path / "model.metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert float(rows[2]["val_accuracy"]) == result["epochs"][2]["val_accuracy"]
    assert float(rows[0]["loss"]) == result["epochs"][0]["loss"]


def test_checkpoint_every_keeps_the_latest_epoch(data_dir, tmp_path):
    path = tmp_path / "model.safetensors"
    seen = []

    def stop():  # look at the file on disk while training goes on
        if path.exists():
            seen.append(len(checkpoint.load(path).history))
        return False

    _run(data_dir, path, stop=stop, checkpoint_every=1)
    assert 1 in seen and 2 in seen  # written after epochs 1 and 2, before the end


def test_early_stopping_restores_the_best_epoch(data_dir, tmp_path):
    path = tmp_path / "model.safetensors"
    # A learning rate this large overfits 600 images within a few epochs.
    result = _run(data_dir, path, epochs=30, limit=600, lr=0.01, early_stopping=2)
    info = result["early_stopping"]
    history = result["epochs"]
    assert info["stopped_after_epoch"] == len(history) < 30
    best = min(history, key=lambda m: m["val_loss"])
    assert info["best_epoch"] == best["epoch"] == len(history) - 2
    saved = checkpoint.load(path)
    from rmsprop_cli import data, fitting

    images, labels = data.load_mnist("train", data_dir, None, None, 600)[:2]
    _, _, X_val, y_val = fitting.split_validation(images, labels.astype(np.int64), 0.2)
    from rmsprop_cli.backends import make_backend
    from rmsprop_cli.optim import Optimizer

    opt = Optimizer(saved.recipe, 1)
    backend = make_backend("cpu", saved.recipe.sizes, 50, opt, saved.theta, saved.opt_state)
    loss, _, _ = backend.evaluate(X_val, y_val)
    assert loss / len(X_val) == best["val_loss"]  # the checkpoint holds the best epoch's weights


runner = CliRunner()


def _cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_resume_rejects_a_changed_recipe_and_too_few_epochs(data_dir, tmp_path):
    path = tmp_path / "model.safetensors"
    _run(data_dir, path, epochs=1)
    result = _cli("train", "--resume", path, "--lr", "0.01", "--data-dir", data_dir)
    assert result.exit_code == 2 and "--lr 0.01 differs from the checkpoint's (0.001)" in result.stderr
    result = _cli("train", "--resume", path, "--epochs", "1", "--data-dir", data_dir)
    assert result.exit_code == 2 and "pass --epochs larger than 1" in result.stderr
    result = _cli("train", "--resume", tmp_path / "missing.safetensors", "--data-dir", data_dir)
    assert result.exit_code == 4 and "does not exist" in result.stderr
    for flag in ("--checkpoint-every", "--early-stopping"):
        result = _cli("train", flag, "0", "--data-dir", data_dir, "--output", tmp_path / "x")
        assert result.exit_code == 2 and flag in result.stderr


def _wait_for(predicate, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def _start_long_run(data_dir, out):
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.Popen(
        [sys.executable, "-m", "rmsprop_cli", "train", "--epochs", "1000", "--limit", "3000", "--hidden", "16",
         "--checkpoint-every", "1", "--data-dir", str(data_dir), "--output", str(out), "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def test_ctrl_c_saves_and_exits_130(data_dir, tmp_path):
    out = tmp_path / "model.safetensors"
    proc = _start_long_run(data_dir, out)
    try:
        metrics = tmp_path / "model.metrics.csv"   # its header is written at the start, a row per epoch
        assert _wait_for(lambda: metrics.exists() and metrics.read_text().count("\n") >= 2, 120), proc.stderr.read()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert f"resume with: rmsprop train --resume {out}" in err and "Traceback" not in err
    saved = checkpoint.load(out)
    assert saved.history and saved.info["position"]["epoch"] == len(saved.history) + 1


def test_kill_9_never_leaves_a_broken_checkpoint(data_dir, tmp_path):
    out = tmp_path / "model.safetensors"
    proc = _start_long_run(data_dir, out)
    try:
        assert _wait_for(out.exists, 120)
        time.sleep(0.3)  # somewhere in a later epoch, maybe mid-write
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    assert checkpoint.load(out).history  # the last complete checkpoint, readable (a killed write leaves a .tmp)


@pytest.mark.parametrize("options", [
    # Every optimizer, each option of every optimizer at least once, each schedule and activation.
    {"optimizer": "adam"}, {"optimizer": "adam", "weight_decay": 0.01, "decoupled_decay": True, "clip_value": 0.5},
    {"centered": True, "momentum": 0.9, "nesterov": True, "schedule": "cosine", "warmup_steps": 10},
    {"clip_norm": 0.5, "bias_correction": True, "rho": 0.99, "eps_placement": "outside", "initial_accumulator": 0.1},
    {"optimizer": "sgd", "momentum": 0.5, "nesterov": True, "weight_decay": 0.001, "lr": 0.05},
    {"optimizer": "momentum", "schedule": "step", "decay_steps": 7},
    {"optimizer": "adagrad", "initial_accumulator": 0.2, "eps": 1e-6, "schedule": "exponential"},
    {"optimizer": "lion", "weight_decay": 0.1, "beta1": 0.95, "beta2": 0.98},
    {"activation": "tanh", "optimizer": "adam", "beta2": 0.99}, {"activation": "sigmoid", "lr": 0.01},
], ids=str)
def test_resume_keeps_every_optimizer_buffer_and_the_step(data_dir, tmp_path, options):
    """Adam's m and v, momentum buffers, the schedule's and bias correction's step count all survive a stop."""
    full = tmp_path / "full.safetensors"
    _run(data_dir, full, epochs=2, **options)
    part = tmp_path / "part.safetensors"
    with pytest.raises(Interrupted):
        _run(data_dir, part, stop=StopAfter(5), epochs=2, **options)
    _run(data_dir, part, resume=part, epochs=2, **options)
    a, b = checkpoint.load(full), checkpoint.load(part)
    assert set(a.opt_state) == set(b.opt_state) and len(a.opt_state) >= 1
    np.testing.assert_array_equal(a.theta, b.theta)
    for name in a.opt_state:
        np.testing.assert_array_equal(a.opt_state[name], b.opt_state[name])


def test_early_stopped_run_cannot_be_resumed(data_dir, tmp_path):
    path = tmp_path / "model.safetensors"
    result = _run(data_dir, path, epochs=30, limit=600, lr=0.01, early_stopping=1)
    assert "early_stopping" in result
    with pytest.raises(Exception) as refused:
        _run(data_dir, path, resume=path, epochs=30, limit=600, lr=0.01)
    assert "early stopping" in str(refused.value) and "start a new run" in str(refused.value)


def test_early_stopping_needs_validation_images(data_dir, tmp_path):
    result = _cli("train", "--limit", "100", "--val-split", "1e-17", "--early-stopping", "1", "--data-dir", data_dir,
                  "--output", tmp_path)
    assert result.exit_code == 2 and "leaves none" in result.stderr
