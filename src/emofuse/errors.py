"""The one exception type that marks a mistake the user can fix.

The command line prints a `UserError` as one line (exit status 2) and lets every other
exception show its traceback, so a bug inside emofuse, torch or numpy is never disguised as
bad input. `UserError` is a `ValueError`, so code that catches ValueError keeps working.
"""

from __future__ import annotations


class UserError(ValueError):
    """Bad input, a bad option or an unusable output path; the message says what to change."""
