"""A Hugging Face text encoder inside the model, frozen, partly frozen or fine-tuned.

`WithTextEncoder` wraps any registered model: it turns the batch's token ids into one vector
per word (sub-word vectors mean-pooled, the same word order and count that word-level
alignment uses), puts them where the pre-extracted text features would be, and calls the
wrapped model. So every model gains the switch with no change of its own, and for the
fusion-matched network the pivot's words come from the encoder while audio and video stay
aligned to the same words.

Tokenisation happens once per dataset (`tokenize_dataset`, stored in the dataset's extras so
subsets and batches carry it) and batches are trimmed to their longest token sequence.

MMSA's aligned pickles align audio and video to BERT tokens ([CLS] and [SEP] included), not to
words; `tokenize_dataset` recognises them and pools each word's frames (`realign_token_frames`),
so word i meets its own frames rather than those of token i.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from emofuse.data.dataset import Batch, DataFormatError, DatasetSplits, MultimodalDataset
from emofuse.models.base import ModelOutput, ModelSpec, MultimodalModel

TOKEN_KEYS = ("input_ids", "attention_mask", "word_index")
BERT_TOKENS_KEY = "text_bert"  # MMSA: N x 3 x L token ids / attention mask / segment ids


@dataclass
class TextEncoderConfig:
    name: str = "minilm"  # minilm | mpnet | a local folder | a cached HF model id
    finetune: str = "all"  # none | all | top:K (only the top K layers train)
    max_words: int = 50
    max_tokens: int = 128  # longer texts are cut; MOSI's longest utterance is ~110 tokens

    def __post_init__(self) -> None:
        if self.finetune not in ("none", "all") and not self.finetune.startswith("top:"):
            raise ValueError(f"finetune must be none, all or top:K, not {self.finetune!r}")

    @property
    def top_layers(self) -> int | None:
        return int(self.finetune.split(":")[1]) if self.finetune.startswith("top:") else None


def load_tokenizer_and_encoder(name: str) -> tuple[Any, nn.Module]:
    from emofuse.features.text import load_encoder
    from emofuse.features.text_models import resolve_text_model

    return load_encoder(name, resolve_text_model(name))


def tokenize_texts(tokenizer: Any, texts: list[str], max_words: int, max_tokens: int) -> dict[str, np.ndarray]:
    """Token ids, attention mask and the word each token belongs to (-1: special/padding).

    Padded to the longest text here; batches trim again to their own longest.
    """
    from emofuse.features.text import fill_empty_words, split_words

    words, _ = fill_empty_words(tokenizer, split_words(texts))
    enc = tokenizer(words, is_split_into_words=True, truncation=True, max_length=max_tokens, padding=True)
    ids = np.asarray(enc["input_ids"], dtype=np.int64)
    mask = np.asarray(enc["attention_mask"], dtype=np.int64)
    word_index = np.array([[-1 if w is None or w >= max_words else w for w in enc.word_ids(i)] for i in range(len(words))], dtype=np.int64)
    return {"input_ids": ids, "attention_mask": mask, "word_index": word_index}


def tokenize_dataset(data: MultimodalDataset, tokenizer: Any, config: TextEncoderConfig) -> MultimodalDataset:
    """The same dataset with token arrays in extras and text lengths set to the word counts."""
    if not data.raw_text or not any(t.strip() for t in data.raw_text):
        raise ValueError(f"{data.source}: a text encoder needs the raw text, and this data has none")
    try:
        tokens = tokenize_texts(tokenizer, list(data.raw_text), config.max_words, config.max_tokens)
    except ValueError as err:
        raise ValueError(f"{data.source}: {err}") from None
    n_words = np.maximum(tokens["word_index"].max(1) + 1, 1)
    data = realign_token_frames(data, tokenizer, config.max_words)
    features = dict(data.features)
    lengths = dict(data.lengths)
    # the encoder fills the text slot; any pre-extracted text features are set aside for a
    # one-dimensional placeholder, so training and evaluation data always look the same
    features["text"] = torch.zeros(len(data), config.max_words, 1)
    lengths["text"] = torch.from_numpy(n_words)
    return MultimodalDataset(
        features, lengths, data.labels, data.ids, data.raw_text, data.source, {**data.extras, **tokens}
    )


def token_aligned_modalities(data: MultimodalDataset) -> list[str]:
    """Audio/vision that an MMSA pickle aligned to its BERT tokens rather than to words.

    The signs: the data carries 'text_bert', the modality's padded length equals the token
    sequence's, and in most clips the modality has frames past the clip's whitespace word count
    (word-aligned frames stop at the last word; token-aligned ones run on to [SEP], and further
    wherever a word split into sub-words).
    """
    bert = _bert_tokens(data)
    if bert is None:
        return []
    from emofuse.features.text import split_words

    n_words = np.array([len(w) for w in split_words(list(data.raw_text))])
    found = []
    for modality in ("audio", "vision"):
        x = data.features.get(modality)
        if x is None or x.shape[1] != bert.shape[2]:
            continue
        nonzero = (x != 0).any(dim=2).numpy()
        extent = np.where(nonzero.any(1), x.shape[1] - np.argmax(nonzero[:, ::-1], axis=1), 0)
        if np.mean(extent > n_words) > 0.5:
            found.append(modality)
    return found


def _bert_tokens(data: MultimodalDataset) -> np.ndarray | None:
    bert = data.extras.get(BERT_TOKENS_KEY)
    if bert is None:
        return None
    bert = np.asarray(bert)
    if bert.ndim != 3 or bert.shape[1] != 3 or not np.isin(bert[:, 1], (0, 1)).all():
        return None
    return bert


def _token_words(tokenizer: Any, words: list[str], pickled: list[int]) -> list[int | None] | None:
    """The word (or None for [CLS]/[SEP]) of each of the pickle's tokens; None if unknown.

    Exact when `tokenizer` yields the pickle's ids (the same vocabulary: MiniLM's is BERT-base
    uncased's, MMSA's English one), also when the pickle cut the text short; otherwise only
    when every word is one token, the tokens being [CLS] w1 ... wn [SEP].
    """
    enc = tokenizer(words, is_split_into_words=True, truncation=False, verbose=False)
    ours, word_ids = list(enc["input_ids"]), list(enc.word_ids())
    if ours == pickled:
        return word_ids
    n = len(pickled)
    if 2 <= n < len(ours) and ours[: n - 1] == pickled[:-1] and pickled[-1] == ours[-1]:
        return [*word_ids[: n - 1], None]  # truncated to n tokens, [SEP] kept last
    if n == len(words) + 2:
        return [None, *range(len(words)), None]
    return None


def realign_token_frames(data: MultimodalDataset, tokenizer: Any, max_words: int) -> MultimodalDataset:
    """Pool token-aligned audio/vision (see `token_aligned_modalities`) onto whitespace words.

    Each word gets the mean of its sub-word tokens' frames; the [CLS] and [SEP] frames are
    dropped. The result has max_words steps, like the encoder's words. Raises DataFormatError
    when the pickle's tokens cannot be mapped to words (another vocabulary and sub-word splits):
    guessing would pair words with the wrong frames.
    """
    modalities = token_aligned_modalities(data)
    bert = _bert_tokens(data)
    if not modalities or bert is None:
        return data
    from emofuse.features.text import fill_empty_words, split_words

    words, _ = fill_empty_words(tokenizer, split_words(list(data.raw_text)))
    n = len(data)
    slots = np.full((n, bert.shape[2]), -1, dtype=np.int64)  # word of each padded token position
    unknown = []
    for i in range(n):
        positions = np.flatnonzero(bert[i, 1])
        mapping = _token_words(tokenizer, words[i], bert[i, 0, positions].astype(np.int64).tolist())
        if mapping is None:
            unknown.append(data.ids[i])
            continue
        slots[i, positions] = [-1 if w is None or w >= max_words else w for w in mapping]
    if unknown:
        raise DataFormatError(
            f"{data.source}: {', '.join(modalities)} are aligned to the pickle's BERT tokens "
            f"('{BERT_TOKENS_KEY}', [CLS]/[SEP] included), and for {len(unknown)} clip(s) (first: "
            f"{unknown[0]!r}) the tokenizer gives other tokens, so which frames belong to which "
            "word is unknown. Use a text encoder with the pickle's vocabulary (MMSA's English "
            "pickles: BERT-base uncased, as minilm's), or the pickle's own text features."
        )
    features, lengths = dict(data.features), dict(data.lengths)
    one_hot = torch.from_numpy((slots[:, None, :] == np.arange(max_words)[None, :, None]).astype(np.float32))
    counts = one_hot.sum(2, keepdim=True)
    for modality in modalities:
        pooled = one_hot @ data.features[modality] / counts.clamp(min=1)  # N x max_words x D
        features[modality] = pooled
        lengths[modality] = torch.from_numpy(np.maximum(slots.max(1) + 1, 1))
    return MultimodalDataset(
        features, lengths, data.labels, data.ids, data.raw_text, data.source, data.extras
    )


def tokenize_splits(splits: DatasetSplits, tokenizer: Any, config: TextEncoderConfig) -> DatasetSplits:
    return DatasetSplits(
        *(tokenize_dataset(d, tokenizer, config) for _, d in splits.items()),
        name=splits.name,
        class_names=splits.class_names,
        frontend=splits.frontend,
    )


class TextEncoder(nn.Module):
    """Token ids -> word vectors (B x max_words x D) + word mask + sentence vector."""

    def __init__(self, config: TextEncoderConfig, encoder: nn.Module | None = None) -> None:
        super().__init__()
        self.config = config
        self.encoder = encoder if encoder is not None else load_tokenizer_and_encoder(config.name)[1]
        self.dim = int(self.encoder.config.hidden_size)
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
        if layers is None:
            raise ValueError(f"cannot find the transformer layers of {type(self.encoder).__name__}")
        return list(layers)

    @property
    def trainable(self) -> bool:
        return any(p.requires_grad for p in self.encoder.parameters())

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, word_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
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

    def parameter_groups(self, lr: float, text_lr: float = 5e-5, layer_decay: float = 1.0) -> list[dict[str, Any]]:
        """The wrapped model's groups at `lr`, the encoder's at `text_lr` (layer-wise decayed).

        With layer_decay d < 1 the top block trains at text_lr, the one below at text_lr * d,
        and so on down to the embeddings: lower layers hold general language and move less.
        """
        inner = self.inner.parameter_groups(lr) if hasattr(self.inner, "parameter_groups") else [{"params": list(self.inner.parameters()), "lr": lr}]
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
    return ModelSpec(spec.modalities, {**spec.dims, "text": text_dim}, spec.max_lengths, spec.task, spec.num_classes)
