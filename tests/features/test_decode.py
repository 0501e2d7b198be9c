"""Decoding (PyAV) and the single-clip stages on media generated here (espeak-ng + astronaut)."""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest
from extract_media import broken_inputs, face_frames, mux, needs_extraction_stack, speaking_clip

from emofuse.features import registry
from emofuse.features.decode import AUDIO_SUFFIXES, MEDIA_SUFFIXES, VIDEO_SUFFIXES
from emofuse.features.registry import MissingFile, UnreadableMedia, create_extractor, list_extractors

pytestmark = needs_extraction_stack()

WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog"]


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, object]:
    folder = tmp_path_factory.mktemp("media")
    clip = folder / "clip.mp4"
    times = speaking_clip(clip, WORDS)
    return {"clip": clip, "times": times, "broken": broken_inputs(folder / "broken", WORDS[:3])}


def test_registry_lists_every_stage_and_rejects_unknown_names() -> None:
    assert {"pyav", "whisper", "pocketsphinx", "auto", "egemaps", "librosa", "logmel", "mediapipe"} <= set(
        list_extractors())
    assert list_extractors("face") == ["mediapipe"]
    with pytest.raises(ValueError, match="unknown audio extractor 'mfcc'.*egemaps"):
        create_extractor("mfcc", "audio")
    with pytest.raises(ValueError, match="no option"):
        create_extractor("pyav", "decode", frames_per_second=3)
    # the config is part of the cache key, the clip too
    a = create_extractor("pyav", "decode", fps=25.0)
    b = create_extractor("pyav", "decode", fps=10.0)
    assert a.cache_key("h") != b.cache_key("h") != a.cache_key("g")
    assert a.cache_key("h") == create_extractor("pyav", "decode", fps=25.0).cache_key("h")


def test_decode_gives_16k_mono_audio_and_frames_at_the_set_fps(media) -> None:
    clip = create_extractor("pyav", "decode")(media["clip"])
    assert clip.sample_rate == 16000 and clip.audio.dtype == np.float32 and clip.audio.ndim == 1
    assert clip.frames.dtype == np.uint8 and clip.frames.shape[1:] == (128, 160, 3)
    assert abs(len(clip.audio) / 16000 - clip.duration) < 0.1
    assert abs(len(clip.frames) - clip.duration * 25) <= 2
    slow = create_extractor("pyav", "decode", fps=10.0)(media["clip"])
    assert abs(len(slow.frames) - clip.duration * 10) <= 2
    # one frame per 1/fps bin, the first one in it
    assert np.array_equal(np.floor(slow.frame_times * 10 + 1e-6), np.arange(len(slow.frames)))
    # the face moves left to right: frame content follows time
    assert not np.array_equal(clip.frames[0], clip.frames[-1])


def test_decode_scales_large_frames_down(tmp_path: Path) -> None:
    big = np.zeros((10, 256, 320, 3), np.uint8)
    big[:, :128, :160] = face_frames(10)
    path = mux(tmp_path / "big.mp4", big, None)
    clip = create_extractor("pyav", "decode", max_side=160)(path)
    assert clip.frames.shape[1:] == (128, 160, 3)
    assert clip.audio is None


@pytest.mark.parametrize(
    "case, error", [("zero_bytes", UnreadableMedia), ("unreadable_file", UnreadableMedia)]
)
def test_decode_rejects_broken_files_in_one_line(media, case, error) -> None:
    path = media["broken"][case]
    with pytest.raises(error) as info:
        create_extractor("pyav", "decode")(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message and info.value.reason == "unreadable_file"


# ffmpeg options that write each container with codecs it usually carries (FLV: Sorenson video and
# MP3 audio, as CREMA-D's clips; webm: VP8 + Opus; ...); audio-only containers drop the video
CONTAINERS = {
    ".mp4": ["-c:v", "mpeg4", "-c:a", "aac"],
    ".avi": ["-c:v", "mpeg4", "-c:a", "libmp3lame"],
    ".webm": ["-c:v", "libvpx", "-b:v", "300k", "-c:a", "libopus"],
    ".mkv": ["-c", "copy"],
    ".mov": ["-c", "copy"],
    ".flv": ["-c:v", "flv", "-q:v", "3", "-c:a", "libmp3lame", "-ar", "22050"],
    ".m4v": ["-c", "copy"],
    ".wav": ["-vn", "-c:a", "pcm_s16le"],
    ".mp3": ["-vn", "-c:a", "libmp3lame"],
    ".flac": ["-vn", "-c:a", "flac"],
    ".m4a": ["-vn", "-c:a", "copy"],
    ".aac": ["-vn", "-c:a", "copy"],
    ".ogg": ["-vn", "-c:a", "libvorbis"],
    ".opus": ["-vn", "-c:a", "libopus"],
}


def test_every_listed_container_has_a_decode_test() -> None:
    assert set(CONTAINERS) == set(MEDIA_SUFFIXES) and MEDIA_SUFFIXES[0] == ".mp4"
    assert set(VIDEO_SUFFIXES).isdisjoint(AUDIO_SUFFIXES)


@pytest.mark.parametrize("suffix", list(CONTAINERS))
def test_decode_reads_every_listed_container(media, tmp_path: Path, suffix: str) -> None:
    """What `extract` scans for and `serve` accepts (MEDIA_SUFFIXES) really decodes, with the
    speech and the frames of the original clip."""
    path = tmp_path / f"clip{suffix}"
    subprocess.run(
        ["ffmpeg", "-y", "-loglevel", "error", "-i", str(media["clip"]), *CONTAINERS[suffix], str(path)],
        check=True,
        capture_output=True,
    )
    decoder = create_extractor("pyav", "decode")
    original, clip = decoder(media["clip"]), decoder(path)
    assert clip.has_audio and clip.sample_rate == 16000
    # lossy codecs pad or trim a frame's worth of samples (MP3, Opus and AAC priming)
    assert abs(clip.duration - original.duration) < 0.15
    assert (
        _envelope_match(clip.audio, original.audio) > 0.98
    )  # the same words at the same times (noise: 0.23)
    if suffix in AUDIO_SUFFIXES:
        assert not clip.has_video
    else:
        assert (
            clip.frames.shape[1:] == original.frames.shape[1:]
            and abs(len(clip.frames) - len(original.frames)) <= 2
        )
        # the same picture: the face in the same place (FLV's codec is coarse, so a loose bound)
        assert np.abs(clip.frames[5].astype(int) - original.frames[5].astype(int)).mean() < 12


def test_audio_only_decoding_skips_the_frames_but_not_the_duration(media) -> None:
    """Without video the frames are not decoded; the audio and the clip's duration (which counts
    the last frame) are those of a full decode."""
    decoder = create_extractor("pyav", "decode")
    full, audio_only = decoder(media["clip"]), decoder(media["clip"], video=False)
    assert audio_only.frames is None and not audio_only.has_video
    np.testing.assert_array_equal(audio_only.audio, full.audio)
    assert audio_only.duration == full.duration


def test_decode_missing_file(tmp_path: Path) -> None:
    with pytest.raises(MissingFile, match="does not exist"):
        create_extractor("pyav", "decode")(tmp_path / "nope.mp4")


def test_forced_alignment_follows_espeaks_word_times(media) -> None:
    decoded = create_extractor("pyav", "decode")(media["clip"])
    words = create_extractor("pocketsphinx", "words")(decoded.audio, 16000, " ".join(WORDS))
    assert words.source == "forced:pocketsphinx" and words.words == WORDS
    truth = np.array(media["times"])
    error = np.abs(np.column_stack([words.starts, words.ends]) - truth)
    assert error.mean() < 0.08 and error.max() < 0.2, error
    # punctuation and case stay as written (the text encoder reads them); a word outside the
    # dictionary ('lazzy') gets a guessed pronunciation and still aligns
    aligner = create_extractor("pocketsphinx", "words")
    odd = aligner(decoded.audio, 16000, "The quick, brown fox jumps over the lazzy dog!")
    assert odd.words[-2:] == ["lazzy", "dog!"] and odd.source == "forced:pocketsphinx"
    assert abs(odd.starts[-1] - truth[-1, 0]) < 0.15
    # a transcript that does not match the speech: words spread over the voiced span, said so
    wrong = aligner(decoded.audio, 16000, "the quick brown fox jumps over the zorblax dog")
    assert wrong.source == "uniform" and len(wrong) == 9
    assert abs(wrong.starts[0] - truth[0, 0]) < 0.1 and abs(wrong.ends[-1] - truth[-1, 1]) < 0.1


def test_one_aligner_aligns_each_clip_as_a_fresh_one_would() -> None:
    """The aligner keeps its decoder (loading it is most of the stage's time) and resets its
    feature state per clip: clips aligned in sequence, in either order, come out as alone."""
    from extract_media import speech

    sentences = [["what", "a", "wonderful", "film"], ["not", "good", "at", "all"],
                 ["the", "acting", "was", "terrible", "really"], ["i", "liked", "the", "lazzy", "dog"]]
    clips = [(speech(words)[0], " ".join(words)) for words in sentences]

    def times(words):
        return np.column_stack([words.starts, words.ends]).tolist(), words.source

    alone = [times(create_extractor("pocketsphinx", "words")(a, 16000, t)) for a, t in clips]
    shared = create_extractor("pocketsphinx", "words")
    assert [times(shared(a, 16000, t)) for a, t in clips] == alone
    backwards = create_extractor("pocketsphinx", "words")
    assert [times(backwards(a, 16000, t)) for a, t in reversed(clips)] == alone[::-1]


def test_whisper_recognises_the_sentence(media) -> None:
    decoded = create_extractor("pyav", "decode")(media["clip"])
    words = create_extractor("whisper", "words")(decoded.audio, 16000)
    found = [w.strip(".,!?").lower() for w in words.words]
    assert words.source == "asr:whisper-base"
    assert _word_errors(WORDS, found) <= 2, found
    assert np.all(words.ends >= words.starts) and words.ends[-1] <= decoded.duration + 0.1


def test_face_landmarker_finds_the_moving_face(media) -> None:
    decoded = create_extractor("pyav", "decode")(media["clip"])
    face = create_extractor("mediapipe", "face")
    track = face(decoded.frames, decoded.frame_times, decoded.fps)
    assert track.face_fraction == 1.0
    assert track.landmarks.shape[1:] == (478, 3) and track.blendshapes.shape[1] == 52
    assert track.crops.shape[1:] == (64, 64) and track.crops.dtype == np.uint8
    # the face slides right: the landmarks' mean x grows from the first to the last frame
    assert track.landmarks[-1, :, 0].mean() - track.landmarks[0, :, 0].mean() > 0.2
    empty = face(face_frames(5, face=False), np.arange(5) / 25, 25.0)
    assert empty.face_fraction == 0.0 and not empty.crops.any()


def test_mediapipe_s_native_log_lines_stay_off_stderr(capfd) -> None:
    face = create_extractor("mediapipe", "face")
    # unfiltered, creating the landmarker writes its C++ warnings to fd 2 (so this test would see them)
    face._load()
    face.close()
    raw = capfd.readouterr().err
    assert "face_landmarker_graph.cc" in raw or "inference_feedback_manager.cc" in raw, raw
    track = face(face_frames(5), np.arange(5) / 25, 25.0)
    assert track.face_fraction == 1.0
    err = capfd.readouterr().err
    assert ".cc:" not in err and "TensorFlow Lite" not in err and "InitGoogle" not in err, err


def test_the_stderr_filter_drops_only_native_noise(capfd) -> None:
    from emofuse.features.media_models import quiet_native_stderr

    def other_thread() -> None:  # e.g. a serve worker's log line while the face stage runs
        os.write(2, b"INFO:     127.0.0.1 - POST /v1/predict 200\n")

    with pytest.raises(RuntimeError, match="a real problem"), quiet_native_stderr():
        os.write(2, b"WARNING: Logging before InitGoogle() is written to STDERR\n")
        os.write(2, b"W0000 00:00:1796655306.701358    9818 inference_feedback_manager.cc:121] Feedback\n")
        os.write(2, b"I0000 00:00:1796655306.7 9818 gl_context.cc:357] GL version: 3.2\n")
        os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
        os.write(2, b"E0000 00:00:1796655306.8 9818 graph.cc:12] a failure mediapipe explains\n")
        os.write(2, b"emofuse: warning: kept\n")  # (capfd sends print() past fd 2, so os.write)
        with quiet_native_stderr():  # nested: one redirection
            os.write(2, b"W1207 14:54:01.123456 77 face_landmarker_graph.cc:181] Sets ...\nhalf a li")
            os.write(2, b"ne, then the rest\n")
        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
        raise RuntimeError("a real problem")  # emofuse's own errors pass through untouched
    os.write(2, b"after\n")  # fd 2 is the real stderr again
    assert capfd.readouterr().err == (
        "E0000 00:00:1796655306.8 9818 graph.cc:12] a failure mediapipe explains\n"
        "emofuse: warning: kept\nhalf a line, then the rest\n"
        "INFO:     127.0.0.1 - POST /v1/predict 200\nafter\n")


def test_model_files_are_checked(tmp_path: Path, monkeypatch) -> None:
    from emofuse.features import media_models
    from emofuse.features.text_models import ModelIntegrityError

    path = media_models.whisper_model_dir(tmp_path)
    assert (path / "model.bin").stat().st_size == 2 * 72608766
    monkeypatch.setitem(media_models.WHISPER_PART_SHA256, "model.bin.part1", "0" * 64)
    with pytest.raises(ModelIntegrityError, match="sha256 mismatch"):
        media_models.whisper_model_dir(tmp_path, force=True)
    assert (path / "model.bin").is_file()  # the verified copy was not damaged by the failed try
    assert registry.file_hash(str(media_models.face_landmarker_path())) == media_models.FACE_LANDMARKER_SHA256


def _envelope_match(
    a: np.ndarray, b: np.ndarray, window: int = 480, hop: int = 80, max_lag: int = 30
) -> float:
    """Best correlation of two loudness envelopes (30 ms windows every 5 ms) over shifts up to
    150 ms: lossy codecs and containers without an edit list move the samples by their priming
    delay (AAC's 1024 samples), which a sample-by-sample comparison would call different sound."""
    def envelope(x: np.ndarray) -> np.ndarray:
        energy = np.concatenate([[0.0], np.cumsum(x.astype(np.float64) ** 2)])
        starts = np.arange(0, len(x) - window, hop)
        return np.sqrt((energy[starts + window] - energy[starts]) / window)

    ea, eb = envelope(a), envelope(b)
    best = -1.0
    for lag in range(-max_lag, max_lag + 1):
        x, y = (ea[lag:], eb) if lag >= 0 else (ea, eb[-lag:])
        n = min(len(x), len(y))
        best = max(best, float(np.corrcoef(x[:n], y[:n])[0, 1]))
    return best


def _word_errors(ref: list[str], hyp: list[str]) -> int:
    d = np.arange(len(hyp) + 1)
    for i, r in enumerate(ref, 1):
        prev, d[0] = d.copy(), i
        for j, h in enumerate(hyp, 1):
            d[j] = min(prev[j] + 1, d[j - 1] + 1, prev[j - 1] + (r != h))
    return int(d[-1])
