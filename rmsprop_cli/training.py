"""A training run: its data, model, checkpoint, stop and resume, around the
training loop of fitting.py; `rmsprop train`."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from . import checkpoint, files, memory, model, schema
from .backends import make_backend, resolve_device
from .bounds import check_option
from .config import Recipe, build_recipe
from .errors import CheckpointError, ConfigError, Interrupted, OutputBusy, OutputError, shell_command
from .fitting import Callbacks, Dataset, EarlyStopping, Position, fit
from .optim import Optimizer
from .outputs import append_metrics, is_metrics, metrics_path, resolve_output, write_metrics
from .signals import StopSignals, signum_of, stopped_by_signals


def evaluate_command(path, limit: int | None) -> str:
    """The command that evaluates a checkpoint as train did, quoted for the user's shell."""
    return shell_command("rmsprop", "evaluate", Path(path), *(("--limit", limit) if limit else ()))


@stopped_by_signals
def run(options: dict, *, device: str = "cpu", data_dir=None, mirrors=None, output: Path | None = None,
        reporter=None, callbacks: Callbacks | None = None, resume: Path | None = None,
        checkpoint_every: int | None = None, early_stopping: int | None = None, stop=None) -> dict:
    """Everything `rmsprop train` does: data, model, fit, test, checkpoint.

    options are the recipe's fields as the user gave them (None: not given).
    With resume, the run continues the checkpoint's (see build_recipe) and
    writes to it unless output says otherwise.  stop is polled between
    chunks; by default SIGINT (Ctrl-C), SIGTERM and SIGHUP set it (StopSignals).  When
    it fires, the position reached is saved and Interrupted is raised.  The
    checkpoint is locked (OutputLock) from before any check until the return:
    a second writer of it gets OutputBusy.
    """
    cb = callbacks or Callbacks()
    device, _ = resolve_device(device)
    check_option("checkpoint_every", checkpoint_every)   # epochs
    check_option("early_stopping", early_stopping)       # the patience, in epochs
    loaded = files.identity(resume) if resume is not None else None   # which file, for _claim
    resumed = checkpoint.load(resume) if resume is not None else None
    recipe = build_recipe(options, resumed.recipe if resumed else None)
    if resumed is not None:
        position = resumed.info.get("position")
        if position is None:
            raise CheckpointError(f"{resume} holds no training position to resume from")
        if "early_stopping" in resumed.info:
            stopped = resumed.info["early_stopping"]
            raise ConfigError(f"{resume} ended by early stopping after epoch {stopped.get('stopped_after_epoch')} and "
                              f"holds the weights of epoch {stopped.get('best_epoch')}, so it cannot be continued "
                              "exactly; start a new run")
        if len(resumed.history) >= recipe.epochs:
            raise ConfigError(f"{resume} has already trained {len(resumed.history)} epochs; "
                              f"pass --epochs larger than {len(resumed.history)} to train more")
    if early_stopping is not None and recipe.val_split == 0:
        raise ConfigError("--early-stopping needs a validation set: use --val-split above 0")
    memory.check_training(recipe, len(Optimizer(recipe, 1).state_names), early_stopping=early_stopping is not None,
                          resumed=resume)
    path = files.through_links(resolve_output(output if output is not None or resume is None else Path(resume),
                                              recipe))
    try:
        with files.OutputLock(path):
            _claim(path, recipe, resume, loaded)
            return _train(recipe, resumed, resume, path, device, data_dir, mirrors, reporter, cb, checkpoint_every,
                          early_stopping, stop)
    finally:
        if output is None and resume is None:   # a run folder made for this run: gone if the run left nothing
            try:
                os.rmdir(path.parent)
            except OSError:
                pass


def _claim(path: Path, recipe: Recipe, resume=None, loaded=None) -> None:
    """Make `path` (whose OutputLock we hold) ready to be written: dead writers' temporaries
    removed, nothing of another kind in the way, room for the checkpoint.  A resumed
    checkpoint that is `path` must still be the file that was loaded (`loaded`, its
    identity): another run may have saved it, and ended, between the load and the lock."""
    if resume is not None and os.path.realpath(resume) == os.path.realpath(path) and \
            files.identity(path) != loaded:
        raise OutputBusy(f"{path} was saved by another run while this one was starting; run the command again "
                         "to continue from what it saved")
    for target in (path, metrics_path(path)):
        files.remove_dead_temporaries(target)
    files.check_replaceable(path, "an rmsprop-cli checkpoint", checkpoint.is_checkpoint)
    files.check_replaceable(metrics_path(path), "a metrics file that rmsprop train wrote", is_metrics)
    files.check_writable(path, checkpoint.size_estimate(recipe.sizes, len(Optimizer(recipe, 1).state_names)))


def _periodic_save_failed(e: OutputError, path: Path, epoch: int, saved: bool) -> OutputError:
    """A --checkpoint-every save that failed (a full disk): what is left, and how to go on from it."""
    reason = getattr(e, "reason", None)
    if reason is None:
        return e
    if saved and files.identity(path) is not None:   # the atomic save left the previous one in place
        after = (f"the previous checkpoint {path} is intact; free some space, then resume from it with: "
                 f"{shell_command('rmsprop', 'train', '--resume', Path(path))}")
    else:
        after = "no earlier checkpoint of this run was saved; free some space or choose another --output"
    return OutputError(f"cannot save the checkpoint of epoch {epoch} to {path}: {reason}; {after}")


def _train(recipe: Recipe, resumed, resume, path: Path, device, data_dir, mirrors, reporter, cb: Callbacks,
           checkpoint_every, early_stopping, stop) -> dict:
    """run() once its options are checked and its output claimed."""
    d = Dataset.load(recipe, data_dir, mirrors, reporter)
    if resumed is not None:
        schema.check_same_data(resume, resumed.info, d.checksums)
    X_train, y_train, X_val, y_val = d.X_train, d.y_train, d.X_val, d.y_val
    test_images, test_labels = d.test_images, d.test_labels
    if early_stopping is not None and len(X_val) == 0:
        raise ConfigError(f"--early-stopping needs a validation set, and --val-split {recipe.val_split} "
                          f"of {len(X_train) + len(X_val)} images leaves none")

    n_batches = -(-len(X_train) // recipe.batch_size)
    optimizer = Optimizer(recipe, n_batches)
    rng = np.random.default_rng(recipe.seed)
    steps = 0
    if resumed is None:
        theta = model.glorot_init(recipe.sizes, rng)
        opt_state, history, pos = optimizer.init(theta.size), [], None
    else:
        theta, opt_state, history = resumed.theta, resumed.opt_state, resumed.history
        try:
            pos = Position.from_dict(resumed.info["position"])
            rng.bit_generator.state = pos.rng
            if not (type(pos.epoch) is int and type(pos.batch) is int and pos.epoch == len(history) + 1
                    and 0 <= pos.batch < n_batches and pos.seen >= 0):
                raise ValueError
        except (TypeError, ValueError, KeyError, AttributeError):
            raise CheckpointError(f"{resume} has a damaged training position; it cannot be resumed") from None
        missing = [n for n in optimizer.state_names if n not in opt_state]
        if missing:
            raise CheckpointError(f"{resume} lacks the optimizer state {', '.join(missing)}; it cannot be resumed")
        steps = (pos.epoch - 1) * n_batches + pos.batch
    backend = make_backend(device, recipe.sizes, recipe.batch_size, optimizer, theta, opt_state, X_train, y_train,
                           steps)
    cb.status("Compiling kernels (the first run only; later runs load them from the cache)")
    backend.warm_up()   # so that compiling is not counted in the first epoch's time
    info = {"dataset": d.checksums, "device": backend.name, "optimizer": recipe.optimizer}

    def save(history, pos, **extra):
        steps = (pos.epoch - 1) * n_batches + pos.batch
        checkpoint.save(path, checkpoint.Checkpoint(recipe, backend.params(), backend.optimizer_state(), history,
                                                    {**info, "steps": steps, "position": pos.to_dict(), **extra}))

    stopper = EarlyStopping(early_stopping, backend) if early_stopping else None

    metrics_failed = False
    saved = resume is not None and os.path.realpath(resume) == os.path.realpath(path)   # a checkpoint at path

    def after_epoch(history, pos):
        nonlocal metrics_failed, saved
        if not metrics_failed:
            try:
                append_metrics(path, history[-1])
            except OutputError as e:   # a disk filling up: the checkpoint keeps the whole history anyway
                metrics_failed = True
                try:   # a plain line, on stderr (above the live table: rich redirects it while it runs)
                    print(f"Note: cannot write {metrics_path(path)} ({getattr(e, 'reason', e)}); training goes "
                          "on without it, and the checkpoint keeps every epoch's metrics", file=sys.stderr,
                          flush=True)
                except OSError:   # stderr on the full disk too
                    pass
        if checkpoint_every and history[-1]["epoch"] % checkpoint_every == 0:
            try:
                save(history, pos)
            except OutputError as e:
                raise _periodic_save_failed(e, path, history[-1]["epoch"], saved) from None
            saved = True
        return stopper is not None and stopper(history)

    write_metrics(path, history)   # the epochs of the checkpoint this run continues, and no others
    if isinstance(stop, StopSignals):
        stop.training = True   # from the first batch on, a signal saves before it stops
    history, pos, finished = fit(recipe, backend, len(X_train), X_val, y_val, rng, cb, history, pos,
                                 stop, after_epoch)
    if not finished:
        save(history, pos)
        raise Interrupted(path, pos.epoch, pos.batch, n_batches, signum_of(stop))
    extra = {}
    if stopper is not None and stopper.stopped:
        stopper.restore()
        extra = {"early_stopping": {"stopped_after_epoch": len(history), "best_epoch": stopper.best_epoch,
                                    "best_val_loss": stopper.best_loss}}
    if stop():  # during the last chunk or validation: keep the finished run, skip the test evaluation
        save(history, pos, **extra)
        raise Interrupted(path, pos.epoch, 0, n_batches, signum_of(stop),
                          evaluate=evaluate_command(path, recipe.limit))

    # A signal from here on is absorbed (StopSignals): the evaluation, a compiled call, is finished and
    # saved, and the caller says that the run completed.
    test_loss, test_correct, _ = backend.evaluate(test_images, test_labels)
    result = {
        "test_accuracy": test_correct / len(test_images),
        "test_loss": test_loss / len(test_images),
        "checkpoint": str(path),
        "device": backend.name,
        "epochs": history,
        "recipe": recipe.to_dict(),
        **extra,
    }
    save(history, pos, test_accuracy=result["test_accuracy"], test_loss=result["test_loss"], **extra)
    return result
