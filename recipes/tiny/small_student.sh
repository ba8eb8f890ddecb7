#!/usr/bin/env bash
# The shipped small-family model (recipes/tiny/checkpoints/small_student.* and vae_light.*): a light
# decoder for the shipped codec's frozen latents, pruned from its decoder and refit layer by layer by
# least squares (pockettts-tools prune-decoder), and a student with grouped-query attention, a z
# bottleneck and a pointwise head, warm-started from the shipped student (pockettts/training/warm_start.py)
# and distilled at the sample level from the shipped teacher at α = 2 on the WordNet demo corpus; then
# Whisper base on 48 held-out items with the light and the shipped decoder, and the real-time factor
# (benchmarks/tts_speed.py). On CPU, one thread each (≈ 3 min for the light decoder, ≈ 17 min for the
# student, ≈ 6 min per evaluation; training_record.md).
#   bash recipes/tiny/small_student.sh
#   STAGES="eval rtf" bash recipes/tiny/small_student.sh   # part of it again
# Stages: light_decoder student ship eval rtf. Needs the corpus and latent cache of
# recipes/tiny/demo_checkpoints.sh (data/demo_wn_all) and Whisper base (its whisper stage).
set -euo pipefail
cd "$(dirname "$0")/../.."
source recipes/common.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

SHIPPED=recipes/tiny/checkpoints
DATA=${DATA:-data/demo_wn_all}
RUNS=${RUNS:-logs/small}
STUDENT_STEPS=${STUDENT_STEPS:-1200}
WHISPER=${WHISPER:-checkpoints/whisper/base.pt}
STUDENT=$RUNS/student/export/student.safetensors

# The light decoder: the shipped decoder with 16 SEANet filters instead of 32 and a feed-forward of 256
# instead of 512 (its 256-d transformer stream and four heads kept), every layer refit by least squares
# to the shipped decoder's activations on 24 training clips of 3 s (pockettts/training/decoder_pruning.py).
LIGHT=$RUNS/light_decoder/vae.safetensors
if want light_decoder && todo "$LIGHT"; then
  echo "== light decoder: the shipped decoder pruned to half its SEANet width, refit by least squares =="
  run mkdir -p "$RUNS/light_decoder"
  run $PY -m pockettts.tools prune-decoder --vae "$SHIPPED/vae.safetensors" --manifest "$DATA/clean/train.jsonl" \
    --items 24 --seconds 3 --seanet n_filters=16 --transformer dim_feedforward=256 --out "$LIGHT"
fi

if want student && todo "$STUDENT"; then
  echo "== small student: warm start from the shipped student, $STUDENT_STEPS steps at α = 2 =="
  run $PY distill.py experiment=student_small_warm_tiny data.data_dir="$DATA" data.cache_dir="$DATA/latents" \
    trainer.max_steps="$STUDENT_STEPS" trainer.val_check_interval=300 \
    callbacks.model_checkpoint.every_n_train_steps=300 \
    hydra.run.dir="$RUNS/student" $(resume "$RUNS/student")
fi

# The student records the light codec as the one to decode with; vae=recipes/tiny/checkpoints/vae.safetensors
# decodes the same latents with the shipped codec's full decoder.
if want ship; then
  echo "== ship: $SHIPPED/small_student.safetensors and $SHIPPED/vae_light.safetensors =="
  run cp "$LIGHT" "$SHIPPED/vae_light.safetensors"
  run cp "${LIGHT%.safetensors}.json" "$SHIPPED/vae_light.json"
  # The same weights and metadata, recording the light codec by its shipped path.
  run $PY -c 'import sys
from pockettts.models.bundle import read_export, write_export
source, out, tokenizer, vae = sys.argv[1:]
export = read_export(source)
write_export(export.flow_lm, out, tokenizer=tokenizer, vae=vae, step=export.step, ema=export.ema)' \
    "$STUDENT" "$SHIPPED/small_student.safetensors" "$SHIPPED/tokenizer.model" "$SHIPPED/vae_light.safetensors"
fi

# The ablation's evaluation (recipes/ablations/run.sh SIZE=demo): 48 held-out items, Whisper base.
evaluate() {  # evaluate NAME [vae=CODEC]
  want eval || return 0
  todo "$RUNS/eval/$1/done" || return 0
  run $PY eval.py checkpoint="$SHIPPED/small_student.safetensors" sampling.cfg_scale=1.0 testset=demo \
    testset_options.data_dir="$DATA" max_items=48 loop_guard=true generation_batch_size=16 \
    quality_scorer=null whisper="$WHISPER" device=cpu results_root="$RUNS/eval/$1" ${2:+"$2"}
  [ -n "${DRY_RUN:-}" ] || touch "$RUNS/eval/$1/done"
}
evaluate light_decoder
evaluate shipped_decoder vae="$SHIPPED/vae.safetensors"

if want rtf; then
  echo "== real-time factor: the benchmark's protocol (10 s of audio, warm), light decoder =="
  run $PY benchmarks/tts_speed.py --checkpoints "$SHIPPED/small_student.safetensors" \
    "$SHIPPED/student.safetensors" --vae "$SHIPPED/vae_light.safetensors" --rounds 3
fi
