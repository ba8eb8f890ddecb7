# Shared by the recipes under recipes/ (sourced, not executed): helpers, the size presets, and the
# stages every corpus goes through after its own data preparation.
#
#   run CMD...   print CMD (shell-quoted, after "+ "), then run it and print how long it took;
#                with DRY_RUN=1 only print it (tests/test_recipes.py compose-checks what is printed)
#   want STAGE   true if STAGE is in $STAGES (default: every stage): STAGES="teacher student" reruns
#                part of a recipe
#   concat OUT IN...  write the manifests IN... one after the other into OUT (same folder: their
#                relative audio paths stay valid)
#   resume DIR   the ckpt_path= override that continues an interrupted training in run directory
#                DIR (weights, optimiser, step, data position): the newer of its last checkpoint and
#                a SLURM pre-emption checkpoint (hpc_ckpt_*.ckpt); nothing for a fresh run
#   todo FILE    true unless FILE exists (always true with DRY_RUN): finished stages are skipped
#                when a recipe is rerun or requeued
#
# Settings (environment): SIZE=full|tiny|demo (the paper's models on GPUs | the CPU presets, a smoke
# test of the same commands | the CPU presets from the shipped demo checkpoints, recipes/ablations), TRAINER (ddp | gpu | multinode under SLURM | cpu), DATA, RUNS,
# VAE_FROM=train|released (train the codec, or convert Kyutai's released one from POCKET_WEIGHTS +
# POCKET_CONFIG), VAE (an exported codec to use as it is), WHISPER (alignment model file), WAVLM,
# LIBRISPEECH (test-clean, for evaluation), EVAL_WHISPER, DRY_RUN, STAGES, and VAE_OVERRIDES /
# TEACHER_OVERRIDES / STUDENT_OVERRIDES: extra Hydra overrides of a training (space-separated, e.g.
# TEACHER_OVERRIDES="trainer.accumulate_grad_batches=4 trainer.max_steps=200000"), PREP_WORKERS
# (processes converting a Hugging Face corpus; default: every core).
PY=${PY:-.venv/bin/python}
PREP_WORKERS=${PREP_WORKERS:-$(nproc)}
export WANDB_MODE=${WANDB_MODE:-offline}

run() {
  printf '+'
  printf ' %q' "$@"
  printf '\n'
  if [ -n "${DRY_RUN:-}" ]; then
    return 0
  fi
  local start=$SECONDS
  "$@"
  echo "   (${1##*/} ${2:-} done in $((SECONDS - start)) s)"
}

want() {
  [ -z "${STAGES:-}" ] || [[ " $STAGES " == *" $1 "* ]]
}

concat() {
  echo "+ cat ${*:2} > $1"
  if [ -z "${DRY_RUN:-}" ]; then
    cat "${@:2}" >"$1"
  fi
}

resume() {
  local newest
  newest=$(ls -t "$1"/hpc_ckpt_*.ckpt "$1/checkpoints/last.ckpt" 2>/dev/null | head -n 1 || true)
  case "$newest" in
    "") ;;
    */hpc_ckpt_*) echo "ckpt_path=hpc" ;;  # Lightning picks the newest one in the run directory
    *) echo "ckpt_path=$newest" ;;
  esac
}

todo() {
  [ -n "${DRY_RUN:-}" ] || [ ! -e "$1" ]
}

# The size preset: experiments, tokenizer size, device for encoding, alignment and evaluation,
# default trainer.
use_size() {
  SIZE=${SIZE:-full}
  if [ "$SIZE" = tiny ] || [ "$SIZE" = demo ]; then
    VAE_EXP=vae_tiny TEACHER_EXP=teacher_tiny STUDENT_EXP=student_tiny DEVICE=cpu
    VOCAB=${VOCAB:-256} TRAINER=${TRAINER:-cpu} VAE_ARGS=()
  elif [ "$SIZE" = full ]; then
    VAE_EXP=vae_speech TEACHER_EXP=teacher_300m STUDENT_EXP=student_100m DEVICE=cuda
    VOCAB=${VOCAB:-4000} TRAINER=${TRAINER:-ddp}
    VAE_ARGS=(model.ssl_teacher.checkpoint="${WAVLM:-checkpoints/wavlm_base_plus.pt}")
  else
    echo "SIZE must be full, tiny or demo, got $SIZE" >&2
    return 1
  fi
  VAE_FROM=${VAE_FROM:-train}
  TRAINED_VAE=$RUNS/vae/export/vae.safetensors
  RELEASED_VAE=$RUNS/vae_released/vae.safetensors
  POCKET_WEIGHTS=${POCKET_WEIGHTS:-checkpoints/pocket-tts/model.safetensors}
  POCKET_CONFIG=${POCKET_CONFIG:-checkpoints/pocket-tts/english.yaml}
  if [ "$VAE_FROM" = released ]; then
    VAE=${VAE:-$RELEASED_VAE}
  else
    VAE=${VAE:-$TRAINED_VAE}
  fi
  WHISPER=${WHISPER:-checkpoints/whisper/medium.en.pt}
  LIBRISPEECH=${LIBRISPEECH:-data/LibriSpeech}
  EVAL_WHISPER=${EVAL_WHISPER:-large-v3}
}

# The data every TTS stage reads: aligned manifests, the tokenizer and the latent cache.
tts_data() {
  TTS_DATA=(data.data_dir="$DATA" data.train_manifest=clean/train_aligned.jsonl
    data.valid_manifest=clean/valid_aligned.jsonl data.vae="$VAE" data.cache_dir="$DATA/latents"
    data.tokenizer="$DATA/tokenizer/tokenizer.model" data.vocab_size="$VOCAB")
}

# The stages after a corpus's own data preparation, from $DATA/clean/{train,valid}.jsonl. LAUNCH
# prefixes the training commands (recipes/slurm sets it to srun, so only they run on every GPU of
# the allocation); TEACHER_ARGS=(...) adds teacher overrides.
tts_stages() {
  stage_align
  stage_tokenizer
  stage_vae
  stage_latents
  stage_teacher
  stage_student
  stage_eval_librispeech
}

launch() {
  local prefix
  read -r -a prefix <<<"${LAUNCH:-}"
  run "${prefix[@]}" "$@"
}

# The words of $1 (a space-separated list of overrides) as the array OVERRIDES.
overrides() {
  read -r -a OVERRIDES <<<"${1:-}"
}

stage_align() {
  want align || return 0
  echo "== word alignments (Whisper), so voice prompts are cut between words =="
  for split in train valid; do
    if todo "$DATA/clean/${split}_aligned.jsonl"; then
      run $PY -m pockettts.data align --manifest "$DATA/clean/$split.jsonl" \
        --out "$DATA/clean/${split}_aligned.jsonl" --whisper "$WHISPER" --language "${LANGUAGE:-en}" \
        --device "$DEVICE"
    fi
  done
}

stage_tokenizer() {
  want tokenizer && todo "$DATA/tokenizer/tokenizer.model" || return 0
  echo "== SentencePiece tokenizer ($VOCAB pieces) =="
  run $PY -m pockettts.data tokenizer --manifest "$DATA/clean/train_aligned.jsonl" \
    --out "$DATA/tokenizer/tokenizer" --vocab-size "$VOCAB"
}

stage_vae() {
  want vae && todo "$VAE" || return 0
  if [ "$VAE" = "$RELEASED_VAE" ]; then
    echo "== stage 1: Kyutai's released codec, converted (no training) =="
    run $PY -m pockettts.tools import-kyutai --codec --weights "$POCKET_WEIGHTS" --config "$POCKET_CONFIG" --out "$VAE"
  elif [ "$VAE" = "$TRAINED_VAE" ]; then
    echo "== stage 1: the VAE ($VAE_EXP) =="
    overrides "${VAE_OVERRIDES:-}"
    launch $PY train.py experiment="$VAE_EXP" data.data_dir="$DATA" data.train_manifest=clean/train.jsonl \
      data.valid_manifest=clean/valid.jsonl "${VAE_ARGS[@]}" trainer="$TRAINER" \
      ${OVERRIDES[@]+"${OVERRIDES[@]}"} hydra.run.dir="$RUNS/vae" $(resume "$RUNS/vae")
    run $PY -m pockettts.tools codec --vae "$VAE" --manifest "$DATA/clean/valid.jsonl" --limit 200 \
      --out "$RUNS/vae/codec_report.json"
  fi
}

stage_latents() {
  want latents || return 0
  echo "== latent cache under the frozen VAE (resumable; a finished cache is only checked) =="
  run $PY -m pockettts.data encode --manifest "$DATA/clean/train_aligned.jsonl" \
    --manifest "$DATA/clean/valid_aligned.jsonl" --vae "$VAE" --out "$DATA/latents" --device "$DEVICE"
}

stage_teacher() {
  want teacher && todo "$RUNS/teacher/export/teacher.safetensors" || return 0
  echo "== stage 2: the teacher ($TEACHER_EXP) =="
  tts_data
  overrides "${TEACHER_OVERRIDES:-}"
  launch $PY train.py experiment="$TEACHER_EXP" "${TTS_DATA[@]}" model.model.vocab_size="$VOCAB" \
    ${TEACHER_ARGS[@]+"${TEACHER_ARGS[@]}"} trainer="$TRAINER" ${OVERRIDES[@]+"${OVERRIDES[@]}"} \
    hydra.run.dir="$RUNS/teacher" $(resume "$RUNS/teacher")
}

stage_student() {
  want student && todo "$RUNS/student/export/student.safetensors" || return 0
  echo "== stage 3: the student ($STUDENT_EXP), distilled from the teacher =="
  tts_data
  overrides "${STUDENT_OVERRIDES:-}"
  launch $PY distill.py experiment="$STUDENT_EXP" teacher="$RUNS/teacher/export/teacher.safetensors" \
    "${TTS_DATA[@]}" ${STUDENT_ARGS[@]+"${STUDENT_ARGS[@]}"} trainer="$TRAINER" \
    ${OVERRIDES[@]+"${OVERRIDES[@]}"} hydra.run.dir="$RUNS/student" $(resume "$RUNS/student")
}

stage_eval_librispeech() {
  want eval || return 0
  echo "== evaluation: LibriSpeech-PC test-clean, cross-sentence (1127 items), protocol=librispeech_pc =="
  # The published settings (pockettts/configs/protocol/librispeech_pc.yaml); teachers are sampled with
  # CFG 2, students (guidance distilled in) with CFG 1. Resumable. The literature's SIM-o and UTMOS
  # models where their weights are (SIM_CHECKPOINT, UTMOS_CHECKPOINT), else resemblyzer and DNSMOS;
  # EVAL_PROMPTS: a folder of enhanced prompts, <prompt utterance id>.wav|flac, as Kyutai's recipe.
  local sim=${SIM_CHECKPOINT:-checkpoints/wavlm_large_finetune.pth}
  local utmos=${UTMOS_CHECKPOINT:-checkpoints/utmos_scripted.pt}
  local scoring=()
  if [ -f "$sim" ]; then
    scoring+=(speaker_checkpoint="$sim")
  else
    echo "   (no $sim: speaker similarity with resemblyzer, not the literature's SIM-o)"
    scoring+=(speaker_embedder=resemblyzer speaker_checkpoint=null)
  fi
  if [ -f "$utmos" ]; then
    scoring+=(quality_checkpoint="$utmos")
  else
    echo "   (no $utmos: quality with DNSMOS, not UTMOS)"
    scoring+=(quality_scorer=dnsmos quality_checkpoint=null)
  fi
  if [ -n "${EVAL_PROMPTS:-}" ]; then
    scoring+=(testset_options.prompt_dir="$EVAL_PROMPTS")
  fi
  for model in teacher:2.0 student:1.0; do
    run $PY eval.py protocol=librispeech_pc checkpoint="$RUNS/${model%%:*}/export/${model%%:*}.safetensors" \
      testset_options.librispeech_root="$LIBRISPEECH" sampling.cfg_scale="${model#*:}" \
      whisper="$EVAL_WHISPER" "${scoring[@]}" results_root="$RUNS/eval" device="$DEVICE"
  done
}
