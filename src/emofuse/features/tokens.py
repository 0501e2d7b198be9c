"""Token ids for an in-model text encoder: whole datasets tokenised once, before training.

`tokenize_dataset` stores the token arrays (`TOKEN_KEYS`) in a dataset's extras, so subsets and
batches carry them; the encoder inside the model (`emofuse.models.text_encoder`) reads them.

MMSA's aligned pickles align audio and video to BERT tokens ([CLS] and [SEP] included), not to
words; `tokenize_dataset` recognises them and pools each word's frames (`realign_token_frames`),
so word i meets its own frames rather than those of token i.
"""

from __future__ import annotations

import warnings
from typing import Any, Protocol

import numpy as np
import torch

from emofuse.data.dataset import DataFormatError, DatasetSplits, MultimodalDataset
from emofuse.features.text import fill_empty_words, normalize_words, split_words

TOKEN_KEYS = ("input_ids", "attention_mask", "word_index")
BERT_TOKENS_KEY = "text_bert"  # MMSA: N x 3 x L token ids / attention mask / segment ids


class TokenLimits(Protocol):
    """How much of each text is tokenised (`emofuse.models.text_encoder.TextEncoderConfig` is one)."""

    max_words: int
    max_tokens: int
    normalize: str  # emofuse.features.text.TEXT_NORMALIZERS


def tokenize_texts(
    tokenizer: Any, texts: list[str], max_words: int, max_tokens: int, normalize: str = "none"
) -> dict[str, np.ndarray]:
    """Token ids, attention mask and the word each token belongs to (-1: special/padding).

    Padded to the longest text here; batches trim again to their own longest. `normalize`: how
    each word is rewritten first (`emofuse.features.text.normalize_words`).
    """
    words = [normalize_words(w, normalize) for w in split_words(texts)]
    words, counts = fill_empty_words(tokenizer, words)
    cut = sum(len(w) > max_words or n > max_tokens for w, n in zip(words, counts, strict=True))
    if cut:
        warnings.warn(
            f"{cut} of {len(words)} texts are longer than max_words={max_words} words or max_tokens="
            f"{max_tokens} tokens; their ends are not read", stacklevel=2,
        )
    enc = tokenizer(words, is_split_into_words=True, truncation=True, max_length=max_tokens, padding=True)
    ids = np.asarray(enc["input_ids"], dtype=np.int64)
    mask = np.asarray(enc["attention_mask"], dtype=np.int64)
    word_index = np.array(
        [[-1 if w is None or w >= max_words else w for w in enc.word_ids(i)] for i in range(len(words))],
        dtype=np.int64,
    )
    return {"input_ids": ids, "attention_mask": mask, "word_index": word_index}


def tokenize_dataset(data: MultimodalDataset, tokenizer: Any, config: TokenLimits) -> MultimodalDataset:
    """The same dataset with token arrays in extras and text lengths set to the word counts."""
    if not data.raw_text or not any(t.strip() for t in data.raw_text):
        raise DataFormatError(f"{data.source}: a text encoder needs the raw text, and this data has none")
    try:
        tokens = tokenize_texts(
            tokenizer, list(data.raw_text), config.max_words, config.max_tokens, config.normalize
        )
    except ValueError as err:
        raise DataFormatError(f"{data.source}: {err}") from None
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


def tokenize_splits(splits: DatasetSplits, tokenizer: Any, config: TokenLimits) -> DatasetSplits:
    return DatasetSplits(
        *(tokenize_dataset(d, tokenizer, config) for _, d in splits.items()),
        name=splits.name,
        class_names=splits.class_names,
        frontend=splits.frontend,
    )
