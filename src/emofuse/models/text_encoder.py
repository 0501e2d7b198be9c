"""A Hugging Face text encoder inside the model, frozen, partly frozen or fine-tuned.

`WithTextEncoder` wraps any registered model: it turns the batch's token ids into one vector
per word (sub-word vectors mean-pooled, the same word order and count that word-level
alignment uses), puts them where the pre-extracted text features would be, and calls the
wrapped model. So every model gains the switch with no change of its own, and for the
fusion-matched network the pivot's words come from the encoder while audio and video stay
aligned to the same words.

Tokenisation happens once per dataset (`emofuse.features.tokens.tokenize_dataset`, stored in the
dataset's extras so subsets and batches carry it) and batches are trimmed to their longest token
sequence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from emofuse.data.dataset import Batch
from emofuse.errors import OptionError
from emofuse.features.text import TEXT_NORMALIZERS
from emofuse.features.tokens import TOKEN_KEYS
from emofuse.models.base import ModelOutput, ModelSpec, MultimodalModel, OwnParameterGroups


@dataclass
class TextEncoderConfig:
    name: str = "minilm"  # minilm | mpnet | a local folder | a cached HF model id
    finetune: str = "all"  # none | all | top:K (only the top K layers train)
    max_words: int = 50
    max_tokens: int = 128  # longer texts are cut; MOSI's longest utterance is ~110 tokens
    normalize: str = "none"  # none | transcript (emofuse.features.text.normalize_words)

    def __post_init__(self) -> None:
        head, _, k = self.finetune.partition(":")
        if self.finetune not in ("none", "all") and (head != "top" or not k.isdigit() or int(k) < 1):
            raise OptionError(f"finetune must be none, all or top:K, not {self.finetune!r}")
        if self.normalize not in TEXT_NORMALIZERS:
            raise OptionError(f"normalize must be {' or '.join(TEXT_NORMALIZERS)}, not {self.normalize!r}")

    @property
    def top_layers(self) -> int | None:
        return int(self.finetune.split(":")[1]) if self.finetune.startswith("top:") else None


def load_tokenizer_and_encoder(name: str) -> tuple[Any, nn.Module]:
    from emofuse.features.text import load_encoder
    from emofuse.features.text_models import resolve_text_model

    return load_encoder(name, resolve_text_model(name))


class TextEncoder(nn.Module):
    """Token ids -> word vectors (B x max_words x D) + word mask + sentence vector."""

    def __init__(self, config: TextEncoderConfig, encoder: nn.Module | None = None) -> None:
        super().__init__()
        self.config = config
        self.encoder = encoder if encoder is not None else load_tokenizer_and_encoder(config.name)[1]
        # a Hugging Face model's `config` (a PretrainedConfig, not a submodule) gives its width
        hf_config: Any = self.encoder.config
        self.dim = int(hf_config.hidden_size)
        self._apply_freezing()

    def _apply_freezing(self) -> None:
        top = self.config.top_layers
        for p in self.encoder.parameters():
            p.requires_grad = self.config.finetune == "all"
        if top:
            for layer in self.layers()[-top:]:
                for p in layer.parameters():
                    p.requires_grad = True

    def layers(self) -> list[nn.Module]:
        """The transformer blocks, bottom to top (BERT-like and MPNet encoders)."""
        encoder = getattr(self.encoder, "encoder", None)
        layers = getattr(encoder, "layer", None)
        if (
            layers is None
        ):  # a --text-encoder model that is not BERT-like (e.g. DistilBERT's transformer.layer)
            raise OptionError(f"cannot find the transformer layers of {type(self.encoder).__name__}")
        return list(layers)

    @property
    def trainable(self) -> bool:
        return any(p.requires_grad for p in self.encoder.parameters())

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, word_index: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.trainable:
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        else:
            with torch.no_grad():  # a frozen encoder needs no graph: far less memory and time
                self.encoder.eval()
                hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        from emofuse.features.text import pool_subwords

        max_words = self.config.max_words
        words = pool_subwords(hidden, word_index, max_words)
        n_words = (word_index.max(1).values + 1).clamp(min=1, max=max_words)
        word_mask = torch.arange(max_words, device=hidden.device)[None, :] < n_words[:, None]
        sentence = (words * word_mask.unsqueeze(-1)).sum(1) / n_words.unsqueeze(-1).to(hidden.dtype)
        return words * word_mask.unsqueeze(-1), word_mask, sentence


class WithTextEncoder(MultimodalModel):
    """Any registered model with its text features computed by a (trainable) text encoder."""

    def __init__(self, inner: MultimodalModel, text_encoder: TextEncoder) -> None:
        super().__init__(inner.spec, inner.config)
        self.inner = inner
        self.text_encoder = text_encoder
        self.model_name = inner.model_name

    def forward(self, batch: Batch) -> ModelOutput:
        missing = [k for k in TOKEN_KEYS if k not in batch.extras]
        if missing:
            raise ValueError("the batch carries no token ids: tokenise the data with tokenize_splits first")
        words, mask, _ = self.text_encoder(*(batch.extras[k] for k in TOKEN_KEYS))
        longest = int(mask.sum(1).max())
        features = {**batch.features, "text": words[:, :longest]}
        masks = {**batch.masks, "text": mask[:, :longest]}
        return self.inner(Batch(features, masks, batch.labels, batch.indices, batch.extras))

    def parameter_groups(
        self, lr: float, text_lr: float = 5e-5, layer_decay: float = 1.0
    ) -> list[dict[str, Any]]:
        """The wrapped model's groups at `lr`, the encoder's at `text_lr` (layer-wise decayed).

        With layer_decay d < 1 the top block trains at text_lr, the one below at text_lr * d,
        and so on down to the embeddings: lower layers hold general language and move less.
        """
        inner = (
            self.inner.parameter_groups(lr)
            if isinstance(self.inner, OwnParameterGroups)
            else [{"params": list(self.inner.parameters()), "lr": lr}]
        )
        enc = self.text_encoder
        if not enc.trainable:
            return inner
        layers = enc.layers()
        layer_of = {}
        for depth, layer in enumerate(layers):
            for p in layer.parameters():
                layer_of[id(p)] = depth
        groups: dict[int, list[nn.Parameter]] = {}
        n = len(layers)
        for name, p in enc.encoder.named_parameters():
            if not p.requires_grad:
                continue
            # embeddings sit below layer 0; anything above the blocks (pooler) trains as the top
            depth = layer_of.get(id(p), -1 if "embeddings" in name else n - 1)
            groups.setdefault(depth, []).append(p)
        text_groups = [
            {"params": ps, "lr": text_lr * layer_decay ** (n - 1 - depth), "text_encoder": True}
            for depth, ps in sorted(groups.items())
        ]
        return inner + text_groups


def text_model_spec(spec: ModelSpec, text_dim: int) -> ModelSpec:
    """The wrapped model sees the encoder's width where the text features were."""
    return ModelSpec(
        spec.modalities, {**spec.dims, "text": text_dim}, spec.max_lengths, spec.task, spec.num_classes
    )
