"""The one schema of a checkpoint's metadata, checked whole when a checkpoint is read.

safetensors metadata is str -> str; rmsprop-cli's values are JSON: `recipe`
(the Recipe's fields), `history` (one entry per epoch) and `info` (dataset
checksums, optimizer steps, the training position, the test result, early
stopping).  `read` parses them without recursing on what a file holds,
checks every type, range, length and the fields against each other (the
history's epochs count 1, 2, ...; the position lies inside the epoch the
recipe's batches make; the steps match the position), and returns values
every later use can trust.  Anything else is a CheckpointError: one line.

A key of `info` this module does not know is kept if it is plain JSON no
deeper than MAX_DEPTH (a later version, or another part of this one, may add
one); a key of the recipe or of a history entry it does not know is refused,
and so is a recipe that lacks any field (train writes them all; a default in
its place would silently change the run being continued).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import fields

from . import optim
from .bounds import shown
from .config import MNIST_TRAIN_IMAGES, OPTIMIZER_FIELDS, Recipe
FORMAT_VERSION = 2   # the checkpoint format train writes (checkpoint.py reads it from here)
from .errors import CheckpointError, ConfigError
from .hyper import DECAYING

# Sizes of the JSON texts.  safetensors caps its whole header at 100 MB; the
# history of a long run (about 170 bytes an epoch) is the only big one.
MAX_CHARS = {"recipe": 64 * 2**10, "info": 2**20, "history": 100 * 10**6}
MAX_DEPTH = 8            # of a JSON value under an info key this schema does not know
MAX_TEXT = 4096          # characters of a string under such a key
HEX32 = re.compile(r"[0-9a-f]{32}")
FILE_NAME = re.compile(r"[A-Za-z0-9._-]{1,255}")
U128 = 2**128
METRIC_KEYS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds")
POSITION_KEYS = ("epoch", "rng", "batch", "loss_sum", "correct", "seen", "seconds")
RECIPE_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,), "tuple[int, ...]": (list,),
                "int | None": (int, type(None)), "float | None": (int, float, type(None)),
                "str | None": (str, type(None))}


class Bad(Exception):
    """A problem found at a place in the metadata: (where, what)."""

    def __init__(self, where: str, what: str, section: str = "metadata"):
        super().__init__(where, what)
        self.where, self.what, self.section = where, what, section


class Newer(Bad):
    """A recipe field this version does not know: a newer rmsprop-cli wrote it."""


class Retired(Bad):
    """A recipe an older version trained that this one refuses to continue or use."""


def read(path, metadata: dict, version: int) -> tuple[Recipe, list[dict], dict]:
    """(recipe, history, info) of a checkpoint's metadata in format `version`, or CheckpointError."""
    try:
        recipe = _recipe(_parse(metadata, "recipe", None), version)
        history = _history(_parse(metadata, "history", "[]"), recipe)
        info = _info(_parse(metadata, "info", "{}"), recipe, history)
    except Newer as e:
        raise CheckpointError(f"{path} was written by a newer rmsprop-cli: its recipe has field {e.what}, which this "
                              "version does not know (running it without would not be the same run); upgrade "
                              "with: pip install -U rmsprop-cli") from None
    except Retired as e:
        raise CheckpointError(f"{path} was trained by an older rmsprop-cli with {e.what}") from None
    except Bad as e:
        what = "a damaged training position" if e.section == "position" else "damaged metadata"
        raise CheckpointError(f"{path} has {what} ({e.where}: {e.what}); it was edited or is corrupt, "
                              "and cannot be used") from None
    return recipe, history, info


def _parse(metadata: dict, key: str, default: str | None):
    text = metadata.get(key, default)
    if text is None:
        raise Bad(key, "missing")
    if len(text) > MAX_CHARS[key]:
        raise Bad(key, f"{len(text)} characters, more than the {MAX_CHARS[key]} rmsprop-cli ever writes")
    try:
        return json.loads(text)
    except RecursionError:  # json's C parser guards its own recursion: nesting deeper than Python's limit
        raise Bad(key, "nested too deeply") from None
    except ValueError as e:  # JSONDecodeError, and integers longer than Python converts
        reason = str(e) if len(str(e)) <= 100 else str(e)[:100].rsplit(" ", 1)[0] + "..."
        raise Bad(key, f"not valid JSON ({reason})") from None


def _is(value, *types) -> bool:
    """isinstance without bool passing for int or float."""
    if isinstance(value, bool):
        return bool in types
    return isinstance(value, types)


def _int(where, value, lo, hi, section="metadata"):
    if not _is(value, int) or not lo <= value <= hi:
        top = "2**128 - 1" if hi == U128 - 1 else hi
        raise Bad(where, f"must be a whole number from {lo} to {top}; got {shown(value)}", section)
    return value


def _num(where, value, lo=0.0, hi=math.inf, *, finite=True, section="metadata"):
    """A number in [lo, hi]; with finite=False also NaN or +inf (a loss of weights gone bad)."""
    if not _is(value, int, float):
        raise Bad(where, f"must be a number; got {shown(value)}", section)
    try:
        x = float(value)
    except OverflowError:
        raise Bad(where, f"must be a finite number; got {shown(value)}", section) from None
    if not finite and (math.isnan(x) or x == math.inf):
        return x
    if not (math.isfinite(x) and lo <= x <= hi):
        span = f"from {lo:g} to {hi:g}" if math.isfinite(hi) else f"of at least {lo:g}"
        raise Bad(where, f"must be a finite number {span}; got {shown(value)}", section)
    return x


def _dict(where, value, section="metadata") -> dict:
    if not isinstance(value, dict):
        raise Bad(where, f"must be a JSON object; got {type(value).__name__}", section)
    return value


def _keys(where, d: dict, required, allowed=None, section="metadata"):
    missing = [k for k in required if k not in d]
    if missing:
        raise Bad(where, f"lacks {', '.join(missing)}", section)
    if allowed is not None:
        extra = [k for k in d if k not in allowed]
        if extra:
            raise Bad(where, f"has unknown field {shown(extra[0])}", section)


def _format_1(d: dict) -> dict:
    """A recipe of checkpoint format 1 as format 2 holds it.  Format 1 had no
    activation (always ReLU), stored every optimizer option whether it applied
    or not, and the momentum optimizer's momentum as 0 for 0.9.  Options that
    do not apply now had no effect then (except momentum with adam, whose
    buffer was never saved, so such a run could not be resumed anyway): they
    are dropped."""
    d = {**d, "activation": "relu"}
    spec = optim.spec_of(d.get("optimizer"))
    if spec is None:
        return d   # refused by validation, with the usual message
    if d.get("centered") is True and d.get("bias_correction") is True:
        raise Retired("recipe", "--centered with --bias-correction, which this version refuses (its first update "
                      "is lr·g/√ε); train a new run with one of them")
    if spec.name == "momentum" and d.get("momentum") == 0:
        d["momentum"] = None
    for name in OPTIMIZER_FIELDS:
        if name not in spec.options and name in d:
            d[name] = False if isinstance(d[name], bool) else None
    if d.get("schedule") not in DECAYING:
        d["decay_steps"] = d["decay_rate"] = None
    if not d.get("weight_decay"):
        d["decoupled_decay"] = False
    return d


def _recipe(d, version: int) -> Recipe:
    d = _dict("recipe", d)
    types = {f.name: f.type for f in fields(Recipe)}
    unknown = [k for k in d if k not in types]
    if unknown and version == FORMAT_VERSION:
        raise Newer("recipe", shown(unknown[0]))
    if version == 1:
        d = _format_1(d)
    _keys("recipe", d, types, types)   # every field: one left out would silently become its default
    spec = optim.spec_of(d.get("optimizer"))
    for name in spec.defaults if spec is not None and version > 1 else ():
        if d[name] is None:   # train writes the value it used; null would silently become the default
            raise Bad(f"recipe.{name}", f"is null, but {spec.name} uses it")
    for name, value in d.items():
        allowed = RECIPE_TYPES.get(types[name])
        if allowed is None or not _is(value, *allowed):
            raise Bad(f"recipe.{name}", f"has the wrong type ({type(value).__name__})")
        if name == "hidden" and not all(_is(h, int) for h in value[:10**4]):
            raise Bad("recipe.hidden", "must be a list of whole numbers")
    try:
        return Recipe.from_dict(d)  # every field against the bounds table, and against each other
    except ConfigError as e:
        raise Bad("recipe", str(e)) from None


def _history(h, recipe: Recipe) -> list[dict]:
    if not isinstance(h, list):
        raise Bad("history", f"must be a list; got {type(h).__name__}")
    if len(h) > recipe.epochs:
        raise Bad("history", f"has {len(h)} epochs, more than the recipe's {recipe.epochs}")
    for i, m in enumerate(h):
        where = f"history[{i}]"
        _keys(where, _dict(where, m), METRIC_KEYS, METRIC_KEYS)
        if not _is(m["epoch"], int) or m["epoch"] != i + 1:
            raise Bad(f"{where}.epoch", f"must be {i + 1}; got {shown(m['epoch'])}")
        _num(f"{where}.loss", m["loss"])
        _num(f"{where}.accuracy", m["accuracy"], 0, 1)
        _num(f"{where}.seconds", m["seconds"])
        if (m["val_loss"] is None) != (m["val_accuracy"] is None):
            raise Bad(where, "has a val_loss without val_accuracy, or the other way round")
        if m["val_loss"] is not None:
            _num(f"{where}.val_loss", m["val_loss"], finite=False)
            _num(f"{where}.val_accuracy", m["val_accuracy"], 0, 1)
    return h


def _info(info, recipe: Recipe, history: list) -> dict:
    info = _dict("info", info)
    if "dataset" in info:
        sums = _dict("info.dataset", info["dataset"])
        if len(sums) > 16:
            raise Bad("info.dataset", f"names {len(sums)} files")
        for name, digest in sums.items():
            if not FILE_NAME.fullmatch(name):
                raise Bad("info.dataset", f"has a file name that is not one: {shown(name)}")
            if not (isinstance(digest, str) and HEX32.fullmatch(digest)):
                raise Bad(f"info.dataset.{name}", f"must be an MD5 checksum (32 hex digits); got {shown(digest)}")
    for key in ("device", "optimizer"):
        if key in info and not (isinstance(info[key], str) and 0 < len(info[key]) <= 64):
            raise Bad(f"info.{key}", f"must be a short name; got {shown(info[key])}")
    if "optimizer" in info and info["optimizer"] != recipe.optimizer:
        raise Bad("info.optimizer", f"{shown(info['optimizer'])} is not the recipe's {recipe.optimizer}")
    if "test_accuracy" in info:
        _num("info.test_accuracy", info["test_accuracy"], 0, 1)
    if "test_loss" in info:
        _num("info.test_loss", info["test_loss"], finite=False)
    n_batches = recipe.steps_per_epoch
    position = _position(info["position"], recipe, history, n_batches) if "position" in info else None
    if "steps" in info:
        steps = _int("info.steps", info["steps"], 0, recipe.epochs * n_batches)
        if position is not None and steps != (position["epoch"] - 1) * n_batches + position["batch"]:
            raise Bad("info.steps", f"{steps} does not match the position (epoch {position['epoch']}, "
                                    f"batch {position['batch']} of {n_batches})")
    if "early_stopping" in info:
        es = _dict("info.early_stopping", info["early_stopping"])
        _keys("info.early_stopping", es, ("stopped_after_epoch", "best_epoch", "best_val_loss"))
        _int("info.early_stopping.stopped_after_epoch", es["stopped_after_epoch"], len(history), len(history))
        if es["best_epoch"] is not None:   # None: no epoch's val_loss was a number (NaN throughout)
            _int("info.early_stopping.best_epoch", es["best_epoch"], 1, len(history))
        _num("info.early_stopping.best_val_loss", es["best_val_loss"], finite=False)
    known = {"dataset", "device", "optimizer", "test_accuracy", "test_loss", "position", "steps", "early_stopping"}
    for key, value in info.items():
        if key not in known:
            _plain(f"info.{key}" if FILE_NAME.fullmatch(key) else f"info[{shown(key)}]", value)
    return info


def _position(p, recipe: Recipe, history: list, n_batches: int) -> dict:
    def bad(where, what):
        raise Bad(f"info.position{where}", what, "position")

    if not isinstance(p, dict):
        bad("", f"must be a JSON object; got {type(p).__name__}")
    _keys("info.position", p, POSITION_KEYS, POSITION_KEYS, "position")
    epoch = _int("info.position.epoch", p["epoch"], 1, recipe.epochs + 1, "position")
    if epoch != len(history) + 1:
        bad(".epoch", f"{epoch} is not the one after the {len(history)} epochs of the history")
    batch = _int("info.position.batch", p["batch"], 0, n_batches - 1, "position")
    seen = _int("info.position.seen", p["seen"], 0, MNIST_TRAIN_IMAGES, "position")
    if seen != min(batch * recipe.batch_size, recipe.n_train):
        bad(".seen", f"{seen} images is not what {batch} batches of {recipe.batch_size} hold")
    if not _is(p["correct"], int) or not 0 <= p["correct"] <= seen:
        bad(".correct", f"must be a whole number of images, at most the {seen} seen; got {shown(p['correct'])}")
    _num("info.position.loss_sum", p["loss_sum"], 0, 1e9 * max(seen, 1), section="position")
    if seen == 0 and p["loss_sum"] != 0:
        bad(".loss_sum", "must be 0 before the first batch")
    _num("info.position.seconds", p["seconds"], section="position")
    rng = p["rng"]
    if not isinstance(rng, dict):
        bad(".rng", "must be a JSON object")
    _keys("info.position.rng", rng, ("bit_generator", "state", "has_uint32", "uinteger"),
          ("bit_generator", "state", "has_uint32", "uinteger"), "position")
    if rng["bit_generator"] != "PCG64":
        bad(".rng.bit_generator", f"must be PCG64, numpy's default; got {shown(rng['bit_generator'])}")
    state = rng["state"]
    if not isinstance(state, dict):
        bad(".rng.state", "must be a JSON object")
    _keys("info.position.rng.state", state, ("state", "inc"), ("state", "inc"), "position")
    _int("info.position.rng.state.state", state["state"], 0, U128 - 1, "position")
    _int("info.position.rng.state.inc", state["inc"], 0, U128 - 1, "position")
    if state["inc"] % 2 == 0:
        bad(".rng.state.inc", "must be odd, as PCG64's increment always is")
    _int("info.position.rng.has_uint32", rng["has_uint32"], 0, 1, "position")
    _int("info.position.rng.uinteger", rng["uinteger"], 0, 2**32 - 1, "position")
    return p


def _plain(where: str, value) -> None:
    """Plain JSON no deeper than MAX_DEPTH, strings no longer than MAX_TEXT, walked without recursion."""
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise Bad(where, f"is nested more than {MAX_DEPTH} deep")
        if isinstance(v, str) and len(v) > MAX_TEXT:
            raise Bad(where, f"holds a string of {len(v)} characters")
        if isinstance(v, dict):
            stack += [(x, depth + 1) for x in v.values()]
        elif isinstance(v, list):
            stack += [(x, depth + 1) for x in v]


def check_same_data(path, info: dict, checksums: dict) -> None:
    """A resumed run must continue on the files it started on: refuse when the
    checkpoint's dataset checksums are not those of the files just loaded."""
    stored = info.get("dataset")
    if stored == checksums:
        return
    if not stored:
        raise CheckpointError(f"{path} does not record which dataset files it was trained on, so resuming it "
                              "could continue on different data; start a new run")
    differ = sorted(n for n in set(stored) | set(checksums) if stored.get(n) != checksums.get(n))
    name = differ[0]
    raise CheckpointError(
        f"{path} was trained on other data than the files loaded now ({name}: MD5 {stored.get(name, 'none')} in "
        f"the checkpoint, {checksums.get(name, 'none')} here), so resuming would continue on different data; "
        "resume with the files it was trained on, or start a new run")
