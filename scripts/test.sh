#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite, slow tests included. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export WANDB_MODE=offline
.venv/bin/ruff check .
exec .venv/bin/python -m pytest "$@"
