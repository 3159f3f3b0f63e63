#!/usr/bin/env bash
# Installs everything fullsvformer needs into ./.venv: FFmpeg's shared libraries (for torchcodec) when missing,
# then the pip requirements. Safe to run again. Usage: bash setup.sh [python3]
set -euo pipefail
cd "$(dirname "$0")"
PY=${1:-python3}

# torchcodec loads FFmpeg 4-7 shared libraries at run time; Debian 12 ships FFmpeg 5 (libavcodec59).
if ! ldconfig -p 2>/dev/null | grep -qE 'libavcodec\.so\.(58|59|60|61)'; then
  if command -v apt-get >/dev/null; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    echo "setup.sh: installing FFmpeg shared libraries with apt-get"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
      libavcodec59 libavformat59 libavutil57 libswscale6 libswresample4 libavdevice59 libavfilter8 \
      || DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends ffmpeg
  else
    echo "setup.sh: FFmpeg shared libraries (libavcodec etc., versions 4-7) are missing and apt-get is not" \
         "available: install FFmpeg with your package manager (e.g. 'brew install ffmpeg', 'conda install ffmpeg')" >&2
    exit 1
  fi
fi

[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -r requirements.txt
.venv/bin/python -c "import torch, torchcodec, timm; print('setup.sh: torch', torch.__version__, '| torchcodec', torchcodec.__version__, '| timm', timm.__version__)"
