import os
from pathlib import Path

import pytest

from mnist_server import find_mnist

# rich wraps at the terminal width; a fixed wide console keeps messages on one line in tests.
os.environ.setdefault("COLUMNS", "200")
os.environ.setdefault("TERM", "dumb")


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    folder = find_mnist()
    if folder is None:
        pytest.skip("no MNIST copy reachable: set RMSPROP_MIRROR to a folder holding the four MNIST files")
    return folder


@pytest.fixture(scope="session")
def data_dir(mnist_dir, tmp_path_factory) -> Path:
    """A data folder filled once per session from the local MNIST copy."""
    from rmsprop_cli import data

    folder = tmp_path_factory.mktemp("data")
    data.fetch(data.MNIST_FILES.values(), folder, [str(mnist_dir)])
    return folder
