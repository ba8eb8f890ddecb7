#!/usr/bin/env bash
# The main job on the embedded default data, on CPU: set up, build the offline multi-speaker demo
# corpus, validate its manifests, and summarise them. Later pipeline stages (VAE, teacher, student,
# evaluation) are appended here as they land.
#   bash recipes/tiny/run.sh            # data under data/demo, logs under logs/
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/setup.sh
PY=.venv/bin/python
DATA=${DATA:-data/demo}
export WANDB_MODE=${WANDB_MODE:-offline}
start=$(date +%s)

echo "== 1/2 demo corpus (cached after the first run) =="
$PY -m pockettts.data demo --out "$DATA"

echo "== 2/2 validate manifests =="
for split in train valid test; do
  $PY -m pockettts.data validate "$DATA/$split.jsonl" --out "$DATA/clean/$split.jsonl"
  $PY -m pockettts.data stats "$DATA/clean/$split.jsonl"
done

echo "== done in $(( $(date +%s) - start )) s: clean manifests in $DATA/clean/ =="
