"""The face stage finds small faces (a wide shot) by looking closer, and still no face in noise."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from extract_media import missing_for_tests  # noqa: E402

MISSING = missing_for_tests()
pytestmark = pytest.mark.skipif(bool(MISSING), reason=f"extraction stack missing: {MISSING} "
                                "(bash scripts/install_extract.sh)")


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
