"""Typed configs from options, one way everywhere.

`build_config(cls, options, what)` turns keyword options (a model's `-o`, a data source's `-D`,
an extractor's settings, a config file's mapping) into the dataclass `cls`, refusing unknown keys
with the known ones named. `option(...)` declares a config field together with the help and
flag the command line shows for it (`emofuse.cli.options` builds the parsers from them), so a
setting is written once: its type, its default and its help sit on the field.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from emofuse.errors import OptionError, UserError

T = TypeVar("T")
_NO_DEFAULT: Any = dataclasses.MISSING


def option(
    default: Any = _NO_DEFAULT,
    help: str = "",
    *,
    default_factory: Callable[[], Any] | Any = _NO_DEFAULT,
    flag: str | None = None,
    short: str | None = None,
    choices: tuple[Any, ...] | None = None,
    metavar: str | None = None,
    parse: Callable[[str], Any] | None = None,
    collect: Callable[[list[Any]], Any] | None = None,
    const: Any = None,
    cli: bool = True,
) -> Any:
    """A dataclass field with what the command line needs to offer it.

    flag: the long flag (default --the-field-name); short: e.g. "-o"; choices/metavar: as in
    argparse; parse: for a dict field, how one `KEY=VALUE` argument is read (the flag may then be
    given several times) and collect: how the list of parsed arguments becomes the field's value
    (default: dict of the (key, value) pairs); const: the value of the bare flag (`--compile`
    alone); cli=False keeps the field off the command line (set by a config file or by code).
    """
    metadata = {"help": help, "flag": flag, "short": short, "choices": choices, "metavar": metavar,
                "parse": parse, "collect": collect, "const": const, "cli": cli}
    if default_factory is not _NO_DEFAULT:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def parse_key_value(text: str) -> tuple[str, Any]:
    """'hidden=32' -> ('hidden', 32): values are read as JSON where they parse, else as strings."""
    if "=" not in text:
        raise OptionError(f"option {text!r} must look like key=value")
    key, raw = text.split("=", 1)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), value


def field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


def build_config(
    cls: type[T], options: Mapping[str, Any], what: str, error: type[UserError] = OptionError
) -> T:
    """`cls(**options)`, with unknown keys and rejected values raised as `error` naming `what`.

    what: the thing being configured, as the user knows it ("model tfn", "data source ravdess").
    """
    known = field_names(cls)
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise error(f"{what}: unknown option(s) {unknown}; known: {sorted(known)}")
    try:
        return cls(**options)
    except UserError:
        raise
    except (TypeError, ValueError) as err:  # the config's own checks, or a value of the wrong kind
        raise error(f"{what}: bad option: {err}") from None
