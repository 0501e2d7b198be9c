"""Multimodal Cyclic Translation Network (Pham et al., AAAI 2019).

A sequence-to-sequence model translates the source modality into a target modality and the
translation back into the source; the encoder's state, forced to carry what both
translations need, is the joint representation that the regression head reads. At test
time only the source is needed: the prediction depends on the source modality alone.

    source --encoder--> (sequence, state) --decoder--> target^      (translation loss)
    target^ --cycle encoder--> --cycle decoder--> source^           (cycle loss)
    prediction = head(state)

With three modalities the model is hierarchical: a second encoder reads the first
encoder's output sequence (the first joint representation) and a second decoder translates
it into the third modality; the head then reads the second encoder's state.

Training returns aux_loss = w_t * MSE(target^) + w_c * MSE(source^) [+ w_t * MSE(third^)],
weights 0.1 as in the paper and MMSA; the trainer adds the task loss (MMSA: 1.0 * MAE).
In eval mode nothing but the source is read and aux_loss is None, so targets may be
missing from the batch altogether.

Kept simple, and documented as such:
- the decoders are not autoregressive: an LSTM initialised with the encoder state runs
  over the encoder's output sequence and emits one target frame per source step; the
  target sequence is first averaged onto the source's real steps (`align_to_mask`);
- the back translation has its own encoder and decoder (MMSA reuses the forward
  seq2seq for both directions by zero-padding every modality to 768 features);
- the second stage has no cycle of its own.

MMSA bugs not copied: its LSTMs lack batch_first while fed (batch, time, dim), so they
recurred over the batch axis and a prediction depended on its batch mates; it hard-coded
'cuda'. Here every LSTM is batch_first, packed by the masks, and device-agnostic.
Defaults: hidden 32 as MMSA's MOSI configuration (lr 1e-4, batch 32, grad clip 1.0).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from emofuse.data.dataset import Batch
from emofuse.errors import OptionError
from emofuse.models.base import (
    ModelOutput,
    ModelSpec,
    MultimodalModel,
    align_to_mask,
    build_config,
    mlp_head,
    squeeze_regression,
)
from emofuse.models.registry import Recipe, register_model


# ---------------------------------------------------------------------------- blocks
class Seq2SeqEncoder(nn.Module):
    """Packed bidirectional LSTM: (output sequence B x L x H, state B x H)."""

    def __init__(self, in_dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.rnn = nn.LSTM(in_dim, hidden, batch_first=True, bidirectional=True)
        self.drop = nn.Dropout(dropout)
        self.state = nn.Linear(2 * hidden, hidden)
        self.hidden = hidden

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = mask.sum(1).clamp_min(1).cpu()
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, (h_n, _) = self.rnn(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        # the two directions are summed, as MMSA does; the state joins both final states
        seq = self.drop(out[..., : self.hidden] + out[..., self.hidden :])
        state = torch.tanh(self.state(torch.cat([h_n[0], h_n[1]], dim=-1)))
        return seq * mask.unsqueeze(-1).to(seq.dtype), state


class Seq2SeqDecoder(nn.Module):
    """LSTM started from the encoder state, over the encoder sequence, one frame per step."""

    def __init__(self, hidden: int, out_dim: int) -> None:
        super().__init__()
        self.rnn = nn.LSTM(hidden, hidden, batch_first=True)
        self.out = nn.Linear(hidden, out_dim)

    def forward(self, seq: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        h0 = state.unsqueeze(0)
        out, _ = self.rnn(seq, (h0, torch.zeros_like(h0)))
        return self.out(out)


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """MSE over the real steps only (B x L x D, mask B x L)."""
    weights = mask.unsqueeze(-1).to(pred.dtype)
    return ((pred - target) ** 2 * weights).sum() / (weights.sum() * pred.shape[-1]).clamp_min(1)


# ---------------------------------------------------------------------------- model
@dataclass
class MCTNConfig:
    source: str = "text"
    hidden: int = 32
    dropout: float = 0.0
    translation_weight: float = 0.1
    cycle_weight: float = 0.1


class MCTN(MultimodalModel):
    min_modalities = 2

    def __init__(self, spec: ModelSpec, config: MCTNConfig) -> None:
        super().__init__(spec, config)
        c = config
        if c.source not in spec.modalities:
            raise OptionError(
                f"MCTN's source modality {c.source!r} is not among {spec.modalities}; "
                "pass source= one of them"
            )
        self.source = c.source
        self.targets = tuple(m for m in spec.modalities if m != c.source)
        d_src, d_t1, h = spec.dims[c.source], spec.dims[self.targets[0]], c.hidden
        self.encoder = Seq2SeqEncoder(d_src, h, c.dropout)
        self.decoder = Seq2SeqDecoder(h, d_t1)
        self.cycle_encoder = Seq2SeqEncoder(d_t1, h, c.dropout)
        self.cycle_decoder = Seq2SeqDecoder(h, d_src)
        self.encoder2: Seq2SeqEncoder | None = None
        self.decoder2: Seq2SeqDecoder | None = None
        if len(self.targets) == 2:
            self.encoder2 = Seq2SeqEncoder(h, h, c.dropout)
            self.decoder2 = Seq2SeqDecoder(h, spec.dims[self.targets[1]])
        self.head = mlp_head(h, h, spec.output_size, c.dropout)

    def forward(self, batch: Batch) -> ModelOutput:
        if self.source not in batch.features:  # the batch comes from data with the spec's modalities: a bug
            raise ValueError(f"MCTN needs its source modality {self.source!r} in the batch")
        src, mask = batch.features[self.source], batch.masks[self.source]
        seq1, state1 = self.encoder(src, mask)
        seq2 = state2 = None
        if self.encoder2 is not None:
            seq2, state2 = self.encoder2(seq1, mask)
        joint = state2 if state2 is not None else state1
        prediction = squeeze_regression(self.head(joint), self.spec)
        if not self.training:
            return ModelOutput(prediction)

        missing = [m for m in self.targets if m not in batch.features]
        if missing:  # as above: the batch comes from data with the spec's modalities
            raise ValueError(
                f"MCTN trains on translations to {self.targets}; the batch lacks {missing}"
            )
        c = self.config
        target1 = align_to_mask(batch.features[self.targets[0]], batch.masks[self.targets[0]], mask)
        translated = self.decoder(seq1, state1)
        cycle_seq, cycle_state = self.cycle_encoder(translated, mask)
        back = self.cycle_decoder(cycle_seq, cycle_state)
        aux = c.translation_weight * masked_mse(translated, target1, mask)
        aux = aux + c.cycle_weight * masked_mse(back, src, mask)
        if self.decoder2 is not None and seq2 is not None and state2 is not None:
            t2 = self.targets[1]
            target2 = align_to_mask(batch.features[t2], batch.masks[t2], mask)
            aux = aux + c.translation_weight * masked_mse(
                self.decoder2(seq2, state2), target2, mask
            )
        return ModelOutput(prediction, aux_loss=aux)


@register_model(
    "mctn",
    recipe=Recipe(
        lr=1e-4, batch_size=32, grad_clip=1.0, source="MMSA 2.2.1 MOSI: lr 1e-4, batch 32, grad clip 1.0"
    ),
)
def mctn(spec: ModelSpec, **options: object) -> MCTN:
    return MCTN(spec, build_config(MCTNConfig, options))
