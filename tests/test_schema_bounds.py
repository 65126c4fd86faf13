"""Issue 13, part B: one schema for checkpoint metadata, one bounds table for options, memory before allocation.

Every refused case goes through the CLI: its exit code and one line on stderr, never a traceback.
"""

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from mnist_server import dead_url
from test_cli import SMALL, _small_checkpoint, assert_user_error, invoke

from rmsprop_cli import memory
from rmsprop_cli.config import Recipe
from rmsprop_cli.errors import ConfigError

BIG = str(2**63)
SAMPLE = str(Path(__file__).parents[1] / "data" / "samples" / "digit-1.png")


# --- options: integers within what the kernels hold, reals within float32 -----------------------------------------

@pytest.mark.parametrize("args,words", [
    (["--batch-size", BIG], "--batch-size"), (["--batch-size", str(2**31)], "2147483647"),
    (["--epochs", BIG], "--epochs"), (["--limit", str(2**64)], "--limit"), (["--seed", BIG], "--seed"),
    (["--hidden", f"16,{2**31}"], "--hidden"), (["--hidden", ",".join(["4"] * 101)], "at most 100"),
    (["--warmup-steps", str(10**29)], "--warmup-steps"), (["--warmup-steps", "15001"], "never reach --lr"),
    (["--decay-steps", BIG, "--schedule", "step"], "--decay-steps"),
    (["--checkpoint-every", BIG], "--checkpoint-every"), (["--early-stopping", str(10**23)], "--early-stopping"),
    (["--optimizer", "adam", "--beta1", "0.9999999999"], "--beta1"), (["--optimizer", "adam", "--beta2", "1e-45"], "--beta2"),
    (["--initial-accumulator", "inf"], "--initial-accumulator"),
    (["--initial-accumulator", "1e300"], "--initial-accumulator"), (["--initial-accumulator", "1e-300"], "float32"),
    (["--clip-norm", "1e-300"], "--clip-norm"), (["--clip-value", "1e39"], "--clip-value"),
    (["--clip-value", "1e-39"], "--clip-value"),
    (["--momentum", "0.99999999"], "--momentum"), (["--momentum", "1e-40"], "--momentum"),
    (["--weight-decay", "1e39"], "--weight-decay"), (["--weight-decay", "1e-40"], "--weight-decay"),
    (["--decay-rate", "1e-300"], "--decay-rate"), (["--decay-rate", "1e-46"], "--decay-rate"),
    (["--rho", "1e-40"], "--rho"), (["--lr", "1e-39"], "--lr"), (["--eps", "1e-39"], "--eps"),
    (["--val-split", "1e-17"], "leaves none"), (["--val-split", "0.9999999999999999"], "no training images"),
])
def test_options_out_of_bounds_are_one_line_errors(args, words, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # 1e300 used to print numpy's overflow RuntimeWarning
        result = invoke("train", *args, "--output", tmp_path / "o", "--data-dir", tmp_path, "--mirror", dead_url())
    assert_user_error(result, 2, words)
    assert "Warning" not in result.output
    assert not (tmp_path / "o").exists()


def test_other_commands_bound_their_integers(tmp_path):
    assert_user_error(invoke("evaluate", tmp_path / "m.safetensors", "--limit", BIG), 2, "--limit")
    result = invoke("compare", "--batch-size", BIG, "--output", tmp_path, "--data-dir", tmp_path, "--mirror", dead_url())
    assert_user_error(result, 2, "--batch-size")


@pytest.mark.parametrize("accepted,refused", [
    ({"beta1": 0.99999994, "optimizer": "adam"}, {"beta1": 0.99999998, "optimizer": "adam"}),
    ({"momentum": 1.2e-38}, {"momentum": 1.1e-38}),
    ({"rho": 0.0}, {"rho": 1e-40}), ({"initial_accumulator": 3.4e38}, {"initial_accumulator": 3.5e38}),
    ({"clip_value": 1.2e-38}, {"clip_value": 1e-39}), ({"decay_rate": 1.0, "schedule": "step"}, {"decay_rate": 1e-46, "schedule": "step"}),
    ({"warmup_steps": 15000}, {"warmup_steps": 15001}), ({"val_split": 1 / 60000}, {"val_split": 1e-17}),
    ({"batch_size": 2**31 - 1}, {"batch_size": 2**31}), ({"epochs": 2**31 - 1}, {"epochs": 2**31}),
    ({"seed": 2**63 - 1}, {"seed": 2**63}), ({"hidden": (1,) * 100}, {"hidden": (1,) * 101}),
], ids=lambda d: ",".join(d))
def test_the_bounds_are_exact(accepted, refused):
    Recipe(**accepted)
    with pytest.raises(ConfigError, match="--" + next(iter(refused)).replace("_", "-")):
        Recipe(**refused)


def test_bounds_hold_for_huge_and_odd_values():
    for value in (10**400, float("nan"), float("-inf"), "0.1", True):   # None: the optimizer's default
        with pytest.raises(ConfigError):
            Recipe(lr=value)
    with pytest.raises(ConfigError, match="characters"):   # a 401-digit number is not echoed whole
        Recipe(batch_size=10**400)


# --- checkpoint metadata: one schema ------------------------------------------------------------------------------

def _edited(tmp_path, edit, name="edited.safetensors"):
    """A copy of a real checkpoint with its metadata (dict of JSON strings, parsed) changed by edit(meta)."""
    from safetensors import safe_open
    from safetensors.numpy import save_file

    with safe_open(str(_small_checkpoint(tmp_path)), framework="numpy") as f:
        raw, tensors = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}
    meta = {k: json.loads(raw[k]) for k in ("recipe", "history", "info")}
    edit(meta)
    for k in ("recipe", "history", "info"):
        raw[k] = meta[k] if isinstance(meta[k], str) else json.dumps(meta[k])
    path = tmp_path / name
    save_file(tensors, str(path), metadata=raw)
    return path


def _set(section, *keys_and_value):
    *keys, value = keys_and_value

    def edit(meta):
        d = meta[section]
        for k in keys[:-1]:
            d = d[k]
        if value is KeyError:
            del d[keys[-1]]
        else:
            d[keys[-1]] = value
    return edit


def _whole(section, value):
    return lambda meta: meta.__setitem__(section, value)


DEEP = "[" * 200_000 + "]" * 200_000
DAMAGED = [
    # the recipe
    (_set("recipe", "limit", 2000.5), "recipe.limit"), (_set("recipe", "batch_size", "32"), "recipe.batch_size"),
    (_set("recipe", "hidden", [16, "x"]), "recipe.hidden"), (_set("recipe", "hidden", [[16]]), "recipe.hidden"),
    (_set("recipe", "batchsize", 64), "newer rmsprop-cli"), (_set("recipe", "lr", 1e-40), "--lr"),
    (_set("recipe", "lr", KeyError), "recipe: lacks lr"),
    (lambda meta: [meta["recipe"].pop(k) for k in ("rho", "eps")], "recipe: lacks rho, eps"),
    (_set("recipe", "centered", 1), "recipe.centered"), (_set("recipe", "warmup_steps", 10**6), "--warmup-steps"),
    (_set("recipe", "epochs", 2**40), "--epochs"), (_set("recipe", "seed", 2**64), "--seed"),
    (_set("recipe", "beta1", 0.9999999999), "--beta1"), (_set("recipe", "hidden", "16"), "recipe.hidden"),
    (_whole("recipe", "x" * 70_000), "characters"),
    # the history
    (_whole("history", DEEP), "nested too deeply"), (_whole("history", {"epoch": 1}), "must be a list"),
    (_set("history", 0, "loss", "abc"), "history[0].loss"), (_set("history", 0, "accuracy", 2), "history[0].accuracy"),
    (_set("history", 0, "epoch", 5), "history[0].epoch"), (_set("history", 0, "seconds", -1), "history[0].seconds"),
    (_set("history", 1, "val_loss", None), "val_accuracy"), (_set("history", 0, "loss", KeyError), "lacks loss"),
    (_set("history", 0, "note", [[1]]), "unknown field"), (_set("recipe", "epochs", 1), "more than the recipe"),
    (_set("history", 0, "val_accuracy", [0.5]), "history[0].val_accuracy"),
    # info
    (_whole("info", DEEP), "nested too deeply"), (_whole("info", [1]), "JSON object"),
    (_set("info", "early_stopping", True), "info.early_stopping"), (_set("info", "early_stopping", [1]), "early_stopping"),
    (_set("info", "early_stopping", {"stopped_after_epoch": 2, "best_epoch": 9, "best_val_loss": 0.1}), "best_epoch"),
    (_set("info", "dataset", "t10k-images-idx3-ubyte", "abc"), "MD5"),
    (_set("info", "dataset", "../../etc/passwd", "0" * 32), "file name"),
    (_set("info", "test_accuracy", 5), "info.test_accuracy"), (_set("info", "steps", -99), "info.steps"),
    (_set("info", "steps", 3), "does not match the position"), (_set("info", "optimizer", "adam"), "info.optimizer"),
    (_set("info", "extra", json.loads("[" * 50 + "]" * 50)), "nested more than"),
    (_set("info", "extra", "x" * 5000), "string of 5000"),
    # info.position
    (_set("info", "position", "loss_sum", "abc"), "info.position.loss_sum"),
    (_set("info", "position", "correct", 1e300), "info.position.correct"),
    (_set("info", "position", "correct", 10**6), "info.position.correct"),
    (_set("info", "position", "seen", 7), "info.position.seen"),
    (_set("info", "position", "epoch", 1), "info.position.epoch"),
    (_set("info", "position", "rng", "state", "state", 2**200), "info.position.rng.state.state"),
    (_set("info", "position", "rng", "state", "inc", 2), "odd"),
    (_set("info", "position", "rng", "has_uint32", 2), "has_uint32"),
    (_set("info", "position", "rng", "bit_generator", "MT19937"), "PCG64"),
    (_set("info", "position", "rng", [0]), "info.position.rng"),
    (_set("info", "position", "surprise", 1), "unknown field"),
]


@pytest.mark.parametrize("edit,words", DAMAGED, ids=[w for _, w in DAMAGED])
def test_edited_metadata_is_one_line_exit_4(edit, words, data_dir, tmp_path):
    path = _edited(tmp_path, edit)
    assert_user_error(invoke("evaluate", path, "--data-dir", data_dir, "--limit", "20"), 4, words)


@pytest.mark.parametrize("command", [["plot"], ["train", "--epochs", "5", "--resume"], ["predict"]])
def test_every_command_reads_through_the_schema(command, data_dir, tmp_path):
    path = _edited(tmp_path, _whole("history", DEEP))
    extra = [SAMPLE] if command == ["predict"] else []
    result = invoke(*command, path, *extra, *(["--data-dir", data_dir] if command[0] == "train" else []))
    assert_user_error(result, 4, "nested too deeply")


def test_early_stopping_that_never_improved_still_loads(data_dir, tmp_path):
    """EarlyStopping keeps best_epoch None when every val_loss was NaN: what train writes must load."""
    stopped = {"stopped_after_epoch": 2, "best_epoch": None, "best_val_loss": float("inf")}
    path = _edited(tmp_path, _set("info", "early_stopping", stopped))
    assert invoke("evaluate", path, "--data-dir", data_dir, "--limit", "20").exit_code == 0
    path = _edited(tmp_path, _set("info", "early_stopping", {**stopped, "best_epoch": 0}))
    assert_user_error(invoke("evaluate", path, "--data-dir", data_dir, "--limit", "20"), 4, "best_epoch")


def test_unknown_info_is_kept_only_when_plain(data_dir, tmp_path):
    path = _edited(tmp_path, _set("info", "note", {"a": [1, "two", None]}))
    result = invoke("evaluate", path, "--data-dir", data_dir, "--limit", "20", "--json")
    assert result.exit_code == 0, result.output
    path = _edited(tmp_path, _set("info", "note", {"a": json.loads("[" * 10 + "]" * 10)}))
    assert_user_error(invoke("evaluate", path, "--data-dir", data_dir, "--limit", "20"), 4, "info.note")


def test_a_recipe_missing_a_field_is_never_filled_with_its_default(data_dir, tmp_path):
    """A --lr 0.01 checkpoint without recipe.lr used to resume at the default 0.001."""
    path = _edited(tmp_path, _set("recipe", "lr", KeyError))
    result = invoke("train", "--resume", path, "--epochs", "3", "--data-dir", data_dir)
    assert_user_error(result, 4, "lacks lr")


# --- checkpoint tensors and format version -------------------------------------------------------------------------

def _rewritten(tmp_path, tensors=None, metadata=None, name="rewritten.safetensors"):
    """A copy of a real checkpoint with its tensors (dict name -> array) or raw metadata (str -> str) edited in place."""
    from safetensors import safe_open
    from safetensors.numpy import save_file

    with safe_open(str(_small_checkpoint(tmp_path)), framework="numpy") as f:
        raw, ts = dict(f.metadata()), {k: f.get_tensor(k).copy() for k in f.keys()}
    if tensors:
        tensors(ts)
    if metadata:
        metadata(raw)
    path = tmp_path / name
    save_file(ts, str(path), metadata=raw)
    return path


def _put(name, index, value):
    def edit(ts):
        ts[name].reshape(-1)[index] = value
    return edit


def _rename(old, new):
    def edit(ts):
        for k in [k for k in ts if k.startswith(old)]:
            ts[new + k[len(old):]] = ts.pop(k)
    return edit


def _add_m(ts):
    for k in [k for k in ts if k.startswith("optimizer.v.")]:
        ts["optimizer.m." + k[len("optimizer.v."):]] = ts[k].copy()


NOT_FINITE = [
    (_put("dense_0.weight", 5, np.nan), "dense_0.weight holds NaN or infinite"),
    (_put("dense_1.bias", 0, np.inf), "dense_1.bias holds NaN or infinite"),
    (_put("optimizer.v.dense_0.weight", 7, np.nan), "optimizer.v.dense_0.weight holds NaN or infinite"),
    (_put("optimizer.v.dense_1.bias", 3, -np.inf), "optimizer.v.dense_1.bias holds NaN or infinite"),
    (_put("optimizer.v.dense_0.bias", 2, -1e-3), "optimizer.v.dense_0.bias holds negative values"),
]


@pytest.mark.parametrize("command", [["evaluate"], ["train", "--epochs", "3", "--resume"]])
@pytest.mark.parametrize("edit,words", NOT_FINITE, ids=["nan-weight", "inf-bias", "nan-v", "-inf-v", "negative-v"])
def test_non_finite_weights_or_state_are_refused(command, edit, words, data_dir, tmp_path):
    path = _rewritten(tmp_path, tensors=edit)
    result = invoke(*command, path, "--data-dir", data_dir)
    assert_user_error(result, 4, "is damaged", words)
    assert "diverged" not in result.stderr


@pytest.mark.parametrize("edit,words", [
    (_add_m, "optimizer state 'm'"), (_rename("optimizer.v.", "optimizer.zzz."), "optimizer state 'zzz'"),
    (lambda ts: (_add_m(ts), _rename("optimizer.v.", "optimizer.b.")(ts)), "optimizer state 'b', 'm'"),
], ids=["added-m", "renamed-zzz", "renamed-b-and-m"])
@pytest.mark.parametrize("command", [["evaluate"], ["plot"], ["predict"], ["train", "--epochs", "3", "--resume"]])
def test_optimizer_tensors_are_exactly_its_buffers(edit, words, command, data_dir, tmp_path):
    path = _rewritten(tmp_path, tensors=edit)
    extra = [SAMPLE] if command == ["predict"] else []
    data = ["--data-dir", data_dir] if command[0] in ("train", "evaluate") else []
    result = invoke(*command, path, *extra, *data)
    assert_user_error(result, 4, words, "rmsprop optimizer does not keep (it keeps only v)")


def test_missing_optimizer_state_is_only_a_problem_to_resume(data_dir, tmp_path):
    drop = lambda ts: [ts.pop(k) for k in [k for k in ts if k.startswith("optimizer.")]]  # noqa: E731
    path = _rewritten(tmp_path, tensors=drop)
    assert invoke("evaluate", path, "--data-dir", data_dir, "--limit", "20").exit_code == 0
    result = invoke("train", "--resume", path, "--epochs", "3", "--data-dir", data_dir)
    assert_user_error(result, 4, "lacks the optimizer state v")


@pytest.mark.parametrize("version", ["0", "-1", " 1 ", "1 ", "0_1", "01", "+1", "\u0661", "1.0", "", "x",
                                     "9" * 5000])
def test_the_format_version_is_exactly_a_known_one(version, data_dir, tmp_path):
    path = _rewritten(tmp_path, metadata=lambda m: m.update(format_version=version))
    result = invoke("evaluate", path, "--data-dir", data_dir, "--limit", "20")
    assert_user_error(result, 4, "no valid format version", "damaged")


def test_a_newer_format_version_still_says_upgrade(data_dir, tmp_path):
    path = _rewritten(tmp_path, metadata=lambda m: m.update(format_version="3"))
    assert_user_error(invoke("evaluate", path, "--data-dir", data_dir), 4, "newer", "pip install -U")
    path = _rewritten(tmp_path, metadata=lambda m: m.update(format_version="1"))
    assert invoke("evaluate", path, "--data-dir", data_dir, "--limit", "20").exit_code == 0


# --- resume: nonsense and other data ------------------------------------------------------------------------------

@pytest.mark.parametrize("edit,words", [
    (_set("info", "position", "correct", 1e300), "damaged training position"),
    (_set("info", "steps", -99), "info.steps"),
    (_set("info", "position", "loss_sum", 1e300), "damaged training position"),
    (_set("info", "dataset", "train-images-idx3-ubyte", "0123456789abcdef" * 2), "other data"),
    (_set("info", "dataset", KeyError), "does not record which dataset"),
])
def test_resume_refuses_nonsense_and_other_data(edit, words, data_dir, tmp_path):
    path = _edited(tmp_path, edit)
    result = invoke("train", "--resume", path, "--epochs", "3", "--data-dir", data_dir)
    assert_user_error(result, 4, words)


def test_resume_continues_only_on_its_own_data(data_dir, tmp_path):
    other = _edited(tmp_path, _set("info", "dataset", "t10k-labels-idx1-ubyte", "f" * 32), "other.safetensors")
    result = invoke("train", "--resume", other, "--epochs", "3", "--data-dir", data_dir)
    assert_user_error(result, 4, "t10k-labels-idx1-ubyte", "f" * 32, "different data")
    path = _edited(tmp_path, lambda meta: None)
    result = invoke("train", "--resume", path, "--epochs", "3", "--data-dir", data_dir, "--json")
    assert result.exit_code == 0, result.output
    assert [m["epoch"] for m in json.loads(result.stdout)["epochs"]] == [1, 2, 3]


# --- memory -------------------------------------------------------------------------------------------------------

def _peak_of_child(args, tmp_path):
    """Run `rmsprop ARGS` in a fresh process whose only child it is: (result, peak RSS of that child in MiB)."""
    code = ("import json, resource, subprocess, sys; "
            "p = subprocess.run([sys.executable, '-m', 'rmsprop_cli', *sys.argv[1:]], capture_output=True, text=True); "
            "print(json.dumps([p.returncode, p.stderr, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss]))")
    out = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, check=True,
                         env={**os.environ, "COLUMNS": "200"}, cwd=tmp_path)
    rc, stderr, kib = json.loads(out.stdout)
    return rc, stderr.strip(), kib / 1024


def test_a_network_too_big_for_memory_is_refused_before_allocating(tmp_path):
    rc, message, peak = _peak_of_child(["train", "--hidden", "200000,200000", "--output", tmp_path / "o",
                                        "--data-dir", tmp_path, "--mirror", dead_url()], tmp_path)
    assert rc == 2, message
    assert message.startswith("Error: not enough memory") and "\n" not in message, message
    assert "GiB" in message and "--hidden" in message and "space" not in message and "disk" not in message
    assert peak < 200, peak   # 200000-wide layers would be 160 GB per buffer


def test_the_estimate_matches_a_real_run(data_dir, tmp_path):
    args = ["--limit", "600", "--epochs", "1", "--hidden", "3000,3000"]
    rc, message, peak = _peak_of_child(["train", *args, "--data-dir", data_dir, "--output", tmp_path / "m.safetensors",
                                        "--json"], tmp_path)
    assert rc == 0, message
    estimate = memory.training_bytes(Recipe(limit=600, epochs=1, hidden=(3000, 3000)), 1) / 2**20
    assert 0.9 * peak < estimate < 1.25 * peak, (estimate, peak)


def test_refusal_uses_the_memory_available(monkeypatch, data_dir, tmp_path):
    monkeypatch.setattr(memory, "available", lambda: 2**30)
    result = invoke("train", "--hidden", "6000,6000", "--limit", "600", "--data-dir", data_dir, "--output", tmp_path)
    assert_user_error(result, 2, "not enough memory", "1.0 GiB is available", "--hidden")
    path = _edited(tmp_path, lambda meta: None)
    monkeypatch.setattr(memory, "available", lambda: 2**20)
    result = invoke("train", "--resume", path, "--epochs", "3", "--data-dir", data_dir)
    assert_user_error(result, 2, "not enough memory", "machine with more memory")
    assert "--hidden" not in result.stderr


def test_available_memory_is_known_here():
    avail = memory.available()
    assert avail is None or 0 < avail < 2**50


@pytest.mark.parametrize("command,target,words,never", [
    (["download"], "rmsprop_cli.data.fetch", "MNIST files", "--hidden"),
    (["evaluate", "m.safetensors"], "rmsprop_cli.inference.evaluate", "evaluate", "--hidden"),
    (["predict", "m.safetensors", "d.png"], "rmsprop_cli.inference.predict", "images", "--hidden"),
    (["train"], "rmsprop_cli.training.run", "--hidden", "evaluate"),
])
def test_out_of_memory_messages_fit_the_command(command, target, words, never, monkeypatch):
    def exhausted(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(target, exhausted)
    result = invoke(*command)
    assert result.exit_code == 1, result.output
    message = result.stderr.strip()
    assert message.startswith("Error: ran out of memory") and "\n" not in message, message
    assert words in message and never not in message, message


def test_the_deepest_network_allowed_gets_a_run_folder(data_dir, tmp_path, monkeypatch):
    """100 hidden layers are within bounds, so their default run folder's name must fit 255 bytes."""
    monkeypatch.chdir(tmp_path)
    result = invoke("train", "--hidden", ",".join(str(w) for w in range(1, 101)), "--limit", "100", "--epochs", "1",
                    "--data-dir", data_dir, "--json")
    assert result.exit_code == 0, result.output
    assert "100layers" in json.loads(result.stdout)["checkpoint"]
    assert "128x3" in Recipe(hidden=(128, 128, 128)).describe()


# --- checkpoint format 1 (before the optimizer registry) ---------------------------------------------------------

# Every optimizer option format 1 stored, whatever the optimizer, with its old defaults.
FORMAT_1_OPTIONS = {"lr": 0.001, "rho": 0.9, "eps": 1e-7, "eps_placement": "inside", "centered": False, "momentum": 0.0,
                    "nesterov": False, "weight_decay": 0.0, "decoupled_decay": False, "initial_accumulator": None,
                    "bias_correction": False, "clip_norm": None, "clip_value": None, "schedule": "constant",
                    "warmup_steps": 0, "decay_steps": None, "decay_rate": 0.5, "beta1": 0.9, "beta2": 0.999}


def _format_1(tmp_path, buffers=(), **recipe):
    """The small checkpoint as format 1 wrote it: no activation, every option stored, these changes."""
    def edit(meta):
        r = json.loads(meta["recipe"])
        del r["activation"]
        r.update(FORMAT_1_OPTIONS, **recipe)
        info = json.loads(meta["info"])
        info["optimizer"] = r["optimizer"]
        meta["recipe"], meta["info"], meta["format_version"] = json.dumps(r), json.dumps(info), "1"

    def state(ts):
        for name in [n for n in ts if n.startswith("optimizer.")]:
            del ts[name]
        params = {n: t for n, t in ts.items() if n.startswith("dense_")}
        for b in buffers:
            ts.update({f"optimizer.{b}.{n}": np.zeros_like(t) for n, t in params.items()})
    return _rewritten(tmp_path, tensors=state, metadata=edit, name="format1.safetensors")


@pytest.mark.parametrize("recipe,buffers,expect", [
    ({}, ("v",), {"optimizer": "rmsprop", "beta1": None, "decay_rate": None, "activation": "relu"}),
    ({"optimizer": "momentum"}, ("b",), {"momentum": 0.9, "rho": None, "eps": None}),   # 0 meant 0.9 then
    ({"optimizer": "adagrad", "momentum": 0.5}, ("v", "b"), {"momentum": 0.5, "rho": None}),
    ({"optimizer": "adam"}, ("v", "m"), {"beta2": 0.999, "rho": None, "eps_placement": None}),
    ({"optimizer": "sgd", "momentum": 0.5, "nesterov": True}, ("b",), {"nesterov": True, "eps": None}),
], ids=str)
def test_format_1_checkpoints_load_as_format_2(recipe, buffers, expect, tmp_path):
    from rmsprop_cli import checkpoint

    ckpt = checkpoint.load(_format_1(tmp_path, buffers, **recipe))
    assert sorted(ckpt.opt_state) == sorted(buffers)
    for name, value in expect.items():
        assert getattr(ckpt.recipe, name) == value, name


def test_format_1_centered_with_bias_correction_says_why_it_cannot_be_used(data_dir, tmp_path):
    path = _format_1(tmp_path, ("v", "m"), centered=True, bias_correction=True)
    assert_user_error(invoke("evaluate", path, "--data-dir", data_dir), 4, "older rmsprop-cli",
                      "--centered with --bias-correction")


def test_format_2_refuses_null_for_an_option_its_optimizer_uses(data_dir, tmp_path):
    path = _edited(tmp_path, _set("recipe", "rho", None))
    assert_user_error(invoke("evaluate", path, "--data-dir", data_dir), 4, "recipe.rho", "null")


@pytest.mark.parametrize("version", ["1", "2"])
def test_an_optimizer_of_the_wrong_type_is_one_line(version, data_dir, tmp_path):
    def edit(meta):
        r = json.loads(meta["recipe"])
        r["optimizer"] = ["adam"]
        meta["recipe"], meta["format_version"] = json.dumps(r), version
    path = _rewritten(tmp_path, metadata=edit)
    assert_user_error(invoke("evaluate", path, "--data-dir", data_dir), 4, "recipe")
