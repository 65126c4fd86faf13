"""`rmsprop compare` and `rmsprop plot` through the CLI."""

import json
import sys

import pytest
from typer.testing import CliRunner

from rmsprop_cli.cli import app

runner = CliRunner()
SMALL = ["--epochs", "2", "--limit", "1000", "--hidden", "16"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_compare_json_uses_the_same_start_for_every_optimizer(data_dir, tmp_path):
    result = invoke("compare", *SMALL, "--optimizers", "rmsprop,adam,sgd", "--lr", "sgd=0.05",
                    "--data-dir", data_dir, "--output", tmp_path / "c.png", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    rows = {r["optimizer"]: r for r in out["optimizers"]}
    assert list(rows) == ["rmsprop", "adam", "sgd"]
    assert rows["sgd"]["lr"] == 0.05 and rows["adam"]["lr"] == 0.001
    assert out["figure"] == str(tmp_path / "c.png") and (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    for r in rows.values():
        assert len(r["epochs"]) == 2 and r["best_val_accuracy"] == max(e["val_accuracy"] for e in r["epochs"])
        assert r["epochs_to_97"] is None or r["epochs"][r["epochs_to_97"] - 1]["val_accuracy"] >= 0.97
    # Same initial weights and batch order: compare's RMSProp run is exactly `rmsprop train`'s.
    train = invoke("train", *SMALL, "--data-dir", data_dir, "--output", tmp_path / "t", "--json")
    assert json.loads(train.stdout)["test_accuracy"] == rows["rmsprop"]["test_accuracy"]
    assert json.loads(train.stdout)["epochs"][1]["val_loss"] == rows["rmsprop"]["epochs"][1]["val_loss"]


def test_compare_without_matplotlib_still_prints_the_table(data_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    result = invoke("compare", "--epochs", "1", "--limit", "500", "--hidden", "8", "--optimizers", "rmsprop,sgd",
                    "--data-dir", data_dir, "--output", tmp_path)
    assert result.exit_code == 0, result.output
    assert "rmsprop" in result.stdout and "sgd" in result.stdout
    assert "pip install 'rmsprop-cli[plot]'" in result.stdout  # rich markup must not eat [plot]
    assert not (tmp_path / "compare.png").exists()


@pytest.mark.parametrize("args,words", [
    (["--optimizers", "rmsprop,nadam"], "unknown optimizer 'nadam'"),
    (["--lr", "sgd"], "NAME=VALUE"), (["--lr", "sgd=fast"], "NAME=VALUE"),
    (["--lr", "nesterov=0.1"], "unknown optimizer"), (["--optimizers", ","], "no optimizer"),
    (["--lr", "adam=-1"], "--lr"),
])
def test_compare_errors(args, words, tmp_path):
    result = invoke("compare", *args, "--data-dir", tmp_path, "--output", tmp_path / "o")
    assert result.exit_code == 2, result.output
    assert words in result.stderr and "\n" not in result.stderr.strip()


def test_plot_writes_the_curves_beside_the_checkpoint(data_dir, tmp_path):
    result = invoke("train", *SMALL, "--data-dir", data_dir, "--output", tmp_path, "--json")
    assert result.exit_code == 0, result.output
    result = invoke("plot", tmp_path / "model.safetensors")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "model.curves.png").read_bytes()[:4] == b"\x89PNG"
    result = invoke("plot", tmp_path / "missing.safetensors")
    assert result.exit_code == 4 and "does not exist" in result.stderr
