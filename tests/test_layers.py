"""emofuse's layers import downwards only.

Lowest first: the ground floor (the modules directly in emofuse/: errors, files, runtime, configs,
messages, audio_frontend) -> metrics -> data -> features -> models -> training -> evaluation ->
inference -> reports -> serve -> cli. A module may import from its own layer or a lower one.
Every import counts: at the top, inside a function, under TYPE_CHECKING, and a literal module name
given to importlib.import_module / __import__. `emofuse/__main__.py` is the entry point that calls
the command line, so it is exempt.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

LAYERS = ("ground", "metrics", "data", "features", "models", "training", "evaluation", "inference", "reports",
          "serve", "cli")
PACKAGE = "emofuse"
SOURCE = Path(__file__).resolve().parents[1] / "src" / PACKAGE
EXEMPT = {f"{PACKAGE}.__main__"}
_IMPORT_CALLS = {"import_module", "__import__"}


def layer_of(module: str) -> str | None:
    """The layer of an emofuse module ('emofuse.data.loading' -> 'data'); None outside emofuse."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS[1:] else "ground"


def module_name(path: Path, root: Path = SOURCE) -> str:
    """src/emofuse/data/loading.py -> 'emofuse.data.loading'; a package's __init__ -> the package."""
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imported(tree: ast.AST, module: str, is_package: bool) -> Iterator[tuple[int, str]]:
    """(line, imported module) for every import in `tree`, at any depth."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against the importing module's package
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            if base == PACKAGE:  # `from emofuse import runtime`: the names are the modules
                for alias in node.names:
                    yield node.lineno, f"{PACKAGE}.{alias.name}"
            else:
                yield node.lineno, base
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name in _IMPORT_CALLS and isinstance(node.args[0].value, str):
                yield node.lineno, node.args[0].value


def violations(source: str, module: str, shown_as: str, is_package: bool = False) -> list[str]:
    """Every upward import in `source` (the text of `module`), as 'file:line (layer) imports
    module (layer)'."""
    own = layer_of(module)
    assert own is not None, module
    found = []
    for line, target in sorted(_imported(ast.parse(source), module, is_package)):
        theirs = layer_of(target)
        if theirs is not None and LAYERS.index(theirs) > LAYERS.index(own):
            found.append(f"{shown_as}:{line} ({own}) imports {target} ({theirs})")
    return found


def package_violations(root: Path = SOURCE) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        module = module_name(path, root)
        if module in EXEMPT:
            continue
        shown = path.relative_to(root.parent).as_posix()
        found += violations(path.read_text(encoding="utf-8"), module, shown, path.name == "__init__.py")
    return found


def test_every_module_imports_downwards_only() -> None:
    assert SOURCE.is_dir(), SOURCE
    found = package_violations()
    assert not found, "upward imports:\n" + "\n".join(found)


def test_the_checker_finds_an_upward_import_anywhere() -> None:
    source = (
        "from emofuse.errors import UserError\n"  # ground floor: allowed
        "from emofuse.data.dataset import Batch\n"  # its own layer: allowed
        "from emofuse.cli.main import main\n"
        "\n"
        "def later():\n"
        "    import emofuse.models.base\n"  # a lazy import counts too
        "    from .. import features\n"  # relative: emofuse.features
        "    importlib.import_module('emofuse.training.trainer')\n"
        "    return emofuse.models.base\n"
    )
    assert violations(source, "emofuse.data.fake", "emofuse/data/fake.py") == [
        "emofuse/data/fake.py:3 (data) imports emofuse.cli.main (cli)",
        "emofuse/data/fake.py:6 (data) imports emofuse.models.base (models)",
        "emofuse/data/fake.py:7 (data) imports emofuse.features (features)",
        "emofuse/data/fake.py:8 (data) imports emofuse.training.trainer (training)",
    ]
    # the same imports from the top layer are all downwards
    assert violations(source, "emofuse.cli.fake", "emofuse/cli/fake.py") == []
    # and the ground floor may import nothing above it
    assert violations("from emofuse import metrics\n", "emofuse.files", "emofuse/files.py") == [
        "emofuse/files.py:1 (ground) imports emofuse.metrics (metrics)"]


def test_layer_and_module_names() -> None:
    assert layer_of("emofuse") == layer_of("emofuse.errors") == layer_of("emofuse.audio_frontend") == "ground"
    assert layer_of("emofuse.features.text") == "features" and layer_of("numpy") is None
    assert module_name(SOURCE / "data" / "loading.py") == "emofuse.data.loading"
    assert module_name(SOURCE / "data" / "__init__.py") == "emofuse.data"
