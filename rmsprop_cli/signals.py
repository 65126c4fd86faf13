"""The signals that end a command early (SIGINT, SIGTERM, SIGHUP): taken as requests to stop
a run (StopSignals), or held while something must not be cut in half (signals_held).

Standard library only.
"""

from __future__ import annotations

import functools
import signal
import threading
from contextlib import contextmanager

from .errors import StoppedAtOnce


class StopSignals:
    """SIGINT (Ctrl-C), SIGTERM (timeout, docker stop, Slurm, systemd, CI runners) and
    SIGHUP (the terminal closed) as requests to stop, while the context is active.
    A signal that was ignored when it began (nohup, a background job) stays ignored.

    Until `training` is set, either stops at once (StoppedAtOnce, a KeyboardInterrupt):
    nothing is trained yet, so nothing is lost.  From the first batch on, the first
    one only records itself (`signum`); training polls the object between chunks (a
    compiled chunk cannot be interrupted anyway), saves the position reached and
    raises Interrupted.  Later ones are absorbed, so that no save, no bookkeeping
    and no final message is ever cut short; kill -9 remains the way to abort.
    Outside the main thread, where Python has no signal handlers, it never fires.

    With `then_ignore` (a process that ends with the command: the console script),
    the signals are ignored once the context ends instead of handed back: the work
    is done and reported, and a signal during the interpreter's shutdown (tens of
    milliseconds, with Numba loaded) would otherwise kill it with SIGINT's status.
    """

    SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))

    def __init__(self, then_ignore: bool = False):
        self.signum: int | None = None
        self.training = False
        self.then_ignore = then_ignore
        self._previous = {}

    def __call__(self) -> bool:
        return self.signum is not None

    def _handle(self, signum, frame):
        if not self.training:
            raise StoppedAtOnce(signum)
        if self.signum is None:
            self.signum = signum

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                if signal.getsignal(s) is not signal.SIG_IGN:
                    self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, signal.SIG_IGN if self.then_ignore else handler)
        self._previous.clear()


def stopped_by_signals(run):
    """run(stop=None) stops on SIGINT, SIGTERM and SIGHUP for its whole length (StopSignals)."""
    @functools.wraps(run)
    def wrapper(*args, stop=None, **kwargs):
        if stop is not None:
            return run(*args, stop=stop, **kwargs)
        with StopSignals() as signals:
            return run(*args, stop=signals, **kwargs)
    return wrapper


def signum_of(stop) -> int:
    """The signal that stopped the run (SIGINT when the stop came from a caller's function)."""
    return getattr(stop, "signum", None) or signal.SIGINT


@contextmanager
def signals_held():
    """SIGINT, SIGTERM and SIGHUP blocked (POSIX), to be delivered when the block ends."""
    held = set(StopSignals.SIGNALS)
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
