"""The command line, through typer's CliRunner: results, JSON, and every user error."""

import gzip
import os
import json
import subprocess
import sys

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mnist_server import dead_url
from rmsprop_cli.cli import app

runner = CliRunner()
SMALL = ["--limit", "600", "--hidden", "16", "--epochs", "2"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def assert_user_error(result, code, *words):
    """A user mistake: the given exit code and one line on stderr that says what happened."""
    assert result.exit_code == code, result.output
    message = result.stderr.strip()
    assert message.startswith("Error:") and "\n" not in message, message
    assert "Traceback" not in result.output
    for w in words:
        assert w in message, message


def test_help_does_not_import_numba():
    code = ("import sys; from typer.testing import CliRunner; from rmsprop_cli.cli import app; "
            "r = CliRunner().invoke(app, ['train', '--help']); assert r.exit_code == 0, r.output; "
            "assert '--eps-placement' in r.output; assert 'numba' not in sys.modules, 'numba imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_module_entry_point_prints_version():
    out = subprocess.run([sys.executable, "-m", "rmsprop_cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("rmsprop-cli ")


@pytest.mark.parametrize("args,words", [
    (["--lr", "0"], "--lr"), (["--lr", "-1"], "--lr"), (["--lr", "nan"], "--lr"),
    (["--rho", "1"], "--rho"), (["--rho", "-0.1"], "--rho"),
    (["--eps", "0"], "--eps"), (["--eps-placement", "middle"], "--eps-placement"),
    (["--batch-size", "0"], "--batch-size"), (["--epochs", "0"], "--epochs"),
    (["--val-split", "1"], "--val-split"), (["--val-split", "-0.5"], "--val-split"),
    (["--hidden", "128,x"], "--hidden"), (["--hidden", "128,0"], "--hidden"),
    (["--limit", "0"], "--limit"), (["--device", "tpu"], "--device"),
])
def test_invalid_options_are_one_line_errors(args, words, tmp_path):
    result = invoke("train", *args, "--output", tmp_path, "--data-dir", tmp_path, "--mirror", dead_url())
    assert_user_error(result, 2, words)


def test_unreachable_mirror_names_what_was_tried(tmp_path):
    url = dead_url()
    result = invoke("train", "--data-dir", tmp_path / "empty", "--mirror", url, "--output", tmp_path / "o")
    assert_user_error(result, 3, url, "--mirror")


def test_checksum_mismatch_is_an_error(mnist_dir, tmp_path):
    bad = tmp_path / "mirror"
    bad.mkdir()
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        raw = bytearray(gzip.open(mnist_dir / f"{name}.gz").read())
        raw[-1] ^= 0xFF  # same size, valid IDX, wrong content
        (bad / f"{name}.gz").write_bytes(gzip.compress(bytes(raw)))
    result = invoke("evaluate", tmp_path / "m.safetensors", "--data-dir", tmp_path / "d", "--mirror", bad)
    # The checkpoint is checked first: make one so the data error is what we see.
    assert result.exit_code == 4
    ckpt = _small_checkpoint(tmp_path)
    result = invoke("evaluate", ckpt, "--data-dir", tmp_path / "d", "--mirror", bad)
    assert_user_error(result, 3, "checksum")


@pytest.mark.parametrize("damage,words", [
    (lambda raw: raw[: len(raw) // 2], "t10k-images-idx3-ubyte"),
    (lambda raw: b"\x00\x00\x09\x03" + raw[4:], "t10k-images-idx3-ubyte"),
])
def test_truncated_or_wrong_magic_idx(mnist_dir, tmp_path, damage, words):
    bad = tmp_path / "mirror"
    bad.mkdir()
    raw = gzip.open(mnist_dir / "t10k-images-idx3-ubyte.gz").read()
    (bad / "t10k-images-idx3-ubyte").write_bytes(damage(raw))
    (bad / "t10k-labels-idx1-ubyte.gz").write_bytes((mnist_dir / "t10k-labels-idx1-ubyte.gz").read_bytes())
    ckpt = _small_checkpoint(tmp_path)
    result = invoke("evaluate", ckpt, "--data-dir", tmp_path / "d", "--mirror", bad)
    assert_user_error(result, 3, words)
    assert not (tmp_path / "d" / "mnist" / "t10k-images-idx3-ubyte").exists()


_CKPT = {}


def _small_checkpoint(tmp_path):
    """A real checkpoint from a tiny run, trained once per session and copied."""
    if "path" not in _CKPT:
        from mnist_server import find_mnist

        out = tmp_path / "small" / "model.safetensors"
        result = invoke("train", *SMALL, "--output", out, "--data-dir", tmp_path / "small-data",
                        "--mirror", find_mnist(), "--json")
        assert result.exit_code == 0, result.output
        _CKPT["path"], _CKPT["result"] = out, json.loads(result.stdout)
    return _CKPT["path"]


@pytest.mark.parametrize("damage,words", [
    (None, "does not exist"),
    (lambda p: p.write_bytes(p.read_bytes()[:1000]), "not a readable safetensors"),
    (lambda p: p.write_bytes(np.random.default_rng(0).bytes(5000)), "not a readable safetensors"),
])
def test_bad_checkpoint_through_cli(data_dir, tmp_path, damage, words):
    path = tmp_path / "model.safetensors"
    if damage:
        path.write_bytes(_small_checkpoint(tmp_path).read_bytes())
        damage(path)
    assert_user_error(invoke("evaluate", path, "--data-dir", data_dir), 4, words)


def test_newer_checkpoint_format_through_cli(data_dir, tmp_path):
    from safetensors import safe_open
    from safetensors.numpy import save_file

    with safe_open(str(_small_checkpoint(tmp_path)), framework="numpy") as f:
        meta, tensors = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}
    meta["format_version"] = "3"
    path = tmp_path / "future.safetensors"
    save_file(tensors, str(path), metadata=meta)
    assert_user_error(invoke("evaluate", path, "--data-dir", data_dir), 4, "newer", "pip install -U")


def test_unwritable_output_fails_before_training(data_dir, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = invoke("train", *SMALL, "--data-dir", data_dir, "--output", blocker / "run")
    assert_user_error(result, 5, "cannot write", "--output")


def test_divergence_names_epoch_and_batch(data_dir, tmp_path):
    result = invoke("train", "--limit", "640", "--lr", "1e30", "--data-dir", data_dir, "--output", tmp_path)
    assert_user_error(result, 6, "epoch 1, batch", "--lr")
    assert not (tmp_path / "model.safetensors").exists()


def test_train_json_then_evaluate_reproduces(data_dir, tmp_path):
    out = tmp_path / "run" / "model.safetensors"
    result = invoke("train", *SMALL, "--data-dir", data_dir, "--output", out, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)  # stdout holds the JSON object and nothing else
    assert set(summary) == {"test_accuracy", "test_loss", "checkpoint", "device", "epochs", "recipe"}
    assert summary["recipe"]["hidden"] == [16] and summary["recipe"]["limit"] == 600
    assert summary["device"] == "cpu" and summary["checkpoint"] == str(out)
    assert [e["epoch"] for e in summary["epochs"]] == [1, 2]
    assert set(summary["epochs"][0]) == {"epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds"}
    assert summary["epochs"][1]["loss"] < summary["epochs"][0]["loss"]
    assert summary["test_accuracy"] > 0.5  # 480 images, 2 epochs: far above chance (0.1)

    result = invoke("evaluate", out, "--data-dir", data_dir, "--limit", "600", "--json")
    assert result.exit_code == 0, result.output
    ev = json.loads(result.stdout)
    assert ev["test_accuracy"] == summary["test_accuracy"]
    assert ev["test_loss"] == pytest.approx(summary["test_loss"], rel=1e-12)
    confusion = np.array(ev["confusion_matrix"])
    assert confusion.shape == (10, 10) and confusion.sum() == 600
    assert np.trace(confusion) / 600 == ev["test_accuracy"]
    assert ev["per_class_accuracy"][3] == confusion[3, 3] / confusion[3].sum()


def test_train_and_evaluate_human_output(data_dir, tmp_path):
    result = invoke("train", *SMALL, "--data-dir", data_dir, "--output", tmp_path)
    assert result.exit_code == 0, result.output
    for words in ("val_accuracy", "Test accuracy", "Checkpoint saved to", str(tmp_path / "model.safetensors"),
                  "--limit 600"):
        assert words in result.stdout
    result = invoke("evaluate", tmp_path / "model.safetensors", "--data-dir", data_dir, "--limit", "100")
    assert result.exit_code == 0, result.output
    assert "Per-class accuracy" in result.stdout and "Confusion matrix" in result.stdout


def test_default_output_goes_under_runs(data_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("train", "--limit", "100", "--epochs", "1", "--hidden", "4", "--data-dir", data_dir, "--json")
    assert result.exit_code == 0, result.output
    path = json.loads(result.stdout)["checkpoint"]
    assert path.startswith("runs/") and path.endswith("-b32-seed0/model.safetensors")
    assert (tmp_path / path).is_file()


def test_download_command(mnist_dir, tmp_path):
    result = invoke("download", "--data-dir", tmp_path, "--mirror", mnist_dir)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "mnist").iterdir()) == sorted(
        ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"])


def test_environment_variables_set_data_dir_and_mirror(mnist_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("RMSPROP_DATA_DIR", str(tmp_path / "env-data"))
    monkeypatch.setenv("RMSPROP_MIRROR", f"{dead_url()} {mnist_dir}")  # several, space-separated
    result = invoke("download")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "env-data" / "mnist" / "t10k-labels-idx1-ubyte").is_file()


def test_full_disk_fails_before_training(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 1000, 1000))
    # A dead mirror and an empty data folder: only an error raised before any download passes.
    result = invoke("train", "--output", tmp_path / "o", "--data-dir", tmp_path / "d", "--mirror", dead_url())
    assert_user_error(result, 5, "MiB free there", "--output")


def test_read_only_output_fails_before_training(tmp_path, monkeypatch):
    import errno
    import tempfile

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", read_only)  # root ignores chmod, so simulate the file system
    result = invoke("train", "--output", tmp_path / "o", "--data-dir", tmp_path / "d", "--mirror", dead_url())
    assert_user_error(result, 5, "read-only file system", "choose another --output")


@pytest.mark.parametrize("args,words", [
    (["--seed", "-1"], "--seed"), (["--eps", "1e-50"], "--eps"), (["--lr", "1e39"], "--lr"),
    (["--rho", "0.999999999"], "--rho"), (["--limit", "1"], "no training images left"),
    (["--optimizer", "nadam"], "--optimizer"), (["--schedule", "linear"], "--schedule"),
    (["--momentum", "1"], "--momentum"), (["--nesterov"], "--nesterov needs --momentum"),
    (["--clip-norm", "0"], "--clip-norm"), (["--clip-value", "-1"], "--clip-value"),
    (["--weight-decay", "-1"], "--weight-decay"), (["--schedule", "step", "--decay-rate", "0"], "--decay-rate"),
    (["--optimizer", "adam", "--beta2", "1"], "--beta2"), (["--warmup-steps", "-3"], "--warmup-steps"),
])
def test_more_invalid_options(args, words, tmp_path):
    result = invoke("train", *args, "--output", tmp_path / "o", "--data-dir", tmp_path, "--mirror", dead_url())
    assert_user_error(result, 2, words)
    assert not (tmp_path / "o").exists()  # nothing created for a run that never started


def _refused_combinations():
    """Every optimizer with every option the registry says does not apply to it, and the other
    combinations that cannot work: (arguments, words the one-line error must hold)."""
    from rmsprop_cli import optim

    value = {"eps_placement": "outside", "eps": "1e-6", "rho": "0.5", "momentum": "0.5", "initial_accumulator": "0.5",
             "beta1": "0.5", "beta2": "0.5", "decoupled_decay": None, "centered": None, "nesterov": None,
             "bias_correction": None}
    cases = []
    for spec in optim.REGISTRY:
        for name in optim.SPECIFIC + ("decoupled_decay",):
            if name in spec.options:
                continue
            flag = "--" + name.replace("_", "-")
            extra = ["--weight-decay", "0.1"] if name == "decoupled_decay" else []
            args = ["--optimizer", spec.name, flag] + ([value[name]] if value[name] else []) + extra
            cases.append((args, [f"{flag} does not apply to --optimizer {spec.name}",
                                 "it applies to " + ", ".join(optim.applies_to(name))]))
    cases += [
        (["--centered", "--bias-correction"], ["--centered with --bias-correction"]),
        (["--decoupled-decay"], ["--decoupled-decay needs --weight-decay"]),
        (["--optimizer", "sgd", "--nesterov"], ["--nesterov needs --momentum"]),
        (["--decay-rate", "0.5"], ["--decay-rate does not apply to --schedule constant", "step and exponential"]),
        (["--schedule", "cosine", "--decay-steps", "5"], ["--decay-steps does not apply to --schedule cosine"]),
        (["--activation", "gelu"], ["--activation must be one of relu, tanh, sigmoid"]),
    ]
    return cases


@pytest.mark.parametrize("args,words", _refused_combinations(), ids=lambda a: " ".join(a) if a and
                         isinstance(a[0], str) and a[0].startswith("--") else "")
def test_options_that_cannot_apply_are_refused(args, words, tmp_path):
    """An option the optimizer (or schedule) does not use would be silently ignored: one line, exit 2,
    naming the optimizers it applies to; nothing is created."""
    result = invoke("train", *args, "--output", tmp_path / "o", "--data-dir", tmp_path, "--mirror", dead_url())
    assert_user_error(result, 2, *words)
    assert not (tmp_path / "o").exists()


def test_huge_batch_size_is_capped_to_the_data(data_dir, tmp_path):
    result = invoke("train", "--limit", "200", "--epochs", "1", "--hidden", "4", "--batch-size", "1000000000",
                    "--data-dir", data_dir, "--output", tmp_path, "--json")
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)["epochs"]) == 1


def _crafted(tmp_path, recipe_change=None, info_change=None):
    from safetensors import safe_open
    from safetensors.numpy import save_file

    with safe_open(str(_small_checkpoint(tmp_path)), framework="numpy") as f:
        meta, tensors = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}
    if recipe_change:
        meta["recipe"] = json.dumps(recipe_change(json.loads(meta["recipe"])))
    if info_change:
        meta["info"] = json.dumps(info_change(json.loads(meta["info"])))
    path = tmp_path / "crafted.safetensors"
    save_file(tensors, str(path), metadata=meta)
    return path


@pytest.mark.parametrize("recipe_change,info_change,words", [
    (lambda r: {**r, "n_classes": 3}, None, "3 classes"),
    (lambda r: {**r, "n_inputs": 5}, None, "5 inputs"),
    (lambda r: [1, 2], None, "damaged metadata"),
    (lambda r: {**r, "batch_size": 2.5}, None, "damaged metadata"),
    (None, lambda i: [1], "damaged metadata"),
])
def test_crafted_metadata_is_refused(data_dir, tmp_path, recipe_change, info_change, words):
    path = _crafted(tmp_path, recipe_change, info_change)
    assert_user_error(invoke("evaluate", path, "--data-dir", data_dir, "--limit", "50"), 4, words)


@pytest.mark.parametrize("change", [
    lambda i: {**i, "position": {**i["position"], "batch": 10**6}},
    lambda i: {**i, "position": {**i["position"], "epoch": "two"}},
    lambda i: {**i, "position": {**i["position"], "rng": {"bit_generator": "nope"}}},
    lambda i: {**i, "position": [3]},
])
def test_crafted_positions_cannot_be_resumed(data_dir, tmp_path, change):
    path = _crafted(tmp_path, info_change=change)
    result = invoke("train", "--resume", path, "--epochs", "5", "--data-dir", data_dir)
    assert_user_error(result, 4, "damaged training position")


@pytest.mark.parametrize("args,words", [
    (["train", "--epochs", "abc"], "--epochs"), (["predict"], "Missing argument"),
    (["bogus"], "No such command"), (["train", "--nope"], "No such option"),
])
def test_usage_errors_are_one_line_from_the_command(args, words):
    out = subprocess.run([sys.executable, "-m", "rmsprop_cli", *args], capture_output=True, text=True,
                         env={**os.environ, "COLUMNS": "200"})
    assert out.returncode == 2
    message = out.stderr.strip()
    assert message.startswith("Error:") and "\n" not in message and words in message, message


def test_small_path_mistakes(data_dir, tmp_path):
    assert_user_error(invoke("evaluate", tmp_path, "--data-dir", data_dir), 4, "is a folder")
    (tmp_path / "plain").write_text("x")
    result = invoke("train", "--output", tmp_path / "plain" / "m.safetensors", "--data-dir", tmp_path,
                    "--mirror", dead_url())
    assert_user_error(result, 5, "is a file, not a folder")
    result = invoke("predict", _small_checkpoint(tmp_path), Path(__file__).parents[1] / "data" / "samples" / "digit-1.png",
                    "--index", "3")
    assert_user_error(result, 2, "--index picks images from an IDX file")


def test_json_never_holds_nan(tmp_path, data_dir):
    from safetensors import safe_open
    from safetensors.numpy import save_file

    with safe_open(str(_small_checkpoint(tmp_path)), framework="numpy") as f:
        meta, tensors = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}
    # Finite weights (NaN ones are refused as damaged) so large that the logits overflow: the loss is NaN.
    tensors["dense_0.bias"] = np.full_like(tensors["dense_0.bias"], 3e38)
    path = tmp_path / "nan.safetensors"
    save_file(tensors, str(path), metadata=meta)
    result = invoke("evaluate", path, "--data-dir", data_dir, "--limit", "20", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["test_loss"] is None  # strict JSON parses; NaN became null


def test_messages_with_square_brackets_survive(tmp_path):
    """Rich markup must not eat text like rmsprop-cli[plot] or a path with brackets."""
    path = tmp_path / "run[bold]" / "model.safetensors"
    result = invoke("evaluate", path)
    assert_user_error(result, 4, "run[bold]")
