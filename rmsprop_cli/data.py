"""Download, verify, cache and parse the MNIST IDX files.

Standard library and numpy only, so that ``rmsprop data`` and the tests never pay
for importing numba or rich. Every failure leaves as one of the project's own
exceptions with a one-line message meant for the user.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import http.client
import itertools
import os
import re
import secrets
import socket
import stat
import struct
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from pathlib import Path
from typing import Iterable, Iterator, Protocol, Sequence

import numpy as np

from . import paths
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

# Bytes of each decompressed file: nothing larger is ever downloaded, decompressed or read.
MNIST_SIZES: dict[str, int] = {
    "train-images-idx3-ubyte": 47_040_016,
    "train-labels-idx1-ubyte": 60_008,
    "t10k-images-idx3-ubyte": 7_840_016,
    "t10k-labels-idx1-ubyte": 10_008,
}

# A mirror is abandoned when a file arrives at under MIN_SPEED bytes/s over any SPEED_WINDOW seconds
# (RMSPROP_DOWNLOAD_MIN_SPEED and RMSPROP_DOWNLOAD_WINDOW override them; a minimum of 0 turns it off).
MIN_SPEED = 10_000.0
SPEED_WINDOW = 30.0

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


class GzipError(ValueError):
    """gzip data that is corrupt, truncated, or decompresses to more than allowed (``too_large``)."""

    def __init__(self, reason: str, too_large: bool = False):
        super().__init__(reason)
        self.too_large = too_large


def gunzip(chunks: Iterable[bytes], limit: int, piece: int = 1 << 20) -> Iterator[bytes]:
    """Decompress gzip data arriving in ``chunks`` (one member or several, as ``gzip.decompress``),
    yielding at most ``piece`` bytes at a time and raising GzipError as soon as the output passes
    ``limit`` bytes: a gzip bomb costs ``limit`` bytes of work, never more, and no memory."""
    inflate, tail, total = None, b"", 0

    def counted(run) -> bytes:
        nonlocal total
        try:
            out = run()
        except zlib.error:
            raise GzipError("corrupt gzip data") from None
        total += len(out)
        if total > limit:
            raise GzipError(f"decompresses to more than {limit:,} bytes", too_large=True)
        return out

    for data in chunks:
        while data:
            if inflate is None:  # between members: zero padding, then the next header or the end
                data = (tail + data).lstrip(b"\0")
                tail = b""
                if len(data) < 2:
                    tail = data
                    break
                if data[:2] != _GZIP_MAGIC:
                    raise GzipError("corrupt gzip data (trailing garbage)")
                inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
            out = counted(lambda: inflate.decompress(data, min(piece, limit - total + 1)))
            if out:
                yield out
            if inflate.eof:
                data, inflate = inflate.unused_data + inflate.unconsumed_tail, None
            else:
                data = inflate.unconsumed_tail
    if tail:
        raise GzipError("corrupt gzip data (trailing garbage)")
    if inflate is not None:
        out = counted(inflate.flush)
        if out:
            yield out
        if not inflate.eof:
            raise GzipError("corrupt gzip data (truncated)")
    elif total == 0:
        raise GzipError("corrupt gzip data (empty)")


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


def _redact(text: str) -> str:
    """``text`` with the user name and password of every URL in it replaced by ***."""
    return re.sub(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/?#\s]*@", r"\1***@", text)


def _raw_cap(expected: int) -> int:
    """The most bytes a mirror may send for a file of ``expected`` bytes, compressed or not
    (deflate adds at most a few bytes per 16 KiB; a gzip header is a few dozen bytes)."""
    return expected + expected // 100 + 65536


def _positive_env(name: str, default: float, zero_ok: bool = False) -> float:
    text = os.environ.get(name)
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (value >= 0 if zero_ok else value > 0) or value == float("inf"):
        raise ConfigError(f"{name} must be a number {'of 0 or more' if zero_ok else 'above 0'}; got {text!r}")
    return value


def download_pace() -> tuple[float, float]:
    """(minimum bytes/s, window in s): RMSPROP_DOWNLOAD_MIN_SPEED and RMSPROP_DOWNLOAD_WINDOW, else the defaults."""
    return (_positive_env("RMSPROP_DOWNLOAD_MIN_SPEED", MIN_SPEED, zero_ok=True),
            _positive_env("RMSPROP_DOWNLOAD_WINDOW", SPEED_WINDOW))


# Who writes a temporary file, in its name, so that one left by a killed process can be told from
# one being written: the host (a cache may be shared over a network) and the process.
_WRITER = f"{socket.gethostname().replace('.', '_').replace('-', '_')}-{os.getpid()}"
_PART_NAME = re.compile(r"^\.(?P<name>[\w.-]+)\.(?P<host>\w+)-(?P<pid>\d+)-[0-9a-f]{8}\.part$")


def _remove_dead_parts(folder: Path) -> None:
    """Delete the temporary files that downloads killed on this host left in ``folder`` (a killed
    download of the training images leaves 47 MB), never those of a live process or another host."""
    if os.name != "posix":  # os.kill(pid, 0) does not test a process there
        return
    host = _WRITER.rpartition("-")[0]
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            found = _PART_NAME.match(entry.name)
            if not found or found["host"] != host or found["name"] not in MNIST_MD5:
                continue
            try:
                os.kill(int(found["pid"]), 0)
                continue  # alive (or not ours to signal: PermissionError below)
            except ProcessLookupError:
                pass
            except (PermissionError, OverflowError):
                continue
            with contextlib.suppress(OSError):
                os.unlink(entry.path)


class _Part:
    """A temporary file beside ``path``, hashed as it is written, renamed over ``path`` by commit().

    Created by os.open with mode 0o666, so that the umask decides the permissions, as for any file
    the user creates (tempfile.mkstemp would make it 0600, unreadable to others sharing the cache)."""

    def __init__(self, path: Path, keep: bool):
        self.path, self.size, self.md5 = path, 0, hashlib.md5()
        self.kept = bytearray() if keep else None
        self.tmp = path.parent / f".{path.name}.{_WRITER}-{secrets.token_hex(4)}.part"
        try:
            fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        except OSError as e:
            raise self._error(e) from None
        self.file = os.fdopen(fd, "wb")

    def _error(self, e: OSError) -> DataError:
        return DataError(f"cannot write {self.path}: {_strerror(e)}; "
                         "free some space or pass --data-dir to use another folder")

    def write(self, data: bytes) -> None:
        try:
            self.file.write(data)
        except OSError as e:
            raise self._error(e) from None
        self.md5.update(data)
        self.size += len(data)
        if self.kept is not None:
            self.kept += data

    def content(self) -> bytes | bytearray:
        """What was written (at most the file's published size, so it fits in memory)."""
        if self.kept is not None:
            return self.kept  # not copied: a bytearray serves wherever bytes do here
        self.file.flush()
        with open(self.tmp, "rb") as f:
            return f.read()

    def commit(self) -> None:
        """Readers see the old state or the whole verified file, never a partial one."""
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            os.replace(self.tmp, self.path)
        except OSError as e:
            self.discard()
            raise self._error(e) from None

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self.file.close()
        with contextlib.suppress(OSError):
            os.unlink(self.tmp)


def _store(chunks: Iterable[bytes], fname: str, candidate: str, part: _Part) -> None:
    """A mirror's bytes -> the decompressed file in ``part``. Gzip or not is told by the bytes, not
    the name (some mirrors serve the files decompressed). Stops as soon as more arrives, or
    decompresses, than the published file can be."""
    expected = MNIST_SIZES[fname]
    cap = _raw_cap(expected)

    def capped():
        got = 0
        for chunk in chunks:
            got += len(chunk)
            if got > cap:
                raise _Failed(f"sent more than {cap:,} bytes, more than the file can be", "bad")
            yield chunk

    stream = capped()
    head = b""
    for chunk in stream:
        head += chunk
        if len(head) >= 2:
            break
    if head[:2] == _GZIP_MAGIC:
        try:
            for piece in gunzip(itertools.chain([head], stream), expected):
                part.write(piece)
        except GzipError as e:
            reason = f"decompresses to more than the {expected:,} bytes of the published file" if e.too_large \
                else str(e)
            raise _Failed(reason, "bad") from None
    elif candidate.endswith(".gz"):
        raise _Failed("not a gzip file", "bad")
    else:
        for chunk in itertools.chain([head], stream):
            if part.size + len(chunk) > expected:
                raise _Failed(f"larger than the published file ({expected:,} bytes)", "bad")
            part.write(chunk)


class _Pace:
    """Abandons a download that brings fewer than ``min_speed`` bytes/s over any ``window`` seconds.

    A socket timeout bounds each read, not the whole: a server that sends a byte every few seconds
    keeps every read alive for ever. So a thread watches the bytes received, and when they fall
    behind it shuts the connection's sockets down, which ends the read blocked on them."""

    def __init__(self, min_speed: float, window: float):
        self.min_speed, self.window = min_speed, window
        self.received, self.reason = 0, None
        self._sockets: list[socket.socket] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True, name="rmsprop-download-pace")

    def add(self, sock: socket.socket) -> None:
        # A duplicate stays usable after TLS wraps (and detaches) the original, and shutting it
        # down shuts down the one connection both refer to.
        with contextlib.suppress(OSError):
            self._sockets.append(sock.dup())

    def count(self, chunk: bytes) -> bytes:
        self.received += len(chunk)
        return chunk

    def __enter__(self):
        if self.min_speed > 0:
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._done.set()
        if self._thread.is_alive():
            self._thread.join()
        for s in self._sockets:
            s.close()

    def _watch(self) -> None:
        samples = collections.deque([(time.monotonic(), 0)])
        while not self._done.wait(max(0.01, min(0.25, self.window / 10))):
            now, got = time.monotonic(), self.received
            samples.append((now, got))
            while len(samples) > 2 and samples[1][0] <= now - self.window:
                samples.popleft()
            then, before = samples[0]
            if now - then >= self.window and got - before < self.min_speed * (now - then):
                self.reason = (f"too slow: {got - before:,} bytes in {now - then:.0f} s, "
                               f"under the minimum of {self.min_speed:,.0f} bytes/s")
                for s in self._sockets:
                    with contextlib.suppress(OSError):
                        s.shutdown(socket.SHUT_RDWR)
                return


def _paced(base: type, pace: _Pace) -> type:
    """``base`` (an http.client connection class) whose sockets ``pace`` watches from the start."""

    class Connection(base):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            create = self._create_connection

            def create_paced(*a, **k):
                sock = create(*a, **k)
                pace.add(sock)
                return sock

            self._create_connection = create_paced

    return Connection


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, pace: _Pace):
        super().__init__()
        self.pace = pace

    def http_open(self, req):
        return self.do_open(_paced(http.client.HTTPConnection, self.pace), req)


_HANDLERS: list[type] = [_HTTPHandler]
if hasattr(urllib.request, "HTTPSHandler"):  # Python built without OpenSSL has none

    class _HTTPSHandler(urllib.request.HTTPSHandler):
        def __init__(self, pace: _Pace):
            super().__init__()
            self.pace = pace

        def https_open(self, req):
            args = {"context": self._context}
            if getattr(self, "_check_hostname", None) is not None:  # Python < 3.12
                args["check_hostname"] = self._check_hostname
            return self.do_open(_paced(http.client.HTTPSConnection, self.pace), req, **args)

    _HANDLERS.append(_HTTPSHandler)


def _split_credentials(url: str) -> tuple[str, tuple[str, str] | None]:
    """The URL without its user:password@, and the (user, password) it held, percent-decoded."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url, None
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    bare = urllib.parse.urlunsplit(parts._replace(netloc=hostport))
    return bare, (urllib.parse.unquote(user), urllib.parse.unquote(password))


def _opener(prefix: str, pace: _Pace) -> urllib.request.OpenerDirector:
    """An opener whose connections ``pace`` watches; credentials in the mirror's URL are sent as
    HTTP basic authentication, to that mirror only (a redirect elsewhere does not get them)."""
    handlers = [h(pace) for h in _HANDLERS]
    bare, credentials = _split_credentials(prefix)
    if credentials:
        passwords = urllib.request.HTTPPasswordMgrWithPriorAuth()
        passwords.add_password(None, bare, *credentials, is_authenticated=True)
        handlers.append(urllib.request.HTTPBasicAuthHandler(passwords))
    return urllib.request.build_opener(*handlers)


def _reported(read, label: str, total: int | None, reporter: Reporter | None) -> Iterator[bytes]:
    """The chunks ``read()`` returns until an empty one, told to the reporter as they come."""
    if reporter:
        reporter.start(label, total)
    try:
        while chunk := read():
            if reporter:
                reporter.advance(len(chunk))
            yield chunk
    finally:
        if reporter:
            reporter.finish()


def _read_url(prefix: str, candidate: str, fname: str, part: _Part, reporter: Reporter | None,
              timeout: float, speed: tuple[float, float]) -> None:
    bare, _ = _split_credentials(prefix)
    request = urllib.request.Request(bare + candidate, headers={"User-Agent": "rmsprop-cli"})
    with _Pace(*speed) as pace:
        try:
            with _opener(prefix, pace).open(request, timeout=timeout) as resp:
                length = resp.headers.get("Content-Length")
                total = int(length) if length and length.strip().isdigit() else None
                if total is not None and total > _raw_cap(MNIST_SIZES[fname]):
                    raise _Failed(f"announces {total:,} bytes, more than the file can be", "bad")
                # read1: whatever has arrived, so that the pace is seen; read(n) waits for all n bytes.
                chunks = _reported(lambda: pace.count(resp.read1(_CHUNK)), fname, total, reporter)
                try:
                    _store(chunks, fname, candidate, part)
                finally:
                    chunks.close()
        except BaseException:
            if pace.reason:  # the watcher cut the connection: that is the cause, whatever the symptom
                raise _Unreachable(pace.reason) from None
            raise
        if pace.reason:
            raise _Unreachable(pace.reason)
    # read1 returns short at EOF instead of raising, so check the length ourselves.
    if total is not None and pace.received != total:
        raise http.client.IncompleteRead(b"", total - pace.received)


def _fetch_url(prefix: str, candidate: str, fname: str, new_part, reporter: Reporter | None,
               timeout: float, retries: int, speed: tuple[float, float]) -> _Part:
    for attempt in range(retries + 1):
        part = new_part()
        try:
            _read_url(prefix, candidate, fname, part, reporter, timeout, speed)
            return part
        except BaseException as e:
            part.discard()
            last = _worth_retrying(e, prefix)
        if attempt < retries:
            time.sleep(0.5 * (attempt + 1))
    if isinstance(last, urllib.error.HTTPError):
        raise _Failed(_describe(last), "network")  # the server answers, so try its other file
    raise _Unreachable(_describe(last))


def _worth_retrying(e: BaseException, prefix: str) -> BaseException:
    """``e`` if another try may succeed (a timeout, a reset, HTTP 5xx); else the failure it means, raised."""
    if isinstance(e, urllib.error.HTTPError):
        # 4xx will not change on retry (S3 answers 403 for a missing key).
        if e.code == 401:
            raise _Unreachable("HTTP 401: the user name and password in the URL were refused"
                               if _split_credentials(prefix)[1] else
                               "HTTP 401: the mirror wants a user name and password; "
                               "put USER:PASSWORD@ before the host in the mirror's URL") from None
        if e.code < 500:
            raise _Failed(_describe(e), "missing") from None
        return e
    if isinstance(e, urllib.error.URLError):
        # No DNS answer or an unknown URL scheme: retrying only wastes time.
        if isinstance(e.reason, (socket.gaierror, str)):
            raise _Unreachable(_describe(e)) from None
        return e
    if isinstance(e, (OSError, http.client.HTTPException)):  # timeouts and resets mid-body
        return e
    if isinstance(e, ValueError):  # e.g. a malformed host such as "http://[::1"
        raise _Unreachable("invalid URL") from None
    raise e  # _Failed, DataError (the disk), KeyboardInterrupt: not a network matter


def _fetch_local(folder: Path, candidate: str, fname: str, part: _Part, reporter: Reporter | None) -> None:
    try:
        if not stat.S_ISDIR(os.stat(folder).st_mode):
            raise _Unreachable("not a folder")
    except FileNotFoundError:
        raise _Unreachable("folder not found") from None
    except OSError as e:
        raise _Unreachable(paths.os_reason(e)) from None
    path = folder / candidate
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise _Failed("not found", "missing") from None
    except OSError as e:
        raise _Failed(paths.os_reason(e), "bad") from None
    if not stat.S_ISREG(st.st_mode):  # a FIFO would block the open for ever
        raise _Failed(f"{paths.kind_of(st.st_mode)}, not a file", "bad")
    if st.st_size > _raw_cap(MNIST_SIZES[fname]):
        raise _Failed(f"{st.st_size:,} bytes, more than the file can be", "bad")

    try:
        with open(path, "rb") as f:
            stream = _reported(lambda: f.read(_LOCAL_CHUNK), fname, st.st_size, reporter)
            try:
                _store(stream, fname, candidate, part)
            finally:
                stream.close()
    except OSError as e:
        raise _Failed(_describe(e), "bad") from None


def _problem(data: bytes, fname: str) -> str | None:
    """None if ``data`` is the published file, else a short reason."""
    if hashlib.md5(data).hexdigest() == MNIST_MD5[fname]:
        return None
    try:
        parse_idx(data, fname, copy=False)
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


def _say(reporter: Reporter | None, message: str) -> None:
    """A line for the user while fetching goes on: through the reporter's ``note`` where it has one,
    else on stderr; nothing when silent (no reporter)."""
    if reporter is None:
        return
    note = getattr(reporter, "note", None)
    if note is not None:
        note(message)
    else:
        print(f"Note: {message}", file=sys.stderr, flush=True)


def _download(
    fname: str,
    path: Path,
    mirrors: Sequence[str],
    reporter: Reporter | None,
    timeout: float,
    retries: int,
    dead: dict[str, str],
    keep: bool,
    speed: tuple[float, float],
) -> bytes | None:
    """Fetch ``fname`` from the first mirror that has it, verify it and cache it at ``path``;
    its content if ``keep``."""
    tried: list[str] = []
    kinds: set[str] = set()
    new_part = lambda: _Part(path, keep)  # noqa: E731
    for n, mirror in enumerate(mirrors):
        key, shown = os.fspath(mirror), _redact(os.fspath(mirror))
        if key in dead:  # already failed for an earlier file in this fetch
            tried.append(f"{shown} ({dead[key]})")
            kinds.add("network")
            continue
        where, location = _mirror_location(mirror)
        reasons: list[tuple[str, str]] = []
        for candidate in (fname + ".gz", fname):
            part = None
            try:
                if where == "url":
                    part = _fetch_url(location, candidate, fname, new_part, reporter, timeout, retries, speed)
                else:
                    part = new_part()
                    _fetch_local(location, candidate, fname, part, reporter)
                if part.md5.hexdigest() == MNIST_MD5[fname]:
                    data = part.content() if keep else None
                    part.commit()
                    part = None
                    return data
                problem = _problem(part.content(), fname) or "checksum mismatch"
                raise _Failed(problem, "checksum" if problem == "checksum mismatch" else "bad")
            except _Unreachable as e:
                dead[key] = e.reason
                reasons = [("", e.reason)]
                kinds.add(e.kind)
                if e.reason.startswith("too slow") and n + 1 < len(mirrors):
                    _say(reporter, _redact(f"{shown} is {e.reason}; trying the next mirror"))
                break
            except _Failed as e:
                reasons.append((candidate, e.reason))
                kinds.add(e.kind)
            finally:
                if part is not None:
                    part.discard()
        if len({r for _, r in reasons}) == 1:
            tried.append(f"{shown} ({reasons[0][1]})")
        else:
            tried.append(f"{shown} ({', '.join(f'{c}: {r}' for c, r in reasons)})")
    if not tried:
        raise DownloadError(f"cannot download {fname}: no mirrors given; {MIRROR_HINT}")
    summary = _redact(f"cannot download {fname}: tried {'; '.join(tried)}")
    if "network" in kinds or not kinds & {"checksum", "bad"}:
        raise DownloadError(f"{summary}; {MIRROR_HINT}")
    if "checksum" in kinds:
        raise ChecksumError(f"{summary}; {CHECKSUM_HINT}")
    raise DownloadError(f"{summary}; {CHECKSUM_HINT}")


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
    _remove_dead_parts(folder)
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
            data = _download(fname, path, mirrors, reporter, timeout, max(0, retries), dead, keep, speed)
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
