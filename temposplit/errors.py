"""Errors a user can cause, outside the codec (which has its own, in ``temposplit.codec.errors``).

The CLI turns any of these into one line on stderr and a non-zero exit; a traceback
means a bug in temposplit, never a user's mistake.
"""


class TemposplitError(Exception):
    """Base of the errors caused by input, options or the environment."""


class ConfigError(TemposplitError, ValueError):
    """An option or configuration value is invalid."""


class MissingDependencyError(TemposplitError):
    """An optional part (an extra, a tool, a data file) is not installed or not fetched."""
