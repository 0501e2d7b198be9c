"""Models. Each file registers itself; importing this package imports them all."""

from emofuse.models import (  # noqa: F401
    ef_lstm,
    fusion_matched,
    fusion_matched_xattn,
    late_fusion,
    lmf,
    mctn,
    mfn,
    mult,
    pooled,
    raven,
    tfn,
)
from emofuse.models.base import ModelOutput, ModelSpec, MultimodalModel
from emofuse.models.registry import create_model, list_models, register_model

__all__ = ["ModelOutput", "ModelSpec", "MultimodalModel", "create_model", "list_models", "register_model"]
