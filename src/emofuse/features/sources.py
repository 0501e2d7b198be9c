"""The data sources that need the features layer, registered with `emofuse.data.sources`.

- word features: label.csv and MELD text becomes word vectors through the cached text embedder
  (`emofuse.features.text.embed_cached`), for `TextOptions.model`;
- `synthetic-clips`: generated talking-face clips through `emofuse extract --raw`
  (`emofuse.features.synthetic_clips_source`);
- RAVDESS's clip embedders (`-D embeddings=whisper_base`, `emofuse.features.speech_embeddings`).

The data layer imports nothing from here: `emofuse.features` imports this module, and so do the
commands that load data, so the sources are there before `load_splits` runs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from emofuse.data.sources import register_word_features
from emofuse.features import (
    speech_embeddings,  # noqa: F401  (registers RAVDESS's -D embeddings=)
    synthetic_clips_source,  # noqa: F401  (registers synthetic-clips)
)


def _embed_words(texts: Sequence[str], model: str, max_words: int) -> tuple[np.ndarray, np.ndarray]:
    from emofuse.features.text import embed_cached

    return embed_cached(texts, model, max_words, None, device="cpu", batch_size=32, progress=True)


register_word_features(_embed_words)
