"""Raw per-word inputs inside any model: the paper's front end in place of pre-extracted features.

`WithRawEncoders` wraps any registered model the way `WithTextEncoder` does: for each modality
with an encoder it reads the batch's raw per-word inputs (`batch.extras["raw_vision"]`, B x L x F
x H x W uint8 face crops; `batch.extras["raw_audio"]`, B x L x n_mels x T log-mel), runs the
encoder over the real words only (padded words are never computed), scatters one vector per word
into the modality's slot and calls the wrapped model. The encoders train with the model, end to
end, on its loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from emofuse.data.dataset import Batch, MultimodalDataset
from emofuse.data.raw import RAW_KEY_OF
from emofuse.errors import OptionError, UserError
from emofuse.models.base import ModelOutput, ModelSpec, MultimodalModel, OwnParameterGroups
from emofuse.models.encoders.registry import create_encoder, get_encoder


@dataclass
class RawEncoderConfig:
    """Which encoder fills which modality, and how wide its word vectors are."""

    encoders: dict[str, str] = field(default_factory=dict)  # modality -> registered encoder name
    dim: int = 64  # width of each word vector handed to the wrapped model
    options: dict[str, dict[str, Any]] = field(default_factory=dict)  # modality -> encoder options

    def __post_init__(self) -> None:
        for modality, name in self.encoders.items():
            entry = get_encoder(name)  # unknown names list the known ones
            if entry.modality != modality:
                raise OptionError(f"encoder {name!r} reads {entry.modality}, not {modality}")


class WithRawEncoders(MultimodalModel):
    """Any registered model whose audio and/or vision words come from raw-input encoders."""

    def __init__(self, inner: MultimodalModel, config: RawEncoderConfig) -> None:
        super().__init__(inner.spec, inner.config)
        self.inner = inner
        self.raw_config = config
        self.model_name = inner.model_name
        self.encoders = nn.ModuleDict(
            {
                m: create_encoder(name, config.dim, **config.options.get(m, {}))
                for m, name in config.encoders.items()
            }
        )

    def encode_words(self, modality: str, raw: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """B x L x ... raw words -> B x L x dim, computed for real words only, zero on padding."""
        b, length = mask.shape
        if raw.shape[:2] != (b, length):  # the batch's raw inputs and masks come from one dataset: a bug
            raise ValueError(
                f"raw {modality} input has {tuple(raw.shape[:2])} clips x words, the mask {(b, length)}"
            )
        real = raw[mask]  # N_real x ...
        if raw.dtype == torch.uint8:
            real = real.float() / 255.0  # grey crops are stored as bytes
        vectors = self.encoders[modality](real.float())
        out = vectors.new_zeros(b, length, vectors.shape[-1])
        out[mask] = vectors
        return out

    def forward(self, batch: Batch) -> ModelOutput:
        features = dict(batch.features)
        for m in self.encoders:
            key = RAW_KEY_OF[m]
            if (
                key not in batch.extras
            ):  # refused before: check_raw_inputs (train), prepare (evaluate, predict)
                raise ValueError(
                    f"the model reads raw {m} through {self.raw_config.encoders[m]!r}, "
                    "but the batch carries no "
                    f"{key}: use a dataset with raw inputs (synthetic-raw, RAVDESS, an extracted raw store)"
                )
            features[m] = self.encode_words(m, batch.extras[key], batch.masks[m])
        return self.inner(Batch(features, batch.masks, batch.labels, batch.indices, batch.extras))

    def parameter_groups(self, lr: float) -> list[dict[str, Any]]:
        inner = (
            self.inner.parameter_groups(lr)
            if isinstance(self.inner, OwnParameterGroups)
            else [{"params": list(self.inner.parameters()), "lr": lr}]
        )
        return inner + [{"params": list(self.encoders.parameters()), "lr": lr}]

    def config_dict(self) -> dict[str, Any]:
        return {**self.inner.config_dict(), "raw_encoders": dict(self.raw_config.encoders)}


def check_raw_inputs(config: RawEncoderConfig, data: MultimodalDataset) -> None:
    """Refuse, before any training, data that lacks the raw inputs the encoders read."""
    missing = [m for m in config.encoders if RAW_KEY_OF[m] not in data.extras]
    if missing:
        raise UserError(
            f"{data.source}: the {', '.join(config.encoders[m] for m in missing)} encoder "
            f"reads raw {', '.join(missing)} "
            f"({', '.join(RAW_KEY_OF[m] for m in missing)}) and this data has none: "
            "use synthetic-raw, a RAVDESS "
            "folder or an extracted dataset with raw inputs"
        )


def raw_model_spec(spec: ModelSpec, config: RawEncoderConfig) -> ModelSpec:
    """The wrapped model sees the encoders' width where the placeholder features were."""
    dims = {**spec.dims, **{m: config.dim for m in config.encoders if m in spec.modalities}}
    return ModelSpec(spec.modalities, dims, spec.max_lengths, spec.task, spec.num_classes)
