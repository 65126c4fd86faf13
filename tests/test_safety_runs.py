"""Runs that are never lost, overwritten or left half-done (issue 13, part A).

Real processes, real signals and real races: `python -m rmsprop_cli train` is
started as a user would start it, and SIGINT, SIGTERM or SIGKILL arrive at the
moments that used to lose work (after the last epoch, during the final save,
before training starts); two runs race for one checkpoint; a killed writer's
temporaries are cleaned by the next run.
"""

import csv
import json
import os
import pty
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rmsprop_cli import checkpoint, files
from rmsprop_cli.cli import app

runner = CliRunner()
TINY = ["--limit", "100", "--epochs", "1", "--hidden", "4"]
LONG = ["--epochs", "100000", "--limit", "3000", "--hidden", "16"]   # runs until stopped


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in text, text
    return lines[0]


def assert_user_error(result, code, *words):
    assert result.exit_code == code, result.output
    message = one_line(result.stderr)
    assert message.startswith("Error:"), message
    for w in words:
        assert w in message, message


STARTED = []


@pytest.fixture(autouse=True)
def _no_process_outlives_its_test():
    yield
    while STARTED:
        proc = STARTED.pop()
        proc.kill()
        proc.communicate()


def start(*args, cwd=None, data_dir=None, **popen):
    env = {**os.environ, "COLUMNS": "300"}
    extra = ["--data-dir", str(data_dir)] if data_dir else []
    proc = subprocess.Popen([sys.executable, "-m", "rmsprop_cli", "train", *map(str, args), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd, **popen)
    STARTED.append(proc)
    return proc


def stderr_of(proc) -> str:
    """What a run said, for a failing assertion: it is stopped first (reading a live one's would wait for ever)."""
    proc.kill()
    return proc.communicate(timeout=30)[1]


def finish(proc, timeout=60):
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        proc.kill()
    return proc.returncode, out, err


def wait_for(predicate, seconds=60, step=0.002):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


def rows(path: Path) -> int:
    """Complete epochs in a metrics file (0 while it does not exist)."""
    try:
        return max(0, path.read_bytes().count(b"\n") - 1)
    except FileNotFoundError:
        return 0


def temporaries(folder: Path, name="model.safetensors"):
    return sorted(p.name for p in folder.glob(f".{name}.*.tmp"))


# --- 1, 2, 7: a signal at any moment leaves a loadable checkpoint and an honest exit code ---------

# A network wide enough that the final test evaluation and save take most of a second.
WIDE = ["--hidden", "4000", "--limit", "6000", "--epochs", "1", "--json"]


def _when(moment, out: Path):
    """A predicate that becomes true at the moment named."""
    metrics = out / "model.metrics.csv"
    return {
        "claimed": lambda: (out / ".model.safetensors.lock").exists(),         # before training starts
        "last epoch done": lambda: rows(metrics) >= 1,                          # the test evaluation follows
        "final save": lambda: rows(metrics) >= 1 and bool(temporaries(out)),   # the checkpoint being written
        "saved": lambda: (out / "model.safetensors").exists(),                  # the result being printed
    }[moment]


@pytest.mark.parametrize("signum,moment,delay", [
    (signal.SIGTERM, "claimed", 0),
    (signal.SIGINT, "last epoch done", 0),
    (signal.SIGTERM, "last epoch done", 0.15),
    (signal.SIGHUP, "last epoch done", 0.05),
    (signal.SIGINT, "final save", 0),
    (signal.SIGTERM, "saved", 0),
    (signal.SIGINT, "saved", 0.03),
], ids=["SIGTERM-before-training", "SIGINT-at-last-epoch", "SIGTERM-in-test-evaluation", "SIGHUP-in-test-evaluation",
        "SIGINT-during-final-save",
        "SIGTERM-while-printing", "SIGINT-while-exiting"])
def test_a_signal_at_any_moment_of_a_run_loses_nothing(data_dir, tmp_path, signum, moment, delay):
    """Before training: nothing written, a one-line stop.  After it: a checkpoint that
    loads, and an exit code that says whether the run was finished (0) or not (128 + n).
    The signal is sent while the process is held by SIGSTOP, so that it is known to
    arrive before the process ends; SIGCONT lets it act where the process was."""
    out = tmp_path / "run"
    proc = start(*WIDE, "--output", out, data_dir=data_dir)
    try:
        assert wait_for(_when(moment, out)), stderr_of(proc)
        time.sleep(delay)
        proc.send_signal(signal.SIGSTOP)
        if proc.poll() is not None:
            pytest.skip(f"the run ended within {delay} s of '{moment}' on this machine")
        proc.send_signal(signum)
        proc.send_signal(signal.SIGCONT)
        code, stdout, err = finish(proc)
    finally:
        proc.kill()
    assert "Traceback" not in err and "nothing more was saved" not in err, err
    path = out / "model.safetensors"
    if code == 0:   # the signal came once the run could only finish: it did, and says so (unless the
        # signal came after its last line, when the process only had to exit: then it is ignored)
        assert not err.strip() or "after the run had finished" in one_line(err), err
        saved = checkpoint.load(path)
        assert "test_accuracy" in saved.info and len(saved.history) == 1
        assert json.loads(stdout)["checkpoint"] == str(path)
        assert moment != "claimed"
        return
    assert code == 128 + signum, err
    message = one_line(err)
    assert message.startswith("Interrupted:" if signum == signal.SIGINT else
                              f"Terminated ({signal.Signals(signum).name}):"), message
    if "before training started" in message:
        assert moment == "claimed" and not path.exists() and not (out / ".model.safetensors.lock").exists()
        return
    saved = checkpoint.load(path)      # finished but not tested, or resumable
    if "before the test evaluation" in message:
        assert len(saved.history) == 1 and "test_accuracy" not in saved.info
        assert f"evaluate it with: rmsprop evaluate {path} --limit 6000" in message
    else:
        assert moment == "claimed" and "resume with:" in message and saved.info["position"]["batch"] > 0
    assert moment != "final save", "a signal during the final save must not stop a finished run"


def test_sigterm_saves_and_the_printed_commands_work_when_pasted(data_dir, tmp_path):
    """SIGTERM (timeout, docker stop, Slurm) is Ctrl-C: the position is saved, exit 143,
    and the resume command it prints, and the evaluate command the resumed run prints,
    work when pasted into a shell, for a path with a space, a $ and a *."""
    out = tmp_path / "it's my $HOME run*" / "model.safetensors"
    proc = start(*LONG, "--output", out, data_dir=data_dir)
    assert wait_for(lambda: rows(out.with_name("model.metrics.csv")) >= 2), stderr_of(proc)
    proc.send_signal(signal.SIGTERM)
    code, _, err = finish(proc)
    assert code == 143, err
    message = one_line(err)
    assert message.startswith("Terminated (SIGTERM): stopped") and str(out) in message, message
    epochs = len(checkpoint.load(out).history)
    assert epochs >= 2

    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "COLUMNS": "300"}
    command = message.split("resume with: ", 1)[1]
    pasted = subprocess.run(["bash", "-c", f"{command} --epochs {epochs + 1} --data-dir {shlex.quote(str(data_dir))}"],
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert pasted.returncode == 0, pasted.stderr
    assert len(checkpoint.load(out).history) == epochs + 1
    evaluate = re.search(r"Evaluate it later with: (.*)", pasted.stdout)[1]
    pasted = subprocess.run(["bash", "-c", f"{evaluate} --data-dir {shlex.quote(str(data_dir))} --json"],
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert pasted.returncode == 0, pasted.stderr
    assert json.loads(pasted.stdout)["test_accuracy"] > 0.5


def test_a_signal_ignored_at_the_start_stays_ignored(data_dir, tmp_path):
    """nohup: SIGHUP ignored when the command starts is not taken over; SIGINT still stops it."""
    out = tmp_path / "run"
    proc = start(*LONG, "--output", out, data_dir=data_dir,
                 preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))
    try:
        assert wait_for(lambda: rows(out / "model.metrics.csv") >= 1), stderr_of(proc)
        proc.send_signal(signal.SIGHUP)
        done = rows(out / "model.metrics.csv")
        assert wait_for(lambda: rows(out / "model.metrics.csv") >= done + 3)   # still training
        proc.send_signal(signal.SIGINT)
        code, _, err = finish(proc)
    finally:
        proc.kill()
    assert code == 130 and one_line(err).startswith("Interrupted: stopped"), err


# --- 4: unique run folders, and one writer per checkpoint ---------------------------------------

def test_runs_started_together_get_folders_of_their_own(data_dir, tmp_path):
    procs = [start(*TINY, "--json", cwd=tmp_path, data_dir=data_dir) for _ in range(3)]
    results = [finish(p) for p in procs]
    assert [code for code, _, _ in results] == [0, 0, 0], results
    paths = {json.loads(out)["checkpoint"] for _, out, _ in results}
    assert len(paths) == 3, paths
    for p in paths:
        assert re.fullmatch(r"runs/\d{8}-\d{6}-mlp784-4-10-rmsprop-lr0\.001-b32-seed0(-\d+)?/model\.safetensors", p), p
        assert checkpoint.load(tmp_path / p).history


def test_a_second_writer_of_a_live_runs_checkpoint_is_refused(data_dir, tmp_path):
    out = tmp_path / "shared"
    lock = out / ".model.safetensors.lock"
    first = start(*LONG, "--output", out, data_dir=data_dir)
    try:
        assert wait_for(lambda: rows(out / "model.metrics.csv") >= 1), stderr_of(first)
        # The same checkpoint named another way: as the file, not the folder.
        second = start(*TINY, "--output", out / "model.safetensors", data_dir=data_dir)
        code, _, err = finish(second)
        assert code == 75, err
        message = one_line(err)
        assert f"is being written by another run (pid {first.pid} on " in message and "--output" in message
        assert first.poll() is None    # the first run never noticed
        first.send_signal(signal.SIGINT)
        code, _, err = finish(first)
        assert code == 130, err
    finally:
        first.kill()
    assert not lock.exists()   # released, and its file removed, with the run
    epochs = len(checkpoint.load(out / "model.safetensors").history)

    # Concurrent --resume of one checkpoint: one of them trains, the others are refused.
    resumes = [start("--resume", out / "model.safetensors", "--epochs", epochs + 100000, data_dir=data_dir)
               for _ in range(3)]
    try:
        assert wait_for(lambda: sum(p.poll() is not None for p in resumes) == 2, 60), [p.poll() for p in resumes]
        winner = next(p for p in resumes if p.poll() is None)
        assert wait_for(lambda: rows(out / "model.metrics.csv") > epochs, 60)
        winner.send_signal(signal.SIGINT)
        results = {p.pid: finish(p) for p in resumes}
    finally:
        for p in resumes:
            p.kill()
    codes = sorted(code for code, _, _ in results.values())
    assert codes == [75, 75, 130], results
    for pid, (code, _, err) in results.items():
        if code == 75:
            assert f"pid {winner.pid} on " in one_line(err)
    assert len(checkpoint.load(out / "model.safetensors").history) > epochs  # history only ever grows


def test_a_resume_never_continues_from_a_checkpoint_saved_after_it_was_read(data_dir, tmp_path, monkeypatch):
    """Between reading a checkpoint to resume and taking its lock, another run can save
    it and end: the lock is then free, but what was read is old.  The save is made here,
    by a real run, at that moment (inside the lock's acquire)."""
    ck = tmp_path / "model.safetensors"
    assert invoke("train", *TINY, "--output", ck, "--data-dir", data_dir).exit_code == 0
    acquire = files.OutputLock.acquire

    def another_run_saves_first(self):
        files.OutputLock.acquire = acquire
        done = subprocess.run([sys.executable, "-m", "rmsprop_cli", "train", "--resume", str(ck), "--epochs", "2",
                               "--data-dir", str(data_dir)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return acquire(self)

    monkeypatch.setattr(files.OutputLock, "acquire", another_run_saves_first)
    result = invoke("train", "--resume", ck, "--epochs", 3, "--data-dir", data_dir)
    assert_user_error(result, 75, "was saved by another run while this one was starting", "run the command again")
    assert len(checkpoint.load(ck).history) == 2    # the other run's save stands
    result = invoke("train", "--resume", ck, "--epochs", 3, "--data-dir", data_dir)
    assert result.exit_code == 0, result.output
    assert len(checkpoint.load(ck).history) == 3


def test_a_stale_lock_from_a_killed_run_does_not_block(data_dir, tmp_path):
    out = tmp_path / "run"
    proc = start(*LONG, "--output", out, data_dir=data_dir)
    assert wait_for(lambda: rows(out / "model.metrics.csv") >= 1), stderr_of(proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert (out / ".model.safetensors.lock").exists()   # the file stays; the kernel dropped the lock
    result = invoke("train", *TINY, "--output", out, "--data-dir", data_dir)
    assert result.exit_code == 0, result.output
    assert not (out / ".model.safetensors.lock").exists()


# --- 5: each checkpoint's metrics file is its own, and a user's files are never replaced --------

def test_each_checkpoint_has_its_own_metrics_file_and_user_files_survive(data_dir, tmp_path):
    (tmp_path / "metrics.csv").write_text("my own spreadsheet\n")
    for name in ("a", "b"):
        result = invoke("train", *TINY, "--epochs", 2 if name == "a" else 1, "--output", tmp_path / f"{name}.safetensors",
                        "--data-dir", data_dir)
        assert result.exit_code == 0, result.output
    assert (tmp_path / "metrics.csv").read_text() == "my own spreadsheet\n"
    with open(tmp_path / "a.metrics.csv") as f:
        assert [r["epoch"] for r in csv.DictReader(f)] == ["1", "2"]
    with open(tmp_path / "b.metrics.csv") as f:
        assert [r["epoch"] for r in csv.DictReader(f)] == ["1"]

    # A file of the user's where the metrics file or the checkpoint would go: refused before training.
    (tmp_path / "c.metrics.csv").write_text("epoch;notes\n1;mine\n")
    result = invoke("train", *TINY, "--output", tmp_path / "c.safetensors", "--data-dir", data_dir)
    assert_user_error(result, 5, "c.metrics.csv exists and is not a metrics file", "--output")
    assert (tmp_path / "c.metrics.csv").read_text() == "epoch;notes\n1;mine\n"
    assert not (tmp_path / "c.safetensors").exists()
    from safetensors.numpy import save_file
    import numpy as np

    save_file({"w": np.zeros(3, np.float32)}, str(tmp_path / "hf.safetensors"))   # someone else's safetensors
    before = (tmp_path / "hf.safetensors").read_bytes()
    result = invoke("train", *TINY, "--output", tmp_path / "hf.safetensors", "--data-dir", data_dir)
    assert_user_error(result, 5, "is not an rmsprop-cli checkpoint")
    assert (tmp_path / "hf.safetensors").read_bytes() == before
    # --resume into the same checkpoint keeps its metrics file and extends it.
    result = invoke("train", "--resume", tmp_path / "b.safetensors", "--epochs", 3, "--data-dir", data_dir)
    assert result.exit_code == 0, result.output
    with open(tmp_path / "b.metrics.csv") as f:
        assert [r["epoch"] for r in csv.DictReader(f)] == ["1", "2", "3"]


# --- 3: figures go only where a figure may go --------------------------------------------------

def test_plot_and_compare_never_replace_what_is_not_a_figure(data_dir, tmp_path):
    ck = tmp_path / "model.safetensors"
    assert invoke("train", *TINY, "--epochs", 2, "--output", ck, "--data-dir", data_dir).exit_code == 0
    before = ck.read_bytes()
    assert_user_error(invoke("plot", ck, "--output", ck), 2, "a figure is a .png file")
    disguised = tmp_path / "disguised.png"
    disguised.write_bytes(before)           # a checkpoint renamed .png is still not a figure
    assert_user_error(invoke("plot", ck, "--output", disguised), 5, "exists and is not a PNG image")
    (tmp_path / "notes.txt").write_text("mine")
    assert_user_error(invoke("plot", ck, "--output", tmp_path / "notes.txt"), 2, "a figure is a .png file")
    assert_user_error(invoke("compare", "--output", ck, "--data-dir", data_dir, *TINY), 2, "a figure is a .png file")
    assert_user_error(invoke("compare", "--output", disguised, "--data-dir", data_dir, *TINY), 5, "not a PNG image")
    assert ck.read_bytes() == before and disguised.read_bytes() == before
    assert (tmp_path / "notes.txt").read_text() == "mine"
    # The default figure belongs to its checkpoint; a folder gets that name inside it; a PNG is replaced.
    for target, made in ((None, tmp_path / "model.curves.png"), (tmp_path / "figs", tmp_path / "figs" / "model.curves.png"),
                         (tmp_path / "model.curves.png", tmp_path / "model.curves.png")):
        (tmp_path / "figs").mkdir(exist_ok=True)
        result = invoke("plot", ck, *(["--output", target] if target else []))
        assert result.exit_code == 0, result.output
        assert made.read_bytes()[:4] == b"\x89PNG"


# --- 6: a dead writer's temporaries are cleaned by the next run, and only those ----------------

def test_a_killed_writers_temporaries_are_removed_by_the_next_run(data_dir, tmp_path):
    out = tmp_path / "run"
    # A checkpoint of 50 MB, saved after every epoch: the write is long enough to be caught in it.
    proc = start("--hidden", "8000", "--limit", "600", "--epochs", "1000", "--checkpoint-every", "1", "--output", out,
                 data_dir=data_dir)
    try:
        assert wait_for(lambda: rows(out / "model.metrics.csv") >= 1, 120), stderr_of(proc)
        assert wait_for(lambda: bool(temporaries(out)), 120, 0.0005), stderr_of(proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        proc.kill()
    dead = temporaries(out)
    assert dead and all(f".{proc.pid}-" in name for name in dead)   # the writer's id is in the name
    dead_pid = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout.strip()
    planted_dead = out / f".model.metrics.csv.{dead_pid}-abcdefgh.tmp"
    planted_dead.write_text("left by a killed run")
    live = out / f".model.safetensors.{os.getpid()}-abcdefgh.tmp"      # a writer still alive: this test
    live.write_text("being written")
    users = [out / ".model.safetensors.notes.tmp", out / "model.safetensors.tmp", out / ".other.safetensors.1-abcdefgh.tmp",
             out / f".model.safetensors.{'9' * 30}-abcdefgh.tmp"]
    for p in users:
        p.write_text("the user's")
    result = invoke("train", *TINY, "--output", out, "--data-dir", data_dir)
    assert result.exit_code == 0, result.output
    assert not any((out / name).exists() for name in dead) and not planted_dead.exists()
    assert live.exists() and all(p.read_text() == "the user's" for p in users)


# --- 9: an OSError on a user's path is one line and its exit code -------------------------------

def test_os_errors_on_user_paths_are_one_line(data_dir, tmp_path):
    ck = tmp_path / "model.safetensors"
    assert invoke("train", *TINY, "--output", ck, "--data-dir", data_dir).exit_code == 0
    long = tmp_path / ("a" * 300 + ".safetensors")
    assert_user_error(invoke("train", *TINY, "--output", long, "--data-dir", data_dir), 5, "file name too long")
    assert_user_error(invoke("train", *TINY, "--output", tmp_path / ("b" * 300) / "x", "--data-dir", data_dir), 5,
                      "file name too long")
    assert_user_error(invoke("train", "--resume", long, "--data-dir", data_dir), 4, "file name too long")
    assert_user_error(invoke("evaluate", long, "--data-dir", data_dir), 4, "file name too long")
    assert_user_error(invoke("predict", long, Path(__file__).parents[1] / "data" / "samples" / "digit-1.png"), 4,
                      "file name too long")
    assert_user_error(invoke("plot", long), 4, "file name too long")
    assert_user_error(invoke("plot", ck, "--output", tmp_path / ("c" * 300 + ".png")), 5, "file name too long")
    assert_user_error(invoke("compare", *TINY, "--output", tmp_path / ("c" * 300 + ".png"), "--data-dir", data_dir),
                      5, "file name too long")
    loop = tmp_path / "loop.safetensors"
    loop.symlink_to(loop)
    assert_user_error(invoke("evaluate", loop, "--data-dir", data_dir), 4, "symbolic link loop")
    assert_user_error(invoke("train", *TINY, "--output", loop, "--data-dir", data_dir), 5, "symbolic link loop")
    assert_user_error(invoke("train", "--resume", loop, "--data-dir", data_dir), 4, "symbolic link loop")
    fifo = tmp_path / "fifo.safetensors"
    os.mkfifo(fifo)
    assert_user_error(invoke("train", "--resume", fifo, "--data-dir", data_dir), 4, "named pipe")
    assert_user_error(invoke("train", *TINY, "--output", fifo, "--data-dir", data_dir), 5, "named pipe")
    os.mkfifo(tmp_path / "fifo.png")
    assert_user_error(invoke("plot", ck, "--output", tmp_path / "fifo.png"), 5, "named pipe")
    assert_user_error(invoke("train", "--resume", ck / "x.safetensors", "--data-dir", data_dir), 4, "not a directory")


# --- 16: the thousandth epoch costs what the first did ------------------------------------------

def test_a_long_run_redraws_and_writes_a_bounded_amount_per_epoch(data_dir, tmp_path):
    """On a terminal the live table shows the last epochs and one line for the rest, and
    the metrics file is appended to (the same file throughout), not rewritten whole."""
    out = tmp_path / "run"
    metrics = out / "model.metrics.csv"
    master, slave = pty.openpty()
    env = {**os.environ, "COLUMNS": "120", "TERM": "xterm"}
    proc = subprocess.Popen([sys.executable, "-m", "rmsprop_cli", "train", "--epochs", "1000000000", "--limit", "100",
                             "--hidden", "4", "--output", str(out), "--data-dir", str(data_dir)],
                            stdin=slave, stdout=slave, stderr=slave, env=env)
    STARTED.append(proc)
    os.close(slave)
    screen = bytearray()

    def read():
        while True:
            try:
                chunk = os.read(master, 1 << 16)
            except OSError:
                return
            if not chunk:
                return
            screen.extend(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert wait_for(lambda: rows(metrics) >= 1, 120)
        inode = metrics.stat().st_ino
        assert wait_for(lambda: rows(metrics) >= 150, 120)
        assert metrics.stat().st_ino == inode   # appended, never replaced
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 130
    finally:
        proc.kill()
        reader.join(10)
        os.close(master)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.decode(errors="replace"))   # without colours
    last = text[text.rindex("Training"):]          # the table as the run left it
    epochs = [int(m) for m in re.findall(r"│\s+(\d+) │", last)]
    assert 10 <= len(epochs) <= 20 and epochs == list(range(epochs[0], epochs[0] + len(epochs))), last
    assert re.search(rf"1–{epochs[0] - 1}\s*│", last) and f"{epochs[0] - 1} earlier epochs not shown" in last, last


# --- a disk that fills up mid-run -----------------------------------------------------------------

def test_a_metrics_file_that_cannot_be_appended_to_does_not_end_the_run(data_dir, tmp_path, monkeypatch):
    """The metrics file is a convenience copy of the checkpoint's history: ENOSPC on it is one note."""
    import builtins
    import errno

    from rmsprop_cli import outputs

    class Full:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def tell(self):
            return self.f.tell()

        def write(self, text):
            raise OSError(errno.ENOSPC, "No space left on device")

    def full_disk_open(file, mode="r", *args, **kwargs):
        f = builtins.open(file, mode, *args, **kwargs)
        return Full(f) if "a" in mode else f

    monkeypatch.setattr(outputs, "open", full_disk_open, raising=False)
    ck = tmp_path / "model.safetensors"
    result = invoke("train", "--limit", "100", "--epochs", "4", "--hidden", "4", "--checkpoint-every", "2",
                    "--output", ck, "--data-dir", data_dir)
    assert result.exit_code == 0, result.output
    notes = [line for line in result.stderr.splitlines() if "model.metrics.csv" in line]
    assert len(notes) == 1 and "no space left on device" in notes[0] and "training goes on" in notes[0], result.stderr
    assert "Traceback" not in result.output
    assert [m["epoch"] for m in checkpoint.load(ck).history] == [1, 2, 3, 4]   # the whole history


@pytest.fixture
def small_disk(tmp_path):
    """A real 1 MiB tmpfs (root only)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def _fill(disk: Path) -> Path:
    """Another program fills the disk up."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    return filler


def test_a_disk_filling_up_keeps_the_run_going_without_its_metrics_file(data_dir, small_disk):
    ck = small_disk / "m.safetensors"
    proc = start(*LONG, "--output", ck.name, data_dir=data_dir, cwd=small_disk)
    try:
        assert wait_for(lambda: rows(small_disk / "m.metrics.csv") >= 1), stderr_of(proc)
        filler = _fill(small_disk)
        time.sleep(4)   # a page of rows (about 50 epochs of 10 ms) fills the metrics file's last block
        assert proc.poll() is None, stderr_of(proc)   # still training
        filler.unlink()   # room for the checkpoint
        proc.send_signal(signal.SIGINT)
        code, _, err = finish(proc)
    finally:
        proc.kill()
    assert code == 130, err
    lines = err.strip().splitlines()
    assert len(lines) == 2 and "Traceback" not in err, err
    assert lines[0].startswith("Note: cannot write ") and "m.metrics.csv (no space left on device)" in lines[0]
    assert "training goes on" in lines[0] and lines[1].startswith("Interrupted: stopped "), err
    assert len(checkpoint.load(ck).history) > rows(small_disk / "m.metrics.csv")   # the checkpoint has them all


def test_a_disk_filling_up_keeps_the_last_checkpoint_and_says_how_to_resume(data_dir, small_disk):
    ck = small_disk / "m.safetensors"
    proc = start(*LONG, "--checkpoint-every", "20", "--output", ck.name, data_dir=data_dir, cwd=small_disk)
    try:
        assert wait_for(ck.exists), stderr_of(proc)
        filler = _fill(small_disk)
        code, _, err = finish(proc)
    finally:
        proc.kill()
    assert code == 5, err
    lines = err.strip().splitlines()
    assert "Traceback" not in err and len(lines) <= 2 and all(line.startswith("Note: ") for line in lines[:-1]), err
    message = lines[-1]
    assert message.startswith("Error: cannot save the checkpoint of epoch ") and "no space left on device" in message
    assert "the previous checkpoint m.safetensors is intact" in message, message
    epochs = len(checkpoint.load(ck).history)
    assert epochs >= 20 and epochs % 20 == 0
    filler.unlink()
    resume = message.split("resume from it with: ")[1]
    done = subprocess.run([*shlex.split(resume.replace("rmsprop", f"{sys.executable} -m rmsprop_cli", 1)),
                           "--epochs", str(epochs + 1), "--data-dir", str(data_dir)],
                          cwd=small_disk, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert len(checkpoint.load(ck).history) == epochs + 1


# --- a checkpoint reached through a symbolic link -------------------------------------------------

def test_a_symlinked_checkpoint_is_locked_and_written_as_its_real_file(data_dir, tmp_path):
    real = tmp_path / "real" / "model.safetensors"
    assert invoke("train", *TINY, "--output", real, "--data-dir", data_dir).exit_code == 0
    alias = tmp_path / "alias.safetensors"
    alias.symlink_to(Path("real") / "model.safetensors")
    first = start("--resume", real, "--epochs", 100000, data_dir=data_dir)
    try:
        assert wait_for(lambda: rows(real.with_name("model.metrics.csv")) >= 2), stderr_of(first)
        second = start("--resume", alias, "--epochs", 100000, data_dir=data_dir)
        code, _, err = finish(second, timeout=30)
        assert code == 75, err
        assert f"is being written by another run (pid {first.pid} on " in one_line(err)
        first.send_signal(signal.SIGINT)
        code, _, err = finish(first)
        assert code == 130, err
    finally:
        first.kill()
    epochs = len(checkpoint.load(real).history)
    result = invoke("train", "--resume", alias, "--epochs", epochs + 1, "--data-dir", data_dir)
    assert result.exit_code == 0, result.output
    assert alias.is_symlink() and os.readlink(alias) == str(Path("real") / "model.safetensors")
    assert len(checkpoint.load(real).history) == epochs + 1
    assert not (tmp_path / "alias.metrics.csv").exists()   # the metrics file is the real checkpoint's

    dangling = tmp_path / "new.safetensors"
    dangling.symlink_to(tmp_path / "real" / "new-model.safetensors")
    assert invoke("train", *TINY, "--output", dangling, "--data-dir", data_dir).exit_code == 0
    assert dangling.is_symlink() and len(checkpoint.load(tmp_path / "real" / "new-model.safetensors").history) == 1
    nowhere = tmp_path / "nowhere.safetensors"
    nowhere.symlink_to(tmp_path / "missing" / "model.safetensors")
    assert_user_error(invoke("train", *TINY, "--output", nowhere, "--data-dir", data_dir), 5,
                      "symbolic link to", "whose folder does not exist")
    assert not (tmp_path / "missing").exists() and nowhere.is_symlink()


# --- Ctrl-C while typer builds its commands -------------------------------------------------------

@pytest.mark.parametrize("raised,code,label", [
    (KeyboardInterrupt(), 130, "Interrupted"),
    ("SIGTERM", 143, "Terminated (SIGTERM)"),
])
def test_a_ctrl_c_before_any_command_runs_is_one_line(monkeypatch, capsys, raised, code, label):
    from rmsprop_cli import cli
    from rmsprop_cli.errors import StoppedAtOnce

    if raised == "SIGTERM":
        raised = StoppedAtOnce(signal.SIGTERM)

    def app(**kwargs):
        raise raised

    monkeypatch.setattr(cli, "app", app)
    try:
        with pytest.raises(SystemExit) as exit_:
            cli.main()
    except KeyboardInterrupt:
        pytest.fail("KeyboardInterrupt escaped main()")
    assert exit_.value.code == code
    err = capsys.readouterr().err
    assert one_line(err).startswith(f"{label}: stopped at once")
