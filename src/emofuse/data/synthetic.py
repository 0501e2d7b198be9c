"""A SYNTHETIC multimodal sentiment dataset with a known, planted structure.

It is the embedded default for `emofuse demo` and for the tests: no download, seconds to make,
and, unlike real data, we know exactly how much of the label each kind of model can reach.
It is not real data and says nothing about real emotions.

Each clip is a sequence of "words" (aligned: audio and vision have one step per word;
unaligned: audio has `audio_rate` frames per word and vision `vision_rate`). The label is

    y = clip(0.6 T + 0.5 A + 0.5 V + 0.8 I + noise, -3, 3),   noise ~ N(0, 0.25^2)

- T (text only): polarity words, w_t in {-1, 0, +1} on text dimension 0; T = sum_t w_t / 2.5.
- A (audio only): a speaker tone g ~ N(0, 1) on audio dimension 0 at every step; A = g.
- V (vision only): a brief expression of strength v ~ N(0, 1) on vision dimension 0 at about a
  third of the steps; V = v.
- I (interaction, time-aligned text x audio): about a third of the words are cues, text
  dimension 1 holds c_t in {-1, +1} there (0 elsewhere); audio dimension 1 holds a marker
  m_t in {0, 1} at every step (a fair coin, so the audio alone says nothing); a cue's sign
  flips where the audio at the SAME step is marked: I = sum_t c_t (1 - 2 m_t) / 2. Given text
  alone or audio alone, E[I] = 0; only a model that pairs a word with the audio at the same
  moment can recover it.

The per-clip components are kept in `extras` (T, A, V, I, and the reference predictions
`oracle_full` and `oracle_additive`), so reports can show the ceiling that each family of
models can reach: `oracle_full` = the noiseless label (the best any model can do);
`oracle_additive` = 0.6 T + 0.5 A + 0.5 V (all unimodal evidence, no interaction: the ceiling
of unimodal and late-fusion models); `oracle_text` = 0.6 T.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from emofuse.data.dataset import DataFormatError, DatasetSplits, MultimodalDataset
from emofuse.data.sources import SourceRequest, data_config, register_source
from emofuse.errors import OptionError

WEIGHTS = {"T": 0.6, "A": 0.5, "V": 0.5, "I": 0.8}
# the generator's priors, shared with the exact Bayes ceiling in emofuse.reports.demo
POLARITY = ([-1.0, 0.0, 1.0], [0.2, 0.6, 0.2])  # values and probabilities of a word's polarity
CUE = ([-1.0, 0.0, 1.0], [1 / 6, 2 / 3, 1 / 6])  # of a word's interaction cue
SHOWN = 0.35  # probability that a step shows the vision expression
MARKER = 0.5  # probability that an audio step carries the marker
NOISE_STD = 0.25


@dataclass
class SyntheticConfig:
    n_train: int = 2000
    n_valid: int = 400
    n_test: int = 400
    max_words: int = 20
    min_words: int = 10
    text_dim: int = 16
    audio_dim: int = 8
    vision_dim: int = 12
    aligned: bool = True
    audio_rate: int = 4  # frames per word when unaligned
    vision_rate: int = 2
    feature_noise: float = 0.3
    seed: int = 0
    classes: int = 0  # 0: regression labels; 3: negative/neutral/positive classes


def make_synthetic(config: SyntheticConfig | None = None) -> DatasetSplits:
    """Build train/valid/test splits; the same seed always gives the same data."""
    cfg = config or SyntheticConfig()
    rng = np.random.default_rng(cfg.seed)
    splits = {
        name: _make_split(rng, n, cfg, name)
        for name, n in (("train", cfg.n_train), ("valid", cfg.n_valid), ("test", cfg.n_test))
    }
    class_names = ["negative", "neutral", "positive"] if cfg.classes == 3 else []
    return DatasetSplits(
        splits["train"], splits["valid"], splits["test"], name="synthetic", class_names=class_names
    )


def _make_split(rng: np.random.Generator, n: int, cfg: SyntheticConfig, split: str) -> MultimodalDataset:
    length_words = rng.integers(cfg.min_words, cfg.max_words + 1, size=n)
    steps = np.arange(cfg.max_words)
    real = steps[None, :] < length_words[:, None]  # n x L

    # text-only polarity words
    polarity = rng.choice(POLARITY[0], size=(n, cfg.max_words), p=POLARITY[1]) * real
    t_part = polarity.sum(1) / 2.5
    # audio-only tone
    tone = rng.normal(size=n)
    # vision-only brief expression
    v_strength = rng.normal(size=n)
    shown = (rng.random((n, cfg.max_words)) < SHOWN) & real
    # the interaction: cue words (about a third of the words), sign flipped by the marker
    # the audio carries at the same step
    cues = rng.choice(CUE[0], size=(n, cfg.max_words), p=CUE[1]) * real
    marker = (rng.random((n, cfg.max_words)) < MARKER).astype(np.float64) * real
    interaction = (cues * (1.0 - 2.0 * marker)).sum(1) / 2.0

    additive = WEIGHTS["T"] * t_part + WEIGHTS["A"] * tone + WEIGHTS["V"] * v_strength
    noiseless = np.clip(additive + WEIGHTS["I"] * interaction, -3, 3)
    label = np.clip(additive + WEIGHTS["I"] * interaction + rng.normal(0, NOISE_STD, n), -3, 3)

    def noise(dim: int) -> np.ndarray:
        return rng.normal(0, cfg.feature_noise, size=(n, cfg.max_words, dim))

    text = noise(cfg.text_dim)
    text[..., 0] += polarity
    text[..., 1] += cues
    audio = noise(cfg.audio_dim)
    audio[..., 0] += tone[:, None]
    audio[..., 1] += marker
    vision = noise(cfg.vision_dim)
    vision[..., 0] += v_strength[:, None] * shown

    features = {"text": text, "audio": audio, "vision": vision}
    lengths = {m: length_words.copy() for m in features}
    if not cfg.aligned:
        # each word spans `rate` frames of the faster stream; frame noise is drawn per frame
        for m, rate in (("audio", cfg.audio_rate), ("vision", cfg.vision_rate)):
            frames = np.repeat(features[m], rate, axis=1)
            frames += rng.normal(0, cfg.feature_noise, size=frames.shape)
            features[m] = frames
            lengths[m] = length_words * rate
    tensors = {}
    for m, x in features.items():
        mask = np.arange(x.shape[1])[None, :] < lengths[m][:, None]
        tensors[m] = torch.from_numpy((x * mask[..., None]).astype(np.float32))

    if cfg.classes == 3:
        labels = torch.from_numpy(np.digitize(label, [-0.5, 0.5]).astype(np.int64))
    elif cfg.classes == 0:
        labels = torch.from_numpy(label.astype(np.float32))
    else:
        raise OptionError("classes must be 0 (regression) or 3")
    ids = [f"synthetic_{split}$_${i}" for i in range(n)]
    texts = [_fake_text(polarity[i], length_words[i]) for i in range(n)]
    extras = {
        "T": t_part,
        "A": tone,
        "V": v_strength,
        "I": interaction,
        "oracle_full": noiseless,
        "oracle_additive": np.clip(additive, -3, 3),
        "oracle_text": WEIGHTS["T"] * t_part,
    }
    return MultimodalDataset(
        features=tensors,
        lengths={m: torch.from_numpy(v.astype(np.int64)) for m, v in lengths.items()},
        labels=labels,
        ids=ids,
        raw_text=texts,
        source=f"synthetic:{split}",
        extras={k: v.astype(np.float32) for k, v in extras.items()},
    )


def _fake_text(polarity: np.ndarray, n_words: int) -> str:
    # A readable stand-in transcript, so tools that show raw text have something to show.
    vocab = {-1.0: "bad", 0.0: "word", 1.0: "good"}
    return " ".join(vocab[float(p)] for p in polarity[:n_words])


@register_source("synthetic", options=True)
@register_source("synthetic-unaligned", options=True)
@register_source("synthetic-classes", options=True)
def _synthetic_source(request: SourceRequest) -> DatasetSplits:
    """`--data synthetic[-unaligned|-classes]`: the source's name fixes the layout and the task; the
    data options size the set (e.g. n_train=8000)."""
    fixed = {"aligned": request.source != "synthetic-unaligned",
             "classes": 3 if request.source == "synthetic-classes" else 0}
    clash = sorted(set(request.options) & set(fixed))
    if clash:
        raise DataFormatError(
            f"{request.source}: {', '.join(clash)} is set by the source's name, not by a data option"
        )
    return make_synthetic(data_config(SyntheticConfig, {**request.options, **fixed}, request.source))
