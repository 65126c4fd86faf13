"""A file arriving from a mirror, stored: its bytes capped, decompressed if they are gzip and
hashed as they are written to a temporary `.part` file beside the cached file, which replaces it
once verified; the `.part` files of killed downloads removed. And the two ways one candidate
(a mirror and a file name) fails.

Standard library only.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import re
import secrets
import socket
from pathlib import Path
from typing import Container, Iterable

from .errors import DataError, os_reason
from .gz import GZIP_MAGIC, GzipError, gunzip


class Failed(Exception):
    """One candidate (mirror + file name) failed; ``kind`` decides the final exception."""

    def __init__(self, reason: str, kind: str):
        super().__init__(reason)
        self.reason, self.kind = reason, kind  # kind: missing | network | bad | checksum


class Unreachable(Failed):
    """The whole mirror is unusable (host down, folder missing): skip its other candidates."""

    def __init__(self, reason: str):
        super().__init__(reason, "network")


def raw_cap(expected: int) -> int:
    """The most bytes a mirror may send for a file of ``expected`` bytes, compressed or not
    (deflate adds at most a few bytes per 16 KiB; a gzip header is a few dozen bytes)."""
    return expected + expected // 100 + 65536


# Who writes a temporary file, in its name, so that one left by a killed process can be told from
# one being written: the host (a cache may be shared over a network) and the process.
_WRITER = f"{socket.gethostname().replace('.', '_').replace('-', '_')}-{os.getpid()}"
_PART_NAME = re.compile(r"^\.(?P<name>[\w.-]+)\.(?P<host>\w+)-(?P<pid>\d+)-[0-9a-f]{8}\.part$")


def remove_dead_parts(folder: Path, names: Container[str]) -> None:
    """Delete the temporary files that downloads of ``names`` killed on this host left in ``folder`` (a
    killed download of the training images leaves 47 MB), never those of a live process or another host."""
    if os.name != "posix":  # os.kill(pid, 0) does not test a process there
        return
    host = _WRITER.rpartition("-")[0]
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            found = _PART_NAME.match(entry.name)
            if not found or found["host"] != host or found["name"] not in names:
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


class Part:
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
        return DataError(f"cannot write {self.path}: {os_reason(e)}; "
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


def store(chunks: Iterable[bytes], expected: int, candidate: str, part: Part) -> None:
    """A mirror's bytes -> the decompressed file in ``part``. Gzip or not is told by the bytes, not
    the name (some mirrors serve the files decompressed). Stops as soon as more arrives, or
    decompresses, than the published file can be."""
    cap = raw_cap(expected)

    def capped():
        got = 0
        for chunk in chunks:
            got += len(chunk)
            if got > cap:
                raise Failed(f"sent more than {cap:,} bytes, more than the file can be", "bad")
            yield chunk

    stream = capped()
    head = b""
    for chunk in stream:
        head += chunk
        if len(head) >= 2:
            break
    if head[:2] == GZIP_MAGIC:
        try:
            for piece in gunzip(itertools.chain([head], stream), expected):
                part.write(piece)
        except GzipError as e:
            reason = f"decompresses to more than the {expected:,} bytes of the published file" if e.too_large \
                else str(e)
            raise Failed(reason, "bad") from None
    elif candidate.endswith(".gz"):
        raise Failed("not a gzip file", "bad")
    else:
        for chunk in itertools.chain([head], stream):
            if part.size + len(chunk) > expected:
                raise Failed(f"larger than the published file ({expected:,} bytes)", "bad")
            part.write(chunk)
