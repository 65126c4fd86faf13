"""`rmsprop landscape`: the surfaces' compiled values and gradients against
numpy formulas and finite differences, each optimizer's compiled path against
the float64 references of its formula (naive_optim.py) on the same surface, the
ravine's message as computed numbers, and the figures."""

import json

import numpy as np
import pytest

import naive_optim as N
from rmsprop_cli import landscape as L
from rmsprop_cli import optim
from rmsprop_cli.kernels import surfaces as K
from rmsprop_cli.surfaces import NAMES, REGISTRY, SURFACES, TOLERANCE


def naive_value(name, x, y):
    """The surfaces as their usual definitions write them (float64 numpy)."""
    if name == "ravine":
        return 0.05 * x ** 2 + 5.0 * y ** 2
    if name == "rosenbrock":
        return (1 - x) ** 2 + 100 * (y - x ** 2) ** 2
    if name == "beale":
        return sum((c - x * (1 - y ** k)) ** 2 for k, c in ((1, 1.5), (2, 2.25), (3, 2.625)))
    if name == "saddle":
        return x ** 2 + 0.25 * y ** 4 - 0.5 * y ** 2
    raise ValueError(name)


def naive_gradient(name, x, y):
    """∂f/∂x, ∂f/∂y by hand from naive_value's forms (tested against finite differences below)."""
    if name == "ravine":
        return np.array([0.1 * x, 10.0 * y])
    if name == "rosenbrock":
        return np.array([-2 * (1 - x) - 400 * x * (y - x ** 2), 200 * (y - x ** 2)])
    if name == "beale":
        terms = [(c - x * (1 - y ** k), k) for k, c in ((1, 1.5), (2, 2.25), (3, 2.625))]
        return np.array([sum(-2 * t * (1 - y ** k) for t, k in terms),
                         sum(2 * t * x * k * y ** (k - 1) for t, k in terms)])
    if name == "saddle":
        return np.array([2 * x, y ** 3 - y])
    raise ValueError(name)


def points(surface, n, seed):
    rng = np.random.default_rng(seed)
    return np.column_stack([rng.uniform(*surface.xlim, n), rng.uniform(*surface.ylim, n)])


@pytest.mark.parametrize("name", NAMES)
def test_compiled_surface_matches_its_formula(name):
    s = SURFACES[name]
    for x, y in points(s, 200, 1):
        assert K.value(s.kind, x, y) == pytest.approx(naive_value(name, x, y), rel=1e-12, abs=1e-12)
        np.testing.assert_allclose(K.gradient(s.kind, x, y), naive_gradient(name, x, y), rtol=1e-12, atol=1e-12)
    assert K.value(s.kind, *s.minimum) == pytest.approx(s.min_loss, abs=1e-15)
    np.testing.assert_allclose(K.gradient(s.kind, *s.minimum), 0.0, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_gradients_match_finite_differences(name):
    """Central differences of the compiled value, h = 1e-6: error O(h²·f''') plus rounding O(1e-16·f/h)."""
    s, h = SURFACES[name], 1e-6
    for x, y in points(s, 100, 2):
        fd = [(K.value(s.kind, x + h, y) - K.value(s.kind, x - h, y)) / (2 * h),
              (K.value(s.kind, x, y + h) - K.value(s.kind, x, y - h)) / (2 * h)]
        scale = 1.0 + abs(K.value(s.kind, x, y))
        np.testing.assert_allclose(K.gradient(s.kind, x, y), fd, atol=1e-6 * scale)
        np.testing.assert_allclose(naive_gradient(name, x, y), fd, atol=1e-6 * scale)


def test_minimum_is_the_least_value_of_the_window():
    for s in REGISTRY:
        xs, ys, z = L.contour_grid(s)
        assert z.min() >= s.min_loss - 1e-12, s.name
        assert K.value(s.kind, *s.start) > s.min_loss + TOLERANCE, s.name


def reference_path(surface, recipe, steps):
    """The float64 path of naive_optim's formula for the recipe, from the surface's start."""
    o = recipe.to_dict()
    lr_of = N.optax_schedule_of(o, steps)
    theta = np.array(surface.start, np.float32).astype(float)   # the start as the kernels have it
    s = {k: np.zeros(2) for k in "vmb"}
    if "v" in optim.buffers(recipe):
        s["v"][:] = recipe.initial_accumulator or 0.0
    out = [theta]
    with np.errstate(over="ignore", invalid="ignore"):   # a diverging reference overflows, as ours does
        for count in range(steps):
            theta = N.update(o, theta, naive_gradient(surface.name, *theta), s, lr_of(count), count + 1)
            out.append(theta)
    return np.array(out)


# Options tried on each surface, beside each optimizer's defaults (applied where they apply).
OPTIONS = [{}, {"centered": True}, {"momentum": 0.9, "nesterov": True}, {"eps_placement": "outside"},
           {"bias_correction": True}, {"rho": 0.99}, {"clip_norm": 0.5}, {"clip_value": 0.3},
           {"weight_decay": 0.05}, {"weight_decay": 0.05, "decoupled_decay": True},
           {"schedule": "cosine", "warmup_steps": 10}, {"schedule": "exponential", "decay_rate": 0.3},
           {"beta1": 0.5, "beta2": 0.9}]
STEPS = 60
# Paths in float32 with float32 gradients against float64 ones, over the first 60 updates, as a fraction of
# the window (or of the point, beyond it): measured ≤ 6e-7, and 5.9e-6 for SGD with Nesterov momentum as it
# diverges on beale.  Later, RMSProp's and Lion's steps of about ±lr around a minimum amplify the float32
# roundings (1e-2 apart after 200 updates on rosenbrock) while both still do what their formula says.
PATH_TOL = 2e-5


def cases():
    for s in REGISTRY:
        for name in optim.NAMES:
            for options in OPTIONS:
                if all(k in optim.OPTIMIZERS[name].options for k in options):
                    yield pytest.param(s.name, name, options, id=f"{s.name}-{name}-{'-'.join(options) or 'defaults'}")


@pytest.mark.parametrize("surface,name,options", list(cases()))
def test_path_matches_float64_reference(surface, name, options):
    s = SURFACES[surface]
    recipe = L.recipes(s, [name], STEPS, {}, options)[name]
    ours, losses, diverged = L.path(s, recipe, STEPS)
    exact = reference_path(s, recipe, STEPS)
    np.testing.assert_allclose(losses, [K.value(s.kind, *p) for p in ours.astype(float)], rtol=1e-12, atol=1e-12)
    if diverged is not None:   # too large a step for that surface (SGD with momentum): so is the reference's
        assert len(ours) == diverged and not naive_value(surface, *exact[diverged]) < 1e29
    else:
        assert len(ours) == STEPS + 1
    window = max(s.xlim[1] - s.xlim[0], s.ylim[1] - s.ylim[0])
    err = np.max(np.abs(ours - exact[:len(ours)]) / (window + np.abs(exact[:len(ours)])))
    assert err <= PATH_TOL, err


# --- the ravine's message, as computed numbers ------------------------------------------------------------

def default_rows(surface="ravine"):
    return {r["optimizer"]: r for r in L.landscape(surface, figure=False)["optimizers"]}


def test_on_the_ravine_rmsprop_reaches_the_minimum_before_sgd():
    rows = default_rows()
    rms, sgd = rows["rmsprop"]["steps_to_tolerance"], rows["sgd"]["steps_to_tolerance"]
    assert rms is not None and sgd is not None and rms < sgd, (rms, sgd)
    # SGD's one step size: the largest stable across the valley (lr 0.18 < 2/10) zigzags across it first,
    # and then shrinks x by only 1.8% per step along it.
    y = np.asarray(rows["sgd"]["path"])[:10, 1]
    assert np.all(np.sign(y[1:]) == -np.sign(y[:-1])), "SGD crosses the valley at every step"


def test_on_the_ravine_adagrad_steps_shrink_and_it_does_not_arrive():
    rows = default_rows()
    steps = np.linalg.norm(np.diff(np.asarray(rows["adagrad"]["path"]), axis=0), axis=1)
    assert np.all(np.diff(steps) <= 0), "every Adagrad step is no longer than the one before"
    assert steps[-1] < steps[0] / 10
    assert rows["adagrad"]["steps_to_tolerance"] is None
    # RMSProp, from the same η = 0.02, keeps its steps at about η per coordinate to the end (it then circles
    # the minimum at that distance): its last 50 are at least 10 times Adagrad's.
    eta = SURFACES["ravine"].lrs["rmsprop"]
    assert eta == SURFACES["ravine"].lrs["adagrad"]
    rms = np.linalg.norm(np.diff(np.asarray(rows["rmsprop"]["path"]), axis=0), axis=1)
    assert rms[-50:].min() > eta and rms[-50:].mean() > 10 * steps[-50:].mean()


def test_steps_to_tolerance_is_the_first_step_within_it():
    for name, r in default_rows("beale").items():
        losses = [K.value(SURFACES["beale"].kind, *p) for p in r["path"]]
        within = [i for i, f in enumerate(losses) if f - 0.0 <= TOLERANCE]
        assert r["steps_to_tolerance"] == (within[0] if within else None), name
        assert r["final_loss"] == pytest.approx(losses[-1], rel=1e-12) and r["final_point"] == r["path"][-1]


def test_a_diverging_path_is_reported_not_fatal():
    r = L.landscape("rosenbrock", ["sgd"], lrs={"sgd": 0.01}, steps=100, figure=False)["optimizers"][0]
    assert r["diverged_at"] is not None and r["diverged_at"] < 100
    assert len(r["path"]) == r["diverged_at"] and np.all(np.isfinite(r["path"]))
    assert r["steps_to_tolerance"] is None


# --- the command line ----------------------------------------------------------------------------------------

from typer.testing import CliRunner   # noqa: E402

from rmsprop_cli.cli import app   # noqa: E402

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_cli_writes_the_figure_and_the_gif(tmp_path):
    from PIL import Image

    from rmsprop_cli.plots_landscape import FRAMES, frame_steps

    result = invoke("landscape", "--animate", "--output", tmp_path, "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["figure"] == str(tmp_path / "ravine.png") and out["animation"] == str(tmp_path / "ravine.gif")
    assert [r["optimizer"] for r in out["optimizers"]] == list(optim.NAMES)
    with Image.open(tmp_path / "ravine.png") as png:
        assert png.format == "PNG" and png.size[0] >= 800 and png.size[1] >= 600
    with Image.open(tmp_path / "ravine.gif") as gif:
        assert gif.format == "GIF" and gif.n_frames == FRAMES == len(frame_steps(300))
        assert gif.size[0] >= 500 and gif.is_animated
        first = np.asarray(gif.convert("RGB"))
        gif.seek(gif.n_frames - 1)
        assert np.abs(np.asarray(gif.convert("RGB")).astype(int) - first).sum() > 0, "the paths grow"
    # The table: every optimizer with its lr, and "not reached" for Adagrad.
    table = invoke("landscape", "--output", tmp_path / "again.png")
    assert table.exit_code == 0, table.output
    assert "not reached" in table.output and "rmsprop" in table.output and (tmp_path / "again.png").exists()


def test_cli_options_reach_the_optimizers_that_take_them(tmp_path):
    result = invoke("landscape", "--surface", "rosenbrock", "--optimizers", "sgd,adagrad,rmsprop,adam",
                    "--steps", 400, "--lr", "rmsprop=0.01", "--centered", "--rho", 0.95, "--output", tmp_path,
                    "--json")
    assert result.exit_code == 0, result.output
    rows = {r["optimizer"]: r for r in json.loads(result.stdout)["optimizers"]}
    s = SURFACES["rosenbrock"]
    assert rows["rmsprop"]["lr"] == 0.01 and rows["adam"]["lr"] == s.lrs["adam"]
    recipe = L.recipes(s, ["rmsprop"], 400, {"rmsprop": 0.01}, {"centered": True, "rho": 0.95})["rmsprop"]
    np.testing.assert_array_equal(rows["rmsprop"]["path"], L.path(s, recipe, 400)[0].astype(float))
    plain = L.landscape("rosenbrock", ["rmsprop"], steps=400, lrs={"rmsprop": 0.01}, figure=False)
    assert plain["optimizers"][0]["path"] != rows["rmsprop"]["path"], "--centered changed RMSProp's path"
    assert len(rows["sgd"]["path"]) == 401


@pytest.mark.parametrize("args,message", [
    (["--surface", "himmelblau"], "--surface must be one of ravine, rosenbrock, beale, saddle"),
    (["--optimizers", "rmsprop,adamw"], "unknown optimizer 'adamw'"),
    (["--optimizers", ","], "--optimizers lists no optimizer"),
    (["--optimizers", "sgd,sgd"], "names an optimizer twice"),
    (["--optimizers", "sgd", "--lr", "adam=0.1"], "leaves out"),
    (["--lr", "rmsprop"], "--lr takes NAME=VALUE"),
    (["--lr", "rmsprop=-1"], "--lr must be a positive number"),
    (["--optimizers", "sgd,adam", "--centered"], "--centered applies to rmsprop, and none of"),
    (["--optimizers", "adam", "--momentum", "0.9"], "--momentum applies to"),
    (["--steps", "0"], "--steps must be a whole number from 1 to 20000"),
    (["--steps", "20001"], "--steps must be a whole number from 1 to 20000"),
    (["--warmup-steps", "301"], "longer than the path (--steps 300)"),
    (["--optimizers", "rmsprop", "--centered", "--bias-correction"], "--centered with --bias-correction"),
    (["--optimizers", "sgd", "--nesterov"], "--nesterov needs --momentum above 0"),
    (["--decay-rate", "0.5"], "--decay-rate does not apply to --schedule constant"),
    (["--rho", "1"], "--rho must be in [0, 1)"),
])
def test_cli_refuses_bad_input_in_one_line(args, message, tmp_path):
    result = invoke("landscape", *args, "--output", tmp_path)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) <= 2   # one line, which the terminal may wrap once
    assert list(tmp_path.iterdir()) == [], "nothing is written for a refused command"


def test_cli_never_replaces_a_users_file(tmp_path):
    mine = tmp_path / "notes.txt"
    mine.write_text("mine")
    result = invoke("landscape", "--output", mine)
    assert result.exit_code == 2 and "a figure is a .png file" in result.output
    (tmp_path / "ravine.gif").write_text("not a gif")
    result = invoke("landscape", "--animate", "--output", tmp_path)
    assert result.exit_code == 5 and "is not a GIF image; not replacing it" in result.output, result.output
    assert (tmp_path / "ravine.gif").read_text() == "not a gif" and not (tmp_path / "ravine.png").exists()
    assert mine.read_text() == "mine"


def test_cli_default_output_is_a_new_run_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        assert invoke("landscape", "--surface", "saddle", "--steps", 20).exit_code == 0
    made = sorted(tmp_path.glob("runs/*-landscape-saddle*/saddle.png"))
    assert len(made) == 2 and made[0].parent != made[1].parent


def test_without_matplotlib_the_table_still_comes(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    result = invoke("landscape", "--steps", 20, "--output", tmp_path)
    assert result.exit_code == 0, result.output
    assert "No figure" in result.output and "pip install 'rmsprop-cli[plot]'" in result.output
    monkeypatch.chdir(tmp_path)
    assert invoke("landscape", "--steps", 20).exit_code == 0
    assert not (tmp_path / "runs").exists(), "no empty run folder is left without matplotlib"


def test_stays_within_from_is_the_step_after_the_last_one_outside():
    for surface in ("ravine", "rosenbrock"):
        for name, r in default_rows(surface).items():
            outside = [i for i, p in enumerate(r["path"])
                       if K.value(SURFACES[surface].kind, *p) - SURFACES[surface].min_loss > TOLERANCE]
            expected = None if outside and outside[-1] == len(r["path"]) - 1 else (outside[-1] + 1 if outside else 0)
            assert r["stays_within_from"] == expected, (surface, name)
    rows = default_rows("rosenbrock")
    assert rows["lion"]["steps_to_tolerance"] is not None and rows["lion"]["stays_within_from"] is None


def test_step_and_exponential_schedules_decay_ten_times_over_a_path():
    s = SURFACES["ravine"]
    recipe = L.recipes(s, ["rmsprop"], 300, {}, {"schedule": "step", "decay_rate": 0.1})["rmsprop"]
    assert recipe.decay_steps == 30
    plain = L.path(s, L.recipes(s, ["rmsprop"], 300, {}, {})["rmsprop"], 300)[0]
    assert not np.array_equal(L.path(s, recipe, 300)[0], plain)
    assert L.recipes(s, ["rmsprop"], 300, {}, {"schedule": "step", "decay_steps": 7})["rmsprop"].decay_steps == 7


def test_python_api_takes_a_comma_separated_string_and_refuses_wrong_types():
    r = L.landscape(optimizers="sgd, rmsprop", lrs={"rmsprop": None}, steps=5, figure=False)
    assert [(x["optimizer"], x["lr"]) for x in r["optimizers"]] == [("sgd", 0.18), ("rmsprop", 0.02)]
    from rmsprop_cli.errors import ConfigError

    for bad in (dict(lrs="rmsprop=0.1"), dict(options={"warmup_steps": "5"}), dict(surface=["ravine"]),
                dict(steps="10")):
        with pytest.raises(ConfigError):
            L.landscape(figure=False, **bad)


def test_a_figure_that_cannot_be_written_exits_5(tmp_path):
    """A folder nobody may write into, root included: sysfs refuses new files."""
    import os
    from pathlib import Path

    target = Path("/sys/rmsprop-cli-test.png")
    if not Path("/sys").is_dir() or os.access("/sys", os.W_OK) and os.geteuid() != 0:
        pytest.skip("no sysfs here")
    result = invoke("landscape", "--steps", 10, "--output", target)
    assert result.exit_code == 5 and "cannot write /sys/rmsprop-cli-test.png" in result.output, result.output
    assert not target.exists()


def test_a_figure_is_written_through_the_users_link(tmp_path):
    real, link = tmp_path / "real.png", tmp_path / "link.png"
    link.symlink_to(real)
    assert invoke("landscape", "--steps", 10, "--animate", "--output", link).exit_code == 0
    assert link.is_symlink() and real.read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "real.gif").read_bytes()[:3] == b"GIF"   # beside the figure itself
