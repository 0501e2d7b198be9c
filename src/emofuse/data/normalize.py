"""Per-feature standardisation fitted on the training split only.

Real features come on wildly different scales (COVAREP pitch in Hz next to voicing
probabilities); models train far better on standardised inputs. Statistics are fitted on the
train split's real (unpadded) steps, then applied to every split, and saved with the
checkpoint so evaluation on new data uses the training statistics, never its own.

Steps a dataset marks missing (extras '<modality>_missing', N x L bools: e.g. the words of an
extracted clip during which no face was seen) are left out of the statistics and set to zero
after scaling, i.e. to the training mean: the same "missing" that `emofuse robustness` applies.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from emofuse.data.dataset import DataFormatError, DatasetSplits, MultimodalDataset


@dataclass
class FeatureScaler:
    mean: dict[str, torch.Tensor]
    std: dict[str, torch.Tensor]

    @classmethod
    def fit(cls, data: MultimodalDataset, min_std: float = 1e-6) -> FeatureScaler:
        mean, std = {}, {}
        for m, x in data.features.items():
            real = x[present_mask(data, m)]  # (total real, present steps) x D
            mean[m] = real.mean(0)
            # constant features (std 0) are left centred but unscaled rather than blown up
            s = real.std(0, unbiased=False)
            std[m] = torch.where(s > min_std, s, torch.ones_like(s))
        return cls(mean, std)

    def transform(self, data: MultimodalDataset) -> MultimodalDataset:
        feats = {}
        for m, x in data.features.items():
            if m not in self.mean:
                raise DataFormatError(f"{data.source}: no scaling statistics for modality {m!r}")
            if x.shape[-1] != self.mean[m].shape[0]:
                raise DataFormatError(
                    f"{data.source}: {m} has {x.shape[-1]} features but the model was trained on "
                    f"{self.mean[m].shape[0]}"
                )
            mask = present_mask(data, m).unsqueeze(-1).to(x.dtype)
            feats[m] = (x - self.mean[m]) / self.std[m] * mask  # padding stays exactly zero
        return MultimodalDataset(
            features=feats,
            lengths=data.lengths,
            labels=data.labels,
            ids=data.ids,
            raw_text=data.raw_text,
            source=data.source,
            extras=data.extras,
        )

    def transform_splits(self, splits: DatasetSplits) -> DatasetSplits:
        return DatasetSplits(
            self.transform(splits.train),
            self.transform(splits.valid),
            self.transform(splits.test),
            name=splits.name,
            class_names=splits.class_names,
            frontend=splits.frontend,
        )

    def state_dict(self) -> dict[str, dict[str, torch.Tensor]]:
        return {"mean": self.mean, "std": self.std}

    @classmethod
    def from_state_dict(cls, state: dict[str, dict[str, torch.Tensor]]) -> FeatureScaler:
        return cls(state["mean"], state["std"])


def present_mask(data: MultimodalDataset, modality: str) -> torch.Tensor:
    """N x L: real steps that are not marked missing (extras '<modality>_missing')."""
    mask = data.mask(modality)
    missing = data.extras.get(f"{modality}_missing")
    if missing is None:
        return mask
    flags = torch.from_numpy(np.asarray(missing, dtype=bool).reshape(len(mask), -1))
    length = mask.shape[1]
    if flags.shape[1] < length:  # padded further than the flags reach: those steps are present
        flags = torch.nn.functional.pad(flags, (0, length - flags.shape[1]))
    return mask & ~flags[:, :length]
