"""A tiny RAVDESS-shaped folder for tests: Actor_NN/03-01-EE-01-01-01-NN.wav tones, 48 kHz."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def fake_ravdess(root: Path, seconds: float = 1.2) -> None:
    import soundfile

    rng = np.random.default_rng(0)
    for actor in (1, 2, 17, 21):
        folder = root / f"Actor_{actor:02d}"
        folder.mkdir(parents=True)
        for emotion in (1, 5):
            t = np.arange(int(48_000 * seconds)) / 48_000
            tone = 0.3 * np.sin(2 * np.pi * (200 + 100 * emotion) * t) * (t > 0.3)
            audio = tone + 0.001 * rng.normal(size=t.size)
            soundfile.write(folder / f"03-01-{emotion:02d}-01-01-01-{actor:02d}.wav", audio, 48_000)
