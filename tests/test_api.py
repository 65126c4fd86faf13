"""The Python API (`from rmsprop_cli import train, evaluate, predict, compare, sweep`): keyword
arguments named as the CLI's options, results equal to what `--json` prints."""

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from rmsprop_cli.cli import app
from rmsprop_cli.errors import ConfigError

runner = CliRunner()
SMALL = dict(limit=600, hidden="16", epochs=2)


def test_importing_the_api_is_light():
    code = ("import sys; from rmsprop_cli import train, evaluate, predict, compare, sweep; "
            "assert all(callable(f) for f in (train, evaluate, predict, compare, sweep)); "
            "assert 'numba' not in sys.modules, 'numba imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_train_evaluate_predict_as_the_cli_prints_them(data_dir, tmp_path):
    from rmsprop_cli import evaluate, predict, train

    result = train(**SMALL, rho=0.95, centered=True, batch_size=20, output=tmp_path / "api.safetensors",
                   data_dir=data_dir, threads=1)
    cli = runner.invoke(app, ["train", "--limit", "600", "--hidden", "16", "--epochs", "2", "--rho", "0.95",
                              "--centered", "--batch-size", "20", "--output", tmp_path / "cli.safetensors",
                              "--data-dir", data_dir, "--json"])
    assert cli.exit_code == 0, cli.output
    printed = json.loads(cli.stdout)
    assert set(result) == set(printed) and result["recipe"] == printed["recipe"]
    assert result["test_accuracy"] == printed["test_accuracy"]
    assert [m["loss"] for m in result["epochs"]] == [m["loss"] for m in printed["epochs"]]
    assert result["recipe"]["centered"] is True and result["recipe"]["hidden"] == [16]

    scored = evaluate(result["checkpoint"], limit=600, data_dir=data_dir)
    assert scored["test_accuracy"] == result["test_accuracy"]
    cli = runner.invoke(app, ["evaluate", result["checkpoint"], "--limit", "600", "--data-dir", data_dir, "--json"])
    assert json.loads(cli.stdout) == json.loads(json.dumps(scored))

    images = data_dir / "mnist" / "t10k-images-idx3-ubyte"
    got = predict(result["checkpoint"], images, index=[0, 1])
    cli = runner.invoke(app, ["predict", result["checkpoint"], str(images), "--index", "0", "--index", "1", "--json"])
    assert json.loads(cli.stdout) == json.loads(json.dumps(got)) and len(got["predictions"]) == 2


def test_hidden_as_a_tuple_and_flags_as_booleans(data_dir, tmp_path):
    from rmsprop_cli import train

    result = train(limit=600, epochs=1, hidden=(16, 8), nesterov=False, bias_correction=True,
                   output=tmp_path, data_dir=data_dir)
    assert result["recipe"]["hidden"] == [16, 8] and result["recipe"]["bias_correction"] is True
    assert result["checkpoint"] == str(tmp_path / "model.safetensors")


def test_compare_through_the_api(data_dir, tmp_path):
    pytest.importorskip("matplotlib")
    from rmsprop_cli import compare

    result = compare(optimizers=["sgd", "rmsprop"], lr={"sgd": 0.1}, **SMALL, output=tmp_path, data_dir=data_dir)
    assert [(r["optimizer"], r["lr"]) for r in result["optimizers"]] == [("sgd", 0.1), ("rmsprop", 0.001)]
    assert result["figure"] == str(tmp_path / "compare.png")


def test_sweep_returns_a_table_of_its_trials(data_dir, tmp_path):
    from rmsprop_cli import sweep

    table = sweep({"lr": [1e-3, "3e-3"], "optimizer": ["rmsprop", "adam"]}, seeds="0,1", **SMALL, rho=0.8,
                  output=tmp_path / "s", data_dir=data_dir, workers=2)
    assert len(table) == 8 and all(r["status"] == "finished" for r in table)
    assert {(r["options"]["optimizer"], r["recipe"]["rho"]) for r in table} == {("rmsprop", 0.8), ("adam", None)}
    assert len(table.combinations) == 4 and table.figure == tmp_path / "s" / "sweep.png"
    assert table.to_dict()["trials"] == list(table)
    assert json.loads((tmp_path / "s" / "sweep.json").read_text())["counts"]["finished"] == 8
    try:
        import pandas
    except ImportError:
        return
    frame = table.to_pandas()
    assert isinstance(frame, pandas.DataFrame) and list(frame["lr"]) == [r["options"]["lr"] for r in table]
    assert len(pandas.DataFrame(table)) == 8


@pytest.mark.parametrize("call, error", [
    (lambda api: api.train(lrr=0.1), TypeError),
    (lambda api: api.compare(rho=0.5), TypeError),
    (lambda api: api.sweep({"lr": [1e-3]}, threads=2), TypeError),
    (lambda api: api.sweep({"lr": []}), ConfigError),
    (lambda api: api.sweep({3: [1]}), ConfigError),
    (lambda api: api.sweep("lr=1e-3"), ConfigError),
    (lambda api: api.compare(lr=0.1), ConfigError),
    (lambda api: api.train(epochs=0), ConfigError),
])
def test_wrong_calls(call, error, tmp_path, monkeypatch):
    from rmsprop_cli import api

    monkeypatch.chdir(tmp_path)
    with pytest.raises(error):
        call(api)
    assert list(tmp_path.iterdir()) == []
