"""CMU-MultimodalSDK computational sequences: file round trips, alignment, segmentation."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import torch

from emofuse.data import (
    ComputationalSequence,
    DataFormatError,
    align_to_reference,
    csd_to_splits,
    pad_sequence,
    read_csd,
    segment,
    standard_folds,
    write_csd,
)
from emofuse.data.csd import SDK_METADATA_KEYS
from emofuse.data.loading import TextOptions, load_splits
from emofuse.data.shared_data import missing_reason, shared_data_file


# --------------------------------------------------------------------------- fixtures
def shared(*parts: str) -> Path:
    path = shared_data_file(*parts)
    if path is None:
        pytest.skip(missing_reason(*parts))
    return path


def iv(*pairs: tuple[float, float]) -> np.ndarray:
    return np.array(pairs, dtype=np.float64).reshape(-1, 2)


def frames_123() -> ComputationalSequence:
    """Frames [0,1), [1,2), [2,3) with values 1, 2, 3 (and 10, 20, 30 in a second column)."""
    features = np.array([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0]], np.float32)
    return ComputationalSequence("frames", {"v": (features, iv((0, 1), (1, 2), (2, 3)))})


def words(*pairs: tuple[float, float]) -> ComputationalSequence:
    tokens = np.array([[f"w{i}".encode()] for i in range(len(pairs))])
    return ComputationalSequence("words", {"v": (tokens, iv(*pairs))})


def random_sequence(rng: np.random.Generator, name: str, vids: list[str]) -> ComputationalSequence:
    data = {}
    for vid in vids:
        starts = np.sort(rng.uniform(0, 20, size=40))
        ends = starts + rng.uniform(0.01, 1.5, size=40)
        data[vid] = (rng.normal(size=(40, 3)).astype(np.float32), np.stack([starts, ends], 1))
    return ComputationalSequence(name, data, {"dataset name": "toy", "dimension names": ["a", "b", "c"]})


# --------------------------------------------------------------------------- files
def test_write_read_round_trip(tmp_path: Path) -> None:
    seq = random_sequence(np.random.default_rng(0), "COVAREP", ["a", "b-1"])
    path = tmp_path / "covarep.csd"
    write_csd(seq, path)
    back = read_csd(path)
    assert back.name == "COVAREP" and back.video_ids == ["a", "b-1"]
    for vid, (features, intervals) in seq.data.items():
        np.testing.assert_array_equal(back.data[vid][0], features)
        np.testing.assert_array_equal(back.data[vid][1], intervals)
    assert back.metadata["dataset name"] == "toy"
    assert back.metadata["dimension names"] == ["a", "b", "c"]
    assert back.metadata["root name"] == "COVAREP"
    assert [p.name for p in tmp_path.iterdir()] == ["covarep.csd"]  # no temp file left


def test_written_file_reads_like_the_sdk(tmp_path: Path) -> None:
    """The SDK opens the first root, reads data/<vid>/{features,intervals} and json-loads
    metadata/<key>[0] for every template key."""
    path = tmp_path / "w.csd"
    write_csd(words((0, 1), (1, 2)), path)
    with h5py.File(path, "r") as handle:
        root = handle[list(handle.keys())[0]]  # noqa: RUF015 - the SDK's own idiom
        assert set(root["data"]["v"]) == {"features", "intervals"}
        metadata = {k: json.loads(root["metadata"][k][0]) for k in root["metadata"]}
        assert root["data"]["v"]["features"][0, 0] == b"w0"
    assert set(SDK_METADATA_KEYS) <= set(metadata)
    assert metadata["root name"] == "words"
    assert read_csd(path).data["v"][0][1, 0] == b"w1"


def test_unicode_words_are_stored_as_utf8(tmp_path: Path) -> None:
    seq = ComputationalSequence("w", {"v": (np.array([["café"], ["naïve"]]), iv((0, 1), (1, 2)))})
    write_csd(seq, tmp_path / "w.csd")
    assert read_csd(tmp_path / "w.csd").data["v"][0][1, 0].decode("utf-8") == "naïve"


def test_not_hdf5(tmp_path: Path) -> None:
    path = tmp_path / "fake.csd"
    path.write_text("not an hdf5 file")
    with pytest.raises(DataFormatError, match=r"file .*fake\.csd is not a readable HDF5"):
        read_csd(path)


def test_truncated_file(tmp_path: Path) -> None:
    path = tmp_path / "full.csd"
    write_csd(random_sequence(np.random.default_rng(1), "x", ["a", "b"]), path, compression=None)
    cut = tmp_path / "cut.csd"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataFormatError, match=r"cut\.csd"):
        read_csd(cut)


def _raw_file(path: Path, features: np.ndarray, intervals: np.ndarray) -> Path:
    with h5py.File(path, "w") as handle:
        group = handle.create_group("root/data/vid1")
        group["features"] = features
        group["intervals"] = intervals
        handle.create_group("root/metadata")
    return path


def test_length_mismatch(tmp_path: Path) -> None:
    path = _raw_file(tmp_path / "m.csd", np.zeros((3, 2)), iv((0, 1), (1, 2)))
    with pytest.raises(DataFormatError, match=r"m\.csd: video 'vid1': 3 feature rows but 2 intervals"):
        read_csd(path)


def test_backwards_intervals(tmp_path: Path) -> None:
    path = _raw_file(tmp_path / "b.csd", np.zeros((2, 2)), iv((0, 1), (3, 2)))
    with pytest.raises(DataFormatError, match=r"b\.csd: video 'vid1': 1 intervals end before"):
        read_csd(path)


def test_nan_features_replaced_with_warning(tmp_path: Path) -> None:
    features = np.array([[1.0, np.nan], [-np.inf, 2.0]])
    path = _raw_file(tmp_path / "n.csd", features, iv((0, 1), (1, 2)))
    with pytest.warns(UserWarning, match=r"n\.csd: replaced 2 NaN/inf"):
        seq = read_csd(path)
    np.testing.assert_array_equal(seq.data["vid1"][0], [[1.0, 0.0], [0.0, 2.0]])


def test_missing_data_group(tmp_path: Path) -> None:
    path = tmp_path / "e.csd"
    with h5py.File(path, "w") as handle:
        handle.create_group("root/metadata")
    with pytest.raises(DataFormatError, match=r"e\.csd: group '/root/data' is missing"):
        read_csd(path)


# --------------------------------------------------------------------------- alignment
def test_alignment_averages_exactly_the_overlapping_frames() -> None:
    reference = words((0.5, 2.5), (1.0, 2.0), (5.0, 6.0), (2.9, 3.5))
    with pytest.warns(UserWarning, match="without any overlapping frame"):
        aligned, empty = align_to_reference(reference, {"audio": frames_123()})
    features, intervals = aligned["audio"].data["v"]
    # [0.5,2.5) overlaps all three frames; [1,2) only the middle one (touching is no overlap);
    # [5,6) none -> zeros; [2.9,3.5) only the last one.
    np.testing.assert_allclose(features, [[2.0, 20.0], [2.0, 20.0], [0.0, 0.0], [3.0, 30.0]])
    np.testing.assert_array_equal(intervals, reference.data["v"][1])
    assert empty == {"audio": 1} and features.dtype == np.float32


def test_a_frame_belongs_to_a_word_it_overlaps_wherever_its_centre_lies() -> None:
    """The SDK's rule (mmdataset.__intersect_and_copy): overlap, not the frame's centre. The word
    [0.9, 2.1) holds frame [1, 2) whole and overlaps [0, 1) and [2, 3) by 0.1 s each, though their
    centres (0.5, 2.5) lie outside it: all three count, as they do in `emofuse extract`."""
    aligned, empty = align_to_reference(words((0.9, 2.1)), [frames_123()])
    assert empty == {"frames": 0}
    np.testing.assert_allclose(aligned["frames"].data["v"][0], [[2.0, 20.0]])  # (1 + 2 + 3) / 3, not 2 alone
    aligned, _ = align_to_reference(words((0.9, 2.1)), [frames_123()], collapse="sum")
    assert aligned["frames"].data["v"][0][0, 0] == 6.0


@pytest.mark.parametrize(("collapse", "expected"), [("sum", 6.0), ("max", 3.0), ("min", 1.0)])
def test_other_collapse_functions(collapse: str, expected: float) -> None:
    aligned, _ = align_to_reference(words((0.5, 2.5)), [frames_123()], collapse=collapse)
    assert aligned["frames"].data["v"][0][0, 0] == expected


def test_vectorised_alignment_matches_a_plain_loop() -> None:
    rng = np.random.default_rng(3)
    ref = random_sequence(rng, "ref", ["a", "b"])
    other = random_sequence(rng, "other", ["a", "b"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the random data may leave a word without frames
        aligned, _ = align_to_reference(ref, [other])
    for vid in ("a", "b"):
        feats, frames_iv = other.data[vid]
        for row, (start, end) in enumerate(ref.data[vid][1]):
            overlap = np.minimum(end, frames_iv[:, 1]) - np.maximum(start, frames_iv[:, 0]) > 1e-6
            want = feats[overlap].mean(0) if overlap.any() else np.zeros(3)
            np.testing.assert_allclose(aligned["other"].data[vid][0][row], want, rtol=1e-5, atol=1e-6)


def test_video_missing_from_other_sequence_gets_zeros() -> None:
    reference = words((0, 1), (1, 2))
    other = ComputationalSequence("x", {"other": frames_123().data["v"]})
    with pytest.warns(UserWarning):
        aligned, empty = align_to_reference(reference, [other])
    assert empty == {"x": 2} and not aligned["x"].data["v"][0].any()


def test_words_cannot_be_averaged() -> None:
    with pytest.raises(DataFormatError, match="holds words"):
        align_to_reference(frames_123(), [words((0, 1))])


# --------------------------------------------------------------------------- segmentation
def test_segment_splits_frames_by_label_intervals() -> None:
    labels = ComputationalSequence(
        "labels", {"v": (np.array([[1.5], [-2.0], [0.0]]), iv((0.5, 1.5), (2.0, 3.0), (7, 8)))}
    )
    segments, values = segment(frames_123(), labels)
    assert list(segments) == ["v[0]", "v[1]", "v[2]"]
    features, intervals = segments["v[0]"]
    np.testing.assert_array_equal(features[:, 0], [1.0, 2.0])
    np.testing.assert_array_equal(intervals, [[0.5, 1.0], [1.0, 1.5]])  # clipped like the SDK
    np.testing.assert_array_equal(segments["v[1]"][0][:, 0], [3.0])
    assert len(segments["v[2]"][0]) == 0  # no frame: returned empty, caller decides
    assert values["v[1]"].tolist() == [-2.0]


def test_zero_length_interval_takes_the_frame_containing_it() -> None:
    labels = ComputationalSequence("labels", {"v": (np.ones((2, 1)), iv((1.5, 1.5), (2.0, 2.0)))})
    segments, _ = segment(frames_123(), labels)
    assert segments["v[0]"][0][:, 0].tolist() == [2.0]
    assert segments["v[1]"][0][:, 0].tolist() == [3.0]  # half-open: the frame starting at t


def test_segment_skips_unknown_videos_with_warning() -> None:
    labels = ComputationalSequence("labels", {"zzz": (np.ones((1, 1)), iv((0, 1)))})
    with pytest.warns(UserWarning, match="1 labelled videos are absent"):
        segments, _ = segment(frames_123(), labels)
    assert segments == {}


@pytest.mark.parametrize(
    ("side", "max_len", "rows", "length"),
    [("post", 5, [1, 2, 3, 0, 0], 3), ("pre", 5, [0, 0, 1, 2, 3], 3),
     ("post", 2, [1, 2], 2), ("pre", 2, [2, 3], 2)],
)
def test_pad_sequence(side: str, max_len: int, rows: list[int], length: int) -> None:
    padded, got = pad_sequence(np.array([[1.0], [2.0], [3.0]]), max_len, side=side)
    assert padded[:, 0].tolist() == rows and got == length


def test_pad_empty_and_bad_arguments() -> None:
    padded, length = pad_sequence(np.zeros((0, 4)), 3)
    assert padded.shape == (3, 4) and length == 0
    with pytest.raises(ValueError, match="side"):
        pad_sequence(np.zeros((1, 1)), 3, side="middle")


def test_standard_folds_validation(tmp_path: Path) -> None:
    path = tmp_path / "folds.json"
    path.write_text(json.dumps({"standard_train_fold": ["a"], "standard_valid_fold": ["b"]}))
    with pytest.raises(DataFormatError, match=r"folds\.json: key 'standard_test_fold'"):
        standard_folds(path)
    path.write_text(json.dumps({"standard_train_fold": ["a"], "standard_valid_fold": ["a"],
                                "standard_test_fold": []}))
    with pytest.raises(DataFormatError, match="'a' is in both train and valid"):
        standard_folds(path)
    path.write_text("{")
    with pytest.raises(DataFormatError, match="not readable JSON"):
        standard_folds(path)


def _toy_videos() -> tuple[dict[str, ComputationalSequence], ComputationalSequence]:
    """Four videos, two labelled segments each; audio at 1 s frames, words every 0.5 s."""
    audio, word_seq, labels = {}, {}, {}
    for k, vid in enumerate(["v0", "v1", "v2", "v3"]):
        starts = np.arange(0.0, 10.0)
        audio[vid] = (np.full((10, 2), k, np.float32) + starts[:, None], np.stack([starts, starts + 1], 1))
        w_starts = np.arange(0.0, 10.0, 0.5)
        tokens = np.array([[b"sp" if i % 4 == 3 else f"{vid}w{i}".encode()] for i in range(20)])
        word_seq[vid] = (tokens, np.stack([w_starts, w_starts + 0.5], 1))
        score = min(k, 2) + 0.5  # sentiment scores lie in [-3, 3]
        labels[vid] = (np.array([[score], [-score]]), iv((0, 2), (2.0, 7.0)))
    sequences = {"audio": ComputationalSequence("audio", audio),
                 "words": ComputationalSequence("words", word_seq)}
    return sequences, ComputationalSequence("labels", labels, {"dataset name": "TOY"})


def test_csd_to_splits() -> None:
    sequences, labels = _toy_videos()
    folds = {"train": ["v0", "v1"], "valid": ["v2"], "test": ["v3", "v9"]}  # v9 unknown: harmless
    splits = csd_to_splits({"audio": sequences["audio"]}, labels, folds, max_len=4)
    assert splits.name == "TOY" and [len(d) for _, d in splits.items()] == [4, 2, 2]
    train = splits.train
    assert train.ids == ["v0$_$1", "v0$_$2", "v1$_$1", "v1$_$2"]
    assert train.lengths["audio"].tolist() == [2, 4, 2, 4]  # segment 2 (5 frames) truncated to 4
    assert train.features["audio"].shape == (4, 4, 2)
    assert train.features["audio"][0, :, 0].tolist() == [0.0, 1.0, 0.0, 0.0]
    assert train.labels.tolist() == [0.5, -0.5, 1.5, -1.5]
    assert train.raw_text == ["", "", "", ""]


def test_csd_to_splits_text_and_dropping() -> None:
    sequences, labels = _toy_videos()
    folds = {"train": ["v0"], "valid": ["v1"], "test": ["v2"]}  # v3 in no fold
    with pytest.warns(UserWarning, match="'video in no fold': 2"):
        splits = csd_to_splits(sequences, labels, folds, max_len={"audio": 8})
    assert splits.train.raw_text[0] == "v0w0 v0w1 v0w2"  # 'sp' dropped
    assert splits.valid.modalities == ("audio",)


def test_csd_to_splits_empty_fold_is_explained() -> None:
    sequences, labels = _toy_videos()
    folds = {"train": ["v0"], "valid": [], "test": ["v1"]}
    with pytest.warns(UserWarning), pytest.raises(DataFormatError, match="'valid' fold"):
        csd_to_splits({"audio": sequences["audio"]}, labels, folds, max_len=4)


# --------------------------------------------------------------------------- real files
def test_real_mosi_opinion_labels(tmp_path: Path) -> None:
    path = shared("mosi", "CMU_MOSI_Opinion_Labels.csd")
    seq = read_csd(path)
    assert seq.name == "Opinion Segment Labels" and len(seq.data) == 93
    assert sum(len(f) for f, _ in seq.data.values()) == 2199
    features, intervals = seq.data["03bSnISJMiM"]
    assert features[0, 0] == pytest.approx(2.4)
    np.testing.assert_allclose(intervals[0], [51.9045, 55.9454], atol=1e-4)
    assert seq.metadata["dataset name"] == "CMU-MOSI"
    assert seq.metadata["dimension names"] == ["sentiment score"]
    write_csd(seq, tmp_path / "copy.csd")
    back = read_csd(tmp_path / "copy.csd")
    assert back.metadata == seq.metadata
    for vid, (f, i) in seq.data.items():
        np.testing.assert_array_equal(back.data[vid][0], f)
        np.testing.assert_array_equal(back.data[vid][1], i)


def test_real_standard_folds() -> None:
    folds = standard_folds(shared("mosi", "standard_folds.json"))
    assert {k: len(v) for k, v in folds.items()} == {"train": 52, "valid": 10, "test": 31}


def test_real_labels_to_splits_match_the_standard_split() -> None:
    labels = read_csd(shared("mosi", "CMU_MOSI_Opinion_Labels.csd"))
    folds = standard_folds(shared("mosi", "standard_folds.json"))
    # A synthetic 2 Hz feature stream covering every video gives each segment some frames.
    audio = {}
    for vid, (_, intervals) in labels.data.items():
        starts = np.arange(0.0, float(intervals[:, 1].max()) + 1.0, 0.5)
        audio[vid] = (starts[:, None].astype(np.float32), np.stack([starts, starts + 0.5], 1))
    splits = csd_to_splits({"audio": ComputationalSequence("audio", audio)}, labels, folds, 50)
    assert [len(d) for _, d in splits.items()] == [1284, 229, 686]
    first = splits.train.ids.index("03bSnISJMiM$_$1")
    assert splits.train.labels[first].item() == pytest.approx(2.4)


# --------------------------------------------------------------------------- damaged files
def _h5(path: Path, fill: Callable[[h5py.File], object]) -> Path:
    with h5py.File(path, "w") as handle:
        handle.create_group("root/metadata")
        fill(handle)
    return path


def _video(handle: h5py.File, features: Any, intervals: Any = None) -> None:
    group = handle.create_group("root/data/vid1")
    group["features"] = features
    group["intervals"] = iv((0, 1), (1, 2)) if intervals is None else intervals


_MISSING = h5py.ExternalLink("no-such-file.h5", "/x")  # h5py raises KeyError on access


@pytest.mark.parametrize(
    ("fill", "pattern"),
    [
        (lambda h: h.create_group("root/data"), r"holds no video"),
        (lambda h: _video(h, 1.0), r"video 'vid1': features must be m x n, found shape \(\)"),
        (lambda h: _video(h, np.zeros(2, dtype=[("a", "f4"), ("b", "i4")])),
         r"video 'vid1': features must be numbers or word strings"),
        (lambda h: _video(h, _MISSING), r"video 'vid1': expected datasets 'features' and 'intervals'"),
        (lambda h: h["root"].__setitem__("data", _MISSING), r"damaged computational sequence \(KeyError"),
        (lambda h: (_video(h, np.zeros((2, 2))), h["root/metadata"].__setitem__("k", _MISSING)),
         r"damaged computational sequence"),
    ],
    ids=["no-video", "scalar-features", "compound-features", "dangling-features", "dangling-data",
         "dangling-metadata"],
)
def test_damaged_files_raise_a_format_error_naming_the_file(
    tmp_path: Path, fill: Callable[[h5py.File], object], pattern: str
) -> None:
    path = _h5(tmp_path / "damaged.csd", fill)
    with pytest.raises(DataFormatError, match=r"damaged\.csd: .*" + pattern):
        read_csd(path)


# --------------------------------------------------------------------------- a folder of files
WORDS_PER_VIDEO = 8  # 0.5 s each; word 5 is the silence token 'sp'
TOY_FOLDS = {"standard_train_fold": ["v0"], "standard_valid_fold": ["v1"], "standard_test_fold": ["v2"]}


def _toy_folder(folder: Path, labels: tuple[float, float] = (1.5, -0.5)) -> Path:
    """A MOSI-shaped folder: words, GloVe-like vectors, COVAREP-like audio at 0.25 s, Facet-like
    vision at 1 s, opinion labels for [0, 2) and [2, 4) s of each video, and the folds."""
    folder.mkdir()
    words, vectors, audio, vision, label_data = {}, {}, {}, {}, {}
    for k, vid in enumerate(["v0", "v1", "v2"]):
        starts = np.arange(WORDS_PER_VIDEO) * 0.5
        word_iv = np.stack([starts, starts + 0.5], 1)
        tokens = [b"sp" if i == 5 else f"{vid}w{i}".encode() for i in range(WORDS_PER_VIDEO)]
        words[vid] = (np.array(tokens)[:, None], word_iv)
        vec = np.stack([starts * 10 + k, -starts], 1).astype(np.float32)
        vec[5] = 0.0  # the SDK's vector for 'sp'
        vectors[vid] = (vec, word_iv)
        a_starts = np.arange(16) * 0.25
        audio[vid] = (
            a_starts[:, None].astype(np.float32) + 100 * k,
            np.stack([a_starts, a_starts + 0.25], 1),
        )
        v_starts = np.arange(4.0)
        vision[vid] = (
            np.stack([v_starts, v_starts], 1).astype(np.float32),
            np.stack([v_starts, v_starts + 1], 1),
        )
        label_data[vid] = (np.array([[labels[0] + k / 2], [labels[1]]]), iv((0, 2), (2, 4)))
    for name, data in [("CMU_TOY_TimestampedWords", words), ("CMU_TOY_TimestampedWordVectors", vectors),
                       ("CMU_TOY_COVAREP", audio), ("CMU_TOY_Visual_Facet_42", vision),
                       ("CMU_TOY_TimestampedPhones", audio), ("CMU_TOY_Opinion_Labels", label_data)]:
        write_csd(ComputationalSequence(name, data, {"dataset name": "TOY"}), folder / f"{name}.csd")
    (folder / "standard_folds.json").write_text(json.dumps(TOY_FOLDS))
    return folder


def test_csd_folder_loads_aligned_to_words_by_the_standard_folds(tmp_path: Path) -> None:
    folder = _toy_folder(tmp_path / "toy")
    with pytest.warns(UserWarning, match=r"ignoring \['CMU_TOY_TimestampedPhones\.csd'\]"):
        splits = load_splits(str(folder), TextOptions(max_words=6))
    assert [len(d) for _, d in splits.items()] == [2, 2, 2] and splits.name == "toy"
    train = splits.train
    assert train.ids == ["v0$_$1", "v0$_$2"] and train.labels.tolist() == [1.5, -0.5]
    assert train.raw_text == ["v0w0 v0w1 v0w2 v0w3", "v0w4 v0w6 v0w7"]  # 'sp' is no word
    assert train.lengths["text"].tolist() == [4, 3] and train.max_lengths()["audio"] == 6
    for m in ("audio", "vision"):
        assert torch.equal(train.lengths[m], train.lengths["text"])  # one step per word
    # word j of the second segment: words 4, 6, 7 (starting 2.0, 3.0, 3.5 s)
    starts = np.array([2.0, 3.0, 3.5])
    np.testing.assert_allclose(train.features["text"][1, :3, 0], starts * 10)
    np.testing.assert_allclose(train.features["audio"][1, :3, 0], starts + 0.125)  # 2 frames each
    np.testing.assert_allclose(train.features["vision"][1, :3, 0], np.floor(starts))
    assert (train.features["audio"][1, 3:] == 0).all()
    assert splits.test.labels.tolist() == [2.5, -0.5]


def test_csd_folder_with_two_files_for_one_modality_lists_them(tmp_path: Path) -> None:
    folder = _toy_folder(tmp_path / "toy")
    (folder / "CMU_TOY_Visual_OpenFace_2.csd").write_bytes(
        (folder / "CMU_TOY_Visual_Facet_42.csd").read_bytes()
    )
    with pytest.warns(UserWarning), pytest.raises(
        DataFormatError, match=r"more than one .*'vision': \['CMU_TOY_Visual_Facet_42\.csd', "
        r"'CMU_TOY_Visual_OpenFace_2\.csd'\]"
    ):
        load_splits(str(folder))


def test_csd_folder_needs_folds_and_one_labels_file(tmp_path: Path) -> None:
    folder = _toy_folder(tmp_path / "toy")
    (folder / "standard_folds.json").unlink()
    with pytest.warns(UserWarning), pytest.raises(DataFormatError, match=r"standard_folds\.json is missing"):
        load_splits(str(folder))
    (folder / "CMU_TOY_Opinion_Labels.csd").unlink()
    with pytest.raises(DataFormatError, match=r"exactly one labels file .*found none"):
        load_splits(str(folder))
    with pytest.raises(DataFormatError, match=r"give the folder"):
        load_splits(str(folder / "CMU_TOY_COVAREP.csd"))


def test_csd_labels_outside_the_range_name_file_split_and_segment(tmp_path: Path) -> None:
    folder = _toy_folder(tmp_path / "toy", labels=(1.5, 42.0))
    with pytest.warns(UserWarning), pytest.raises(
        DataFormatError, match=r"CMU_TOY_Opinion_Labels\.csd \[split 'train'\]: 1 sentiment label\(s\) "
        r"outside \[-3, 3\]: segment 'v0\$_\$2' = 42"
    ):
        load_splits(str(folder))
    with pytest.warns(UserWarning, match="clipped"):
        splits = load_splits(str(folder), clip_labels=True)
    assert splits.train.labels.tolist() == [1.5, 3.0] and splits.valid.labels.tolist() == [2.0, 3.0]
