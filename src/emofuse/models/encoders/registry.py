"""Registry of raw-input encoders: modules that turn one word's raw signal into one vector.

A video encoder maps N x F x H x W grey frames (float in [0, 1], one stack per word span) to
N x out_dim; an audio encoder maps N x n_mels x T log-mel patches to N x out_dim. A model
takes an encoder by name per modality (`WithRawEncoders`), the way it takes a text encoder,
so no model file changes to gain raw inputs.

`@register_encoder("name", modality="vision")` records a builder `fn(out_dim, **options)`;
`create_encoder(name, out_dim, **options)` and `list_encoders()` are the only ways in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from emofuse.errors import OptionError

EncoderBuilder = Callable[..., nn.Module]


@dataclass(frozen=True)
class EncoderEntry:
    name: str
    modality: str  # "vision" or "audio": which raw input of a batch it reads
    builder: EncoderBuilder


_ENCODERS: dict[str, EncoderEntry] = {}


def register_encoder(name: str, modality: str) -> Callable[[EncoderBuilder], EncoderBuilder]:
    if modality not in ("vision", "audio"):
        raise ValueError(f"an encoder reads vision or audio, not {modality!r}")

    def decorator(fn: EncoderBuilder) -> EncoderBuilder:
        if name in _ENCODERS:
            raise ValueError(f"encoder {name!r} is registered twice")
        _ENCODERS[name] = EncoderEntry(name, modality, fn)
        return fn

    return decorator


def list_encoders(modality: str | None = None) -> list[str]:
    _import_all()
    return sorted(n for n, e in _ENCODERS.items() if modality is None or e.modality == modality)


def get_encoder(name: str) -> EncoderEntry:
    _import_all()
    if name not in _ENCODERS:
        raise OptionError(f"unknown encoder {name!r}; known encoders: {', '.join(list_encoders())}")
    return _ENCODERS[name]


def create_encoder(name: str, out_dim: int, **options: object) -> nn.Module:
    """Build a registered encoder giving `out_dim` features per word; options are its config."""
    return get_encoder(name).builder(out_dim, **options)


def _import_all() -> None:
    import emofuse.models.encoders  # noqa: F401
