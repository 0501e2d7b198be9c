#!/usr/bin/env bash
# One-time set-up on a fresh machine. Everything goes into a virtual environment, `.venv` in the
# repository, so the distribution's own python3 (Debian's is "externally managed", PEP 668) is never
# installed into. Inside an active virtual environment, that one is used and `.venv` points at it, so
# `.venv/bin/emofuse` works either way. torch is installed first, pinned, so that nothing pulls a
# multi-GB CUDA build through a dependency.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${EMOFUSE_EXTRAS:-test}"
if [ -n "${VIRTUAL_ENV:-}" ] && [ -x "$VIRTUAL_ENV/bin/python" ]; then
    [ -e .venv ] || ln -s "$VIRTUAL_ENV" .venv
elif [ ! -x .venv/bin/python ]; then
    echo "setup: creating the virtual environment .venv" >&2
    python3 -m venv .venv || {
        echo "setup: 'python3 -m venv' failed; on Debian/Ubuntu install it with: apt-get install python3-venv" >&2
        exit 1
    }
fi
py=.venv/bin/python
"$py" -m pip install --quiet --upgrade pip
"$py" -m pip install --quiet "torch==2.13.0"
"$py" -m pip install --quiet -c scripts/constraints.txt -e ".[$extras]"
# the extraction stack (PyAV, openSMILE, librosa, faster-whisper + its carried model, pocketsphinx,
# mediapipe + its carried face model; as root also espeak-ng/ffmpeg/sox for the tests' media)
if [ "${EMOFUSE_NO_EXTRACT:-0}" != 1 ]; then
    bash scripts/install_extract.sh
fi
# emofuse serve (FastAPI, uvicorn, python-multipart; selenium, and as root chromium + its driver for
# the browser test)
if [ "${EMOFUSE_NO_SERVE:-0}" != 1 ]; then
    bash scripts/install_serve.sh
fi
echo "setup: done; run .venv/bin/emofuse (or 'source .venv/bin/activate' first)" >&2
