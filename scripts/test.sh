#!/usr/bin/env bash
# Install (if needed) and run the whole test suite on CPU. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export RANKK_DATA="${RANKK_DATA:-$(cd .. && pwd)/shared/data}"
exec .venv/bin/python -m pytest -q "$@"
