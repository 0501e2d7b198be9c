"""Two training processes under torchrun (gloo, CPU) against one process, and their --resume.

Two processes split every global batch of --batch-size between them and weight their losses by
their share, so they compute what one process computes up to the order of float sums and the
dropout masks (each process draws its own). Measured on this tiny run (4 epochs, seeds 1-3):
test MAE 0.8960/0.9218/0.9572 with two processes vs 0.8957/0.9219/0.9599 with one, at most
0.003 apart; the test allows 0.02. (Correlation moves more, up to 0.07: on 32 test clips a
near-constant prediction makes it jumpy.)
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from small_runs import SMALL, config

from emofuse.data.mmsa import save_mmsa_pickle
from emofuse.data.synthetic import make_synthetic
from emofuse.training import distributed
from emofuse.training.checkpoint import load_checkpoint
from emofuse.training.trainer import train_run

MAE_TOLERANCE = 0.02
TRAIN = ["train", "--model", "ef_lstm", "--modalities", "T+A", "--batch-size", "16", "--patience", "0",
         "-o", "hidden=8", "--threads", "1", "--quiet"]

# one torchrun launch runs three `emofuse train` commands in one process group (starting the
# processes costs more than the training): the uninterrupted run, a run stopped after 2 epochs,
# and its --resume to 4
SCRIPT = """
import sys
from emofuse.cli.main import main
from emofuse.training.distributed import process_group
data, out = sys.argv[1], sys.argv[2]
args = {args!r} + ["--data", data]
with process_group("cpu") as ctx:
    assert ctx.world == 2
    assert main(args + ["--epochs", "4", "--out", out + "/full"]) == 0
    assert main(args + ["--epochs", "2", "--out", out + "/part"]) == 0
    assert main(args + ["--epochs", "4", "--out", out + "/part", "--resume"]) == 0
"""


def _torchrun() -> list[str]:
    exe = Path(sys.executable).with_name("torchrun")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "torch.distributed.run"]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="this torch build has no torch.distributed")
def test_two_processes_match_one_and_resume_exactly(tmp_path):
    splits = make_synthetic(SMALL)
    data = tmp_path / "small.pkl"
    save_mmsa_pickle(splits, data)
    single = train_run(config(epochs=4, data=str(data)), splits, tmp_path / "single", progress=False)

    script = tmp_path / "ddp_runs.py"
    script.write_text(SCRIPT.format(args=TRAIN))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        *_torchrun(),
        "--standalone",
        "--nproc-per-node",
        "2",
        str(script),
        str(data),
        str(tmp_path / "ddp"),
    ]
    # a session of its own: a hung run is ended with all its worker processes
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"torchrun did not finish in 240 s:\n{stdout[-2000:]}\n{stderr[-3000:]}")
    assert proc.returncode == 0, stdout[-3000:] + stderr[-3000:]
    full, part = tmp_path / "ddp" / "full" / "seed_1", tmp_path / "ddp" / "part" / "seed_1"

    metrics = json.loads((full / "metrics.json").read_text())
    assert metrics["test"]["mae"] == pytest.approx(single.metrics["test"]["mae"], abs=MAE_TOLERANCE)
    assert metrics["valid"]["mae"] == pytest.approx(single.metrics["valid"]["mae"], abs=MAE_TOLERANCE)
    # rank 0 alone wrote the run folder: one log row per epoch, one summary table printed
    assert len((full / "log.csv").read_text().splitlines()) == 1 + 4
    assert stdout.count("| ef_lstm T+A |") == 3
    ckpt = load_checkpoint(full / "last.pt")
    assert len(ckpt["process_rngs"]) == 2 and not any(k.startswith("module.") for k in ckpt["model"])

    # the resumed run ends where the uninterrupted one did, bit for bit
    resumed = load_checkpoint(part / "last.pt")
    for k, v in ckpt["model"].items():
        torch.testing.assert_close(resumed["model"][k], v, rtol=0, atol=0)
    assert json.loads((part / "metrics.json").read_text()) == metrics
    def losses(run):  # epoch, train, valid and best valid loss of every row (not the seconds)
        return [line.split(",")[:4] for line in (run / "log.csv").read_text().splitlines()[1:]]

    assert losses(part) == losses(full)

    # a DDP run folder is a normal run folder: a single process reopens it
    shutil.copytree(full, tmp_path / "copy")
    again = train_run(
        config(epochs=4, data=str(data)), splits, tmp_path / "copy", resume=True, progress=False
    )
    assert again.metrics["test"] == metrics["test"]


def test_global_batch_is_split_exactly_and_weighted():
    """Each global batch is shared out whole; the loss weights make the mean gradient the batch's."""
    idx = torch.arange(10, 17)  # 7 examples over 3 processes
    parts = [distributed.shard(idx, distributed.DistContext(rank, 3)) for rank in range(3)]
    assert sorted(torch.cat([p for p, _ in parts]).tolist()) == idx.tolist()
    # DDP averages the processes' weighted mean losses: that must be the global batch's mean
    losses = torch.rand(20, generator=torch.Generator().manual_seed(0))
    averaged = sum(w * losses[p].mean() for p, w in parts) / 3
    assert float(averaged) == pytest.approx(float(losses[idx].mean()), rel=1e-6)
    # fewer examples than processes: the one left over runs an example at weight 0
    lone, weight = distributed.shard(torch.tensor([5]), distributed.DistContext(1, 2))
    assert lone.tolist() == [5] and weight == 0.0


def test_single_process_needs_no_process_group():
    with distributed.process_group("cpu") as ctx:
        assert not ctx.active and ctx.is_main and ctx.world == 1
