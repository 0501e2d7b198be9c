"""Memory Fusion Network (Zadeh et al., AAAI 2018).

One LSTM cell per modality steps through time. At each step the cell memories before and
after the step, c* = [c_{t-1}; c_t] over all modalities, go through the Delta-memory
attention and the Multi-view Gated Memory u:

    a = softmax(NN1(c*))              attention over the entries of c* (sums to 1)
    c^ = a * c*
    u^ = tanh(NN2(c^))                proposed memory
    g1, g2 = sigmoid(G1([c^; u_{t-1}])), sigmoid(G2([c^; u_{t-1}]))
    u_t = g1 * u_{t-1} + g2 * u^

and the prediction is MLP([h_T of every modality; u_T]).

The cells need one step per time step for every modality. On unaligned data each modality
is averaged into the first modality's steps (`align_to_mask`); on word-aligned data that is
the identity.

Defaults are MMSA 2.2.1's MOSI configuration (hidden text 256 / audio 32 / vision 256,
memory 400, NN1 32 (dropout 0.2), NN2 64 (0.0), gamma1 256 (0.7), gamma2 32 (0.5),
output 128 (0.0); batch 128, lr 2e-3).

Departures from MMSA's version, on purpose:
- audio and vision enter as sequences, step by step (MMSA's data loader feeds MFN clips
  averaged over time, padding included);
- padded steps are masked: a sequence's hidden states, cell memories and u stay unchanged
  after its last real step, so h_T and u_T are read at the last real step, whatever the
  batch's padded length (MMSA reads them after the padding);
- unaligned data are aligned per sample to the pivot's real length, so a prediction never
  depends on its batch mates' lengths.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from emofuse.data.dataset import Batch
from emofuse.models.base import (
    ModelOutput,
    ModelSpec,
    MultimodalModel,
    align_to_mask,
    build_config,
    check_batch,
    lstm_gates_step,
    squeeze_regression,
)
from emofuse.models.registry import Recipe, register_model


def _mlp(in_dim: int, hidden: int, out_dim: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, out_dim)
    )


@dataclass
class MFNConfig:
    text_hidden: int = 256
    audio_hidden: int = 32
    vision_hidden: int = 256
    memory: int = 400
    nn1_hidden: int = 32
    nn1_dropout: float = 0.2
    nn2_hidden: int = 64
    nn2_dropout: float = 0.0
    gamma1_hidden: int = 256
    gamma1_dropout: float = 0.7
    gamma2_hidden: int = 32
    gamma2_dropout: float = 0.5
    out_hidden: int = 128
    out_dropout: float = 0.0


class MFN(MultimodalModel):
    def __init__(self, spec: ModelSpec, config: MFNConfig) -> None:
        super().__init__(spec, config)
        c = config
        hidden = {"text": c.text_hidden, "audio": c.audio_hidden, "vision": c.vision_hidden}
        self.hidden = {m: hidden[m] for m in spec.modalities}
        self.cells = nn.ModuleDict(
            {m: nn.LSTMCell(spec.dims[m], self.hidden[m]) for m in spec.modalities}
        )
        total = sum(self.hidden.values())
        cstar = 2 * total  # window of two steps: c_{t-1} and c_t
        self.nn1 = _mlp(cstar, c.nn1_hidden, cstar, c.nn1_dropout)
        self.nn2 = _mlp(cstar, c.nn2_hidden, c.memory, c.nn2_dropout)
        self.gamma1 = _mlp(cstar + c.memory, c.gamma1_hidden, c.memory, c.gamma1_dropout)
        self.gamma2 = _mlp(cstar + c.memory, c.gamma2_hidden, c.memory, c.gamma2_dropout)
        self.out = _mlp(total + c.memory, c.out_hidden, spec.output_size, c.out_dropout)

    def forward(self, batch: Batch) -> ModelOutput:
        check_batch(self.spec, batch)
        mods = self.spec.modalities
        pivot = mods[0]
        mask = batch.masks[pivot]
        xs = {m: align_to_mask(batch.features[m], batch.masks[m], mask) for m in mods}
        b, steps = mask.shape
        x0 = xs[pivot]
        h = {m: x0.new_zeros(b, self.hidden[m]) for m in mods}
        c = {m: x0.new_zeros(b, self.hidden[m]) for m in mods}
        u = x0.new_zeros(b, self.config.memory)
        # The input half of every cell's gates, for all steps at once: one large product per
        # modality instead of one small product (and one gradient accumulation) per step.
        cells = {m: cast(nn.LSTMCell, self.cells[m]) for m in mods}
        pre = {
            m: F.linear(xs[m], cells[m].weight_ih, cells[m].bias_ih + cells[m].bias_hh).unbind(1)
            for m in mods
        }
        # gamma1 and gamma2 read the same input: their first layers run as one product
        g1_in, g2_in = cast(nn.Linear, self.gamma1[0]), cast(nn.Linear, self.gamma2[0])
        gamma_w = torch.cat([g1_in.weight, g2_in.weight])
        gamma_b = torch.cat([g1_in.bias, g2_in.bias])
        split = g1_in.out_features
        g1_rest, g2_rest = self.gamma1[1:], self.gamma2[1:]
        # steps where every clip is real need no masking (all of them on word-aligned full batches)
        full = mask.all(0).tolist()
        attentions, memories = [], []
        for t in range(steps):
            new_h, new_c = {}, {}
            for m in mods:
                new_h[m], new_c[m] = lstm_gates_step(pre[m][t], h[m], c[m], cells[m].weight_hh)
            cstar = torch.cat([c[m] for m in mods] + [new_c[m] for m in mods], dim=1)
            attention = torch.softmax(self.nn1(cstar), dim=1)
            attended = attention * cstar
            proposal = torch.tanh(self.nn2(attended))
            both = torch.cat([attended, u], dim=1)
            hidden1, hidden2 = F.linear(both, gamma_w, gamma_b).split([split, gamma_w.shape[0] - split], 1)
            g1 = torch.sigmoid(g1_rest(hidden1))
            g2 = torch.sigmoid(g2_rest(hidden2))
            new_u = g1 * u + g2 * proposal
            if full[t]:
                u, h, c = new_u, new_h, new_c
            else:
                # a padded step changes nothing: states and memory carry over unchanged
                real = mask[:, t].unsqueeze(-1)
                u = torch.where(real, new_u, u)
                h = {m: torch.where(real, new_h[m], h[m]) for m in mods}
                c = {m: torch.where(real, new_c[m], c[m]) for m in mods}
            attentions.append(attention)
            memories.append(u)
        final = torch.cat([h[m] for m in mods] + [u], dim=1)
        out = self.out(final)
        extras = {"attention": torch.stack(attentions, 1), "memory": torch.stack(memories, 1)}
        return ModelOutput(squeeze_regression(out, self.spec), extras=extras)


@register_model(
    "mfn",
    recipe=Recipe(
        lr=2e-3, batch_size=128, grad_clip=0.0, source="MMSA 2.2.1 MOSI: lr 2e-3, batch 128, weight decay 0"
    ),
)
def mfn(spec: ModelSpec, **options: object) -> MFN:
    return MFN(spec, build_config(MFNConfig, options))
