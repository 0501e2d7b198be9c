"""Typed, serialisable training configuration, saved into every run folder."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emofuse.errors import UserError

LABEL_KINDS = ("auto", "regression", "classification")
AMP_KINDS = ("", "bf16")
ADAM_KINDS = ("default", "foreach", "fused")
# settings that change how fast a run goes, not what it computes (bf16 and fused Adam round
# differently): they may change on --resume, and a tuning trial does not search them
SPEED_FIELDS = ("compile", "amp", "adam", "eval_batch_size", "loader_workers", "data_on_device")

LR_SCHEDULES = ("constant", "cosine")


@dataclass
class TrainConfig:
    """Everything that determines a run. Defaults are sane for Adam on MOSI-sized data.

    The paper trains with lr 0.15 for 2000 epochs, which diverges with Adam; its values stay
    reachable (`--lr 0.15 --epochs 2000 --batch-size 64 --patience 0`) but are not the default.
    """

    model: str = "fusion_matched"
    modalities: str = "T+A+V"
    data: str = "synthetic"
    # the config of a computed source: synthetic-raw (SyntheticRawConfig), RAVDESS (RavdessConfig)
    data_options: dict[str, Any] = field(default_factory=dict)
    # how the data's labels are read: the source's own ("auto"), sentiment scores, or the classes a
    # source names (an MMSA pickle's classification_labels)
    labels: str = "auto"
    clip_labels: bool = False  # scores outside [-3, 3]: clip them with a warning instead of refusing
    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    grad_clip: float = 1.0  # max gradient norm; 0 disables
    # the model's own learning rate over the run: "constant", or "cosine" (linear warm-up over
    # --warmup of the steps, then a cosine decay to zero at the last of --epochs)
    lr_schedule: str = "constant"
    patience: int = 8  # epochs without a better validation loss before stopping; 0 = never
    # > 0: mixup's Beta(alpha, alpha) (emofuse.training.mixup): each training batch blended with a
    # shuffled copy of itself, inputs and loss alike; 0 = off
    mixup: float = 0.0
    seed: int = 1
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int = 0  # torch CPU threads; 0 leaves torch's default
    class_weights: bool = False  # classification: weight the loss by inverse class frequency
    classes: int = 0  # >0: turn sentiment scores into 2/3/5/7 classes and train a classifier
    text_model: str = "minilm"  # word features for raw-text sources (label.csv, MELD)
    max_words: int = 50
    # a text encoder inside the model ("" = use the data's pre-extracted text features)
    text_encoder: str = ""  # minilm | mpnet | a local folder | a cached HF model id
    text_finetune: str = "all"  # none | all | top:K
    text_lr: float = 5e-5  # the encoder's own learning rate (warm-up, then linear decay)
    warmup: float = 0.1  # fraction of all training steps spent warming the encoder's lr up
    layer_decay: float = 1.0  # < 1: lower encoder layers learn more slowly
    max_tokens: int = 128
    # raw-input encoders, the paper's front end ("" = the data's pre-extracted features)
    video_encoder: str = ""  # harris3d_cnn: Harris-3D attention + 3D CNN over per-word face crops
    audio_encoder: str = ""  # spectro_cnn: 2D CNN over per-word log-mel patches
    encoder_dim: int = 64  # width of the word vectors the raw encoders hand to the model
    encoder_options: dict[str, dict[str, Any]] = field(default_factory=dict)  # modality -> options
    model_options: dict[str, Any] = field(default_factory=dict)
    # speed options; each is off by default, and each keeps the data and the model the same
    compile: str = ""  # torch.compile backend ("inductor", ...); "" = eager
    amp: str = ""  # "bf16": bfloat16 autocast on CUDA (float32 elsewhere); "" = float32
    adam: str = "default"  # AdamW implementation: default | foreach | fused
    bucket: bool = False  # length-bucketed training batches (a text encoder's tokens always are)
    eval_batch_size: int = 0  # validation/test batch; 0 = 2 x batch_size
    loader_workers: int = -1  # DataLoader worker processes; -1 = 4 on CUDA when the data stays on the host, 0 on CPU
    data_on_device: str = "auto"  # auto: keep the dataset on the GPU when it fits | never

    def __post_init__(self) -> None:
        checks = {
            "epochs": self.epochs >= 1,
            "batch_size": self.batch_size >= 1,
            "lr": self.lr > 0,
            "patience": self.patience >= 0,
            "mixup": self.mixup >= 0,
            "grad_clip": self.grad_clip >= 0,
            "lr_schedule": self.lr_schedule in LR_SCHEDULES,
            "labels": self.labels in LABEL_KINDS,
            "amp": self.amp in AMP_KINDS,
            "adam": self.adam in ADAM_KINDS,
            "eval_batch_size": self.eval_batch_size >= 0,
            "loader_workers": self.loader_workers >= -1,
            "data_on_device": self.data_on_device in ("auto", "never"),
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise UserError(f"invalid training config values: {', '.join(f'{k}={getattr(self, k)!r}' for k in bad)}")
        if self.mixup and self.text_encoder:
            raise UserError("--mixup cannot mix an in-model text encoder's token ids: leave out --mixup or --text-encoder")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise UserError(f"unknown training config keys {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: Path) -> TrainConfig:
        try:
            return cls.from_dict(json.loads(Path(path).read_text())["train"])
        except (OSError, json.JSONDecodeError, KeyError, TypeError, UserError) as err:
            raise UserError(f"{path}: not a readable emofuse run config ({err})") from None
