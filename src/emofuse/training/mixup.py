"""Mixup (Zhang et al., ICLR 2018) on multimodal batches, for `train --mixup ALPHA`.

Each training batch is blended with a shuffled copy of itself: inputs x = lam * x_i + (1 - lam) * x_j
with one lam ~ Beta(alpha, alpha) per batch, and the loss is lam * loss(y_i) + (1 - lam) * loss(y_j).
On a small set (RAVDESS: 960 clips of 16 voices) it keeps a CNN from memorising clips.

What gets mixed, word by word: every modality's features, and the raw per-word inputs of the
paper's front end (face crops, log-mel patches). A word that one clip has and its partner lacks
(padding) is mixed with silence, not with the zeros padding holds: zeros are the training mean
for standardised features, black for a uint8 crop, but a loud 0 dB for a log-mel patch, so a
log-mel partner's padding takes the quietest value among the batch's real patches. A word is real
in the mix where it is real in either clip. Token ids of an in-model text encoder cannot be
mixed, so the trainer refuses --mixup with --text-encoder.

The draws come from a generator seeded per (seed, epoch), so a resumed run mixes exactly as an
uninterrupted one.
"""

from __future__ import annotations

import numpy as np
import torch

from emofuse.data.dataset import Batch
from emofuse.data.raw import RAW_KEY_OF
from emofuse.errors import OptionError

MODALITY_OF_RAW = {key: m for m, key in RAW_KEY_OF.items()}


class Mixup:
    """Draws (lam, partner order) per batch and mixes the batch; see the module docstring."""

    def __init__(self, alpha: float, seed: int) -> None:
        if alpha <= 0:
            raise OptionError(f"mixup alpha must be > 0, not {alpha}")
        self.alpha = alpha
        self.rng = np.random.default_rng(seed)
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, batch: Batch) -> tuple[Batch, torch.Tensor, float]:
        """The mixed batch, the partner of each row (indices into the batch) and lam."""
        lam = float(self.rng.beta(self.alpha, self.alpha))
        partner = torch.randperm(len(batch.labels), generator=self.generator).to(batch.labels.device)
        return mix_batch(batch, partner, lam), partner, lam


def mix_batch(batch: Batch, partner: torch.Tensor, lam: float) -> Batch:
    """lam * batch + (1 - lam) * batch[partner], word by word (see the module docstring)."""
    features = {m: _blend(x, x[partner], lam) for m, x in batch.features.items()}
    masks = {m: mask | mask[partner] for m, mask in batch.masks.items()}
    extras = {}
    for key, raw in batch.extras.items():
        modality = MODALITY_OF_RAW.get(key)
        if (
            modality is None or modality not in batch.masks
        ):  # TrainConfig refuses --mixup with --text-encoder's tokens
            raise ValueError(f"mixup cannot mix the batch's {key!r} (only features and raw crops / log-mel)")
        extras[key] = _blend_raw(raw, batch.masks[modality], partner, lam)
    return Batch(features, masks, batch.labels, batch.indices, extras)


def _blend(a: torch.Tensor, b: torch.Tensor, lam: float) -> torch.Tensor:
    if a.dtype == torch.uint8:  # crops stay bytes, as the encoders read them
        mixed = lam * a.float() + (1.0 - lam) * b.float()
        return mixed.round().clamp(0, 255).to(torch.uint8)
    return (lam * a.float() + (1.0 - lam) * b.float()).to(a.dtype)


def _blend_raw(raw: torch.Tensor, mask: torch.Tensor, partner: torch.Tensor, lam: float) -> torch.Tensor:
    """B x L x ... raw words; padded words become silence first (black crops, the quietest log-mel)."""
    if raw.dtype != torch.uint8 and bool(mask.any()):
        silence = raw[mask].min()
        raw = torch.where(mask.view(*mask.shape, *([1] * (raw.dim() - 2))), raw, silence)
    return _blend(raw, raw[partner], lam)


def mixed_loss(
    loss_fn: torch.nn.Module,
    prediction: torch.Tensor,
    labels: torch.Tensor,
    partner: torch.Tensor,
    lam: float,
) -> torch.Tensor:
    """The loss against both clips' labels, weighted as their inputs were."""
    return lam * loss_fn(prediction, labels) + (1.0 - lam) * loss_fn(prediction, labels[partner])
