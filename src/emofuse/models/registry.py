"""Model registry: one file + one import line adds a model (timm's pattern).

`@register_model("name", recipe=Recipe(...))` records a builder `fn(spec, **options) ->
MultimodalModel` and the training recipe its authors used; `create_model(name, spec,
**options)`, `list_models()` and `get_recipe(name)` are the only ways in.

A recipe is the optimiser setting a model is judged at by default (`emofuse compare` trains
each model with its own), taken from the model's paper or reference code and MMSA 2.2.1's MOSI
configuration (`config_regression.json`); each model file says where its values come from.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from emofuse.errors import OptionError

if TYPE_CHECKING:
    from emofuse.models.base import ModelSpec, MultimodalModel

ModelBuilder = Callable[..., "MultimodalModel"]


@dataclass(frozen=True)
class Recipe:
    """A model's reference training setting: a partial OptimConfig (emofuse.training.config).

    Its fields are the optimisation settings a model's paper or reference code fixes; they are
    OptimConfig's field names, and these defaults are emofuse's own (OptimConfig takes its
    defaults from here): Adam(W) lr 1e-3, batch 32, no weight decay, gradient norm clipped at
    1.0, early stopping after 8 epochs without a better validation loss. `grad_clip=0` means no
    clipping (MMSA clips only where its config says). `TrainConfig.with_recipe` applies one.
    """

    lr: float = 1e-3
    batch_size: int = 32
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    patience: int = 8
    source: str = "emofuse default"

    def __post_init__(self) -> None:
        if (
            self.lr <= 0
            or self.batch_size < 1
            or self.weight_decay < 0
            or self.grad_clip < 0
            or self.patience < 0
        ):
            raise ValueError(f"invalid recipe {self}")  # a bug in a model file, not the user's input

    def settings(self) -> dict[str, Any]:
        """The TrainConfig fields this recipe sets (its `source` is documentation only)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "source"}


RECIPE_FIELDS = tuple(f.name for f in dataclasses.fields(Recipe) if f.name != "source")
_REGISTRY: dict[str, ModelBuilder] = {}
_RECIPES: dict[str, Recipe] = {}


def register_model(name: str, recipe: Recipe | None = None) -> Callable[[ModelBuilder], ModelBuilder]:
    def decorator(fn: ModelBuilder) -> ModelBuilder:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")  # two model files took one name: a bug
        _REGISTRY[name] = fn
        _RECIPES[name] = recipe or Recipe()
        return fn

    return decorator


def list_models(pattern: str = "*") -> list[str]:
    _import_all()
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def get_builder(name: str) -> ModelBuilder:
    _import_all()
    if name not in _REGISTRY:
        raise OptionError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    return _REGISTRY[name]


def get_recipe(name: str) -> Recipe:
    """The registered model's reference training recipe."""
    get_builder(name)  # the same error as create_model for an unknown name
    return _RECIPES[name]


def create_model(name: str, spec: ModelSpec, **options: object) -> MultimodalModel:
    """Build a registered model for the inputs described by `spec`; options are model config."""
    model = get_builder(name)(spec, **options)
    model.model_name = name
    return model


def _import_all() -> None:
    # Importing the package runs every model file's @register_model.
    import emofuse.models  # noqa: F401
