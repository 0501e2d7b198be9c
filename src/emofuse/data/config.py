"""The data settings of a run: which source, how its labels and its raw text are read."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from emofuse.configs import option, parse_key_value

LABEL_KINDS = ("auto", "regression", "classification")
CLASS_COUNTS = (0, 2, 3, 5, 7)


@dataclass
class DataConfig:
    """The data a run trains on, and how it is read."""

    data: str = option(
        "synthetic",
        "synthetic[-unaligned|-classes|-raw|-clips], an MMSA .pkl, a .csd folder, a "
        "label.csv (or its folder), a MELD folder or a RAVDESS folder",
    )
    # the config of a computed source: synthetic-raw (SyntheticRawConfig), RAVDESS (RavdessConfig)
    data_options: dict[str, Any] = option(
        default_factory=dict,
        flag="--data-option",
        short="-D",
        metavar="KEY=VALUE",
        parse=parse_key_value,
        help="config of a computed source: a synthetic source (e.g. n_train=8000) or a RAVDESS folder "
        "(e.g. -D "
        "n_mels=80 -D n_fft=400, Whisper's input for --audio-encoder whisper_base); repeatable",
    )
    labels: str = option(
        "auto",
        "the source's own labels (auto), sentiment scores, or the class labels a source "
        "names (an MMSA pickle's classification_labels)",
        choices=LABEL_KINDS,
    )
    clip_labels: bool = option(
        False, "clip sentiment scores outside [-3, 3] with a warning (default: refuse the file)"
    )
    classes: int = option(
        0,
        "train a classifier on sentiment scores binned into this many classes (0: regression)",
        choices=CLASS_COUNTS,
    )
    text_model: str = option(
        "minilm",
        "word features for raw text (label.csv, MELD): minilm, mpnet, a HF model name or a local folder",
    )
    max_words: int = option(50, "words kept per clip when text is embedded")

    def data_problems(self) -> list[str]:
        """The fields whose values are not allowed (checked by TrainConfig)."""
        checks = {"labels": self.labels in LABEL_KINDS, "classes": self.classes in CLASS_COUNTS,
                  "max_words": self.max_words >= 1}
        return [name for name, ok in checks.items() if not ok]
