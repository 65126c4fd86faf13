"""End to end on the real MNIST: the default recipe, one epoch, then evaluate."""

import json

from typer.testing import CliRunner

from rmsprop_cli.cli import app


def test_one_epoch_of_the_default_recipe_on_mnist(data_dir, tmp_path):
    runner = CliRunner()
    out = tmp_path / "model.safetensors"
    result = runner.invoke(app, ["train", "--epochs", "1", "--data-dir", str(data_dir), "--output", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    (epoch,) = summary["epochs"]
    assert summary["test_accuracy"] >= 0.95, summary
    assert epoch["val_accuracy"] >= 0.95, epoch

    result = runner.invoke(app, ["evaluate", str(out), "--data-dir", str(data_dir), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["test_accuracy"] == summary["test_accuracy"]
