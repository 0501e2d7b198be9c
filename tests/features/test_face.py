"""The face stage finds small faces (a wide shot) by looking closer, and still no face in noise."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from extract_media import needs_extraction_stack  # noqa: E402

pytestmark = needs_extraction_stack()


def _frames(side: int, height: int = 240, width: int = 320, n: int = 4) -> np.ndarray:
    from skimage import data, transform

    face = data.astronaut()[20:230, 120:330]
    small = (transform.resize(face, (side, side), anti_aliasing=True) * 255).astype(np.uint8)
    frames = np.full((n, height, width, 3), 90, np.uint8)
    y, x = height // 3, width // 5  # off centre: the windows must cover the whole frame
    frames[:, y : y + side, x : x + side] = small
    return frames


def _track(frames: np.ndarray):
    from emofuse.features.registry import create_extractor

    face = create_extractor("mediapipe", "face", crop_size=32)
    return face(frames, np.arange(len(frames)) / 25.0, 25.0)


def test_a_small_face_is_found_in_zoomed_windows_and_mapped_back_to_the_frame() -> None:
    track = _track(_frames(40))  # a sixth of the frame's height: the whole frame finds nothing
    assert track.present.all()
    xs, ys = track.landmarks[0, :, 0] * 320, track.landmarks[0, :, 1] * 240
    # the landmarks lie on the face where it was drawn, in whole-frame coordinates
    assert 64 - 4 <= xs.min() and xs.max() <= 64 + 44 and 80 - 4 <= ys.min() and ys.max() <= 80 + 44
    assert track.crops[0].std() > 10  # a face crop, not a flat patch


def test_noise_still_has_no_face() -> None:
    rng = np.random.default_rng(0)
    track = _track(rng.integers(0, 255, (4, 240, 320, 3), dtype=np.uint8))
    assert not track.present.any()


def _moving_face(n: int = 25) -> np.ndarray:
    """A big face sliding right by 2 px a frame, leaving the frame (noise) for its last 7 frames."""
    from skimage import data, transform

    face = (transform.resize(data.astronaut()[20:230, 120:330], (150, 150), anti_aliasing=True) * 255)
    frames = np.full((n, 240, 320, 3), 90, np.uint8)
    for i in range(n - 7):
        frames[i, 40:190, 60 + 2 * i : 210 + 2 * i] = face.astype(np.uint8)
    rng = np.random.default_rng(0)
    frames[n - 7 :] = rng.integers(0, 255, (7, 240, 320, 3), dtype=np.uint8)
    return frames


def test_key_frames_give_the_every_frame_features_within_tolerance() -> None:
    """detect_fps=8 runs the landmarker on every third frame at 25 fps; the frames between are
    interpolated, and where the face leaves it is found to the frame."""
    from emofuse.features.registry import create_extractor

    frames = _moving_face()
    times = np.arange(len(frames)) / 25.0
    every = create_extractor("mediapipe", "face", crop_size=32, detect_fps=0)(frames, times, 25.0)
    keys = create_extractor("mediapipe", "face", crop_size=32, detect_fps=8)(frames, times, 25.0)
    assert every.present[:18].all() and not every.present[18:].any()
    np.testing.assert_array_equal(keys.present, every.present)  # the edge found to the frame
    np.testing.assert_allclose(keys.landmarks[keys.present, :, :2], every.landmarks[every.present, :, :2],
                               atol=0.01)  # 1 % of the frame: a third of a pixel step's drift at most
    word = slice(0, 9)  # a 0.36-s word: its mean blendshapes agree to 5 %
    a, b = every.blendshapes[word].mean(0), keys.blendshapes[word].mean(0)
    assert np.linalg.norm(a - b) <= 0.05 * np.linalg.norm(a)


def test_frames_between_key_frames_are_interpolated_or_detected() -> None:
    from emofuse.features.face import _fill_between_keys, _Found

    def face(v: float) -> _Found:
        return _Found(np.full((2, 3), v, np.float32), np.full(2, v, np.float32), np.full(6, v, np.float32))

    asked: list[int] = []

    def detect(i: int) -> _Found | None:
        asked.append(i)
        return face(100.0) if i < 8 else None

    found = {0: face(0.0), 3: face(3.0), 6: face(6.0), 9: None, 12: None}
    out = _fill_between_keys(found, [0, 3, 6, 9, 12], 13, detect)
    assert [float(f.blendshapes[0]) if f is not None else None for f in out[:7]] == [0, 1, 2, 3, 4, 5, 6]
    assert asked == [7, 8]  # only between a key with a face and one without
    assert out[7] is not None and out[8] is None and out[10] is None and out[11] is None
