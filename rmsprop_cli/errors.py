"""The project's own exception types.

They are raised deep in the library and turned into a one-line message and an
exit code only at the CLI edge (``cli.py``). Each type carries its exit code.
"""


class RmspropError(Exception):
    """Base of every error a user can cause or fix; the message is for them."""

    exit_code = 1
    label = "Error"


class ConfigError(RmspropError):
    """An invalid option or hyperparameter."""

    exit_code = 2


class DataError(RmspropError):
    """A dataset file that cannot be fetched, read, parsed or verified."""

    exit_code = 3


class DownloadError(DataError):
    """Every mirror failed for some file; the message lists what was tried."""


class ChecksumError(DataError):
    """A file's decompressed content does not have the published checksum."""


class CheckpointError(RmspropError):
    """A checkpoint that is missing, not ours, corrupt or from a newer version."""

    exit_code = 4


class OutputError(RmspropError):
    """A place we were asked to write to cannot be written."""

    exit_code = 5


class DeviceError(RmspropError):
    """--device cuda on a machine where CUDA cannot be used; the message says why and what to do."""

    exit_code = 7


class TrainingDiverged(RmspropError):
    """The loss became NaN or infinite."""

    exit_code = 6

    def __init__(self, epoch: int, batch: int):
        self.epoch, self.batch = epoch, batch
        super().__init__(
            f"training diverged: the loss became NaN or infinite in epoch {epoch}, batch {batch}; "
            "try a smaller --lr"
        )


class Interrupted(RmspropError):
    """The user stopped training; a resumable checkpoint was saved first."""

    exit_code = 130

    label = "Interrupted"

    def __init__(self, path, epoch: int, batch: int, n_batches: int):
        self.path = path
        where = f"after epoch {epoch - 1}" if batch == 0 else f"in epoch {epoch} after batch {batch} of {n_batches}"
        super().__init__(f"stopped {where}; saved to {path}; resume with: rmsprop train --resume {path}")


class ImageError(DataError):
    """A user's image that cannot be read or holds no digit."""
