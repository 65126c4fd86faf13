"""Checkpoint round trips and every way a checkpoint file can be wrong."""

import json
import os
import struct

import numpy as np
import pytest

from rmsprop_cli import checkpoint, files, model
from rmsprop_cli.config import Recipe
from rmsprop_cli.errors import CheckpointError, OutputError


def naive_safetensors_header(path) -> dict:
    """The JSON header of a safetensors file, read from the format's definition."""
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n])


def make_checkpoint(hidden=(8, 4)) -> checkpoint.Checkpoint:
    recipe = Recipe(hidden=hidden, epochs=2, lr=0.01)
    rng = np.random.default_rng(0)
    theta = model.glorot_init(recipe.sizes, rng)
    v = rng.random(theta.size).astype(np.float32)
    history = [{"epoch": 1, "loss": 0.5, "accuracy": 0.9, "val_loss": 0.4, "val_accuracy": 0.91, "seconds": 1.0}]
    return checkpoint.Checkpoint(recipe, theta, {"v": v}, history, {"dataset": {"x": "0" * 32}})


def test_round_trip(tmp_path):
    ckpt = make_checkpoint()
    path = tmp_path / "m.safetensors"
    checkpoint.save(path, ckpt)
    back = checkpoint.load(path)
    assert back.recipe == ckpt.recipe
    np.testing.assert_array_equal(back.theta, ckpt.theta)
    np.testing.assert_array_equal(back.opt_state["v"], ckpt.opt_state["v"])
    assert back.history == ckpt.history and back.info == ckpt.info
    header = naive_safetensors_header(path)
    assert header["dense_0.weight"]["shape"] == [784, 8]
    assert header["optimizer.v.dense_2.bias"]["dtype"] == "F32"
    assert header["__metadata__"]["format"] == "rmsprop-cli"
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temporary left behind


def test_failed_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "m.safetensors"
    checkpoint.save(path, make_checkpoint())
    before = path.read_bytes()

    def crash(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OutputError, match="No space left"):
        checkpoint.save(path, make_checkpoint(hidden=(3,)))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


def test_check_writable_rejects_unwritable_places(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="cannot write"):
        files.check_writable(blocker / "sub" / "m.safetensors")
    with pytest.raises(OutputError, match="folder"):
        files.check_writable(tmp_path)
    files.check_writable(tmp_path / "new" / "m.safetensors")
    assert list((tmp_path / "new").iterdir()) == []


def _rewrite(path, tensors=None, metadata=None):
    """Re-save a checkpoint's tensors and metadata after editing them."""
    from safetensors.numpy import save_file
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        meta = dict(f.metadata())
        ts = {k: f.get_tensor(k) for k in f.keys()}
    if tensors:
        tensors(ts)
    if metadata:
        metadata(meta)
    save_file(ts, str(path), metadata=meta)


@pytest.mark.parametrize("damage,words", [
    (lambda p: p.unlink(), "does not exist"),
    (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "not a readable safetensors"),
    (lambda p: p.write_bytes(b"\x80\x04K\x01."), "not a readable safetensors"),  # a pickle
    (lambda p: p.write_text("hello"), "not a readable safetensors"),
    (lambda p: _rewrite(p, metadata=lambda m: m.pop("format")), "not an rmsprop-cli checkpoint"),
    (lambda p: _rewrite(p, metadata=lambda m: m.update(format_version="99")), "newer"),
    (lambda p: _rewrite(p, metadata=lambda m: m.update(recipe="{")), "damaged metadata"),
    (lambda p: _rewrite(p, metadata=lambda m: m.update(recipe=json.dumps({"lr": -1}))), "damaged metadata"),
    (lambda p: _rewrite(p, tensors=lambda t: t.pop("dense_1.bias")), "missing dense_1.bias"),
    (lambda p: _rewrite(p, tensors=lambda t: t.update(extra=np.zeros(1, np.float32))), "unexpected extra"),
    (lambda p: _rewrite(p, tensors=lambda t: t.update({"dense_0.weight": np.zeros((784, 9), np.float32)})),
     r"expected float32\[784, 8\]"),
    (lambda p: _rewrite(p, tensors=lambda t: t.update({"dense_0.bias": np.zeros(8, np.float64)})), "float64"),
])
def test_bad_checkpoints_are_clear_errors(tmp_path, damage, words):
    path = tmp_path / "m.safetensors"
    checkpoint.save(path, make_checkpoint())
    damage(path)
    with pytest.raises(CheckpointError, match=words):
        checkpoint.load(path)


from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=2000))
def test_random_bytes_are_a_clean_error(tmp_path, blob):
    path = tmp_path / "fuzz.safetensors"
    path.write_bytes(blob)
    with pytest.raises(CheckpointError):
        checkpoint.load(path)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_damaged_real_checkpoints_load_or_fail_cleanly(tmp_path, data):
    """Flip, cut or splice bytes of a real checkpoint: a valid result or CheckpointError, nothing else."""
    path = tmp_path / "m.safetensors"
    checkpoint.save(path, make_checkpoint(hidden=(3,)))
    raw = bytearray(path.read_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    raw = raw[: data.draw(st.integers(0, len(raw)))]
    path.write_bytes(bytes(raw))
    try:
        back = checkpoint.load(path)
    except CheckpointError:
        return
    assert back.theta.dtype == np.float32 and back.theta.size == model.n_params(back.recipe.sizes)


def test_written_files_respect_the_umask(tmp_path):
    import stat

    old = os.umask(0o022)
    try:
        checkpoint.save(tmp_path / "m.safetensors", make_checkpoint())
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "m.safetensors").stat().st_mode) == 0o644


def test_interrupt_mid_write_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "m.safetensors"
    checkpoint.save(path, make_checkpoint())
    before = path.read_bytes()

    def ctrl_c(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(path, make_checkpoint(hidden=(3,)))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]
