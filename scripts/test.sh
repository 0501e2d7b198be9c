#!/usr/bin/env bash
# The test command: lint, then the whole suite, in the environment scripts/setup.sh made.
# Tests that need ../shared/data skip without it.
set -euo pipefail
cd "$(dirname "$0")/.."
py=python3
[ -x .venv/bin/python ] && py=.venv/bin/python
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
"$py" -m ruff check src tests benchmarks
"$py" -m mypy
"$py" -m pytest -q -p no:cacheprovider "$@"
