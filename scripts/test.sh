#!/usr/bin/env bash
# The test command: lint, then the whole suite. Tests that need ../shared/data skip without it.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
python3 -m ruff check src tests benchmarks
python3 -m pytest -q -p no:cacheprovider "$@"
