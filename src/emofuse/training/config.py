"""The run config: one typed tree, saved into every run folder, that the command line is made from.

Each layer owns its settings: `DataConfig` (emofuse.data.config), `ModelConfig`
(emofuse.models.config), and here `OptimConfig` (how the weights are fitted) and `RuntimeConfig`
(where and how fast; never what is computed, except where a field's help says so). `TrainConfig`
is their union by dataclass inheritance: every field keeps its flat name (`config.lr`,
`config.model`), so a run's `config.json` stays one flat mapping that loads as `--config`, and runs
written before the split load unchanged. Each field carries its help and flag
(`emofuse.configs.option`); `emofuse.cli.options` builds the parsers from them, so adding a
training option is a change to this file only.

A model's `Recipe` (emofuse.models.registry) is a partial `OptimConfig`: the optimisation fields
its reference sets; `with_recipe` lays one over a config.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emofuse.configs import option
from emofuse.data.config import DataConfig
from emofuse.errors import OptionError, UserError
from emofuse.models.config import ModelConfig
from emofuse.models.registry import RECIPE_FIELDS, Recipe

AMP_KINDS = ("", "bf16")
ADAM_KINDS = ("default", "foreach", "fused")
LR_SCHEDULES = ("constant", "cosine")
# settings that change how fast a run goes, not what it computes (bf16 and fused Adam round
# differently): they may change on --resume, and a tuning trial does not search them
SPEED_FIELDS = ("compile", "amp", "adam", "eval_batch_size", "loader_workers", "data_on_device")
# the optimisation setting a model without a published one trains at: emofuse's own defaults
_DEFAULT = Recipe()


@dataclass
class OptimConfig:
    """How the weights are fitted. The paper trains with lr 0.15 for 2000 epochs, which diverges
    with Adam; its values stay reachable (`--lr 0.15 --epochs 2000 --batch-size 64 --patience 0`)
    but are not the default."""

    epochs: int = option(30, "training epochs (the most; early stopping may end sooner)")
    batch_size: int = option(_DEFAULT.batch_size, "training batch size")
    lr: float = option(_DEFAULT.lr, "Adam learning rate (the paper's 0.15 diverges with Adam)")
    weight_decay: float = option(_DEFAULT.weight_decay, "AdamW weight decay")
    grad_clip: float = option(_DEFAULT.grad_clip, "max gradient norm, 0 = off")
    # "cosine": linear warm-up over --warmup of the steps, then a cosine decay to zero at the end
    lr_schedule: str = option(
        "constant",
        "the model's learning rate: constant, or cosine (warm-up over --warmup "
        "of the steps, then decay to 0)",
        choices=LR_SCHEDULES,
    )
    patience: int = option(
        _DEFAULT.patience, "early stopping: epochs without a better validation loss, 0 = off"
    )
    # mixup's Beta(alpha, alpha) (emofuse.training.mixup): each training batch blended with a
    # shuffled copy of itself, inputs and loss alike
    mixup: float = option(0.0, "mixup: blend each training batch with a shuffled copy of itself, lam ~ "
                          "Beta(ALPHA, ALPHA) (e.g. 0.2); 0 = off", metavar="ALPHA")
    seed: int = option(1, "the run's seed (the command line's --seeds makes one run per seed)", cli=False)
    class_weights: bool = option(False, "classification: weight the loss by inverse class frequency")
    label_smoothing: float = option(
        0.0, "classification: cross-entropy against targets smoothed by this much (e.g. 0.1); 0 = off"
    )
    text_lr: float = option(5e-5, "the in-model text encoder's learning rate (warm-up, then linear decay)")
    warmup: float = option(
        0.1,
        "fraction of steps warming the lr up: the text encoder's (then linear decay), "
        "and the model's with --lr-schedule cosine",
    )
    layer_decay: float = option(
        1.0, "layer-wise lr decay of the text encoder (< 1: lower layers learn slower)"
    )

    def optim_problems(self) -> list[str]:
        checks = {
            "epochs": self.epochs >= 1,
            "batch_size": self.batch_size >= 1,
            "lr": self.lr > 0,
            "weight_decay": self.weight_decay >= 0,
            "grad_clip": self.grad_clip >= 0,
            "lr_schedule": self.lr_schedule in LR_SCHEDULES,
            "patience": self.patience >= 0,
            "mixup": self.mixup >= 0,
            "label_smoothing": 0 <= self.label_smoothing < 1,
            "warmup": 0 <= self.warmup <= 1,
            "layer_decay": self.layer_decay > 0,
        }
        return [name for name, ok in checks.items() if not ok]


@dataclass
class RuntimeConfig:
    """Where the run goes and how fast. The speed options keep the data and the model the same;
    fused AdamW and length-bucketed batches are on by default (they round differently in the last
    bits and reorder the batches: `--adam default --no-bucket` gives the exact old runs)."""

    device: str = option("auto", "auto, cpu, cuda or cuda:N")
    threads: int = option(0, "torch CPU threads (0 = torch's default)")
    compile: str = option(
        "",
        "torch.compile the model (backend inductor unless named); falls back to eager with a warning",
        const="inductor",
        metavar="BACKEND",
    )
    amp: str = option("", "bf16 autocast on CUDA (rounds differently; ignored with a warning on CPU)",
                      choices=AMP_KINDS)
    # fused: one kernel per step on CPU and CUDA, the same update as torch's default AdamW up to
    # rounding in the last bits (tests/training/test_speed_options.py)
    adam: str = option("fused", "AdamW implementation: fused (one kernel; rounds differently in the last "
                       "bits from default), foreach, or torch's default", choices=ADAM_KINDS)
    # batches of clips of similar length: less padding (masked either way, so the same model),
    # a different but still seeded batch order; --no-bucket gives the order of emofuse <= 0.1
    bucket: bool = option(True, "length-bucketed training batches: less padding, a different (still seeded) "
                          "batch order than --no-bucket's")
    eval_batch_size: int = option(0, "validation/test batch (0 = 2 x --batch-size)")
    loader_workers: int = option(
        -1, "DataLoader processes feeding the GPU (-1 = 4 on CUDA when the data stays on the host, 0 on CPU)"
    )
    data_on_device: str = option("auto", "keep the dataset on the GPU when it fits (auto) or never",
                                 choices=("auto", "never"))

    def runtime_problems(self) -> list[str]:
        checks = {
            "threads": self.threads >= 0,
            "amp": self.amp in AMP_KINDS,
            "adam": self.adam in ADAM_KINDS,
            "eval_batch_size": self.eval_batch_size >= 0,
            "loader_workers": self.loader_workers >= -1,
            "data_on_device": self.data_on_device in ("auto", "never"),
        }
        return [name for name, ok in checks.items() if not ok]


# the groups, in the order a printed config shows them
CONFIG_GROUPS: tuple[tuple[str, type], ...] = (
    ("data", DataConfig), ("model", ModelConfig), ("optim", OptimConfig), ("runtime", RuntimeConfig))


@dataclass
class TrainConfig(RuntimeConfig, OptimConfig, ModelConfig, DataConfig):
    """Everything that determines a run: the four groups' fields, flat."""

    def __post_init__(self) -> None:
        bad = self.data_problems() + self.model_problems() + self.optim_problems() + self.runtime_problems()
        if bad:
            values = ", ".join(f"{k}={getattr(self, k)!r}" for k in sorted(bad, key=FIELD_ORDER.index))
            raise OptionError(f"invalid training config values: {values}")
        if self.mixup and self.text_encoder:
            raise OptionError("--mixup cannot mix an in-model text encoder's token ids: leave out --mixup or "
                              "--text-encoder")

    def group(self, name: str) -> Any:
        """One group's settings as its own config, e.g. `config.group("optim")`."""
        cls = dict(CONFIG_GROUPS)[name]
        return cls(**{f.name: getattr(self, f.name) for f in dataclasses.fields(cls)})

    def with_recipe(self, recipe: Recipe | None, overrides: dict[str, Any] | None = None) -> TrainConfig:
        """This config with a model's recipe laid over it (None: keep this config's values), then
        the recipe fields the user gave, which win over any recipe."""
        unknown = set(overrides or {}) - set(RECIPE_FIELDS)
        if unknown:
            raise OptionError(f"cannot override {sorted(unknown)}; recipe fields are {list(RECIPE_FIELDS)}")
        settings = recipe.settings() if recipe is not None else {}
        return dataclasses.replace(self, **{**settings, **(overrides or {})})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise OptionError(f"unknown training config keys {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: Path) -> TrainConfig:
        try:
            return cls.from_dict(json.loads(Path(path).read_text())["train"])
        except (OSError, json.JSONDecodeError, KeyError, TypeError, UserError) as err:
            raise UserError(f"{path}: not a readable emofuse run config ({err})") from None


FIELD_ORDER = [f.name for f in dataclasses.fields(TrainConfig)]
