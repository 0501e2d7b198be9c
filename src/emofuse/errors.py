"""The exceptions that mark a mistake the user can fix.

The command line prints a `UserError` (or any subclass) as one line, exit status 2, and lets
every other exception show its traceback, so a bug inside emofuse, torch or numpy is never
disguised as bad input. Code that checks a user's input raises a `UserError` where it checks
it; nothing reads tracebacks to guess. `UserError` is a `ValueError`, so code that catches
ValueError keeps working.
"""

from __future__ import annotations


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
