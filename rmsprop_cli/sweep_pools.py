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

    def __init__(self, folder: Path, workers: int):
        self.stop_path, self.workers = folder / ".stop", workers
        self.marks = folder / "trials" / ".running"
        self.stop_path.unlink(missing_ok=True)
        self.marks.mkdir(parents=True, exist_ok=True)
        self.executor = self._pool()

    def _pool(self):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with signals_held():
            return ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                       initializer=init_worker)

    def submit(self, task: dict):
        with signals_held():   # the pool spawns its processes as tasks come
            return self.executor.submit(run_trial, {**task, "marks": str(self.marks)})

    def stop_token(self):
        return StopFile(self.stop_path)

    def capacity(self) -> int:
        return self.workers

    def lost(self) -> tuple[list[str], bool]:
        """After the pool broke: the trials whose process died (from their marks), and whether any
        trial had started in it at all (if not, the processes died as they started)."""
        dead, started = [], False
        for mark in self.marks.iterdir():
            started = True
            try:
                pid = int(mark.read_text())
                os.kill(pid, 0)
            except (ValueError, OSError):
                dead.append(mark.name)
            mark.unlink(missing_ok=True)
        return dead, started

    def renew(self):
        """A new pool, after one of its processes died and broke the pool.  The pool's other processes
        ignore its SIGTERM (init_worker) and cannot hand back what they train: they are killed."""
        for process in list((getattr(self.executor, "_processes", None) or {}).values()):
            if process.is_alive():
                process.kill()
            process.join(timeout=10)
        self.executor.shutdown(wait=False, cancel_futures=True)
        for mark in self.marks.iterdir():
            mark.unlink(missing_ok=True)
        self.executor = self._pool()

    def request_stop(self):
        self.stop_path.touch()

    def close(self):
        self.executor.shutdown(wait=True, cancel_futures=True)
        self.stop_path.unlink(missing_ok=True)
        try:
            self.marks.rmdir()
        except OSError:
            pass


class Cluster:
    """An existing Dask cluster: its scheduler's address, its workers' threads."""

    # Not cancelled: Client.get_executor()'s futures never say that they run, and cancelling a running task
    # would drop what it saves; a task that starts after the stop returns at once, "not started".
    cancels = False

    def __init__(self, address: str):
        try:
            import distributed
        except ImportError:
            raise ConfigError("--scheduler needs Dask's distributed: pip install 'rmsprop-cli[cluster]'") from None
        import logging

        # The client's own log (a lost connection, its retries) would be tracebacks on the user's terminal;
        # what goes wrong is said in one line instead (ClusterError), and the workers keep their logs.
        logging.getLogger("distributed").setLevel(logging.CRITICAL)
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
        """The cluster's threads now (workers may join or leave during a sweep); the last count known
        while the scheduler does not answer (the trials' futures then say what happened)."""
        try:
            self._threads = max(1, sum(self.client.nthreads().values()))
        except Exception:
            pass
        return getattr(self, "_threads", 1)

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
