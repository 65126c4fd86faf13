import os
from pathlib import Path

import pytest

# rich wraps at the terminal width; a fixed wide console keeps messages on one line in tests.
os.environ.setdefault("COLUMNS", "200")
os.environ.setdefault("TERM", "dumb")

MNIST_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def find_mnist() -> Path | None:
    """RMSPROP_MIRROR if it is a folder, else the shared copy beside the checkout."""
    candidates = []
    if os.environ.get("RMSPROP_MIRROR"):
        candidates.append(Path(os.environ["RMSPROP_MIRROR"]))
    candidates.append(Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist")
    for folder in candidates:
        if all((folder / (n + ".gz")).exists() or (folder / n).exists() for n in MNIST_NAMES):
            return folder
    return None


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
