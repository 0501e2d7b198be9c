"""What the commands share: the command registry, the run config from flags and --config, the
shared argument groups, reading a run's data."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CommandFn = Callable[[argparse.Namespace], int]


@dataclass(frozen=True)
class Command:
    run: CommandFn
    help: str
    arguments: Callable[[argparse.ArgumentParser], None] | None = None


# name -> command, in the order `emofuse --help` lists them
COMMANDS: dict[str, Command] = {}


def command(name: str, help: str, arguments: Callable[[argparse.ArgumentParser], None] | None = None
            ) -> Callable[[CommandFn], CommandFn]:
    """Register `fn` as the command `name`; `arguments(parser)` adds its flags."""

    def deco(fn: CommandFn) -> CommandFn:
        COMMANDS[name] = Command(fn, help, arguments)
        return fn

    return deco


# The training flags are made from the config tree (emofuse.training.config.CONFIG_GROUPS) by
# emofuse.cli.options: a field's type, default, help and flag are written once, on the field.

def _parse_option(text: str) -> tuple[str, Any]:
    """'hidden=32' -> ('hidden', 32); 'tfn:hidden=32' -> ('tfn:hidden', 32) (see _model_options)."""
    from emofuse.models.config import parse_model_option

    return parse_model_option(text)


def _model_options(parsed: list[tuple[str, Any]] | None, models: list[str]) -> dict[str, dict[str, Any]]:
    """{model: options} from parsed -o options (emofuse.models.config.scoped_model_options)."""
    from emofuse.models.config import scoped_model_options

    return scoped_model_options(dict(parsed or []), models)


def chosen_settings(args: argparse.Namespace) -> dict[str, Any]:
    """What the user chose for the training config: --config FILE, then the flags over it.

    Resolved once per command (compare and ablate ask three times) and kept on `args`; each
    caller gets its own copy to change.
    """
    from emofuse.cli.options import resolve
    from emofuse.training.config import CONFIG_GROUPS

    if "_chosen_settings" not in vars(args):
        args._chosen_settings = resolve(args, (cls for _, cls in CONFIG_GROUPS))
    return dict(args._chosen_settings)


def train_config(args: argparse.Namespace, model: str | None = None, modalities: str | None = None,
                  per_model_options: bool = False):
    """The run config of a command: defaults < --config < flags; `model`/`modalities` pin those.

    The seed is the first of --seeds. Model options (-o) reach `model` (scoped, see
    _model_options). per_model_options (compare, ablate): the model options are left empty, as
    those commands resolve them per model.
    """
    from emofuse.models.config import scoped_model_options
    from emofuse.models.registry import get_builder
    from emofuse.training.config import TrainConfig

    settings = chosen_settings(args)
    name = model or settings.get("model", "fusion_matched")
    get_builder(name)  # an unknown model is an OptionError here, before the data is read
    options = settings.pop("model_options", {})
    settings.update(model=name, seed=args.seeds[0])
    if modalities:
        settings["modalities"] = modalities
    if not per_model_options:
        settings["model_options"] = scoped_model_options(options, [name])[name]
    config = TrainConfig(**settings)
    if getattr(args, "print_config", False):
        from emofuse.cli.options import config_yaml
        from emofuse.training.config import CONFIG_GROUPS

        print(config_yaml(config, CONFIG_GROUPS), end="")
        raise SystemExit(0)
    return config


def recipe_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The recipe fields (emofuse.models.registry.Recipe) the user set: they win over every
    model's own recipe in compare/ablate."""
    from emofuse.models.registry import RECIPE_FIELDS

    settings = chosen_settings(args)
    return {k: settings[k] for k in RECIPE_FIELDS if k in settings}


def given_model_options(args: argparse.Namespace, models: list[str]) -> dict[str, dict[str, Any]]:
    from emofuse.models.config import scoped_model_options

    return scoped_model_options(chosen_settings(args).get("model_options"), models)


def add_training_arguments(p: argparse.ArgumentParser, exclude: tuple[str, ...] = ()) -> None:
    """The config tree's flags, one group each, then --seeds, --resume and --quiet."""
    from emofuse.cli.options import add_config_arguments, add_config_file_arguments
    from emofuse.training.config import CONFIG_GROUPS

    add_config_file_arguments(p)
    for name, cls in CONFIG_GROUPS:
        add_config_arguments(
            p, cls, exclude=exclude, title=f"{name}: {(cls.__doc__ or '').splitlines()[0].rstrip('.')}"
        )
    p.add_argument("--seeds", type=int, nargs="+", default=[1], help="one run per seed; mean ± std reported")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue interrupted runs in --out, to the result an "
        "uninterrupted run gives (same settings; --epochs may grow, except for a fine-tuned "
        "--text-encoder, whose lr schedule spans the run)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def add_run_arguments(p: argparse.ArgumentParser, only: tuple[str, ...] | None = None,
                      run_help: str | None = None) -> None:
    """The shared group of the commands that use a trained run: --run, --device, --threads, --cache.

    run_help: --run's help for a command that takes one run only (explain), instead of the shared one.
    """
    from emofuse.cli.options import RunOptions, add_config_arguments

    add_config_arguments(p, RunOptions, only=only, with_defaults=True)
    if run_help is not None:
        next(a for a in p._actions if a.dest == "run").help = run_help


def add_recipe_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--same-recipe",
        action="store_true",
        help="train every model with one setting (TrainConfig's defaults and the flags given) instead of "
        "each model's own recipe; --lr/--batch-size/--weight-decay/--grad-clip/--patience given "
        "explicitly always apply to every model",
    )


def load_data(config):
    """The data of a run config, read as the config says (`emofuse.evaluation.evaluate.load_data`)."""
    from emofuse.evaluation.evaluate import load_data as load_run_data

    return load_run_data(config.data, config)


def check_writable_parent(out: Path, given: str) -> None:
    from emofuse.errors import OutputError

    parent = out.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise OutputError(f"--out {given}: a file is in the way of its folder {parent}") from None
    except OSError as err:
        raise OutputError(
            f"--out {given}: cannot create its folder {parent} ({err.strerror or err})"
        ) from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"--out {given}: no permission to write in {parent}")
