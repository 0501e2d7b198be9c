"""Recurrent Attended Variation Embedding Network, RAVEN (Wang et al., AAAI 2019).

Words can shift: each word's embedding e is moved by what the voice and face do while the
word is spoken.

1. Nonverbal subword sequences: the audio (vision) frames inside each word go through an
   LSTM; its final state is h_a (h_v) for that word (zero for a word with no frame).
2. Gates: w_a = sigmoid(W_a [h_a; e] + b_a), w_v likewise (one scalar per word).
3. Shift: h = W_h [w_a h_a; w_v h_v] + b_h, scaled as the reference code does it,
       e' = e + shift_weight * ||e|| * h / max(||h||, 1)
   so the shift is at most shift_weight * ||e|| long.
4. An LSTM over the shifted words; its state at the last real word -> Linear -> output.

Which frames belong to which word: frame i of a clip's n real frames belongs to word
floor((i + 0.5) / n * W), W the clip's real number of words. On word-aligned data (one
frame per word) that is frame i -> word i, a subword sequence of length 1; on unaligned
data each word gets its share of the frames. Subword sequences are padded to the longest
in the batch, capped at `max_frames_per_word` by averaging neighbouring frames when a word
has more.

Defaults are the reference code's MOSI constants (victorywys/RAVEN: cellDim 150,
normDim 150, hiddenDim 300, dropProb 0.2, shift_weight 0.2, lr 1e-3, batch 20); its
subword padding was 20 frames, here a cap of 32.

Departures from the reference code:
- the gates take the sigmoid the paper writes (the code used the raw linear output);
- frames are normalised with LayerNorm (the code used BatchNorm2d with
  track_running_stats=False, batch statistics even at test time, so a prediction
  depended on its batch mates);
- none in the scaling, which is the reference code's (model.py); written elsewhere as
  e' = e + alpha * h with alpha = min(||e|| / (||h|| * beta), 1), it would bound the shift
  differently (by ||e|| / beta rather than beta * ||e||).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from emofuse.data.dataset import Batch
from emofuse.errors import OptionError
from emofuse.models.base import (
    ModelOutput,
    ModelSpec,
    MultimodalModel,
    build_config,
    check_batch,
    last_step,
    squeeze_regression,
)
from emofuse.models.registry import Recipe, register_model

NONVERBAL = ("audio", "vision")


def frames_per_word(
    x: torch.Tensor, mask: torch.Tensor, word_mask: torch.Tensor, cap: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Group frames by word: (B x W x K x D frames, B x W lengths), K <= cap.

    Frame i of n real frames goes to word floor((i + 0.5) / n * W_real). A word with more
    than `cap` frames has them averaged into `cap` consecutive bins. Only the sample's own
    lengths enter, so the grouping does not depend on the batch's padding.
    """
    b, length, dim = x.shape
    words = word_mask.shape[1]
    n = mask.sum(1, keepdim=True).clamp_min(1)
    w_real = word_mask.sum(1, keepdim=True).clamp_min(1)
    steps = torch.arange(length, device=x.device).expand(b, length)
    word = torch.minimum((2 * steps + 1) * w_real // (2 * n), w_real - 1)  # B x L
    valid = mask.long()
    counts = torch.zeros(b, words, dtype=torch.long, device=x.device).scatter_add_(1, word, valid)
    starts = counts.cumsum(1) - counts
    pos = steps - starts.gather(1, word)  # frame's position inside its word
    count = counts.gather(1, word).clamp_min(1)
    slot = pos * count.clamp(max=cap) // count  # < cap; equals pos when the word fits
    lengths = counts.clamp(max=cap)
    k = max(int(lengths.max()), 1)
    rows = torch.arange(b, device=x.device).unsqueeze(1).expand(b, length)
    flat = ((rows * words + word) * k + slot.clamp(max=k - 1))[mask]
    sums = x.new_zeros(b * words * k, dim).index_add_(0, flat, x[mask])
    hits = x.new_zeros(b * words * k).index_add_(0, flat, x.new_ones(flat.shape[0]))
    grouped = (sums / hits.clamp_min(1).unsqueeze(-1)).view(b, words, k, dim)
    return grouped, lengths * word_mask.long()


class SubwordEncoder(nn.Module):
    """LayerNorm -> Dropout -> Linear per frame, then an LSTM over each word's frames."""

    def __init__(self, in_dim: int, norm_dim: int, cell_dim: int, dropout: float, cap: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(in_dim)
        self.drop = nn.Dropout(dropout)
        self.proj = nn.Linear(in_dim, norm_dim)
        self.rnn = nn.LSTM(norm_dim, cell_dim, batch_first=True)
        self.cell_dim = cell_dim
        self.cap = cap

    def forward(self, x: torch.Tensor, mask: torch.Tensor, word_mask: torch.Tensor) -> torch.Tensor:
        frames = self.proj(self.drop(self.norm(x)))
        grouped, lengths = frames_per_word(frames, mask, word_mask, self.cap)
        states = frames.new_zeros(*grouped.shape[:2], self.cell_dim)
        has = lengths > 0  # real words with at least one frame
        if has.any():
            seqs = grouped[has]  # N x K x D
            out, _ = self.rnn(seqs)
            idx = lengths[has] - 1
            # unidirectional: the state at the word's last frame never sees the padding
            states[has] = out[torch.arange(out.shape[0], device=x.device), idx]
        return states


@dataclass
class RAVENConfig:
    norm_dim: int = 150
    cell_dim: int = 150
    hidden: int = 300
    dropout: float = 0.2
    shift_weight: float = 0.2
    max_frames_per_word: int = 32


class RAVEN(MultimodalModel):
    min_modalities = 2

    def __init__(self, spec: ModelSpec, config: RAVENConfig) -> None:
        super().__init__(spec, config)
        c = config
        if "text" not in spec.modalities:
            raise OptionError(f"RAVEN shifts words: it needs 'text', got {spec.modalities}")
        self.nonverbal = tuple(m for m in NONVERBAL if m in spec.modalities)
        d_text = spec.dims["text"]
        self.subword = nn.ModuleDict(
            {
                m: SubwordEncoder(
                    spec.dims[m], c.norm_dim, c.cell_dim, c.dropout, c.max_frames_per_word
                )
                for m in self.nonverbal
            }
        )
        self.gates = nn.ModuleDict({m: nn.Linear(c.cell_dim + d_text, 1) for m in self.nonverbal})
        self.shift = nn.Linear(c.cell_dim * len(self.nonverbal), d_text)
        self.word_drop = nn.Dropout(c.dropout)
        self.rnn = nn.LSTM(d_text, c.hidden, batch_first=True)
        self.out = nn.Linear(c.hidden, spec.output_size)

    def shift_words(self, batch: Batch) -> torch.Tensor:
        """The shifted word embeddings e' (B x W x d_text)."""
        words, word_mask = batch.features["text"], batch.masks["text"]
        gated = []
        for m in self.nonverbal:
            h_m = self.subword[m](batch.features[m], batch.masks[m], word_mask)
            w_m = torch.sigmoid(self.gates[m](torch.cat([h_m, words], dim=-1)))
            gated.append(w_m * h_m)
        h = self.shift(torch.cat(gated, dim=-1))
        scale = self.config.shift_weight * words.norm(dim=-1, keepdim=True)
        scale = scale / h.norm(dim=-1, keepdim=True).clamp_min(1.0)
        return words + scale * h

    def forward(self, batch: Batch) -> ModelOutput:
        check_batch(self.spec, batch)
        states, _ = self.rnn(self.word_drop(self.shift_words(batch)))
        out = self.out(last_step(states, batch.masks["text"]))
        return ModelOutput(squeeze_regression(out, self.spec))


@register_model(
    "raven",
    recipe=Recipe(
        lr=1e-3,
        batch_size=20,
        grad_clip=0.0,
        source="RAVEN reference code (victorywys/RAVEN): lr 1e-3, batch 20",
    ),
)
def raven(spec: ModelSpec, **options: object) -> RAVEN:
    return RAVEN(spec, build_config(RAVENConfig, options))
