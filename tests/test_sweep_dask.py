"""`rmsprop sweep --scheduler` on a real Dask cluster that the test starts on 127.0.0.1: a
`dask scheduler` and two `dask worker` processes (one thread each, no nanny, so that a
killed worker stays dead).  Results equal the local sweep's; a worker killed while it
trains a trial loses nothing; SIGTERM saves what runs, and the folder continues anywhere."""

import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from rmsprop_cli import grid as g
from test_sweep import (GRID, LONG, comparable, ended, kill_group, records, rmsprop, start, train_command,
                        wait_for)

distributed = pytest.importorskip("distributed", reason="the Dask tests need pip install 'rmsprop-cli[cluster]'")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def cluster(tmp_path):
    """The scheduler's address; every process is ended by its PID when the test ends."""
    port = _port()
    address = f"tcp://127.0.0.1:{port}"
    log = open(tmp_path / "cluster.log", "w")
    procs = [subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                               "--port", str(port), "--dashboard-address", ":0", "--no-show"],
                              stdout=log, stderr=subprocess.STDOUT)]
    try:
        for i in range(2):
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "distributed.cli.dask_worker", address, "--host", "127.0.0.1",
                 "--nthreads", "1", "--no-nanny", "--name", f"w{i}", "--dashboard-address", ":0",
                 "--local-directory", str(tmp_path / f"w{i}")], stdout=log, stderr=subprocess.STDOUT))
        with distributed.Client(address, timeout="60s") as client:
            client.wait_for_workers(2, timeout=60)
        yield address
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=30)
        log.close()


def _sweep_args(data_dir, folder):
    return ["sweep", *GRID, "--seeds", "0,1", *LONG, "--data-dir", data_dir, "--output", folder]


@pytest.fixture(scope="module")
def local(data_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("local") / "sweep"
    r = rmsprop(*_sweep_args(data_dir, folder), "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_a_cluster_gives_the_local_results_even_when_a_worker_is_killed(cluster, data_dir, tmp_path, local):
    folder = tmp_path / "sweep"
    proc = start(*_sweep_args(data_dir, folder), "--scheduler", cluster, "--json")
    try:
        with distributed.Client(cluster, timeout="30s") as client:
            pids = client.run(os.getpid)   # {worker address: its process id}

            def busy_worker():
                busy = [w for w, keys in client.processing().items() if keys]
                return busy and (busy[0], pids[busy[0]])

            # Once a trial has ended (so workers are warm), kill one that is training another.
            wait_for(lambda: ended(folder), "the first trial to end", timeout=180)
            address, pid = wait_for(busy_worker, "a worker with a trial")
            os.kill(pid, signal.SIGKILL)
            wait_for(lambda: address not in client.scheduler_info()["workers"], "the scheduler to notice")
        out, err = proc.communicate(timeout=300)
    finally:
        kill_group(proc) if proc.poll() is None else None
    assert proc.returncode == 0, err
    result = json.loads(out)
    assert comparable(result["trials"]) == comparable(local["trials"])
    assert {r["worker"].split(":")[1] for r in result["trials"]} - {str(pid)}   # the survivor trained the rest
    for row in result["trials"][::5]:   # and a trial is `rmsprop train` with its options
        recipe = g.Recipe.from_dict(row["recipe"])
        t = rmsprop("train", *train_command(recipe), "--data-dir", data_dir, "--output", tmp_path / row["name"],
                    "--json")
        assert t.returncode == 0, t.stderr
        alone = json.loads(t.stdout)
        assert (alone["test_accuracy"], alone["test_loss"]) == (row["test_accuracy"], row["test_loss"])
        assert [m["val_loss"] for m in alone["epochs"]] == [m["val_loss"] for m in row["epochs"]]


def test_sigterm_saves_what_runs_and_the_folder_continues_locally(cluster, data_dir, tmp_path, local):
    folder = tmp_path / "sweep"
    proc = start(*_sweep_args(data_dir, folder), "--scheduler", cluster)
    try:
        wait_for(lambda: ended(folder), "the first trial to end", timeout=180)
        proc.send_signal(signal.SIGTERM)   # to the sweep only: it tells the cluster's trials to stop
        out, err = proc.communicate(timeout=120)
    finally:
        kill_group(proc) if proc.poll() is None else None
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1].startswith("Terminated (SIGTERM): sweep stopped:"), err
    assert "interrupted" in [r["status"] for r in records(folder)]
    r = rmsprop(*_sweep_args(data_dir, folder), "--json")   # no --scheduler: the same folder, on this machine
    assert r.returncode == 0, r.stderr
    assert comparable(json.loads(r.stdout)["trials"]) == comparable(local["trials"])


def _scheduler():
    """A `dask scheduler` of a test's own on 127.0.0.1: its address and process."""
    port = _port()
    return f"tcp://127.0.0.1:{port}", subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", str(port),
         "--dashboard-address", ":0", "--no-show"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_a_scheduler_lost_mid_sweep_is_exit_8(data_dir, tmp_path):
    address, scheduler = _scheduler()
    worker = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", address, "--host", "127.0.0.1",
                               "--nthreads", "1", "--no-nanny", "--dashboard-address", ":0",
                               "--local-directory", str(tmp_path / "w")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    folder = tmp_path / "sweep"
    proc = None
    try:
        with distributed.Client(address, timeout="60s") as client:
            client.wait_for_workers(1, timeout=60)
        proc = start(*_sweep_args(data_dir, folder), "--scheduler", address)
        wait_for(lambda: ended(folder), "the first trial to end", timeout=180)
        scheduler.kill()
        out, err = proc.communicate(timeout=120)
    finally:
        for p in (scheduler, worker):
            p.kill()
            p.wait(timeout=30)
        if proc is not None and proc.poll() is None:
            kill_group(proc)
    assert proc.returncode == 8, err
    assert err.strip().splitlines()[-1].startswith("Error: the Dask scheduler stopped answering"), err
    assert [r["status"] for r in records(folder)].count("finished") >= 1


def test_ctrl_c_with_no_worker_to_take_the_trials_ends(data_dir, tmp_path):
    address, scheduler = _scheduler()
    proc = None
    try:
        with distributed.Client(address, timeout="60s") as client:
            proc = start(*_sweep_args(data_dir, tmp_path / "sweep"), "--scheduler", address)
            wait_for(lambda: client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks)),
                     "the trials to reach the scheduler", timeout=60)
            os.killpg(proc.pid, signal.SIGINT)
            out, err = proc.communicate(timeout=60)
    finally:
        scheduler.kill()
        scheduler.wait(timeout=30)
        if proc is not None and proc.poll() is None:
            kill_group(proc)
    assert proc.returncode == 130, err
    assert "0 of 8 trials finished, 0 saved part-way and 8 not started" in err.strip().splitlines()[-1], err

