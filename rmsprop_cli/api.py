"""The Python API: `from rmsprop_cli import train, evaluate, predict, compare, sweep`.

Each function is its command: keyword arguments named as the command's options
(`batch_size` for --batch-size; a flag is True or False; `mirror` a URL, a folder
or a list of them), returning what `--json` prints (a sweep: a SweepTable, a
list of its trials' rows with the summary beside them).  The CLI is a thin
layer over these; errors are the project's (rmsprop_cli.errors), with the
message the CLI would print.  A wrong keyword is a TypeError, as in any call.
"""

from __future__ import annotations

from pathlib import Path

from .grid import SWEPT, field_name, parse_grid, parse_seeds, parse_value

RECIPE_OPTIONS = SWEPT + ("seed",)


def _recipe(command: str, options: dict, allowed=RECIPE_OPTIONS) -> dict:
    """The recipe's options as the library takes them: None not given, a flag False not given,
    hidden widths as text."""
    unknown = [k for k in options if k not in allowed]
    if unknown:
        raise TypeError(f"{command}() got an unexpected keyword argument {unknown[0]!r}")
    out = {k: (None if v is False else _plain(v)) for k, v in options.items()}
    if isinstance(out.get("hidden"), (list, tuple, int)):
        out["hidden"] = _widths(out["hidden"])
    elif isinstance(out.get("hidden"), str):
        out["hidden"] = out["hidden"].replace(":", ",")   # as the grid writes them
    return out


def _plain(value):
    """A numpy number as the Python number it holds (np.float32(0.1) is 0.10000000149011612)."""
    import numbers

    if type(value) in (int, float, bool):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    return value


def _widths(value) -> str:
    """Hidden widths for the library: 128, (128, 64) or "128,64" as "128,64"."""
    if isinstance(value, (list, tuple)):
        return ",".join(str(_plain(w)) for w in value) or "none"
    return str(_plain(value))


def _grid_value(key: str, value):
    """One value of a grid given in Python: text is parsed as --grid parses it; numbers and flags kept."""
    from .errors import ConfigError

    if isinstance(value, str):
        return parse_value(key, value)
    if key == "hidden":
        return _widths(value)
    value = _plain(value)
    if value is None or not isinstance(value, (int, float, bool)):
        raise ConfigError(f"grid {key!r}: {value!r} is not a value of --{key.replace('_', '-')}")
    return value


def _mirrors(mirror) -> list[str] | None:
    if mirror is None or isinstance(mirror, (str, Path)):
        return [str(mirror)] if mirror else None
    return [str(m) for m in mirror] or None


def _threads(threads) -> None:
    from . import threads as policy

    policy.pin(threads)


def train(*, output=None, resume=None, checkpoint_every=None, early_stopping=None, data_dir=None, mirror=None,
          device="cpu", threads=None, reporter=None, callbacks=None, stop=None, **options) -> dict:
    """`rmsprop train`: train(epochs=5, lr=3e-3, rho=0.95) -> {"test_accuracy", "test_loss", "checkpoint",
    "device", "epochs", "recipe"}.  callbacks (fitting.Callbacks) see the progress; stop() is polled
    between chunks (by default Ctrl-C, SIGTERM and SIGHUP stop the run, after saving it)."""
    from . import training

    _threads(threads)
    return training.run(_recipe("train", options), device=device, data_dir=data_dir, mirrors=_mirrors(mirror),
                        output=output, reporter=reporter, callbacks=callbacks, resume=resume,
                        checkpoint_every=checkpoint_every, early_stopping=early_stopping, stop=stop)


def evaluate(checkpoint, *, limit=None, data_dir=None, mirror=None, device="cpu", threads=None,
             reporter=None) -> dict:
    """`rmsprop evaluate`: -> {"test_accuracy", "test_loss", "per_class_accuracy", "confusion_matrix"}."""
    from . import inference
    from .bounds import check_option

    _threads(threads)
    check_option("limit", limit)
    return inference.evaluate(checkpoint, device=device, data_dir=data_dir, mirrors=_mirrors(mirror), limit=limit,
                              reporter=reporter)


def predict(checkpoint, images, *, index=None, device="cpu", threads=None) -> dict:
    """`rmsprop predict`: images a path or a list of them -> {"predictions": [{"image", "digit", "top3",
    "probabilities"}]}."""
    from . import inference

    _threads(threads)
    images = [images] if isinstance(images, (str, Path)) else list(images)
    index = [index] if isinstance(index, int) else index
    return {"predictions": inference.predict(checkpoint, images, indices=index, device=device)}


def compare(*, optimizers="sgd,adagrad,rmsprop,adam", lr=None, output=None, data_dir=None, mirror=None,
            device="cpu", threads=None, reporter=None, callbacks_for=None, **options) -> dict:
    """`rmsprop compare`: optimizers a comma-separated string or a list, lr {name: rate} ->
    {"optimizers": [{"optimizer", "lr", "final_val_accuracy", ...}], "figure"}."""
    from . import experiments
    from .errors import ConfigError

    _threads(threads)
    names = [n.strip() for n in (optimizers.split(",") if isinstance(optimizers, str) else optimizers)
             if n.strip()]
    if lr is not None and not isinstance(lr, dict):
        raise ConfigError("lr for compare is {optimizer: rate}, such as {'sgd': 0.1}")
    recipe = _recipe("compare", options, ("epochs", "batch_size", "hidden", "val_split", "seed", "limit"))
    return experiments.compare(recipe, names, dict(lr or {}), device=device, data_dir=data_dir,
                               mirrors=_mirrors(mirror), output=output, reporter=reporter,
                               callbacks_for=callbacks_for)


def sweep(grid=None, *, seeds=(0,), workers=None, scheduler=None, output=None, data_dir=None, mirror=None,
          device="cpu", reporter=None, progress=None, again=None, stop=None, **options):
    """`rmsprop sweep`: grid {option: [values]} (or a list of "NAME=V1,V2" texts), seeds a list or
    "0,1,2", the other options fixed -> a SweepTable: one row per trial (pandas.DataFrame(table)), with
    .combinations (mean and spread over seeds, best first), .folder and .figure.

        table = sweep({"lr": [1e-3, 3e-3], "rho": [0.5, 0.9]}, seeds=[0, 1], epochs=5)
    """
    from .errors import ConfigError
    from .sweeps import sweep as run

    if grid is None:
        grid = {}
    if isinstance(grid, (list, tuple)):
        grid = parse_grid(list(grid))
    elif isinstance(grid, dict):
        parsed = {}
        for name, values in grid.items():
            if not isinstance(name, str):
                raise ConfigError(f"grid keys are option names such as 'lr'; got {name!r}")
            key = field_name(name)
            values = [values] if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__") else list(values)
            if not values:
                raise ConfigError(f"grid {name!r} lists no value")
            parsed[key] = list(dict.fromkeys(_grid_value(key, v) for v in values))
        grid = parsed
    else:
        raise ConfigError("grid is {option: [values]}, such as {'lr': [1e-3, 3e-3]}")
    return run(grid, seeds=parse_seeds(seeds), fixed=_recipe("sweep", options, SWEPT), output=output,
               scheduler=scheduler, workers=_plain(workers), device=device, data_dir=data_dir, mirrors=_mirrors(mirror),
               reporter=reporter, progress=progress, again=again, stop=stop)
