#!/usr/bin/env bash
# Installs everything fullsvformer needs into ./.venv: FFmpeg's shared libraries (for torchcodec) and Python's venv
# module when missing (Debian/Ubuntu: apt-get), then the pip requirements. Safe to run again.
# Usage: bash setup.sh [python3]
set -euo pipefail
cd "$(dirname "$0")"
PY=${1:-python3}
export PATH="$PATH:/sbin:/usr/sbin"  # ldconfig lives in /sbin, which a non-root PATH may lack

apt_install() {  # apt_install PKG... ; as root, or through sudo (env passes DEBIAN_FRONTEND through sudo)
  local SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

# torchcodec loads FFmpeg 4-7 shared libraries at run time; Debian 12 ships FFmpeg 5 (libavcodec59).
if ! ldconfig -p 2>/dev/null | grep -qE 'libavcodec\.so\.(58|59|60|61)'; then
  if command -v apt-get >/dev/null; then
    echo "setup.sh: installing FFmpeg shared libraries with apt-get"
    apt_install libavcodec59 libavformat59 libavutil57 libswscale6 libswresample4 libavdevice59 libavfilter8 \
      || apt_install ffmpeg
  else
    echo "setup.sh: FFmpeg shared libraries (libavcodec etc., versions 4-7) are missing and apt-get is not" \
         "available: install FFmpeg with your package manager (e.g. 'brew install ffmpeg', 'conda install ffmpeg')" >&2
    exit 1
  fi
fi

# Debian's python3 has no ensurepip without python3-venv; a bare image may have no python3 at all.
if ! "$PY" -c 'import ensurepip, venv' 2>/dev/null; then
  if command -v apt-get >/dev/null; then
    echo "setup.sh: installing python3 and python3-venv with apt-get"
    apt_install python3 python3-venv
  else
    echo "setup.sh: $PY cannot create virtual environments (no ensurepip/venv): install Python 3.10+ with venv" >&2
    exit 1
  fi
fi

# A venv left half-made by an earlier failure (no pip inside) is made again.
.venv/bin/python -m pip --version >/dev/null 2>&1 || { rm -rf .venv; "$PY" -m venv .venv; }
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -r requirements.txt
.venv/bin/python -c "import torch, torchcodec, timm; print('setup.sh: torch', torch.__version__, '| torchcodec', torchcodec.__version__, '| timm', timm.__version__)"
