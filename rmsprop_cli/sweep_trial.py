"""One trial of a sweep, where it runs: in a local worker process or on a Dask worker.

A trial is `rmsprop train` (training.run) on one thread, into a temporary folder
of the worker's; its checkpoint comes back as bytes in the result, so that a
worker needs no file system in common with the sweep, and an interrupted trial
continues on any worker from the bytes it is sent.  It asks to stop through a
`stop` object polled between chunks (a file beside the sweep, locally; a Dask
Event, on a cluster), and then saves what it has trained like `train` does.
"""

from __future__ import annotations

import os
import signal
import socket
import tempfile
import time
from pathlib import Path


class StopFile:
    """Locally: stop once the sweep has created this file (a stat per chunk of batches)."""

    def __init__(self, path):
        self.path = str(path)

    def __call__(self) -> bool:
        return os.path.exists(self.path)


class StopEvent:
    """On a Dask cluster: stop once the sweep has set the distributed Event of this name.
    Asked at most every `every` seconds: each is a round trip to the scheduler."""

    def __init__(self, name: str, every: float = 0.2):
        self.name, self.every = name, every
        self._event, self._next, self._set = None, 0.0, False

    def __getstate__(self):
        return {"name": self.name, "every": self.every}

    def __setstate__(self, state):
        self.__init__(state["name"], state["every"])

    def __call__(self) -> bool:
        now = time.monotonic()
        if not self._set and now >= self._next:
            from distributed import Event

            if self._event is None:
                self._event = Event(self.name)
            self._set, self._next = self._event.is_set(), now + self.every
        return self._set


def init_worker() -> None:
    """A local worker process: Ctrl-C in the terminal reaches the whole process group, but
    the sweep (the parent) decides what stops, and tells its trials through StopFile."""
    for name in ("SIGINT", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)


def run_trial(task: dict) -> dict:
    """Train one trial.  task: name, options (training.run's), checkpoint (the bytes of an
    interrupted run of it, or None), device, data_dir, mirrors, stop.

    Returns {name, status, result, checkpoint, error, worker}: status finished (result: what
    `train --json` prints), interrupted (checkpoint: what it trained), diverged (error says
    where), failed (error says why) or not started (the sweep was stopping)."""
    from . import threads, training
    from .errors import Interrupted, RmspropError, TrainingDiverged

    out = {"name": task["name"], "status": "failed", "result": None, "checkpoint": None, "error": None,
           "worker": f"{socket.gethostname()}:{os.getpid()}"}
    stop = task.get("stop")
    if stop is not None and stop():
        out["status"] = "not started"
        return out
    threads.pin(1)   # one trial per core: threads that wait for each other lose to a neighbour's process
    with tempfile.TemporaryDirectory(prefix="rmsprop-trial-") as tmp:
        path = Path(tmp) / "model.safetensors"
        resume = None
        if task.get("checkpoint"):
            path.write_bytes(task["checkpoint"])
            resume = path
        try:
            out["result"] = training.run(task["options"], device=task.get("device", "cpu"),
                                         data_dir=task.get("data_dir"), mirrors=task.get("mirrors"), output=path,
                                         resume=resume, stop=stop or (lambda: False))
            out["status"] = "finished"
        except TrainingDiverged as e:
            out["status"], out["error"] = "diverged", str(e)
            out["diverged_at"] = {"epoch": e.epoch, "batch": e.batch}
        except Interrupted as e:
            out["status"], out["error"] = "interrupted", str(e)
        except RmspropError as e:
            out["error"] = str(e)
        except Exception as e:   # a bug, or the worker's machine: the sweep records it and goes on
            out["error"] = f"{type(e).__name__}: {e}"
        if out["status"] in ("finished", "interrupted") and path.exists():
            out["checkpoint"] = path.read_bytes()
    return out
