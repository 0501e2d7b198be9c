"""The one in-memory dataset type every format loads into and every model reads from.

A `MultimodalDataset` holds one split: per-modality padded tensors (N x L_m x D_m), the true
length of every sequence, labels, ids and raw text. `DatasetSplits` groups train/valid/test.
Padding masks are derived from lengths (never stored twice) so they cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from emofuse.errors import OptionError, UserError

# Canonical modality names follow MMSA's pickle keys so users recognise them.
MODALITIES: tuple[str, ...] = ("text", "audio", "vision")
SHORT_NAMES = {"T": "text", "A": "audio", "V": "vision"}
SPLITS: tuple[str, ...] = ("train", "valid", "test")
# per-sample extras that travel with every batch (a text encoder's tokens), trimmed per batch
TOKEN_EXTRAS: tuple[str, ...] = ("input_ids", "attention_mask", "word_index")
# raw per-word inputs (emofuse.data.raw.LazyRawArray) and the modality slot each one fills
RAW_EXTRAS: dict[str, str] = {"raw_vision": "vision", "raw_audio": "audio"}
# batches per "bucket" when batching by length: long enough to mix, short enough to sort
BUCKET_BATCHES = 50


class DataFormatError(UserError):
    """Raised for any input file whose content does not match the expected format.

    The message always names the file (or source) and the problem, so a user can fix the data
    without reading a traceback.
    """


def parse_modalities(spec: str | Sequence[str]) -> tuple[str, ...]:
    """Turn 'T+A+V', 'TAV', 'text,audio' or a list into canonical names in canonical order."""
    if isinstance(spec, str):
        cleaned = spec.replace("+", ",").replace(" ", "")
        parts = cleaned.split(",") if "," in cleaned else list(cleaned) if cleaned.isupper() else [cleaned]
    else:
        parts = list(spec)
    names = set()
    for part in parts:
        if not part:
            continue
        name = SHORT_NAMES.get(part.upper(), part.lower()) if len(part) == 1 else part.lower()
        if name not in MODALITIES:
            raise OptionError(f"unknown modality {part!r}; use T, A, V or {', '.join(MODALITIES)}")
        names.add(name)
    if not names:
        raise OptionError(f"no modality in {spec!r}")
    return tuple(m for m in MODALITIES if m in names)


def modality_code(modalities: Sequence[str]) -> str:
    """('text', 'audio') -> 'T+A' (the paper's notation)."""
    inverse = {v: k for k, v in SHORT_NAMES.items()}
    return "+".join(inverse[m] for m in MODALITIES if m in modalities)


def lengths_to_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """Boolean mask (N x max_len), True on real steps."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


@dataclass
class MultimodalDataset:
    """One split of a multimodal dataset.

    features[m]: float32 tensor N x L_m x D_m, zero on padded steps.
    lengths[m]: int64 tensor N, the real number of steps (>= 1) of each sequence.
    labels: float32 N (regression) or int64 N (classification).
    """

    features: dict[str, torch.Tensor]
    lengths: dict[str, torch.Tensor]
    labels: torch.Tensor
    ids: list[str]
    raw_text: list[str]
    source: str = "<memory>"
    # Free-form per-sample extras a format carries (e.g. MMSA's annotations, the synthetic
    # generator's planted components); kept so writing back loses nothing. Arrays indexed by
    # sample, except under RAW_EXTRAS' keys: lazily read raw inputs (`emofuse.data.raw.LazyRawArray`,
    # `emofuse.inference.predict.InMemoryRaw`) that index like arrays and `load` a batch.
    extras: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    # ----------------------------------------------------------------- checks
    def validate(self) -> None:
        n = len(self.labels)
        where = self.source
        if n == 0:
            raise DataFormatError(f"{where}: the split holds no samples")
        if len(self.ids) != n or len(self.raw_text) != n:
            raise DataFormatError(
                f"{where}: {n} labels but {len(self.ids)} ids and {len(self.raw_text)} texts"
            )
        if self.labels.dtype.is_floating_point and not torch.isfinite(self.labels).all():
            bad = int((~torch.isfinite(self.labels)).sum())
            raise DataFormatError(f"{where}: {bad} labels are NaN or infinite")
        for m, x in self.features.items():
            if m not in MODALITIES:
                raise DataFormatError(f"{where}: unknown modality {m!r}")
            if x.ndim != 3 or x.shape[0] != n:
                raise DataFormatError(
                    f"{where}: {m} features must be N x L x D with N={n}, found {tuple(x.shape)}"
                )
            if not torch.isfinite(x).all():
                bad = int((~torch.isfinite(x)).sum())
                raise DataFormatError(
                    f"{where}: {m} features hold {bad} NaN/inf values; clean them on load"
                )
            lengths = self.lengths.get(m)
            if lengths is None or lengths.shape != (n,):
                raise DataFormatError(f"{where}: {m} needs one length per sample")
            if int(lengths.min()) < 1 or int(lengths.max()) > x.shape[1]:
                raise DataFormatError(
                    f"{where}: {m} lengths must lie in 1..{x.shape[1]}, found "
                    f"{int(lengths.min())}..{int(lengths.max())}"
                )

    # ----------------------------------------------------------------- views
    def __len__(self) -> int:
        return len(self.labels)

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(m for m in MODALITIES if m in self.features)

    @property
    def is_classification(self) -> bool:
        return not self.labels.dtype.is_floating_point

    def dims(self) -> dict[str, int]:
        return {m: int(x.shape[2]) for m, x in self.features.items()}

    def max_lengths(self) -> dict[str, int]:
        return {m: int(x.shape[1]) for m, x in self.features.items()}

    def mask(self, modality: str) -> torch.Tensor:
        return lengths_to_mask(self.lengths[modality], self.features[modality].shape[1])

    def subset(self, indices: Sequence[int] | torch.Tensor) -> MultimodalDataset:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return MultimodalDataset(
            features={m: x[idx] for m, x in self.features.items()},
            lengths={m: v[idx] for m, v in self.lengths.items()},
            labels=self.labels[idx],
            ids=[self.ids[i] for i in idx.tolist()],
            raw_text=[self.raw_text[i] for i in idx.tolist()],
            source=self.source,
            extras={k: v[idx.numpy()] for k, v in self.extras.items()},
        )

    def select_modalities(self, modalities: Sequence[str]) -> MultimodalDataset:
        missing = [m for m in modalities if m not in self.features]
        if missing:
            raise DataFormatError(
                f"{self.source}: modalities {missing} requested but the data has {list(self.modalities)}"
            )
        return MultimodalDataset(
            features={m: self.features[m] for m in modalities},
            lengths={m: self.lengths[m] for m in modalities},
            labels=self.labels,
            ids=self.ids,
            raw_text=self.raw_text,
            source=self.source,
            extras=self.extras,
        )

    def batches(
        self,
        batch_size: int,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        bucket: bool | None = None,
    ) -> Iterator[Batch]:
        """Yield batches trimmed to the longest real sequence they contain.

        Trimming per batch (not padding to the global maximum) is what keeps unaligned data
        (500 audio frames) cheap when most clips are short. `bucket`: see `batch_indices`.
        """
        for idx in self.batch_indices(batch_size, shuffle, generator, bucket):
            yield self.make_batch(idx)

    def batch_indices(
        self,
        batch_size: int,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        bucket: bool | None = None,
    ) -> list[torch.Tensor]:
        """The length-bucketed batch sampler: one pass over the split as batches of indices.

        Every example appears exactly once. bucket=True groups examples of similar true length
        (`bucket_lengths`) so a batch pads little: shuffled, it sorts within buckets of
        `BUCKET_BATCHES` shuffled batches and then shuffles the batches; unshuffled, it sorts the
        whole split (the caller restores the order through `Batch.indices`). bucket=None keeps
        the default: bucketed only for a text encoder's tokens, and only when shuffling.
        """
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        if bucket is None:
            bucket = shuffle and "attention_mask" in self.extras
        if bucket and not shuffle:
            order = torch.argsort(self.bucket_lengths(), stable=True)
        elif bucket:
            return self._length_buckets(order, batch_size, generator)
        return [order[s : s + batch_size] for s in range(0, n, batch_size)]

    def bucket_lengths(self) -> torch.Tensor:
        """The length a batch is padded to: a text encoder's tokens, else the steps of all modalities."""
        if "attention_mask" in self.extras:
            return torch.from_numpy(np.asarray(self.extras["attention_mask"]).sum(1))
        # on the CPU, where batch indices live, also for a split kept on the GPU
        return torch.stack([self.lengths[m] for m in self.modalities]).sum(0).cpu()

    def _length_buckets(
        self, order: torch.Tensor, batch_size: int, generator: torch.Generator | None
    ) -> list[torch.Tensor]:
        """Shuffled batches of similar length: sort within buckets of shuffled clips, then
        shuffle the batches. A transformer then pads (and attends over) little, and an LSTM
        runs few padded steps."""
        lengths = self.bucket_lengths()
        span = batch_size * BUCKET_BATCHES
        chunks = []
        for s in range(0, len(order), span):
            bucket = order[s : s + span]
            bucket = bucket[torch.argsort(lengths[bucket], stable=True)]
            chunks += [bucket[i : i + batch_size] for i in range(0, len(bucket), batch_size)]
        perm = torch.randperm(len(chunks), generator=generator)
        return [chunks[i] for i in perm.tolist()]

    def make_batch(self, idx: torch.Tensor) -> Batch:
        feats, masks = {}, {}
        for m, x in self.features.items():
            lengths = self.lengths[m][idx]
            # Models whose weights depend on the padded length (the paper's fixed-length
            # attention) pad back up to `max_lengths()` themselves; everyone else gains.
            longest = int(lengths.max())
            feats[m] = x[idx, :longest]
            masks[m] = lengths_to_mask(lengths, longest)
        extras = {}
        if "attention_mask" in self.extras:
            np_idx = idx.numpy()
            mask = np.asarray(self.extras["attention_mask"])[np_idx]
            longest = max(int(mask.sum(1).max()), 1)
            for k in TOKEN_EXTRAS:
                extras[k] = torch.from_numpy(np.asarray(self.extras[k])[np_idx, :longest])
        for k, m in RAW_EXTRAS.items():
            # raw per-word inputs (emofuse.data.raw) are read from disk here, batch by batch
            if k in self.extras and m in self.features:
                words = int(self.lengths[m][idx].max())
                extras[k] = torch.from_numpy(self.extras[k].load(idx.numpy(), words))
        return Batch(features=feats, masks=masks, labels=self.labels[idx], indices=idx, extras=extras)


@dataclass
class Batch:
    """What every model's forward receives: dict of modality tensors and their padding masks."""

    features: dict[str, torch.Tensor]
    masks: dict[str, torch.Tensor]
    labels: torch.Tensor
    indices: torch.Tensor
    extras: dict[str, torch.Tensor] = field(default_factory=dict)  # token ids for a text encoder

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            features={m: x.to(device, non_blocking=True) for m, x in self.features.items()},
            masks={m: x.to(device, non_blocking=True) for m, x in self.masks.items()},
            labels=self.labels.to(device, non_blocking=True),
            indices=self.indices,
            extras={k: x.to(device, non_blocking=True) for k, x in self.extras.items()},
        )

    def pin_memory(self) -> Batch:
        """Page-locked copies, which DataLoader(pin_memory=True) asks a custom batch type for."""
        return Batch(
            features={m: x.pin_memory() for m, x in self.features.items()},
            masks={m: x.pin_memory() for m, x in self.masks.items()},
            labels=self.labels.pin_memory(),
            indices=self.indices,
            extras={k: x.pin_memory() for k, x in self.extras.items()},
        )

    def __len__(self) -> int:
        return len(self.labels)

    def lengths(self, modality: str) -> torch.Tensor:
        return self.masks[modality].sum(dim=1)


@dataclass
class DatasetSplits:
    """train / valid / test splits of one dataset, plus how its labels are to be read."""

    train: MultimodalDataset
    valid: MultimodalDataset
    test: MultimodalDataset
    name: str = "dataset"
    # For classification: the class names in label-id order; empty for regression.
    class_names: list[str] = field(default_factory=list)
    # How the inputs were made from media (`emofuse.data.frontend`): the extraction config, the
    # log-mel map, raw sizes, RAVDESS's windows. A run folder records it, so `predict` can make
    # the same inputs from a new clip without the training data. Empty for feature-only sources.
    frontend: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, split: str) -> MultimodalDataset:
        if split not in SPLITS:  # a bug, not the user's: --split is limited by argparse's choices
            raise KeyError(f"unknown split {split!r}; expected one of {SPLITS}")
        return getattr(self, split)

    def items(self) -> Iterator[tuple[str, MultimodalDataset]]:
        for s in SPLITS:
            yield s, getattr(self, s)

    @property
    def task(self) -> str:
        return "classification" if self.train.is_classification else "regression"

    @property
    def num_classes(self) -> int:
        if not self.train.is_classification:
            return 1
        return len(self.class_names) or int(
            max(int(d.labels.max()) for _, d in self.items()) + 1
        )

    def select_modalities(self, modalities: Sequence[str]) -> DatasetSplits:
        return DatasetSplits(
            self.train.select_modalities(modalities),
            self.valid.select_modalities(modalities),
            self.test.select_modalities(modalities),
            name=self.name,
            class_names=self.class_names,
            frontend=self.frontend,
        )

    def describe(self) -> str:
        d = self.train
        parts = [f"{m}: L={d.features[m].shape[1]} D={d.features[m].shape[2]}" for m in d.modalities]
        sizes = "/".join(str(len(getattr(self, s))) for s in SPLITS)
        return f"{self.name} ({self.task}, {sizes} train/valid/test; {'; '.join(parts)})"
