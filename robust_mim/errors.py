"""Error types: each carries one readable line that the CLI prints verbatim.

The CLI (`robust_mim.cli`) catches `RobustMimError`, prints
``robust_mim: error: <message>`` to stderr and exits with status 2, so a bad
config, missing data or a corrupt checkpoint never ends in a traceback.
"""
from __future__ import annotations


class RobustMimError(Exception):
    """Base class: a user-facing problem described in one line."""


class ConfigError(RobustMimError, ValueError):
    """A configuration value is missing, malformed or names something unknown."""


class DataMissingError(RobustMimError, FileNotFoundError):
    """A dataset is not where the configuration says; the message says how to get it."""


class CorruptDataError(RobustMimError, ValueError):
    """A data file exists but cannot be decoded (truncated or garbage image); the message names the file.

    A DataLoader worker's error reaches the main process as ``CorruptDataError(<worker traceback>)``;
    only the traceback's last line, the worker's own message, is kept.
    """

    def __init__(self, message: str) -> None:
        lines = message.strip().splitlines()
        if len(lines) > 1 and "Traceback" in message:
            message = lines[-1].split(f"{type(self).__name__}: ", 1)[-1]
        super().__init__(message)


class CheckpointError(RobustMimError):
    """A checkpoint cannot be read or does not match the model it is loaded into."""


class AttackInputError(RobustMimError, ValueError):
    """An attack was called with invalid arguments (negative ε, unknown norm, bad shapes)."""
