"""The project's own exception types.

They are raised deep in the library and turned into a one-line message and an
exit code only at the CLI edge (``cli.py``). Each type carries its exit code.
"""

import errno
import os
import shlex
import signal
import subprocess
from contextlib import contextmanager
from pathlib import Path


class RmspropError(Exception):
    """Base of every error a user can cause or fix; the message is for them."""

    exit_code = 1
    label = "Error"


class ConfigError(RmspropError):
    """An invalid option or hyperparameter."""

    exit_code = 2


class DataError(RmspropError):
    """A dataset file that cannot be fetched, read, parsed or verified."""

    exit_code = 3


class DownloadError(DataError):
    """Every mirror failed for some file; the message lists what was tried."""


class ChecksumError(DataError):
    """A file's decompressed content does not have the published checksum."""


class CheckpointError(RmspropError):
    """A checkpoint that is missing, not ours, corrupt or from a newer version."""

    exit_code = 4


class OutputError(RmspropError):
    """A place we were asked to write to cannot be written."""

    exit_code = 5


class OutputBusy(OutputError):
    """Another live run holds the lock on the checkpoint we were asked to write.

    75 is EX_TEMPFAIL (sysexits.h): the same command can succeed once the other run ends."""

    exit_code = 75


def os_reason(e: OSError) -> str:
    """An OSError in a few words, naming a symbolic-link loop for what it is."""
    if e.errno == errno.ELOOP:
        return "a symbolic link loop (too many levels of symbolic links)"
    return (e.strerror or str(e) or type(e).__name__).lower()


@contextmanager
def path_errors(error: type, path, doing: str, hint: str = ""):
    """The one place an OSError on a user's path (a name too long, no permission, a
    symlink loop, a full or read-only disk) becomes `error` with one line that says
    what was being done to which path, instead of a traceback."""
    try:
        yield
    except OSError as e:
        raise error(f"cannot {doing} {path}: {os_reason(e)}" + (f"; {hint}" if hint else "")) from None


def shell_command(*args) -> str:
    """A command line the user can paste: each argument quoted for their shell
    (POSIX quoting; cmd.exe's rules on Windows), and a path (an os.PathLike
    argument) that starts with '-' written ./-path so that it is not read as an option."""
    args = [os.path.join(".", os.fspath(a)) if isinstance(a, os.PathLike) and os.fspath(a).startswith("-")
            else os.fspath(a) if isinstance(a, os.PathLike) else str(a) for a in args]
    if os.name == "nt":
        return subprocess.list2cmdline(args)
    return " ".join(shlex.quote(a) for a in args)


class DeviceError(RmspropError):
    """--device cuda on a machine where CUDA cannot be used; the message says why and what to do."""

    exit_code = 7


class TrainingDiverged(RmspropError):
    """The loss became NaN or infinite."""

    exit_code = 6

    def __init__(self, epoch: int, batch: int):
        self.epoch, self.batch = epoch, batch
        super().__init__(
            f"training diverged: the loss became NaN or infinite in epoch {epoch}, batch {batch}; "
            "try a smaller --lr"
        )


def stopped_by(signum: int) -> tuple[str, int]:
    """The label and exit code of a stop by this signal: 128 + its number, as a shell reports a death by it."""
    return ("Interrupted" if signum == signal.SIGINT else f"Terminated ({signal.Signals(signum).name})",
            128 + signum)


class Interrupted(RmspropError):
    """SIGINT (Ctrl-C), SIGTERM or SIGHUP stopped training; a loadable checkpoint was saved first.

    Exit code 130 for SIGINT, 143 for SIGTERM, 129 for SIGHUP.  With `evaluate` (the command that
    evaluates it), training had finished and only the test evaluation was skipped."""

    exit_code = 130

    label = "Interrupted"

    def __init__(self, path, epoch: int, batch: int, n_batches: int, signum: int = signal.SIGINT,
                 evaluate: str | None = None):
        self.path, self.signum = path, signum
        self.label, self.exit_code = stopped_by(signum)
        if evaluate is not None:
            super().__init__(f"stopped after the last epoch ({epoch - 1}), before the test evaluation: the trained "
                             f"model is saved to {path}, not evaluated; evaluate it with: {evaluate}")
            return
        where = f"after epoch {epoch - 1}" if batch == 0 else f"in epoch {epoch} after batch {batch} of {n_batches}"
        super().__init__(f"stopped {where}; saved to {path}; resume with: "
                         f"{shell_command('rmsprop', 'train', '--resume', Path(path))}")


class StoppedAtOnce(KeyboardInterrupt):
    """SIGINT, SIGTERM or SIGHUP before training started: nothing had been trained, so nothing is saved."""

    def __init__(self, signum: int):
        self.signum = signum
        self.label, self.exit_code = stopped_by(signum)
        super().__init__("stopped before training started; nothing was trained or saved")


class ImageError(DataError):
    """A user's image that cannot be read or holds no digit."""


class ClusterError(RmspropError):
    """The Dask scheduler of --scheduler cannot be reached, or its workers cannot run trials."""

    exit_code = 8


class SweepInterrupted(RmspropError):
    """SIGINT, SIGTERM or SIGHUP stopped a sweep: finished trials are kept, running ones saved
    their checkpoints, and the same command continues it (exit 130, 143 or 129)."""

    def __init__(self, folder, counts: dict, signum: int, again: str | None = None, table=None):
        self.folder, self.table = folder, table
        self.label, self.exit_code = stopped_by(signum)
        again = again or f"the same sweep with output {str(folder)!r}"
        super().__init__(f"sweep stopped: {counts['finished']} of {sum(counts.values())} trials finished, "
                         f"{counts['interrupted']} saved "
                         f"part-way and {counts['pending']} not started, in {folder}; continue it with: {again}")


class SweepWorkersDied(RmspropError):
    """The local worker processes died as they started, before any trial."""

    def __init__(self):
        super().__init__(
            "the sweep's worker processes died as they started, before any trial: a Python script that calls "
            "sweep() must do so under `if __name__ == \"__main__\":` (the workers are started afresh and import "
            "it), and cannot be read from standard input; see the errors above")
