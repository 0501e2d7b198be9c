"""The clips `emofuse extract` works on: a dataset folder's label table, its fingerprint, the jobs.

An MMSA-FET folder holds label.csv (video_id, clip_id, text, label, annotation, mode) and the clips
at Raw/<video_id>/<clip_id>.mp4 (or another media extension). A RAVDESS folder
(Actor_NN/03-01-EE-II-SS-RR-AA.wav, no label.csv) is read in its own layout: the speech clips,
labelled with the 8 emotion classes from EE, split by actor (1-16 train, 17-20 valid, 21-24 test,
as `emofuse.data.ravdess` does), their text the known statement SS.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emofuse.data.dataset import DataFormatError
from emofuse.errors import InputNotFound, OptionError
from emofuse.features.clip import ExtractConfig
from emofuse.features.decode import MEDIA_SUFFIXES as MEDIA_EXTENSIONS
from emofuse.files import sha256_file, sha256_text


@dataclass
class ClipJob:
    clip_id: str  # 'video$_$clip', MMSA's id
    path: str
    transcript: str | None


@dataclass
class DatasetTable:
    """The clips of a dataset folder: one label.csv-shaped row each.

    source: the label.csv, or the RAVDESS folder the table was made from.
    media_root: clips lie at media_root/<video_id>/<clip_id>.<media extension>.
    fingerprint: sha256 of label.csv's bytes, or of the table made from a RAVDESS folder (shards
        of one dataset must agree on it).
    """

    source: Path
    media_root: Path
    df: Any  # pandas DataFrame: video_id, clip_id, text, label, annotation, mode
    fingerprint: str
    task: str  # 'regression' or 'classification'
    class_names: list[str] = field(default_factory=list)


def recognises_words(config: ExtractConfig) -> bool:
    """Whether a clip without a transcript still gets words (speech recognition, not only alignment)."""
    return config.words != "pocketsphinx"


def dataset_rows(
    dataset_dir: str | os.PathLike[str], labels: str = "auto", allow_empty_text: bool = False
) -> DatasetTable:
    """The folder's clips: <dir>/label.csv (or the label.csv given), or a RAVDESS folder's layout.

    labels: 'auto', 'regression' or 'classification', how label.csv's labels are read (see
    `emofuse.data.label_csv.read_label_csv`); RAVDESS's are always the 8 emotion classes.
    """
    from emofuse.data.label_csv import label_task, read_label_csv
    from emofuse.data.ravdess import ravdess_root

    path = Path(dataset_dir)
    label = path if path.is_file() else path / "label.csv"
    if not label.is_file():
        root = ravdess_root(path) if path.is_dir() else None
        if root is not None:
            if labels == "regression":
                raise OptionError(f"{path}: RAVDESS's labels are its 8 emotion classes; use --labels "
                                  "classification (or auto)")
            df, names = ravdess_table(root)
            return DatasetTable(root, root, df, sha256_text(df.to_csv(index=False)), "classification", names)
        if not path.exists():
            raise InputNotFound(path, f"dataset folder {path} does not exist")
        raise InputNotFound(label, f"{path} holds no label.csv (MMSA-FET layout: label.csv + "
                                   "Raw/<video_id>/<clip_id>.mp4) and is no RAVDESS folder (Actor_NN/*.wav)")
    # rows without text are fine where the words come from speech recognition
    df = read_label_csv(label, labels=labels, allow_empty_text=allow_empty_text)
    task = label_task(df, labels)
    names: list[str] = []
    if task == "classification":
        per_id = df.groupby("label")["annotation"].unique()
        if all(len(v) == 1 for v in per_id) and list(per_id.index) == list(range(len(per_id))):
            names = [str(v[0]) for v in per_id]
    return DatasetTable(label, label.parent / "Raw", df, sha256_file(label), task, names)


def ravdess_table(root: Path):  # -> (DataFrame, class names)
    """RAVDESS's speech clips as label.csv rows (song clips, vocal channel 02, are another task)."""
    import pandas as pd

    from emofuse.data.ravdess import ACTOR_SPLITS, EMOTIONS, STATEMENTS, parse_name

    rows = []
    for wav in sorted(root.glob("Actor_[0-9][0-9]/*.wav")):
        codes = parse_name(wav)  # a stray file name is a DataFormatError naming it
        if codes["channel"] != 1:
            continue
        split = next((s for s, actors in ACTOR_SPLITS.items() if codes["actor"] in actors), None)
        if split is None or codes["statement"] not in STATEMENTS:
            raise DataFormatError(f"{wav}: actor {codes['actor']:02d} / statement {codes['statement']:02d} "
                                  "is not one of RAVDESS's (actors 01-24, statements 01-02)")
        rows.append((wav.parent.name, wav.stem, STATEMENTS[codes["statement"]], codes["emotion"] - 1,
                     EMOTIONS[codes["emotion"] - 1], split))
    if not rows:
        raise DataFormatError(f"{root}: the Actor_NN folders hold no RAVDESS speech .wav files (03-01-*.wav)")
    df = pd.DataFrame(rows, columns=["video_id", "clip_id", "text", "label", "annotation", "mode"])
    df["label"] = df["label"].astype(np.int64)
    return df, list(EMOTIONS)


def clip_path(folder: Path, video_id: str, clip_id: str) -> Path:
    """<folder>/<video_id>/<clip_id>.mp4 (folder: label.csv's Raw/), or another media extension."""
    base = folder / video_id
    for ext in MEDIA_EXTENSIONS:
        candidate = base / f"{clip_id}{ext}"
        if candidate.is_file():
            return candidate
    return base / f"{clip_id}.mp4"


def clip_jobs(folder: Path, df, shard: tuple[int, int] | None) -> list[ClipJob]:  # df: DataFrame
    """One job per row of the table, in its order; with shard (i, n) only rows i, i+n, i+2n, ..."""
    jobs = []
    for row_index, row in enumerate(df.itertuples(index=False)):
        if shard is not None and row_index % shard[1] != shard[0]:
            continue
        vid, cid = str(row.video_id), str(row.clip_id)
        jobs.append(ClipJob(f"{vid}$_${cid}", str(clip_path(folder, vid, cid)), str(row.text)))
    return jobs
