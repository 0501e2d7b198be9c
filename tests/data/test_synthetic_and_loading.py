"""The synthetic dataset's planted structure, and the --data loader."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emofuse.data.dataset import DataFormatError, parse_modalities
from emofuse.data.loading import TextOptions, fit_lengths, load_splits, regression_to_classes
from emofuse.data.normalize import FeatureScaler
from emofuse.data.synthetic import SyntheticConfig, make_synthetic
from emofuse.metrics import regression_metrics


def test_same_seed_same_data_and_labels_in_range():
    a, b = (
        make_synthetic(SyntheticConfig(n_train=50, n_valid=10, n_test=10)),
        make_synthetic(SyntheticConfig(n_train=50, n_valid=10, n_test=10)),
    )
    torch.testing.assert_close(a.train.features["audio"], b.train.features["audio"])
    assert a.train.labels.abs().max() <= 3


def test_interaction_is_invisible_to_each_single_modality():
    test = make_synthetic().train
    ex = test.extras
    cue = test.features["text"][..., 1].numpy()  # the text's cue channel
    marker = test.features["audio"][..., 1].numpy()
    # the interaction is uncorrelated with anything computed from one modality
    for single in (cue.sum(1), np.abs(cue).sum(1), marker.sum(1), ex["T"], ex["A"], ex["V"]):
        assert abs(np.corrcoef(single, ex["I"])[0, 1]) < 0.08
    # but the aligned product of the two recovers it
    mask = test.mask("text").numpy()
    product = (np.round(cue) * (1 - 2 * np.round(marker)) * mask).sum(1) / 2
    assert np.corrcoef(product, ex["I"])[0, 1] > 0.7  # (feature noise blurs the rounding)


def test_ceilings_are_ordered():
    test = make_synthetic().test
    y = test.labels.numpy()
    full, additive, text = (
        regression_metrics(test.extras[k], y)["mae"]
        for k in ("oracle_full", "oracle_additive", "oracle_text")
    )
    assert full < 0.25 < additive < text


def test_unaligned_variant_has_faster_streams():
    s = make_synthetic(SyntheticConfig(n_train=20, n_valid=5, n_test=5, aligned=False))
    lt, la, lv = (s.train.lengths[m] for m in ("text", "audio", "vision"))
    assert torch.equal(la, 4 * lt) and torch.equal(lv, 2 * lt)


def test_loader_sources_and_errors(tmp_path):
    assert load_splits("synthetic-classes").task == "classification"
    with pytest.raises(DataFormatError, match="no such file"):
        load_splits(str(tmp_path / "missing.pkl"))
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(DataFormatError, match="unsupported"):
        load_splits(str(tmp_path / "x.txt"))


def test_regression_to_classes_uses_round_half_even():
    s = make_synthetic(SyntheticConfig(n_train=8, n_valid=4, n_test=4))
    s.train.labels[:4] = torch.tensor([2.5, -0.5, 0.5, -3.0])
    c7 = regression_to_classes(s, 7)
    assert c7.train.labels[:4].tolist() == [2 + 3, 0 + 3, 0 + 3, -3 + 3]
    assert c7.num_classes == 7
    assert regression_to_classes(s, 2).train.labels[:4].tolist() == [1, 0, 1, 0]


def test_fit_lengths_and_scaler_keep_padding_zero():
    s = make_synthetic(SyntheticConfig(n_train=16, n_valid=4, n_test=4, max_words=8, min_words=3))
    longer = fit_lengths(s.train, {"text": 12, "audio": 5, "vision": 8})
    assert longer.features["text"].shape[1] == 12 and longer.lengths["audio"].max() <= 5
    scaled = FeatureScaler.fit(longer).transform(longer)
    for m in scaled.modalities:
        assert torch.all(scaled.features[m][~scaled.mask(m)] == 0)
        real = scaled.features[m][scaled.mask(m)]
        torch.testing.assert_close(real.mean(0), torch.zeros(real.shape[1]), atol=1e-4, rtol=0)


def test_parse_modalities():
    assert parse_modalities("T+A+V") == ("text", "audio", "vision")
    assert parse_modalities("V+T") == ("text", "vision")
    assert parse_modalities(["audio"]) == ("audio",)
    with pytest.raises(ValueError, match="unknown modality"):
        parse_modalities("T+X")


def _pickle(tmp_path, classification: bool = True) -> str:
    from emofuse.data.mmsa import save_mmsa_pickle

    data = make_synthetic(SyntheticConfig(n_train=12, n_valid=6, n_test=6, max_words=5, min_words=2))
    if classification:
        data = regression_to_classes(data, 3)
    path = tmp_path / "data.pkl"
    save_mmsa_pickle(data, path)
    return str(path)


def test_load_splits_reads_the_label_kind_asked_for(tmp_path):
    import pickle

    path = _pickle(tmp_path)
    with open(path, "rb") as handle:
        raw = pickle.load(handle)
    for split in raw.values():  # an MMSA file carries both kinds
        split["regression_labels"] = np.linspace(-2, 2, len(split["id"])).astype(np.float32)
    with open(path, "wb") as handle:
        pickle.dump(raw, handle)
    assert load_splits(path).task == "regression"
    classes = load_splits(path, labels="classification")
    assert classes.task == "classification" and classes.num_classes == 3
    assert classes.train.labels.tolist() == raw["train"]["classification_labels"].tolist()
    with pytest.raises(ValueError, match="cannot be combined"):
        load_splits(path, classes=3, labels="classification")
    with pytest.raises(ValueError, match="labels must be one of auto, regression, classification"):
        load_splits(path, labels="classes")


def test_sources_without_the_asked_label_kind_say_so(tmp_path):
    with pytest.raises(DataFormatError, match="no class labels.*--classes"):
        load_splits("synthetic", labels="classification")
    with pytest.raises(DataFormatError, match="holds class labels, not sentiment scores"):
        load_splits("synthetic-classes", labels="regression")
    path = _pickle(tmp_path, classification=False)
    with pytest.raises(
        DataFormatError, match=r"data\.pkl \[split 'train'\]: missing label key 'classification_labels'"
    ):
        load_splits(path, labels="classification")


def test_label_csv_as_mosei_holds_it(tmp_path):
    (tmp_path / "label.csv").write_text(
        "video_id,clip_id,text,label,label_T,mode\n"
        "a,1,so good,2.0,1,train\na,2,not good,-9,1,train\nb,1,fine i guess,0.4,0,dev\nc,1,bad,-1.2,0,test\n"
    )
    with pytest.raises(
        DataFormatError, match=r"label\.csv: 1 sentiment label.*line 3 \(a/2\) in split train = -9"
    ):
        load_splits(str(tmp_path), TextOptions(model=None))
    with pytest.warns(UserWarning, match="clipped"):
        splits = load_splits(str(tmp_path), TextOptions(model=None), clip_labels=True)
    assert [len(d) for _, d in splits.items()] == [2, 1, 1]
    assert splits.train.labels.tolist() == [2.0, -3.0]
    assert splits.valid.extras["annotations"].tolist() == ["Positive"]
