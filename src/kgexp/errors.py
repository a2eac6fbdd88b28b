"""The errors that are the user's to fix: a config value, a file, a path. The command prints them as one
line (no traceback unless ``HYDRA_FULL_ERROR=1``) and exits non-zero."""

from __future__ import annotations


class UserError(Exception):
    """An input that cannot run; the message names the key, file:line or path and what was expected."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder that the input names does not exist."""


class InputError(UserError, ValueError):
    """A value outside what an option or argument accepts."""
