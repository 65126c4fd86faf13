"""A user's input paths, checked by what they are before anything opens them.

Opening a named pipe (FIFO) with no writer blocks forever, a character device
such as /dev/zero never ends, and ``Path.is_file()`` answers False for both
and for a symbolic-link loop alike, so that they used to be reported as
missing. Every input path goes through one of two functions here:

- ``regular_file``: anything but a regular file is refused, by its type
  (``os.stat`` and ``stat.S_ISREG``), saying what it is instead. For
  checkpoints, mirror folders' files and the cache.
- ``read_bounded``: the whole content of a regular file or a pipe (``<(cat d.png)``,
  ``/dev/stdin``), at most ``limit`` bytes, a pipe within ``timeout`` seconds.
  For the images given to ``rmsprop predict``.

Standard library only.
"""

from __future__ import annotations

import os
import select
import stat
import time
from pathlib import Path

from .errors import DataError, os_reason

# How long a pipe given as an input may take to deliver all of it (RMSPROP_PIPE_TIMEOUT overrides).
PIPE_TIMEOUT = 30.0


def kind_of(mode: int) -> str:
    """What a non-regular file is, in words."""
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _stat(path: Path, what: str, error: type[Exception], hint: str) -> os.stat_result:
    try:
        return os.stat(path)
    except FileNotFoundError:
        try:
            target = os.readlink(path)
        except OSError:
            raise error(f"{what} {path} does not exist{hint}") from None
        raise error(f"{what} {path} is a symbolic link to {target}, which does not exist{hint}") from None
    except OSError as e:  # ELOOP, EACCES on a folder above, ENAMETOOLONG, ENOTDIR, ...
        raise error(f"{what} {path} cannot be opened: {os_reason(e)}") from None
    except ValueError:  # an embedded NUL byte
        raise error(f"{what} {path!r} is not a valid path") from None


def regular_file(path, what: str, error: type[Exception] = DataError, hint: str = "") -> Path:
    """``path`` if it names a regular file (through symbolic links), else ``error`` with one line
    that says what it is instead. ``what`` names the role ("checkpoint"); ``hint`` is appended
    to the messages about a missing or wrong file ("; pass the model.safetensors file ...")."""
    path = Path(path)
    st = _stat(path, what, error, hint)
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{what} {path} is {kind_of(st.st_mode)}, not a file{hint}")
    return path


def pipe_timeout() -> float:
    """RMSPROP_PIPE_TIMEOUT (seconds), else PIPE_TIMEOUT."""
    text = os.environ.get("RMSPROP_PIPE_TIMEOUT")
    if not text:
        return PIPE_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        from .errors import ConfigError

        raise ConfigError(f"RMSPROP_PIPE_TIMEOUT must be a number of seconds above 0; got {text!r}")
    return value


def read_bounded(path, what: str, limit: int, timeout: float | None = None,
                 error: type[Exception] = DataError) -> bytes:
    """All of a regular file or a pipe, refusing more than ``limit`` bytes, and a pipe that has not
    delivered everything (or has no writer) after ``timeout`` seconds. Folders, devices and
    sockets are refused by their type before they are opened."""
    path = Path(path)
    st = _stat(path, what, error, "")
    is_pipe = stat.S_ISFIFO(st.st_mode) and os.name == "posix"
    if not (stat.S_ISREG(st.st_mode) or is_pipe):
        raise error(f"{what} {path} is {kind_of(st.st_mode)}, not a file")
    too_big = f"{what} {path} is larger than {limit / 2**20:g} MiB, the most this tool reads"
    if stat.S_ISREG(st.st_mode) and st.st_size > limit:
        raise error(f"{what} {path} is {st.st_size / 2**20:.1f} MiB, larger than {limit / 2**20:g} MiB, "
                    "the most this tool reads")
    # O_NONBLOCK: opening a FIFO that no one writes to returns at once instead of blocking (also
    # one that replaced the file just looked at); regular files ignore it.
    flags = os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        raise error(f"{what} {path} cannot be opened: {os_reason(e)}") from None
    try:
        st = os.fstat(fd)  # what was opened, which may not be what was looked at a moment ago
        if not (stat.S_ISREG(st.st_mode) or (is_pipe and stat.S_ISFIFO(st.st_mode))):
            raise error(f"{what} {path} is {kind_of(st.st_mode)}, not a file")
        chunks, size = [], 0
        seconds = pipe_timeout() if timeout is None else timeout
        deadline = time.monotonic() + seconds
        while True:
            try:
                chunk = os.read(fd, min(1 << 20, limit + 1 - size))
            except BlockingIOError:  # a pipe with a writer and nothing in it yet
                left = deadline - time.monotonic()
                if left <= 0:
                    said = f"delivered {size} bytes" if size else "delivered nothing"
                    raise error(f"{what} {path} is a pipe that {said} in {seconds:g} s; "
                                "give a file, or make sure what writes to the pipe finishes") from None
                # At most 50 ms: a pipe reopened through /dev/fd may never signal its writer's end.
                select.select([fd], [], [], min(0.05, left))
                continue
            except OSError as e:
                raise error(f"{what} {path} cannot be read: {os_reason(e)}") from None
            if not chunk:  # end of file; for a pipe: no writer (left), or none ever
                break
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise error(too_big)
    finally:
        os.close(fd)
    if size == 0:
        raise error(f"{what} {path} is empty" if not is_pipe else
                    f"{what} {path} is a pipe and nothing came out of it (nothing was writing to it)")
    return b"".join(chunks)
