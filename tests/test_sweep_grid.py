"""A sweep's bookkeeping without training: the grid parsed and expanded, the per-optimizer
rules, the trial names, what a folder's records say to skip, resume or rerun, the summary
over seeds against numpy, the CSV, and the figure's data (not its pixels)."""

import itertools
import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from rmsprop_cli import grid as g
from rmsprop_cli import sweeps
from rmsprop_cli.cli import app
from rmsprop_cli.config import Recipe, build_recipe
from rmsprop_cli.errors import ConfigError
from rmsprop_cli.sweep_table import SweepTable, combinations, trial_row
from test_sweep import train_command

runner = CliRunner()


def test_sweep_takes_every_recipe_option_of_train_but_the_seed():
    from rmsprop_cli import cli_sweep

    assert sorted(p.name for p in cli_sweep.RECIPE) == sorted(g.SWEPT)


def test_sweep_help_imports_neither_numpy_nor_numba():
    import subprocess
    import sys

    code = ("import sys; from typer.testing import CliRunner; from rmsprop_cli.cli import app; "
            "r = CliRunner().invoke(app, ['sweep', '--help']); assert r.exit_code == 0, r.output; "
            "assert '--grid' in r.output and '--rho' in r.output and '--seed ' not in r.output; "
            "assert 'numpy' not in sys.modules and 'numba' not in sys.modules, 'imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_values_are_typed_as_train_types_them():
    grid = g.parse_grid(["lr=1e-4,3e-4", "batch-size=16,32", "centered=true,no", "optimizer=rmsprop,adam",
                         "hidden=128:64,256", "--val_split=0,0.1"])
    assert grid == {"lr": [1e-4, 3e-4], "batch_size": [16, 32], "centered": [True, False],
                    "optimizer": ["rmsprop", "adam"], "hidden": ["128,64", "256"], "val_split": [0.0, 0.1]}
    assert all(type(v) is int for v in grid["batch_size"]) and all(type(v) is float for v in grid["lr"])
    assert g.parse_grid(["lr=1e-3,0.001,1e-3"]) == {"lr": [1e-3]}   # one trial per distinct value


@pytest.mark.parametrize("items, words", [
    (["lr"], "NAME=V1,V2"), (["lr="], "NAME=V1,V2"), (["speed=1,2"], "not an option"),
    (["seed=0,1"], "--seeds"), (["n_inputs=784"], "not an option"), (["lr=1e-3", "lr=3e-3"], "twice"),
    (["lr=fast"], "not a number"), (["batch_size=1.5"], "not a whole number"), (["centered=maybe"], "true or false"),
    (["hidden=128:x"], "--hidden"), ([f"lr={','.join(['1'] * 1001)}"], "at most 1000"),
])
def test_bad_grids_are_refused(items, words):
    with pytest.raises(ConfigError, match=words):
        g.parse_grid(items)


def test_seeds():
    assert g.parse_seeds("0, 1,2,1") == [0, 1, 2]
    assert g.parse_seeds(None) == [0] and g.parse_seeds([3, 4]) == [3, 4]
    for bad, words in (("a", "whole numbers"), ("-1", "from 0"), ("", "whole numbers"), ([], "no seed")):
        with pytest.raises(ConfigError, match=words):
            g.parse_seeds(bad)


def test_expand_is_the_product_in_grid_order_with_seeds_innermost():
    grid = {"lr": [1e-3, 3e-3, 1e-2], "rho": [0.5, 0.9]}
    trials = g.expand(grid, {"epochs": 2}, [0, 1])
    expected = [(lr, rho, seed) for lr, rho in itertools.product(grid["lr"], grid["rho"]) for seed in (0, 1)]
    assert [(t.recipe.lr, t.recipe.rho, t.seed) for t in trials] == expected
    assert all(t.recipe.epochs == 2 for t in trials)
    assert [t.options for t in trials[:2]] == [{"lr": 1e-3, "rho": 0.5}] * 2
    assert len({t.name for t in trials}) == len(trials)
    # Each trial is the recipe train builds from the same options.
    assert trials[3].recipe == build_recipe({"epochs": 2, "lr": 1e-3, "rho": 0.9, "seed": 1})


def test_options_apply_only_to_the_optimizers_that_take_them():
    trials = g.expand({"optimizer": ["rmsprop", "adam", "sgd"], "rho": [0.5, 0.9]},
                      {"momentum": 0.5, "beta1": 0.8, "centered": True}, [0])
    got = [(t.recipe.optimizer, t.options["rho"], t.recipe.momentum, t.recipe.beta1, t.recipe.centered)
           for t in trials]
    assert got == [("rmsprop", 0.5, 0.5, None, True), ("rmsprop", 0.9, 0.5, None, True),
                   ("adam", None, None, 0.8, False), ("sgd", None, 0.5, None, False)]
    # A swept schedule: decay options only where the schedule decays.
    trials = g.expand({"schedule": ["constant", "exponential"]}, {"decay_rate": 0.9}, [0])
    assert [(t.recipe.schedule, t.recipe.decay_rate) for t in trials] == [("constant", None), ("exponential", 0.9)]


@pytest.mark.parametrize("grid, fixed, words", [
    ({"optimizer": ["adam", "sgd"]}, {"rho": 0.5}, "--rho applies to none"),
    ({"optimizer": ["adam", "sgd"], "centered": [True, False]}, {}, "--centered applies to none"),
    ({"rho": [0.5]}, {"optimizer": "adam"}, "does not apply to --optimizer adam"),
    ({"lr": [1e-3]}, {"lr": 1e-2}, "both given and swept"),
    ({"weight_decay": [1e-3]}, {"weight_decay": 0.0}, "both given and swept"),
    ({"warmup_steps": [10]}, {"warmup_steps": 0}, "both given and swept"),
    ({"centered": [True, False]}, {"bias_correction": True}, "combination centered=True"),
    ({"lr": [-1.0, 1e-3]}, {}, "combination lr=-1.0"),
    ({"lr": [1e-3] * 1, "rho": [i / 200 for i in range(101)]}, {}, None),
    ({"lr": [10.0 ** -i for i in range(1, 101)], "rho": [i / 200 for i in range(101)]}, {}, "at most 10000"),
])
def test_refused_sweeps(grid, fixed, words):
    if words is None:
        assert len(g.expand(grid, fixed, [0])) == 101
        return
    with pytest.raises(ConfigError, match=words):
        g.expand(grid, fixed, [0])


def test_trial_names_follow_the_whole_recipe():
    base = Recipe(epochs=2, limit=600)
    assert g.trial_name(base) == g.trial_name(Recipe(epochs=2, limit=600))
    assert g.trial_name(base).startswith("mlp784-128-64-10-rmsprop-lr0.001-b32-seed0-")
    variants = [Recipe(epochs=3, limit=600), Recipe(epochs=2, limit=601), Recipe(epochs=2, limit=600, eps=1e-8),
                Recipe(epochs=2, limit=600, seed=1), Recipe(epochs=2, limit=600, activation="tanh")]
    assert len({g.trial_name(r) for r in [base, *variants]}) == 6


def test_train_command_trains_the_same_recipe():
    """The arguments a trial prints for `rmsprop train`, parsed by train itself, give its recipe."""
    from rmsprop_cli import training

    seen = {}

    def fake_run(options, **kwargs):
        seen["recipe"] = build_recipe(options)
        return {"test_accuracy": 0.0, "test_loss": 0.0, "checkpoint": "x", "device": "cpu", "epochs": [],
                "recipe": {}}

    for t in g.expand({"optimizer": ["rmsprop", "momentum"], "hidden": ["32,16"]},
                      {"epochs": 3, "momentum": 0.5, "nesterov": True, "clip_norm": 1.0}, [5]):
        original, training.run = training.run, fake_run
        try:
            result = runner.invoke(app, ["train", *train_command(t.recipe), "--json"])
        finally:
            training.run = original
        assert result.exit_code == 0, result.output
        assert seen["recipe"] == t.recipe


# ---- the folder's records: skip, resume, rerun --------------------------------------------------

def _outcome(status, epochs=2, acc=0.9):
    history = [{"epoch": e, "loss": 1.0 / e, "accuracy": acc, "val_loss": 1.0, "val_accuracy": acc - 0.01 * (2 - e),
                "seconds": 0.5} for e in range(1, epochs + 1)]
    result = {"test_accuracy": acc, "test_loss": 0.3, "epochs": history} if status == "finished" else None
    return {"status": status, "result": result, "checkpoint": b"CKPT-" + status.encode() if status in
            ("finished", "interrupted") else None, "error": None if status == "finished" else status,
            "worker": "here:1"}


def test_plan_reads_what_each_trial_left(tmp_path):
    trials = g.expand({"lr": [1e-3, 2e-3, 3e-3, 4e-3, 5e-3, 6e-3]}, {"epochs": 2}, [0])
    finished, diverged, failed, interrupted, lost, fresh = trials
    for trial, status in ((finished, "finished"), (diverged, "diverged"), (failed, "failed"),
                          (interrupted, "interrupted"), (lost, "finished")):
        sweeps._save(tmp_path, trial, _outcome(status))
    (tmp_path / "trials" / f"{failed.name}.safetensors").write_bytes(b"a checkpoint a failed trial left")
    (tmp_path / "trials" / f"{lost.name}.safetensors").unlink()   # finished, but its checkpoint is gone
    done, todo = sweeps.plan(tmp_path, trials)
    assert set(done) == {finished.name, diverged.name}
    assert done[finished.name]["test_accuracy"] == 0.9 and done[diverged.name]["status"] == "diverged"
    trials_dir = tmp_path / "trials"
    assert todo == {failed.name: None, interrupted.name: trials_dir / f"{interrupted.name}.safetensors",
                    lost.name: None, fresh.name: None}
    assert todo[interrupted.name].read_bytes() == b"CKPT-interrupted"
    assert (tmp_path / "trials" / f"{finished.name}.metrics.csv").read_text().startswith("epoch,loss,accuracy")


def test_plan_ignores_a_record_of_another_recipe(tmp_path):
    (trial,) = g.expand({"lr": [1e-3]}, {}, [0])
    (other,) = g.expand({"lr": [2e-3]}, {}, [0])
    sweeps._save(tmp_path, other, _outcome("finished"))
    (tmp_path / "trials" / f"{other.name}.json").rename(tmp_path / "trials" / f"{trial.name}.json")
    (tmp_path / "trials" / f"{other.name}.safetensors").rename(tmp_path / "trials" / f"{trial.name}.safetensors")
    done, todo = sweeps.plan(tmp_path, [trial])
    # Its checkpoint is sent to be continued: training.run checks its recipe, and one that has trained
    # every epoch is evaluated rather than trained (sweep_trial._finished).
    assert done == {} and todo == {trial.name: tmp_path / "trials" / f"{trial.name}.safetensors"}
    (tmp_path / "trials" / f"{trial.name}.json").write_text("{not json")
    assert sweeps.plan(tmp_path, [trial])[0] == {}


@pytest.mark.parametrize("damage", [
    lambda r: {k: v for k, v in r.items() if k != "status"}, lambda r: {**r, "status": "done"},
    lambda r: {k: v for k, v in r.items() if k != "epochs"}, lambda r: {**r, "test_accuracy": "0.9"},
    lambda r: {**r, "epochs": [{"epoch": 1}]}, lambda r: [r], lambda r: {**r, "epochs": "many"},
    lambda r: {**r, "epochs": [{**r["epochs"][0], "epoch": "1"}]},
    lambda r: {**r, "epochs": [{**r["epochs"][0], "val_accuracy": ""}]},
])
def test_a_damaged_record_means_the_trial_runs_again(damage, tmp_path):
    (trial,) = g.expand({"lr": [1e-3]}, {}, [0])
    row = sweeps._save(tmp_path, trial, _outcome("finished"))
    (tmp_path / "trials" / f"{trial.name}.json").write_text(json.dumps(damage(row)))
    done, todo = sweeps.plan(tmp_path, [trial])
    assert done == {} and trial.name in todo


def test_a_deeply_nested_or_huge_record_is_not_read(tmp_path, monkeypatch):
    from rmsprop_cli import sweep_records

    (trial,) = g.expand({"lr": [1e-3]}, {}, [0])
    sweeps._save(tmp_path, trial, _outcome("finished"))
    record = tmp_path / "trials" / f"{trial.name}.json"
    record.write_text("[" * 200_000 + "]" * 200_000)
    assert sweeps.plan(tmp_path, [trial])[0] == {}
    sweeps._save(tmp_path, trial, _outcome("finished"))
    monkeypatch.setattr(sweep_records, "MAX_RECORD", record.stat().st_size - 1)
    assert sweeps.plan(tmp_path, [trial])[0] == {}


def test_a_record_from_another_grid_is_named_as_this_sweep_names_it(tmp_path):
    (old,) = g.expand({"lr": [1e-3]}, {"epochs": 2}, [0])
    sweeps._save(tmp_path, old, _outcome("finished"))
    (new,) = g.expand({"lr": [1e-3], "rho": [0.9]}, {"epochs": 2}, [0])   # rho 0.9 is the default: one recipe
    assert new.name == old.name
    copy = tmp_path / "copy"
    import shutil

    shutil.copytree(tmp_path / "trials", copy / "trials")
    done, _ = sweeps.plan(copy, [new])
    row = done[new.name]
    assert row["options"] == {"lr": 1e-3, "rho": 0.9} and row["checkpoint"] == str(copy / "trials" /
                                                                                   f"{new.name}.safetensors")
    assert row["test_accuracy"] == 0.9 and row["epochs_trained"] == 2


# ---- the summary over seeds ---------------------------------------------------------------------

def _known_table(rng, statuses=None):
    grid = {"lr": [1e-4, 1e-3, 1e-2], "rho": [0.5, 0.9]}
    trials = g.expand(grid, {"epochs": 2}, [0, 1, 2])
    rows = []
    for i, t in enumerate(trials):
        status = (statuses or {}).get(i, "finished")
        out = _outcome(status, acc=float(rng.uniform(0.8, 0.99)))
        rows.append(trial_row(t, status, out["result"], error=out["error"]))
    return SweepTable(rows, grid=grid, seeds=[0, 1, 2], fixed={"epochs": 2})


@pytest.mark.parametrize("seed", range(5))
def test_combinations_against_numpy(seed):
    rng = np.random.default_rng(seed)
    table = _known_table(rng, statuses={1: "diverged", 6: "failed", 7: "failed"})
    combos = combinations(list(table))
    assert len(combos) == 6
    for c in combos:
        mine = [r for r in table if r["options"] == c["options"]]
        done = [r for r in mine if r["status"] == "finished"]
        assert (c["finished"], c["diverged"], c["failed"]) == (
            len(done), sum(r["status"] == "diverged" for r in mine), sum(r["status"] == "failed" for r in mine))
        for score in ("final_val_accuracy", "test_accuracy", "seconds"):
            values = np.array([r[score] for r in done], dtype=np.float64)
            if len(values) == 0:
                assert c[score] == {"mean": None, "spread": None}
                continue
            assert math.isclose(c[score]["mean"], values.mean(), rel_tol=1e-12)
            if len(values) > 1:
                assert math.isclose(c[score]["spread"], values.std(ddof=1), rel_tol=1e-9, abs_tol=1e-15)
            else:
                assert c[score]["spread"] is None
    means = [c["final_val_accuracy"]["mean"] for c in combos if c["final_val_accuracy"]["mean"] is not None]
    assert means == sorted(means, reverse=True)   # the best first
    assert combos[-1]["finished"] == 0 or all(c["finished"] for c in combos)


def test_csv_and_json_rows(tmp_path):
    table = _known_table(np.random.default_rng(0), statuses={0: "failed"})
    lines = table.to_csv().splitlines()
    assert lines[0].split(",")[:5] == ["lr", "rho", "seed", "status", "final_val_accuracy"]
    assert len(lines) == 1 + len(table)
    first = lines[1].split(",")
    assert first[:4] == ["0.0001", "0.5", "0", "failed"] and first[4] == ""
    assert float(lines[2].split(",")[6]) == table[1]["test_accuracy"]
    d = json.loads(json.dumps(table.to_dict()))
    assert d["counts"] == {"finished": 17, "diverged": 0, "failed": 1, "interrupted": 0, "pending": 0}
    assert len(d["trials"]) == 18 and d["combinations"][0] == table.combinations[0]


# ---- the figure's data --------------------------------------------------------------------------

def test_heatmap_cells_from_a_known_table():
    pytest.importorskip("matplotlib")
    from rmsprop_cli import plots_sweep

    table = _known_table(np.random.default_rng(1), statuses={3: "diverged", 4: "diverged", 5: "diverged"})
    fig, cells = plots_sweep.draw(table)
    x, y = cells["axes"]
    assert (x["option"], x["scale"], y["option"], y["scale"]) == ("lr", "log", "rho", "linear")
    assert np.allclose(x["positions"], [-4, -3, -2]) and np.allclose(x["edges"], [-4.5, -3.5, -2.5, -1.5])
    assert np.allclose(y["edges"], [0.3, 0.7, 1.1])
    for j, rho in enumerate([0.5, 0.9]):
        for i, lr in enumerate([1e-4, 1e-3, 1e-2]):
            scores = [r["final_val_accuracy"] for r in table if r["options"] == {"lr": lr, "rho": rho}
                      and r["status"] == "finished"]
            if not scores:
                assert cells["mean"][j][i] is None and cells["count"][j][i] == 0
                continue
            assert math.isclose(cells["mean"][j][i], np.mean(scores), rel_tol=1e-12)
            assert math.isclose(cells["spread"][j][i], np.std(scores, ddof=1), rel_tol=1e-9)
    ax = fig.axes[0]
    drawn = ax.collections[0].get_array()
    assert drawn.shape == (2, 3) and drawn.mask[1, 0] and not drawn.mask[0, 0]   # lr 1e-4, rho 0.9: all diverged
    assert math.isclose(float(drawn[0, 2]), cells["mean"][0][2], rel_tol=1e-12)
    texts = sorted(t.get_text() for t in ax.texts)
    assert "—" in texts and f"{100 * cells['mean'][0][0]:.2f}%\n± {100 * cells['spread'][0][0]:.2f}" in texts
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0.0001", "0.001", "0.01"]
    assert ax.get_xlabel() == "lr (log scale)" and ax.get_ylabel() == "rho"
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_axis_scales():
    from rmsprop_cli import plots_sweep

    got = {name: plots_sweep._scale(values) for name, values in {
        "lr": [1e-4, 1e-3, 1e-2], "narrow": [1e-3, 3e-3], "rho": [0.5, 0.9, 0.99], "momentum": [0.0, 0.9, 0.99],
        "optimizer": ["rmsprop", "adam"], "flags": [True, False], "missing": [0.5, None]}.items()}
    assert got == {"lr": "log", "narrow": "linear", "rho": "log1m", "momentum": "log1m", "optimizer": "category",
                   "flags": "category", "missing": "category"}
    assert np.allclose(plots_sweep._positions([0.5, 0.9, 0.99], "log1m"), [math.log10(2), 1, 2])


def test_cells_without_a_validation_set_and_too_many_values():
    pytest.importorskip("matplotlib")
    from rmsprop_cli import plots_sweep

    trials = g.expand({"val_split": [0.0, 0.2], "lr": [1e-3, 3e-3]}, {"epochs": 2}, [0])
    rows = []
    for t in trials:
        result = _outcome("finished")["result"]
        if t.recipe.val_split == 0:
            result["epochs"] = [{**m, "val_loss": None, "val_accuracy": None} for m in result["epochs"]]
        rows.append(trial_row(t, "finished", result))
    table = SweepTable(rows, grid={"val_split": [0.0, 0.2], "lr": [1e-3, 3e-3]}, seeds=[0], fixed={})
    fig, cells = plots_sweep.draw(table)
    assert cells["mean"][0] == [None, 0.9] and cells["finished"][0] == [1, 1]
    assert sum(t.get_text() == "no validation\nset" for t in fig.axes[0].texts) == 2
    import matplotlib.pyplot as plt

    plt.close(fig)
    many = g.expand({"lr": [i * 1e-4 for i in range(1, 62)]}, {}, [0])
    table = SweepTable([trial_row(t, "pending") for t in many], grid={"lr": [t.recipe.lr for t in many]}, seeds=[0],
                       fixed={})
    with pytest.raises(ConfigError, match="61 values"):
        plots_sweep.draw(table)


def test_grid_values_from_python():
    from rmsprop_cli import api

    seen = {}

    def fake(grid, **kwargs):
        seen.update(grid=grid, seeds=kwargs["seeds"], fixed=kwargs["fixed"])

    original, sweeps.sweep = sweeps.sweep, fake
    try:
        api.sweep({"lr": np.array([1e-3, 1e-2]), "hidden": [16, (32, 8), "64:32"], "centered": [True, False],
                   "batch-size": np.int64(16)}, seeds=3, epochs=np.int32(2), eps=np.float64(1e-8))
    finally:
        sweeps.sweep = original
    assert seen["grid"] == {"lr": [1e-3, 1e-2], "hidden": ["16", "32,8", "64,32"], "centered": [True, False],
                            "batch_size": [16]}
    assert all(type(v) is float for v in seen["grid"]["lr"]) and type(seen["grid"]["batch_size"][0]) is int
    assert seen["seeds"] == [3] and seen["fixed"] == {"epochs": 2, "eps": 1e-8}
    assert type(seen["fixed"]["epochs"]) is int
    for bad in ({"lr": [None]}, {"lr": [b"1"]}, {"lr": [object()]}):
        with pytest.raises(ConfigError):
            api.sweep(bad)


def test_one_swept_option_is_a_line_with_a_band():
    pytest.importorskip("matplotlib")
    from rmsprop_cli import plots_sweep

    trials = g.expand({"optimizer": ["rmsprop", "adam"]}, {"epochs": 2}, [0, 1])
    rows = [trial_row(t, "finished", _outcome("finished", acc=a)["result"]) for t, a in zip(trials, (0.9, 0.92, 0.95, 0.96))]
    fig, cells = plots_sweep.draw(SweepTable(rows, grid={"optimizer": ["rmsprop", "adam"]}, seeds=[0, 1], fixed={}))
    assert cells["axes"][0]["scale"] == "category"
    assert np.allclose(cells["mean"], [0.91, 0.955]) and np.allclose(cells["spread"], [np.std([0.9, 0.92], ddof=1),
                                                                                     np.std([0.95, 0.96], ddof=1)])
    line = fig.axes[0].lines[0]
    assert np.allclose(line.get_xdata(), [0, 1]) and np.allclose(line.get_ydata(), [0.91, 0.955])
    import matplotlib.pyplot as plt

    plt.close(fig)
