"""Where the tests find MNIST, and a throwaway local HTTP mirror for it, so nothing ever touches the network."""

from __future__ import annotations

import base64
import contextlib
import functools
import os
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Iterator

MNIST_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def find_mnist() -> Path | None:
    """RMSPROP_MIRROR if it is a folder, else the shared copy beside the checkout."""
    candidates = []
    if os.environ.get("RMSPROP_MIRROR"):
        candidates.append(Path(os.environ["RMSPROP_MIRROR"]))
    candidates.append(Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist")
    for folder in candidates:
        if all((folder / (n + ".gz")).exists() or (folder / n).exists() for n in MNIST_NAMES):
            return folder
    return None


class _Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address):  # a client that gave up early, as they should
        pass


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # keep pytest output clean
        pass


@contextlib.contextmanager
def serve_folder(path: Path | str, fail_first: int = 0) -> Iterator[str]:
    """Serve ``path`` on 127.0.0.1 and yield its base URL ("http://127.0.0.1:PORT/").

    The first ``fail_first`` GET requests get HTTP 503, to exercise retries.
    """
    lock = threading.Lock()
    left = [fail_first]

    class Handler(_QuietHandler):
        def do_GET(self):
            with lock:
                fail = left[0] > 0
                left[0] -= fail
            if fail:
                self.send_error(503)
            else:
                super().do_GET()

    with _running(_Server(("127.0.0.1", 0), functools.partial(Handler, directory=str(path)))) as url:
        yield url


@contextlib.contextmanager
def _running(server: ThreadingHTTPServer, stop: threading.Event | None = None) -> Iterator[str]:
    """Serve in a thread; yield the base URL; then stop every behaviour and the server."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        if stop is not None:
            stop.set()
        server.shutdown()
        server.server_close()
        thread.join()


def dead_url() -> str:
    """An http URL on 127.0.0.1 where nothing listens (connections are refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


# --- misbehaving mirrors ---------------------------------------------------------------------
# Each behaviour answers one GET. It stops by itself after ``LIMIT_S`` seconds at most, and at once
# when the test ends (``stop`` is set), so a test of a regression fails instead of hanging.

LIMIT_S = 20.0
Behaviour = Callable[[BaseHTTPRequestHandler, threading.Event], None]


def _send(handler, data: bytes) -> bool:
    try:
        handler.wfile.write(data)
        handler.wfile.flush()
        return True
    except OSError:  # the client gave up
        return False


def drip(interval: float, length: int = 9_912_422) -> Behaviour:
    """200 with a Content-Length of ``length``, then one byte every ``interval`` seconds."""

    def behave(handler, stop):
        handler.send_response(200)
        handler.send_header("Content-Length", str(length))
        handler.end_headers()
        end = time.monotonic() + LIMIT_S
        while time.monotonic() < end and _send(handler, b"\x1f") and not stop.wait(interval):
            pass

    return behave


def drip_headers(interval: float) -> Behaviour:
    """A status line, then headers one byte every ``interval`` seconds, never ending them."""

    def behave(handler, stop):
        _send(handler, b"HTTP/1.1 200 OK\r\n")
        end = time.monotonic() + LIMIT_S
        while time.monotonic() < end and _send(handler, b"X") and not stop.wait(interval):
            pass

    return behave


def endless(prefix: bytes = b"", limit: int = 256 * 2**20) -> Behaviour:
    """200 without a Content-Length, then ``prefix`` and zeros as fast as the client reads, up to
    ``limit`` bytes (so that a client with no limit of its own fails a test, not the machine)."""

    def behave(handler, stop):
        handler.send_response(200)
        handler.end_headers()
        end, sent, zeros = time.monotonic() + LIMIT_S, 0, bytes(1 << 16)
        if _send(handler, prefix):
            while time.monotonic() < end and sent < limit and not stop.is_set() and _send(handler, zeros):
                sent += len(zeros)

    return behave


def needs_password(user: str, password: str, folder: Path | str) -> Behaviour:
    """The files of ``folder``, to requests with HTTP basic authentication as ``user``:``password`` only."""
    expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    def behave(handler, stop):
        if handler.headers.get("Authorization") != expected:
            handler.send_response(401)
            handler.send_header("WWW-Authenticate", 'Basic realm="mnist"')
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        path = Path(folder) / handler.path.lstrip("/")
        if not path.is_file():
            handler.send_error(404)
            return
        data = path.read_bytes()
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        _send(handler, data)

    return behave


@contextlib.contextmanager
def serve_behaviour(routes: dict[str, Behaviour], default: Behaviour | None = None) -> Iterator[str]:
    """A mirror on 127.0.0.1 where GET /NAME runs ``routes[NAME]`` (else ``default``, else 404);
    yields its base URL. Every behaviour is stopped when the block ends."""
    stop = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            behave = routes.get(self.path.lstrip("/"), default)
            if behave is None:
                self.send_error(404)
            else:
                behave(self, stop)
            self.close_connection = True

        def log_message(self, format, *args):
            pass

    server = _Server(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.block_on_close = False  # behaviours end by themselves, or when ``stop`` is set
    with _running(server, stop) as url:
        yield url
