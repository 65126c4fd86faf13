"""Download, verify, cache and parse the MNIST IDX files.

Standard library and numpy only, so that ``rmsprop data`` and the tests never pay
for importing numba or rich. Every failure leaves as one of the project's own
exceptions with a one-line message meant for the user.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.client
import os
import socket
import struct
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from pathlib import Path
from typing import Iterable, Protocol, Sequence

import numpy as np

from .errors import ChecksumError, ConfigError, DataError, DownloadError

try:
    import ssl
except ImportError:  # Python built without OpenSSL: https mirrors just fail
    ssl = None  # type: ignore[assignment]

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

DEFAULT_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)

MIRROR_HINT = (
    "check your connection or pass --mirror URL_OR_DIR (a URL prefix or a folder holding the MNIST files)"
)
CHECKSUM_HINT = (
    "the files found are not the published MNIST files; "
    "pass --mirror URL_OR_DIR (a URL prefix or a folder holding the MNIST files)"
)

_CHUNK = 64 * 1024
_LOCAL_CHUNK = 4 * 1024 * 1024
_GZIP_MAGIC = b"\x1f\x8b"
_IDX_UBYTE = 0x08


class Reporter(Protocol):
    """Progress callbacks (the CLI implements them with rich); None means silent."""

    def start(self, name: str, total: int | None) -> None: ...

    def advance(self, nbytes: int) -> None: ...

    def finish(self) -> None: ...


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


def parse_idx(buf: bytes, name: str = "file") -> np.ndarray:
    """Parse an unsigned-byte IDX file (any number of dimensions) into a writable array."""
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
    dims = struct.unpack(f">{ndim}I", bytes(buf[4:header]))
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
        return np.frombuffer(buf, dtype=np.uint8, count=expected, offset=header).reshape(dims).copy()
    except ValueError as e:  # e.g. more dimensions than numpy supports
        raise DataError(f"{name}: IDX shape {dims} cannot be represented: {e}") from None


# --- fetching -----------------------------------------------------------------------------


class _Failed(Exception):
    """One candidate (mirror + file name) failed; ``kind`` decides the final exception."""

    def __init__(self, reason: str, kind: str):
        super().__init__(reason)
        self.reason, self.kind = reason, kind  # kind: missing | network | bad | checksum


class _Unreachable(_Failed):
    """The whole mirror is unusable (host down, folder missing): skip its other candidates."""

    def __init__(self, reason: str):
        super().__init__(reason, "network")


def _describe(exc: BaseException) -> str:
    """A short, user-facing reason for a network or file error."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code}"
    if isinstance(exc, urllib.error.URLError):
        return _describe(exc.reason) if isinstance(exc.reason, BaseException) else str(exc.reason)
    if isinstance(exc, socket.gaierror):
        return "host not found"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return "timed out"
    if ssl is not None and isinstance(exc, ssl.SSLCertVerificationError):
        return "TLS certificate verification failed"
    if ssl is not None and isinstance(exc, ssl.SSLError):
        return "TLS error"
    if isinstance(exc, http.client.IncompleteRead):
        return "connection closed before the download finished"
    if isinstance(exc, http.client.HTTPException):
        return "bad HTTP response"
    if isinstance(exc, FileNotFoundError):
        return "not found"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


def _strerror(e: OSError) -> str:
    return (e.strerror or str(e) or type(e).__name__).lower()


def _read_reporting(stream, chunk_size: int, label: str, total: int | None, reporter: Reporter | None) -> bytes:
    """Read a stream to its end in chunks, telling the reporter as it goes."""
    chunks = []
    if reporter:
        reporter.start(label, total)
    try:
        while chunk := stream.read(chunk_size):
            chunks.append(chunk)
            if reporter:
                reporter.advance(len(chunk))
    finally:
        if reporter:
            reporter.finish()
    return b"".join(chunks)


def _read_url(url: str, label: str, reporter: Reporter | None, timeout: float) -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": "rmsprop-cli"})
    with urllib.request.urlopen(request, timeout=timeout) as resp:
        length = resp.headers.get("Content-Length")
        total = int(length) if length and length.strip().isdigit() else None
        data = _read_reporting(resp, _CHUNK, label, total, reporter)
    # read(amt) returns short at EOF instead of raising, so check the length ourselves.
    if total is not None and len(data) != total:
        raise http.client.IncompleteRead(data, total - len(data))
    return data


def _fetch_url(url: str, label: str, reporter: Reporter | None, timeout: float, retries: int) -> bytes:
    for attempt in range(retries + 1):
        try:
            return _read_url(url, label, reporter, timeout)
        except urllib.error.HTTPError as e:
            # 4xx will not change on retry (S3 answers 403 for a missing key).
            if e.code < 500:
                raise _Failed(_describe(e), "missing") from None
            last: BaseException = e
        except urllib.error.URLError as e:
            # No DNS answer or an unknown URL scheme: retrying only wastes time.
            if isinstance(e.reason, (socket.gaierror, str)):
                raise _Unreachable(_describe(e)) from None
            last = e
        except (OSError, http.client.HTTPException) as e:  # timeouts and resets mid-body
            last = e
        except ValueError:  # e.g. a malformed host such as "http://[::1"
            raise _Unreachable("invalid URL") from None
        if attempt < retries:
            time.sleep(0.5 * (attempt + 1))
    if isinstance(last, urllib.error.HTTPError):
        raise _Failed(_describe(last), "network")  # the server answers, so try its other file
    raise _Unreachable(_describe(last))


def _fetch_local(folder: Path, candidate: str, label: str, reporter: Reporter | None) -> bytes:
    if not folder.is_dir():
        raise _Unreachable("not a folder" if folder.exists() else "folder not found")
    path = folder / candidate
    if not path.is_file():
        raise _Failed("not found", "missing")
    try:
        with open(path, "rb") as f:
            return _read_reporting(f, _LOCAL_CHUNK, label, os.fstat(f.fileno()).st_size, reporter)
    except OSError as e:
        raise _Failed(_describe(e), "bad") from None


def _decompress(raw: bytes, candidate: str) -> bytes:
    # Trust the bytes, not the name: some mirrors serve already-decompressed files.
    if raw[:2] == _GZIP_MAGIC:
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error):
            raise _Failed("corrupt gzip data", "bad") from None
    if candidate.endswith(".gz"):
        raise _Failed("not a gzip file", "bad")
    return raw


def _problem(data: bytes, fname: str) -> str | None:
    """None if ``data`` is the published file, else a short reason."""
    if hashlib.md5(data).hexdigest() == MNIST_MD5[fname]:
        return None
    try:
        parse_idx(data, fname)
    except DataError as e:
        return "not a valid IDX file: " + str(e).removeprefix(f"{fname}: ")
    return "checksum mismatch"


def _mirror_location(mirror: str | os.PathLike) -> tuple[str, str | Path]:
    """('url', prefix ending in '/') or ('dir', folder)."""
    text = os.fspath(mirror)
    if text.lower().startswith("file://"):
        return "dir", Path(urllib.request.url2pathname(urllib.parse.urlparse(text).path))
    if "://" in text:
        return "url", text if text.endswith("/") else text + "/"
    return "dir", Path(text).expanduser()


def _download(
    fname: str,
    mirrors: Sequence[str],
    reporter: Reporter | None,
    timeout: float,
    retries: int,
    dead: dict[str, str],
) -> bytes:
    tried: list[str] = []
    kinds: set[str] = set()
    for mirror in mirrors:
        shown = os.fspath(mirror)
        if shown in dead:  # already failed for an earlier file in this fetch
            tried.append(f"{shown} ({dead[shown]})")
            kinds.add("network")
            continue
        where, location = _mirror_location(mirror)
        reasons: list[tuple[str, str]] = []
        for candidate in (fname + ".gz", fname):
            try:
                if where == "url":
                    raw = _fetch_url(location + candidate, fname, reporter, timeout, retries)
                else:
                    raw = _fetch_local(location, candidate, fname, reporter)
                data = _decompress(raw, candidate)
                problem = _problem(data, fname)
                if problem is None:
                    return data
                raise _Failed(problem, "checksum" if problem == "checksum mismatch" else "bad")
            except _Unreachable as e:
                dead[shown] = e.reason
                reasons = [("", e.reason)]
                kinds.add(e.kind)
                break
            except _Failed as e:
                reasons.append((candidate, e.reason))
                kinds.add(e.kind)
        if len({r for _, r in reasons}) == 1:
            tried.append(f"{shown} ({reasons[0][1]})")
        else:
            tried.append(f"{shown} ({', '.join(f'{c}: {r}' for c, r in reasons)})")
    if not tried:
        raise DownloadError(f"cannot download {fname}: no mirrors given; {MIRROR_HINT}")
    summary = f"cannot download {fname}: tried {'; '.join(tried)}"
    if "network" in kinds or not kinds & {"checksum", "bad"}:
        raise DownloadError(f"{summary}; {MIRROR_HINT}")
    if "checksum" in kinds:
        raise ChecksumError(f"{summary}; {CHECKSUM_HINT}")
    raise DownloadError(f"{summary}; {CHECKSUM_HINT}")


def _write_atomic(path: Path, data: bytes) -> None:
    """Readers see the old state or the whole verified file, never a partial one."""
    tmp = None
    try:
        with tempfile.NamedTemporaryFile(
            dir=path.parent, prefix=f".{path.name}.", suffix=".part", delete=False
        ) as f:
            tmp = f.name
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        raise DataError(
            f"cannot write {path}: {_strerror(e)}; free some space or pass --data-dir to use another folder"
        ) from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def _cached(path: Path, fname: str) -> bytes | None:
    """The verified content of ``path``, or None; a bad file is deleted so it is fetched again."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError:
        data = None
    if data is not None and _problem(data, fname) is None:
        return data
    try:
        path.unlink()
    except OSError as e:
        raise DataError(
            f"the cached {path} is damaged and cannot be removed ({_strerror(e)}); "
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
            f"cannot create the data folder {folder}: {_strerror(e)}; pass --data-dir to use another folder"
        ) from None
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
    return {name: path for name, (path, _) in _fetch(names, data_dir, mirrors, reporter, timeout, retries).items()}


def _fetch(names, data_dir, mirrors, reporter, timeout=30.0, retries=2) -> dict[str, tuple[Path, bytes]]:
    """fetch, also returning the verified bytes, so a loader need not read and hash them again."""
    if isinstance(names, str):
        names = [names]
    wanted = [(name, _resolve(name)) for name in names]
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
            data = _download(fname, mirrors, reporter, timeout, max(0, retries), dead)
            _write_atomic(path, data)
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
