"""The model settings of a run: which network, its options, and the encoders inside it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from emofuse.configs import option, parse_key_value
from emofuse.errors import OptionError

TEXT_FINETUNE_HELP = "none, all or top:K layers of the text encoder train"


def parse_model_option(text: str) -> tuple[str, Any]:
    """'hidden=32' -> ('hidden', 32); 'tfn:hidden=32' -> ('tfn:hidden', 32), scoped to one model."""
    if "=" not in text:
        raise OptionError(f"model option {text!r} must look like key=value or model:key=value")
    return parse_key_value(text)


def parse_encoder_option(text: str) -> tuple[str, str, Any]:
    """'vision:attention=none' -> ('vision', 'attention', 'none')."""
    from emofuse.data.dataset import parse_modalities

    modality, sep, rest = text.partition(":")
    if not sep:
        raise OptionError(f"encoder option {text!r} must look like MODALITY:KEY=VALUE")
    try:
        (name,) = parse_modalities(modality)
    except ValueError as err:
        raise OptionError(str(err)) from None
    key, value = parse_key_value(rest)
    return name, key, value


def collect_encoder_options(parsed: list[tuple[str, str, Any]]) -> dict[str, dict[str, Any]]:
    options: dict[str, dict[str, Any]] = {}
    for modality, key, value in parsed:
        options.setdefault(modality, {})[key] = value
    return options


def scoped_model_options(given: dict[str, Any] | None, models: list[str]) -> dict[str, dict[str, Any]]:
    """{model: options} from -o options: 'model:key' reaches that model only; an unscoped 'key'
    reaches the one model of a single-model command (with several models it would break every
    model that lacks the key, so it must be scoped)."""
    options: dict[str, dict[str, Any]] = {m: {} for m in models}
    for key, value in (given or {}).items():
        model, sep, name = key.rpartition(":")
        if not sep:
            if len(models) > 1:
                raise OptionError(f"-o {key}=...: with several models ({', '.join(models)}) scope the option "
                                  f"to one of them, e.g. -o {models[0]}:{key}=...")
            model = models[0]
        if model not in options:
            raise OptionError(f"-o {key}=...: {model!r} is not among the models of this command "
                              f"({', '.join(models)})")
        if not name:
            raise OptionError(f"-o {key}=...: the option has no name")
        options[model][name] = value
    return options


@dataclass
class ModelConfig:
    """The network, its options, and the encoders that feed it."""

    model: str = option("fusion_matched", "the network; see `emofuse list-models`")
    modalities: str = option("T+A+V", "any of T, A, V joined by +")
    model_options: dict[str, Any] = option(
        default_factory=dict, flag="--model-option", short="-o", metavar="[MODEL:]KEY=VALUE",
        parse=parse_model_option,
        help="model config, e.g. -o hidden=32; in compare/ablate scope it to one model: -o tfn:hidden=32")
    # a text encoder inside the model ("" = use the data's pre-extracted text features)
    text_encoder: str = option(
        "",
        "a text encoder inside the model (minilm, mpnet, HF name, folder); default: pre-extracted features",
    )
    text_finetune: str = option("all", TEXT_FINETUNE_HELP)
    max_tokens: int = option(128, "tokens per clip for an in-model text encoder")
    text_normalize: str = option(
        "none", "rewrite each word before an in-model text encoder tokenises it: transcript = lower case, "
        "letters and digits only (MOSI's label.csv style); recorded in the run, so evaluate and predict do "
        "the same", choices=("none", "transcript"))
    # raw-input encoders, the paper's front end ("" = the data's pre-extracted features)
    video_encoder: str = option("", "raw per-word face crops through this encoder (harris3d_cnn); default: "
                                "pre-extracted features")
    audio_encoder: str = option("", "raw per-word log-mel through this encoder (spectro_cnn, whisper_base); "
                                "default: pre-extracted features")
    encoder_dim: int = option(64, "width of the raw encoders' word vectors")
    encoder_options: dict[str, dict[str, Any]] = option(
        default_factory=dict, flag="--encoder-option", short="-E", metavar="MODALITY:KEY=VALUE",
        parse=parse_encoder_option, collect=collect_encoder_options,
        help="raw encoder config, e.g. -E vision:attention=none -E audio:spec_augment=0.1")

    def model_problems(self) -> list[str]:
        """The fields whose values are not allowed (checked by TrainConfig)."""
        checks = {"max_tokens": self.max_tokens >= 1, "encoder_dim": self.encoder_dim >= 1}
        return [name for name, ok in checks.items() if not ok]
