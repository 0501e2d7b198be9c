"""The small synthetic runs the trainer and resume tests share (imported by both)."""

from __future__ import annotations

from emofuse.data.synthetic import SyntheticConfig
from emofuse.training.config import TrainConfig

SMALL = SyntheticConfig(n_train=96, n_valid=32, n_test=32, max_words=8, min_words=4)


def config(**kw) -> TrainConfig:
    """A tiny EF-LSTM run on T+A; keyword arguments override any field."""
    base = dict(model="ef_lstm", modalities="T+A", epochs=3, batch_size=16, patience=0, model_options={"hidden": 8})
    return TrainConfig(**{**base, **kw})
