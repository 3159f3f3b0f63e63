#!/usr/bin/env bash
# Full-SVFormer train-step throughput on one GPU (ViT-B 8x224, bf16): eager vs torch.compile at labeled_batch 1, 2
# (mu 5) and with grad_checkpointing; clips/s, MFU against a measured bf16 matmul, peak memory, host syncs per step and
# two micro-steps under torch.cuda.set_sync_debug_mode("error") (any sync fails them); the HF Timesformer
# fwd+bwd ratio when transformers is installed. Needs torch, timm (no torchcodec, no FFmpeg, no network).
#
#   bash bench/gpu.sh [OUT_DIR_OR_JSON]        # default: $OUT, else the current folder; ~4 min, hard limit 290 s
#   PYTHON=/path/to/python BUDGET_S=200 bash bench/gpu.sh
#
# Rows run in priority order and the JSON is rewritten after each, so a timeout still leaves the finished rows.
set -uo pipefail
OUT_ARG="$(realpath -m "${1:-${OUT:-.}}")"  # resolved before the cd below, from the caller's folder
cd "$(dirname "$0")/.."
PY="${PYTHON:-$(command -v python || command -v python3)}"
export PYTHONUNBUFFERED=1 TORCHINDUCTOR_CACHE_DIR="${TORCHINDUCTOR_CACHE_DIR:-/tmp/fsv-inductor}"
timeout --signal=INT --kill-after=15 "${TIMEOUT_S:-290}" \
  "$PY" bench/gpu_bench.py --out "$OUT_ARG" --budget-s "${BUDGET_S:-240}" "${@:2}"
rc=$?
[ $rc -eq 124 ] && echo "gpu.sh: hit the ${TIMEOUT_S:-290} s limit; the JSON holds the rows that finished" >&2
exit $rc
