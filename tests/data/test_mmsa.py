"""MMSA pickle reader/writer: round trips, length rules, cleaning, and error messages."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from emofuse.data import (
    DataFormatError,
    DatasetSplits,
    load_mmsa_pickle,
    save_mmsa_pickle,
)

SPLIT_SIZES = {"train": 6, "valid": 3, "test": 4}
ANNOTATIONS = ["Negative", "Neutral", "Positive"]


# --------------------------------------------------------------------------- fixtures
def _padded(rng: np.random.Generator, lengths: np.ndarray, max_len: int, dim: int) -> np.ndarray:
    """N x L x D random features, zero after each sample's length (as MMSA pads)."""
    x = rng.normal(size=(len(lengths), max_len, dim)).astype(np.float32) + 5.0  # never all zero
    x[np.arange(max_len)[None, :] >= lengths[:, None]] = 0.0
    return x


def make_split(
    n: int, aligned: bool = True, seed: int = 0, max_len: int = 7
) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    text_len = rng.integers(1, max_len + 1, size=n)
    classes = rng.integers(0, 3, size=n)
    split: dict[str, Any] = {
        "id": [f"vid{i // 2}$_${i % 2 + 1}" for i in range(n)],
        "raw_text": [f"utterance {i}" for i in range(n)],
        "text": _padded(rng, text_len, max_len, 8),
        "regression_labels": rng.uniform(-3, 3, size=n).astype(np.float32),
        "classification_labels": classes.astype(np.float32),
        "annotations": np.array([ANNOTATIONS[c] for c in classes]),
    }
    if aligned:
        split["audio"] = _padded(rng, text_len, max_len, 5)
        split["vision"] = _padded(rng, text_len, max_len, 4)
    else:
        audio_len = rng.integers(1, 20, size=n)
        vision_len = rng.integers(1, 15, size=n)
        split["audio"] = _padded(rng, audio_len, 20, 5)
        split["vision"] = _padded(rng, vision_len, 15, 4)
        split["audio_lengths"] = audio_len.tolist()  # MMSA stores plain lists
        split["vision_lengths"] = vision_len
    return split


def make_pickle(aligned: bool = True) -> dict[str, Any]:
    return {s: make_split(n, aligned, seed=i) for i, (s, n) in enumerate(SPLIT_SIZES.items())}


def write(path: Path, obj: Any) -> Path:
    with open(path, "wb") as handle:
        pickle.dump(obj, handle)
    return path


@pytest.fixture
def aligned_file(tmp_path: Path) -> Path:
    return write(tmp_path / "aligned_50.pkl", make_pickle(aligned=True))


@pytest.fixture
def unaligned_file(tmp_path: Path) -> Path:
    return write(tmp_path / "unaligned_50.pkl", make_pickle(aligned=False))


def assert_splits_equal(a: DatasetSplits, b: DatasetSplits) -> None:
    for split, x in a.items():
        y = b[split]
        assert x.modalities == y.modalities
        for m in x.modalities:
            torch.testing.assert_close(x.features[m], y.features[m], rtol=0, atol=0)
            assert torch.equal(x.lengths[m], y.lengths[m])
        assert torch.equal(x.labels, y.labels) and x.labels.dtype == y.labels.dtype
        assert x.ids == y.ids and x.raw_text == y.raw_text
        assert set(x.extras) == set(y.extras)
        for key in x.extras:
            np.testing.assert_array_equal(x.extras[key], y.extras[key])


# --------------------------------------------------------------------------- loading
def test_aligned_lengths_come_from_text_padding(aligned_file: Path) -> None:
    raw = make_pickle(aligned=True)
    splits = load_mmsa_pickle(aligned_file)
    train = splits.train
    expected = np.any(raw["train"]["text"] != 0, axis=2).sum(axis=1)  # contiguous by build
    for m in ("text", "audio", "vision"):
        np.testing.assert_array_equal(train.lengths[m].numpy(), expected)
    assert train.labels.dtype == torch.float32
    assert train.ids[1] == "vid0$_$2" and train.raw_text[0] == "utterance 0"
    assert splits.task == "regression" and splits.name == "aligned_50"
    assert {"annotations", "classification_labels"} <= set(train.extras)
    assert [len(d) for _, d in splits.items()] == list(SPLIT_SIZES.values())


def test_unaligned_uses_given_lengths(unaligned_file: Path) -> None:
    raw = make_pickle(aligned=False)
    splits = load_mmsa_pickle(unaligned_file)
    np.testing.assert_array_equal(splits.test.lengths["audio"].numpy(), raw["test"]["audio_lengths"])
    np.testing.assert_array_equal(splits.test.lengths["vision"].numpy(), raw["test"]["vision_lengths"])
    assert splits.train.max_lengths() == {"text": 7, "audio": 20, "vision": 15}
    assert "audio_lengths" not in splits.train.extras


def test_aligned_audio_with_other_length_uses_own_padding(tmp_path: Path) -> None:
    raw = make_pickle(aligned=True)
    for split in raw.values():
        audio = np.zeros((len(split["id"]), 9, 2), np.float32)
        audio[:, :3] = 1.0
        split["audio"] = audio
    splits = load_mmsa_pickle(write(tmp_path / "a.pkl", raw))
    assert (splits.valid.lengths["audio"] == 3).all()


@pytest.mark.parametrize("aligned", [True, False])
def test_round_trip(tmp_path: Path, aligned: bool) -> None:
    source = write(tmp_path / "in.pkl", make_pickle(aligned))
    first = load_mmsa_pickle(source)
    save_mmsa_pickle(first, tmp_path / "out.pkl")
    second = load_mmsa_pickle(tmp_path / "out.pkl")
    assert_splits_equal(first, second)
    # The written file is plain MMSA: float32 features, label and length keys present.
    with open(tmp_path / "out.pkl", "rb") as handle:
        written = pickle.load(handle)
    assert written["train"]["audio"].dtype == np.float32
    assert written["train"]["regression_labels"].dtype == np.float32
    assert {"audio_lengths", "vision_lengths", "annotations"} <= set(written["train"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.pkl", "out.pkl"]  # no temp left


def test_save_replaces_existing_file(tmp_path: Path, aligned_file: Path) -> None:
    target = tmp_path / "out.pkl"
    target.write_bytes(b"old")
    save_mmsa_pickle(load_mmsa_pickle(aligned_file), target)
    assert len(load_mmsa_pickle(target).train) == SPLIT_SIZES["train"]


def test_text_only_pickle_is_valid(tmp_path: Path) -> None:
    raw = make_pickle()
    for split in raw.values():
        del split["audio"], split["vision"]
    splits = load_mmsa_pickle(write(tmp_path / "t.pkl", raw))
    assert splits.train.modalities == ("text",)


def test_classification_labels(tmp_path: Path, aligned_file: Path) -> None:
    splits = load_mmsa_pickle(aligned_file, label_key="classification_labels")
    assert splits.task == "classification" and splits.train.labels.dtype == torch.int64
    assert splits.class_names == ANNOTATIONS
    assert "regression_labels" in splits.train.extras
    save_mmsa_pickle(splits, tmp_path / "c.pkl")
    again = load_mmsa_pickle(tmp_path / "c.pkl", label_key="classification_labels")
    assert_splits_equal(splits, again)


def test_text_bert_mask_gives_text_lengths(tmp_path: Path) -> None:
    raw = make_pickle()
    split = raw["train"]
    n, max_len = len(split["id"]), split["text"].shape[1]
    split["text"] = np.ones_like(split["text"])  # BERT's [PAD] features are not zero
    tokens = np.zeros((n, 3, max_len), np.int64)
    tokens[:, 1, :2] = 1  # two real tokens each
    split["text_bert"] = tokens
    splits = load_mmsa_pickle(write(tmp_path / "b.pkl", raw))
    assert (splits.train.lengths["text"] == 2).all()
    assert (splits.train.features["text"][:, 2:] == 0).all()  # padding is zeroed
    np.testing.assert_array_equal(splits.train.extras["text_bert"], tokens)  # kept for writing


# --------------------------------------------------------------------------- cleaning
def test_infinite_audio_is_replaced_with_a_warning(tmp_path: Path) -> None:
    raw = make_pickle()
    raw["valid"]["audio"][0, 0, :2] = -np.inf
    raw["valid"]["audio"][1, 0, 0] = np.nan
    path = write(tmp_path / "inf.pkl", raw)
    with pytest.warns(UserWarning, match=r"inf\.pkl: split 'valid', audio .*replaced 3 NaN/inf"):
        splits = load_mmsa_pickle(path)
    assert torch.isfinite(splits.valid.features["audio"]).all()
    assert splits.valid.features["audio"][0, 0, 0] == 0


def test_lengths_are_clipped_with_warnings(tmp_path: Path) -> None:
    raw = make_pickle(aligned=False)
    lengths = np.asarray(raw["train"]["audio_lengths"])
    lengths[0], lengths[1] = 99, 0
    raw["train"]["audio_lengths"] = lengths
    path = write(tmp_path / "len.pkl", raw)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        splits = load_mmsa_pickle(path)
    messages = " | ".join(str(w.message) for w in caught)
    assert "exceed the padded length 20" in messages and "lengths are 0; set to 1" in messages
    assert splits.train.lengths["audio"][:2].tolist() == [20, 1]


def test_nan_labels_are_an_error(tmp_path: Path) -> None:
    raw = make_pickle()
    raw["test"]["regression_labels"][:2] = np.nan
    path = write(tmp_path / "nan.pkl", raw)
    with pytest.raises(DataFormatError, match=r"nan\.pkl.*'test'.*'regression_labels'.*2 NaN"):
        load_mmsa_pickle(path)


# --------------------------------------------------------------------------- errors
def _broken(tmp_path: Path, change: Any) -> Path:
    raw = make_pickle(aligned=False)
    change(raw)
    return write(tmp_path / "broken.pkl", raw)


@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        (lambda r: r.pop("valid"), r"missing split.*'valid'"),
        (lambda r: r["train"].pop("id"), r"'train'.*missing key 'id'"),
        (lambda r: r["train"].pop("regression_labels"), r"'train'.*'regression_labels'"),
        (lambda r: r["test"].update(audio=r["test"]["audio"][:, :, 0]),
         r"'test'.*key 'audio'.*N x L x D.*found shape \(4, 20\)"),
        (lambda r: r["test"].update(vision=r["test"]["vision"][:2]),
         r"'test'.*key 'vision' has 2 samples but the labels have 4"),
        (lambda r: r["valid"].update(audio_lengths=[1, 2]), r"'valid'.*'audio_lengths'.*N=3"),
        (lambda r: r["valid"].update(raw_text=["a"]), r"'valid'.*'raw_text'.*N=3"),
        (lambda r: r.update(train=[1, 2]), r"'train'.*expected a dict.*list"),
        (lambda r: r["train"].update(text=np.zeros((6, 7, 3), np.float32)),
         r"'valid' has feature sizes.*'text': 8.*'train' has.*'text': 3"),
    ],
)
def test_bad_content_names_file_split_and_key(tmp_path: Path, change: Any, pattern: str) -> None:
    path = _broken(tmp_path, change)
    with pytest.raises(DataFormatError, match=pattern) as info:
        load_mmsa_pickle(path)
    assert str(path) in str(info.value)


def test_not_a_dict(tmp_path: Path) -> None:
    path = write(tmp_path / "list.pkl", [1, 2, 3])
    with pytest.raises(DataFormatError, match=r"list\.pkl: expected a dict"):
        load_mmsa_pickle(path)


@pytest.mark.parametrize("cut", [0, 10, 0.5])
def test_truncated_file(tmp_path: Path, aligned_file: Path, cut: float) -> None:
    data = aligned_file.read_bytes()
    size = int(len(data) * cut) if isinstance(cut, float) else cut
    broken = tmp_path / "cut.pkl"
    broken.write_bytes(data[:size])
    with pytest.raises(DataFormatError, match=r"file .*cut\.pkl is not a readable pickle"):
        load_mmsa_pickle(broken)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.pkl"):
        load_mmsa_pickle(tmp_path / "nope.pkl")


def test_token_ids_only_explains_what_to_do(tmp_path: Path) -> None:
    raw = make_pickle()
    for split in raw.values():
        n, max_len = split["text"].shape[:2]
        split["text_bert"] = np.zeros((n, 3, max_len), np.int64)
        del split["text"]
    path = write(tmp_path / "bert.pkl", raw)
    with pytest.raises(DataFormatError, match=r"bert\.pkl.*token ids.*not text features.*prepare-text"):
        load_mmsa_pickle(path)
    splits = load_mmsa_pickle(path, text_key=None)
    assert splits.train.modalities == ("audio", "vision")


def test_non_sample_keys_are_reported(tmp_path: Path) -> None:
    raw = make_pickle()
    raw["train"]["note"] = "made by hand"
    with pytest.warns(UserWarning, match=r"\['note'\].*not kept"):
        load_mmsa_pickle(write(tmp_path / "n.pkl", raw))


# --------------------------------------------------------------------------- labels and ids
@pytest.mark.parametrize("bad", [42.0, -1e9, 10.0])
def test_scores_outside_the_sentiment_range_are_refused(tmp_path: Path, bad: float) -> None:
    raw = make_pickle()
    raw["valid"]["regression_labels"][2] = bad
    path = write(tmp_path / "range.pkl", raw)
    with pytest.raises(DataFormatError, match=r"range\.pkl \[split 'valid'\]: 1 sentiment label\(s\) "
                       r"outside \[-3, 3\]: index 2 \(id 'vid1\$_\$1'\)") as info:
        load_mmsa_pickle(path)
    assert f"{bad:g}" in str(info.value) and "clip_labels" in str(info.value)


def test_clip_labels_clips_with_a_warning(tmp_path: Path) -> None:
    raw = make_pickle()
    raw["train"]["regression_labels"][:2] = [42.0, -1e9]
    path = write(tmp_path / "clip.pkl", raw)
    with pytest.warns(UserWarning, match=r"'train'.*2 sentiment label.*clipped to \[-3, 3\]"):
        splits = load_mmsa_pickle(path, clip_labels=True)
    assert splits.train.labels[:2].tolist() == [3.0, -3.0]
    assert splits.train.labels.dtype == torch.float32


def test_class_ids_outside_0_to_c_minus_1_are_refused(tmp_path: Path) -> None:
    raw = make_pickle()
    raw["test"]["classification_labels"][1] = 10
    raw["test"]["annotations"][1] = "Oops"  # a stray annotation must not make it a class name
    path = write(tmp_path / "cls.pkl", raw)
    with pytest.raises(DataFormatError, match=r"cls\.pkl \[split 'test'\]: 1 class label\(s\) outside "
                       r"0\.\.3 .*index 1 \(id 'vid0\$_\$2'\) = 10"):
        load_mmsa_pickle(path, label_key="classification_labels")
    # regression labels are read as before: only the chosen label kind is checked
    assert len(load_mmsa_pickle(path).test) == SPLIT_SIZES["test"]


def test_duplicate_ids_are_refused_by_name(tmp_path: Path) -> None:
    raw = make_pickle()
    raw["train"]["id"][3] = raw["train"]["id"][0]
    path = write(tmp_path / "dup.pkl", raw)
    with pytest.raises(DataFormatError, match=r"dup\.pkl \[split 'train'\]: 1 id\(s\) occur more than "
                       r"once: 'vid0\$_\$1'"):
        load_mmsa_pickle(path)


def test_empty_split_is_named(tmp_path: Path) -> None:
    raw = make_pickle()
    raw["valid"] = {k: (v[:0] if hasattr(v, "shape") else v[:0]) for k, v in raw["valid"].items()}
    path = write(tmp_path / "empty.pkl", raw)
    with pytest.raises(DataFormatError, match=r"empty\.pkl \[split 'valid'\]: the split holds no samples"):
        load_mmsa_pickle(path)


# --------------------------------------------------------------------------- padding
def _front_padded(x: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """End-padded N x L x D -> the same clips with their real steps at the end."""
    out = np.zeros_like(x)
    steps = x.shape[1]
    for i, n in enumerate(lengths):
        out[i, steps - n :] = x[i, :n]
    return out


def test_front_padded_aligned_pickle_is_moved_to_the_front(tmp_path: Path) -> None:
    raw = make_pickle(aligned=True)
    expected = load_mmsa_pickle(write(tmp_path / "end.pkl", raw))
    for name, split in raw.items():
        lengths = expected[name].lengths["text"].numpy()
        for m in ("text", "audio", "vision"):
            split[m] = _front_padded(split[m], lengths)
    path = write(tmp_path / "front.pkl", raw)
    with pytest.warns(
        UserWarning, match=r"front\.pkl: split 'train': padded at the front.*text in \d+ clip.*audio.*vision"
    ):
        splits = load_mmsa_pickle(path)
    assert_splits_equal(splits, expected)


def test_front_padded_unaligned_pickle_with_lengths(tmp_path: Path) -> None:
    raw = make_pickle(aligned=False)
    expected = load_mmsa_pickle(write(tmp_path / "end.pkl", raw))
    for split in raw.values():
        split["audio"] = _front_padded(split["audio"], np.asarray(split["audio_lengths"]))
    with pytest.warns(UserWarning, match=r"padded at the front.*: audio in \d+ clip"):
        splits = load_mmsa_pickle(write(tmp_path / "front.pkl", raw))
    # without the repair the given lengths would keep the leading zeros and drop the real steps
    assert_splits_equal(splits, expected)


def test_front_padded_audio_beside_end_padded_text_is_refused(tmp_path: Path) -> None:
    raw = make_pickle(aligned=True)
    for split in raw.values():
        lengths = np.any(split["audio"] != 0, axis=2).sum(axis=1)
        split["audio"] = _front_padded(split["audio"], lengths)
    path = write(tmp_path / "mixed.pkl", raw)
    with pytest.raises(DataFormatError, match=r"mixed\.pkl \[split 'train'\]: audio is padded at the "
                       r"front but text at the end"):
        load_mmsa_pickle(path)


def test_full_length_clips_opening_with_a_zero_step_stay_as_they_are(tmp_path: Path) -> None:
    raw = make_pickle(aligned=False)
    for split in raw.values():
        n = len(split["id"])
        split["vision"] = np.random.default_rng(1).normal(size=(n, 15, 4)).astype(np.float32) + 5
        split["vision_lengths"] = np.full(n, 15)
    raw["train"]["vision"][0, 0] = 0.0  # one silent first frame is data, not padding
    splits = load_mmsa_pickle(write(tmp_path / "full.pkl", raw))
    assert splits.train.lengths["vision"][0] == 15 and splits.train.features["vision"][0, 0].abs().sum() == 0


def test_splits_with_different_padded_lengths_are_padded_alike(tmp_path: Path) -> None:
    raw = make_pickle(aligned=False)
    test = raw["test"]
    test["audio"] = np.concatenate([test["audio"], np.zeros((4, 5, 5), np.float32)], axis=1)  # L 25
    path = write(tmp_path / "lens.pkl", raw)
    with pytest.warns(
        UserWarning,
        match=r"lens\.pkl: the splits have different padded lengths \(audio: train 20, valid 20, test 25\)",
    ):
        splits = load_mmsa_pickle(path)
    assert {name: d.max_lengths()["audio"] for name, d in splits.items()} == {
        "train": 25, "valid": 25, "test": 25,
    }
    np.testing.assert_array_equal(splits.train.lengths["audio"].numpy(), raw["train"]["audio_lengths"])


def test_front_padded_text_beside_end_padded_audio_is_refused(tmp_path: Path) -> None:
    raw = make_pickle(aligned=True)
    for split in raw.values():
        lengths = np.any(split["text"] != 0, axis=2).sum(axis=1)
        split["text"] = _front_padded(split["text"], lengths)
    path = write(tmp_path / "mixed.pkl", raw)
    with pytest.raises(DataFormatError, match=r"mixed\.pkl \[split 'train'\]: text is padded at the front "
                       r"but audio is not in \d+ clip"):
        load_mmsa_pickle(path)
