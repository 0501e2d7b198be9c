"""`emofuse extract`'s workers: clips handed out largest first but results in job order, one thread
per native pool in each worker, and model loading counted apart from the per-clip stage times."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pandas as pd
import pytest
from extract_media import needs_extraction_stack, speaking_clip

from emofuse.features.clip import ClipExtractor, ExtractConfig
from emofuse.features.clip_table import ClipJob
from emofuse.features.extract import extract_config, extract_dataset
from emofuse.features.pool import (
    THREAD_ENV,
    clip_results,
    largest_first,
    needs_recognition,
    pool_results,
    worker_thread_env,
)

needs_stack = needs_extraction_stack()


def _probe(item: tuple[int, float]) -> dict:
    """A worker's job (spawned workers import this module): when it started, and its threads."""
    import torch

    index, seconds = item
    started = time.monotonic()
    time.sleep(seconds)
    return {"index": index, "pid": os.getpid(), "started": started, "torch_threads": torch.get_num_threads(),
            "env": {key: os.environ.get(key) for key in THREAD_ENV}}


def test_largest_first_orders_by_file_size_and_puts_missing_files_last(tmp_path: Path) -> None:
    sizes = [10, 300, 0, 300, 50]
    paths = []
    for i, size in enumerate(sizes):
        (tmp_path / f"{i}.mp4").write_bytes(b"x" * size)
        paths.append(str(tmp_path / f"{i}.mp4"))
    assert largest_first([*paths, str(tmp_path / "absent.mp4")]) == [1, 3, 4, 0, 2, 5]  # ties keep order
    assert largest_first([]) == []


def test_pool_results_come_in_item_order_from_single_threaded_workers(monkeypatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the parent's own settings come back afterwards
    monkeypatch.delenv("NUMEXPR_NUM_THREADS", raising=False)
    assert worker_thread_env() == dict.fromkeys(THREAD_ENV, "1")
    # handed out in reverse (the largest last in item order): they finish in reverse order
    items = [(i, 0.3 + 0.1 * i) for i in range(4)]
    results = list(pool_results(_probe, items, 2, order=[3, 2, 1, 0]))
    assert [r["index"] for r in results] == [0, 1, 2, 3]
    assert max(results, key=lambda r: r["started"])["index"] == 0  # the last handed out starts last
    for r in results:
        assert r["env"] == dict.fromkeys(THREAD_ENV, "1") and r["torch_threads"] == 1
    assert os.environ["OMP_NUM_THREADS"] == "2" and "NUMEXPR_NUM_THREADS" not in os.environ
    with pytest.raises(ValueError, match="permutation"):
        list(pool_results(_probe, items, 2, order=[0, 1, 2]))


def test_load_names_the_models_the_config_needs() -> None:
    jobs = [ClipJob("v$_$1", "1.mp4", "hello there"), ClipJob("v$_$2", "2.mp4", "")]
    assert needs_recognition(jobs, ExtractConfig()) and not needs_recognition(jobs[:1], ExtractConfig())
    assert needs_recognition(jobs[:1], ExtractConfig(words="whisper"))
    assert not needs_recognition(jobs, ExtractConfig(words="pocketsphinx"))
    full = ClipExtractor(ExtractConfig())  # nothing loads until load() or a clip
    assert [name for name, _ in full._load_steps(recognise=True)] == [
        "words:pocketsphinx", "words:whisper", "audio:egemaps", "audio:librosa", "audio:logmel",
        "face:mediapipe", "text:minilm"]
    assert "words:whisper" not in dict(full._load_steps(recognise=False))
    audio = ClipExtractor(extract_config("A", words="whisper"))
    assert [name for name, _ in audio._load_steps(recognise=False)] == [
        "words:whisper", "audio:egemaps", "audio:librosa", "audio:logmel"]


@pytest.fixture(scope="module")
def growing(tmp_path_factory) -> Path:
    """An MMSA-FET folder whose clips grow longer down label.csv: handed out in reverse order."""
    root = tmp_path_factory.mktemp("growing")
    sentences = ["a day", "a fine day", "not good at all today", "i really love this movie so much"]
    rows = []
    for i, text in enumerate(sentences):
        speaking_clip(root / "Raw" / "v" / f"{i}.mp4", text.split())
        rows.append(("v", str(i), text, 0.0, "x", ("train", "valid", "test", "train")[i]))
    pd.DataFrame(rows, columns=["video_id", "clip_id", "text", "label", "annotation", "mode"]).to_csv(
        root / "label.csv", index=False)
    return root


@needs_stack
def test_two_workers_give_job_order_and_report_model_loading_apart(growing: Path, tmp_path: Path) -> None:
    config = extract_config("A")
    started = time.perf_counter()
    result = extract_dataset(growing, tmp_path / "feat.pkl", config=config, workers=2,
                             cache_dir=tmp_path / "cache", progress=False)
    wall = time.perf_counter() - started
    report = result.report
    ids = [f"v$_${i}" for i in range(4)]
    assert [s["id"] for s in report["statuses"]] == ids and report["ok"] == 4
    # each worker that got a clip loaded its models once, before it: none of that is in the stages
    assert report["model_load_workers"] in (1, 2)
    by_model = report["model_load_seconds_by_model"]
    assert set(by_model) == {"words:pocketsphinx", "audio:egemaps", "audio:librosa", "audio:logmel"}
    assert report["model_load_seconds"] == pytest.approx(sum(by_model.values()), abs=0.01)
    assert report["model_load_seconds"] > 0
    stages = report["stage_seconds"]
    assert {"decode", "words", "audio:egemaps", "audio:librosa", "audio:logmel", "align"} <= set(stages)
    assert all(s >= 0 for s in stages.values())
    # per worker, loading and the clips' stages run one after the other within the run
    assert sum(stages.values()) + report["model_load_seconds"] <= 2 * wall
    factors = report["stage_real_time_factor"]
    for stage, seconds in stages.items():
        assert factors[stage] == pytest.approx(seconds / report["media_seconds"], abs=1e-3)

    # in this process: results in job order too, loading on the first result only
    jobs = [ClipJob(i, str(growing / "Raw" / "v" / f"{i[-1]}.mp4"), text)
            for i, text in zip(ids, pd.read_csv(growing / "label.csv")["text"], strict=True)]
    here = list(clip_results(jobs, config, None, 1, None))
    assert [r.clip_id for r in here] == ids
    assert set(here[0].load_seconds) == set(by_model) and not any(r.load_seconds for r in here[1:])
    assert "words:whisper" not in here[0].load_seconds  # every clip has its text: no recognition
    assert not {"face", "text"} & set(here[0].timings)
