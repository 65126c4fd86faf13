"""Where a sweep's trials run, behind one interface (submit, capacity, stop_token, request_stop,
close): Local, worker processes on this machine; Cluster, an existing Dask cluster through
Client.get_executor().  Both are concurrent.futures Executors underneath."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from .errors import ClusterError, ConfigError
from .signals import signals_held
from .sweep_trial import StopEvent, StopFile, init_worker, run_trial


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class Local:
    """Worker processes on this machine, spawned (a fork would copy Numba's threads' state), with
    SIGINT, SIGTERM and SIGHUP blocked while they start: a signal to the process group (Ctrl-C,
    `timeout`, Slurm) is then the sweep's alone, and multiprocessing's resource tracker, which does
    not ignore SIGHUP, is not killed by it."""

    cancels = True   # a future that has not started can be cancelled; a running one cannot
    GRACE = None     # and the running ones always end: the stop file reaches them

    def __init__(self, folder: Path, workers: int):
        from .errors import OutputError, path_errors

        self.stop_path, self.workers = folder / ".rmsprop-sweep-stop", workers
        self.marks = folder / "trials" / ".running"
        with path_errors(OutputError, self.marks, "make"):
            self.stop_path.unlink(missing_ok=True)
            self.marks.mkdir(parents=True, exist_ok=True)
            self._clear_marks()   # those of a sweep that was killed
        self.executor = self._pool()

    def _clear_marks(self):
        for mark in self.marks.iterdir():
            mark.unlink(missing_ok=True)

    def _pool(self):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with signals_held():
            return ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                       initializer=init_worker)

    def _processes(self) -> dict:
        return dict(getattr(self.executor, "_processes", None) or {})

    def submit(self, task: dict):
        with signals_held():   # the pool spawns its processes as tasks come
            return self.executor.submit(run_trial, {**task, "marks": str(self.marks)})

    def stop_token(self):
        return StopFile(self.stop_path)

    def capacity(self) -> int:
        return self.workers

    def lost(self) -> tuple[list[str], bool]:
        """After the pool broke: the trials whose process died (their marks name a process of the pool
        that is gone), and whether any trial had started in it."""
        processes = self._processes()
        dead, started = [], False
        for mark in self.marks.iterdir():
            started = True
            try:
                pid = int(mark.read_text())
            except (ValueError, OSError):
                pid = None
            if pid not in processes or _gone(pid):
                dead.append(mark.name)
        return dead, started

    def renew(self):
        """A new pool, after one of its processes died and broke the pool."""
        self._end_broken()
        self.executor = self._pool()

    def _end_broken(self):
        """The pool's other processes ignore the SIGTERM a broken pool sends them (init_worker) and
        cannot hand back what they train: they are killed, and the pool let go."""
        for process in self._processes().values():
            if process.is_alive():
                process.kill()
            process.join(timeout=10)
        self.executor.shutdown(wait=False, cancel_futures=True)
        self._clear_marks()

    def request_stop(self):
        self.stop_path.touch()

    def close(self):
        if getattr(self.executor, "_broken", False):
            self._end_broken()
        else:
            self.executor.shutdown(wait=True, cancel_futures=True)
        self.stop_path.unlink(missing_ok=True)
        try:
            self._clear_marks()
            self.marks.rmdir()
        except OSError:
            pass


def _gone(pid: int) -> bool:
    """Whether a process has died: no longer there, or a zombie not yet reaped.  (Not Process.is_alive:
    the pool's own thread may be reaping it at that moment, and then is_alive says it lives.)"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return False


class Cluster:
    """An existing Dask cluster: its scheduler's address, its workers' threads."""

    # Not cancelled at once: Client.get_executor()'s futures never say that they run, and cancelling a
    # running task would drop what it saves; a task that starts after the stop returns at once, "not
    # started".  A trial that has trained stops within a chunk of batches, so what is still out GRACE
    # seconds after the stop is waiting for a worker (none may come), or still starting: it is cancelled.
    cancels = False
    GRACE = 10.0

    def __init__(self, address: str):
        try:
            import distributed
        except ImportError:
            raise ConfigError("--scheduler needs Dask's distributed: pip install 'rmsprop-cli[cluster]'") from None
        import logging

        # The client's own log (a lost connection, its retries) would be tracebacks on the user's terminal;
        # what goes wrong is said in one line instead (ClusterError), and the workers keep their logs.
        for name in ["distributed", *(n for n in logging.root.manager.loggerDict if n.startswith("distributed."))]:
            logging.getLogger(name).setLevel(logging.CRITICAL)
        try:
            self.client = distributed.Client(address, timeout="5s", set_as_default=False)
        except Exception as e:   # refused, timed out, a TLS address without Dask's security settings
            raise ClusterError(f"cannot reach the Dask scheduler at {address}: {str(e) or type(e).__name__}; "
                               "check the address and that the scheduler is running (dask scheduler)") from None
        from importlib.metadata import version

        from . import __version__

        try:   # every worker, now: a missing package is one line, not a thousand failed trials
            versions = self.client.run(version, "rmsprop-cli", on_error="return")
        except Exception as e:
            self.client.close()
            raise ClusterError(f"the Dask workers at {address} cannot run trials: {e}") from None
        wrong = {w: v for w, v in versions.items() if v != __version__}
        if wrong:
            self.client.close()
            worker, v = next(iter(wrong.items()))
            has = f"rmsprop-cli {v}" if isinstance(v, str) else "no rmsprop-cli"
            raise ClusterError(f"Dask worker {worker} has {has}, and this sweep needs rmsprop-cli {__version__}: "
                               "install it on every worker (pip install rmsprop-cli)")
        self.executor = self.client.get_executor()
        self.event = distributed.Event(f"rmsprop-sweep-stop-{uuid.uuid4().hex}", client=self.client)

    def submit(self, task: dict):
        return self.executor.submit(run_trial, task)

    def capacity(self) -> int:
        """The cluster's threads now (workers may join or leave during a sweep; 0: none yet); the last
        count known while the scheduler does not answer (the trials' futures then say what happened)."""
        try:
            self._threads = sum(self.client.nthreads().values())
        except Exception:
            pass
        return getattr(self, "_threads", 0)

    def stop_token(self):
        return StopEvent(self.event.name)

    def request_stop(self):
        try:
            self.event.set()
        except Exception:   # the scheduler gone: its trials stop with it
            pass

    def close(self):
        try:
            self.client.close(timeout=5)
        except Exception:
            pass


def check_scheduler(address: str) -> None:
    """tcp://host:port or tls://host:port, as Dask's scheduler prints it."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(address)
        ok = parts.scheme in ("tcp", "tls") and parts.hostname and parts.port
    except ValueError:
        ok = False
    if not ok:
        raise ConfigError(f"--scheduler takes the address a Dask scheduler prints, such as tcp://10.0.0.5:8786; "
                          f"got {address!r}")
