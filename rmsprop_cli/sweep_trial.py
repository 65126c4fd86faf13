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
import threading
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
    """A local worker process: Ctrl-C in the terminal, `timeout` and Slurm signal the whole process
    group, but the sweep (the parent) decides what stops, and tells its trials through StopFile; a
    worker whose sweep is gone exits.
    The parent spawns workers with these signals blocked (sweeps._Local), so that none is lost in
    between: ignored here, then unblocked."""
    parent = os.getppid()

    def orphaned():   # the sweep killed (SIGKILL): no one would take a result, and the pool's pipes never drain
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=orphaned, name="rmsprop-sweep-parent", daemon=True).start()
    names = [n for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n)]
    for name in names:
        signal.signal(getattr(signal, name), signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [getattr(signal, n) for n in names])


def _mark(task: dict, running: bool) -> None:
    """Locally, trials/.running/<name> holds the pid of the process training it: when a worker process
    dies, the sweep can tell which trial it took with it."""
    folder = task.get("marks")
    if not folder:
        return
    path = Path(folder) / task["name"]
    try:
        if running:
            path.write_text(str(os.getpid()))
        else:
            path.unlink(missing_ok=True)
    except OSError:
        pass


def _finished(path: Path, task: dict) -> dict | None:
    """What `train --json` prints for a checkpoint that has trained all its epochs (a trial stopped
    after its last chunk, before its test evaluation; or one whose record was lost): its test scores,
    from the checkpoint, or evaluated as `rmsprop evaluate` does, which gives train's exact numbers."""
    from . import checkpoint, inference

    ckpt = checkpoint.load(path)
    if len(ckpt.history) < ckpt.recipe.epochs or "early_stopping" in ckpt.info:
        return None
    info = ckpt.info
    if "test_accuracy" not in info:
        scored = inference.evaluate(path, device=task.get("device", "cpu"), data_dir=task.get("data_dir"),
                                    mirrors=task.get("mirrors"), limit=ckpt.recipe.limit)
        info = {**info, "test_accuracy": scored["test_accuracy"], "test_loss": scored["test_loss"]}
    return {"test_accuracy": info["test_accuracy"], "test_loss": info["test_loss"], "checkpoint": str(path),
            "device": info.get("device", "cpu"), "epochs": ckpt.history, "recipe": ckpt.recipe.to_dict()}


def run_trial(task: dict) -> dict:
    """Train one trial.  task: name, options (training.run's), checkpoint (the bytes of an
    interrupted run of it, or None), device, data_dir, mirrors, stop.

    Returns {name, status, result, checkpoint, error, worker}: status finished (result: what
    `train --json` prints), interrupted (checkpoint: what it trained), diverged (error says
    where), failed (error says why) or not started (the sweep was stopping)."""
    from . import threads, training
    from .errors import Interrupted, RmspropError, TrainingDiverged

    out = {"name": task["name"], "status": "failed", "result": None, "checkpoint": None, "error": None,
           "worker": f"{socket.gethostname()}:{os.getpid()}", "epochs_trained": 0}
    stop = task.get("stop")
    if stop is not None and stop():
        out["status"] = "not started"
        return out
    threads.pin(1)   # one trial per core: threads that wait for each other lose to a neighbour's process
    _mark(task, True)
    with tempfile.TemporaryDirectory(prefix="rmsprop-trial-") as tmp:
        path = Path(tmp) / "model.safetensors"
        out["temporary"] = str(path)   # the sweep names its own copy instead, in messages
        resume = None
        try:
            if task.get("checkpoint"):
                path.write_bytes(task["checkpoint"])
                resume = path
                out["result"] = _finished(path, task)
            if out["result"] is None:
                out["result"] = training.run(task["options"], device=task.get("device", "cpu"),
                                             data_dir=task.get("data_dir"), mirrors=task.get("mirrors"),
                                             output=path, resume=resume, stop=stop or (lambda: False))
            out["status"] = "finished"
        except TrainingDiverged as e:
            out["status"], out["error"] = "diverged", str(e)
            out["diverged_at"] = {"epoch": e.epoch, "batch": e.batch}
        except Interrupted:
            out["status"] = "interrupted"
        except RmspropError as e:
            out["error"] = str(e)
        except Exception as e:   # a bug, or the worker's machine: the sweep records it and goes on
            out["error"] = f"{type(e).__name__}: {e}"
        if out["status"] in ("finished", "interrupted") and path.exists():
            out["checkpoint"] = path.read_bytes()
            if out["status"] == "interrupted":
                from . import checkpoint

                out["epochs_trained"] = len(checkpoint.load(path).history)
    _mark(task, False)
    return out
