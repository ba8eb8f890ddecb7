#!/usr/bin/env bash
# Idempotent set-up of a fresh Linux machine: Debian packages (TTS voices for the demo corpus,
# ffmpeg, chromium for the listening report's browser test), a virtual environment in .venv, and
# this package with its eval (scoring models) and dev (tests) extras; `pip install -e .` alone is
# enough to train and to speak.
# Re-running it only redoes what changed (pyproject.toml edits trigger a reinstall).
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts sox ffmpeg
  chromium)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "[setup] apt-get install ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || { echo "[setup] creating $VENV"; "$PYTHON" -m venv "$VENV"; }
stamp="$VENV/.pockettts-installed"
want=$(sha1sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[setup] pip install -e .[eval,dev] (first time: a few minutes)"
  "$VENV/bin/pip" install -q --disable-pip-version-check -e '.[eval,dev]'
  echo "$want" > "$stamp"
fi
echo "[setup] ready: $VENV ($("$VENV/bin/python" -c 'import torch, torchaudio; print("torch", torch.__version__, "torchaudio", torchaudio.__version__)'))"
