#!/usr/bin/env bash
# One-time set-up on a fresh machine. torch is installed first, pinned, so that nothing
# pulls a multi-GB CUDA build through a dependency (pip takes the local CPU build here).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet "torch==2.13.0"
python3 -m pip install --quiet -c scripts/constraints.txt -e ".[test]"
