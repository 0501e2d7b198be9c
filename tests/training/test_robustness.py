"""Test-time corruption: level 0 is the identity, missing zeroes a modality, padding stays zero."""

from __future__ import annotations

import torch

from emofuse.data.synthetic import SyntheticConfig, make_synthetic
from emofuse.evaluation.robustness import Corruption


def test_corruptions():
    data = make_synthetic(SyntheticConfig(n_train=16, n_valid=4, n_test=4, max_words=8, min_words=3)).train
    same = Corruption("audio", 0.0).apply(data)
    torch.testing.assert_close(same.features["audio"], data.features["audio"])
    gone = Corruption("audio", 0.0, missing=True).apply(data)
    assert torch.all(gone.features["audio"] == 0)
    torch.testing.assert_close(gone.features["text"], data.features["text"])
    noisy = Corruption("vision", 0.5, seed=3).apply(data)
    assert torch.all(noisy.features["vision"][~data.mask("vision")] == 0)
    assert not torch.equal(noisy.features["vision"], data.features["vision"])
    again = Corruption("vision", 0.5, seed=3).apply(data)
    torch.testing.assert_close(noisy.features["vision"], again.features["vision"])  # reproducible
