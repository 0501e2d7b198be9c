"""Raw per-word inputs: the lazy store, the planted raw-clip dataset and RAVDESS's layout."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from fake_ravdess import fake_ravdess

from emofuse.data.dataset import DataFormatError
from emofuse.data.raw import LazyRawArray, write_clip
from emofuse.data.synthetic_raw import SyntheticRawConfig, make_synthetic_raw

SMALL = SyntheticRawConfig(n_train=24, n_valid=8, n_test=8, frames=6, size=24, n_mels=12, mel_steps=8)


def _store(tmp_path: Path, n: int = 5) -> LazyRawArray:
    files = [
        write_clip(tmp_path, f"{i:03d}", np.full((i + 1, 2, 3), i, dtype=np.uint8), "uint8") for i in range(n)
    ]
    return LazyRawArray(files, (2, 3), "uint8")


def test_lazy_array_views_read_nothing_and_load_pads(tmp_path: Path) -> None:
    store = _store(tmp_path)
    view = store[np.array([4, 1])]
    # a view is only a list of files: removing the others cannot break it, and it reads on load
    for i in (0, 2, 3):
        os.remove(store.files[i])
    out = view.load([0, 1], words=3)
    assert out.shape == (2, 3, 2, 3) and out.dtype == np.uint8
    assert (out[0] == 4).all()  # clip 4 has 5 words, cut to 3
    assert (out[1, :2] == 1).all() and (out[1, 2] == 0).all()  # clip 1 has 2 words, padded


def test_lazy_array_names_a_broken_clip_file(tmp_path: Path) -> None:
    store = _store(tmp_path, 2)
    Path(store.files[1]).write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(DataFormatError, match="001.npy"):
        store.load([1], words=2)
    wrong = LazyRawArray(store.files[:1], (3, 2), "uint8")
    with pytest.raises(DataFormatError, match="shape"):
        wrong.load([0], words=1)


def test_write_clip_leaves_no_temporary_file(tmp_path: Path) -> None:
    write_clip(tmp_path, "a", np.zeros((1, 2)), "float16")
    assert [p.name for p in tmp_path.iterdir()] == ["a.npy"]


def test_synthetic_raw_is_deterministic_and_cached(tmp_path: Path) -> None:
    a = make_synthetic_raw(SMALL, cache=tmp_path)
    b = make_synthetic_raw(SMALL, cache=tmp_path)  # reopened from the cache
    c = make_synthetic_raw(SMALL, cache=tmp_path / "fresh")  # written anew
    for other in (b, c):
        assert torch.equal(a.train.labels, other.train.labels)
        idx = np.arange(len(a.train))
        np.testing.assert_array_equal(
            a.train.extras["raw_vision"].load(idx, 6), other.train.extras["raw_vision"].load(idx, 6)
        )
        np.testing.assert_array_equal(
            a.test.extras["raw_audio"].load([0, 1], 6), other.test.extras["raw_audio"].load([0, 1], 6)
        )


def test_changing_the_distractor_never_changes_a_label(tmp_path: Path) -> None:
    a = make_synthetic_raw(SMALL, cache=tmp_path)
    other = SyntheticRawConfig(**{**SMALL.__dict__, "distractor_seed": 7})
    b = make_synthetic_raw(other, cache=tmp_path)
    assert torch.equal(a.train.labels, b.train.labels)
    frames_a = a.train.extras["raw_vision"].load([0], 6)
    frames_b = b.train.extras["raw_vision"].load([0], 6)
    assert (frames_a != frames_b).mean() > 0.05  # the pictures did change


def test_the_cue_patch_moves_in_the_labelled_direction(tmp_path: Path) -> None:
    data = make_synthetic_raw(SMALL, cache=tmp_path).train
    v = data.extras["V"]
    frames = data.extras["raw_vision"].load(np.arange(len(data)), 6).astype(np.float32)
    n_words = data.lengths["vision"].numpy()
    for i in range(len(data)):
        clip = frames[i, : n_words[i]].reshape(-1, SMALL.size, SMALL.size)
        # rows where the bright patch (0.95) sits; the checkerboard peaks at 0.9: their mean row in the
        # first and last frame
        rows = [np.nonzero((f >= 240).any(axis=1))[0].mean() for f in (clip[0], clip[-1])]
        shift = rows[1] - rows[0]
        if v[i] == 0:
            assert shift == 0
        else:
            assert np.sign(-shift) == v[i]  # up (+1) is towards row 0


def test_batches_carry_raw_words_trimmed_to_the_longest_clip(tmp_path: Path) -> None:
    data = make_synthetic_raw(SMALL, cache=tmp_path).train
    batch = data.make_batch(torch.tensor([0, 1, 2]))
    words = int(data.lengths["vision"][:3].max())
    assert batch.extras["raw_vision"].shape == (3, words, SMALL.frames, SMALL.size, SMALL.size)
    assert batch.extras["raw_audio"].shape == (3, words, SMALL.n_mels, SMALL.mel_steps)
    assert batch.masks["vision"].shape == (3, words)
    # a subset is still lazy and indexes the same clips
    sub = data.subset([2, 0])
    np.testing.assert_array_equal(sub.extras["raw_audio"].load([0], 6), data.extras["raw_audio"].load([2], 6))


# ------------------------------------------------------------------ RAVDESS layout
def test_ravdess_folder_loads_split_by_actor(tmp_path: Path) -> None:
    from emofuse.data.loading import load_splits
    from emofuse.data.ravdess import EMOTIONS

    fake_ravdess(tmp_path / "RavdessDataSet")
    os.environ["EMOFUSE_CACHE"] = str(tmp_path / "cache")
    try:
        splits = load_splits(str(tmp_path))
    finally:
        del os.environ["EMOFUSE_CACHE"]
    assert splits.class_names == EMOTIONS and splits.task == "classification"
    assert [len(d) for _, d in splits.items()] == [4, 2, 2]  # actors 1-2 / 17 / 21
    assert all(i.startswith("Actor_21") for i in splits.test.ids)
    assert sorted(splits.train.labels.tolist()) == [0, 0, 4, 4]  # neutral (01) and angry (05)
    batch = splits.train.make_batch(torch.arange(4))
    assert batch.extras["raw_audio"].shape[2:] == (64, 50)  # 64 mels x 0.5 s at 10 ms hops
    # 0.9 s of tone after the silence is trimmed: two half-second windows
    assert splits.train.lengths["audio"].tolist() == [2, 2, 2, 2]


def test_ravdess_speaker_norm_removes_each_actors_envelope_and_keeps_their_level(tmp_path: Path) -> None:
    from emofuse.data.ravdess import RavdessConfig, load_ravdess

    fake_ravdess(tmp_path)
    plain = load_ravdess(tmp_path, cache=tmp_path / "cache", progress=False)
    normed = load_ravdess(
        tmp_path, RavdessConfig(speaker_norm="mean"), cache=tmp_path / "cache", progress=False
    )
    for split in ("train", "valid", "test"):
        p, n = getattr(plain, split), getattr(normed, split)
        assert (
            p.ids == n.ids
            and torch.equal(p.labels, n.labels)
            and torch.equal(p.lengths["audio"], n.lengths["audio"])
        )
        actors = sorted({i.split("$_$")[0] for i in p.ids})
        for actor in actors:
            idx = [k for k, i in enumerate(p.ids) if i.startswith(actor)]
            words = int(p.lengths["audio"][idx].max())
            before = p.extras["raw_audio"].load(idx, words).astype(np.float64)
            after = n.extras["raw_audio"].load(idx, words).astype(np.float64)
            band_before, band_after = before.mean(axis=(0, 1, 3)), after.mean(axis=(0, 1, 3))
            # the actor's envelope is gone (every band at one level) and that level is theirs
            np.testing.assert_allclose(band_after, band_before.mean(), atol=0.05)
            # one shift per band, the same for each of the actor's clips (their differences stay)
            shift = before - after
            np.testing.assert_allclose(shift, np.broadcast_to(shift[:1, :1, :, :1], shift.shape), atol=0.05)
    # meanvar: every band of every actor at mean -50 dB and spread 20 dB over their frames
    standard = load_ravdess(
        tmp_path, RavdessConfig(speaker_norm="meanvar"), cache=tmp_path / "cache", progress=False
    )
    for split in ("train", "valid", "test"):
        d = getattr(standard, split)
        for actor in sorted({i.split("$_$")[0] for i in d.ids}):
            idx = [k for k, i in enumerate(d.ids) if i.startswith(actor)]
            x = d.extras["raw_audio"].load(idx, int(d.lengths["audio"][idx].max())).astype(np.float64)
            bands = x.transpose(2, 0, 1, 3).reshape(x.shape[2], -1)
            np.testing.assert_allclose(bands.mean(axis=1), -50.0, atol=0.05)
            spread = bands.std(axis=1)
            assert np.all((np.abs(spread - 20.0) < 0.1) | (spread < 0.1))  # a constant band stays constant
            assert np.isfinite(x).all()
    with pytest.raises(ValueError, match="speaker_norm must be one of none, mean, meanvar"):
        RavdessConfig(speaker_norm="z")


def test_ravdess_names_a_bad_file(tmp_path: Path) -> None:
    from emofuse.data.ravdess import load_ravdess, parse_name

    with pytest.raises(DataFormatError, match="not a RAVDESS file name"):
        parse_name(Path("clip.wav"))
    with pytest.raises(DataFormatError, match="emotion code 09"):
        parse_name(Path("03-01-09-01-01-01-01.wav"))
    fake_ravdess(tmp_path)
    (tmp_path / "Actor_01" / "03-01-01-01-02-01-01.wav").write_bytes(b"RIFF broken")
    with pytest.raises(DataFormatError, match="03-01-01-01-02-01-01.wav"):
        load_ravdess(tmp_path, cache=tmp_path / "cache", progress=False)


def test_data_options_configure_computed_sources_and_are_refused_elsewhere(tmp_path: Path) -> None:
    from emofuse.data.loading import load_splits

    os.environ["EMOFUSE_CACHE"] = str(tmp_path / "cache")
    try:
        small = load_splits(
            "synthetic-raw", data_options={"n_train": 12, "n_valid": 4, "n_test": 4, "size": 16}
        )
        assert [len(d) for _, d in small.items()] == [12, 4, 4]
        assert small.train.extras["raw_vision"].item_shape[1:] == (16, 16)
        with pytest.raises(DataFormatError, match="unknown data option.*n_trian"):
            load_splits("synthetic-raw", data_options={"n_trian": 3})
        sized = load_splits("synthetic-unaligned", data_options={"n_train": 30, "n_valid": 5, "n_test": 5})
        assert [len(d) for _, d in sized.items()] == [30, 5, 5]
        assert (
            sized.train.features["audio"].shape[1] > sized.train.features["text"].shape[1]
        )  # still unaligned
        with pytest.raises(DataFormatError, match="aligned is set by the source's name"):
            load_splits("synthetic", data_options={"aligned": False})
        with pytest.raises(DataFormatError, match="synthetic sources and RAVDESS folders only"):
            load_splits(str(tmp_path / "x.pkl"), data_options={"n_train": 3})
        fake_ravdess(tmp_path / "rav")
        whisper = load_splits(str(tmp_path / "rav"), data_options={"n_mels": 80, "n_fft": 400})
        assert whisper.train.make_batch(torch.arange(2)).extras["raw_audio"].shape[2] == 80
    finally:
        del os.environ["EMOFUSE_CACHE"]
