"""Tests for rmsprop_cli.data: IDX parsing, mirrors, verification and the cache."""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mnist_server import dead_url, serve_folder

from rmsprop_cli import data, parts
from rmsprop_cli.data import MNIST_MD5, fetch, load_mnist, parse_idx
from rmsprop_cli.errors import ChecksumError, ConfigError, DataError, DownloadError

# --- naive references ----------------------------------------------------------------------


def naive_idx_bytes(array: np.ndarray) -> bytes:
    """An unsigned-byte IDX file, written field by field from the format description."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    for d in array.shape:
        header += struct.pack(">I", d)
    return header + bytes(array.astype(np.uint8).ravel().tolist())


def naive_read_idx_gz(path: Path) -> np.ndarray:
    raw = gzip.open(path).read()
    zero, type_code, ndim = struct.unpack(">HBB", raw[:4])
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    return np.array(list(raw[4 + 4 * ndim :]), dtype=np.uint8).reshape(dims)


def naive_md5(path: Path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


MIRROR = Path(
    os.environ.get("RMSPROP_MIRROR", Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist")
)
TEST_FILES = ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
ALL_FILES = list(MNIST_MD5)


def _need_mirror():
    missing = [f for f in ALL_FILES if not (MIRROR / f"{f}.gz").is_file() and not (MIRROR / f).is_file()]
    if missing:
        pytest.skip(f"MNIST files not found in {MIRROR} (set RMSPROP_MIRROR to a folder holding them)")


class Recorder:
    def __init__(self):
        self.events = []

    def start(self, name, total):
        self.events.append(("start", name, total))

    def advance(self, nbytes):
        self.events.append(("advance", nbytes))

    def finish(self):
        self.events.append(("finish",))


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    """A data dir filled once from the real local mirror (decompressing the train set is the slow part)."""
    _need_mirror()
    d = tmp_path_factory.mktemp("cache")
    fetch(ALL_FILES, data_dir=d, mirrors=[str(MIRROR)])
    return d


@pytest.fixture(scope="module")
def t10k_gz(tmp_path_factory) -> Path:
    """A folder holding only the two small t10k .gz files, to serve over HTTP."""
    _need_mirror()
    d = tmp_path_factory.mktemp("t10k_gz")
    for f in TEST_FILES:
        src = MIRROR / f"{f}.gz"
        if src.is_file():
            shutil.copy(src, d / src.name)
        else:
            (d / src.name).write_bytes(gzip.compress((MIRROR / f).read_bytes()))
    return d


# --- parse_idx -----------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(0,), (1,), (7,), (3, 4), (2, 3, 5), (2, 1, 3, 2), (0, 5), (4, 28, 28)])
def test_parse_idx_round_trip(shape):
    rng = np.random.default_rng(sum(shape) + len(shape))
    array = rng.integers(0, 256, size=shape, dtype=np.uint8)
    out = parse_idx(naive_idx_bytes(array))
    assert out.dtype == np.uint8 and out.shape == shape
    np.testing.assert_array_equal(out, array)
    out[...] = 1  # writable, not a view of immutable bytes


GOOD = naive_idx_bytes(np.arange(12, dtype=np.uint8).reshape(3, 4))


@pytest.mark.parametrize(
    "buf, words",
    [
        (b"", ["shorter than the 4-byte header"]),
        (b"\x00\x00", ["shorter than the 4-byte header"]),
        (b"\x01" + GOOD[1:], ["two zero bytes"]),
        (b"\x00\x01" + GOOD[2:], ["two zero bytes"]),
        (GOOD[:2] + b"\x0d" + GOOD[3:], ["0x0d", "0x08"]),  # float32 IDX
        (b"\x00\x00\x08\x00", ["0 dimensions"]),
        (GOOD[:9], ["header is truncated", "12", "9"]),
        (GOOD[:-1], ["truncated", "12 bytes", "found 11"]),
        (GOOD + b"\x00", ["trailing bytes", "12 bytes", "found 13"]),
    ],
)
def test_parse_idx_rejects(buf, words):
    with pytest.raises(DataError) as info:
        parse_idx(buf, name="thing.idx")
    message = str(info.value)
    assert message.startswith("thing.idx: ") and "\n" not in message
    for w in words:
        assert w in message


idx_like = st.builds(
    lambda ndim, rest: b"\x00\x00\x08" + bytes([ndim]) + rest,
    st.integers(0, 255),
    st.binary(max_size=64),
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=64), idx_like))
def test_parse_idx_random_bytes_only_raise_data_error(buf):
    try:
        out = parse_idx(buf)
    except DataError:
        return
    assert isinstance(out, np.ndarray) and out.dtype == np.uint8


# --- local folder mirrors and the cache ----------------------------------------------------


def test_fetch_from_local_folder_caches_decompressed_verified_files(cache_dir):
    folder = cache_dir / "mnist"
    assert leftovers(folder) == sorted(ALL_FILES)
    for f in ALL_FILES:
        path = folder / f
        assert path.read_bytes()[:2] != b"\x1f\x8b"
        assert naive_md5(path) == MNIST_MD5[f]


def test_load_mnist_shapes_and_content(cache_dir):
    images, labels, digests = load_mnist("train", data_dir=cache_dir, mirrors=[])
    assert images.shape == (60000, 28, 28) and labels.shape == (60000,)
    assert images.dtype == np.uint8 and labels.dtype == np.uint8
    assert set(np.unique(labels)) == set(range(10))
    assert digests == {f: MNIST_MD5[f] for f in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")}

    images, labels, digests = load_mnist("test", data_dir=cache_dir, mirrors=[], limit=100)
    assert images.shape == (100, 28, 28) and labels.shape == (100,)
    if (MIRROR / "t10k-images-idx3-ubyte.gz").is_file():
        np.testing.assert_array_equal(images, naive_read_idx_gz(MIRROR / "t10k-images-idx3-ubyte.gz")[:100])
        np.testing.assert_array_equal(labels, naive_read_idx_gz(MIRROR / "t10k-labels-idx1-ubyte.gz")[:100])
    assert set(digests) == set(TEST_FILES)


def test_second_fetch_uses_cache_without_any_mirror(cache_dir):
    before = {f: (cache_dir / "mnist" / f).stat().st_mtime_ns for f in ALL_FILES}
    paths = fetch(ALL_FILES, data_dir=cache_dir, mirrors=[dead_url()], retries=0)
    assert paths == {f: cache_dir / "mnist" / f for f in ALL_FILES}
    assert {f: p.stat().st_mtime_ns for f, p in paths.items()} == before


def test_fetch_accepts_short_names_and_a_single_string(cache_dir):
    paths = fetch(["test-images"], data_dir=cache_dir, mirrors=[])
    assert paths == {"test-images": cache_dir / "mnist" / "t10k-images-idx3-ubyte"}
    assert fetch("t10k-labels-idx1-ubyte", data_dir=cache_dir, mirrors=[]) == {
        "t10k-labels-idx1-ubyte": cache_dir / "mnist" / "t10k-labels-idx1-ubyte"
    }
    with pytest.raises(DataError, match="unknown MNIST file"):
        fetch(["train-imagez"], data_dir=cache_dir, mirrors=[])


def test_local_folder_of_uncompressed_files_and_file_url(cache_dir, tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    for f in TEST_FILES:
        shutil.copy(cache_dir / "mnist" / f, plain / f)
    for i, mirror in enumerate([str(plain), plain.as_uri()]):
        paths = fetch(TEST_FILES, data_dir=tmp_path / f"d{i}", mirrors=[mirror])
        assert all(naive_md5(p) == MNIST_MD5[f] for f, p in paths.items())


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty"])
def test_corrupt_cache_is_discarded_and_fetched_again(t10k_gz, tmp_path, damage):
    fetch(TEST_FILES, data_dir=tmp_path, mirrors=[str(t10k_gz)])
    path = tmp_path / "mnist" / "t10k-labels-idx1-ubyte"
    raw = bytearray(path.read_bytes())
    if damage == "truncate":
        raw = raw[:-10]
    elif damage == "flip":
        raw[-1] ^= 0xFF
    else:
        raw = b""
    path.write_bytes(bytes(raw))
    assert naive_md5(path) != MNIST_MD5[path.name]

    with pytest.raises(DownloadError):  # a bad cached file is never returned
        fetch(TEST_FILES, data_dir=tmp_path, mirrors=[dead_url()], retries=0)
    assert not path.exists()

    fetch(TEST_FILES, data_dir=tmp_path, mirrors=[str(t10k_gz)])
    assert naive_md5(path) == MNIST_MD5[path.name]
    assert leftovers(tmp_path / "mnist") == sorted(TEST_FILES)


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"this is not gzip at all", "not a gzip file"),
        ("half", "corrupt gzip data"),
        ("idx", "not a gzip file"),  # a real, uncompressed IDX file wrongly named .gz
        ("garbage-gz", "corrupt gzip data"),
    ],
)
def test_bad_gz_candidate_is_rejected_cleanly(t10k_gz, tmp_path, content, reason):
    name = "t10k-labels-idx1-ubyte"
    good = (t10k_gz / f"{name}.gz").read_bytes()
    if content == "half":
        content = good[: len(good) // 2]
    elif content == "idx":
        content = gzip.decompress(good)
    elif content == "garbage-gz":
        content = good[:10] + b"\xff" * 100
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / f"{name}.gz").write_bytes(content)

    with pytest.raises(DownloadError) as info:
        fetch([name], data_dir=tmp_path / "d", mirrors=[str(bad)])
    message = str(info.value)
    assert reason in message and str(bad) in message and "--mirror" in message
    assert leftovers(tmp_path / "d" / "mnist") == []

    # ... and the next mirror is tried.
    fetch([name], data_dir=tmp_path / "d", mirrors=[str(bad), str(t10k_gz)])
    assert naive_md5(tmp_path / "d" / "mnist" / name) == MNIST_MD5[name]


def test_missing_local_folder_falls_over(t10k_gz, tmp_path):
    nowhere = tmp_path / "nowhere"
    fetch(TEST_FILES, data_dir=tmp_path / "d", mirrors=[str(nowhere), str(t10k_gz)])
    with pytest.raises(DownloadError, match="folder not found"):
        fetch(TEST_FILES, data_dir=tmp_path / "e", mirrors=[str(nowhere)])


# --- HTTP mirrors --------------------------------------------------------------------------


def test_http_mirror_success_reports_progress(t10k_gz, tmp_path):
    rec = Recorder()
    with serve_folder(t10k_gz) as url:
        paths = fetch(TEST_FILES, data_dir=tmp_path, mirrors=[url.rstrip("/")], reporter=rec)
    assert all(naive_md5(p) == MNIST_MD5[f] for f, p in paths.items())
    starts = [e for e in rec.events if e[0] == "start"]
    assert starts == [("start", f, (t10k_gz / f"{f}.gz").stat().st_size) for f in TEST_FILES]
    assert sum(e[1] for e in rec.events if e[0] == "advance") == sum(
        (t10k_gz / f"{f}.gz").stat().st_size for f in TEST_FILES
    )
    assert rec.events.count(("finish",)) == 2


def test_http_corrupted_copy_is_rejected_with_checksum_error(t10k_gz, tmp_path):
    name = "t10k-labels-idx1-ubyte"
    raw = bytearray(gzip.decompress((t10k_gz / f"{name}.gz").read_bytes()))
    raw[100] = (raw[100] + 1) % 10  # still a valid IDX file with valid labels
    served = tmp_path / "served"
    served.mkdir()
    (served / f"{name}.gz").write_bytes(gzip.compress(bytes(raw)))
    with serve_folder(served) as url:
        with pytest.raises(ChecksumError) as info:
            fetch([name], data_dir=tmp_path / "d", mirrors=[url])
    message = str(info.value)
    assert isinstance(info.value, DataError) and "checksum" in message and url in message
    assert leftovers(tmp_path / "d" / "mnist") == []


def test_http_recompressed_copy_verifies(t10k_gz, tmp_path):
    name = "t10k-labels-idx1-ubyte"
    served = tmp_path / "served"
    served.mkdir()
    raw = gzip.decompress((t10k_gz / f"{name}.gz").read_bytes())
    (served / f"{name}.gz").write_bytes(gzip.compress(raw, compresslevel=1, mtime=0))
    with serve_folder(served) as url:
        fetch([name], data_dir=tmp_path / "d", mirrors=[url])
    assert naive_md5(tmp_path / "d" / "mnist" / name) == MNIST_MD5[name]


def test_dead_mirror_then_good_one(t10k_gz, tmp_path):
    with serve_folder(t10k_gz) as url:
        paths = fetch(TEST_FILES, data_dir=tmp_path, mirrors=[dead_url(), url], retries=1)
    assert all(naive_md5(p) == MNIST_MD5[f] for f, p in paths.items())


def test_all_mirrors_dead(tmp_path):
    first, second = dead_url(), dead_url()
    with pytest.raises(DownloadError) as info:
        fetch(TEST_FILES, data_dir=tmp_path, mirrors=[first, second], retries=1)
    message = str(info.value)
    assert not isinstance(info.value, ChecksumError)
    assert first in message and second in message and "connection refused" in message
    assert "t10k-images-idx3-ubyte" in message and "--mirror" in message and "\n" not in message
    assert leftovers(tmp_path / "mnist") == []


def test_404_mirror_falls_over(t10k_gz, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with serve_folder(empty) as missing, serve_folder(t10k_gz) as good:
        with pytest.raises(DownloadError, match="HTTP 404"):
            fetch(TEST_FILES, data_dir=tmp_path / "a", mirrors=[missing])
        paths = fetch(TEST_FILES, data_dir=tmp_path / "b", mirrors=[missing, good])
    assert all(naive_md5(p) == MNIST_MD5[f] for f, p in paths.items())


def test_5xx_is_retried(t10k_gz, tmp_path):
    name = "t10k-labels-idx1-ubyte"
    with serve_folder(t10k_gz, fail_first=1) as url:
        fetch([name], data_dir=tmp_path / "a", mirrors=[url], retries=1)
    with serve_folder(t10k_gz, fail_first=100) as url:
        with pytest.raises(DownloadError, match="HTTP 503"):
            fetch([name], data_dir=tmp_path / "b", mirrors=[url], retries=0)
    assert naive_md5(tmp_path / "a" / "mnist" / name) == MNIST_MD5[name]


# --- writing -------------------------------------------------------------------------------


@pytest.mark.parametrize("step", ["replace", "fsync", "write"])
def test_interrupted_write_leaves_nothing(t10k_gz, tmp_path, monkeypatch, step):
    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device")

    if step == "write":
        monkeypatch.setattr(parts.os, "fdopen", _failing_fdopen(parts.os.fdopen))
    else:
        monkeypatch.setattr(parts.os, step, boom)
    with pytest.raises(DataError) as info:
        fetch(TEST_FILES, data_dir=tmp_path, mirrors=[str(t10k_gz)])
    assert "--data-dir" in str(info.value)
    assert leftovers(tmp_path / "mnist") == []


def _failing_fdopen(real):
    """os.fdopen whose file's write() stores some bytes and then fails, like a full disk."""

    def make(*args, **kwargs):
        f = real(*args, **kwargs)
        write = f.write

        class Failing:
            def __getattr__(self, name):
                return getattr(f, name)

            def write(self, b):
                write(b[:100])
                raise OSError(28, "No space left on device")

        return Failing()

    return make


def test_data_dir_that_cannot_be_created(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(DataError) as info:
        fetch(TEST_FILES, data_dir=blocker, mirrors=[])
    assert str(blocker / "mnist") in str(info.value) and "--data-dir" in str(info.value)


# --- defaults and validation ---------------------------------------------------------------


def test_default_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("RMSPROP_DATA_DIR", str(tmp_path / "x"))
    assert data.default_data_dir() == tmp_path / "x"
    monkeypatch.delenv("RMSPROP_DATA_DIR")
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data.default_data_dir() == tmp_path / "xdg" / "rmsprop-cli"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/is/ignored")
    assert data.default_data_dir() == Path.home() / ".cache" / "rmsprop-cli"
    monkeypatch.setattr(sys, "platform", "darwin")
    assert data.default_data_dir() == Path.home() / "Library" / "Caches" / "rmsprop-cli"
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path / "local"))
    assert data.default_data_dir() == tmp_path / "local" / "rmsprop-cli" / "Cache"


def test_load_mnist_argument_checks(tmp_path):
    with pytest.raises(ConfigError, match="split"):
        load_mnist("validation", data_dir=tmp_path, mirrors=[])
    with pytest.raises(ConfigError, match="limit"):
        load_mnist("test", data_dir=tmp_path, mirrors=[], limit=0)


@pytest.mark.parametrize(
    "images, labels, words",
    [
        (np.zeros((3, 28, 27), np.uint8), np.zeros(3, np.uint8), "N x 28 x 28"),
        (np.zeros((3, 784), np.uint8), np.zeros(3, np.uint8), "N x 28 x 28"),
        (np.zeros((3, 28, 28), np.uint8), np.zeros((3, 1), np.uint8), "1-D"),
        (np.zeros((3, 28, 28), np.uint8), np.zeros(4, np.uint8), "3 images but"),
        (np.zeros((3, 28, 28), np.uint8), np.array([0, 10, 2], np.uint8), "digits 0-9"),
    ],
)
def test_check_pair_rejects_inconsistent_arrays(images, labels, words):
    with pytest.raises(DataError, match=words):
        data._check_pair(images, labels, "imgs", "lbls")
    data._check_pair(np.zeros((2, 28, 28), np.uint8), np.array([0, 9], np.uint8), "imgs", "lbls")
