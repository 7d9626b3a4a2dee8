"""Errors flip raises: bad input before any training starts, and a run that has to stop."""


class ConfigError(ValueError):
    """A configuration value is invalid.

    The message names the config field (e.g. ``partition.alpha``), the value given and the
    accepted values, so a user can fix the command line without reading code.
    """

    def __init__(self, field: str, value, accepted: str, hint: str = ""):
        self.field = field
        msg = f"{field}={value!r} is invalid: accepted values are {accepted}."
        if hint:
            msg += f" {hint}"
        super().__init__(msg)


class DataNotFoundError(FileNotFoundError):
    """A data set's files are missing and cannot be downloaded.

    The message says where to put them.
    """


class CorruptDataError(DataNotFoundError):
    """A data file exists but cannot be read (truncated, not gzip, not IDX, not a CIFAR pickle,
    or with contents that disagree with each other).

    The message names the file and what is wrong with it, and says how to replace it.
    """


class CheckpointError(ValueError):
    """A run cannot be resumed: no checkpoint where ``resume`` points, none readable, or the
    config or the data differ from the checkpoint's. The message names the path or field."""


class TrainingStopped(RuntimeError):
    """The run stopped during training (``flip.federation.failures``): too few clients
    succeeded in a round after its retries, the server step produced non-finite values, or a
    client's loss diverged. The message names the round (and client); the last checkpoint holds
    the run as it was before that round."""
