"""The MNIST files: what they are (names, sizes, checksums, mirrors), their verified cache, and
their IDX format parsed into arrays. download.py fetches a file missing from the cache.

Standard library and numpy only, so that ``rmsprop data`` and the tests never pay
for importing numba or rich. Every failure leaves as one of the project's own
exceptions with a one-line message meant for the user.
"""

from __future__ import annotations

import functools
import hashlib
import os
import stat
import struct
import sys
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from . import paths
from .download import Reporter, from_mirrors
from .errors import ConfigError, DataError
from .net import download_pace
from .parts import remove_dead_parts

MNIST_FILES: dict[str, str] = {
    "train-images": "train-images-idx3-ubyte",
    "train-labels": "train-labels-idx1-ubyte",
    "test-images": "t10k-images-idx3-ubyte",
    "test-labels": "t10k-labels-idx1-ubyte",
}

# Of the decompressed content, so that a mirror that re-compressed the files
# (different gzip bytes, same data) still verifies.
MNIST_MD5: dict[str, str] = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}

# Bytes of each decompressed file: nothing larger is ever downloaded, decompressed or read.
MNIST_SIZES: dict[str, int] = {
    "train-images-idx3-ubyte": 47_040_016,
    "train-labels-idx1-ubyte": 60_008,
    "t10k-images-idx3-ubyte": 7_840_016,
    "t10k-labels-idx1-ubyte": 10_008,
}

DEFAULT_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)

_IDX_UBYTE = 0x08


def default_data_dir() -> Path:
    """$RMSPROP_DATA_DIR, else the platform's per-user cache folder + rmsprop-cli."""
    env = os.environ.get("RMSPROP_DATA_DIR")
    if env:
        return Path(env).expanduser()
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / "rmsprop-cli" / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "rmsprop-cli"
    xdg = os.environ.get("XDG_CACHE_HOME")
    # The XDG spec says a relative value is invalid and must be ignored.
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "rmsprop-cli"


def idx_header(buf: bytes, name: str = "file") -> tuple[tuple[int, ...], int]:
    """The shape an unsigned-byte IDX file declares and the length of its header (from its first bytes)."""
    if len(buf) < 4:
        raise DataError(f"{name}: not an IDX file: {len(buf)} bytes is shorter than the 4-byte header")
    if buf[0] != 0 or buf[1] != 0:
        raise DataError(f"{name}: not an IDX file: it does not start with two zero bytes")
    if buf[2] != _IDX_UBYTE:
        raise DataError(
            f"{name}: unsupported IDX type code 0x{buf[2]:02x}; only unsigned bytes (0x08) are supported"
        )
    ndim = buf[3]
    if ndim < 1:
        raise DataError(f"{name}: IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(buf) < header:
        raise DataError(
            f"{name}: IDX header is truncated: {ndim} dimensions need {header} header bytes, "
            f"the file has {len(buf)}"
        )
    return struct.unpack(f">{ndim}I", bytes(buf[4:header])), header


def parse_idx(buf: bytes, name: str = "file", copy: bool = True) -> np.ndarray:
    """Parse an unsigned-byte IDX file (any number of dimensions) into an array (writable if ``copy``)."""
    dims, header = idx_header(buf, name)
    expected = 1
    for d in dims:  # Python ints: a hostile header cannot overflow the product
        expected *= d
    actual = len(buf) - header
    if actual != expected:
        what = "truncated" if actual < expected else "has trailing bytes"
        shape = " x ".join(map(str, dims))
        raise DataError(
            f"{name}: IDX data {what}: shape {shape} needs {expected} bytes after the header, found {actual}"
        )
    try:
        array = np.frombuffer(buf, dtype=np.uint8, count=expected, offset=header).reshape(dims)
    except ValueError as e:  # e.g. more dimensions than numpy supports
        raise DataError(f"{name}: IDX shape {dims} cannot be represented: {e}") from None
    return array.copy() if copy else array


# --- fetching -----------------------------------------------------------------------------


def _problem(data: bytes, fname: str) -> str | None:
    """None if ``data`` is the published file, else a short reason."""
    if hashlib.md5(data).hexdigest() == MNIST_MD5[fname]:
        return None
    try:
        parse_idx(data, fname, copy=False)
    except DataError as e:
        return "not a valid IDX file: " + str(e).removeprefix(f"{fname}: ")
    return "checksum mismatch"


def _cached(path: Path, fname: str) -> bytes | None:
    """The verified content of ``path``, or None; a bad file is deleted so it is fetched again.
    Only a file of the published size is read at all, so a huge or endless one costs nothing."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise DataError(f"the cached {path} cannot be read: {paths.os_reason(e)}; "
                        "remove it or pass --data-dir to use another folder") from None
    if not stat.S_ISREG(st.st_mode):
        raise DataError(f"the cached {path} is {paths.kind_of(st.st_mode)}, not a file; "
                        "remove it or pass --data-dir to use another folder")
    data = None
    if st.st_size == MNIST_SIZES[fname]:
        try:
            with open(path, "rb") as f:
                data = f.read(MNIST_SIZES[fname] + 1)
        except OSError:
            data = None
    if data is not None and _problem(data, fname) is None:
        return data
    try:
        path.unlink()
    except OSError as e:
        raise DataError(
            f"the cached {path} is damaged and cannot be removed ({paths.os_reason(e)}); "
            "delete it or pass --data-dir to use another folder"
        ) from None
    return None


def _resolve(name: str) -> str:
    fname = MNIST_FILES.get(name, name)
    if fname not in MNIST_MD5:
        known = ", ".join(MNIST_MD5)
        raise DataError(f"unknown MNIST file {name!r}; expected one of {known}")
    return fname


def _prepare_folder(data_dir: Path | str | None) -> Path:
    folder = (default_data_dir() if data_dir is None else Path(data_dir).expanduser()) / "mnist"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(
            f"cannot create the data folder {folder}: {paths.os_reason(e)}; pass --data-dir to use another folder"
        ) from None
    remove_dead_parts(folder, MNIST_MD5)
    return folder


def fetch(
    names: Iterable[str],
    data_dir: Path | str | None = None,
    mirrors: Sequence[str] | None = None,
    reporter: Reporter | None = None,
    timeout: float = 30.0,
    retries: int = 2,
) -> dict[str, Path]:
    """Make sure each named MNIST file is cached, verified and decompressed; return its path.

    ``names`` are file names ("t10k-images-idx3-ubyte") or MNIST_FILES keys ("test-images");
    the result is keyed by the names as given.
    """
    found = _fetch(names, data_dir, mirrors, reporter, timeout, retries, keep=False)
    return {name: path for name, (path, _) in found.items()}


def _fetch(names, data_dir, mirrors, reporter, timeout=30.0, retries=2, keep=True) -> dict[str, tuple[Path, bytes]]:
    """fetch, also returning the verified bytes (if ``keep``), so a loader need not read and hash them again."""
    if isinstance(names, str):
        names = [names]
    wanted = [(name, _resolve(name)) for name in names]
    speed = download_pace()
    folder = _prepare_folder(data_dir)
    mirrors = DEFAULT_MIRRORS if mirrors is None else tuple(mirrors)
    dead: dict[str, str] = {}
    out: dict[str, tuple[Path, bytes]] = {}
    for name, fname in wanted:
        path = folder / fname
        data = _cached(path, fname)
        if data is None:
            # Fail before a long download rather than after it.
            if not os.access(folder, os.W_OK):
                raise DataError(
                    f"cannot write to the data folder {folder}; pass --data-dir to use another folder"
                )
            data = from_mirrors(fname, path, mirrors, reporter, timeout, max(0, retries), dead, keep, speed,
                                MNIST_SIZES[fname], MNIST_MD5[fname], functools.partial(_problem, fname=fname))
        out[name] = (path, data)
    return out


# --- loading ------------------------------------------------------------------------------


def _check_pair(images: np.ndarray, labels: np.ndarray, image_name: str, label_name: str) -> None:
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        shape = " x ".join(map(str, images.shape))
        raise DataError(f"{image_name}: expected images of shape N x 28 x 28, found {shape}")
    if labels.ndim != 1:
        raise DataError(f"{label_name}: expected a 1-D array of labels, found {labels.ndim} dimensions")
    if len(images) != len(labels):
        raise DataError(
            f"{image_name} holds {len(images)} images but {label_name} holds {len(labels)} labels"
        )
    if labels.size and labels.max() > 9:
        raise DataError(f"{label_name}: labels must be digits 0-9, found {int(labels.max())}")


def load_mnist(
    split: str,
    data_dir: Path | str | None = None,
    mirrors: Sequence[str] | None = None,
    reporter: Reporter | None = None,
    limit: int | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, str]]:
    """Images uint8 (N, 28, 28), labels uint8 (N,), and {file name: md5} of the files read."""
    if split not in ("train", "test"):
        raise ConfigError(f"unknown MNIST split {split!r}; use 'train' or 'test'")
    if limit is not None and limit < 1:
        raise ConfigError(f"the image limit must be at least 1; got {limit}")
    image_name, label_name = MNIST_FILES[f"{split}-images"], MNIST_FILES[f"{split}-labels"]
    files = _fetch([image_name, label_name], data_dir, mirrors, reporter)
    # _fetch verified each file's MD5 on exactly these bytes, which are what gets parsed.
    arrays = [parse_idx(files[fname][1], fname) for fname in (image_name, label_name)]
    digests = {fname: MNIST_MD5[fname] for fname in (image_name, label_name)}
    images, labels = arrays
    _check_pair(images, labels, image_name, label_name)
    if limit is not None and limit < len(images):
        # Copies, so the slices do not keep the full arrays alive.
        images, labels = images[:limit].copy(), labels[:limit].copy()
    return images, labels, digests
