"""The lock a run holds on its checkpoint, as a second run meets it in the moment the first
has taken the lock but not yet written who it is."""

import fcntl
import json
import os
import threading
import time

import pytest

from rmsprop_cli import files
from rmsprop_cli.errors import OutputBusy


def _hold(tmp_path, write_after=None):
    """Take the lock of tmp_path/model.safetensors as a run does, and write its holder's name
    `write_after` seconds later (never if None).  Returns the open lock file."""
    path = tmp_path / "model.safetensors"
    lock = files.OutputLock(path)
    fd = os.open(lock.lock_path, os.O_RDWR | os.O_CREAT, 0o666)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    if write_after is not None:
        holder = {"pid": 4242, "host": "elsewhere", "started": "2026-12-01 00:00:00", "argv": ["rmsprop", "train"]}
        threading.Timer(write_after, lambda: os.write(fd, json.dumps(holder).encode() + b"\n")).start()
    return path, fd


def test_a_holder_that_writes_its_name_a_moment_later_is_named(tmp_path):
    path, fd = _hold(tmp_path, write_after=0.1)
    try:
        with pytest.raises(OutputBusy, match="pid 4242 on elsewhere"):
            files.OutputLock(path).acquire()
    finally:
        os.close(fd)


def test_a_holder_that_never_writes_its_name_is_said_unknown_within_a_bounded_time(tmp_path):
    path, fd = _hold(tmp_path)
    t0 = time.monotonic()
    try:
        with pytest.raises(OutputBusy, match="does not say which"):
            files.OutputLock(path).acquire()
    finally:
        os.close(fd)
    assert files.HOLDER_WAIT <= time.monotonic() - t0 < files.HOLDER_WAIT + 1
