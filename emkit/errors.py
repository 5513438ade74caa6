"""Exceptions emkit raises for bad input.

Each subclasses a builtin so callers can catch the usual type, and each message names the bad
value and what was expected. The command line prints them as one line (no traceback).
"""

__all__ = ["EmkitError", "InputError", "LayerExistsError", "BboxError", "TaskFailedError"]


class EmkitError(Exception):
    """Base class of every error emkit raises on purpose."""


class InputError(EmkitError, ValueError):
    """A value given by the user does not fit (kind, dtype, shape, parameter, path)."""


class LayerExistsError(EmkitError, FileExistsError):
    """A layer or output already exists and ``overwrite`` was not given."""


class BboxError(EmkitError, IndexError):
    """A bounding box lies (partly) outside the layer or is empty."""


class TaskFailedError(EmkitError, RuntimeError):
    """A chunk task failed after its retries; the message names the bbox."""
