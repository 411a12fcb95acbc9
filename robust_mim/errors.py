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


class CheckpointError(RobustMimError):
    """A checkpoint cannot be read or does not match the model it is loaded into."""


class AttackInputError(RobustMimError, ValueError):
    """An attack was called with invalid arguments (negative ε, unknown norm, bad shapes)."""
