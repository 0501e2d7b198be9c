"""The small synthetic runs the trainer and resume tests share (imported by both)."""

from __future__ import annotations

from emofuse.data.synthetic import SyntheticConfig
from emofuse.training.config import TrainConfig

SMALL = SyntheticConfig(n_train=96, n_valid=32, n_test=32, max_words=8, min_words=4)


def config(**kw) -> TrainConfig:
    """A tiny EF-LSTM run on T+A; keyword arguments override any field."""
    base = dict(
        model="ef_lstm", modalities="T+A", epochs=3, batch_size=16, patience=0, model_options={"hidden": 8}
    )
    return TrainConfig(**{**base, **kw})


def train_interrupted_then_resumed(cfg: TrainConfig, splits, run_dir, after_epoch: int):
    """Train `cfg` into `run_dir`, stop it after `after_epoch` (as a kill would), then --resume it."""
    import pytest

    from emofuse.training.trainer import train_run

    class Stop(Exception):
        pass

    def stop(epoch, row):
        if epoch == after_epoch:
            raise Stop

    with pytest.raises(Stop):
        train_run(cfg, splits, run_dir, progress=False, callbacks=[stop])
    return train_run(cfg, splits, run_dir, resume=True, progress=False)
