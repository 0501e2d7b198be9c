"""One entry point from a user's `--data` argument to a `DatasetSplits`.

Accepted sources:
    synthetic | synthetic-unaligned | synthetic-classes   the embedded synthetic dataset
    PATH.pkl                        an MMSA pickle (aligned or unaligned)
    PATH/label.csv or its folder    MMSA-FET layout: text embedded word by word (cached)
    MELD folder or *_sent_emo.csv   MELD's train/dev/test csvs: 7-class emotion, text
    folder of .csd files            CMU-SDK computational sequences (words, text/audio/vision
                                    features, labels) + standard_folds.json, aligned to words
    synthetic-raw                   generated raw clips (face crops + log-mel per word), planted visual cue
    synthetic-clips                 generated talking-face mp4 files with planted cues, through
                                    `emofuse extract --raw` (both cached): the paper's system from video
    RAVDESS folder (Actor_NN/*.wav) 8 emotions from speech, raw log-mel per 0.5 s window, split by actor
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from emofuse.data.dataset import DataFormatError, DatasetSplits, MultimodalDataset
from emofuse.data.labels import check_label_kind
from emofuse.data.ravdess import is_ravdess_dir

SYNTHETIC_SOURCES = ("synthetic", "synthetic-unaligned", "synthetic-classes", "synthetic-raw", "synthetic-clips")


@dataclass
class TextOptions:
    """How raw text becomes word features for text-only sources (label.csv, MELD)."""

    model: str | None = "minilm"  # None: no features, raw text for an in-model text encoder
    max_words: int = 50


def load_splits(
    source: str,
    text: TextOptions | None = None,
    classes: int = 0,
    labels: str = "auto",
    clip_labels: bool = False,
    data_options: dict[str, Any] | None = None,
) -> DatasetSplits:
    """Load `source`; with classes > 0, sentiment scores become that many classes.

    labels: 'auto' reads the source's own labels (sentiment scores from pickles, label.csv and
        .csd; classes from MELD and synthetic-classes); 'regression' insists on scores;
        'classification' reads the source's class labels (an MMSA pickle's
        'classification_labels'). A source without the asked kind raises DataFormatError.
    clip_labels: sentiment scores outside [-3, 3] are refused, naming file, split and rows;
        with True they are clipped to the range with a warning.
    data_options: the config of a source that is computed rather than read: synthetic-raw
        (SyntheticRawConfig) and a RAVDESS folder (RavdessConfig, e.g. n_mels=80, n_fft=400 for
        Whisper's input). Any other source refuses them.
    """
    check_label_kind(labels)
    if classes and labels == "classification":
        raise ValueError(
            "classes turns sentiment scores into classes; it cannot be combined with "
            "labels='classification' (the source's own class labels)"
        )
    splits = _load(source, text or TextOptions(), labels, clip_labels, dict(data_options or {}))
    if labels == "regression" and splits.task != "regression":
        raise DataFormatError(f"{source}: holds class labels, not sentiment scores")
    if labels == "classification" and splits.task != "classification":
        raise DataFormatError(
            f"{source}: holds sentiment scores and no class labels; use classes=2, 3, 5 or 7 "
            "(--classes) to turn the scores into classes"
        )
    return regression_to_classes(splits, classes) if classes else splits


def _load(
    source: str, text: TextOptions, labels: str = "auto", clip_labels: bool = False, options: dict[str, Any] | None = None
) -> DatasetSplits:
    options = options or {}
    if source == "synthetic-clips":
        from emofuse.features.synthetic_clips_source import load_synthetic_clips

        return load_synthetic_clips(options)
    if source == "synthetic-raw":
        from emofuse.data.synthetic_raw import SyntheticRawConfig, make_synthetic_raw

        return make_synthetic_raw(_data_config(SyntheticRawConfig, options, source))
    if source in SYNTHETIC_SOURCES:
        from emofuse.data.synthetic import SyntheticConfig, make_synthetic

        # the source's name fixes the layout and the task; the options size the set (e.g. n_train=8000)
        fixed = {"aligned": source != "synthetic-unaligned", "classes": 3 if source == "synthetic-classes" else 0}
        clash = sorted(set(options) & set(fixed))
        if clash:
            raise DataFormatError(f"{source}: {', '.join(clash)} is set by the source's name, not by a data option")
        return make_synthetic(_data_config(SyntheticConfig, {**options, **fixed}, source))
    if options and not (Path(source).expanduser().is_dir() and is_ravdess_dir(Path(source).expanduser())):
        raise DataFormatError(
            f"{source}: data options ({', '.join(options)}) apply to the synthetic sources and RAVDESS folders only"
        )
    path = Path(source).expanduser()
    if not path.exists():
        raise DataFormatError(
            f"{source}: no such file or folder (expected an MMSA .pkl, a label.csv or its folder, "
            f"a MELD folder, or one of {', '.join(SYNTHETIC_SOURCES)})"
        )
    if path.is_dir():
        if (path / "label.csv").is_file():
            path = path / "label.csv"
        elif (path / "train_sent_emo.csv").is_file():
            return _meld(path, text)
        elif is_ravdess_dir(path):
            from emofuse.data.ravdess import RavdessConfig, load_ravdess

            return load_ravdess(path, _data_config(RavdessConfig, options, source))
        elif any(path.glob("*.csd")):
            from emofuse.data.csd import load_csd_folder

            return load_csd_folder(path, text.max_words, clip_labels=clip_labels)
        else:
            raise DataFormatError(
                f"{path}: folder holds neither label.csv, MELD's train_sent_emo.csv nor .csd files"
            )
    if path.suffix in (".pkl", ".pickle"):
        from emofuse.data.mmsa import CLASSIFICATION_KEY, REGRESSION_KEY, load_mmsa_pickle

        key = CLASSIFICATION_KEY if labels == "classification" else REGRESSION_KEY
        return load_mmsa_pickle(path, label_key=key, clip_labels=clip_labels)
    if path.name.endswith("_sent_emo.csv"):
        return _meld(path.parent, text)
    if path.suffix == ".csv":
        from emofuse.data.label_csv import read_label_csv
        from emofuse.features.text import texts_to_splits

        # read here rather than through label_csv_to_splits, which has no clip_labels switch
        df = read_label_csv(path, clip_labels=clip_labels)
        name = path.resolve().parent.name or "dataset"
        return texts_to_splits(df, text.model, text.max_words, source=str(path), name=name)
    if path.suffix == ".csd":
        raise DataFormatError(
            f"{path}: give the folder holding the computational sequences (text, audio, vision and "
            "labels .csd, standard_folds.json), not one .csd file"
        )
    raise DataFormatError(f"{path}: unsupported file type {path.suffix!r} (use .pkl or label.csv)")


def _data_config(config_cls: type, options: dict[str, Any], source: str) -> Any:
    """A generator's or loader's typed config from --data-option values, unknown keys named."""
    known = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise DataFormatError(f"{source}: unknown data option(s) {unknown}; known: {sorted(known)}")
    try:
        return config_cls(**options)
    except (TypeError, ValueError) as err:
        raise DataFormatError(f"{source}: bad data option: {err}") from None


def _meld(folder: Path, text: TextOptions) -> DatasetSplits:
    from emofuse.data.label_csv import MELD_EMOTIONS, load_meld_dir
    from emofuse.features.text import texts_to_splits

    df = load_meld_dir(folder)
    return texts_to_splits(
        df, text.model, text.max_words, class_names=MELD_EMOTIONS, source=str(folder), name="meld"
    )


def regression_to_classes(splits: DatasetSplits, num_classes: int) -> DatasetSplits:
    """Turn sentiment scores into classes the way the MOSI metrics do.

    2: negative (< 0) / non-negative (>= 0), the has0 convention; 3: round(clip(y, -1, 1));
    5: round(clip(y, -2, 2)); 7: round(clip(y, -3, 3)) (numpy's round-half-even, as MMSA).
    """
    if splits.task != "regression":
        raise DataFormatError(f"{splits.name}: labels are already classes")
    if num_classes == 2:
        names = ["negative", "non-negative"]

        def convert(y: torch.Tensor) -> torch.Tensor:
            return (y >= 0).long()
    elif num_classes in (3, 5, 7):
        half = num_classes // 2
        names = [f"{v:+d}" for v in range(-half, half + 1)]

        def convert(y: torch.Tensor) -> torch.Tensor:
            return (torch.round(y.clamp(-half, half)) + half).long()  # torch.round is half-even
    else:
        raise ValueError(f"classes must be 2, 3, 5 or 7 for sentiment scores, not {num_classes}")

    def one(d: MultimodalDataset) -> MultimodalDataset:
        return MultimodalDataset(d.features, d.lengths, convert(d.labels), d.ids, d.raw_text, d.source, d.extras)

    return DatasetSplits(*(one(d) for _, d in splits.items()), name=splits.name, class_names=names,
                         frontend=splits.frontend)


def fit_lengths(data: MultimodalDataset, max_lengths: dict[str, int]) -> MultimodalDataset:
    """Pad or truncate each modality to a model's padded lengths (cross-dataset evaluation)."""
    feats, lengths = {}, {}
    for m, x in data.features.items():
        target = max_lengths.get(m, x.shape[1])
        if x.shape[1] >= target:
            feats[m] = x[:, :target]
        else:
            feats[m] = torch.nn.functional.pad(x, (0, 0, 0, target - x.shape[1]))
        lengths[m] = data.lengths[m].clamp(max=target)
    return MultimodalDataset(feats, lengths, data.labels, data.ids, data.raw_text, data.source, data.extras)
