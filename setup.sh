#!/usr/bin/env bash
# Installs everything fullsvformer needs into ./.venv: FFmpeg's shared libraries (for torchcodec) and Python's venv
# module when missing (Debian/Ubuntu: apt-get), then the pip requirements. Safe to run again.
# Usage: bash setup.sh [python3]
#
# CPU-only machines: pip's default torch wheel on Linux x86-64 is the CUDA build, which pulls ~3 GB of nvidia/
# libraries that a CPU never uses. pip honours PIP_EXTRA_INDEX_URL, so
#     PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu bash setup.sh
# also offers PyTorch's CPU index, whose torch/torchvision builds (2.x.y+cpu) sort above PyPI's 2.x.y and win. (Not
# tested by this project: its machines cannot reach that index. The default stays PyPI's build, which runs on both.)
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

# torchcodec loads FFmpeg 4-7 shared libraries at run time; Debian 12 ships FFmpeg 5 (libavcodec59). The linker cache
# is read whole, then matched: `ldconfig -p | grep -q` under pipefail reported present libraries as missing whenever
# grep stopped at the first match and ldconfig died of SIGPIPE (3 runs in 300), and so ran apt-get for nothing.
LINKER_CACHE=$(ldconfig -p 2>/dev/null || true)
if ! [[ $LINKER_CACHE =~ libavcodec\.so\.(58|59|60|61) ]]; then
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
.venv/bin/python -c "import torch, torchcodec, timm; print('setup.sh: torch', torch.__version__, '| torchcodec', torchcodec.__version__, '| timm', timm.__version__)
if torch.version.cuda and not torch.cuda.is_available():
    print('setup.sh: this torch is a CUDA build (its nvidia/ libraries take ~3 GB) and no GPU is visible: for a CPU-only'
          ' install see the top of setup.sh')"
