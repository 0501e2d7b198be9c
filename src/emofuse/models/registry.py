"""Model registry: one file + one import line adds a model (timm's pattern).

`@register_model("name")` records a builder `fn(spec, **options) -> MultimodalModel`;
`create_model(name, spec, **options)` and `list_models()` are the only ways in.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from emofuse.models.base import ModelSpec, MultimodalModel

ModelBuilder = Callable[..., "MultimodalModel"]
_REGISTRY: dict[str, ModelBuilder] = {}


def register_model(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    def decorator(fn: ModelBuilder) -> ModelBuilder:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = fn
        return fn

    return decorator


def list_models(pattern: str = "*") -> list[str]:
    _import_all()
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def get_builder(name: str) -> ModelBuilder:
    _import_all()
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    return _REGISTRY[name]


def create_model(name: str, spec: ModelSpec, **options: object) -> MultimodalModel:
    """Build a registered model for the inputs described by `spec`; options are model config."""
    model = get_builder(name)(spec, **options)
    model.model_name = name
    return model


def _import_all() -> None:
    # Importing the package runs every model file's @register_model.
    import emofuse.models  # noqa: F401
