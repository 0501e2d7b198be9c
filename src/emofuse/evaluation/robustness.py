"""Test-time robustness of a trained run: one modality missing or noised at rising levels.

Follows MultiBench's protocol in spirit: at noise level p (0.0 ... 0.9) every real step of the
chosen modality gets Gaussian noise of standard deviation p (inputs are standardised, so p is
in units of a feature's spread) and, independently, is dropped (zeroed) with probability p.
"missing" zeroes the modality entirely. The model is never retrained; the area under the
score-vs-level curve (trapezoid, levels normalised to [0, 1]) summarises each curve.

A run whose model reads tokens (an in-model text encoder) ignores the text feature slot, so
noising it would be a no-op and its curve would show a robustness the model does not have.
For such runs text is corrupted at the token level (`TokenCorruption`): at level p each word
is, with probability p, dropped (its tokens removed, later words move up), substituted (its
tokens replaced by random vocabulary tokens) or masked (its tokens replaced by the mask token),
the three equally likely; "missing" masks every word.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emofuse.data.dataset import DataFormatError, MultimodalDataset
from emofuse.errors import OptionError
from emofuse.evaluation.evaluate import LoadedRun
from emofuse.training.scoring import predict, score

LEVELS = tuple(round(0.1 * i, 1) for i in range(10))


@dataclass
class Corruption:
    modality: str
    level: float  # 0..1; ignored when missing
    missing: bool = False
    seed: int = 0

    def apply(self, data: MultimodalDataset) -> MultimodalDataset:
        feats = dict(data.features)
        x = feats[self.modality]
        mask = data.mask(self.modality).unsqueeze(-1).to(x.dtype)
        if self.missing:
            feats[self.modality] = torch.zeros_like(x)
        elif self.level > 0:
            g = torch.Generator().manual_seed(self.seed)
            noisy = x + self.level * torch.randn(x.shape, generator=g)
            keep = (torch.rand(x.shape[:2], generator=g) >= self.level).unsqueeze(-1).to(x.dtype)
            feats[self.modality] = noisy * keep * mask
        return MultimodalDataset(
            feats, data.lengths, data.labels, data.ids, data.raw_text, data.source, data.extras
        )


TOKEN_KINDS = ("drop", "substitute", "mask")


@dataclass
class TokenCorruption:
    """Word-level corruption of tokenised text (extras input_ids / attention_mask / word_index).

    mask_id: the tokenizer's mask token (its unknown token if it has none); replacements for
    substitution are drawn from [0, vocab_size) minus `special_ids`; pad_id fills freed slots.
    """

    level: float
    mask_id: int
    vocab_size: int
    special_ids: tuple[int, ...] = ()
    pad_id: int = 0
    kinds: tuple[str, ...] = TOKEN_KINDS
    missing: bool = False
    seed: int = 0
    _vocab: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        unknown = set(self.kinds) - set(TOKEN_KINDS)
        if unknown or not self.kinds:
            raise OptionError(f"token corruption kinds must be among {TOKEN_KINDS}, not {self.kinds}")
        self._vocab = np.setdiff1d(np.arange(self.vocab_size), np.asarray(self.special_ids, dtype=np.int64))

    @classmethod
    def for_tokenizer(cls, tokenizer: Any, level: float, **kwargs: Any) -> TokenCorruption:
        mask_id = tokenizer.mask_token_id if tokenizer.mask_token_id is not None else tokenizer.unk_token_id
        return cls(
            level,
            int(mask_id),
            int(tokenizer.vocab_size),
            tuple(int(i) for i in tokenizer.all_special_ids),
            int(tokenizer.pad_token_id or 0),
            **kwargs,
        )

    def apply(self, data: MultimodalDataset) -> MultimodalDataset:
        if "input_ids" not in data.extras:
            raise DataFormatError(
                f"{data.source}: token corruption needs tokenised text (input_ids in extras)"
            )
        ids_in, att_in, words_in = (
            np.asarray(data.extras[k]) for k in ("input_ids", "attention_mask", "word_index")
        )
        if not self.missing and self.level <= 0:
            return data
        rng = np.random.default_rng(self.seed)
        rows = [self._corrupt_row(ids_in[r], att_in[r], words_in[r], rng) for r in range(len(ids_in))]
        width = ids_in.shape[1]
        ids = np.full_like(ids_in, self.pad_id)
        att = np.zeros_like(att_in)
        words = np.full_like(words_in, -1)
        for r, (row_ids, row_att, row_words) in enumerate(rows):
            n = min(len(row_ids), width)
            ids[r, :n], att[r, :n], words[r, :n] = row_ids[:n], row_att[:n], row_words[:n]
        lengths = dict(data.lengths)
        # text length follows the words left (at least 1, as tokenisation sets it)
        lengths["text"] = torch.from_numpy(np.maximum(words.max(1) + 1, 1)).to(data.lengths["text"].dtype)
        extras = {**data.extras, "input_ids": ids, "attention_mask": att, "word_index": words}
        return MultimodalDataset(
            data.features, lengths, data.labels, data.ids, data.raw_text, data.source, extras
        )

    def _corrupt_row(
        self, ids: np.ndarray, att: np.ndarray, words: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ids, words = ids.copy(), words.copy()
        n_words = int(words.max()) + 1
        if n_words <= 0:
            return ids, att, words
        hit = np.ones(n_words, bool) if self.missing else rng.random(n_words) < self.level
        kind = (
            np.full(n_words, "mask")
            if self.missing
            else np.asarray(self.kinds)[rng.integers(len(self.kinds), size=n_words)]
        )
        keep = np.ones(len(ids), bool)
        for w in np.flatnonzero(hit):
            tokens = words == w
            if kind[w] == "mask":
                ids[tokens] = self.mask_id
            elif kind[w] == "substitute":
                ids[tokens] = rng.choice(self._vocab, size=int(tokens.sum()))
            else:
                keep &= ~tokens
        if keep.all():
            return ids, att, words
        dropped = np.zeros(n_words, bool)
        dropped[hit & (kind == "drop")] = True
        # later words move up by the number of dropped words before them
        shift = np.cumsum(dropped) - dropped
        new_words = np.where(words >= 0, words - shift[np.clip(words, 0, None)], -1)
        return ids[keep], att[keep], new_words[keep]


def robustness_curves(
    run: LoadedRun, test: MultimodalDataset, levels: tuple[float, ...] = LEVELS, seed: int = 0
) -> dict[str, Any]:
    """{modality: {"levels", "scores", "auc", "missing"}} with the run's headline metric."""
    prepared = run.prepare(test)
    key = "accuracy" if prepared.is_classification else "acc2_non0"
    device = next(run.model.parameters()).device

    def metric(data: MultimodalDataset) -> float:
        return float(score(predict(run.model, data, 64, device), data, run.class_names)[key])

    out: dict[str, Any] = {"metric": key, "clean": metric(prepared), "modalities": {}}
    for m in run.spec.modalities:
        if m == "text" and run.tokenizer is not None:
            # the model reads tokens, not the text feature slot: corrupt the tokens
            def corrupt(level: float, missing: bool = False) -> MultimodalDataset:
                return TokenCorruption.for_tokenizer(run.tokenizer, level, missing=missing, seed=seed).apply(
                    prepared
                )

            kind = "tokens: words dropped, substituted or masked"
        else:
            def corrupt(level: float, missing: bool = False, m: str = m) -> MultimodalDataset:
                return Corruption(m, level, missing=missing, seed=seed).apply(prepared)

            kind = "features: Gaussian noise and dropped steps"
        scores = [metric(corrupt(lv)) for lv in levels]
        span = levels[-1] - levels[0] or 1.0
        out["modalities"][m] = {
            "levels": list(levels),
            "scores": scores,
            "auc": float(np.trapezoid(scores, levels) / span),
            "missing": metric(corrupt(0.0, missing=True)),
            "corruption": kind,
        }
    return out


def plot_robustness(result: dict[str, Any], path: Path, title: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 3.8))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for m, curve in result["modalities"].items():
        line = ax.plot(
            curve["levels"],
            [100 * s for s in curve["scores"]],
            marker="o",
            label=f"{m} noised (AUC {100 * curve['auc']:.1f})",
        )
        ax.axhline(100 * curve["missing"], ls="--", lw=1, color=line[0].get_color(), label=f"{m} missing")
    ax.set_xlabel("test-time noise level (std and drop probability)")
    ax.set_ylabel(f"{result['metric']} (%)")
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
