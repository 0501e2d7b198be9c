"""The exceptions that mark a mistake the user can fix.

The command line prints a `UserError` (or any subclass) as one line, exit status 2, and lets
every other exception show its traceback, so a bug inside emofuse, torch or numpy is never
disguised as bad input. Code that checks a user's input raises a `UserError` where it checks
it; nothing reads tracebacks to guess. `UserError` is a `ValueError`, so code that catches
ValueError keeps working.
"""

from __future__ import annotations

import errno
import os


class UserError(ValueError):
    """Bad input, a bad option or an unusable output path; the message says what to change."""


class OptionError(UserError):
    """A command-line option or config value that is not allowed (named in the message)."""


class MissingDependency(UserError):
    """A package, tool or carried model that a step needs is not installed; says how to get it."""


class IntegrityError(UserError):
    """A file that must have a known hash (a carried model, a model part) does not."""


class OutputError(UserError):
    """An output location that cannot be written: no space, no permission, a folder in the way."""


class InputNotFound(FileNotFoundError):
    """A file or folder the user named does not exist.

    A FileNotFoundError (what callers and tests catch for a missing file) that carries the path,
    and prints as its message alone. It cannot also be a UserError (Python refuses a class that is
    both a ValueError and an OSError), so the command line counts it as the user's explicitly.
    """

    def __init__(self, path: str | os.PathLike[str], message: str) -> None:
        super().__init__(errno.ENOENT, message, os.fspath(path))

    def __str__(self) -> str:
        return str(self.strerror)
