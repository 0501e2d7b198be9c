"""Word-level contextual text embeddings (the paper's text stream) and their datasets.

Words are the unit of alignment in emofuse (audio and video frames are later pooled per word), so
a text is split on whitespace, exactly as the aligners split it, and each word gets one vector:
the mean of the encoder's last-layer vectors of the word's sub-word tokens (found through the fast
tokenizer's word_ids()). The whole text is encoded at once, so every word vector is contextual.

Lengths and truncation:
- The text is encoded up to the model's maximum length (512 tokens for MiniLM/MPNet/BERT); words
  whose tokens all fall beyond it are dropped from the end, so `lengths` counts the words that
  were encoded. A word cut in two by that limit keeps the mean of its surviving sub-words.
- The result keeps the first `max_words` words (default 50, MMSA's length) and zero rows after.
- A word the tokenizer turns into no token at all (e.g. a lone zero-width or control character)
  is encoded as the tokenizer's unknown token, so word count and order always match the split.

Models never download at run time (see `emofuse.features.text_models`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm.auto import tqdm

from emofuse.data.dataset import DataFormatError, DatasetSplits
from emofuse.data.label_csv import table_to_splits
from emofuse.errors import OptionError
from emofuse.features.text_models import (
    TextModelUnavailable,
    local_files_only,
    model_fingerprint,
    resolve_text_model,
)
from emofuse.files import atomic_path
from emofuse.runtime import resolve_cache_dir

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_MAX_WORDS = 50
# Bump when the pooling or layout changes, so old cache files are never read as new ones.
_CACHE_FORMAT = 1


# How transcripts are normalised before tokenising (`TextEncoderConfig.normalize`, recorded in the
# run): 'none' leaves them as written; 'transcript' lower-cases every word and deletes what is not a
# letter or digit (didn't -> didnt, I'm -> im, good. -> good), as MOSI's label.csv writes its text, so
# text punctuated another way (MOSEI's) reaches the encoder in the form the run was trained on. Word by
# word: the whitespace word count, and with it word-level alignment of audio/video, never changes; a
# word with nothing left (a lone '.') is kept as written.
TEXT_NORMALIZERS = ("none", "transcript")
_NON_WORD = re.compile(r"[\W_]+")


def normalize_words(words: list[str], normalize: str) -> list[str]:
    if normalize == "none":
        return words
    if normalize != "transcript":
        raise OptionError(f"text normalisation must be one of {TEXT_NORMALIZERS}, not {normalize!r}")
    return [_NON_WORD.sub("", w.lower()) or w for w in words]


def split_words(texts: Sequence[str]) -> list[list[str]]:
    """Whitespace-split every text; raise DataFormatError naming the index of an empty or non-text one."""
    words = []
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise DataFormatError(f"text {i} is not a string ({type(text).__name__}: {text!r})")
        parts = text.split()
        if not parts:
            raise DataFormatError(f"text {i} is empty or whitespace-only")
        words.append(parts)
    return words


class WordEmbedder:
    """One contextual vector per whitespace word, from a transformers encoder.

    model: 'minilm' (default), 'mpnet', a local folder or a cached hub id (see
        `resolve_text_model`).
    device: where the encoder runs ('cpu', 'cuda', a torch.device).
    max_words: words kept per text (padding/truncation length of the output).
    batch_size: texts per encoder call; texts are length-bucketed so a batch pads little.
    """

    def __init__(
        self,
        model: str = "minilm",
        device: str | torch.device = "cpu",
        max_words: int = DEFAULT_MAX_WORDS,
        batch_size: int = 32,
    ) -> None:
        if max_words < 1:
            raise OptionError(f"max_words must be >= 1, got {max_words}")
        if batch_size < 1:
            raise OptionError(f"batch_size must be >= 1, got {batch_size}")
        self.model_name = model
        self.model_path = resolve_text_model(model)
        self.device = torch.device(device)
        self.max_words = int(max_words)
        self.batch_size = int(batch_size)
        self.tokenizer, self.encoder = load_encoder(model, self.model_path)
        self.encoder.to(self.device).eval()
        self.dim = int(self.encoder.config.hidden_size)
        self.max_length = max_length(self.tokenizer, self.encoder.config)

    def __repr__(self) -> str:
        return (
            f"WordEmbedder(model={self.model_name!r}, path={self.model_path!r}, dim={self.dim}, "
            f"max_words={self.max_words}, device={str(self.device)!r})"
        )

    # ----------------------------------------------------------------- public
    def embed(self, texts: Sequence[str], progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Embed texts word by word.

        Returns (features float32 N x max_words x D, zero beyond each length; lengths int64 N).
        Raises ValueError naming the index of an empty or whitespace-only text.
        """
        words = split_words(texts)
        n = len(words)
        features = np.zeros((n, self.max_words, self.dim), dtype=np.float32)
        lengths = np.zeros(n, dtype=np.int64)
        if n == 0:
            return features, lengths
        words, token_counts = self._fill_empty_words(words)
        # Longest first, stable: batches hold texts of similar length, so padding (and the
        # quadratic attention over it) is small; results go back to their original rows.
        order = np.argsort(-token_counts, kind="stable")
        starts = range(0, n, self.batch_size)
        bar = tqdm(
            starts, total=len(starts), desc="text features", unit="batch", disable=not progress
        )
        for start in bar:
            idx = order[start : start + self.batch_size]
            batch_features, batch_lengths = self._encode([words[i] for i in idx])
            features[idx] = batch_features
            lengths[idx] = batch_lengths
        return features, lengths

    def sentence_vectors(self, texts: Sequence[str]) -> np.ndarray:
        """One vector per text: the mean of its word vectors (N x D float32)."""
        features, lengths = self.embed(texts)
        return (features.sum(axis=1) / np.maximum(lengths, 1)[:, None]).astype(np.float32)

    # ----------------------------------------------------------------- internals
    def _fill_empty_words(self, words: list[list[str]]) -> tuple[list[list[str]], np.ndarray]:
        return fill_empty_words(self.tokenizer, words)

    def _encode(self, batch_words: list[list[str]]) -> tuple[np.ndarray, np.ndarray]:
        """Run the encoder on one batch and mean-pool sub-word vectors into word vectors."""
        enc = self.tokenizer(
            batch_words,
            is_split_into_words=True,
            truncation=True,
            max_length=self.max_length,
            padding=True,
            return_tensors="pt",
        )
        b = enc["input_ids"].shape[0]
        # word_ids() holds None for special and padding tokens; a float array turns None into
        # NaN in one C-level conversion, which then becomes -1 ("no word").
        word_ids = np.array([enc.word_ids(j) for j in range(b)], dtype=np.float64)
        word_ids = torch.from_numpy(np.nan_to_num(word_ids, nan=-1.0).astype(np.int64))
        inputs = {k: v.to(self.device) for k, v in enc.items()}
        with torch.inference_mode():
            hidden = self.encoder(**inputs).last_hidden_state.float().cpu()
        word_ids = word_ids[:, : hidden.shape[1]]
        pooled = pool_subwords(hidden, word_ids, self.max_words)
        # Every word has >= 1 token (see _fill_empty_words), so the encoded words are exactly
        # 0..max_id and the count is max_id + 1.
        lengths = (word_ids.max(dim=1).values + 1).clamp(min=0, max=self.max_words)
        return pooled.numpy(), lengths.numpy().astype(np.int64)


def pool_subwords(hidden: torch.Tensor, word_index: torch.Tensor, max_words: int) -> torch.Tensor:
    """Mean of each word's sub-word vectors: B x T x D tokens -> B x max_words x D words.

    word_index gives each token's word (-1 for special and padding tokens); words at or past
    max_words are dropped, and word slots with no token stay zero. Differentiable, so the
    in-model text encoder can fine-tune through it.
    """
    b, t, d = hidden.shape
    keep = (word_index >= 0) & (word_index < max_words)
    rows = torch.arange(b, device=hidden.device).unsqueeze(1).expand(b, t)
    slot = (rows * max_words + word_index.clamp_min(0))[keep]
    sums = hidden.new_zeros(b * max_words, d).index_add(0, slot, hidden[keep])
    counts = torch.bincount(slot, minlength=b * max_words).clamp_min(1).unsqueeze(1).to(hidden.dtype)
    return (sums / counts).view(b, max_words, d)


def fill_empty_words(tokenizer: Any, words: list[list[str]]) -> tuple[list[list[str]], np.ndarray]:
    """Swap words that yield no token for the unknown token; return token counts per text.

    Without this, word_ids() would skip such a word and every later word would shift into
    the wrong time slot.
    """
    enc = tokenizer(words, is_split_into_words=True, truncation=False, verbose=False)
    counts = np.array([len(ids) for ids in enc["input_ids"]], dtype=np.int64)
    unk = tokenizer.unk_token or "."
    fixed = words
    for i, text_words in enumerate(words):
        present = {w for w in enc.word_ids(i) if w is not None}
        if len(present) == len(text_words):
            continue
        if fixed is words:
            fixed = list(words)
        fixed[i] = [w if j in present else unk for j, w in enumerate(text_words)]
        counts[i] += len(text_words) - len(present)
    return fixed, counts


def load_encoder(name: str, path: str) -> tuple[Any, Any]:
    """Load a fast tokenizer and the bare encoder (no head) from `path`."""
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as transformers_logging

    # its "Loading weights" progress bar would print on every clip that `predict` or `serve` loads
    # a run for; emofuse shows its own progress where work is long
    transformers_logging.disable_progress_bar()
    local = local_files_only()
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=local)
        if getattr(tokenizer, "add_prefix_space", None) is False:
            # Byte-level BPE tokenizers (RoBERTa, GPT-2) refuse pre-split words without it.
            tokenizer = AutoTokenizer.from_pretrained(
                path, local_files_only=local, add_prefix_space=True
            )
        encoder = AutoModel.from_pretrained(path, local_files_only=local)
    except (OSError, ValueError) as exc:
        raise TextModelUnavailable(f"cannot load text model {name!r} from {path}: {exc}") from exc
    if not getattr(tokenizer, "is_fast", False):
        raise TextModelUnavailable(
            f"text model {name!r} ({path}) has no fast tokenizer (tokenizer.json); word pooling "
            "needs word_ids(), which only fast tokenizers provide"
        )
    return tokenizer, encoder


def max_length(tokenizer: Any, config: Any) -> int:
    """The longest token sequence the encoder accepts."""
    limit = int(getattr(tokenizer, "model_max_length", 0) or 0)
    if 0 < limit <= 100_000:
        return limit
    # Tokenizers without a recorded limit report a huge sentinel; fall back to the positions.
    return min(int(getattr(config, "max_position_embeddings", 512) or 512), 512)


# --------------------------------------------------------------------------- caching
def feature_cache_path(
    texts: Sequence[str],
    model: str = "minilm",
    max_words: int = DEFAULT_MAX_WORDS,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """Where `embed_cached` keeps the features of these texts (the file may not exist yet)."""
    resolved = resolve_text_model(model)
    header = {
        "format": _CACHE_FORMAT,
        "model": model_fingerprint(resolved),
        "max_words": int(max_words),
        "n": len(texts),
    }
    digest = hashlib.sha256(json.dumps(header, sort_keys=True).encode())
    for text in texts:
        # Length-prefixed, so no choice of separator can make two text lists collide.
        raw = str(text).encode("utf-8")
        digest.update(len(raw).to_bytes(8, "little"))
        digest.update(raw)
    return resolve_cache_dir(cache_dir) / "text_features" / f"{digest.hexdigest()}.npz"


def embed_cached(
    texts: Sequence[str],
    model: str = "minilm",
    max_words: int = DEFAULT_MAX_WORDS,
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    embedder: WordEmbedder | None = None,
    device: str | torch.device = "cpu",
    batch_size: int = 32,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """`WordEmbedder.embed` with an on-disk cache under <cache>/text_features/<sha256>.npz.

    The key covers the resolved model (folder, config.json hash, weight file sizes and times),
    max_words and every text, so any change recomputes. The model is only loaded on a miss.
    embedder: reuse an already loaded one (its max_words must equal `max_words`).
    """
    split_words(texts)  # the same errors on a hit as on a miss
    if embedder is not None:
        if (
            embedder.max_words != max_words
        ):  # a bug, not the user's: the caller built the embedder for max_words
            raise ValueError(f"embedder keeps {embedder.max_words} words, asked for {max_words}")
        model = embedder.model_path
    path = feature_cache_path(texts, model, max_words, cache_dir)
    if path.is_file():
        cached = _read_cache(path, len(texts), max_words)
        if cached is not None:
            return cached
    if embedder is None:
        embedder = WordEmbedder(model, device=device, max_words=max_words, batch_size=batch_size)
    features, lengths = embedder.embed(texts, progress=progress)
    _write_cache(path, features, lengths, embedder.model_path, max_words)
    return features, lengths


def _read_cache(path: Path, n: int, max_words: int) -> tuple[np.ndarray, np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as data:
            features = data["features"]
            lengths = data["lengths"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        warnings.warn(f"unreadable text feature cache {path} ({exc}); recomputing", stacklevel=3)
        return None
    if features.ndim != 3 or features.shape[:2] != (n, max_words) or lengths.shape != (n,):
        warnings.warn(f"text feature cache {path} has unexpected shapes; recomputing", stacklevel=3)
        return None
    return features.astype(np.float32, copy=False), lengths.astype(np.int64, copy=False)


def _write_cache(
    path: Path, features: np.ndarray, lengths: np.ndarray, model: str, max_words: int
) -> None:
    """Write atomically (`emofuse.files.atomic_path`): readers never see half a cache entry."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(
            handle,
            features=features,
            lengths=lengths,
            model=np.array(model),
            max_words=np.array(max_words),
        )


# --------------------------------------------------------------------------- datasets
def texts_to_splits(
    df: pd.DataFrame,
    model: str | None = "minilm",
    max_words: int = DEFAULT_MAX_WORDS,
    *,
    class_names: Sequence[str] | None = None,
    source: str = "<memory>",
    name: str = "dataset",
    cache_dir: str | os.PathLike[str] | None = None,
    use_cache: bool = True,
    device: str | torch.device = "cpu",
    batch_size: int = 32,
    progress: bool = True,
) -> DatasetSplits:
    """Embed a label.csv-shaped DataFrame into text-only `DatasetSplits`.

    df: columns video_id, clip_id, text, label, mode (annotation optional, kept as the
        'annotations' extra). mode is train/valid/test ('dev', 'val', 'validation' mean valid).
    Integer-typed labels mean classification: labels become int64 and `class_names` (label-id
    order) is stored; otherwise labels are float32 regression targets.
    All texts are embedded in one call (one cache entry per dataset), then split in row order
    (`emofuse.data.label_csv.table_to_splits`); model=None keeps the raw text only.
    """

    def embed(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        assert model is not None
        if use_cache:
            return embed_cached(texts, model, max_words, cache_dir, device=device, batch_size=batch_size,
                                progress=progress)
        embedder = WordEmbedder(model, device=device, max_words=max_words, batch_size=batch_size)
        return embedder.embed(texts, progress=progress)

    return table_to_splits(df, max_words, None if model is None else embed, class_names=class_names,
                           source=source, name=name)


def label_csv_to_splits(
    label_csv: str | os.PathLike[str],
    model: str | None = "minilm",
    max_words: int = DEFAULT_MAX_WORDS,
    **kwargs: Any,
) -> DatasetSplits:
    """Read an MMSA-FET label.csv and embed its texts (keyword args go to `texts_to_splits`)."""
    from emofuse.data.label_csv import read_label_csv

    path = Path(label_csv)
    df = read_label_csv(path)
    kwargs.setdefault("source", str(path))
    kwargs.setdefault("name", path.resolve().parent.name or "dataset")
    return texts_to_splits(df, model, max_words, **kwargs)


def prepare_text(
    label_csv: str | os.PathLike[str],
    output: str | os.PathLike[str],
    model: str = "minilm",
    max_words: int = DEFAULT_MAX_WORDS,
    **kwargs: Any,
) -> Path:
    """label.csv -> word-level text features -> an MMSA-format pickle at `output`.

    Keyword arguments (cache_dir, use_cache, device, batch_size, progress) go to
    `texts_to_splits`. Returns the output path.
    """
    from emofuse.data.mmsa import save_mmsa_pickle

    splits = label_csv_to_splits(label_csv, model, max_words, **kwargs)
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_mmsa_pickle(splits, out)
    return out
