"""Feature extraction stages: turn raw inputs (text, audio, video) into per-modality sequences."""

from emofuse.features import sources  # noqa: F401  (registers the data sources that need features)
from emofuse.features.text import (
    DEFAULT_MAX_WORDS,
    WordEmbedder,
    embed_cached,
    feature_cache_path,
    label_csv_to_splits,
    prepare_text,
    split_words,
    texts_to_splits,
)
from emofuse.features.text_models import (
    ModelIntegrityError,
    TextModelUnavailable,
    find_mpnet_parts,
    install_mpnet,
    mpnet_dir,
    resolve_text_model,
)
from emofuse.runtime import resolve_cache_dir

__all__ = [
    "DEFAULT_MAX_WORDS",
    "ModelIntegrityError",
    "TextModelUnavailable",
    "WordEmbedder",
    "embed_cached",
    "feature_cache_path",
    "find_mpnet_parts",
    "install_mpnet",
    "label_csv_to_splits",
    "mpnet_dir",
    "prepare_text",
    "resolve_cache_dir",
    "resolve_text_model",
    "split_words",
    "texts_to_splits",
]
