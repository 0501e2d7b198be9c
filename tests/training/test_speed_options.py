"""The speed options (TrainConfig compile, amp, adam, bucket, eval_batch_size, loader_workers):
each trains a tiny run; those that promise the same results give them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from small_runs import config as small_config

from emofuse.data.synthetic import SyntheticConfig, make_synthetic
from emofuse.data.synthetic_raw import SyntheticRawConfig, make_synthetic_raw
from emofuse.training.checkpoint import CheckpointError, load_checkpoint
from emofuse.training.scoring import predict
from emofuse.training.trainer import Trainer, train_run


def config(**kw):
    """The tiny run with the exact old path (unbucketed batches, torch's default AdamW) as the
    baseline each speed option is compared against; keyword arguments override it."""
    return small_config(**{"bucket": False, "adam": "default", **kw})


UNALIGNED = SyntheticConfig(n_train=200, n_valid=32, n_test=32, max_words=12, min_words=2, aligned=False)


def _weights(run):
    return load_checkpoint(run / "last.pt")["model"]


def _equal(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def unaligned():
    return make_synthetic(UNALIGNED)


@pytest.fixture(scope="module")
def plain(tmp_path_factory, splits):
    run = tmp_path_factory.mktemp("plain") / "run"
    return run, train_run(config(), splits, run, progress=False)


def test_bucketing_gives_every_example_once_in_batches_of_similar_length(unaligned):
    data = unaligned.train
    lengths = data.bucket_lengths()
    assert torch.equal(lengths, data.lengths["text"] + data.lengths["audio"] + data.lengths["vision"])
    gen = torch.Generator().manual_seed(3)
    chunks = data.batch_indices(16, shuffle=True, generator=gen, bucket=True)
    assert sorted(torch.cat(chunks).tolist()) == list(range(len(data)))
    assert sorted(len(c) for c in chunks) == [200 % 16] + [16] * (200 // 16)
    plain = data.batch_indices(16, shuffle=True, generator=torch.Generator().manual_seed(3))

    def spread(cs):  # mean (longest - shortest) in a batch: the padding a batch carries
        return float(np.mean([int(lengths[c].max() - lengths[c].min()) for c in cs]))

    assert spread(chunks) < 0.25 * spread(plain)
    # still shuffled: another epoch's generator gives another order of batches
    other = data.batch_indices(16, shuffle=True, generator=torch.Generator().manual_seed(4), bucket=True)
    assert [c.tolist() for c in other] != [c.tolist() for c in chunks]
    # unshuffled bucketing sorts the whole split (for prediction; Batch.indices restores the order)
    ordered = data.batch_indices(16, bucket=True)
    assert lengths[torch.cat(ordered)].tolist() == sorted(lengths.tolist())
    # the default is unchanged: plain consecutive chunks for data without tokens
    assert [c.tolist() for c in data.batch_indices(16)] == [list(range(s, min(s + 16, len(data))))
                                                           for s in range(0, len(data), 16)]


def test_bucketing_works_with_raw_per_word_inputs(tmp_path):
    raw = make_synthetic_raw(
        SyntheticRawConfig(
            n_train=24, n_valid=8, n_test=8, max_words=4, min_words=1, frames=2, size=8, n_mels=8, mel_steps=4
        ),
        cache=tmp_path,
    )
    data = raw.train
    chunks = data.batch_indices(8, shuffle=True, generator=torch.Generator().manual_seed(0), bucket=True)
    assert sorted(torch.cat(chunks).tolist()) == list(range(len(data)))
    batch = data.make_batch(chunks[0])
    raw_keys = [k for k in ("raw_vision", "raw_audio") if k in batch.extras]
    assert raw_keys and all(batch.extras[k].shape[0] == len(chunks[0]) for k in raw_keys)


def test_bucketed_training_runs(tmp_path, unaligned):
    run = train_run(config(bucket=True, epochs=2), unaligned, tmp_path / "b", progress=False)
    assert np.isfinite(run.metrics["test"]["mae"]) and run.best_epoch >= 1


def test_prediction_in_inference_mode_matches_the_plain_no_grad_loop(plain, splits):
    run_dir, _ = plain
    trainer = Trainer(config(), splits, run_dir, progress=False)
    trainer.model.load_state_dict(load_checkpoint(run_dir / "best.pt")["model"])
    data = trainer.splits.test
    model = trainer.model.eval()
    with torch.no_grad():  # the evaluation loop before inference_mode
        old = torch.cat([model(b).prediction for b in data.batches(32)]).numpy()
    # predict() batches clips of similar length and puts them back in dataset order: the same
    # numbers up to float rounding (masked models), in the same order
    np.testing.assert_allclose(predict(model, data, 32), old, rtol=1e-5, atol=1e-6)
    # a larger evaluation batch pads differently; masked models give the same numbers
    np.testing.assert_allclose(predict(model, data, 1000), old, rtol=1e-5, atol=1e-6)


def test_larger_eval_batch_keeps_the_run(tmp_path, splits, plain):
    _, base = plain
    big = train_run(config(eval_batch_size=500), splits, tmp_path / "e", progress=False)
    assert big.best_epoch == base.best_epoch
    assert big.metrics["test"]["mae"] == pytest.approx(base.metrics["test"]["mae"], abs=1e-5)


def test_dataloader_workers_feed_the_same_batches(tmp_path, splits, plain):
    run_dir, base = plain
    fed = train_run(config(loader_workers=1), splits, tmp_path / "w", progress=False)
    assert fed.metrics == base.metrics and _equal(_weights(tmp_path / "w"), _weights(run_dir))


@pytest.mark.parametrize("adam", ["foreach", "fused"])
def test_adam_implementations_train_the_same_run(tmp_path, splits, plain, adam):
    _, base = plain
    run = train_run(config(adam=adam), splits, tmp_path / adam, progress=False)
    assert run.metrics["test"]["mae"] == pytest.approx(base.metrics["test"]["mae"], abs=1e-4)


def test_bf16_on_cpu_warns_and_trains_in_float32(tmp_path, splits, plain):
    run_dir, base = plain
    with pytest.warns(UserWarning, match="CUDA only.*float32"):
        run = train_run(config(amp="bf16"), splits, tmp_path / "amp", progress=False)
    assert run.metrics == base.metrics


@pytest.mark.skipif(not torch.cuda.is_available(), reason="bf16 autocast applies on CUDA only")
def test_bf16_on_cuda_trains_close_to_float32(tmp_path, splits):
    fp32 = train_run(config(device="cuda"), splits, tmp_path / "fp32", progress=False)
    bf16 = train_run(config(device="cuda", amp="bf16"), splits, tmp_path / "bf16", progress=False)
    assert bf16.metrics["test"]["mae"] == pytest.approx(fp32.metrics["test"]["mae"], abs=0.05)


def test_compile_trains_the_same_run(tmp_path, splits, plain):
    run_dir, base = plain
    # the eager backend traces with dynamo but skips code generation: fast enough for a test
    run = train_run(config(compile="eager"), splits, tmp_path / "c", progress=False)
    assert run.metrics["test"]["mae"] == pytest.approx(base.metrics["test"]["mae"], abs=1e-5)
    assert set(_weights(tmp_path / "c")) == set(_weights(run_dir))  # no "_orig_mod." in the checkpoint


def test_compile_that_fails_falls_back_to_eager_with_a_warning(tmp_path, splits, plain, monkeypatch):
    run_dir, base = plain

    class Broken(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self._orig_mod = model

        def forward(self, batch):
            raise RuntimeError("backend failed to compile")

    monkeypatch.setattr(torch, "compile", lambda model, backend=None: Broken(model))
    with pytest.warns(UserWarning, match="--compile inductor failed.*eager"):
        run = train_run(config(compile="inductor"), splits, tmp_path / "f", progress=False)
    assert run.metrics == base.metrics and _equal(_weights(tmp_path / "f"), _weights(run_dir))


def test_speed_options_may_change_on_resume(tmp_path, splits, plain):
    run_dir, base = plain
    train_run(config(epochs=2), splits, tmp_path / "r", progress=False)
    resumed = train_run(config(loader_workers=1, eval_batch_size=100, adam="default"), splits, tmp_path / "r",
                        resume=True, progress=False)
    assert resumed.epochs_run == 3
    assert resumed.metrics["test"]["mae"] == pytest.approx(base.metrics["test"]["mae"], abs=1e-5)
    # bucketing changes the batches (and so the weights): not a setting to change mid-run
    with pytest.raises(CheckpointError, match="different settings.*bucket"):
        train_run(config(epochs=4, bucket=True), splits, tmp_path / "r", resume=True, progress=False)
