#!/usr/bin/env bash
# Makes .venv-bench, the side-by-side benchmark's own environment (benchmarks/vs_mmsa.py).
#
# MMSA 2.2.1 is not a dependency of emofuse and is not installed through a pip extra: its
# declared requirements (nvidia-ml-py3, pinned-old transformers expectations, its training
# runner's pandas/scikit-learn/tqdm) would clash with or bloat emofuse's environment. So the
# benchmark gets a separate venv, without system site-packages:
#   1. torch 2.13.0 CPU first, constrained, so nothing pulls a multi-GB CUDA build;
#   2. mmsa==2.2.1 with --no-deps;
#   3. only what MMSA's model code imports: transformers (its subNets/__init__ imports
#      BertTextEncoder, so every model module needs it) and easydict (MMSA.config builds its
#      args object with it). vs_mmsa.py imports MMSA's model and config modules without running
#      MMSA/__init__.py, which would load the training runner (pandas, pynvml, sklearn);
#   4. emofuse itself, editable (-e .), so the benchmark compares against this checkout.
# Nothing installed is edited: MMSA's CPU-path problems are worked around in vs_mmsa.py.
#
#   bash benchmarks/setup_mmsa.sh          # then: .venv-bench/bin/python benchmarks/vs_mmsa.py --quick
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${EMOFUSE_BENCH_VENV:-.venv-bench}"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv --without-pip "$venv" 2>/dev/null || python3 -m venv "$venv"
    "$venv/bin/python" -m ensurepip --upgrade >/dev/null 2>&1 || true
fi
py="$venv/bin/python"
constraints=scripts/constraints.txt
"$py" -m pip install --quiet --upgrade pip
"$py" -m pip install --quiet -c "$constraints" "torch==2.13.0"
"$py" -m pip install --quiet --no-deps "mmsa==2.2.1"
"$py" -m pip install --quiet -c "$constraints" "transformers>=4.4" "easydict>=1.9"
"$py" -m pip install --quiet -c "$constraints" -e .
"$py" - <<'PY'
import importlib.metadata as md
print("bench venv ready: torch", md.version("torch"), "mmsa", md.version("mmsa"),
      "transformers", md.version("transformers"))
PY
