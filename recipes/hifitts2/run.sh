#!/usr/bin/env bash
# HiFiTTS-2 (NVIDIA's LibriVox corpus, the open recipe's data) from nothing to an evaluated teacher
# and student on GPUs. Every stage is resumable; README.md gives disk, time, hardware and the healthy
# curves (Kyutai's open recipe reports them for a 2 kh subset of this corpus).
#   HIFITTS2_ROOT=/data/hifitts2 bash recipes/hifitts2/run.sh       # every stage, this machine's GPUs
#   VAE_FROM=released bash recipes/hifitts2/run.sh                  # Kyutai's codec instead of training
#   MAX_ITEMS=N ...                                                  # a subset (the first N rows)
#   DRY_RUN=1 bash recipes/hifitts2/run.sh                           # print the commands only
# Settings shared by all recipes are listed in recipes/common.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
source recipes/common.sh

DATA=${DATA:-data/hifitts2}
RUNS=${RUNS:-logs/hifitts2}
# The workspace of NVIDIA's download (README.md): the filtered manifest and the chapter audio.
HIFITTS2_ROOT=${HIFITTS2_ROOT:-data/hifitts2_download}
RATE=${RATE:-44khz}                            # 44khz (the open recipe's) or 22khz
MANIFEST=${MANIFEST:-$HIFITTS2_ROOT/manifest_filtered_$RATE.json}
VALID_WHERE=${VALID_WHERE:-set=dev}            # the manifest's held-out rows
MAX_ITEMS=${MAX_ITEMS:-}                       # keep the first N training rows (whole chapters)
use_size

if want setup; then
  run bash scripts/setup.sh
fi

if want data && todo "$DATA/clean/valid.jsonl"; then
  echo "== data: HiFiTTS-2 manifest rows (windows of chapter files, read in place) + validation =="
  if [ -z "${DRY_RUN:-}" ] && [ ! -f "$MANIFEST" ]; then
    echo "no $MANIFEST: download HiFiTTS-2 first (recipes/hifitts2/README.md, step 0)" >&2
    exit 1
  fi
  limit=${MAX_ITEMS:+--max-items $MAX_ITEMS}
  # shellcheck disable=SC2086  # $limit is zero or two words
  run $PY -m pockettts.data from-hf --workers "$PREP_WORKERS" --preset hifitts2 --data-files "$MANIFEST" --audio-root "$HIFITTS2_ROOT" \
    --out "$DATA/raw/train.jsonl" $limit
  run $PY -m pockettts.data from-hf --workers "$PREP_WORKERS" --preset hifitts2 --data-files "$MANIFEST" --audio-root "$HIFITTS2_ROOT" \
    --where "$VALID_WHERE" --out "$DATA/raw/valid.jsonl"
  run $PY -m pockettts.data validate "$DATA/raw/train.jsonl" --out "$DATA/clean/train.jsonl" --workers 16
  run $PY -m pockettts.data validate "$DATA/raw/valid.jsonl" --out "$DATA/clean/valid.jsonl"
  run $PY -m pockettts.data stats "$DATA/clean/train.jsonl"
fi

tts_stages
