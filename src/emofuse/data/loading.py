"""One entry point from a user's `--data` argument to a `DatasetSplits`.

Each source registers itself where it is implemented (`emofuse.data.sources`); the ones that need
the features layer (synthetic-clips, and word features for label.csv and MELD text) register from
`emofuse.features.sources`, which the commands import. Accepted sources:
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

from pathlib import Path
from typing import Any

import torch

from emofuse.data.dataset import DataFormatError, DatasetSplits, MultimodalDataset
from emofuse.data.labels import check_label_kind
from emofuse.data.sources import SourceRequest, TextOptions, register_source, resolve_source
from emofuse.errors import OptionError
from emofuse.metrics.regression import sentiment_class_names, sentiment_classes

__all__ = ["SYNTHETIC_SOURCES", "TextOptions", "fit_lengths", "load_splits", "regression_to_classes"]

SYNTHETIC_SOURCES = (
    "synthetic",
    "synthetic-unaligned",
    "synthetic-classes",
    "synthetic-raw",
    "synthetic-clips",
)


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
        raise OptionError(
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
    source: str,
    text: TextOptions,
    labels: str = "auto",
    clip_labels: bool = False,
    options: dict[str, Any] | None = None,
) -> DatasetSplits:
    """The registered source that reads `source` (`emofuse.data.sources`), loaded."""
    options = options or {}
    found = resolve_source(source)
    if options and not (found is not None and found.options):
        raise DataFormatError(
            f"{source}: data options ({', '.join(options)}) apply to the synthetic sources "
            "and RAVDESS folders only"
        )
    if found is None:
        raise _unreadable(source)
    path = None if found.matches is None else Path(source).expanduser()
    return found.load(SourceRequest(source, path, text, labels, clip_labels, options))


def _unreadable(source: str) -> DataFormatError:
    """Why no registered source reads `source`."""
    path = Path(source).expanduser()
    if not path.exists():
        return DataFormatError(
            f"{source}: no such file or folder (expected an MMSA .pkl, a label.csv or its folder, "
            f"a MELD folder, or one of {', '.join(SYNTHETIC_SOURCES)})"
        )
    if path.is_dir():
        return DataFormatError(
            f"{path}: folder holds neither label.csv, MELD's train_sent_emo.csv nor .csd files"
        )
    if path.suffix == ".csd":
        return DataFormatError(
            f"{path}: give the folder holding the computational sequences (text, audio, vision and "
            "labels .csd, standard_folds.json), not one .csd file"
        )
    return DataFormatError(f"{path}: unsupported file type {path.suffix!r} (use .pkl or label.csv)")


# registered here, beside the loader's other sources, because emofuse.data.csd is the format's reader only
@register_source("csd-folder", matches=lambda path: path.is_dir() and any(path.glob("*.csd")), order=40)
def _csd_folder(request: SourceRequest) -> DatasetSplits:
    from emofuse.data.csd import load_csd_folder

    assert request.path is not None
    return load_csd_folder(request.path, request.text.max_words, clip_labels=request.clip_labels)


def regression_to_classes(splits: DatasetSplits, num_classes: int) -> DatasetSplits:
    """Turn sentiment scores into classes the way the MOSI metrics do
    (`emofuse.metrics.regression.sentiment_classes`).

    2: negative (< 0) / non-negative (>= 0), the has0 convention; 3: round(clip(y, -1, 1));
    5: round(clip(y, -2, 2)); 7: round(clip(y, -3, 3)) (numpy's round-half-even, as MMSA).
    """
    if splits.task != "regression":
        raise DataFormatError(f"{splits.name}: labels are already classes")
    names = sentiment_class_names(num_classes)  # a ValueError for any count but 2, 3, 5 and 7

    def one(d: MultimodalDataset) -> MultimodalDataset:
        labels = torch.from_numpy(sentiment_classes(d.labels, num_classes))
        return MultimodalDataset(d.features, d.lengths, labels, d.ids, d.raw_text, d.source, d.extras)

    return DatasetSplits(one(splits.train), one(splits.valid), one(splits.test), name=splits.name,
                         class_names=names, frontend=splits.frontend)


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
