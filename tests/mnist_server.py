"""Where the tests find MNIST, and a throwaway local HTTP mirror for it, so nothing ever touches the network."""

from __future__ import annotations

import contextlib
import functools
import os
import socket
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

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

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(path)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def dead_url() -> str:
    """An http URL on 127.0.0.1 where nothing listens (connections are refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"
