"""`extract_clip` and `emofuse extract` on a generated MMSA-FET folder: features, failure report,
policies, shards + merge, kill -9 resume, workers, and `train` on the result."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from extract_media import broken_inputs, needs_extraction_stack, speaking_clip

from emofuse.data.dataset import DataFormatError
from emofuse.data.mmsa import load_mmsa_pickle
from emofuse.features.clip import ClipExtractor, ExtractConfig, extract_clip
from emofuse.features.extract import extract_dataset
from emofuse.features.extract_pickles import unaligned_path
from emofuse.features.registry import (
    ClipError,
    NoAudioTrack,
    NoFace,
    NoSpeech,
    TooShort,
    UnreadableMedia,
)
from emofuse.features.shards import merge_shards

pytestmark = needs_extraction_stack()

GOOD = {  # clip -> (sentence, mode, label)
    ("v1", "1"): ("i love this movie", "train", 2.0),
    ("v1", "2"): ("this was terrible", "train", -2.0),
    ("v2", "1"): ("a fine day", "valid", 1.0),
    ("v3", "1"): ("not good at all", "test", -1.0),
}
BROKEN = {  # clip id -> the reason the report must give
    "truncated": "unreadable_file", "empty": "unreadable_file", "noaudio": "no_audio_track",
    "noface": "no_face", "silent": "no_speech", "short": "too_short", "absent": "missing_file",
}


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mmsa_fet")
    rows = []
    for (vid, cid), (text, mode, label) in GOOD.items():
        speaking_clip(root / "Raw" / vid / f"{cid}.mp4", text.split())
        rows.append((vid, cid, text, label, "pos" if label > 0 else "neg", mode))
    made = broken_inputs(root / "broken_src", ["this", "is", "bad"])
    names = {"truncated": "unreadable_file", "empty": "zero_bytes", "noaudio": "no_audio_track",
             "noface": "no_face", "silent": "no_speech", "short": "too_short"}
    for clip, key in names.items():
        target = root / "Raw" / "bad" / f"{clip}.mp4"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(made[key].read_bytes())
    for clip in BROKEN:
        rows.append(("bad", clip, "this is bad", 0.0, "neg", "train"))
    pd.DataFrame(rows, columns=["video_id", "clip_id", "text", "label", "annotation", "mode"]).to_csv(
        root / "label.csv", index=False)
    return root


@pytest.fixture(scope="module")
def extracted(folder: Path, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "feat.pkl"
    cache = out.parent / "cache"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a worker, so pickles made in subprocesses match exactly
    try:
        result = extract_dataset(folder, out, cache_dir=cache, progress=False)
    finally:
        torch.set_num_threads(threads)
    return result, out, cache


def test_extract_clip_gives_words_streams_and_word_level_features(folder: Path) -> None:
    path = folder / "Raw" / "v1" / "1.mp4"
    with ClipExtractor(ExtractConfig()) as extractor:
        forced = extractor.extract(path, "I love this movie!")
        asr = extractor.extract(path)
    assert forced.words.source == "forced:pocketsphinx" and forced.words.words == [
        "I",
        "love",
        "this",
        "movie!",
    ]
    assert forced.raw_text == "I love this movie!"
    assert asr.words.source == "asr:whisper-base"
    assert [w.strip(".,!").lower() for w in asr.words.words] == ["i", "love", "this", "movie"]
    w = len(forced.words)
    assert forced.aligned["text"].shape == (w, 384)
    assert forced.aligned["audio"].shape == (w, 25 + 15)
    assert forced.aligned["vision"].shape == (w, 52 + 6 + 1)
    assert forced.aligned["vision"][:, -1].min() == 1.0  # the face is there in every word
    assert forced.word_crops.shape == (w, 16, 64, 64) and forced.word_crops.dtype == np.uint8
    assert forced.word_logmel.shape == (w, 64, 32) and forced.word_logmel.dtype == np.float16
    assert forced.face_fraction == 1.0
    assert abs(len(forced.unaligned["audio"]) - forced.duration * 25) <= 1
    assert forced.streams["egemaps"].values.shape[1] == 25
    # different words (louder vs. quieter, different mouths) give different aligned rows
    assert not np.allclose(forced.aligned["audio"][0], forced.aligned["audio"][1])
    assert set(forced.timings) >= {"decode", "words", "face", "text", "align"}


def test_audio_only_input_gives_text_and_audio(tmp_path: Path, folder: Path) -> None:
    wav = tmp_path / "speech.wav"
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-i", str(folder / "Raw" / "v2" / "1.mp4"), "-vn", str(wav)],
        check=True,
    )
    features = extract_clip(wav, "a fine day", ExtractConfig(require_video=False))
    assert features.modalities == ("text", "audio") and features.word_crops is None
    with pytest.raises(ClipError, match="no video track"):
        extract_clip(wav, "a fine day")


@pytest.mark.parametrize("clip, error", [
    ("truncated", UnreadableMedia), ("empty", UnreadableMedia), ("noaudio", NoAudioTrack),
    ("noface", NoFace), ("silent", NoSpeech), ("short", TooShort),
])
def test_every_broken_clip_gives_one_named_line(folder: Path, clip: str, error: type) -> None:
    path = folder / "Raw" / "bad" / f"{clip}.mp4"
    with pytest.raises(error) as info:
        extract_clip(path, "this is bad")
    message = str(info.value)
    assert message.startswith(str(path)) and "\n" not in message
    assert info.value.reason.replace("_", " ") in message


def test_folder_extraction_reports_failures_and_writes_pickles_train_reads(extracted, folder: Path) -> None:
    result, out, _ = extracted
    failed = {f["id"].split("$_$")[1]: f["reason"] for f in result.report["failed"]}
    assert failed == BROKEN
    assert result.report["ok"] == len(GOOD) and result.report["word_sources"] == {"forced:pocketsphinx": 4}
    csv = pd.read_csv(out.with_name("feat.report.csv"))
    assert len(csv) == len(GOOD) + len(BROKEN) and (csv["status"] == "ok").sum() == len(GOOD)
    aligned = load_mmsa_pickle(out)
    assert [len(aligned[s]) for s in ("train", "valid", "test")] == [2, 1, 1]
    assert aligned.train.dims() == {"text": 384, "audio": 40, "vision": 59}
    assert aligned.train.max_lengths() == {"text": 50, "audio": 50, "vision": 50}
    assert aligned.train.lengths["text"].tolist() == [4, 3]
    assert aligned.train.ids == ["v1$_$1", "v1$_$2"]
    assert list(aligned.train.extras["word_source"]) == ["forced:pocketsphinx"] * 2
    unaligned = load_mmsa_pickle(unaligned_path(out))
    assert unaligned.train.lengths["audio"][0] > unaligned.train.lengths["text"][0]
    assert unaligned.train.dims() == aligned.train.dims()

    from emofuse.cli.main import main

    code = main(["train", "--data", str(out), "--model", "ef_lstm", "--epochs", "1", "--threads", "1",
                 "--out", str(out.parent / "run"), "--quiet", "--batch-size", "2"])
    assert code == 0
    assert list((out.parent / "run").glob("seed_*"))


def test_pad_keeps_failed_clips_as_zero_rows_and_stop_ends_the_run(extracted, folder: Path) -> None:
    _, out, cache = extracted
    padded = extract_dataset(
        folder, out.with_name("pad.pkl"), cache_dir=cache, on_error="pad", progress=False
    )
    data = load_mmsa_pickle(padded.outputs[0])
    assert len(data.train) == 2 + len(BROKEN)
    status = dict(zip(data.train.ids, data.train.extras["extract_status"], strict=True))
    assert status["bad$_$noface"] == "no_face" and status["v1$_$1"] == "ok"
    row = data.train.ids.index("bad$_$silent")
    assert not data.train.features["audio"][row].any() and int(data.train.lengths["audio"][row]) == 1
    with pytest.raises(DataFormatError, match="--on-error stop"):
        extract_dataset(folder, out.with_name("stop.pkl"), cache_dir=cache, on_error="stop", progress=False)
    assert not out.with_name("stop.pkl").exists() and out.with_name("stop.report.json").is_file()


def _same_pickles(a: Path, b: Path) -> None:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        x, y = pickle.load(fa), pickle.load(fb)
    assert x.keys() == y.keys()
    for split in x:
        assert x[split].keys() == y[split].keys()
        for key in x[split]:
            assert np.array_equal(np.asarray(x[split][key]), np.asarray(y[split][key])), (split, key)


def test_shards_merge_into_the_same_pickle_and_gaps_are_caught(extracted, folder: Path) -> None:
    _, out, cache = extracted
    shards = []
    for i in range(3):
        path = out.with_name(f"shard{i}.pkl")
        extract_dataset(folder, path, cache_dir=cache, shard=f"{i}/3", progress=False)
        shards.append(path)
    merged = merge_shards(shards, out.with_name("merged.pkl"))
    _same_pickles(merged.outputs[0], out)
    _same_pickles(merged.outputs[1], unaligned_path(out))
    assert len(merged.report["failed"]) == len(BROKEN)
    with pytest.raises(DataFormatError, match=r"shard\(s\) \[1\] of 3 are missing"):
        merge_shards([shards[0], shards[2]], out.with_name("m2.pkl"))
    with pytest.raises(DataFormatError, match="given twice"):
        merge_shards([shards[0], shards[0], shards[1], shards[2]], out.with_name("m3.pkl"))
    with pytest.raises(ValueError, match="0 <= i < n"):
        extract_dataset(folder, out.with_name("x.pkl"), shard="3/3")


def test_kill_9_resumes_and_gives_the_same_pickle_with_two_workers(
    extracted, folder: Path, tmp_path: Path
) -> None:
    _, reference, _ = extracted
    out, cache = tmp_path / "feat.pkl", tmp_path / "cache"
    cmd = [sys.executable, "-m", "emofuse.cli.main", "extract", str(folder), "--out", str(out),
           "--cache", str(cache), "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    try:
        # one clip's stages are cached once 5 entries exist (words, 3 audio streams, face)
        while len(list(cache.glob("*/*.npz"))) < 5 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert not out.exists(), "the run finished before it could be killed"
    partial = len(list(cache.glob("*/*.npz")))
    assert partial >= 5
    done = subprocess.run([*cmd, "--workers", "2"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "4 of 11 clips extracted, 7 failed" in done.stdout
    _same_pickles(out, reference)
    _same_pickles(unaligned_path(out), unaligned_path(reference))
    report = json.loads(out.with_name("feat.report.json").read_text())
    assert report["workers"] == 2


def test_cli_reports_bad_options_in_one_line(folder: Path, tmp_path: Path, capsys) -> None:
    from emofuse.cli.main import main

    assert main(["extract", str(folder), "--out", str(tmp_path / "x.pkl"), "--shard", "1of2"]) == 2
    assert "--shard must look like i/n" in capsys.readouterr().err
    assert main(["extract", str(tmp_path), "--out", str(tmp_path / "x.pkl")]) == 2
    assert "holds no label.csv" in capsys.readouterr().err
