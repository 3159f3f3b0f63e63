#!/usr/bin/env bash
# Every accuracy table in bench/README.md, from scratch: ~90 minutes on 2 cores (two single-thread runs at a time).
# Each command is independent and deterministic on one machine; see bench/test_accuracy.py for what a run is.
# A command whose --out file exists is skipped (an interrupted run of this script resumes): delete it to remeasure.
#   bash bench/accuracy_all.sh [tuning|recipe|grid|hyp10|curves|table]   # one part, or all in this order
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
if [[ $part == all || $part == grid ]]; then
  # Issue 17's even grid: supervised-only and the full method over the same lr x length cells per regime, seeds 0-2
  # (a cell already on disk is not rerun); all_labels' length.
  while read -r regime variant lr ep; do
    f=$R/grid17/${regime}_${variant}_lr${lr}_e${ep}.json
    [[ $variant == all_labels ]] && f=$R/grid17/all_labels_lr${lr}_e${ep}.json
    cmds+=("$A --regimes $regime --variants $variant --seeds 0,1,2 --extra='--lr $lr --epochs $ep' --out $f")
  done <<'LIST'
10pc supervised 5e-4 6
10pc supervised 1e-3 6
10pc supervised 2e-3 6
10pc supervised 2e-3 3
10pc supervised 1e-3 12
10pc full 1e-3 3
10pc full 1e-3 6
10pc full 2e-3 6
10pc full 4e-3 6
10pc full 2e-3 3
10pc full 2e-3 12
40pc supervised 1e-3 3
40pc supervised 1e-3 6
40pc supervised 2e-3 3
40pc supervised 2e-3 6
40pc full 1e-3 3
40pc full 1e-3 6
40pc full 2e-3 3
40pc full 2e-3 6
1pc all_labels 5e-4 6
1pc all_labels 5e-4 12
1pc all_labels 1e-3 6
LIST
fi
if [[ $part == all || $part == hyp10 ]]; then
  # Issue 17's hypotheses at 10 labels per class, one change at a time from the full method at lr 1e-3, 6 epochs.
  while read -r name flags; do
    cmds+=("$A --regimes 10pc --variants full --seeds 0,1,2 --extra='--lr 1e-3 --epochs 6 $flags' --out $R/hyp10/$name.json")
  done <<'LIST'
kl_threshold0.5 --kl-threshold 0.5
kl_threshold0.8 --kl-threshold 0.8
kl_weight_conf --kl-weight confidence
kl_tau1 --kl-tau 1
kl_tau4 --kl-tau 4
gamma_kl1 --gamma-kl 1
no_anl --gamma-nl 0
warmup1 --supervised-warmup-epochs 1
strong_crop_own --strong-crop own
randaug2 --randaug-n 2
ce_strong2_no_kl --gamma-kl 0 --gamma-ce-strong 2
ce_strong2_plus_kl --gamma-ce-strong 2
LIST
fi
if [[ $part == all || $part == curves ]]; then
  # The figure of bench/README.md: full vs supervised-only over training, seed 0, a 1-view eval every epoch; the
  # 10-label runs at lr 1e-3 for 6 epochs, both (checkpoints are deleted, metrics.jsonl and summary.json kept).
  C=$R/curves
  B="--dataset synthetic --eval-every 1 --log-every 10 --device cpu --workers 0 --seed 0 --split-seed 0"
  S="--gamma-kl 0 --gamma-mix 0 --gamma-nl 0"
  for run in "1pc-full --labeled 0.01" "1pc-supervised --labeled 0.01 $S" "10pc-full --labeled 0.1 --lr 1e-3 --epochs 6" \
             "10pc-supervised --labeled 0.1 --lr 1e-3 --epochs 6 $S"; do
    set -- $run; name=$1; shift
    [[ -f $C/$name/summary.json ]] || OMP_NUM_THREADS=1 python fullsvformer.py $B "$@" --out $C/$name > /dev/null
    rm -f $C/$name/*.pt
  done
  python bench/plot.py --compare $C/1pc-supervised $C/1pc-full $C/10pc-supervised $C/10pc-full --out $C/curves.png
fi
lane() {  # every other command, from $1: two lanes share the 2 cores
  for ((i = $1; i < ${#cmds[@]}; i += 2)); do
    [[ -f ${cmds[i]##* } ]] && continue  # the --out file exists: measured already
    eval "${cmds[i]}" > /dev/null; echo "done: ${cmds[i]}"
  done
}
if (( ${#cmds[@]} )); then
  lane 0 & lane 1 & wait
fi
if [[ $part == all || $part == table ]]; then
  python bench/test_accuracy.py --jobs 2 --out $R/accuracy.json  # every regime x variant x seeds 0-4
fi
