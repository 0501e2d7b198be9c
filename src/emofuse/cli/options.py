"""Command-line flags made from config dataclasses, and config files.

A config field declared with `emofuse.configs.option` becomes a flag: `--the-field-name` (or the
flag it names), its type from the annotation, its choices, its help with the default appended.
Flags are left out of the parsed namespace unless given (argparse.SUPPRESS), so a command knows
exactly what the user typed: `given_settings` collects it, `--config FILE` supplies what the
command line did not, and the dataclass defaults the rest. That order (defaults < file < flags)
is what `resolve` builds.

Why not jsonargparse: it would rename the flags users know (`--optim.lr`), change argparse's
messages that the tests and users see, and add a dependency for ~150 lines of code.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from emofuse.configs import option
from emofuse.errors import OptionError, UserError


@dataclasses.dataclass
class RunOptions:
    """The shared group of the commands that use a trained run (predict, explain, serve;
    evaluate and robustness take its --device)."""

    # repeatable (parse/collect make an appended list): several runs are averaged as an ensemble
    run: list[str] = option(help="a run folder (one seed_N folder of `emofuse train`), or a folder of seed_N "
                            "runs; give several to average them", parse=str, collect=list, metavar="RUN")
    device: str = option("cpu", "auto, cpu, cuda or cuda:N")
    threads: int = option(1, "torch CPU threads")
    cache: str | None = option(None, "extraction stage cache (default: none)")


def _parse_or_usage_error(parse: Any) -> Any:
    """argparse shows a type function's ArgumentTypeError message as is; other errors as
    'invalid <name> value', which hides what is wrong."""

    def wrapped(text: str) -> Any:
        try:
            return parse(text)
        except UserError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    wrapped.__name__ = getattr(parse, "__name__", "option")
    return wrapped


def _help(f: dataclasses.Field[Any]) -> str:
    text = f.metadata.get("help", "")
    if f.default is dataclasses.MISSING or isinstance(f.default, bool) or f.metadata.get("parse"):
        return text
    if f.default in ("", None) or "default" in text:
        return text
    return f"{text} (default: {f.default})"


def add_config_arguments(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    *,
    exclude: Iterable[str] = (),
    only: Iterable[str] | None = None,
    title: str | None = None,
    with_defaults: bool = False,
) -> None:
    """One flag per field of the dataclass `cls` (fields with cli=False, or in `exclude`, or not in
    `only`, are left out). A field without a default is a required flag.

    with_defaults=False: a flag not given is absent from the namespace (see `resolve`); True: it
    holds the field's default, for commands that read the namespace directly.
    """
    excluded, wanted = set(exclude), None if only is None else set(only)
    target = (
        parser.add_argument_group(title) if title and isinstance(parser, argparse.ArgumentParser) else parser
    )
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if not meta.get("cli", True) or f.name in excluded or (wanted is not None and f.name not in wanted):
            continue
        names = [meta.get("flag") or "--" + f.name.replace("_", "-")]
        if meta.get("short"):
            names.append(meta["short"])
        default = f.default if with_defaults and f.default is not dataclasses.MISSING else argparse.SUPPRESS
        kwargs: dict[str, Any] = {"dest": f.name, "help": _help(f), "default": default}
        kind = hints[f.name]
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            kwargs.update(required=True, default=None)
        if meta.get("parse"):  # a repeatable KEY=VALUE flag that fills a dict
            kwargs.update(type=_parse_or_usage_error(meta["parse"]), action="append")
        elif kind is bool:  # --flag and --no-flag, whichever the default is
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = _scalar_type(kind)
            if meta.get("choices") is not None:
                kwargs["choices"] = list(meta["choices"])
            if meta.get("const") is not None:
                kwargs.update(nargs="?", const=meta["const"])
        if meta.get("metavar"):
            kwargs["metavar"] = meta["metavar"]
        target.add_argument(*names, **kwargs)


def _scalar_type(kind: Any) -> type:
    """int, float or str from an annotation (`str | None` gives str)."""
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        kind = next(a for a in typing.get_args(kind) if a is not type(None))
    return kind if kind in (int, float, str) else str


def given_settings(args: argparse.Namespace, classes: Iterable[type]) -> dict[str, Any]:
    """The fields of `classes` that the command line gave, as the values the fields hold."""
    values: dict[str, Any] = {}
    for cls in classes:
        for f in dataclasses.fields(cls):
            if f.name not in vars(args):
                continue
            value = getattr(args, f.name)
            if f.metadata.get("parse"):
                collect = f.metadata.get("collect") or dict
                value = collect(value or [])
            values[f.name] = value
    return values


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A config file's settings: a flat mapping of field names, in YAML or JSON (YAML is a superset
    of JSON). A run's config.json (whose settings sit under "train") is accepted as it is."""
    import yaml

    path = Path(path).expanduser()
    try:
        loaded = yaml.safe_load(path.read_text())
    except OSError as err:
        raise UserError(f"--config {path}: cannot read it ({err.strerror or err})") from None
    except yaml.YAMLError as err:
        raise UserError(f"--config {path}: not YAML or JSON ({str(err).splitlines()[0]})") from None
    if isinstance(loaded, dict) and isinstance(loaded.get("train"), dict):
        loaded = loaded["train"]
    if not isinstance(loaded, dict):
        raise UserError(f"--config {path}: expected a mapping of settings (e.g. 'lr: 0.001'), "
                        f"found {type(loaded).__name__}")
    return loaded


def resolve(args: argparse.Namespace, classes: Iterable[type]) -> dict[str, Any]:
    """The settings the user chose: those of --config FILE, then the flags given over them.

    Unknown keys in the file are refused with the known ones named; the defaults are left to the
    dataclass, so what comes back is exactly what the user asked for.
    """
    classes = list(classes)
    chosen: dict[str, Any] = {}
    if getattr(args, "config", None):
        from_file = read_config_file(args.config)
        known = {f.name for cls in classes for f in dataclasses.fields(cls)}
        unknown = sorted(set(from_file) - known)
        if unknown:
            raise OptionError(f"--config {args.config}: unknown setting(s) {unknown}; known: {sorted(known)}")
        chosen.update({k: _coerce(classes, k, v, args.config) for k, v in from_file.items()})
    chosen.update(given_settings(args, classes))
    return chosen


def _coerce(classes: list[type], name: str, value: Any, source: str) -> Any:
    """A file's value as its field's scalar type (YAML reads '5e-05' as a string, 3 as an int)."""
    for cls in classes:
        for f in dataclasses.fields(cls):
            if f.name != name:
                continue
            kind = _scalar_type(typing.get_type_hints(cls)[name])
            if (
                value is None
                or isinstance(value, (bool, dict, list))
                or kind is str
                or f.metadata.get("parse")
            ):
                return value
            try:
                return kind(value)
            except (TypeError, ValueError):
                raise OptionError(f"--config {source}: {name}: {value!r} is not a {kind.__name__}") from None
    return value


def add_config_file_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="settings from a YAML or JSON file (a run's config.json works); flags given as well win over it",
    )
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved settings as YAML (a valid --config) and exit",
    )


def config_yaml(config: Any, groups: Iterable[tuple[str, type]]) -> str:
    """A config as YAML, one commented section per group, each field's help above it."""
    lines: list[str] = []
    for name, cls in groups:
        lines.append(f"# --- {name}: {(cls.__doc__ or '').strip().splitlines()[0]}")
        for f in dataclasses.fields(cls):
            if f.metadata.get("help"):
                lines.append(f"# {f.metadata['help']}")
            lines.append(f"{f.name}: {_yaml_value(getattr(config, f.name))}")
        lines.append("")
    return "\n".join(lines)


def _yaml_value(value: Any) -> str:
    """JSON, which YAML reads, except that YAML 1.1 wants a dot in a float's mantissa (5.0e-05)."""
    text = json.dumps(value)
    if isinstance(value, float) and "e" in text and "." not in text.split("e")[0]:
        mantissa, exponent = text.split("e")
        text = f"{mantissa}.0e{exponent}"
    return text
