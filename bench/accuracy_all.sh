#!/usr/bin/env bash
# Every accuracy table in bench/README.md, from scratch: ~90 minutes on 2 cores (two single-thread runs at a time).
# Each command is independent and deterministic on one machine; see bench/test_accuracy.py for what a run is.
#   bash bench/accuracy_all.sh [tuning|recipe|table]   # one part, or all three in this order
set -euo pipefail
cd "$(dirname "$0")/.."
R=bench/results
A="python bench/test_accuracy.py --jobs 1"
part=${1:-all}
cmds=()
if [[ $part == all || $part == tuning ]]; then
  # Supervised-only's lr x length, both regimes, seeds 0-2 (the seeds the method's settings were chosen on).
  for lr in 5e-4 1e-3; do for ep in 1 3; do
    cmds+=("$A --variants supervised --seeds 0,1,2 --extra='--lr $lr --epochs $ep' --out $R/tuning/supervised_lr${lr}_e${ep}.json")
  done; done
fi
if [[ $part == all || $part == recipe ]]; then
  # The recipe choices where our defaults and SVFormer's code differ, one at a time from the base they were measured
  # on (the preset with mix_weighted off, its default then), seeds 0-2.
  while read -r name regime flags; do
    cmds+=("$A --regimes $regime --variants full --seeds 0,1,2 --extra='--no-mix-weighted $flags' --out $R/recipe/$name.json")
  done <<'LIST'
base 1pc
base_10pc 10pc
mix_weighted 1pc --mix-weighted
mix_weighted_10pc 10pc --mix-weighted
warmup1 1pc --supervised-warmup-epochs 1
warmup1_10pc 10pc --supervised-warmup-epochs 1
randaug0 1pc --randaug-n 0
randaug2 1pc --randaug-n 2
warp_all 1pc --temporal-warp-on all
delta0.1 1pc --mix-threshold 0.1
delta0.6 1pc --mix-threshold 0.6
ema0.9227 1pc --ema-momentum 0.9227
ema0.99 1pc --ema-momentum 0.99
LIST
fi
lane() {  # every other command, from $1: two lanes share the 2 cores
  for ((i = $1; i < ${#cmds[@]}; i += 2)); do eval "${cmds[i]}" > /dev/null; echo "done: ${cmds[i]}"; done
}
if (( ${#cmds[@]} )); then
  lane 0 & lane 1 & wait
fi
if [[ $part == all || $part == table ]]; then
  python bench/test_accuracy.py --jobs 2 --out $R/accuracy.json  # every regime x variant x seeds 0-4
fi
