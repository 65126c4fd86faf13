"""Output files written safely: atomically (a temporary file beside, fsync, rename), under a
lock against a second writer, never over anything but our own kind of file, and with the
temporaries of writers that died removed.

Standard library only.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import stat
import sys
import tempfile
import time
from pathlib import Path

from . import paths
from .errors import OutputBusy, OutputError, os_reason, path_errors
from .signals import signals_held

try:
    import fcntl
except ImportError:  # Windows: no advisory locks (see OutputLock)
    fcntl = None


WRITE_HINT = "choose another --output"


def _hidden_prefix(path: Path) -> str:
    """`.{name}.`: how the hidden files that belong to `path` (its temporaries, its lock)
    begin, the name clipped so that they still fit the 255 bytes a file name may have."""
    name = os.fsencode(path.name)
    return "." + os.fsdecode(name[:255 - 40]) + "."


def _temporary(path: Path) -> tuple[int, str]:
    """A new temporary file beside `path` whose name carries this process's id:
    `.{name}.{pid}-{random}.tmp`, so that a later run can tell a dead writer's leftovers."""
    return tempfile.mkstemp(dir=path.parent, prefix=f"{_hidden_prefix(path)}{os.getpid()}-", suffix=".tmp")


def _temporary_pid(path: Path, name: str) -> int | None:
    """The writer's process id if `name` is one of `path`'s temporaries, else None."""
    prefix = _hidden_prefix(path)
    m = re.fullmatch(r"(\d+)-[a-z0-9_]{8}\.tmp", name[len(prefix):]) if name.startswith(prefix) else None
    return int(m[1]) if m else None


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):   # EPERM: alive, another user's; no such number: not ours to judge
        return True
    return True


def remove_dead_temporaries(path: Path) -> list[str]:
    """Delete the temporaries of `path` left by writers that died mid-write (kill -9,
    a crash, power loss): names of our pattern whose process is gone.  Call it only
    while holding `path`'s OutputLock, so that no live writer of it can exist
    (the lock is what also covers writers on other hosts sharing the folder).
    POSIX only: os.kill(pid, 0) would end the process on Windows.  Returns the names removed."""
    if os.name != "posix":
        return []
    removed = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return []
    for entry in entries:
        pid = _temporary_pid(path, entry.name)
        if pid is None or _alive(pid):
            continue
        try:
            if entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)
                removed.append(entry.name)
        except OSError:
            pass
    return removed


def _no_file_in_the_way(path: Path) -> None:
    """Refuse `path` when something that is not a folder (a file, a device) stands where one of
    the folders above it must be, naming it."""
    for above in (path.parent, *path.parent.parents):
        try:
            mode = os.stat(above).st_mode
        except FileNotFoundError:
            continue
        if not stat.S_ISDIR(mode):
            what = "a file" if stat.S_ISREG(mode) else paths.kind_of(mode)
            raise OutputError(f"cannot write {path}: {above} is {what}, not a folder; {WRITE_HINT}")
        return


def make_folder(path: Path) -> None:
    """The folder `path` goes in, made if missing; a file where a folder must be is named."""
    path = Path(path)
    with path_errors(OutputError, path, "write", WRITE_HINT):
        _no_file_in_the_way(path)
        path.parent.mkdir(parents=True, exist_ok=True)


def atomic_write(path: Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, fsync, then rename over it, so a
    crash at any moment leaves either the old file or the complete new one."""
    path = Path(path)
    make_folder(path)
    with path_errors(OutputError, path, "write", WRITE_HINT):
        fd, tmp = _temporary(path)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; the result should be like any file the user saves
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:  # an OSError, or a second Ctrl-C mid-write: never leave the temporary behind
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            error = OutputError(f"cannot write {path}: {e.strerror or e}; {WRITE_HINT}")
            error.reason = os_reason(e)   # for a caller that words its own message (train's periodic save)
            raise error from None
        raise
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (power loss, not just a killed process); POSIX only."""
    if os.name != "posix":
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class OutputLock:
    """An advisory lock on a checkpoint that a live run is writing (and on its metrics file).

    The lock is fcntl.flock on a hidden file beside the checkpoint, `.{name}.lock`:
    it belongs to the open file, so the kernel releases it when the process ends
    in any way, kill -9 included.  The file holds who took it (process id, host,
    start time, command), for the message a second writer gets.  It is removed
    on release, while still locked; a writer that locked a file since unlinked
    notices (another inode now has the name) and tries again.  Where flock is
    unavailable (Windows, or a file system that refuses it) nothing is locked.
    Signals wait while the lock is taken or given back, so that a Ctrl-C never
    leaves it half taken (held by a lost descriptor, or its file left behind).
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.lock_path = self.path.with_name(_hidden_prefix(self.path) + "lock")
        self.fd = None

    def acquire(self) -> "OutputLock":
        if fcntl is None:
            return self
        make_folder(self.path)
        with signals_held(), path_errors(OutputError, self.path, "write", WRITE_HINT):
            while True:
                fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    holder = _read_holder(fd)
                    os.close(fd)
                    raise OutputBusy(f"{self.path} is being written by another run ({holder}); wait for it "
                                     "to finish, or choose another --output") from None
                except OSError:  # no locks on this file system (some network mounts): go on unlocked
                    os.close(fd)
                    return self
                try:
                    same = os.path.samestat(os.fstat(fd), os.stat(self.lock_path))
                except FileNotFoundError:
                    same = False
                if same:
                    break
                os.close(fd)  # its last holder removed it between our open and our lock
            self.fd = fd
            holder = {"pid": os.getpid(), "host": socket.gethostname(),
                      "started": time.strftime("%Y-%m-%d %H:%M:%S"), "argv": ["rmsprop", *sys.argv[1:]]}
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps(holder).encode() + b"\n")
        return self

    def release(self) -> None:
        if self.fd is None:
            return
        with signals_held():
            try:
                os.unlink(self.lock_path)
            except OSError:
                pass
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


HOLDER_WAIT = 0.5   # seconds a refused run waits for the holder to write its name into the lock file


def _read_holder(fd: int) -> str:
    """Who holds a lock, from what they wrote into its file: 'pid 123 on host, since ...: command'.
    The holder writes it just after it takes the lock, so an empty or half-written file is read
    again for a moment (three runs started at once met that window) before saying it is unknown."""
    from .errors import shell_command

    deadline = time.monotonic() + HOLDER_WAIT
    while True:
        try:
            info = json.loads(os.pread(fd, 1 << 16, 0))
            return (f"pid {int(info['pid'])} on {info['host']}, since {info['started']}: "
                    f"{shell_command(*map(str, info['argv']))}")
        except Exception:  # not yet filled in, or damaged: say what we know once the moment is over
            if time.monotonic() >= deadline:
                return "its lock file does not say which"
            time.sleep(0.02)


def through_links(path: Path) -> Path:
    """The file a checkpoint path that is a symbolic link (or a chain of them) names, so that the
    lock and the atomic replace act on the real file and the link keeps pointing at it.  A dangling
    link is followed to the file it would name; its folder must exist (no folder is made for it)."""
    path = Path(path)
    with path_errors(OutputError, path, "write", WRITE_HINT):   # a name too long, a folder we may not read
        if not stat.S_ISLNK(_lstat_mode(path)):
            return path
        real = Path(os.path.realpath(path))
        if real.is_symlink():   # a loop: realpath gives up on it
            os.stat(path)
        folder = real.parent.is_dir()
    if not folder:
        raise OutputError(f"cannot write {path}: it is a symbolic link to {real}, whose folder does not exist; "
                          f"{WRITE_HINT}")
    return real


def _lstat_mode(path: Path) -> int:
    """The mode of `path` itself (not what a link names); 0 when nothing is there."""
    try:
        return os.lstat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return 0


def identity(path: Path) -> tuple | None:
    """Which file `path` names now (device, inode, size, modification time), None if it cannot
    be looked at: a save replaces the file, so any save changes it."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def check_replaceable(path: Path, what: str, looks_like) -> None:
    """Refuse to write `path` over anything but our own kind of output: a file
    there must be `what` (looks_like(open binary file) is true); a folder, a
    FIFO, a device or a user's own file of another kind is never replaced."""
    path = Path(path)
    with path_errors(OutputError, path, "write", WRITE_HINT):
        _no_file_in_the_way(path)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            raise OutputError(f"cannot write {path}: it is a folder; {WRITE_HINT}")
        if not stat.S_ISREG(st.st_mode):
            raise OutputError(f"cannot write {path}: it is {paths.kind_of(st.st_mode)}, not a file; {WRITE_HINT}")
        with open(path, "rb") as f:
            ours = looks_like(f)
    if not ours:
        raise OutputError(f"{path} exists and is not {what}; not replacing it: move it away or {WRITE_HINT}")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_writable(path: Path, size: int = 0) -> None:
    """Fail before training, not after it, when a checkpoint of about `size`
    bytes cannot be written: a folder in the way, no permission, a read-only
    file system, or too little free space (twice the size: the new file is
    written beside the old one before it replaces it)."""
    path = Path(path)
    with path_errors(OutputError, path, "write", WRITE_HINT):
        if path.is_dir():
            raise OutputError(f"cannot write checkpoint to {path}: it is a folder; "
                              "give a file name ending in .safetensors")
        make_folder(path)
        fd, probe = _temporary(path)
        os.close(fd)
        os.unlink(probe)
        free = shutil.disk_usage(path.parent).free
    if free < 2 * size:
        raise OutputError(f"cannot write checkpoint to {path}: {free / 2**20:.1f} MiB free there, "
                          f"{2 * size / 2**20:.1f} MiB needed; free some space or choose another --output")
