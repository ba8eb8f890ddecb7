#!/usr/bin/env bash
# LibriTTS-R (585 h, 2456 speakers, 24 kHz) from nothing to an evaluated teacher and student on GPUs.
# Every stage is resumable; README.md gives disk, time, hardware and the healthy curves.
#   bash recipes/libritts_r/run.sh                           # every stage, all GPUs of this machine
#   STAGES="teacher student" bash recipes/libritts_r/run.sh  # some stages only
#   VAE=path/vae.safetensors bash recipes/libritts_r/run.sh  # skip VAE training: use this codec
#   SIZE=tiny MAX_ITEMS=300 bash recipes/libritts_r/run.sh   # CPU smoke test of the same commands
#   DRY_RUN=1 bash recipes/libritts_r/run.sh                 # print the commands only
# Settings shared by all recipes are listed in recipes/common.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
source recipes/common.sh

DATA=${DATA:-data/libritts_r}
RUNS=${RUNS:-logs/libritts_r}
# "<HF config>:<split>" pairs of mythicinfinity/libritts_r to train on, and the validation split.
TRAIN_SPLITS=${TRAIN_SPLITS:-"clean:train.clean.100 clean:train.clean.360 other:train.other.500"}
VALID_SPLIT=${VALID_SPLIT:-clean:dev.clean}
MAX_ITEMS=${MAX_ITEMS:-}  # keep only the first N rows of each split (smoke tests)
use_size

if want setup; then
  run bash scripts/setup.sh
fi

if want data && todo "$DATA/clean/valid.jsonl"; then
  echo "== data: LibriTTS-R from Hugging Face into 24 kHz FLAC + manifests (resumable), validation =="
  limit=${MAX_ITEMS:+--max-items $MAX_ITEMS}
  train_parts=()
  for pair in $TRAIN_SPLITS $VALID_SPLIT; do
    # shellcheck disable=SC2086  # $limit is zero or two words
    run $PY -m pockettts.data from-hf --workers "$PREP_WORKERS" --preset libritts_r --config "${pair%%:*}" --split "${pair#*:}" \
      --out "$DATA/raw/${pair#*:}.jsonl" $limit
  done
  for pair in $TRAIN_SPLITS; do
    train_parts+=("$DATA/raw/${pair#*:}.jsonl")
  done
  concat "$DATA/raw/train.jsonl" "${train_parts[@]}"
  run $PY -m pockettts.data validate "$DATA/raw/train.jsonl" --out "$DATA/clean/train.jsonl" --workers 8
  run $PY -m pockettts.data validate "$DATA/raw/${VALID_SPLIT#*:}.jsonl" --out "$DATA/clean/valid.jsonl"
  run $PY -m pockettts.data stats "$DATA/clean/train.jsonl"
fi

tts_stages
