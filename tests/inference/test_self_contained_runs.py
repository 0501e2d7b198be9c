"""The paper's system from video files: extract --raw -> train raw encoders -> predict anywhere.

- `extract --raw` writes per-word face crops and log-mel patches into a raw store beside the
  pickle, which `train --video-encoder harris3d_cnn --audio-encoder spectro_cnn` reads lazily;
- a run folder carries what predicting needs: moved elsewhere with its data deleted, it predicts
  the same numbers;
- predict on a training clip feeds the model the inputs training fed it for that clip;
- RAVDESS runs: predict cuts a clip into the same windows of the same log-mel as the loader.
"""

from __future__ import annotations

import json
import pickle
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "features"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from extract_media import (  # noqa: E402
    face_frames,
    missing_for_tests,
    mux,
    needs_extraction_stack,
    speech,
    write_sample_folder,
)
from fake_ravdess import fake_ravdess  # noqa: E402

from emofuse.cli.main import main  # noqa: E402
from emofuse.data.dataset import RAW_EXTRAS  # noqa: E402
from emofuse.data.raw import LazyRawArray  # noqa: E402
from emofuse.evaluation.evaluate import load_data, load_run  # noqa: E402

MISSING = missing_for_tests()
needs_stack = needs_extraction_stack()


@pytest.fixture(scope="module")
def raw_run(tmp_path_factory) -> dict[str, Path]:
    """A generated MMSA-FET folder extracted with --raw (small crops) and the paper's model trained on it."""
    if MISSING:
        pytest.skip(f"extraction stack missing: {MISSING}")
    root = tmp_path_factory.mktemp("raw_e2e")
    write_sample_folder(root / "fet")
    data = root / "data"
    assert (
        main(
            [
                "extract",
                str(root / "fet"),
                "--out",
                str(data / "feat.pkl"),
                "--raw",
                "--crop-frames",
                "8",
                "--crop-size",
                "32",
                "--logmel-frames",
                "16",
                "--cache",
                str(root / "cache"),
                "--quiet",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "train",
                "--data",
                str(data / "feat.pkl"),
                "--model",
                "fusion_matched",
                "--modalities",
                "T+A+V",
                "--video-encoder",
                "harris3d_cnn",
                "--audio-encoder",
                "spectro_cnn",
                "--encoder-dim",
                "8",
                "--epochs",
                "2",
                "--threads",
                "1",
                "--batch-size",
                "2",
                "--quiet",
                "-o",
                "hidden=8",
                "--out",
                str(root / "runs"),
            ]
        )
        == 0
    )
    return {"root": root, "data": data, "run": root / "runs" / "seed_1", "clips": root / "fet" / "Raw"}


@needs_stack
def test_extract_raw_writes_a_store_the_pickle_names_relatively(raw_run) -> None:
    data = raw_run["data"]
    payload = pickle.loads((data / "feat.pkl").read_bytes())
    meta = payload["emofuse"]
    assert meta["raw"]["store"] == "feat.raw"
    assert meta["raw"]["shapes"] == {"vision": [8, 32, 32], "audio": [64, 16]}
    assert meta["logmel"]["scale"] == "dB" and meta["logmel"]["floor_db"] == -100.0
    names = payload["train"]["raw_vision_file"]
    assert all(not Path(n).is_absolute() and n.startswith("feat.raw/vision/") for n in names)
    # the unaligned pickle has frame-rate sequences, not words: no raw references
    assert "raw_vision_file" not in pickle.loads((data / "feat_unaligned.pkl").read_bytes())["train"]
    # the sizes are in the report too, with the store's size
    report = json.loads((data / "feat.report.json").read_text())
    assert report["config"]["crop_size"] == 32 and report["raw_store_bytes"] > 0


@needs_stack
def test_a_moved_dataset_folder_loads_and_a_lost_store_is_named(raw_run, tmp_path: Path) -> None:
    moved = tmp_path / "elsewhere"
    shutil.copytree(raw_run["data"], moved)
    from emofuse.data.loading import load_splits

    splits = load_splits(str(moved / "feat.pkl"))
    train = splits.train
    assert isinstance(train.extras["raw_vision"], LazyRawArray)
    assert all(str(moved) in f for f in train.extras["raw_vision"].files)
    crops = train.extras["raw_vision"].load([0], int(train.lengths["vision"][0]))
    assert crops.dtype == np.uint8 and crops.shape[2:] == (8, 32, 32) and crops.any()
    # every word of the clip has its crops and its log-mel patch
    assert int(train.lengths["vision"][0]) == len(np.load(train.extras["raw_vision"].files[0]))
    shutil.rmtree(moved / "feat.raw")
    with pytest.raises(
        Exception, match=r"feat\.pkl.*raw vision files are missing.*must move with the pickle"
    ):
        load_splits(str(moved / "feat.pkl"))


@needs_stack
def test_a_moved_run_with_its_data_deleted_predicts_the_same(raw_run, tmp_path: Path, capsys) -> None:
    clip = str(raw_run["clips"] / "v1" / "1.mp4")
    assert main(["predict", clip, "--run", str(raw_run["run"]), "--json"]) == 0
    (before,) = json.loads(capsys.readouterr().out)
    run_copy = tmp_path / "another_machine" / "seed_1"
    shutil.copytree(raw_run["run"], run_copy)
    hidden = raw_run["root"] / "data_hidden"
    raw_run["data"].rename(hidden)  # the training data is gone
    try:
        assert main(["predict", clip, "--run", str(run_copy), "--json"]) == 0
        (after,) = json.loads(capsys.readouterr().out)
    finally:
        hidden.rename(raw_run["data"])
    assert after["score"] == before["score"]
    assert after["contributions"] == before["contributions"]
    assert after["raw_encoders"] == {"vision": "harris3d_cnn", "audio": "spectro_cnn"}
    # the answer names the run, never this machine's path to it
    assert after["run"] == "another_machine/seed_1" and str(tmp_path) not in json.dumps(after["run"])


@needs_stack
def test_predict_on_a_training_clip_feeds_what_training_fed(raw_run) -> None:
    from emofuse.inference.predict import Predictor

    run = load_run(raw_run["run"])
    train = run.prepare(load_data(str(raw_run["data"] / "feat.pkl"), run.config).train)
    i = train.ids.index("v1$_$1")
    with Predictor(raw_run["run"]) as predictor:
        features = predictor.extract(raw_run["clips"] / "v1" / "1.mp4", "i love this movie")
        raw = {"vision": features.word_crops, "audio": predictor.raw_audio(features)}
        fed = predictor.dataset(features.record(), raw, "v1/1.mp4")
    n = int(train.lengths["text"][i])
    assert int(fed.lengths["text"][0]) == n
    torch.testing.assert_close(
        fed.features["text"][0, :n], train.features["text"][i, :n], atol=1e-4, rtol=1e-4
    )
    for key, m in RAW_EXTRAS.items():
        words = int(train.lengths[m][i])
        trained = train.extras[key].load([i], words)[0]
        given = fed.extras[key].load([0], words)[0]
        np.testing.assert_allclose(given.astype(np.float32), trained.astype(np.float32), atol=1e-2)


@needs_stack
def test_a_face_in_part_of_the_clip_predicts_and_marks_the_other_words(
    raw_run, tmp_path: Path, capsys
) -> None:
    words = "what a wonderful film this was".split()
    audio, times = speech(words)
    n = int(np.ceil(len(audio) / 16_000 * 25))
    frames = face_frames(n)
    cut = int(times[2][1] * 25) + 1  # the face turns away after the third word
    frames[cut:] = face_frames(n - cut, face=False)
    clip = mux(tmp_path / "turned.mp4", frames, audio)
    assert (
        main(["predict", str(clip), "--run", str(raw_run["run"]), "--transcript", " ".join(words), "--json"])
        == 0
    )
    captured = capsys.readouterr()
    (result,) = json.loads(captured.out)
    # third-party progress bars do not reach the user's terminal (the text model loads here)
    assert "Loading weights" not in captured.err
    assert "score" in result and 0 < result["face_fraction"] < 1
    assert result["vision_missing_words"] and "wonderful" not in result["vision_missing_words"]
    assert set(result["vision_missing_words"]) <= set(words[3:])
    assert any("no face was seen" in note for note in result["notes"])
    # a clip without any face is still one clear line
    mux(tmp_path / "noface.mp4", face_frames(n, face=False), audio)
    assert main(["predict", str(tmp_path / "noface.mp4"), "--run", str(raw_run["run"])]) == 2
    err = capsys.readouterr().err
    assert "no face was found in any of its" in err and "Traceback" not in err


@needs_stack
def test_empty_text_rows_and_other_containers_extract_by_recognition(tmp_path: Path, capsys) -> None:
    import pandas as pd

    audio, _ = speech("i love this movie".split())
    n = int(np.ceil(len(audio) / 16_000 * 25))
    clip = mux(tmp_path / "fet" / "Raw" / "v1" / "1.mp4", face_frames(n), audio)
    mux(tmp_path / "fet" / "Raw" / "v3" / "1.mkv", face_frames(n), audio)
    flv = tmp_path / "fet" / "Raw" / "v2" / "1.flv"
    flv.parent.mkdir(parents=True)
    import subprocess

    subprocess.run(
        [
            "ffmpeg",
            "-y",
            "-loglevel",
            "error",
            "-i",
            str(clip),
            "-c:v",
            "flv",
            "-c:a",
            "libmp3lame",
            "-ar",
            "22050",
            str(flv),
        ],
        check=True,
    )
    rows = [("v1", "1", "", 1.0, "pos", "train"), ("v2", "1", "", 1.0, "pos", "valid"),
            ("v3", "1", "", 1.0, "pos", "test")]
    pd.DataFrame(rows, columns=["video_id", "clip_id", "text", "label", "annotation", "mode"]).to_csv(
        tmp_path / "fet" / "label.csv", index=False)
    assert main(["extract", str(tmp_path / "fet"), "--out", str(tmp_path / "f.pkl"), "--modalities", "A+V",
                 "--quiet", "--cache", str(tmp_path / "cache")]) == 0
    out = capsys.readouterr().out
    assert "3 of 3 clips extracted" in out
    payload = pickle.loads((tmp_path / "f.pkl").read_bytes())
    assert payload["valid"]["word_source"][0].startswith("asr")
    assert "love" in payload["valid"]["raw_text"][0].lower()


@needs_stack
def test_evaluate_robustness_and_resume_work_on_extracted_raw_data(raw_run, tmp_path: Path, capsys) -> None:
    assert main(["evaluate", str(raw_run["run"])]) == 0
    assert main(["robustness", str(raw_run["run"]), "--out", str(tmp_path / "rob")]) == 0
    out = tmp_path / "resumed"
    args = ["train", "--data", str(raw_run["data"] / "feat.pkl"), "--model", "fusion_matched", "--modalities",
            "A+V", "--video-encoder", "harris3d_cnn", "--audio-encoder", "spectro_cnn", "--encoder-dim", "8",
            "--threads", "1", "--batch-size", "2", "--quiet", "-o", "hidden=8", "--out", str(out)]
    assert main([*args, "--epochs", "2"]) == 0
    first = json.loads((out / "seed_1" / "metrics.json").read_text())
    assert main([*args, "--epochs", "2", "--resume"]) == 0  # a finished run is reused as it is
    assert json.loads((out / "seed_1" / "metrics.json").read_text()) == first
    capsys.readouterr()


def test_the_one_log_mel_front_end_is_what_ravdess_and_extract_compute() -> None:
    pytest.importorskip("librosa")
    from emofuse.audio_frontend import FLOOR_DB, LogMelConfig, log_mel_db
    from emofuse.data.ravdess import RavdessConfig, log_mel
    from emofuse.features.audio import LogMel

    rng = np.random.default_rng(0)
    t = np.arange(16_000) / 16_000
    audio = (0.3 * np.sin(2 * np.pi * 220 * t) * (t > 0.5) + 1e-4 * rng.normal(size=t.size)).astype(
        np.float32
    )
    reference = log_mel_db(audio, LogMelConfig(n_mels=40))
    np.testing.assert_allclose(log_mel(audio, RavdessConfig(n_mels=40)), reference, atol=1e-4)
    stream = LogMel(LogMel.Config(n_mels=40))(audio, 16_000)
    frames = stream.values.T
    np.testing.assert_allclose(frames, reference[:, : frames.shape[1]], atol=0.1)  # float16 rounding
    # dB, floored at -100: digital silence sits on the floor
    silence = log_mel_db(np.zeros(4000, np.float32))
    assert silence.min() == pytest.approx(FLOOR_DB)


def test_a_ravdess_run_predicts_on_the_windows_its_loader_made(tmp_path: Path, monkeypatch, capsys) -> None:
    pytest.importorskip("librosa")
    pytest.importorskip("soundfile")
    monkeypatch.setenv("EMOFUSE_CACHE", str(tmp_path / "cache"))
    fake_ravdess(tmp_path / "rav")
    assert main(["train", "--data", str(tmp_path / "rav"), "--model", "pooled", "--modalities", "A",
                 "--audio-encoder", "spectro_cnn", "--encoder-dim", "8", "--epochs", "1", "--threads", "1",
                 "--quiet", "--out", str(tmp_path / "runs")]) == 0
    run_dir = tmp_path / "runs" / "seed_1"
    record = json.loads((run_dir / "config.json").read_text())["frontend"]
    assert record["source"] == "ravdess" and record["segments"] == "windows"
    from emofuse.inference.predict import Predictor, feature_layout

    run = load_run(run_dir)
    layout = feature_layout(run)
    assert layout.from_run and layout.segments == "windows"
    train = load_data(str(tmp_path / "rav"), run.config).train
    wav = sorted((tmp_path / "rav" / "Actor_01").glob("*.wav"))[0]
    i = train.ids.index(f"Actor_01$_${wav.stem}")
    trained = train.extras["raw_audio"].load([i], int(train.lengths["audio"][i]))[0]
    predictor = Predictor.__new__(Predictor)  # the windows need no extraction models
    predictor.layout = layout
    np.testing.assert_array_equal(predictor._windows(wav), trained)


@needs_stack
def test_whisper_base_trains_on_an_extracted_store_with_whispers_own_map(tmp_path: Path, capsys) -> None:
    write_sample_folder(tmp_path / "fet")
    assert (
        main(
            [
                "extract",
                str(tmp_path / "fet"),
                "--out",
                str(tmp_path / "w.pkl"),
                "--raw",
                "--modalities",
                "A",
                "--no-video",
                "--n-mels",
                "80",
                "--n-fft",
                "400",
                "--logmel-frames",
                "16",
                "--quiet",
                "--cache",
                str(tmp_path / "cache"),
            ]
        )
        == 0
    )
    meta = pickle.loads((tmp_path / "w.pkl").read_bytes())["emofuse"]
    assert (
        meta["logmel"]["n_mels"] == 80
        and meta["logmel"]["n_fft"] == 400
        and "vision" not in meta["raw"]["shapes"]
    )
    assert main(["train", "--data", str(tmp_path / "w.pkl"), "--model", "pooled", "--modalities", "A",
                 "--audio-encoder", "whisper_base", "--encoder-dim", "8", "--epochs", "1", "--threads", "1",
                 "--batch-size", "2", "--quiet", "--out", str(tmp_path / "runs")]) == 0
    assert (
        main(
            [
                "predict",
                str(tmp_path / "fet" / "Raw" / "v1" / "1.mp4"),
                "--run",
                str(tmp_path / "runs" / "seed_1"),
                "--json",
            ]
        )
        == 0
    )
    capsys.readouterr()
