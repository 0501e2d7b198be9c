"""Extractors by name: each stage is a registered class with a version and a typed config.

An extractor is swapped by name (`--words forced` ...), and a cached result is keyed by
(clip hash, extractor name, version, config, stage inputs), so changing any of them recomputes
while everything else is reused. Bump an extractor's `version` whenever its output changes.

Clip failures are `ClipError`s (a `DataFormatError`, so the CLI prints one line): each carries a
short `reason` code used by the folder report.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from dataclasses import dataclass
from typing import Any, ClassVar

from emofuse.configs import build_config, field_names
from emofuse.data.dataset import DataFormatError
from emofuse.errors import OptionError
from emofuse.files import sha256_file, sha256_text

# Modules whose import registers the built-in extractors.
_BUILTIN_MODULES = (
    "emofuse.features.decode",
    "emofuse.features.speech",
    "emofuse.features.audio",
    "emofuse.features.face",
)
STAGES: tuple[str, ...] = ("decode", "words", "audio", "face")


# --------------------------------------------------------------------------- clip errors
class ClipError(DataFormatError):
    """One clip cannot be extracted; `reason` is a short code, the message names the file."""

    reason: ClassVar[str] = "error"

    def __init__(self, path: object, problem: str) -> None:
        super().__init__(f"{path}: {self.reason.replace('_', ' ')}: {problem}")
        self.path = str(path)
        self.problem = problem


class MissingFile(ClipError):
    reason = "missing_file"


class UnreadableMedia(ClipError):
    reason = "unreadable_file"


class NoAudioTrack(ClipError):
    reason = "no_audio_track"


class NoVideoTrack(ClipError):
    reason = "no_video_track"


class TooShort(ClipError):
    reason = "too_short"


class NoSpeech(ClipError):
    reason = "no_speech"


class NoFace(ClipError):
    reason = "no_face"


# --------------------------------------------------------------------------- registry
class Extractor:
    """Base class: subclasses set `name`, `stage`, `version` and `Config` (a dataclass)."""

    name: ClassVar[str] = ""
    stage: ClassVar[str] = ""
    version: ClassVar[int] = 1

    @dataclass(frozen=True)
    class Config:
        pass

    def __init__(self, config: Any = None) -> None:
        self.config = config if config is not None else self.Config()
        if not isinstance(self.config, self.Config):
            raise ValueError(f"extractor {self.name!r} takes a {self.Config.__qualname__}, "
                             f"not {type(self.config).__name__}")

    def cache_key(self, clip_hash: str, inputs: Any = None) -> str:
        return cache_key(clip_hash, self.name, self.version, self.config, inputs)


_REGISTRY: dict[str, type[Extractor]] = {}


def register_extractor(cls: type[Extractor]) -> type[Extractor]:
    """Class decorator: make an extractor known by its name."""
    if not cls.name or cls.stage not in STAGES:
        raise ValueError(f"{cls.__name__} needs a name and a stage in {STAGES}")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"an extractor named {cls.name!r} is already registered")
    _REGISTRY[cls.name] = cls
    return cls


def _load_builtins() -> None:
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)


def list_extractors(stage: str | None = None) -> list[str]:
    _load_builtins()
    return sorted(n for n, c in _REGISTRY.items() if stage is None or c.stage == stage)


def get_extractor(name: str, stage: str | None = None) -> type[Extractor]:
    """The extractor class called `name`; unknown names list the known ones."""
    _load_builtins()
    cls = _REGISTRY.get(name)
    if cls is None or (stage is not None and cls.stage != stage):
        known = ", ".join(list_extractors(stage))
        what = f"{stage} extractor" if stage else "extractor"
        raise OptionError(f"unknown {what} {name!r}; known: {known}")
    return cls


def create_extractor(name: str, stage: str | None = None, **options: Any) -> Extractor:
    """Build an extractor by name; options become its typed config (unknown ones are an error)."""
    cls = get_extractor(name, stage)
    fields = field_names(cls.Config)
    unknown = sorted(set(options) - set(fields))
    if unknown:  # said here, in the extractors' words; build_config checks the values
        raise OptionError(f"extractor {name!r} has no option(s) {unknown}; options: {sorted(fields)}")
    return cls(build_config(cls.Config, options, f"extractor {name!r}"))


def cache_key(clip_hash: str, name: str, version: int, config: Any, inputs: Any = None) -> str:
    """sha256 over the clip, the extractor's identity and config, and the stage's other inputs."""
    payload = {
        "clip": clip_hash,
        "extractor": name,
        "version": version,
        "config": dataclasses.asdict(config) if dataclasses.is_dataclass(config) else config,
        "inputs": inputs,
    }
    return sha256_text(json.dumps(payload, sort_keys=True, default=str))


# sha256 of a file's bytes: the clip part of every cache key (a renamed clip still hits)
file_hash = sha256_file

