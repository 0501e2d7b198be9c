"""`emofuse extract` options: class labels in label.csv, RAVDESS's own layout, audio-only and
text-free extraction (no face stage, no text model), and the configurable no-speech threshold."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from extract_media import needs_extraction_stack, speaking_clip, speech, write_wav
from fake_ravdess import fake_ravdess

from emofuse.cli.main import main
from emofuse.data.dataset import DataFormatError
from emofuse.data.label_csv import read_label_csv
from emofuse.data.loading import load_splits
from emofuse.data.ravdess import EMOTIONS
from emofuse.features.clip import ClipExtractor, ExtractConfig
from emofuse.features.extract import extract_config
from emofuse.features.registry import NoSpeech

needs_stack = needs_extraction_stack()


def _label_csv(tmp_path: Path, rows: list[tuple], columns: list[str]) -> Path:
    path = tmp_path / "label.csv"
    pd.DataFrame(rows, columns=columns).to_csv(path, index=False)
    return path


# --------------------------------------------------------------------------- label.csv classes
def test_class_names_column_gives_sorted_ids_and_names(tmp_path: Path) -> None:
    rows = [
        ("v", "1", "hi", "sad", "train"),
        ("v", "2", "ho", "angry", "valid"),
        ("v", "3", "ha", "sad", "test"),
        ("v", "4", "he", "happy", "train"),
    ]
    path = _label_csv(tmp_path, rows, ["video_id", "clip_id", "text", "emotion", "mode"])
    df = read_label_csv(path, labels="auto")  # a class-name column means classification
    assert df["label"].dtype == np.int64 and df["label"].tolist() == [2, 0, 2, 1]
    assert df["annotation"].tolist() == ["sad", "angry", "sad", "happy"]
    with pytest.raises(DataFormatError, match="missing column"):  # scores need 'label'
        read_label_csv(path, labels="regression")


def test_class_ids_are_checked_and_scores_outside_the_range_point_to_classification(tmp_path: Path) -> None:
    columns = ["video_id", "clip_id", "text", "label", "mode"]
    ids = _label_csv(
        tmp_path,
        [("v", str(i), "t", str(c), "train") for i, c in enumerate([0, 7, 3, 1, 2, 4, 5, 6])],
        columns,
    )
    with pytest.raises(DataFormatError, match=r"outside \[-3, 3\].*--labels classification"):
        read_label_csv(ids)
    df = read_label_csv(ids, labels="classification")
    assert df["label"].tolist() == [0, 7, 3, 1, 2, 4, 5, 6] and df["annotation"].tolist()[1] == "7"
    half = _label_csv(tmp_path, [("v", "1", "t", "1.5", "train"), ("v", "2", "t", "0", "test")], columns)
    with pytest.raises(DataFormatError, match=r"line 2 \(v/1\)") as err:
        read_label_csv(half, labels="classification")
    assert "not a whole number" in str(err.value)
    named = _label_csv(tmp_path, [("v", "1", "t", "0", "calm", "train"), ("v", "2", "t", "0", "sad", "test")],
                       [*columns[:4], "class", "mode"])
    with pytest.raises(DataFormatError, match="more than one 'class' name"):
        read_label_csv(named, labels="classification")


# --------------------------------------------------------------------------- RAVDESS directly
@pytest.fixture(scope="module")
def ravdess(tmp_path_factory) -> Path:
    """The shared fake RAVDESS folder, plus byte copies under the other emotion codes for actor 01 so
    that all 8 classes occur (the copies hit the stage cache: no extra extraction time)."""
    root = tmp_path_factory.mktemp("rav") / "RavdessDataSet"
    fake_ravdess(root)
    source = root / "Actor_01" / "03-01-01-01-01-01-01.wav"
    for emotion in (2, 3, 4, 6, 7, 8):
        shutil.copy(source, root / "Actor_01" / f"03-01-{emotion:02d}-01-01-01-01.wav")
    (root / "Actor_02" / "03-02-05-01-01-01-02.wav").write_bytes(source.read_bytes())  # song: not speech
    return root


@needs_stack
def test_ravdess_folder_extracts_audio_only_with_emotion_classes_that_train_reads(
    ravdess: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "rav.pkl"
    assert main(["extract", str(ravdess), "--out", str(out), "--modalities", "A", "--no-video", "--quiet",
                 "--cache", str(tmp_path / "cache")]) == 0
    assert "14 of 14 clips extracted" in capsys.readouterr().out
    with open(out, "rb") as handle:
        raw = pickle.load(handle)
    assert {s: len(raw[s]["id"]) for s in ("train", "valid", "test")} == {"train": 10, "valid": 2, "test": 2}
    assert raw["emofuse"]["format"] == "emofuse-extract"  # how the file was made, beside the splits
    train = raw["train"]
    assert "text" not in train and "vision" not in train and "regression_labels" not in train
    by_id = dict(zip(train["id"], train["classification_labels"], strict=True))
    assert by_id["Actor_01$_$03-01-05-01-01-01-01"] == 4 and by_id["Actor_01$_$03-01-08-01-01-01-01"] == 7
    assert set(raw["test"]["id"]) == {"Actor_21$_$03-01-01-01-01-01-21", "Actor_21$_$03-01-05-01-01-01-21"}
    assert train["raw_text"][0] == "kids are talking by the door"
    report = json.loads(out.with_name("rav.report.json").read_text())
    assert "text" not in report["stage_seconds"] and "face" not in report["stage_seconds"]
    assert report["config"]["text"] is False and report["config"]["video"] is False

    splits = load_splits(str(out), labels="classification")
    assert (
        splits.class_names == EMOTIONS and splits.num_classes == 8 and splits.train.modalities == ("audio",)
    )
    run = tmp_path / "run"
    assert main(["train", "--data", str(out), "--labels", "classification", "--model", "fusion_matched",
                 "--modalities", "A", "--epochs", "1", "--threads", "1", "--quiet", "--out", str(run),
                 "-o", "hidden=8"]) == 0
    config = json.loads((run / "seed_1" / "config.json").read_text())
    assert config["spec"]["task"] == "classification" and config["spec"]["num_classes"] == 8


def test_ravdess_labels_are_classes_only(ravdess: Path, tmp_path: Path, capsys) -> None:
    assert main(["extract", str(ravdess), "--out", str(tmp_path / "x.pkl"), "--labels", "regression"]) == 2
    assert "8 emotion classes" in capsys.readouterr().err
    assert main(["extract", str(ravdess), "--out", str(tmp_path / "x.pkl"), "--modalities", "T+V"]) == 2
    assert "audio is always extracted" in capsys.readouterr().err


# --------------------------------------------------------------------------- stages that are not wanted
def test_options_choose_the_modalities() -> None:
    assert extract_config("T+A").modalities == ("text", "audio")
    config = extract_config("A")
    assert config.modalities == ("audio",) and not config.require_video
    with pytest.raises(ValueError, match="silence_db"):
        ExtractConfig(silence_db=10.0)


@needs_stack
def test_no_video_and_no_text_skip_the_face_and_text_models(tmp_path: Path) -> None:
    clip = tmp_path / "talk.mp4"
    speaking_clip(clip, ["a", "fine", "day"])
    with ClipExtractor(extract_config("A")) as extractor:
        features = extractor.extract(clip, "a fine day")
        assert extractor.face is None and extractor._embedder is None  # neither model was loaded
    assert (
        features.modalities == ("audio",) and features.word_crops is None and features.face_fraction is None
    )
    assert not {"face", "text"} & set(features.timings)
    assert features.aligned["audio"].shape == (3, 40) and features.words.words == ["a", "fine", "day"]


# --------------------------------------------------------------------------- the no-speech threshold
@needs_stack
def test_quiet_speech_passes_the_default_threshold_and_a_stricter_one_refuses_it(tmp_path: Path) -> None:
    audio, _ = speech(["a", "fine", "day"])
    rms = np.sqrt(np.mean(audio[: len(audio) // 160 * 160].reshape(-1, 160) ** 2, axis=1)).max()
    quiet = write_wav(tmp_path / "quiet.wav", audio * (10 ** (-55 / 20) / rms))  # loudest 10 ms at -55 dBFS
    config = extract_config("A")
    with ClipExtractor(config) as extractor:
        assert extractor.extract(quiet, "a fine day").words.words == ["a", "fine", "day"]
    strict = ExtractConfig(text=False, video=False, silence_db=-50.0)
    with ClipExtractor(strict) as extractor, pytest.raises(NoSpeech, match=r"at -55 dBFS, threshold -50"):
        extractor.extract(quiet, "a fine day")
