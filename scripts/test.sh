#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite, slow tests included. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export WANDB_MODE=offline
# The suite writes ~1 GB of temp files: show the free space so a full disk is plain in the log.
df -h . "${TMPDIR:-/tmp}" | sed 's/^/[test] /'
.venv/bin/ruff check .
exec .venv/bin/python -m pytest "$@"
