"""HTTP for downloads: connections watched for a minimum pace, the credentials in a mirror's URL
sent as basic authentication to that mirror only, and network errors said in a few words.

Standard library only.
"""

from __future__ import annotations

import collections
import contextlib
import http.client
import os
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

from .errors import ConfigError

try:
    import ssl
except ImportError:  # Python built without OpenSSL: https mirrors just fail
    ssl = None  # type: ignore[assignment]

# A mirror is abandoned when a file arrives at under MIN_SPEED bytes/s over any SPEED_WINDOW seconds
# (RMSPROP_DOWNLOAD_MIN_SPEED and RMSPROP_DOWNLOAD_WINDOW override them; a minimum of 0 turns it off).
MIN_SPEED = 10_000.0
SPEED_WINDOW = 30.0


def describe(exc: BaseException) -> str:
    """A short, user-facing reason for a network or file error."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code}"
    if isinstance(exc, urllib.error.URLError):
        return describe(exc.reason) if isinstance(exc.reason, BaseException) else str(exc.reason)
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


class Pace:
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


def _paced(base: type, pace: Pace) -> type:
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
    def __init__(self, pace: Pace):
        super().__init__()
        self.pace = pace

    def http_open(self, req):
        return self.do_open(_paced(http.client.HTTPConnection, self.pace), req)


_HANDLERS: list[type] = [_HTTPHandler]
if hasattr(urllib.request, "HTTPSHandler"):  # Python built without OpenSSL has none

    class _HTTPSHandler(urllib.request.HTTPSHandler):
        def __init__(self, pace: Pace):
            super().__init__()
            self.pace = pace

        def https_open(self, req):
            args = {"context": self._context}
            if getattr(self, "_check_hostname", None) is not None:  # Python < 3.12
                args["check_hostname"] = self._check_hostname
            return self.do_open(_paced(http.client.HTTPSConnection, self.pace), req, **args)

    _HANDLERS.append(_HTTPSHandler)


def split_credentials(url: str) -> tuple[str, tuple[str, str] | None]:
    """The URL without its user:password@, and the (user, password) it held, percent-decoded."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url, None
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    bare = urllib.parse.urlunsplit(parts._replace(netloc=hostport))
    return bare, (urllib.parse.unquote(user), urllib.parse.unquote(password))


def opener(prefix: str, pace: Pace) -> urllib.request.OpenerDirector:
    """An opener whose connections ``pace`` watches; credentials in the mirror's URL are sent as
    HTTP basic authentication, to that mirror only (a redirect elsewhere does not get them)."""
    handlers = [h(pace) for h in _HANDLERS]
    bare, credentials = split_credentials(prefix)
    if credentials:
        passwords = urllib.request.HTTPPasswordMgrWithPriorAuth()
        passwords.add_password(None, bare, *credentials, is_authenticated=True)
        handlers.append(urllib.request.HTTPBasicAuthHandler(passwords))
    return urllib.request.build_opener(*handlers)
