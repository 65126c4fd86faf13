"""`rmsprop sweep`: every trial of a grid, run side by side on a concurrent.futures
Executor (local worker processes, one thread each, or a Dask cluster's
Client.get_executor(): one code path), recorded as each ends so that the same
command run again skips finished trials, continues interrupted ones from their
checkpoints and reruns failed ones.

The sweep folder holds trials/<name>.safetensors (with <name>.metrics.csv) and
trials/<name>.json (the trial's status and row) for every trial, written here
and only here, atomically; then sweep.json, sweep.csv and sweep.png.
"""

from __future__ import annotations

import json
import os
import uuid
from concurrent.futures import FIRST_COMPLETED, CancelledError, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from . import files
from .errors import ClusterError, ConfigError, OutputError, SweepInterrupted, path_errors
from .grid import Trial, expand, train_options
from .outputs import new_folder, strict_json, write_metrics
from .signals import signum_of, stopped_by_signals
from .sweep_table import SweepTable, trial_row
from .sweep_trial import StopEvent, StopFile, init_worker, run_trial

RETRIES = 2   # a trial whose local worker process died (killed, out of memory) is run again this often
SWEEP_JSON = "sweep.json"


def _record_path(folder: Path, name: str) -> Path:
    return folder / "trials" / f"{name}.json"


def _checkpoint_path(folder: Path, name: str) -> Path:
    return folder / "trials" / f"{name}.safetensors"


def _read_record(folder: Path, trial: Trial) -> dict | None:
    try:
        record = json.loads(_record_path(folder, trial.name).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("recipe") == trial.recipe.to_dict() else None


def plan(folder: Path, trials: list[Trial]) -> tuple[dict[str, dict], dict[str, bytes | None]]:
    """What the folder already holds: ({name: row} of the trials that are done, finished with their
    checkpoint or diverged (which a rerun would repeat exactly)), and {name: checkpoint bytes or None}
    of those to run, an interrupted trial from its checkpoint and a failed one from the start."""
    done, todo = {}, {}
    for trial in trials:
        record = _read_record(folder, trial)
        ckpt = _checkpoint_path(folder, trial.name)
        status = record["status"] if record else None
        if status == "diverged" or (status == "finished" and ckpt.is_file()):
            done[trial.name] = record
            continue
        resume = None
        if status != "failed" and ckpt.is_file():
            with path_errors(OutputError, ckpt, "read"):
                resume = ckpt.read_bytes()
        todo[trial.name] = resume
    return done, todo


def _save(folder: Path, trial: Trial, outcome: dict) -> dict:
    """An ended trial into the folder: its checkpoint and metrics (if it has one), then its record."""
    ckpt = _checkpoint_path(folder, trial.name)
    kept = outcome.get("checkpoint") is not None
    if kept:
        files.atomic_write(ckpt, outcome["checkpoint"])
        if outcome["result"] is not None:
            write_metrics(ckpt, outcome["result"]["epochs"])
    row = trial_row(trial, outcome["status"], outcome.get("result"), checkpoint=ckpt if kept else None,
                    error=outcome.get("error"), worker=outcome.get("worker"), diverged_at=outcome.get("diverged_at"))
    files.atomic_write(_record_path(folder, trial.name), json.dumps(row).encode())
    return row


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class _Local:
    """Worker processes on this machine, spawned (a fork would copy Numba's threads' state)."""

    cancels = True   # a future that has not started can be cancelled; a running one cannot

    def __init__(self, folder: Path, workers: int):
        self.stop_path, self.workers = folder / ".stop", workers
        self.stop_path.unlink(missing_ok=True)
        self.executor = self._pool()

    def _pool(self):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        return ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=init_worker)

    def stop_token(self):
        return StopFile(self.stop_path)

    def renew(self):
        """A new pool, after one of its processes died and broke the pool."""
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.executor = self._pool()

    def request_stop(self):
        self.stop_path.touch()

    def close(self):
        self.executor.shutdown(wait=True, cancel_futures=True)
        self.stop_path.unlink(missing_ok=True)


class _Cluster:
    """An existing Dask cluster: its scheduler's address, its workers' threads."""

    # Not cancelled: Client.get_executor()'s futures never say that they run, and cancelling a running task
    # would drop what it saves; a task that starts after the stop returns at once, "not started".
    cancels = False

    def __init__(self, address: str):
        try:
            import distributed
        except ImportError:
            raise ConfigError("--scheduler needs Dask's distributed: pip install 'rmsprop-cli[cluster]'") from None
        try:
            self.client = distributed.Client(address, timeout="5s", set_as_default=False)
        except (OSError, TimeoutError, ValueError) as e:
            raise ClusterError(f"cannot reach the Dask scheduler at {address}: {e}; check the address and that "
                               "the scheduler is running (dask scheduler)") from None
        try:
            versions = self.client.run(_installed)   # every worker, now: a missing package is one line, not N trials
        except Exception as e:
            self.client.close()
            raise ClusterError(f"the Dask workers at {address} cannot run trials: {e}") from None
        from . import __version__

        wrong = {w: v for w, v in versions.items() if v != __version__}
        if wrong:
            self.client.close()
            worker, version = next(iter(wrong.items()))
            raise ClusterError(f"Dask worker {worker} has rmsprop-cli {version or 'not installed'}, this sweep "
                               f"{__version__}: install the same version on every worker")
        self.workers = max(1, sum(self.client.nthreads().values()))
        self.executor = self.client.get_executor()
        self.event = distributed.Event(f"rmsprop-sweep-stop-{uuid.uuid4().hex}", client=self.client)

    def stop_token(self):
        return StopEvent(self.event.name)

    def renew(self):   # Dask reschedules the tasks of a lost worker itself
        pass

    def request_stop(self):
        self.event.set()

    def close(self):
        self.client.close()


def _installed():
    """On a worker: the rmsprop-cli version installed there, or None.  Sent by value (cloudpickle)."""
    try:
        import rmsprop_cli
    except ImportError:
        return None
    return rmsprop_cli.__version__


@stopped_by_signals
def sweep(grid: dict[str, list], *, seeds: list[int] = (0,), fixed: dict | None = None, output: Path | None = None,
          scheduler: str | None = None, workers: int | None = None, device: str = "cpu", data_dir=None,
          mirrors=None, reporter=None, progress=None, again=None, stop=None) -> SweepTable:
    """Train every trial of the grids (parsed: {field: [values]}) over the seeds, with `fixed` the other
    options (None: not given), into the folder `output` (default: a new runs/<time>-sweep-<names>).

    Trials run `workers` at a time (default: one per core) in local processes, or on the Dask cluster
    whose scheduler is at `scheduler`.  progress(counts, total) is called as trials end.  On a stop
    (SIGINT, SIGTERM, SIGHUP by default), running trials save what they trained and SweepInterrupted
    is raised, saying to run `again` (the command, or a function of the folder giving it) to continue."""
    from .bounds import check_option

    fixed = dict(fixed or {})
    check_option("workers", workers)
    trials = expand(grid, fixed, list(seeds))
    if scheduler is not None and workers is not None:
        raise ConfigError("--workers is for a local sweep; a Dask cluster runs as many trials as its workers have threads")
    folder = Path(output) if output is not None else new_folder("sweep-" + ("-".join(grid) or "seeds"))
    try:
        return _sweep(folder, trials, grid, seeds, fixed, scheduler, workers, device, data_dir, mirrors, reporter,
                      progress, again, stop)
    finally:
        if output is None:   # a folder made for this sweep: gone if it was left empty (MNIST unreachable)
            try:
                os.rmdir(folder)
            except OSError:
                pass


def _sweep(folder, trials, grid, seeds, fixed, scheduler, workers, device, data_dir, mirrors, reporter, progress,
           again, stop) -> SweepTable:
    summary = folder / SWEEP_JSON
    files.make_folder(summary)
    files.check_replaceable(summary, "a sweep.json that rmsprop sweep wrote", lambda f: f.read(9) == b'{"grid": ')
    with files.OutputLock(summary):
        done, todo = plan(folder, trials)
        rows = dict(done)
        by_name = {t.name: t for t in trials}
        stopped = False
        if todo:
            if scheduler is None:   # fetched and verified once, here, rather than by every worker at once
                from . import data

                data.fetch(data.MNIST_FILES.values(), data_dir, mirrors, reporter)
            stopped = _run(folder, [by_name[n] for n in todo], todo, rows, scheduler, workers, device, data_dir,
                           mirrors, progress, stop, len(trials))
        table = _finish(folder, trials, rows, grid, seeds, fixed, figure=not stopped)
        if stopped:
            raise SweepInterrupted(folder, table.counts, signum_of(stop), again(folder) if callable(again) else again,
                                   table)
        return table


def _run(folder, trials, checkpoints, rows, scheduler, workers, device, data_dir, mirrors, progress, stop,
         total) -> bool:
    """Run the trials to their end, or until stop() (then: True)."""
    if hasattr(stop, "training"):
        stop.training = True   # from here a signal is a request: trials save what they have trained
    where = _Local(folder, min(workers or _cores(), len(trials))) if scheduler is None else _Cluster(scheduler)
    token = where.stop_token()
    pending, stopping = {}, False
    strikes = {t.name: 0 for t in trials}
    generation = 0

    def submit(trial, checkpoint):
        task = {"name": trial.name, "options": train_options(trial.recipe), "checkpoint": checkpoint,
                "device": device, "data_dir": data_dir, "mirrors": mirrors, "stop": token}
        pending[where.executor.submit(run_trial, task)] = (trial, generation)

    def report():
        if progress is not None:
            counts = {s: sum(r["status"] == s for r in rows.values())
                      for s in ("finished", "diverged", "failed", "interrupted")}
            progress(counts, total, min(len(pending), where.workers))

    try:
        for trial in trials:
            submit(trial, checkpoints[trial.name])
        report()
        while pending:
            finished, _ = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            for future in finished:
                trial, gen = pending.pop(future)
                try:
                    outcome = future.result()
                except CancelledError:
                    continue
                except BrokenProcessPool:
                    strikes[trial.name] += 1
                    if gen == generation:
                        where.renew()
                        generation += 1
                    if strikes[trial.name] <= RETRIES and not stopping:
                        submit(trial, checkpoints[trial.name])
                    elif not stopping:
                        rows[trial.name] = _save(folder, trial, {
                            "status": "failed", "result": None,
                            "error": f"its worker process died {strikes[trial.name]} times (killed, or out of memory)"})
                    continue
                except Exception as e:   # from the cluster: a worker lost too often (KilledWorker), a lost connection
                    outcome = {"status": "failed", "result": None, "error": f"{type(e).__name__}: {e}"}
                if outcome["status"] != "not started":
                    rows[trial.name] = _save(folder, trial, outcome)
                if outcome["status"] == "interrupted":
                    checkpoints[trial.name] = outcome["checkpoint"]
            if stop is not None and stop() and not stopping:
                stopping = True
                where.request_stop()
                for future in list(pending) if where.cancels else ():
                    if future.cancel():
                        pending.pop(future)
            report()
    finally:
        where.close()
    return stopping


def _finish(folder, trials, rows, grid, seeds, fixed, figure=True) -> SweepTable:
    """sweep.json, sweep.csv and (unless stopped) the figure, from every trial's row (pending: not run yet)."""
    table = SweepTable([rows.get(t.name) or trial_row(t, "pending") for t in trials], grid=grid, seeds=list(seeds),
                       fixed={k: v for k, v in fixed.items() if v is not None and v is not False}, folder=folder)
    files.atomic_write(folder / "sweep.csv", table.to_csv().encode())
    if grid and figure:
        from .plots_sweep import plot_sweep

        try:
            table.figure = plot_sweep(table, folder / "sweep.png")
        except ConfigError as e:   # matplotlib is an optional extra: the table still stands
            table.figure_note = str(e)
        except OutputError as e:
            table.figure_note, table.figure_error = str(e), e
    files.atomic_write(folder / SWEEP_JSON, strict_json(table.to_dict()).encode())
    return table
