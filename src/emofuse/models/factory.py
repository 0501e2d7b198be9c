"""The network a run's settings describe: its spec from the data, the registered model, and the
text and raw-input encoders wrapped around it.

Used by the trainer (a new network) and by `evaluate` (the network a checkpoint's weights fit).
The settings arrive as any object with the fields `ModelSettings` names; a
`emofuse.training.config.TrainConfig` has them all.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch

from emofuse.data.dataset import DatasetSplits
from emofuse.errors import UserError
from emofuse.models.base import ModelSpec, MultimodalModel
from emofuse.models.raw_encoders import RawEncoderConfig, WithRawEncoders, raw_model_spec
from emofuse.models.registry import create_model
from emofuse.models.text_encoder import TextEncoder, TextEncoderConfig, WithTextEncoder, text_model_spec


class ModelSettings(Protocol):
    """The settings that decide a run's network (a TrainConfig's model fields and max_words)."""

    model: str
    model_options: dict[str, Any]
    text_encoder: str  # "" = the data's pre-extracted text features
    text_finetune: str
    max_words: int
    max_tokens: int
    text_normalize: str
    video_encoder: str  # "" = the data's pre-extracted vision features
    audio_encoder: str  # "" = the data's pre-extracted audio features
    encoder_dim: int
    encoder_options: dict[str, dict[str, Any]]


def model_spec_for(splits: DatasetSplits, modalities: tuple[str, ...]) -> ModelSpec:
    train = splits.train
    return ModelSpec(
        modalities=modalities,
        dims={m: train.dims()[m] for m in modalities},
        max_lengths={m: train.max_lengths()[m] for m in modalities},
        task=splits.task,
        num_classes=splits.num_classes if splits.task == "classification" else 1,
    )


def text_encoder_config(config: ModelSettings) -> TextEncoderConfig:
    return TextEncoderConfig(
        config.text_encoder, config.text_finetune, config.max_words, config.max_tokens, config.text_normalize
    )


def build_model(
    config: ModelSettings, spec: ModelSpec, encoder: torch.nn.Module | None = None
) -> MultimodalModel:
    """The registered model, wrapped with a text encoder when the config asks for one.

    `spec` describes the data; with an encoder, the wrapped model sees the encoder's width as
    its text dimension.
    """
    raw = raw_encoder_config(config, spec)
    inner_spec = raw_model_spec(spec, raw) if raw.encoders else spec
    if not config.text_encoder:
        model = create_model(config.model, inner_spec, **config.model_options)
        return WithRawEncoders(model, raw) if raw.encoders else model
    if "text" not in spec.modalities:
        raise UserError("--text-encoder needs the text modality in --modalities")
    text = TextEncoder(text_encoder_config(config), encoder)
    inner = create_model(config.model, text_model_spec(inner_spec, text.dim), **config.model_options)
    inner.model_name = config.model
    # the raw encoders sit inside the text wrapper, so its optimiser groups stay outermost
    return WithTextEncoder(WithRawEncoders(inner, raw) if raw.encoders else inner, text)


def raw_encoder_config(config: ModelSettings, spec: ModelSpec) -> RawEncoderConfig:
    """Which raw-input encoders the run uses, for the modalities it reads."""
    names = {"vision": config.video_encoder, "audio": config.audio_encoder}
    for m, name in names.items():
        if name and m not in spec.modalities:
            flag = "--video-encoder" if m == "vision" else "--audio-encoder"
            raise UserError(f"{flag} {name} needs the {m} modality in --modalities")
    encoders = {m: name for m, name in names.items() if name}
    try:
        return RawEncoderConfig(
            encoders, config.encoder_dim, {m: config.encoder_options.get(m, {}) for m in encoders}
        )
    except ValueError as err:
        raise UserError(str(err)) from None
