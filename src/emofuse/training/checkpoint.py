"""Checkpoint files: written atomically (`emofuse.files`), so a crash mid-write never leaves a
half-written checkpoint behind, and read back with a clear error for a damaged one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from emofuse.errors import UserError
from emofuse.files import atomic_write_bytes


class CheckpointError(UserError):
    """A checkpoint that cannot be used; the message names the file and what to do."""


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
