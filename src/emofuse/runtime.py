"""The process's surroundings, shared by every layer: the device, seeding, the cache folder,
and optional packages.

Nothing here knows about data, features or models; everything above may import it.
"""

from __future__ import annotations

import importlib.util
import os
import random
from pathlib import Path
from typing import TYPE_CHECKING

from emofuse.errors import MissingDependency, UserError

if TYPE_CHECKING:  # torch is imported when a device is asked for, not when this module loads
    import torch

CACHE_ENV = "EMOFUSE_CACHE"
ALLOW_DOWNLOAD_ENV = "EMOFUSE_ALLOW_DOWNLOAD"
# how to get the extraction stack (PyAV, librosa, openSMILE, faster-whisper, mediapipe, ...)
EXTRACT_INSTALL_HINT = "bash scripts/install_extract.sh (or pip install 'emofuse[extract]')"


def resolve_device(name: str) -> torch.device:
    """'auto' (CUDA when there is one, else CPU), 'cpu', 'cuda' or 'cuda:N'; a CUDA device on a
    machine without CUDA is the user's error, said in one line."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name!r}: not a device (auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {name!r} requested but CUDA is not available on this machine")
    return device


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's generators (all devices) from one integer."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_cache_dir(cache: str | os.PathLike[str] | None = None) -> Path:
    """The emofuse cache folder: `cache` if given, else $EMOFUSE_CACHE, else ~/.cache/emofuse."""
    if cache is not None:
        return Path(cache).expanduser()
    explicit = os.environ.get(CACHE_ENV, "").strip()
    return Path(explicit).expanduser() if explicit else Path.home() / ".cache" / "emofuse"


def allow_download() -> bool:
    """True when the user opted in to hub downloads with EMOFUSE_ALLOW_DOWNLOAD=1 (or true/yes)."""
    return os.environ.get(ALLOW_DOWNLOAD_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def require_module(module: str, package: str, install_hint: str, *,
                   error: type[MissingDependency] = MissingDependency,
                   purpose: str = "the extraction stage") -> None:
    """Raise `error` naming the package and how to install it when `module` cannot be imported.

    Checked before the work starts, so a missing optional package is one line, not an
    ImportError from deep inside a worker after minutes of work.
    """
    if importlib.util.find_spec(module) is None:
        raise error(f"{purpose} needs {package} (python module {module!r}); install it with {install_hint}")
