"""`spectro_cnn`: a 2D CNN over the log-mel patch of each word span (emofuse's reading of the
paper's audio path).

What the paper says (the method's part 1, "Spatial and Temporal Feature-Enhanced Network Based on
the Three-Dimensional Dynamic Expansion", on feature extraction): audio and video are divided by
"the duration of the sound effect of each word", and "for the audio data, a basic
two-dimensional network was used to extract the acoustic features". Nothing more: not what the
network's 2D input is, nor its layers. emofuse's design notes (shared/DESIGN.md Section 1a, not
the paper) read this as "a 2D CNN over a time-frequency representation (spectrogram / LLD map)
per word span".

The paper's: one vector per word, from that word's span of audio, by a two-dimensional network.
emofuse's (every other choice in this file): the log-mel spectrogram as the 2D input; the blocks
of conv3x3 -> BatchNorm -> ReLU -> max-pool (one conv per block and channels doubling while the
map shrinks 4x, so every block costs about the same); the mean over frequency and the mean and max
over time, so a patch of any T gives the same width; the output Linear; the dB normalisation; and
the opt-in options (GroupNorm, SpecAugment, frequency warping, freq_pool="keep").

Input: N x n_mels x T log-mel patches (one per word; N = words of a batch, padding removed);
output: N x out_dim.

BatchNorm by default (`norm="batch"`): in evaluation it uses its running statistics, so a word's
vector does not depend on the other words and clips in its batch (the batch-mate invariance every
emofuse model keeps at prediction time); only training batches share statistics. GroupNorm
(`norm="group"`, statistics per sample) keeps that invariance in training too, but it normalises
each patch's level away after the first convolution and learned far slower: on RAVDESS, 12 epochs
without regularisation ended at training loss 1.70 (34 % validation accuracy) with GroupNorm and
1.16 (45 %) with BatchNorm. The dB values are mapped by a fixed affine map by default, which keeps
loudness (angry and happy speech is louder than sad); `normalize="patch"` standardises each patch
instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from emofuse.errors import OptionError
from emofuse.models.base import build_config
from emofuse.models.encoders.registry import register_encoder

# log-mel in dB (power_to_db, ref 1) of speech at 16 kHz spans about -100 (floor) to 0 dB
LEVEL_CENTER_DB, LEVEL_SCALE_DB = -50.0, 20.0


@dataclass
class SpectroCNNConfig:
    channels: tuple[int, ...] = (16, 32, 64, 128)
    dropout: float = 0.2
    norm: str = "batch"  # "batch" or "group" (see the module docstring)
    groups: int = 8  # GroupNorm groups, with norm="group" (each block's channels must divide by it)
    spec_augment: float = 0.0  # training only: fraction of mel bands and time steps masked out
    # training only: stretch each patch's mel axis by a random factor in [1 - w, 1 + w], anchored at
    # the lowest band (VTLP, Jaitly & Hinton 2013): a longer or shorter vocal tract, i.e. another voice
    freq_warp: float = 0.0
    # "level": keep how loud a word is (a fixed affine map of the dB values: arousal lives in it);
    # "patch": standardise each patch on its own (only the spectral shape is left)
    normalize: str = "level"
    # after the blocks: "mean" averages the frequency axis away (any n_mels works); "keep" keeps the
    # remaining bands apart (where in the spectrum a pattern sits, e.g. pitch and formants), which
    # needs n_mels given, so the output layer knows its width
    freq_pool: str = "mean"
    n_mels: int = 64

    def __post_init__(self) -> None:
        self.channels = tuple(int(c) for c in self.channels)
        if self.norm not in ("batch", "group"):
            raise OptionError(f"norm must be 'batch' or 'group', not {self.norm!r}")
        if not self.channels or (self.norm == "group" and any(c % self.groups for c in self.channels)):
            raise OptionError(
                f"channels {self.channels} must be non-empty and divisible by groups={self.groups}"
            )
        if self.normalize not in ("level", "patch"):
            raise OptionError(f"normalize must be 'level' or 'patch', not {self.normalize!r}")
        if not 0.0 <= self.spec_augment < 0.5:
            raise OptionError(f"spec_augment must lie in [0, 0.5), not {self.spec_augment}")
        if self.freq_pool not in ("mean", "keep"):
            raise OptionError(f"freq_pool must be 'mean' or 'keep', not {self.freq_pool!r}")
        if not 0.0 <= self.freq_warp < 0.5:
            raise OptionError(f"freq_warp must lie in [0, 0.5), not {self.freq_warp}")


class SpectroCNN(nn.Module):
    def __init__(self, out_dim: int, config: SpectroCNNConfig) -> None:
        super().__init__()
        self.config = config
        blocks: list[nn.Module] = []
        in_ch = 1
        for ch in config.channels:
            blocks += [
                nn.Conv2d(in_ch, ch, 3, padding=1, bias=False),
                nn.BatchNorm2d(ch) if config.norm == "batch" else nn.GroupNorm(config.groups, ch),
                nn.ReLU(inplace=True),
                # ceil_mode: a 1-step patch (a very short word) still survives every block
                nn.MaxPool2d(2, ceil_mode=True),
            ]
            in_ch = ch
        self.features = nn.Sequential(*blocks)
        self.dropout = nn.Dropout(config.dropout)
        bands = 1
        if config.freq_pool == "keep":
            bands = config.n_mels
            for _ in config.channels:
                bands = -(-bands // 2)  # each ceil-mode pool halves the bands, rounding up
        self.out = nn.Linear(2 * in_ch * bands, out_dim)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """mel: N x n_mels x T (any float type) -> N x out_dim."""
        x = mel.float()
        if self.config.normalize == "patch":
            mean = x.mean(dim=(1, 2), keepdim=True)
            std = x.std(dim=(1, 2), keepdim=True, unbiased=False)
            x = (x - mean) / (std + 1e-3)  # a silent (constant) patch becomes zeros, not NaN
        else:
            x = (x - LEVEL_CENTER_DB) / LEVEL_SCALE_DB
        if self.training and self.config.freq_warp > 0:
            x = _freq_warp(x, self.config.freq_warp)
        if self.training and self.config.spec_augment > 0:
            x = _spec_augment(x, self.config.spec_augment)
        h = self.features(x.unsqueeze(1))  # N x C x F' x T'
        if self.config.freq_pool == "keep":
            if h.shape[2] * h.shape[1] * 2 != self.out.in_features:
                raise OptionError(
                    f"spectro_cnn was built for n_mels={self.config.n_mels} (freq_pool=keep); "
                    f"these patches have {mel.shape[1]} bands: give -E audio:n_mels={mel.shape[1]}"
                )
            h = h.flatten(1, 2)  # N x (C F') x T'
        else:
            h = h.mean(dim=2)  # N x C x T'
        pooled = torch.cat([h.mean(dim=2), h.amax(dim=2)], dim=1)
        return self.out(self.dropout(pooled))


def _freq_warp(x: torch.Tensor, width: float) -> torch.Tensor:
    """Each N x F x T patch's band axis stretched by alpha ~ U[1 - width, 1 + width] from band 0:
    output band f reads input band f / alpha (linear interpolation; past the top, the top band)."""
    n, f, t = x.shape
    alpha = 1.0 + (torch.rand(n, device=x.device) * 2.0 - 1.0) * width
    bands = torch.arange(f, device=x.device, dtype=x.dtype)
    source = (bands[None, :] / alpha[:, None]).clamp(max=f - 1)  # N x F, fractional input band
    low = source.floor().long().clamp(max=f - 1)
    high = (low + 1).clamp(max=f - 1)
    frac = (source - low.to(x.dtype)).unsqueeze(-1)
    at_low = torch.gather(x, 1, low.unsqueeze(-1).expand(n, f, t))
    at_high = torch.gather(x, 1, high.unsqueeze(-1).expand(n, f, t))
    return at_low * (1.0 - frac) + at_high * frac


def _spec_augment(x: torch.Tensor, fraction: float) -> torch.Tensor:
    """SpecAugment-style masking (Park et al. 2019): one random band and one time span per patch."""
    n, f, t = x.shape
    keep = torch.ones_like(x)
    for axis, size in ((1, f), (2, t)):
        width = max(1, int(fraction * size))
        start = torch.randint(0, max(1, size - width + 1), (n,), device=x.device)
        pos = torch.arange(size, device=x.device)[None, :]
        hit = (pos >= start[:, None]) & (pos < start[:, None] + width)  # N x size
        keep = keep * (~hit).unsqueeze(3 - axis).to(x.dtype)
    return x * keep


@register_encoder("spectro_cnn", modality="audio")
def spectro_cnn(out_dim: int, **options: object) -> SpectroCNN:
    return SpectroCNN(out_dim, build_config(SpectroCNNConfig, options))
