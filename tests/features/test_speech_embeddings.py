"""Clip embeddings from a frozen speech encoder's layers, and RAVDESS loaded as such embeddings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from fake_ravdess import fake_ravdess

from emofuse.errors import OptionError
from emofuse.features.speech_embeddings import trim_silence, whisper_layer_statistics
from emofuse.features.whisper_encoder import WhisperEncoder


def _tiny_encoder() -> WhisperEncoder:
    torch.manual_seed(0)
    encoder = WhisperEncoder(n_mels=80, dim=16, heads=2, layers=2, ffn_dim=32, positions=8).eval()
    with torch.no_grad():
        encoder.positions.normal_()
    return encoder


def test_layer_statistics_are_each_hidden_states_mean_and_std() -> None:
    encoder = _tiny_encoder()
    mel = np.random.default_rng(0).normal(-40, 10, (80, 13)).astype(np.float32)
    rows = whisper_layer_statistics(mel, encoder)
    assert rows.shape == (3, 32)  # stem + 2 layers, mean and std of 16 dims
    from emofuse.features.whisper_encoder import db_to_whisper_scale

    with torch.no_grad():
        h = encoder.embed(db_to_whisper_scale(torch.from_numpy(mel)[None]))
        first = encoder.layers[0](h)
        last = encoder.norm(encoder.layers[1](first))
    for row, state in zip(rows, (h, first, last)):
        np.testing.assert_allclose(row[:16], state[0].mean(0).numpy(), atol=1e-5)
        np.testing.assert_allclose(row[16:], state[0].std(0, unbiased=False).numpy(), atol=1e-5)


def test_a_clip_longer_than_the_window_is_encoded_in_pieces_and_pooled_over_all() -> None:
    encoder = _tiny_encoder()  # 8 positions: 16 frames a piece
    mel = np.random.default_rng(1).normal(-40, 10, (80, 40)).astype(np.float32)
    rows = whisper_layer_statistics(mel, encoder)
    from emofuse.features.whisper_encoder import db_to_whisper_scale

    with torch.no_grad():
        stems = [encoder.embed(db_to_whisper_scale(torch.from_numpy(mel[:, s : s + 16])[None]))[0]
                 for s in (0, 16, 32)]
    frames = torch.cat(stems)  # 8 + 8 + 4 positions
    np.testing.assert_allclose(rows[0, :16], frames.mean(0).numpy(), atol=1e-5)


def test_trim_silence_keeps_the_loud_span() -> None:
    mel = np.full((4, 10), -100.0)
    mel[:, 3:7] = -20.0
    assert trim_silence(mel, 40.0).shape == (4, 4)
    assert trim_silence(np.full((4, 5), -100.0), 40.0).shape == (4, 5)  # all equal: all kept


@pytest.fixture
def counting_embedder(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A stand-in encoder (2 rows x 3 values from the audio's level and pitch), counting its calls."""
    from emofuse.data import ravdess

    calls: list[int] = []

    def embed(audio: np.ndarray, top_db: float) -> np.ndarray:
        calls.append(1)
        crossings = np.count_nonzero(np.diff(np.sign(audio)))
        return np.array([[audio.std(), crossings, 1.0], [np.abs(audio).max(), 2.0, crossings / 7]],
                        np.float32)

    monkeypatch.setitem(ravdess.CLIP_EMBEDDERS, "counting", (embed, 1))
    return calls


def test_ravdess_embeddings_split_by_actor_standardised_per_speaker_and_cached(
    tmp_path: Path, counting_embedder: list[int]
) -> None:
    from emofuse.data.ravdess import RavdessConfig, load_ravdess

    fake_ravdess(tmp_path / "rav")
    cfg = RavdessConfig(embeddings="counting", speaker_norm="meanvar")
    splits = load_ravdess(tmp_path / "rav", cfg, cache=tmp_path / "cache", progress=False)
    assert [len(d) for _, d in splits.items()] == [4, 2, 2] and len(counting_embedder) == 8
    train = splits.train
    assert train.features["audio"].shape == (4, 2, 3) and train.lengths["audio"].tolist() == [2] * 4
    assert "raw_audio" not in train.extras  # the head reads the rows, no audio encoder
    for actor in ("Actor_01", "Actor_02"):
        mine = [i for i, clip in enumerate(train.ids) if clip.startswith(actor)]
        x = train.features["audio"][mine].numpy()
        np.testing.assert_allclose(x.mean(0), 0.0, atol=1e-5)  # each speaker centred on their own
        varying = x.std(0) > 0
        np.testing.assert_allclose(x.std(0)[varying], 1.0, atol=1e-4)
    assert splits.frontend["ravdess"]["embeddings"] == "counting"
    # the rows are cached per clip: a second load (another speaker_norm) does not encode again
    plain = load_ravdess(tmp_path / "rav", RavdessConfig(embeddings="counting"), cache=tmp_path / "cache",
                         progress=False)
    assert len(counting_embedder) == 8
    assert not np.allclose(plain.train.features["audio"].numpy(), train.features["audio"].numpy())


def test_an_unknown_embedder_is_named_with_the_known_ones(tmp_path: Path) -> None:
    from emofuse.data.ravdess import RavdessConfig, load_ravdess
    from emofuse.features import speech_embeddings  # noqa: F401  (registers whisper_base)

    fake_ravdess(tmp_path / "rav")
    with pytest.raises(OptionError, match="embeddings='wav2vec'.*whisper_base"):
        load_ravdess(tmp_path / "rav", RavdessConfig(embeddings="wav2vec"), cache=tmp_path / "c",
                     progress=False)


def test_an_embeddings_run_predicts_a_clip_from_the_rows_training_gave_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, counting_embedder: list[int]
) -> None:
    """Trained on `-D embeddings=... -D speaker_norm=meanvar`, a run's predictor computes a clip's rows
    the same way and maps them by the speaker's reference clips as the loader mapped each actor's."""
    pytest.importorskip("soundfile")
    from emofuse.cli.main import main
    from emofuse.evaluation.evaluate import load_data, load_run
    from emofuse.inference.predict import Predictor, RunMismatch

    monkeypatch.setenv("EMOFUSE_CACHE", str(tmp_path / "cache"))
    fake_ravdess(tmp_path / "rav")
    assert main(["train", "--data", str(tmp_path / "rav"), "-D", "embeddings=counting", "-D",
                 "speaker_norm=meanvar", "--model", "pooled", "-o", "pool=weighted", "--modalities", "A",
                 "--epochs", "2", "--threads", "1", "--quiet", "--out", str(tmp_path / "runs")]) == 0
    run_dir = tmp_path / "runs" / "seed_1"
    test = load_data(str(tmp_path / "rav"), load_run(run_dir).config).test
    actor = sorted((tmp_path / "rav" / "Actor_21").glob("*.wav"))
    with pytest.raises(RunMismatch, match="--speaker-ref with 2 or more"):
        Predictor(run_dir)
    predictor = Predictor(run_dir, speaker_reference=actor)
    for wav in actor:
        record = predictor.with_embedding_rows({"aligned": {}}, wav)
        i = test.ids.index(f"Actor_21$_${wav.stem}")
        np.testing.assert_allclose(record["aligned"]["audio"], test.features["audio"][i].numpy(), atol=1e-5)
        probabilities = predictor.forward(predictor.dataset(record, clip=str(wav)))[0][0]
        assert probabilities.shape == (8,) and abs(probabilities.sum() - 1) < 1e-5
    predictor.close()


def test_joined_embedders_append_a_one_row_embedder_beside_every_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, counting_embedder: list[int]
) -> None:
    from emofuse.data import ravdess

    monkeypatch.setitem(ravdess.CLIP_EMBEDDERS, "level", (lambda audio, top_db: np.array([[7.0, 8.0]]), 1))
    monkeypatch.setitem(ravdess.CLIP_EMBEDDERS, "three", (lambda audio, top_db: np.ones((3, 1)), 1))
    fake_ravdess(tmp_path / "rav")
    splits = ravdess.load_ravdess(tmp_path / "rav", ravdess.RavdessConfig(embeddings="counting+level"),
                                  cache=tmp_path / "cache", progress=False)
    x = splits.train.features["audio"].numpy()
    assert x.shape == (4, 2, 5)  # the counting rows (2 x 3) with the level's 2 values beside each
    np.testing.assert_array_equal(x[:, :, 3:], np.broadcast_to([7.0, 8.0], (4, 2, 2)))
    with pytest.raises(OptionError, match="same number, or one"):
        ravdess.load_ravdess(tmp_path / "rav", ravdess.RavdessConfig(embeddings="counting+three"),
                             cache=tmp_path / "cache", progress=False)
    with pytest.raises(OptionError, match="'nope' is not a clip embedder"):
        ravdess.load_ravdess(tmp_path / "rav", ravdess.RavdessConfig(embeddings="counting+nope"),
                             cache=tmp_path / "cache", progress=False)


def test_egemaps_functionals_are_one_row_of_88() -> None:
    pytest.importorskip("opensmile")
    from emofuse.features.speech_embeddings import egemaps_functionals

    t = np.arange(16_000) / 16_000
    row = egemaps_functionals((0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 40.0)
    assert row.shape == (1, 88) and np.isfinite(row).all()


def test_a_text_encoder_run_on_ravdess_evaluates_on_data_without_text_features(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, counting_embedder: list[int], capsys
) -> None:
    """RAVDESS gives only its sentences as text: evaluate gives the encoder's text slot as training did."""
    pytest.importorskip("soundfile")
    from emofuse.cli.main import main

    monkeypatch.setenv("EMOFUSE_CACHE", str(tmp_path / "cache"))
    fake_ravdess(tmp_path / "rav")
    assert main(["train", "--data", str(tmp_path / "rav"), "-D", "embeddings=counting", "--model", "pooled",
                 "--modalities", "T+A", "--text-encoder", "minilm", "--text-finetune", "none",
                 "--epochs", "1", "--threads", "1", "--quiet", "--out", str(tmp_path / "runs")]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "runs" / "seed_1")]) == 0
    assert "| test |" in capsys.readouterr().out
