"""`rmsprop sweep` end to end on the real MNIST: trials equal to `rmsprop train` runs, a rerun
that skips what is done, Ctrl-C to the process group and a resume that gives the same table,
a worker process killed mid-sweep, a failed trial rerun, and every refusal through the CLI."""

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import fields
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rmsprop_cli import files, grid as g
from rmsprop_cli.cli import app

runner = CliRunner()
SMALL = ["--limit", "600", "--hidden", "16", "--epochs", "2"]
# Trials long enough (about a second each on one thread) for a signal to land in the middle of some.
LONG = ["--limit", "30000", "--epochs", "4"]
GRID = ["--grid", "lr=1e-3,3e-3", "--grid", "rho=0.5,0.9"]
# What two runs of one trial must agree on (not the seconds, the worker or the checkpoint's path).
SAME = ("name", "options", "seed", "status", "final_val_accuracy", "best_val_accuracy", "test_accuracy", "test_loss",
        "epochs_to_97", "epochs_trained", "recipe")


def rmsprop(*args, timeout=300, **kwargs):
    return subprocess.run([sys.executable, "-m", "rmsprop_cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, **kwargs)


def start(*args, **kwargs):
    """A sweep in a process group of its own, so that a signal to the group is a terminal's Ctrl-C."""
    return subprocess.Popen([sys.executable, "-m", "rmsprop_cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, **kwargs)


def records(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((folder / "trials").glob("*.json"))]


def wait_for(condition, what: str, timeout=120.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def train_command(recipe) -> list[str]:
    """The `rmsprop train` arguments of a trial, for a user who wants to run one alone."""
    default = g.Recipe(optimizer=recipe.optimizer)
    args = []
    for f in fields(g.Recipe):
        value = getattr(recipe, f.name)
        usual = f.default if f.name == "optimizer" else getattr(default, f.name)
        if f.name in ("n_inputs", "n_classes") or value == usual or value is None:
            continue
        if f.name in g.FLAGS:
            args.append(g.option(f.name))
        else:
            args += [g.option(f.name), g.train_options(recipe)[f.name] if f.name == "hidden" else str(value)]
    return args


def ended(folder: Path):
    """The records of the trials that have ended so far (None before the first)."""
    trials = folder / "trials"
    return (list(trials.glob("*.json")) or None) if trials.exists() else None


def comparable(rows) -> dict:
    """name -> the fields two equal runs share, each epoch without its seconds."""
    return {r["name"]: {**{k: r[k] for k in SAME},
                        "epochs": [{k: v for k, v in m.items() if k != "seconds"} for m in r.get("epochs", [])]}
            for r in rows}


def kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.communicate(timeout=30)


@pytest.fixture(scope="module")
def reference(data_dir, tmp_path_factory):
    """An uninterrupted sweep of LONG (2 x 2 combinations x 2 seeds), run once for the module."""
    folder = tmp_path_factory.mktemp("reference") / "sweep"
    r = rmsprop("sweep", *GRID, "--seeds", "0,1", *LONG, "--data-dir", data_dir, "--output", folder, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_trials_equal_train_runs_and_a_rerun_skips_them(data_dir, tmp_path):
    folder = tmp_path / "sweep"
    args = ["sweep", "--grid", "lr=1e-3,3e-3", "--seeds", "0,1", *SMALL, "--data-dir", data_dir, "--output", folder]
    r = rmsprop(*args, "--json")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["counts"]["finished"] == 4 and len(result["trials"]) == 4
    for row in result["trials"]:
        recipe = g.Recipe.from_dict(row["recipe"])
        t = rmsprop("train", *train_command(recipe), "--data-dir", data_dir, "--output", tmp_path / row["name"],
                    "--json")
        assert t.returncode == 0, t.stderr
        alone = json.loads(t.stdout)
        assert alone["recipe"] == row["recipe"]
        assert row["test_accuracy"] == alone["test_accuracy"] and row["test_loss"] == alone["test_loss"]
        assert [{k: v for k, v in m.items() if k != "seconds"} for m in row["epochs"]] == \
               [{k: v for k, v in m.items() if k != "seconds"} for m in alone["epochs"]]
        assert Path(row["checkpoint"]).is_file() and row["checkpoint"].startswith(str(folder / "trials"))
    # The checkpoint a trial left is a real one: evaluate gives its test accuracy.
    e = rmsprop("evaluate", result["trials"][0]["checkpoint"], "--limit", "600", "--data-dir", data_dir, "--json")
    assert e.returncode == 0, e.stderr
    assert json.loads(e.stdout)["test_accuracy"] == result["trials"][0]["test_accuracy"]
    # The best combination first, by mean final validation accuracy.
    means = [c["final_val_accuracy"]["mean"] for c in result["combinations"]]
    assert means == sorted(means, reverse=True)
    assert (folder / "sweep.csv").read_text().count("\n") == 5 and (folder / "sweep.png").stat().st_size > 5000
    assert json.loads((folder / "sweep.json").read_text()) == result

    stamps = {p: p.stat().st_mtime_ns for p in (folder / "trials").iterdir()}
    again = rmsprop(*args)   # the table, on stdout, with nothing trained again
    assert again.returncode == 0, again.stderr
    assert {p: p.stat().st_mtime_ns for p in (folder / "trials").iterdir()} == stamps
    assert comparable(json.loads((folder / "sweep.json").read_text())["trials"]) == comparable(result["trials"])
    assert "0.001" in again.stdout and "2/2" in again.stdout and "Traceback" not in again.stderr


@pytest.mark.parametrize("signum, code, label", [(signal.SIGINT, 130, "Interrupted"),
                                                 (signal.SIGTERM, 143, "Terminated (SIGTERM)"),
                                                 (signal.SIGHUP, 129, "Terminated (SIGHUP)")])
def test_a_signal_to_the_process_group_saves_what_runs_and_the_printed_command_continues_it(
        signum, code, label, data_dir, tmp_path, reference):
    """Ctrl-C in a terminal, `timeout`, Slurm and a closed terminal signal the sweep and its workers alike."""
    folder = tmp_path / "sweep"
    proc = start("sweep", *GRID, "--seeds", "0,1", *LONG, "--data-dir", data_dir, "--output", folder)
    try:
        wait_for(lambda: ended(folder), "the first trial to end")
        os.killpg(proc.pid, signum)
        out, err = proc.communicate(timeout=120)
    finally:
        kill_group(proc) if proc.poll() is None else None
    assert proc.returncode == code, err
    message = err.strip().splitlines()[-1]
    assert message.startswith(f"{label}: sweep stopped:"), err
    for noise in ("Traceback", "resource_tracker", "Warning"):
        assert noise not in err, err
    statuses = [r["status"] for r in records(folder)]
    assert "interrupted" in statuses and len(statuses) < 8, statuses
    for r in records(folder):
        if r["status"] == "interrupted":
            assert Path(r["checkpoint"]).is_file()
    assert json.loads((folder / "sweep.json").read_text())["counts"]["finished"] == statuses.count("finished")
    command = shlex.split(message.split("continue it with: ", 1)[1])
    assert command[:2] == ["rmsprop", "sweep"]
    r = rmsprop(*command[1:], "--json")
    assert r.returncode == 0, r.stderr
    resumed = json.loads(r.stdout)
    assert comparable(resumed["trials"]) == comparable(reference["trials"])
    assert [c["options"] for c in resumed["combinations"]] == [c["options"] for c in reference["combinations"]]


def _workers_of(pid: int) -> list[int]:
    """The sweep's worker processes (spawned children; not multiprocessing's resource tracker)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(c) for c in children if "spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes().decode()]


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="finds the worker processes in /proc (Linux)")
def test_a_killed_worker_process_loses_nothing(data_dir, tmp_path, reference):
    folder = tmp_path / "sweep"
    proc = start("sweep", *GRID, "--seeds", "0,1", *LONG, "--data-dir", data_dir, "--output", folder, "--json")
    try:
        wait_for(lambda: ended(folder), "the first trial to end")
        victim = wait_for(lambda: _workers_of(proc.pid), "the worker processes")[0]
        os.kill(victim, signal.SIGKILL)
        out, err = proc.communicate(timeout=240)
    finally:
        kill_group(proc) if proc.poll() is None else None
    assert proc.returncode == 0, err
    result = json.loads(out)
    assert comparable(result["trials"]) == comparable(reference["trials"])
    assert len({r["worker"] for r in result["trials"]}) >= 3   # a new pool took over from the broken one


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="finds the worker processes in /proc (Linux)")
def test_workers_stop_when_the_sweep_is_killed(data_dir, tmp_path):
    folder = tmp_path / "sweep"
    proc = start("sweep", *GRID, "--seeds", "0,1", *LONG, "--data-dir", data_dir, "--output", folder)
    try:
        workers = wait_for(lambda: ended(folder) and _workers_of(proc.pid), "the first trial to end")
        proc.kill()   # SIGKILL: nothing of the sweep runs any more
        proc.communicate(timeout=30)
        wait_for(lambda: not any(Path(f"/proc/{w}").exists() and "spawn_main" in
                                 Path(f"/proc/{w}/cmdline").read_bytes().decode(errors="replace")
                                 for w in workers), "the workers to stop", timeout=30)
    finally:
        kill_group(proc)


def test_a_trained_checkpoint_whose_record_was_lost_is_not_trained_again(data_dir, tmp_path):
    """The sweep killed between a trial's checkpoint and its record, or a trial stopped after its last
    epoch but before its test evaluation: the checkpoint is scored, as `rmsprop evaluate` scores it."""
    from rmsprop_cli import checkpoint

    folder = tmp_path / "sweep"
    args = ["sweep", "--grid", "lr=1e-3,3e-3", *SMALL, "--data-dir", data_dir, "--output", folder]
    r = rmsprop(*args, "--json")
    assert r.returncode == 0, r.stderr
    first, second = json.loads(r.stdout)["trials"]
    (folder / "trials" / f"{first['name']}.json").unlink()
    ckpt = checkpoint.load(second["checkpoint"])   # no test scores: stopped before the test evaluation
    info = {k: v for k, v in ckpt.info.items() if k not in ("test_accuracy", "test_loss")}
    checkpoint.save(second["checkpoint"], checkpoint.Checkpoint(ckpt.recipe, ckpt.theta, ckpt.opt_state, ckpt.history,
                                                                info))
    (folder / "trials" / f"{second['name']}.json").write_text(json.dumps({**second, "status": "interrupted"}))
    r = rmsprop(*args, "--json")
    assert r.returncode == 0, r.stderr
    again = json.loads(r.stdout)["trials"]
    assert comparable(again) == comparable([first, second])
    assert [m["seconds"] for m in again[0]["epochs"]] == [m["seconds"] for m in first["epochs"]]   # not retrained


def test_a_piped_table_keeps_every_column(data_dir, tmp_path):
    r = rmsprop("sweep", "--grid", "hidden=16,24:8", "--grid", "lr=1e-3,3e-3", "--limit", "600", "--epochs", "1",
                "--data-dir", data_dir, "--output", tmp_path / "s", env={**os.environ, "COLUMNS": "60"})
    assert r.returncode == 0, r.stderr
    header = next(line for line in r.stdout.splitlines() if line.split()[:1] == ["hidden"])
    assert header.split() == ["hidden", "lr", "seeds", "final", "val", "%", "best", "val", "%", "test", "%",
                              "epochs", "to", "97%", "seconds"]
    assert "24,8" in r.stdout and "0.003" in r.stdout


def test_a_script_without_a_main_guard_is_told_what_to_do(data_dir, tmp_path):
    code = (f"from rmsprop_cli import sweep\nsweep({{'lr': [1e-3]}}, limit=600, epochs=1, "
            f"data_dir={str(data_dir)!r}, output={str(tmp_path / 's')!r})\n")
    r = subprocess.run([sys.executable, "-"], input=code, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert "SweepWorkersDied" in r.stderr and 'if __name__ == "__main__":' in r.stderr, r.stderr[-2000:]


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="finds the worker processes in /proc (Linux)")
def test_a_trial_whose_worker_dies_three_times_fails_and_only_it(data_dir, tmp_path, reference):
    folder = tmp_path / "sweep"
    proc = start("sweep", *GRID, "--seeds", "0,1", *LONG, "--data-dir", data_dir, "--output", folder, "--json")
    victim = reference["trials"][0]["name"]   # the first trial sent, and sent again first after each loss
    mark = folder / "trials" / ".running" / victim
    killed = set()

    def started_again():   # a mark by a process not killed yet (the last one's may linger a moment)
        try:
            pid = mark.read_text().strip()
        except OSError:
            return None
        return pid if pid and pid not in killed else None

    try:
        # Killed each time it starts, as a trial that always runs out of memory would be, until the sweep
        # gives it up.  (A death while the pool is being replaced may go uncounted, so 3 kills may not do.)
        while proc.poll() is None and len(killed) < 10:
            pid = wait_for(lambda: started_again() or proc.poll() is not None, "the trial to start")
            if pid is True:
                break
            killed.add(pid)
            time.sleep(0.3)   # in its training
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        out, err = proc.communicate(timeout=240)
    finally:
        kill_group(proc) if proc.poll() is None else None
    assert proc.returncode == 1, err
    assert err.strip().splitlines()[-1].startswith("Error: 1 of 8 trials failed (the first: its worker process "
                                                   "died 3 times"), err
    rows = {r["name"]: r for r in json.loads(out)["trials"]}
    assert rows.pop(victim)["status"] == "failed"
    expected = comparable(r for r in reference["trials"] if r["name"] != victim)
    assert comparable(rows.values()) == expected


def test_an_error_in_the_loop_keeps_what_the_running_trials_saved(data_dir, tmp_path):
    from rmsprop_cli import sweep

    class Stop(Exception):
        pass

    def progress(counts, total, running):
        if counts["finished"]:
            raise Stop

    with pytest.raises(Stop):
        sweep({"lr": [1e-3, 3e-3, 1e-2]}, limit=30000, epochs=4, data_dir=data_dir, output=tmp_path / "s",
              workers=2, progress=progress)
    statuses = sorted(json.loads(p.read_text())["status"] for p in (tmp_path / "s" / "trials").glob("*.json"))
    assert len(statuses) >= 2 and "finished" in statuses, statuses   # the one running beside it is kept too


def test_a_failed_trial_is_rerun_from_the_start(data_dir, tmp_path):
    folder = tmp_path / "sweep"
    args = ["sweep", "--grid", "lr=1e-3,3e-3", *SMALL, "--data-dir", data_dir, "--output", folder]
    assert rmsprop(*args).returncode == 0
    first = records(folder)[0]
    # Make the first trial look interrupted, from a damaged checkpoint: resuming it fails.
    Path(first["checkpoint"]).write_bytes(b"\0" * 100)
    record = folder / "trials" / f"{first['name']}.json"
    record.write_text(json.dumps({**first, "status": "interrupted"}))
    r = rmsprop(*args)
    assert r.returncode == 1, r.stderr
    message = r.stderr.strip().splitlines()[-1]
    assert message.startswith("Error: 1 of 2 trials failed") and "run the same command again" in message, message
    assert json.loads(record.read_text())["status"] == "failed"
    r = rmsprop(*args, "--json")
    assert r.returncode == 0, r.stderr
    rerun = {row["name"]: row for row in json.loads(r.stdout)["trials"]}[first["name"]]
    assert rerun["status"] == "finished" and rerun["test_accuracy"] == first["test_accuracy"]


def test_a_diverging_trial_is_recorded_not_fatal(data_dir, tmp_path):
    folder = tmp_path / "sweep"
    args = ["sweep", "--grid", "lr=1e-3,1e30", *SMALL, "--data-dir", data_dir, "--output", folder]
    r = rmsprop(*args, "--json")
    assert r.returncode == 0, r.stderr
    rows = {row["options"]["lr"]: row for row in json.loads(r.stdout)["trials"]}
    assert rows[1e30]["status"] == "diverged" and rows[1e30]["diverged_at"]["epoch"] == 1
    assert rows[1e30]["checkpoint"] is None and rows[0.001]["status"] == "finished"
    stamp = (folder / "trials" / f"{rows[1e30]['name']}.json").stat().st_mtime_ns
    r = rmsprop(*args)
    assert r.returncode == 0 and "1 diverged" in r.stdout, r.stdout
    assert (folder / "trials" / f"{rows[1e30]['name']}.json").stat().st_mtime_ns == stamp   # not rerun


# ---- refusals through the CLI: one line, its exit code, nothing written -------------------------

@pytest.mark.parametrize("args, code, words", [
    (["--grid", "lr"], 2, "NAME=V1,V2"),
    (["--grid", "seed=1,2"], 2, "--seeds"),
    (["--grid", "colour=red"], 2, "not an option"),
    (["--grid", "lr=1e-3", "--lr", "0.01"], 2, "both given and swept"),
    (["--grid", "optimizer=adam,sgd", "--rho", "0.5"], 2, "--rho applies to none"),
    (["--grid", "rho=0.5", "--optimizer", "adam"], 2, "does not apply to --optimizer adam"),
    (["--grid", "centered=true,false", "--bias-correction"], 2, "centered=True cannot be trained"),
    (["--grid", "lr=0,1e-3"], 2, "--lr must be a positive number"),
    (["--seeds", "1,x"], 2, "--seeds takes whole numbers"),
    (["--workers", "0"], 2, "--workers must be a whole number from 1"),
    (["--workers", "2", "--scheduler", "tcp://127.0.0.1:9"], 2, "--workers is for a local sweep"),
    (["--scheduler", "127.0.0.1:8786"], 2, "such as tcp://10.0.0.5:8786"),
    (["--scheduler", "foo://bar"], 2, "such as tcp://10.0.0.5:8786"),
    (["--scheduler", "tcp://host:port"], 2, "such as tcp://10.0.0.5:8786"),
    (["--grid", "epochs=１,２"], 2, "not a whole number"),
    (["--grid", "weight-decay=1e-3", "--weight-decay", "0"], 2, "both given and swept"),
    (["--output", "x.safetensors"], 2, "a sweep's output is a folder"),
    (["--grid", "lr=" + ",".join(f"{i}e-5" for i in range(1, 101)), "--grid", "rho=" + ",".join(
        f"0.{i:03d}" for i in range(1, 102)), "--limit", "600"], 2, "at most 10000"),
])
def test_refused_before_any_work(args, code, words, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["sweep", *args])
    assert result.exit_code == code, result.output
    message = result.stderr.strip()
    assert message.startswith("Error:") and "\n" not in message and words in message, message
    assert list(tmp_path.iterdir()) == []


def test_unreachable_scheduler_is_exit_8(tmp_path, monkeypatch):
    pytest.importorskip("distributed")
    import socket

    with socket.socket() as s:   # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["sweep", "--grid", "lr=1e-3", "--scheduler", f"tcp://127.0.0.1:{port}",
                                 "--output", tmp_path / "s"])
    assert result.exit_code == 8, result.output
    assert result.stderr.startswith("Error: cannot reach the Dask scheduler at tcp://127.0.0.1:")
    assert result.stderr.count("\n") == 1


def test_without_dask_a_scheduler_is_refused_and_a_local_sweep_still_works(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)   # import distributed fails, as where it is not installed
    result = runner.invoke(app, ["sweep", "--grid", "lr=1e-3", "--scheduler", "tcp://127.0.0.1:9",
                                 "--output", tmp_path / "s"])
    assert result.exit_code == 2 and "pip install 'rmsprop-cli[cluster]'" in result.stderr, result.output


@pytest.mark.parametrize("setup, code, words", [
    (lambda d: d.write_text("my notes"), 5, "is a file"),
    (lambda d: (d.mkdir(), (d / "sweep.json").write_text('{"mine": 1}')), 5, "sweep.json that rmsprop sweep wrote"),
    (lambda d: (d.mkdir(), (d / "sweep.csv").write_text("my,data\n")), 5, "sweep.csv that rmsprop sweep wrote"),
    (lambda d: (d.mkdir(), (d / "trials").write_text("not a folder")), 5, "trials"),
    (lambda d: (d.mkdir(), (d / "sweep.png").write_text("my picture")), 5, "is not a PNG image"),
])
def test_output_that_is_not_a_sweep_folder_is_kept(setup, code, words, tmp_path):
    target = tmp_path / "out"
    setup(target)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    result = runner.invoke(app, ["sweep", "--grid", "lr=1e-3", *SMALL, "--output", target])
    assert result.exit_code == code, result.output
    assert words in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_a_sweep_folder_in_use_is_busy(tmp_path):
    folder = tmp_path / "s"
    with files.OutputLock(folder / "sweep.json"):
        result = runner.invoke(app, ["sweep", "--grid", "lr=1e-3", *SMALL, "--output", folder])
    assert result.exit_code == 75, result.output
    assert "in use" in result.stderr or "another" in result.stderr, result.stderr


def test_unreachable_mnist_leaves_no_folder(tmp_path, monkeypatch):
    from mnist_server import dead_url

    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["sweep", "--grid", "lr=1e-3", *SMALL, "--data-dir", tmp_path / "empty",
                                 "--mirror", dead_url()])
    assert result.exit_code == 3, result.output
    assert not (tmp_path / "runs").exists() or list((tmp_path / "runs").iterdir()) == []
