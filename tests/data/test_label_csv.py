"""label.csv and MELD readers, mojibake repair, and locating the shared data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from emofuse.data import (
    MELD_EMOTIONS,
    DataFormatError,
    fix_mojibake,
    label_csv_splits,
    load_meld_dir,
    read_csd,
    read_label_csv,
    read_meld_csv,
)
from emofuse.data.shared_data import (
    ENV_VAR,
    missing_reason,
    shared_data_dir,
    shared_data_file,
)

HEADER = "video_id,clip_id,text,label,annotation,mode,start,end\n"
GOOD_ROWS = [
    "vidA,0012,hello there,1.5,Positive,train,0.0,1.2",
    "vidA,2,NA,-0.4,Negative,valid,1.2,2.0",
    'vidB,1,"well, maybe",0,Neutral,test,0.5,0.9',
]


# --------------------------------------------------------------------------- fixtures
def shared(*parts: str) -> Path:
    path = shared_data_file(*parts)
    if path is None:
        pytest.skip(missing_reason(*parts))
    return path


def write_csv(tmp_path: Path, rows: list[str], header: str = HEADER, name: str = "label.csv") -> Path:
    path = tmp_path / name
    path.write_text(header + "\n".join(rows) + "\n", encoding="utf-8")
    return path


MELD_HEADER = (
    "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,Episode,"
    "StartTime,EndTime\n"
)


def meld_row(i: int, text: str, emotion: str = "joy", sentiment: str = "positive",
             dialogue: int = 0) -> str:
    return f'{i + 1},"{text}",Joey,{emotion},{sentiment},{dialogue},{i},1,1,"0:0:1,0","0:0:2,0"'


# --------------------------------------------------------------------------- label.csv
def test_read_label_csv(tmp_path: Path) -> None:
    df = read_label_csv(write_csv(tmp_path, GOOD_ROWS))
    assert df["clip_id"].tolist() == ["0012", "2", "1"]  # ids stay text
    assert df["text"].tolist() == ["hello there", "NA", "well, maybe"]  # 'NA' is a word here
    assert df["label"].dtype == np.float64 and df["label"].tolist() == [1.5, -0.4, 0.0]
    assert df["end"].tolist() == [1.2, 2.0, 0.9]
    parts = label_csv_splits(df)
    assert {k: len(v) for k, v in parts.items()} == {"train": 1, "valid": 1, "test": 1}
    assert parts["test"].index.tolist() == [0]


def test_start_end_are_optional_and_bom_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "label.csv"
    rows = "\n".join(r.rsplit(",", 2)[0] for r in GOOD_ROWS)
    path.write_text("\ufeffvideo_id,clip_id,text,label,annotation,mode\n" + rows, encoding="utf-8")
    df = read_label_csv(path)
    assert "start" not in df.columns and df["video_id"].iloc[0] == "vidA"


def test_missing_columns_are_named(tmp_path: Path) -> None:
    path = write_csv(tmp_path, ["a,1,hi,1.0"], header="video_id,clip_id,text,label\n")
    with pytest.raises(DataFormatError, match=r"label\.csv: missing column\(s\) \['mode'\]"):
        read_label_csv(path)


def test_annotation_is_derived_from_the_sign_and_extra_columns_are_kept(tmp_path: Path) -> None:
    """MOSEI's label.csv: no annotation, extra per-modality labels, the valid split named 'dev'."""
    header = "video_id,clip_id,text,label,label_T,label_A,mode\n"
    rows = ["v1,1,great,2.2,1,1,train", "v1,2,meh,0,0,0,dev", "v2,1,awful,-1.4,-1,0,test",
            "v2,2,fine,0.2,0,0,train"]
    df = read_label_csv(write_csv(tmp_path, rows, header=header))
    assert df["annotation"].tolist() == ["Positive", "Neutral", "Negative", "Positive"]
    assert df["mode"].tolist() == ["train", "valid", "test", "train"]
    assert df["label_T"].tolist() == ["1", "0", "-1", "0"]
    assert {k: len(v) for k, v in label_csv_splits(df).items()} == {"train": 2, "valid": 1, "test": 1}


@pytest.mark.parametrize("valid_name", ["valid", "dev", "val", "Validation", " DEV "])
def test_mode_names_of_the_validation_split(tmp_path: Path, valid_name: str) -> None:
    rows = [f"v,{i},hi,1,Positive,{mode},0,1" for i, mode in enumerate(["train", valid_name, "Test"])]
    assert read_label_csv(write_csv(tmp_path, rows))["mode"].tolist() == ["train", "valid", "test"]


@pytest.mark.parametrize("bad", ["42.0", "-1e9", "10"])
def test_labels_outside_the_sentiment_range_are_refused(tmp_path: Path, bad: str) -> None:
    path = write_csv(tmp_path, [*GOOD_ROWS, f"vidC,7,hi,{bad},Positive,test,0,1"])
    with pytest.raises(DataFormatError, match=r"label\.csv: 1 sentiment label\(s\) outside \[-3, 3\]: "
                       r"line 5 \(vidC/7\) in split test = "):
        read_label_csv(path)
    with pytest.warns(UserWarning, match=r"clipped to \[-3, 3\]"):
        df = read_label_csv(path, clip_labels=True)
    assert df["label"].iloc[-1] == (3.0 if float(bad) > 0 else -3.0)


def test_folder_is_read_through_its_label_csv(tmp_path: Path) -> None:
    write_csv(tmp_path, GOOD_ROWS)
    assert len(read_label_csv(tmp_path)) == 3
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataFormatError, match=r"empty is a folder; expected a label csv file"):
        read_label_csv(tmp_path / "empty")


@pytest.mark.parametrize(
    ("bad_row", "pattern"),
    [
        ("vidC,7,hi,1.0,Positive,training,0,1", r"mode other than.*line 5 \(vidC/7\)"),
        ("vidC,7,hi,abc,Positive,train,0,1", r"non-numeric or infinite 'label'.*line 5 \(vidC/7\)"),
        ("vidC,7,hi,inf,Positive,train,0,1", r"'label'.*line 5 \(vidC/7\)"),
        ("vidC,7,hi,,Positive,train,0,1", r"'label'.*line 5 \(vidC/7\)"),
        ("vidC,7,  ,1,Positive,train,0,1", r"empty text: line 5 \(vidC/7\)"),
        ("vidC,7,hi,1,Positive,train,3,1", r"end lies before start: line 5 \(vidC/7\)"),
        ("vidC,7,hi,1,Positive,train,x,1", r"'start'"),
        ("vidA,2,hi,1,Positive,train,0,1", r"repeating.*line 5 \(vidA/2\)"),
    ],
)
def test_bad_rows_are_listed(tmp_path: Path, bad_row: str, pattern: str) -> None:
    path = write_csv(tmp_path, [*GOOD_ROWS, bad_row])
    with pytest.raises(DataFormatError, match=pattern) as info:
        read_label_csv(path)
    assert str(path) in str(info.value)


def test_at_most_five_rows_are_listed(tmp_path: Path) -> None:
    rows = [f"v{i},{i},,1,Positive,train,0,1" for i in range(8)]
    with pytest.raises(DataFormatError, match=r"8 row\(s\) with empty text") as info:
        read_label_csv(write_csv(tmp_path, rows))
    message = str(info.value)
    assert "(v4/4)" in message and "(v5/5)" not in message and "and 3 more" in message


def test_empty_text_is_kept_when_the_words_come_from_the_audio(tmp_path: Path) -> None:
    # `extract --asr` / `--words auto` recognise the words, so a clip without text is legitimate
    path = write_csv(
        tmp_path, [*GOOD_ROWS, "vidC,7,,1,Positive,train,0,1", "vidC,8,   ,-1,Negative,test,0,1"]
    )
    df = read_label_csv(path, allow_empty_text=True)
    assert len(df) == 5 and df["text"].tolist()[3:] == ["", ""]
    assert df["text"].tolist()[:3] == ["hello there", "NA", "well, maybe"]  # the others as written
    assert df["label"].tolist()[3:] == [1.0, -1.0] and df["mode"].tolist()[3:] == ["train", "test"]
    # the other checks still apply to such rows
    bad = write_csv(tmp_path, [*GOOD_ROWS, "vidC,7,,1,Positive,training,0,1"], name="bad.csv")
    with pytest.raises(DataFormatError, match=r"mode other than.*line 5 \(vidC/7\)"):
        read_label_csv(bad, allow_empty_text=True)
    # the default (text features from label.csv need the words) still refuses them
    with pytest.raises(
        DataFormatError, match=r"2 row\(s\) with empty text: line 5 \(vidC/7\), line 6 \(vidC/8\)"
    ):
        read_label_csv(path)
    with pytest.raises(TypeError):
        read_label_csv(path, False, "regression", True)  # keyword-only: never a positional slip


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "label.csv"
    path.write_bytes(HEADER.encode() + "v,1,caf\xe9,1,P,train,0,1\n".encode("latin-1"))
    with pytest.raises(DataFormatError, match=r"label\.csv is not a readable UTF-8 csv"):
        read_label_csv(path)


# --------------------------------------------------------------------------- MELD
def test_read_meld_csv(tmp_path: Path) -> None:
    rows = [meld_row(0, "You’re a genius!"), meld_row(1, "Youâ€™re late", "anger", "negative"),
            meld_row(2, "Oh.", "neutral", "neutral", dialogue=3)]
    df = read_meld_csv(write_csv(tmp_path, rows, MELD_HEADER, "dev_sent_emo.csv"))
    assert list(df.columns) == ["video_id", "clip_id", "text", "label", "annotation", "mode",
                                "sentiment"]
    assert df["mode"].unique().tolist() == ["valid"]  # dev -> valid
    assert df["video_id"].tolist() == ["dia0", "dia0", "dia3"]
    assert df["clip_id"].tolist() == ["0", "1", "2"]
    assert df["text"].tolist() == ["You’re a genius!", "You’re late", "Oh."]
    assert df["label"].tolist() == [3, 0, 4]
    assert df["annotation"].tolist() == ["joy", "anger", "neutral"]


def test_meld_errors(tmp_path: Path) -> None:
    path = write_csv(tmp_path, [meld_row(0, "Hi", "happy")], MELD_HEADER, "train_sent_emo.csv")
    with pytest.raises(DataFormatError, match=r"emotion outside.*line 2 \(dia0/0\)"):
        read_meld_csv(path)
    path = write_csv(tmp_path, ["1,Hi,Joey,joy,positive"],
                     "Sr No.,Utterance,Speaker,Emotion,Sentiment\n", "test_sent_emo.csv")
    with pytest.raises(DataFormatError, match=r"missing column.*'Dialogue_ID', 'Utterance_ID'"):
        read_meld_csv(path)
    odd = write_csv(tmp_path, [meld_row(0, "Hi")], MELD_HEADER, "meld.csv")
    with pytest.raises(ValueError, match="cannot tell the split"):
        read_meld_csv(odd)
    assert read_meld_csv(odd, split="test")["mode"].iloc[0] == "test"


@pytest.mark.parametrize(
    ("broken", "fixed"),
    [
        ("Youâ€™re", "You’re"),
        ("â€œHiâ€\x9d", "“Hi”"),
        ("caf\u00c3\u00a9", "café"),
        ("You\x92re", "You’re"),
        ("café naïve You’re — “ok”…", "café naïve You’re — “ok”…"),  # already right: unchanged
        ("plain ascii", "plain ascii"),
    ],
)
def test_fix_mojibake(broken: str, fixed: str) -> None:
    assert fix_mojibake(broken) == fixed


def test_load_meld_dir_missing_file(tmp_path: Path) -> None:
    write_csv(tmp_path, [meld_row(0, "Hi")], MELD_HEADER, "train_sent_emo.csv")
    with pytest.raises(FileNotFoundError, match="dev_sent_emo.csv"):
        load_meld_dir(tmp_path)


# --------------------------------------------------------------------------- shared data
def test_shared_data_dir_honours_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "mosi").mkdir()
    (tmp_path / "mosi" / "label.csv").write_text("x")
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    assert shared_data_dir() == tmp_path.resolve()
    assert shared_data_file("mosi", "label.csv") == tmp_path.resolve() / "mosi" / "label.csv"
    assert shared_data_file("mosi", "absent.csv") is None
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "nowhere"))
    assert shared_data_dir() is None
    assert "shared data not found" in missing_reason("mosi", "label.csv")


# --------------------------------------------------------------------------- real files
def test_real_mosi_label_csv() -> None:
    df = read_label_csv(shared("mosi", "label.csv"))
    assert len(df) == 2199
    assert {k: len(v) for k, v in label_csv_splits(df).items()} == {
        "train": 1284, "valid": 229, "test": 686}
    first = df[(df["video_id"] == "03bSnISJMiM") & (df["clip_id"] == "1")].iloc[0]
    assert first["label"] == pytest.approx(2.4) and first["start"] == pytest.approx(51.905)


def test_real_label_csv_agrees_with_the_sdk_labels() -> None:
    df = read_label_csv(shared("mosi", "label.csv"))
    labels = read_csd(shared("mosi", "CMU_MOSI_Opinion_Labels.csd"))
    sdk = pd.DataFrame(
        [(vid, str(i + 1), float(f[i, 0]), float(t[i, 0]))
         for vid, (f, t) in labels.data.items() for i in range(len(f))],
        columns=["video_id", "clip_id", "sdk_label", "sdk_start"],
    )
    merged = df.astype({"video_id": object, "clip_id": object}).merge(sdk, on=["video_id", "clip_id"])
    assert len(merged) == 2199
    np.testing.assert_allclose(merged["label"], merged["sdk_label"], atol=1e-4)
    np.testing.assert_allclose(merged["start"], merged["sdk_start"], atol=2e-3)


def test_real_meld() -> None:
    shared("meld", "train_sent_emo.csv")
    df = load_meld_dir(shared("meld", "dev_sent_emo.csv").parent)
    assert df.groupby("mode").size().to_dict() == {"train": 9989, "valid": 1109, "test": 2610}
    assert (df["annotation"] == df["label"].map(MELD_EMOTIONS.__getitem__)).all()
    assert not df["text"].str.contains("â€").any()
    assert df["label"].between(0, 6).all()
