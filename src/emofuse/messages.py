"""How Python warnings look on the terminal: one line each, in emofuse's own voice.

Python's default format is `<file>:<line>: <Category>: <message>` followed by the source line the
warning points at. For a user of the command line that source line is noise (a stacklevel that
lands on `    datasets = {` says nothing), and the path is a site-packages location. After
`install_warning_format()` every warning prints as

    emofuse: warning: <message>                              (emofuse's own warnings)
    emofuse: warning: <Category> from <package>: <message>   (any other)

so it reads like the CLI's `emofuse: error: ...` lines. Which filters apply (once, always,
ignore) is untouched: only the printing changes.

Who raised a warning is decided from the frame that called `warnings.warn`, not from the
location the warning is attributed to: libraries warn with stacklevel=2, which points at their
caller, often emofuse code, and would pass librosa's words off as emofuse's.
"""

from __future__ import annotations

import sys
import warnings
from types import FrameType
from typing import TextIO

PREFIX = "emofuse: warning: "


def install_warning_format() -> None:
    """Print every Python warning as one `emofuse: warning: ...` line, without its source line.

    Idempotent: it sets `warnings.showwarning` and `warnings.formatwarning` to this module's
    functions, so calling it again changes nothing. Call it once, early in the CLI's main.
    """
    warnings.showwarning = show_warning
    warnings.formatwarning = format_warning


def show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                 file: TextIO | None = None, line: str | None = None) -> None:
    """`warnings.showwarning`: one line to `file` (sys.stderr by default), origin from the stack."""
    # Called by the warnings machinery right after `warnings.warn`, so the frame that raised the
    # warning is on this thread's stack, just above the warnings module's own frames.
    text = _one_line(message, category, _emitter(sys._getframe(1)) or _module_of(filename))
    stream = file if file is not None else sys.stderr
    if stream is None:  # pythonw, or a daemon that closed stderr: nowhere to print, as in Python's own
        return
    try:
        stream.write(text)
    except OSError:  # a closed or broken pipe must not turn a warning into a crash
        pass


def format_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                   line: str | None = None) -> str:
    """`warnings.formatwarning`, for code that formats a warning itself (logging.captureWarnings).

    No stack is known here, so the origin is the module of the file the warning points at.
    """
    return _one_line(message, category, _module_of(filename))


def _one_line(message: Warning | str, category: type[Warning], origin: str) -> str:
    # a message spread over lines would break the one-line-per-warning promise of the terminal
    text = " ".join(part.strip() for part in str(message).splitlines() if part.strip())
    if _is_own(category, origin):
        return f"{PREFIX}{text}\n"
    return f"{PREFIX}{category.__name__} from {origin or 'unknown'}: {text}\n"


def _is_own(category: type[Warning], origin: str) -> bool:
    """emofuse's warnings are UserWarnings (or its own categories) raised by emofuse code; a
    RuntimeWarning numpy raises while running emofuse code keeps its category, since the text
    is numpy's ('divide by zero encountered in log'), not ours."""
    from_emofuse = origin == "emofuse" or origin.startswith("emofuse.")
    own_category = category is UserWarning or category.__module__.split(".")[0] == "emofuse"
    return from_emofuse and own_category


def _emitter(frame: FrameType | None) -> str:
    """The module of the first frame outside the warnings machinery and this module."""
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        if name not in ("warnings", __name__):
            return _shown_name(name)
        frame = frame.f_back
    return ""


def _module_of(filename: str) -> str:
    """The module whose file is `filename` (among those imported), else the file's stem."""
    for name, module in list(sys.modules.items()):
        if getattr(module, "__file__", None) == filename:
            return _shown_name(name)
    stem = filename.replace("\\", "/").rsplit("/", 1)[-1]
    return stem[:-3] if stem.endswith(".py") else stem


def _shown_name(module: str) -> str:
    # emofuse.features.audio says where inside emofuse; for others the package is what a user
    # recognises (librosa, not librosa.core.spectrum)
    if module == "emofuse" or module.startswith("emofuse."):
        return module
    return module.split(".")[0]
