"""Atomic checkpoint files: a crash mid-write never leaves a half-written checkpoint behind."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message names the file and what to do."""


def atomic_write_bytes(path: Path, write: Any) -> None:
    """Call write(fileobj) on a temp file in the same folder, fsync, then rename over `path`.

    rename is atomic on POSIX, so readers see the old file or the new one, never a mix.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, lambda f: f.write(text.encode()))


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    atomic_write_bytes(path, lambda f: torch.save(state, f))


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
