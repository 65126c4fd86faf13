"""`rmsprop sweep`: every trial of a grid, run side by side on a concurrent.futures
Executor (local worker processes, one thread each, or a Dask cluster's
Client.get_executor(): one code path, sweep_pools.py), recorded as each ends
(sweep_records.py) so that the same command run again skips finished trials,
continues interrupted ones from their checkpoints and reruns failed ones; then
sweep.json, sweep.csv and sweep.png."""

from __future__ import annotations

import os
import time
from concurrent.futures import FIRST_COMPLETED, CancelledError, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace
from pathlib import Path

from . import files
from .errors import ClusterError, ConfigError, OutputError, SweepInterrupted, SweepWorkersDied, path_errors
from .grid import Trial, expand, train_options
from .outputs import new_folder, strict_json
from .signals import signum_of, stopped_by_signals
from .sweep_table import SweepTable, trial_row
from .sweep_pools import Cluster, Local, check_scheduler, cores
from .sweep_records import _checkpoint_path, _read_record, _save, plan

RETRIES = 2   # a trial whose local worker process died (killed, out of memory) is run again this often
STARTS = 3    # local pools in a row whose processes die before any trial starts: they cannot start
SWEEP_JSON = "sweep.json"


@stopped_by_signals
def sweep(grid: dict[str, list], *, seeds: list[int] = (0,), fixed: dict | None = None, output: Path | None = None,
          scheduler: str | None = None, workers: int | None = None, device: str = "cpu", data_dir=None,
          mirrors=None, reporter=None, progress=None, again=None, stop=None) -> SweepTable:
    """Train every trial of the grids (parsed: {field: [values]}) over the seeds, with `fixed` the other
    options (None: not given), into the folder `output` (default: a new runs/<time>-sweep-<names>).

    Trials run `workers` at a time (default: one per core, fewer if memory holds fewer) in local
    processes, or on the Dask cluster whose scheduler is at `scheduler`.  progress(counts, total,
    running) is called as trials end.  On a stop (SIGINT, SIGTERM, SIGHUP by default), running trials
    save what they trained and SweepInterrupted is raised, saying to run `again` (the command, or a
    function of the folder giving it) to continue."""
    from .bounds import check_option

    fixed = dict(fixed or {})
    check_option("workers", workers)
    trials = expand(grid, fixed, list(seeds))
    if scheduler is not None:
        check_scheduler(scheduler)
        if workers is not None:
            raise ConfigError("--workers is for a local sweep; a Dask cluster runs as many trials as its workers "
                              "have threads")
    else:
        from .backends import resolve_device

        device, _ = resolve_device(device)   # here, not in every trial
        workers = _fitting(trials, workers or cores())
    if output is not None and Path(output).suffix.lower() in (".safetensors", ".png", ".csv", ".json"):
        raise ConfigError(f"--output {output}: a sweep's output is a folder, to hold sweep.json, sweep.csv, sweep.png "
                          "and trials/")
    folder = Path(output) if output is not None else new_folder("sweep-" + ("-".join(grid) or "seeds"))
    try:
        return _sweep(folder, trials, grid, seeds, fixed, scheduler, workers, device, data_dir, mirrors, reporter,
                      progress, again, stop)
    finally:
        if output is None:   # a folder made for this sweep: gone if it was left empty (MNIST unreachable)
            for empty in (folder / "trials", folder):
                try:
                    os.rmdir(empty)
                except OSError:
                    pass


def _fitting(trials: list[Trial], workers: int) -> int:
    """Local workers: no more than memory holds side by side; a trial that alone does not fit is refused."""
    from . import memory
    from .optim import Optimizer

    need = 0
    for recipe in {replace(t.recipe, seed=0) for t in trials}:   # every option counts (clip_norm, limit, ...)
        n_buffers = len(Optimizer(recipe, 1).state_names)
        memory.check_training(recipe, n_buffers)
        need = max(need, memory.training_bytes(recipe, n_buffers, threads=1))
    avail = memory.available()
    return max(1, min(workers, avail // need)) if avail else workers


def _sweep(folder, trials, grid, seeds, fixed, scheduler, workers, device, data_dir, mirrors, reporter, progress,
           again, stop) -> SweepTable:
    summary, table_csv = files.through_links(folder / SWEEP_JSON), files.through_links(folder / "sweep.csv")
    files.make_folder(summary)
    files.check_replaceable(summary, "a sweep.json that rmsprop sweep wrote", lambda f: f.read(9) == b'{"grid": ')
    files.check_replaceable(table_csv, "a sweep.csv that rmsprop sweep wrote",
                            lambda f: b",seed,status,final_val_accuracy," in b"," + f.readline(4096))
    if grid:
        from .plots import is_png

        files.check_replaceable(files.through_links(folder / "sweep.png"), "a PNG image", is_png)
    with files.OutputLock(summary):
        files.check_writable(folder / "trials" / "x.safetensors")   # before any trial, not after the first
        done, todo = plan(folder, trials)
        rows = dict(done)
        by_name = {t.name: t for t in trials}
        for name in todo:   # saved part-way: so it says until it runs again (a stop may come first)
            record = _read_record(folder, by_name[name]) if todo[name] is not None else None
            if record is not None and record["status"] == "interrupted":
                rows[name] = record
        stopped = False
        if todo:
            if scheduler is None:   # fetched and verified once, here, rather than by every worker at once
                from . import data

                data.fetch(data.MNIST_FILES.values(), data_dir, mirrors, reporter)
            where = Local(folder, min(workers, len(todo))) if scheduler is None else Cluster(scheduler)
            stopped = _run(folder, where, [by_name[n] for n in todo], todo, rows,
                           dict(device=device, data_dir=data_dir, mirrors=mirrors), progress, stop, len(trials))
        table = _finish(folder, trials, rows, grid, seeds, fixed, figure=not stopped, paths=(summary, table_csv))
        if stopped:
            raise SweepInterrupted(folder, table.counts, signum_of(stop), again(folder) if callable(again) else again,
                                   table)
        return table


def _run(folder, where, trials, checkpoints, rows, common, progress, stop, total) -> bool:
    """Run the trials to their end, or until stop(): then True, unless every trial had ended anyway.

    At most twice the workers' threads are submitted at a time, so that a checkpoint to continue from
    is read only when its trial is sent, and a cluster that grows gets more."""
    if hasattr(stop, "training"):
        stop.training = True   # from here a signal is a request: trials save what they have trained
    token = where.stop_token()
    queue = list(reversed(trials))
    pending, stopping = {}, False
    strikes = {t.name: 0 for t in trials}
    generation, empty = 0, 0   # pools made; pools in a row that broke before any trial started

    def submit(trial):
        path = checkpoints[trial.name]
        with path_errors(OutputError, path, "read"):
            data = path.read_bytes() if path is not None else None
        task = {"name": trial.name, "options": train_options(trial.recipe), "checkpoint": data, "stop": token,
                **common}
        pending[where.submit(task)] = (trial, generation)

    def report():
        if progress is not None:
            counts = {s: sum(r["status"] == s for r in rows.values())
                      for s in ("finished", "diverged", "failed", "interrupted")}
            progress(counts, total, min(len(pending), where.capacity()))

    def broken(trial, gen):
        """The local pool lost a process: the trial that ran in it has a strike; every trial of the pool
        is sent again (the pool ended them all), each from its last saved checkpoint."""
        nonlocal generation, empty
        if gen == generation:
            dead, started = where.lost()
            empty = 0 if started else empty + 1
            if empty >= STARTS:   # pool after pool died before any trial began in it
                raise SweepWorkersDied()
            for name in dead:
                if name in strikes:   # a mark of this sweep's
                    strikes[name] += 1
            where.renew()
            generation += 1
        if stopping:
            return
        if strikes[trial.name] <= RETRIES:
            queue.append(trial)
        else:
            rows[trial.name] = _save(folder, trial, {
                "status": "failed", "result": None,
                "error": f"its worker process died {strikes[trial.name]} times (killed, or out of memory)"})

    def take(future):
        trial, gen = pending.pop(future)
        try:
            outcome = future.result()
        except CancelledError:
            if not stopping:   # not ours: the cluster dropped it (its scheduler gone)
                raise ClusterError("the Dask scheduler stopped answering, or dropped the trials; the trials "
                                   f"that ended are saved in {folder}: run the same command again, with a "
                                   "scheduler that is up, to continue") from None
            return
        except BrokenProcessPool:
            broken(trial, gen)
            return
        except Exception as e:   # from the cluster: a worker lost too often (KilledWorker), a lost connection
            outcome = {"status": "failed", "result": None, "error": f"{type(e).__name__}: {e}"}
        if outcome["status"] != "not started":
            rows[trial.name] = _save(folder, trial, outcome)
        if outcome["status"] == "interrupted":
            checkpoints[trial.name] = _checkpoint_path(folder, trial.name)

    stopped_at = None
    try:
        while pending or (queue and not stopping):
            window = 2 * max(1, where.capacity())   # asked once a round: on a cluster, a round trip
            while queue and not stopping and len(pending) < window:
                submit(queue.pop())
            report()
            finished, _ = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            for future in finished:
                take(future)
            if stop is not None and stop() and not stopping:
                stopping, stopped_at = True, time.monotonic()
                where.request_stop()
                for future in list(pending) if where.cancels else ():
                    if future.cancel():
                        pending.pop(future)
            if stopping and where.GRACE is not None and time.monotonic() - stopped_at > where.GRACE:
                for future in list(pending):   # waiting for a worker that may never come (Cluster.GRACE)
                    future.cancel()
                    pending.pop(future)
        report()
    except BaseException:
        # An error here (a full disk, a caller's progress or stop function, a KeyboardInterrupt with no
        # handler): the running trials stop, and what they saved is kept before the error goes on.
        where.request_stop()
        _drain(folder, pending, rows)
        raise
    finally:
        where.close()
    return stopping and any(rows.get(t.name, {}).get("status") in (None, "interrupted") for t in trials)


def _drain(folder, pending: dict, rows: dict, timeout: float = 30.0) -> None:
    """The outcomes of the trials still out, saved as they come, for up to `timeout` seconds."""
    done, _ = wait(pending, timeout=timeout)
    for future in done:
        trial, _ = pending[future]
        try:
            outcome = future.result()
            if outcome["status"] != "not started":
                rows[trial.name] = _save(folder, trial, outcome)
        except BaseException:
            continue


def _finish(folder, trials, rows, grid, seeds, fixed, figure=True, paths=None) -> SweepTable:
    """sweep.json, sweep.csv and (unless stopped) the figure, from every trial's row (pending: not run yet)."""
    summary, table_csv = paths or (folder / SWEEP_JSON, folder / "sweep.csv")
    table = SweepTable([rows.get(t.name) or trial_row(t, "pending") for t in trials], grid=grid, seeds=list(seeds),
                       fixed={k: v for k, v in fixed.items() if v is not None and v is not False}, folder=folder)
    files.atomic_write(table_csv, table.to_csv().encode())
    if grid and figure:
        from .plots_sweep import plot_sweep

        try:
            table.figure = plot_sweep(table, folder / "sweep.png")
        except ConfigError as e:   # matplotlib is an optional extra, and a figure has a size: the table stands
            table.figure_note = str(e)
        except OutputError as e:
            table.figure_note, table.figure_error = str(e), e
    files.atomic_write(summary, strict_json(table.to_dict()).encode())
    return table
