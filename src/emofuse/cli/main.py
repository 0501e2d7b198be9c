"""The `emofuse` command line.

Each command lives with its flags in cli/training_commands.py, cli/run_commands.py or
cli/data_commands.py; the training flags are generated from the config tree (cli/options.py).
Every command reports bad input (a bad file, a bad option, an unwritable --out) as one clear line
naming the file and the problem, with exit status 2; `--debug` shows its traceback. Any other
exception is a bug and shows its traceback (see `_is_user_error`).
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from pathlib import Path

from emofuse.cli import data_commands, run_commands, training_commands  # noqa: F401  (they register)
from emofuse.cli.common import COMMANDS, _model_options, _parse_option  # noqa: F401  (tests use the last two)

# the order `emofuse --help` lists the commands in
ORDER = ("demo", "train", "ablate", "evaluate", "compare", "robustness", "prepare-text", "extract", "predict",
         "explain", "serve", "tune", "install-mpnet", "list-models")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="emofuse", description="Multimodal emotion and sentiment analysis (text, audio, video).")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ORDER:
        spec = COMMANDS[name]
        p = sub.add_parser(name, help=spec.help)
        if spec.arguments is not None:
            spec.arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub by surprise
    from emofuse.messages import install_warning_format

    install_warning_format()  # one line per warning, emofuse's own format, no source lines
    try:
        return COMMANDS[args.command].run(args)
    except KeyboardInterrupt:
        print("interrupted; finished epochs are saved, rerun with --resume to continue", file=sys.stderr)
        return 130
    except Exception as err:  # user-facing: one clear line, details with --debug
        if args.debug or not _is_user_error(err):
            raise
        print(f"emofuse: error: {err}", file=sys.stderr)
        return 2


# OSErrors about the user's own files and disk: missing, forbidden, full, read-only, in the way
_USER_ERRNOS = {errno.ENOENT, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT, errno.EROFS,
                errno.EISDIR, errno.ENOTDIR, errno.EEXIST}


def _is_user_error(err: BaseException) -> bool:
    """True for a mistake the user can fix (one line); False for a bug (a traceback).

    User errors are the explicit types: UserError, DataFormatError, CheckpointError, a text
    model that is unavailable or damaged, and an OSError about the user's files or disk. A plain
    ValueError (or OSError) counts only where an emofuse module raised it itself (`raise
    ValueError(...)`, the convention for a bad option, as in the model registry); one from inside
    torch, numpy, pandas or the standard library, or from an emofuse line that merely called
    them, is a bug.
    """
    from emofuse.data.dataset import DataFormatError
    from emofuse.errors import UserError
    from emofuse.training.checkpoint import CheckpointError

    user_errors: tuple[type[BaseException], ...] = (UserError, DataFormatError, CheckpointError)
    try:
        from emofuse.features.text_models import ModelIntegrityError, TextModelUnavailable

        user_errors += (TextModelUnavailable, ModelIntegrityError)
    except ImportError:
        pass
    if isinstance(err, user_errors):
        return True
    if isinstance(err, OSError) and err.errno in _USER_ERRNOS and err.filename is not None:
        return True
    # emofuse's loaders raise FileNotFoundError("... does not exist") themselves
    return isinstance(err, (ValueError, OSError)) and _raised_by_emofuse(err)


def _raised_by_emofuse(err: BaseException) -> bool:
    """Whether the innermost frame is a `raise` statement in emofuse's own source."""
    import traceback

    import emofuse

    frames = traceback.extract_tb(err.__traceback__)
    if not frames:
        return False
    where = frames[-1]
    package = Path(emofuse.__file__).resolve().parent
    try:
        inside = Path(where.filename).resolve().is_relative_to(package)
    except OSError:
        return False
    return inside and (where.line or "").lstrip().startswith("raise")


if __name__ == "__main__":
    sys.exit(main())
