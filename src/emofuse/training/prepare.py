"""The data a run trains on: prepared once before training, then fed to the device.

Before training: a run that never scores its test split gets the validation split in its place
(so nothing reads test), an in-model text encoder's tokens are added, the run's modalities are
selected and standardised with a FeatureScaler fitted on train (saved in every checkpoint), and
raw inputs are checked against the raw encoders that will read them. While training: the splits
sit on the GPU when they fit, and batches are made there or by DataLoader workers.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from emofuse.data.dataset import RAW_EXTRAS, Batch, DatasetSplits, MultimodalDataset
from emofuse.data.normalize import FeatureScaler
from emofuse.features.tokens import tokenize_splits
from emofuse.models.factory import model_spec_for, raw_encoder_config, text_encoder_config
from emofuse.models.raw_encoders import check_raw_inputs
from emofuse.models.text_encoder import load_tokenizer_and_encoder
from emofuse.training.config import TrainConfig

# what keeping a dataset on the GPU may take of the free memory: the rest is the model's
DEVICE_DATA_SHARE = 0.25


@dataclass
class PreparedData:
    splits: DatasetSplits  # the run's modalities, standardised (and tokenised for a text encoder)
    scaler: FeatureScaler  # fitted on train; checkpoints carry it
    encoder: nn.Module | None  # the pretrained text encoder the tokens are for (config.text_encoder)


def prepare_data(config: TrainConfig, splits: DatasetSplits, modalities: tuple[str, ...],
                 score_test: bool = True) -> PreparedData:
    """`splits` as the run trains on them (see the module docstring)."""
    if not score_test:
        # the shared split-wide steps (tokenising, scaling) then run on train and valid only
        splits = dataclasses.replace(splits, test=splits.valid)
    encoder = None
    if config.text_encoder:
        tokenizer, encoder = load_tokenizer_and_encoder(config.text_encoder)
        splits = tokenize_splits(splits, tokenizer, text_encoder_config(config))
    selected = splits.select_modalities(modalities)
    scaler = FeatureScaler.fit(selected.train)
    prepared = scaler.transform_splits(selected)
    check_raw_inputs(raw_encoder_config(config, model_spec_for(prepared, modalities)), prepared.train)
    return PreparedData(prepared, scaler, encoder)


def describe_splits(splits: DatasetSplits, score_test: bool = True) -> str:
    """DatasetSplits.describe(), without the test split for a run that never reads it."""
    if score_test:
        return splits.describe()
    d = splits.train
    parts = [f"{m}: L={d.features[m].shape[1]} D={d.features[m].shape[2]}" for m in d.modalities]
    return (
        f"{splits.name} ({splits.task}, {len(splits.train)}/{len(splits.valid)} train/valid, test not read; "
        f"{'; '.join(parts)})"
    )


# ---------------------------------------------------------------------- feeding the device
def placed_on_device(data: MultimodalDataset, device: torch.device, config: TrainConfig) -> MultimodalDataset:
    """The split on the GPU when it fits (indexing it there feeds batches without copies)."""
    if device.type != "cuda" or config.data_on_device == "never":
        return data
    if any(k in data.extras for k in RAW_EXTRAS):
        return data  # raw inputs are read from disk batch by batch
    size = sum(
        t.numel() * t.element_size() for t in [*data.features.values(), *data.lengths.values(), data.labels]
    )
    free, _ = torch.cuda.mem_get_info(device)
    if size > DEVICE_DATA_SHARE * free:
        return data
    return MultimodalDataset(
        features={m: x.to(device) for m, x in data.features.items()},
        lengths={m: v.to(device) for m, v in data.lengths.items()},
        labels=data.labels.to(device), ids=data.ids, raw_text=data.raw_text, source=data.source,
        extras=data.extras,
    )


def loader_workers(data: MultimodalDataset, device: torch.device, config: TrainConfig) -> int:
    if config.loader_workers >= 0:
        return config.loader_workers
    on_host = data.labels.device.type == "cpu"
    return min(4, os.cpu_count() or 1) if device.type == "cuda" and on_host else 0


def device_batches(data: MultimodalDataset, chunks: list[torch.Tensor], device: torch.device,
                   workers: int) -> Iterator[Batch]:
    """Batches of `chunks` on the device: made here, or by DataLoader workers into pinned memory."""
    if workers == 0:
        for idx in chunks:
            yield data.make_batch(idx).to(device)
        return
    loader = torch.utils.data.DataLoader(
        _Indices(len(data)), batch_sampler=[idx.tolist() for idx in chunks], collate_fn=_MakeBatch(data),
        num_workers=workers, pin_memory=device.type == "cuda",
        # its own generator: the workers' base seed would otherwise be drawn from the global
        # RNG and shift every dropout mask after it
        generator=torch.Generator().manual_seed(0),
    )
    for batch in loader:
        yield batch.to(device)


class _Indices(torch.utils.data.Dataset):
    """The DataLoader's dataset: positions only; `_MakeBatch` turns a batch of them into a Batch."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


class _MakeBatch:
    def __init__(self, data: MultimodalDataset) -> None:
        self.data = data

    def __call__(self, indices: list[int]) -> Batch:
        return self.data.make_batch(torch.tensor(indices, dtype=torch.long))
