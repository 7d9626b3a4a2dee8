"""Errors flip raises for bad input, before any training starts."""


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
