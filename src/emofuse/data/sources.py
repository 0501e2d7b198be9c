"""Data-source registry: what a `--data` argument names, and the loader that reads it.

The shape of the model registry (`emofuse.models.registry`): a source registers itself where it
is implemented, with `@register_source(name, matches=...)` on its loader; `resolve_source(spec)`
picks the one that reads `spec` and `list_sources()` names them all; `emofuse.data.loading.load_splits`
is the one caller that loads.

Two kinds of source:
- named (`matches=None`): picked when `--data` is exactly its name (`synthetic`, `synthetic-raw`).
  Names win over paths, so a folder called `synthetic` in the working directory changes nothing.
- path sources: `matches(path)` is asked of an existing file or folder, in ascending `order`
  (lower first), the first match reads it. The order settles folders that could be read two ways
  (a folder with a label.csv and .csd files is read as label.csv).

The data layer's own sources register when `resolve_source` first runs (it imports
`BUILTIN_MODULES`, as the model registry imports `emofuse.models`). Sources that need layers above
data (synthetic-clips runs feature extraction) register from there (`emofuse.features.sources`,
imported by `emofuse.features` and by the commands that load data); this module never imports
them. Likewise the word features that label.csv and MELD text becomes (`TextOptions.model`) come
through `register_word_features`, which `emofuse.features.sources` calls.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from emofuse.configs import build_config, field_names
from emofuse.data.dataset import DataFormatError, DatasetSplits

T = TypeVar("T")

# the data layer's modules that register sources (imported on first use, in this order)
BUILTIN_MODULES = (
    "emofuse.data.synthetic",
    "emofuse.data.synthetic_raw",
    "emofuse.data.label_csv",
    "emofuse.data.ravdess",
    "emofuse.data.mmsa",
    "emofuse.data.loading",
)
# sources registered from above the data layer, named so a missing registration says where it lives
REGISTERED_ABOVE = {"synthetic-clips": "emofuse.features.sources"}


@dataclass
class TextOptions:
    """How raw text becomes word features for text-only sources (label.csv, MELD)."""

    model: str | None = "minilm"  # None: no features, raw text for an in-model text encoder
    max_words: int = 50


@dataclass(frozen=True)
class SourceRequest:
    """What a loader is given: the user's `--data` and the reading settings of `load_splits`."""

    source: str  # as the user wrote it
    path: Path | None  # the expanded path of a path source; None for a named one
    text: TextOptions = field(default_factory=TextOptions)
    labels: str = "auto"
    clip_labels: bool = False
    options: dict[str, Any] = field(default_factory=dict)


Loader = Callable[[SourceRequest], DatasetSplits]


@dataclass(frozen=True)
class Source:
    name: str
    load: Loader
    matches: Callable[[Path], bool] | None = None  # None: a named source
    options: bool = False  # takes data options (-D key=value): its config is computed, not read
    order: int = 50


_NAMED: dict[str, Source] = {}
_PATHS: dict[str, Source] = {}
_WORD_FEATURES: list[Callable[[Sequence[str], str, int], tuple[np.ndarray, np.ndarray]]] = []


def register_source(name: str, *, matches: Callable[[Path], bool] | None = None, options: bool = False,
                    order: int = 50) -> Callable[[Loader], Loader]:
    """Register `fn(request) -> DatasetSplits` as the loader of source `name` (see the module doc).

    options: the source takes data options (`SourceRequest.options`); every other source refuses
    them. order: where a path source is asked among the others (lower first).
    """
    def decorator(fn: Loader) -> Loader:
        table = _PATHS if matches is not None else _NAMED
        if name in _NAMED or name in _PATHS:
            raise ValueError(f"data source {name!r} is registered twice")
        table[name] = Source(name, fn, matches, options, order)
        return fn

    return decorator


def _import_builtins() -> None:
    for module in BUILTIN_MODULES:
        importlib.import_module(module)


def list_sources() -> list[str]:
    """The registered sources' names (named sources are what `--data` may be; path sources describe files)."""
    _import_builtins()
    return sorted([*_NAMED, *_PATHS])


def resolve_source(spec: str) -> Source | None:
    """The source that reads `spec`: a named source, else the first path source (by `order`) that
    matches the existing file or folder; None when none does."""
    _import_builtins()
    if spec in _NAMED:
        return _NAMED[spec]
    if spec in REGISTERED_ABOVE:
        raise DataFormatError(f"{spec}: this source is registered by {REGISTERED_ABOVE[spec]}; import it "
                              "before loading (the emofuse commands do)")
    path = Path(spec).expanduser()
    if not path.exists():
        return None
    for source in sorted(_PATHS.values(), key=lambda s: s.order):
        assert source.matches is not None
        if source.matches(path):
            return source
    return None


def data_config(config_cls: type[T], options: dict[str, Any], source: str) -> T:
    """A generator's or loader's typed config from --data-option values, unknown keys named."""
    known = field_names(config_cls)
    unknown = sorted(set(options) - set(known))
    if unknown:  # said here, in the data options' words; build_config checks the values
        raise DataFormatError(f"{source}: unknown data option(s) {unknown}; known: {sorted(known)}")
    return build_config(config_cls, options, source, error=DataFormatError)


# --------------------------------------------------------------------------- word features
def register_word_features(embed: Callable[[Sequence[str], str, int], tuple[np.ndarray, np.ndarray]]) -> None:
    """Set how texts become word features: `embed(texts, model, max_words) -> (N x max_words x D
    float32, N int64 lengths)`. `emofuse.features.sources` registers the cached text embedder."""
    _WORD_FEATURES[:] = [embed]


def word_embedder(
    text: TextOptions, source: str
) -> Callable[[Sequence[str]], tuple[np.ndarray, np.ndarray]] | None:
    """`embed(texts) -> (features, lengths)` as `text` asks, or None for model=None (the raw text
    only, for an in-model text encoder); a DataFormatError when no embedder is registered."""
    if text.model is None:
        return None
    if not _WORD_FEATURES:
        raise DataFormatError(
            f"{source}: word features from text model {text.model!r} come from "
            "emofuse.features.sources; import it first (the emofuse commands do), or read the "
            "raw text only with TextOptions(model=None)"
        )
    embed, model, max_words = _WORD_FEATURES[0], text.model, text.max_words
    return lambda texts: embed(texts, model, max_words)
