"""The thread policy of a training step: given timings in, thread counts out; and
training whose thread count changes from part to part is bit for bit the same."""

import numpy as np
import pytest

from rmsprop_cli import threads
from rmsprop_cli.errors import ConfigError
from rmsprop_cli.threads import ThreadPolicy, choices

CHUNK = 38  # batches per chunk of the default recipe (1,500 batches, 40 progress refreshes an epoch)
QUIET = {2: 0.13e-3, 1: 0.19e-3}   # seconds per batch measured on this 2-core machine
LOADED = {2: 0.90e-3, 1: 0.20e-3}  # with one busy process beside it


def simulate(policy, rate, seconds):
    """Train chunks until `seconds` of simulated time have passed; rate(threads, now) is the
    time per batch.  Returns (elapsed, [(now, threads, batches)])."""
    now, log = 0.0, []
    while now < seconds:
        left = CHUNK
        while left:
            n, count = policy.part(left)
            assert 1 <= count <= left and n in policy.counts
            took = count * rate(n, now)
            policy.record(n, count, took)
            log.append((now, n, count))
            now += took
            left -= count
    return now, log


def batches(log, n, since=0.0, until=np.inf):
    return sum(c for t, k, c in log if k == n and since <= t < until)


def total(log):
    return sum(c for _, _, c in log)


@pytest.mark.parametrize("rates,best", [(QUIET, 2), (LOADED, 1)], ids=["quiet", "loaded"])
def test_the_policy_settles_on_the_faster_count_and_probing_costs_little(rates, best):
    elapsed, log = simulate(ThreadPolicy(choices(2)), lambda n, now: rates[n], 20.0)
    ideal = total(log) * rates[best]
    assert batches(log, best) / total(log) > 0.97
    assert elapsed < 1.03 * ideal  # the target: at most 1.1 times the best count's time


def test_the_policy_switches_when_load_comes_and_back_when_it_goes():
    def rate(n, now):
        return (LOADED if 5.0 <= now < 10.0 else QUIET)[n]

    policy = ThreadPolicy(choices(2))
    elapsed, log = simulate(policy, rate, 15.0)
    # Within a few chunks of the load arriving, training is on one thread...
    assert batches(log, 2, 5.05, 10.0) < 6 * CHUNK
    assert batches(log, 1, 5.05, 10.0) > 0.97 * (batches(log, 1, 5.05, 10.0) + batches(log, 2, 5.05, 10.0) - 6 * CHUNK)
    # ...and back on two at most one probing interval after it has gone.
    back = min(t for t, n, c in log if t >= 10.0 and n == 2)
    assert back - 10.0 <= 2.01  # the longest wait between probes
    assert batches(log, 2, back + 0.1) / total([e for e in log if e[0] >= back + 0.1]) > 0.97
    assert policy.threads == 2 and policy.switches >= 2


@pytest.mark.parametrize("slow", [0.9e-3, 5e-3, 12e-3])  # two threads beside a busy process: 0.9 to 13 ms a batch here
def test_lucky_probes_under_load_do_not_keep_training_on_the_slow_count(slow):
    """A probe of two threads that happens to run while the busy process sleeps looks fast;
    the short parts that follow a switch show the truth, and the policy goes back at once."""
    calls = []

    def rate(n, now):
        calls.append(n)
        if n == 2:
            return 0.15e-3 if len(calls) % 2 else slow  # every other part of two threads is lucky
        return LOADED[1]

    elapsed, log = simulate(ThreadPolicy(choices(2)), rate, 20.0)
    assert elapsed < 1.07 * total(log) * LOADED[1]


@pytest.mark.parametrize("lucky", [0.2, 0.5])
def test_randomly_lucky_probes_cost_little(lucky):
    rng = np.random.default_rng(3)
    elapsed, log = simulate(ThreadPolicy(choices(2)),
                            lambda n, now: (0.15e-3 if rng.random() < lucky else 8e-3) if n == 2 else LOADED[1], 20.0)
    assert elapsed < 1.05 * total(log) * LOADED[1]


@pytest.mark.parametrize("chance,bound", [(0.005, 1.01), (0.01, 1.01), (0.05, 1.04)])
def test_hiccups_on_a_quiet_machine_do_not_move_training_off_all_threads(chance, bound):
    """A chunk that loses a scheduler time slice (2.5 times slower, by chance) is not a change of load."""
    rng = np.random.default_rng(1)
    _, log = simulate(ThreadPolicy(choices(2)), lambda n, now: QUIET[n] * (2.5 if rng.random() < chance else 1), 20.0)
    assert batches(log, 2) / total(log) > 0.96
    rng = np.random.default_rng(1)
    slowed = sum(c * QUIET[n] * (2.5 if rng.random() < chance else 1) for _, n, c in log)
    assert slowed < bound * total(log) * QUIET[2] * (1 + 1.5 * chance)


def test_noisy_timings_cost_little():
    rng = np.random.default_rng(2)
    elapsed, log = simulate(ThreadPolicy(choices(2)), lambda n, now: QUIET[n] * rng.lognormal(0, 0.5), 20.0)
    assert elapsed < 1.05 * total(log) * QUIET[2] * np.exp(0.5 ** 2 / 2)


def test_a_probe_of_a_much_slower_count_is_short():
    """Slow batches (a wide network) whose two-thread step is five times slower: probes are
    sized by the slower count, so they cost about 2% at most."""
    rates = {2: 25e-3, 1: 5e-3}
    elapsed, log = simulate(ThreadPolicy(choices(2)), lambda n, now: rates[n], 60.0)
    assert elapsed < 1.03 * total(log) * rates[1]


@pytest.mark.parametrize("rates,best", [
    ({6: 1.0e-3, 3: 0.98e-3, 2: 0.97e-3, 1: 0.3e-3}, 1),   # every count above one stalls alike
    ({4: 0.9e-3, 2: 0.88e-3, 1: 0.25e-3}, 1),
    ({8: 0.40e-3, 4: 0.42e-3, 2: 0.15e-3, 1: 0.25e-3}, 2),  # a dip that halving alone would not cross
], ids=["6-cores", "4-cores", "8-cores"])
def test_one_thread_and_two_are_always_within_reach(rates, best):
    policy = ThreadPolicy(choices(max(rates)))
    elapsed, log = simulate(policy, lambda n, now: rates[n], 20.0)
    assert policy.threads == best
    assert elapsed < 1.03 * total(log) * rates[best]


def test_on_many_cores_the_policy_walks_to_the_best_count():
    rates = {8: 0.40e-3, 4: 0.10e-3, 2: 0.15e-3, 1: 0.25e-3}  # a laptop whose other programs take some cores
    policy = ThreadPolicy(choices(8))
    _, log = simulate(policy, lambda n, now: rates[n], 10.0)
    assert policy.threads == 4
    assert batches(log, 4, 2.0) / total([e for e in log if e[0] >= 2.0]) > 0.95


def test_choices_halve_down_to_one_and_hold_two():
    assert choices(1) == (1,) and choices(2) == (2, 1) and choices(8) == (8, 4, 2, 1) and choices(6) == (6, 3, 2, 1)
    assert choices(3) == (3, 2, 1) and choices(16) == (16, 8, 4, 2, 1)


def test_a_single_count_is_never_probed():
    policy = ThreadPolicy((3,))
    _, log = simulate(policy, lambda n, now: 1e-4, 1.0)
    assert {n for _, n, _ in log} == {3} and policy.probes == 0


def test_threads_can_be_pinned_and_bad_counts_are_refused(monkeypatch):
    import numba

    before = numba.get_num_threads()
    monkeypatch.delenv("NUMBA_NUM_THREADS", raising=False)
    try:
        threads.pin(1)
        assert threads.pinned() == 1 and threads.policy(2).counts == (1,)
        assert "pinned to 1 by --threads" in threads.describe(2)
        threads.pin(None)
        assert threads.pinned() is None and threads.policy(2).counts == choices(2)
        for bad in (0, -1, numba.config.NUMBA_NUM_THREADS + 1):
            with pytest.raises(ConfigError, match="--threads must be a whole number from 1 to"):
                threads.pin(bad)
        monkeypatch.setenv("NUMBA_NUM_THREADS", "1")
        assert threads.pinned() == 1 and "NUMBA_NUM_THREADS" in threads.describe(2)
    finally:
        threads.pin(None)
        numba.set_num_threads(before)


class Scripted:
    """A policy that runs each part on the next count of a cycle, a few batches at a time."""

    def __init__(self, cycle, size):
        self.cycle, self.size, self.i = cycle, size, 0
        self.counts = tuple(sorted(set(cycle), reverse=True))

    @property
    def threads(self):
        return self.cycle[self.i % len(self.cycle)]

    def part(self, left):
        return self.threads, min(self.size, left)

    def record(self, n, count, seconds):
        self.i += 1


@pytest.mark.parametrize("options", [{"optimizer": "rmsprop"}, {"optimizer": "adam", "clip_norm": 0.5},
                                     {"optimizer": "rmsprop", "centered": True, "momentum": 0.9}], ids=str)
def test_changing_the_thread_count_mid_run_changes_no_bit(options):
    """Chunks split into parts on 1, 2 and 3 threads in turn end with the same weights,
    optimizer state, loss and counts as the same chunks on one thread.  (The loss is equal by
    construction, summed per row in row order across parts; with losses of this size float64
    sums of the float32 terms would happen to be exact in any order too.)"""
    from test_backend_cpu import backend

    rng = np.random.default_rng(11)
    images = (rng.random((150, 28, 28)) < 0.25).astype(np.uint8) * rng.integers(1, 256, (150, 28, 28)).astype(np.uint8)
    y = rng.integers(0, 10, 150)
    order = rng.permutation(150)
    results = []
    for policy in (ThreadPolicy((1,)), Scripted((2, 1, 3), 2), Scripted((1, 2), 3)):
        be, _, _ = backend(images=images, y=y, hidden=(40, 20), batch_size=16, **options)
        be.policy = policy
        outs = [be.train_chunk(order, first * 16, 4) for first in (0, 4, 8)]
        results.append((outs, be.params(), be.optimizer_state(), be.step))
    outs1, theta1, state1, step1 = results[0]
    assert outs1[-1][2:] == (150 - 8 * 16, -1)  # the last chunk runs out of images in its third batch
    for outs, theta, state, step in results[1:]:
        assert outs == outs1 and step == step1
        np.testing.assert_array_equal(theta, theta1)
        for name in state1:
            np.testing.assert_array_equal(state[name], state1[name])


def test_the_backend_follows_its_policy_and_reports_its_timings():
    """train_chunk runs exactly the parts the policy asks for and records each one."""
    from test_backend_cpu import backend

    rng = np.random.default_rng(12)
    images, y = rng.integers(0, 256, (64, 28, 28)).astype(np.uint8), rng.integers(0, 10, 64)
    be, _, _ = backend(images=images, y=y, hidden=(8,), batch_size=8)
    seen = []

    class Spy(Scripted):
        def record(self, n, count, seconds):
            seen.append((n, count))
            assert seconds > 0
            super().record(n, count, seconds)

    be.policy = Spy((1, 2), 3)
    assert be.train_chunk(rng.permutation(64), 0, 8)[2:] == (64, -1)
    assert seen == [(1, 3), (2, 3), (1, 2)]


@pytest.mark.parametrize("n", [1, 700, 1500])
def test_evaluation_gives_the_same_numbers_on_any_number_of_threads(n):
    from rmsprop_cli.activations import RELU
    from rmsprop_cli.backends.cpu import EVAL_ROWS, shard_buffers
    from rmsprop_cli.kernels import steps as K

    rng = np.random.default_rng(n)
    sizes = np.array([784, 24, 10])
    theta = (rng.normal(size=784 * 24 + 24 + 24 * 10 + 10) * 0.1).astype(np.float32)
    images, y = rng.integers(0, 256, (n, 784)).astype(np.uint8), rng.integers(0, 10, n)
    results = []
    for shards in (1, 2, 3):
        confusion = np.zeros((10, 10), np.int64)
        loss, correct = K.evaluate(images, y, theta, sizes, *shard_buffers(sizes, EVAL_ROWS, shards), confusion, RELU)
        results.append((loss, correct, confusion))
    for loss, correct, confusion in results[1:]:
        assert (loss, correct) == results[0][:2]
        np.testing.assert_array_equal(confusion, results[0][2])


def _cli(*args, env=None):
    import os
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "rmsprop_cli", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=120)


@pytest.mark.parametrize("command", ["train", "evaluate", "compare", "predict"])
@pytest.mark.parametrize("value", ["0", "-2", "100000", "99999999999999999999"])
def test_a_thread_count_the_machine_cannot_run_is_one_line_exit_2(command, value, tmp_path):
    from typer.testing import CliRunner

    from rmsprop_cli.cli import app

    args = {"train": [], "compare": [], "evaluate": [tmp_path / "none.safetensors"],
            "predict": [tmp_path / "none.safetensors", tmp_path / "none.png"]}[command]
    result = CliRunner().invoke(app, [command, *map(str, args), "--threads", value])
    assert result.exit_code == 2, result.output
    message = result.stderr.strip()
    assert message.startswith("Error: --threads must be a whole number from 1 to") and "\n" not in message
    assert "Traceback" not in result.output


def test_pinned_threads_train_the_same_bits_as_chosen_ones(data_dir, tmp_path):
    """--threads 1 and the measured choice give the same checkpoint (weights, state, history)."""
    from rmsprop_cli import checkpoint

    runs = {}
    for name, extra in {"chosen": [], "one": ["--threads", "1"]}.items():
        out = tmp_path / name / "model.safetensors"
        done = _cli("train", "--limit", "3000", "--hidden", "24", "--epochs", "2", "--data-dir", data_dir,
                    "--output", out, "--json", *extra)
        assert done.returncode == 0, done.stderr
        runs[name] = checkpoint.load(out)
    a, b = runs["chosen"], runs["one"]
    np.testing.assert_array_equal(a.theta, b.theta)
    np.testing.assert_array_equal(a.opt_state["v"], b.opt_state["v"])
    assert [{k: v for k, v in m.items() if k != "seconds"} for m in a.history] == \
        [{k: v for k, v in m.items() if k != "seconds"} for m in b.history]


def test_info_says_how_training_chooses_its_threads():
    import json

    import numba

    about = json.loads(_cli("info", "--json").stdout)
    if numba.config.NUMBA_NUM_THREADS > 1 and about["threading_layer"] == "omp":
        assert about["training_threads_choice"].startswith("chosen per chunk of batches from")
    pinned = json.loads(_cli("info", "--json", env={"NUMBA_NUM_THREADS": "1"}).stdout)
    assert pinned["training_threads_choice"] == "pinned to 1 by NUMBA_NUM_THREADS"
    text = _cli("info", env={"COLUMNS": "200"}).stdout
    assert "Training threads" in text


def test_the_thread_count_is_restored_after_every_part_and_after_an_error():
    import numba

    from rmsprop_cli.backends.cpu import numba_threads
    from test_backend_cpu import backend

    before = numba.get_num_threads()
    rng = np.random.default_rng(13)
    images, y = rng.integers(0, 256, (64, 28, 28)).astype(np.uint8), rng.integers(0, 10, 64)
    be, _, _ = backend(images=images, y=y, hidden=(8,), batch_size=16)
    be.policy = Scripted((1, 2), 1)
    be.train_chunk(rng.permutation(64), 0, 4)
    be.evaluate(images, y)
    assert numba.get_num_threads() == before
    with pytest.raises(KeyboardInterrupt):
        with numba_threads(1):
            assert numba.get_num_threads() == 1
            raise KeyboardInterrupt
    assert numba.get_num_threads() == before


def test_evaluation_uses_every_thread_unless_training_found_fewer_faster(monkeypatch):
    import numba

    from rmsprop_cli.backends import cpu
    from test_backend_cpu import backend

    if numba.get_num_threads() < 2:
        pytest.skip("needs two threads")
    used = []
    real = cpu.K.evaluate
    monkeypatch.setattr(cpu.K, "evaluate", lambda *a: (used.append((a[6].shape[0], numba.get_num_threads())),
                                                        real(*a))[1])
    rng = np.random.default_rng(14)
    images, y = rng.integers(0, 256, (64, 28, 28)).astype(np.uint8), rng.integers(0, 10, 64)
    be, _, _ = backend(images=images, y=y, hidden=(8,), batch_size=16)
    shards = len(be.eval_bufs[2])
    be.policy = ThreadPolicy((2, 1))
    be.evaluate(images, y)
    be.policy.current = 1  # training found one thread faster
    be.evaluate(images, y)
    assert used == [(shards, numba.get_num_threads()), (1, 1)]
