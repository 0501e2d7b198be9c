"""Atomic checkpoint files: a crash mid-write never leaves a half-written checkpoint behind."""

from __future__ import annotations

import contextlib
import errno
from pathlib import Path
from typing import Any

import torch

from emofuse.data.mmsa import atomic_path
from emofuse.errors import UserError


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message names the file and what to do."""


# the errors a full, read-only or mis-pointed output location gives: the user can fix them
_OUTPUT_ERRNOS = {errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EISDIR, errno.ENOTDIR,
                  errno.EEXIST}


def atomic_write_bytes(path: Path, write: Any) -> None:
    """Call write(fileobj) on a temp file beside `path`, then rename it over `path`.

    rename is atomic on POSIX, so readers see the old file or the new one, never a mix
    (the same mechanism the data writers use: `emofuse.data.mmsa.atomic_path`). A write that
    fails for a reason the user can fix (no space, no permission, a folder in the way) is a
    `UserError` naming `path`, not the temp file the user never asked for.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp, tmp.open("wb") as f:
            write(f)
    except OSError as err:
        if err.errno not in _OUTPUT_ERRNOS:
            raise
        reason = "it is a folder" if path.is_dir() else err.strerror or str(err)
        raise UserError(f"cannot write {path}: {reason}") from err


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, lambda f: f.write(text.encode()))


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    atomic_write_bytes(path, lambda f: torch.save(state, f))


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Delete the `.<name>.*.tmp` files a killed writer left in `folder`; returns what went.

    `atomic_path` removes its temp file on any exception, but SIGKILL or a power cut runs no
    cleanup. Only the names atomic_path gives (hidden, `.tmp`) are touched, so this is safe in a
    run folder no other process is writing to.
    """
    removed = []
    for tmp in Path(folder).glob(".*.tmp"):
        if tmp.is_file():
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
                removed.append(tmp)
    return removed


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        # weights_only=False: our checkpoints hold plain config dicts and RNG states, and we
        # only load files this tool wrote into a run folder the user points at.
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # torch raises many types for truncated/corrupt zips
        raise CheckpointError(
            f"{path}: checkpoint is corrupt or incomplete ({type(err).__name__}: {err}); "
            "delete it to retrain, or restore it from a backup"
        ) from None
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path}: not an emofuse checkpoint (no 'model' entry)")
    return state
