"""Locate the shared reference data (MOSI labels, MELD csvs) outside the repository.

The data are never committed into the project (their licences are the datasets' own), so tests,
benchmarks and the CLI look for them next to the checkout and skip or explain when absent.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "EMOFUSE_SHARED_DATA"

# src/emofuse/data/shared_data.py -> parents[3] is the repository root in a source checkout.
_REPO_ROOT = Path(__file__).resolve().parents[3]


def shared_data_dir() -> Path | None:
    """The shared data folder, or None when it cannot be found.

    Order: $EMOFUSE_SHARED_DATA (an explicit setting wins: if it names no folder the answer is
    None rather than a silent fallback), then <cwd>/../shared/data, then <repo>/../shared/data.
    """
    explicit = os.environ.get(ENV_VAR, "").strip()
    if explicit:
        path = Path(explicit).expanduser()
        return path.resolve() if path.is_dir() else None
    for candidate in (Path.cwd() / ".." / "shared" / "data", _REPO_ROOT / ".." / "shared" / "data"):
        if candidate.is_dir():
            return candidate.resolve()
    return None


def shared_data_file(*parts: str) -> Path | None:
    """A file inside the shared data folder (e.g. 'mosi', 'label.csv'), or None when absent."""
    root = shared_data_dir()
    if root is None:
        return None
    path = root.joinpath(*parts)
    return path if path.is_file() else None


def missing_reason(*parts: str) -> str:
    """A one-line explanation for skipping work that needs a shared data file."""
    root = shared_data_dir()
    name = "/".join(parts)
    if root is None:
        return (
            f"shared data not found (looked for ${ENV_VAR}, ../shared/data from the working "
            f"directory and from the repository); {name} is needed"
        )
    return f"{name} is absent from the shared data folder {root}"
