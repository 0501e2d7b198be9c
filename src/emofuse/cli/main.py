"""The `emofuse` command line.

Each command lives with its flags in cli/training_commands.py, cli/run_commands.py or
cli/data_commands.py; the training flags are generated from the config tree (cli/options.py).
Every command reports bad input (a bad file, a bad option, an unwritable --out) as one clear line
naming the file and the problem, with exit status 2; `--debug` shows its traceback. What counts as
bad input is decided by the exception's type alone (see `_is_user_error`): emofuse raises a
`UserError` subclass (emofuse.errors) or an `InputNotFound` where it checks the input. Any other
exception, a plain ValueError raised in emofuse's own source included, is a bug and shows its
traceback.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys

from emofuse.cli import data_commands, run_commands, training_commands  # noqa: F401  (they register)
from emofuse.cli.common import COMMANDS, _model_options, _parse_option  # noqa: F401  (tests use the last two)
from emofuse.errors import InputNotFound, UserError

# the order `emofuse --help` lists the commands in
ORDER = ("demo", "train", "ablate", "evaluate", "compare", "robustness", "prepare-text", "extract", "predict",
         "explain", "serve", "tune", "install-mpnet", "list-models")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="emofuse", description="Multimodal emotion and sentiment analysis (text, audio, video)."
    )
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

    User errors are exactly: a `UserError` (any subclass: OptionError, MissingDependency,
    DataFormatError, CheckpointError, ...), an `InputNotFound` (a missing input path), and an
    OSError about the user's own files or disk (an errno in `_USER_ERRNOS` and a file named).
    Nothing is guessed from the traceback: a plain ValueError, even one raised in emofuse's own
    source, is a bug.
    """
    if isinstance(err, (UserError, InputNotFound)):
        return True
    return isinstance(err, OSError) and err.errno in _USER_ERRNOS and err.filename is not None


if __name__ == "__main__":
    sys.exit(main())
