"""Label tables: MMSA-FET's label.csv and MELD's *_sent_emo.csv in the same column layout.

label.csv (one row per clip; the media lie at Raw/<video_id>/<clip_id>.mp4):
    video_id, clip_id, text, label, mode [, annotation] [, start, end] [, any other column]
Files without 'annotation' (MOSEI's among them) get it from the label's sign, as MMSA derives
it; 'mode' may name the validation split valid, val, validation or dev.
For a classification dataset (`labels='classification'`) 'label' holds class ids 0..C-1, or
a 'class' (or 'emotion') column holds class names (ids then follow the names' sorted order when
'label' is empty, or 'label' gives them, one name per id); see `read_label_csv`.
MELD rows are mapped onto it: video_id 'dia<Dialogue_ID>', clip_id Utterance_ID, text Utterance,
label the emotion id in MELD_EMOTIONS order, annotation the emotion name, mode train/valid/test
(MELD's 'dev' is 'valid'), plus MELD's 3-class 'sentiment'. MELD restarts dialogue numbers in
every split, so (video_id, clip_id) is unique only within one mode.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from emofuse.data.dataset import SPLITS, DataFormatError, DatasetSplits, MultimodalDataset
from emofuse.data.labels import check_class_ids, check_label_kind, check_score_range
from emofuse.data.sources import SourceRequest, register_source, word_embedder
from emofuse.errors import InputNotFound, OptionError

LABEL_COLUMNS: tuple[str, ...] = ("video_id", "clip_id", "text", "label", "annotation", "mode")
REQUIRED_COLUMNS: tuple[str, ...] = ("video_id", "clip_id", "text", "label", "mode")
OPTIONAL_COLUMNS: tuple[str, ...] = ("start", "end")
# a column of class names makes a classification table (MMSA-style emotion datasets)
CLASS_COLUMNS: tuple[str, ...] = ("class", "emotion")
# MMSA's annotation names, by the sign of the sentiment score
SIGN_ANNOTATIONS: dict[int, str] = {-1: "Negative", 0: "Neutral", 1: "Positive"}
# how label.csv files name their splits (compared lower-cased), here and in `table_to_splits`
MODE_ALIASES: dict[str, str] = {
    "train": "train", "valid": "valid", "val": "valid", "validation": "valid", "dev": "valid", "test": "test",
}
MELD_EMOTIONS: list[str] = ["anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise"]
MELD_SENTIMENTS: list[str] = ["negative", "neutral", "positive"]
MELD_COLUMNS: tuple[str, ...] = ("Utterance", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID")
MELD_FILES = {"train": "train_sent_emo.csv", "valid": "dev_sent_emo.csv", "test": "test_sent_emo.csv"}
_MELD_SPLIT_PREFIX = {"train": "train", "dev": "valid", "valid": "valid", "test": "test"}
MAX_REPORTED = 5


# --------------------------------------------------------------------------- shared helpers
def _read_table(path: Path) -> pd.DataFrame:
    """Every column as text: ids like '0012' and transcripts like 'NA' must survive as written."""
    if path.is_dir():
        raise DataFormatError(f"{path} is a folder; expected a label csv file")
    if not path.is_file():
        raise InputNotFound(path, f"label file {path} does not exist")
    try:
        # utf-8-sig also strips a byte-order mark that spreadsheet programs like to add.
        return pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataFormatError(f"file {path} is not a readable UTF-8 csv: {exc}") from exc


def _require_columns(df: pd.DataFrame, required: Iterable[str], path: Path) -> None:
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataFormatError(
            f"{path}: missing column(s) {missing}; found columns {list(df.columns)}"
        )


def _row_name(df: pd.DataFrame, i: int) -> str:
    """'line 5 (video/clip)': the file's line (the header is line 1) and its clip."""
    return f"line {i + 2} ({df.at[i, 'video_id']}/{df.at[i, 'clip_id']})"


def _describe_rows(df: pd.DataFrame, bad: pd.Series | np.ndarray, what: str, path: Path) -> str:
    """'N rows <what>: line 5 (video/clip), ...' listing at most MAX_REPORTED rows."""
    rows = df.index[np.asarray(bad, dtype=bool)]
    shown = ", ".join(_row_name(df, i) for i in rows[:MAX_REPORTED])
    more = f" and {len(rows) - MAX_REPORTED} more" if len(rows) > MAX_REPORTED else ""
    return f"{path}: {len(rows)} row(s) {what}: {shown}{more}"


def _check(df: pd.DataFrame, bad: pd.Series | np.ndarray, what: str, path: Path) -> None:
    if bad.any():
        raise DataFormatError(_describe_rows(df, bad, what, path))


def _numeric(df: pd.DataFrame, column: str, path: Path) -> pd.Series:
    values = pd.to_numeric(df[column].str.strip(), errors="coerce")
    _check(df, ~np.isfinite(values.to_numpy(dtype=np.float64)),
           f"with a missing, non-numeric or infinite {column!r}", path)
    return values.astype(np.float64)


# --------------------------------------------------------------------------- label.csv
def label_task(df: pd.DataFrame, labels: str = "auto") -> str:
    """'classification' or 'regression' for a label table: `labels` itself unless 'auto', which
    means classification when a class-name column (CLASS_COLUMNS) is present."""
    check_label_kind(labels)
    if labels != "auto":
        return labels
    return "classification" if any(c in df.columns for c in CLASS_COLUMNS) else "regression"


def read_label_csv(path: str | os.PathLike[str], clip_labels: bool = False,
                   labels: str = "regression", *, allow_empty_text: bool = False) -> pd.DataFrame:
    """Read and validate an MMSA-FET label.csv (a folder holding one is accepted too).

    Checks: required columns present (extra columns are kept); mode is train/valid/test or an
    alias (dev, val, validation; any case), stored as train/valid/test; text not empty;
    start/end (when present) numeric with end >= start; (video_id, clip_id) unique.
    labels='regression' (the default, MMSA-FET's sentiment scores): label numeric, finite and
    within [-3, 3] (with clip_labels=True clipped with a warning instead); a missing
    'annotation' column is derived from the label's sign (Negative / Neutral / Positive).
    labels='classification': label holds class ids 0..C-1, or a 'class'/'emotion' column holds
    class names; with names and an empty 'label' column (or none), ids follow the names' sorted
    order; with both, every id must carry one name. A missing 'annotation' becomes the class
    name (or the id), which is how MMSA pickles keep class names ('annotations').
    labels='auto': classification when a 'class'/'emotion' column is present, else regression.
    allow_empty_text: keep rows whose text is empty or blank (their text becomes ''), for callers
    that take the words from the audio (`extract --asr`, `--words auto` without a transcript);
    the default refuses them, because text features computed from label.csv need the text.
    Errors list up to 5 offending rows as 'line N (video_id/clip_id)'.
    Returns ids/text/annotation/mode as str, label as float64 (int64 for classification) and
    start/end as float64.
    """
    path = Path(path)
    if path.is_dir() and (path / "label.csv").is_file():
        path = path / "label.csv"
    df = _read_table(path)
    task = label_task(df, labels)
    has_names = any(c in df.columns for c in CLASS_COLUMNS)
    required = [c for c in REQUIRED_COLUMNS if not (c == "label" and task == "classification" and has_names)]
    _require_columns(df, required, path)
    for column in ("video_id", "clip_id", "mode"):
        df[column] = df[column].str.strip()
    modes = df["mode"].str.lower().map(MODE_ALIASES)
    _check(df, modes.isna(),
           f"with a mode other than {list(SPLITS)} (or dev/val/validation for valid)", path)
    df["mode"] = modes
    if task == "classification":
        _class_labels(df, path)
    else:
        df["label"] = _numeric(df, "label", path)
        df["label"] = check_score_range(
            df["label"].to_numpy(), str(path), lambda i: f"{_row_name(df, i)} in split {df.at[i, 'mode']}",
            clip_labels,
        )
    if "annotation" not in df.columns:
        signs = np.sign(df["label"].to_numpy()).astype(int)
        df.insert(df.columns.get_loc("label") + 1, "annotation", [SIGN_ANNOTATIONS[v] for v in signs])
    blank = df["text"].str.strip() == ""
    if allow_empty_text:
        # '' rather than the blanks as written: a caller tests `if text` to choose recognition
        df.loc[blank, "text"] = ""
    else:
        _check(df, blank, "with empty text", path)
    if all(c in df.columns for c in OPTIONAL_COLUMNS):
        for column in OPTIONAL_COLUMNS:
            df[column] = _numeric(df, column, path)
        _check(df, df["end"] < df["start"], "whose end lies before start", path)
    _check(df, df.duplicated(["video_id", "clip_id"], keep="first"),
           "repeating a (video_id, clip_id) pair", path)
    return df


def _class_labels(df: pd.DataFrame, path: Path) -> None:
    """Classification labels in place: 'label' becomes int64 class ids, 'annotation' the names."""
    name_column = next((c for c in CLASS_COLUMNS if c in df.columns), None)
    names = None
    if name_column is not None:
        names = df[name_column].str.strip()
        _check(df, names == "", f"with an empty {name_column!r}", path)
    if names is not None and ("label" not in df.columns or (df["label"].str.strip() == "").all()):
        order = sorted(names.unique())  # sorted: the same ids whatever the row order or sharding
        ids = names.map({n: i for i, n in enumerate(order)}).to_numpy(np.int64)
        if "label" in df.columns:
            df["label"] = ids
        else:
            df.insert(df.columns.get_loc("text") + 1, "label", ids)
    else:
        values = _numeric(df, "label", path).to_numpy()
        _check(df, (values != np.round(values)) | (values < 0),
               "with a class label that is not a whole number >= 0 (classification labels are class ids "
               "0..C-1; give a 'class' column of names instead, or --labels regression for scores)", path)
        df["label"] = values.astype(np.int64)
        if names is not None:
            per_id = names.groupby(df["label"]).nunique()
            bad = df["label"].isin(per_id.index[per_id > 1])
            _check(df, bad, f"whose class id carries more than one {name_column!r} name", path)
    if names is not None and "annotation" not in df.columns:
        df.insert(df.columns.get_loc("label") + 1, "annotation", names.to_numpy())
    elif "annotation" not in df.columns:
        df.insert(df.columns.get_loc("label") + 1, "annotation", df["label"].astype(str))
    check_class_ids([df["label"].to_numpy()], [str(path)], [lambda i: _row_name(df, i)])


def label_csv_splits(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """{'train': rows, 'valid': rows, 'test': rows} by the 'mode' column, index reset."""
    if "mode" not in df.columns:
        raise DataFormatError(f"label table has no 'mode' column; found {list(df.columns)}")
    return {split: df[df["mode"] == split].reset_index(drop=True) for split in SPLITS}


# --------------------------------------------------------------------------- MELD
def _cp1252_chars(first: int, last: int) -> str:
    """The characters bytes first..last become when UTF-8 text is misread as cp1252/latin-1."""
    chars = []
    for b in range(first, last + 1):
        try:
            chars.append(bytes([b]).decode("cp1252"))
        except UnicodeDecodeError:  # 0x81, 0x8d, ... are undefined in cp1252; latin-1 keeps them
            chars.append(chr(b))
    return re.escape("".join(chars))


_CONT = f"[{_cp1252_chars(0x80, 0xBF)}]"
# A UTF-8 lead byte misread as one character, followed by exactly its continuation bytes.
_MOJIBAKE = re.compile(
    f"[\u00c2-\u00df]{_CONT}|[\u00e0-\u00ef]{_CONT}{{2}}|[\u00f0-\u00f4]{_CONT}{{3}}"
)
_C1_CONTROLS = re.compile("[\u0080-\u009f]")


def _misread_byte(char: str) -> int:
    """The byte a misreading turned into `char` (cp1252, or latin-1 for cp1252's gaps)."""
    try:
        return char.encode("cp1252")[0]
    except UnicodeEncodeError:
        return ord(char)


def _unmangle(match: re.Match[str]) -> str:
    run = match.group()
    try:
        return bytes(_misread_byte(c) for c in run).decode("utf-8")
    except (UnicodeDecodeError, ValueError):
        return run


def _c1_to_cp1252(match: re.Match[str]) -> str:
    try:
        return bytes([ord(match.group())]).decode("cp1252")
    except UnicodeDecodeError:
        return match.group()


def fix_mojibake(text: str) -> str:
    """Repair UTF-8 text that went through a cp1252/latin-1 misreading ('â€™' -> '’').

    Some MELD copies carry such sequences, or bare C1 controls ('\\x92' for '’'). Only runs that
    decode as valid UTF-8 are changed, so correct accented text is left alone.
    """
    text = _MOJIBAKE.sub(_unmangle, text)
    return _C1_CONTROLS.sub(_c1_to_cp1252, text)


def _meld_split(path: Path, split: str | None) -> str:
    if split is not None:
        if split not in _MELD_SPLIT_PREFIX:
            raise OptionError(f"split must be one of train/dev/valid/test, not {split!r}")
        return _MELD_SPLIT_PREFIX[split]
    prefix = path.name.split("_", 1)[0].lower()
    if prefix not in _MELD_SPLIT_PREFIX:
        raise DataFormatError(
            f"cannot tell the split of {path.name!r} (expected train_/dev_/test_ prefix); pass split="
        )
    return _MELD_SPLIT_PREFIX[prefix]


def read_meld_csv(path: str | os.PathLike[str], split: str | None = None) -> pd.DataFrame:
    """Read one MELD csv into the label.csv layout (plus 'sentiment').

    split: 'train', 'dev'/'valid' or 'test'; by default taken from the file name prefix.
    """
    path = Path(path)
    mode = _meld_split(path, split)
    raw = _read_table(path)
    _require_columns(raw, MELD_COLUMNS, path)
    df = pd.DataFrame(
        {
            "video_id": "dia" + raw["Dialogue_ID"].str.strip(),
            "clip_id": raw["Utterance_ID"].str.strip(),
            "text": raw["Utterance"].map(fix_mojibake),
            "annotation": raw["Emotion"].str.strip().str.lower(),
            "mode": mode,
            "sentiment": raw["Sentiment"].str.strip().str.lower(),
        }
    )
    _check(df, ~raw["Dialogue_ID"].str.strip().str.isdigit() | ~df["clip_id"].str.isdigit(),
           "with a non-integer Dialogue_ID or Utterance_ID", path)
    _check(df, ~df["annotation"].isin(MELD_EMOTIONS), f"with an emotion outside {MELD_EMOTIONS}",
           path)
    _check(df, ~df["sentiment"].isin(MELD_SENTIMENTS),
           f"with a sentiment outside {MELD_SENTIMENTS}", path)
    _check(df, df["text"].str.strip() == "", "with empty text", path)
    _check(df, df.duplicated(["video_id", "clip_id"]), "repeating a (Dialogue_ID, Utterance_ID)",
           path)
    df.insert(3, "label", df["annotation"].map(MELD_EMOTIONS.index).astype(np.int64))
    return df


def load_meld_dir(folder: str | os.PathLike[str]) -> pd.DataFrame:
    """train/dev/test_sent_emo.csv of one folder, concatenated (train, valid, test order)."""
    folder = Path(folder)
    frames = [read_meld_csv(folder / name, split) for split, name in MELD_FILES.items()]
    return pd.concat(frames, ignore_index=True)


# --------------------------------------------------------------------------- tables as datasets
def table_to_splits(
    df: pd.DataFrame,
    max_words: int,
    embed: Callable[[Sequence[str]], tuple[np.ndarray, np.ndarray]] | None,
    *,
    class_names: Sequence[str] | None = None,
    source: str = "<memory>",
    name: str = "dataset",
) -> DatasetSplits:
    """A label.csv-shaped DataFrame as text-only `DatasetSplits`, its texts through `embed`.

    df: columns video_id, clip_id, text, label, mode (annotation optional, kept as the
        'annotations' extra). mode is train/valid/test ('dev', 'val', 'validation' mean valid).
    embed: texts -> (N x max_words x D features, N word counts), called once for all rows (one
        cache entry per dataset) after the table is checked; None keeps the raw text only, with a
        one-dimensional zero placeholder of the right word counts (for an in-model text encoder).
    Integer-typed labels mean classification: labels become int64 and `class_names` (label-id
    order) is stored; otherwise labels are float32 regression targets. Rows are split in order.
    """
    required = ["video_id", "clip_id", "text", "label", "mode"]
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataFormatError(f"{source}: missing columns {missing}; found {list(df.columns)}")
    modes = [MODE_ALIASES.get(str(m).strip().lower()) for m in df["mode"]]
    unknown = sorted({str(m) for m, c in zip(df["mode"], modes, strict=True) if c is None})
    if unknown:
        raise DataFormatError(f"{source}: unknown mode values {unknown}; use train, valid, test")
    texts = list(df["text"])
    for vid, cid, text in zip(df["video_id"], df["clip_id"], texts, strict=True):
        if not isinstance(text, str) or not text.strip():
            raise DataFormatError(f"{source}: clip {vid}$_${cid} has an empty text")

    classification = pd.api.types.is_integer_dtype(df["label"])
    try:
        labels = df["label"].to_numpy(dtype=np.int64 if classification else np.float32)
    except (TypeError, ValueError) as exc:
        raise DataFormatError(f"{source}: labels are not numeric ({exc})") from exc

    if embed is None:
        lengths = np.minimum([len(t.split()) for t in texts], max_words).astype(np.int64)
        features = np.zeros((len(texts), max_words, 1), dtype=np.float32)
    else:
        features, lengths = embed(texts)

    ids = [f"{v}$_${c}" for v, c in zip(df["video_id"], df["clip_id"], strict=True)]
    annotations = (
        np.array([str(a) for a in df["annotation"]], dtype=object) if "annotation" in df else None
    )
    mode_array = np.array(modes, dtype=object)
    datasets = {}
    for split in SPLITS:
        idx = np.flatnonzero(mode_array == split)
        if len(idx) == 0:
            raise DataFormatError(f"{source}: split {split!r} holds no rows")
        datasets[split] = MultimodalDataset(
            features={"text": torch.from_numpy(np.ascontiguousarray(features[idx]))},
            lengths={"text": torch.from_numpy(lengths[idx])},
            labels=torch.from_numpy(labels[idx]),
            ids=[ids[i] for i in idx],
            raw_text=[texts[i] for i in idx],
            source=source,
            extras={} if annotations is None else {"annotations": annotations[idx]},
        )
    return DatasetSplits(
        datasets["train"],
        datasets["valid"],
        datasets["test"],
        name=name,
        class_names=list(class_names) if (classification and class_names) else [],
    )


def _is_label_csv(path: Path) -> bool:
    if path.is_dir():
        return (path / "label.csv").is_file()
    return path.suffix == ".csv" and not path.name.endswith("_sent_emo.csv")


def _is_meld(path: Path) -> bool:
    return (path / MELD_FILES["train"]).is_file() if path.is_dir() else path.name.endswith("_sent_emo.csv")


@register_source("label.csv", matches=_is_label_csv, order=10)
def _label_csv_source(request: SourceRequest) -> DatasetSplits:
    """MMSA-FET's label.csv (or its folder): its text as word features (`TextOptions`)."""
    assert request.path is not None
    path = request.path / "label.csv" if request.path.is_dir() else request.path
    df = read_label_csv(path, clip_labels=request.clip_labels)
    name = path.resolve().parent.name or "dataset"
    embed = word_embedder(request.text, str(path))
    return table_to_splits(df, request.text.max_words, embed, source=str(path), name=name)


@register_source("meld", matches=_is_meld, order=20)
def _meld_source(request: SourceRequest) -> DatasetSplits:
    """MELD's train/dev/test_sent_emo.csv (their folder or one of them): 7-class emotion from text."""
    assert request.path is not None
    folder = request.path if request.path.is_dir() else request.path.parent
    df = load_meld_dir(folder)
    embed = word_embedder(request.text, str(folder))
    return table_to_splits(df, request.text.max_words, embed, class_names=MELD_EMOTIONS, source=str(folder),
                           name="meld")
