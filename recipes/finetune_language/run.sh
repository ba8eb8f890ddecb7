#!/usr/bin/env bash
# Teach a trained English teacher a new language: a new tokenizer, init_from the English weights with
# the text embedding re-initialised (its size changes with the tokenizer), fine-tuning, then
# re-distillation of the student. Kyutai's finetune_language recipe: from the
# released 24-layer English teacher, lr 2e-4, ~2.5x faster than training from scratch.
#   bash recipes/finetune_language/run.sh            # GPUs: German MLS from Hugging Face (see README.md)
#   SIZE=tiny bash recipes/finetune_language/run.sh  # CPU, minutes: a German demo corpus (espeak-ng voices)
#   DRY_RUN=1 bash recipes/finetune_language/run.sh  # print the commands only
# Settings shared by all recipes are listed in recipes/common.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
source recipes/common.sh

SIZE=${SIZE:-full}
LANGUAGE=${LANGUAGE:-de}
if [ "$SIZE" = tiny ]; then
  DATA=${DATA:-data/demo_$LANGUAGE}
  RUNS=${RUNS:-logs/finetune_language_tiny}
  VOCAB=${VOCAB:-192}  # != the English teacher's 256: the text embedding must be re-initialised
  BASE_STEPS=${BASE_STEPS:-150}
  FINETUNE_STEPS=${FINETUNE_STEPS:-150}
  DISTILL_STEPS=${DISTILL_STEPS:-100}
  # The English base: recipes/tiny's runs if they exist, else trained here for BASE_STEPS.
  BASE_VAE=${BASE_VAE:-logs/tiny/vae/export/vae.safetensors}
  BASE_TEACHER=${BASE_TEACHER:-logs/tiny/teacher/export/teacher.safetensors}
  if [ ! -f "$BASE_TEACHER" ] || [ -n "${DRY_RUN:-}" ]; then
    BASE_VAE=$RUNS/base_vae/export/vae.safetensors BASE_TEACHER=$RUNS/base_teacher/export/teacher.safetensors
  fi
else
  DATA=${DATA:-data/mls_$LANGUAGE}
  RUNS=${RUNS:-logs/finetune_$LANGUAGE}
  FINETUNE_STEPS=${FINETUNE_STEPS:-30000}
  DISTILL_STEPS=${DISTILL_STEPS:-100000}
  # A new-language corpus on the Hugging Face hub (columns: see the dataset card).
  HF_DATASET=${HF_DATASET:-facebook/multilingual_librispeech}
  HF_CONFIG=${HF_CONFIG:-german}
  TRAIN_SPLIT=${TRAIN_SPLIT:-train} VALID_SPLIT=${VALID_SPLIT:-dev} TEST_SPLIT=${TEST_SPLIT:-test}
  TEXT_COLUMN=${TEXT_COLUMN:-transcript} SPEAKER_COLUMN=${SPEAKER_COLUMN:-speaker_id}
  MAX_ITEMS=${MAX_ITEMS:-}
  # The English base: Kyutai's released 24-layer teacher (model file + yaml from kyutai/pocket-tts),
  # converted, with the codec it was trained with; or your own teacher and its VAE.
  BASE=$RUNS/base
  BASE_VAE=${BASE_VAE:-$BASE/vae.safetensors}
  BASE_TEACHER=${BASE_TEACHER:-$BASE/flow_lm.safetensors}
  WHISPER=${WHISPER:-checkpoints/whisper/medium.pt}  # multilingual, for the word alignments
fi
VAE=$BASE_VAE  # latents must come from the codec the base teacher was trained on
use_size
# The English teacher's weights; a tokenizer of another size re-initialises the text embedding.
# Validation at the end of the fine-tuning gives the number to compare with COMPARE_SCRATCH=1.
STEPS_ARGS=(trainer.max_steps="$FINETUNE_STEPS" trainer.val_check_interval="$FINETUNE_STEPS")
TEACHER_ARGS=(model.init_from="$BASE_TEACHER" "${STEPS_ARGS[@]}")
STUDENT_ARGS=(trainer.max_steps="$DISTILL_STEPS")
COMPARE_SCRATCH=${COMPARE_SCRATCH:-}  # 1: also train the same teacher from scratch, same steps

if want setup; then
  run bash scripts/setup.sh
fi

if want base && [ "$SIZE" = tiny ] && todo "$BASE_TEACHER"; then
  echo "== English base (tiny): demo corpus, VAE and teacher, $BASE_STEPS steps each =="
  run $PY -m pockettts.data demo --out data/demo
  for split in train valid; do
    if todo "data/demo/clean/$split.jsonl"; then
      run $PY -m pockettts.data validate "data/demo/$split.jsonl" --out "data/demo/clean/$split.jsonl"
    fi
  done
  run $PY train.py experiment=vae_tiny data.data_dir=data/demo data.train_manifest=clean/train.jsonl \
    data.valid_manifest=clean/valid.jsonl trainer.max_steps="$BASE_STEPS" trainer.val_check_interval="$BASE_STEPS" \
    hydra.run.dir="$RUNS/base_vae"
  run $PY train.py experiment=teacher_tiny data.data_dir=data/demo data.vae="$BASE_VAE" \
    data.cache_dir=data/demo/latents data.tokenizer=data/demo/tokenizer/tokenizer.model \
    trainer.max_steps="$BASE_STEPS" trainer.val_check_interval="$BASE_STEPS" hydra.run.dir="$RUNS/base_teacher"
fi

if want base && [ "$SIZE" = full ] && todo "$BASE_TEACHER"; then
  echo "== English base: the released teacher and its codec, converted =="
  run $PY -m pockettts.tools import-kyutai --weights "$POCKET_WEIGHTS" --config "$POCKET_CONFIG" --out "$BASE"
fi

if want data && todo "$DATA/clean/valid.jsonl"; then
  if [ "$SIZE" = tiny ]; then
    echo "== data: a German demo corpus (espeak-ng voices reading recipes/finetune_language/sentences_de.txt) =="
    run $PY -m pockettts.data demo --out "$DATA" --voices espeak:de espeak:de+f3 espeak:de+m3 espeak:de+f4 \
      --sentences recipes/finetune_language/sentences_de.txt --train-fraction 1.0
    for split in train valid test; do
      run $PY -m pockettts.data validate "$DATA/$split.jsonl" --out "$DATA/clean/$split.jsonl"
    done
  else
    echo "== data: $HF_DATASET ($HF_CONFIG) from Hugging Face (resumable), validation =="
    for split in "$TRAIN_SPLIT" "$VALID_SPLIT" "$TEST_SPLIT"; do
      # shellcheck disable=SC2086  # the limit is zero or two words
      run $PY -m pockettts.data from-hf --workers "$PREP_WORKERS" "$HF_DATASET" --config "$HF_CONFIG" --split "$split" \
        --text-column "$TEXT_COLUMN" --speaker-column "$SPEAKER_COLUMN" --language "$LANGUAGE" \
        --out "$DATA/raw/$split.jsonl" ${MAX_ITEMS:+--max-items $MAX_ITEMS}
    done
    run $PY -m pockettts.data validate "$DATA/raw/$TRAIN_SPLIT.jsonl" --out "$DATA/clean/train.jsonl" --workers 16
    run $PY -m pockettts.data validate "$DATA/raw/$TEST_SPLIT.jsonl" --out "$DATA/clean/test.jsonl"
    run $PY -m pockettts.data validate "$DATA/raw/$VALID_SPLIT.jsonl" --out "$DATA/clean/valid.jsonl"
  fi
  run $PY -m pockettts.data stats "$DATA/clean/train.jsonl"
fi

if [ "$SIZE" = tiny ]; then
  # The demo corpus knows its sentence boundaries exactly: prompts are cut there, no aligner needed.
  if want align; then
    for split in train valid; do
      concat "$DATA/clean/${split}_aligned.jsonl" "$DATA/clean/$split.jsonl"
    done
  fi
else
  stage_align
fi
stage_tokenizer
stage_latents
stage_teacher
if want teacher && [ -n "$COMPARE_SCRATCH" ] && todo "$RUNS/teacher_scratch/export/teacher.safetensors"; then
  echo "== the same teacher from scratch (no init_from), for comparison =="
  tts_data
  launch $PY train.py experiment="$TEACHER_EXP" "${TTS_DATA[@]}" model.model.vocab_size="$VOCAB" \
    "${STEPS_ARGS[@]}" trainer="$TRAINER" hydra.run.dir="$RUNS/teacher_scratch" $(resume "$RUNS/teacher_scratch")
fi
stage_student

if want eval && [ "$SIZE" = full ]; then
  echo "== evaluation on the new language's held-out speakers/sentences (multilingual Whisper) =="
  for model in teacher:2.0 student:1.0; do
    run $PY eval.py checkpoint="$RUNS/${model%%:*}/export/${model%%:*}.safetensors" \
      testset="$DATA/clean/test.jsonl" language="$LANGUAGE" sampling.cfg_scale="${model#*:}" sampling.temperature=0.3 \
      whisper="$EVAL_WHISPER" results_root="$RUNS/eval"
  done
fi
