#!/usr/bin/env bash
# Every accuracy table in bench/README.md, from scratch: ~12 hours on 2 cores (two single-thread runs at a time; the
# grid ~7.5 h, its cells of 48 epochs or more ~5 h of that; the table ~4 h).
# Each command is independent and deterministic on one machine; see bench/test_accuracy.py for what a run is.
# A command whose --out file exists is skipped (an interrupted run of this script resumes): delete it to remeasure.
#   bash bench/accuracy_all.sh [tuning|recipe|grid|hyp10|curves|table]   # one part, or all in this order
set -euo pipefail
cd "$(dirname "$0")/.."
R=bench/results
A="python bench/test_accuracy.py --jobs 1"
ALL_LABELS_CELL=lr1e-3_e96; ALL_LABELS="--lr 1e-3 --epochs 96"  # = test_accuracy.ALL_LABELS_TUNED (grid17/all_labels_*)
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
  # (held out: seeds 3-4 of the chosen pair), the all-labels ceiling's length, and single changes at the long cells.
  # Every run gives --lr and --epochs, so label_rule does not change them. A file already on disk is not rerun. The
  # 40pc full cells ran before label_rule turned ANL off at 40 per class: they give --gamma-nl 1, which they ran with.
  while read -r file regime variant seeds flags; do
    cmds+=("$A --regimes $regime --variants $variant --seeds $seeds --extra='$flags' --out $R/$file.json")
  done <<'LIST'
grid17/1pc_supervised_lr2e-3_e1 1pc supervised 0,1,2 --lr 2e-3 --epochs 1
grid17/1pc_full_lr5e-4_e2 1pc full 0,1,2 --lr 5e-4 --epochs 2
grid17/1pc_full_lr5e-4_e3 1pc full 0,1,2 --lr 5e-4 --epochs 3
grid17/1pc_full_lr5e-4_e6 1pc full 0,1,2 --lr 5e-4 --epochs 6
grid17/1pc_full_lr5e-4_e12 1pc full 0,1,2 --lr 5e-4 --epochs 12
grid17/1pc_full_lr2.5e-4_e3 1pc full 0,1,2 --lr 2.5e-4 --epochs 3
grid17/1pc_full_lr1e-3_e3 1pc full 0,1,2 --lr 1e-3 --epochs 3
grid17/10pc_supervised_lr5e-4_e6 10pc supervised 0,1,2 --lr 5e-4 --epochs 6
grid17/10pc_supervised_lr1e-3_e6 10pc supervised 0,1,2 --lr 1e-3 --epochs 6
grid17/10pc_supervised_lr2e-3_e6 10pc supervised 0,1,2 --lr 2e-3 --epochs 6
grid17/10pc_supervised_lr1e-3_e12 10pc supervised 0,1,2 --lr 1e-3 --epochs 12
grid17/10pc_supervised_lr1e-3_e24 10pc supervised 0,1,2 --lr 1e-3 --epochs 24
grid17/10pc_supervised_lr1e-3_e48 10pc supervised 0,1,2 --lr 1e-3 --epochs 48
grid17/10pc_supervised_lr5e-4_e48 10pc supervised 0,1,2 --lr 5e-4 --epochs 48
grid17/10pc_supervised_lr2e-3_e48 10pc supervised 0,1,2 --lr 2e-3 --epochs 48
grid17/10pc_supervised_lr4e-3_e48_s0 10pc supervised 0 --lr 4e-3 --epochs 48
grid17/10pc_supervised_lr4e-3_e48_s1 10pc supervised 1 --lr 4e-3 --epochs 48
grid17/10pc_supervised_lr4e-3_e48_s2 10pc supervised 2 --lr 4e-3 --epochs 48
grid17/10pc_supervised_lr1e-3_e96_s0 10pc supervised 0 --lr 1e-3 --epochs 96
grid17/10pc_supervised_lr1e-3_e96_s1 10pc supervised 1 --lr 1e-3 --epochs 96
grid17/10pc_supervised_lr1e-3_e96_s2 10pc supervised 2 --lr 1e-3 --epochs 96
grid17/10pc_full_lr2e-3_e96_s0 10pc full 0 --lr 2e-3 --epochs 96
grid17/10pc_full_lr2e-3_e96_s1 10pc full 1 --lr 2e-3 --epochs 96
grid17/10pc_full_lr2e-3_e96_s2 10pc full 2 --lr 2e-3 --epochs 96
grid17/10pc_full_lr1e-3_e3 10pc full 0,1,2 --lr 1e-3 --epochs 3
grid17/10pc_full_lr1e-3_e6 10pc full 0,1,2 --lr 1e-3 --epochs 6
grid17/10pc_full_lr2e-3_e6 10pc full 0,1,2 --lr 2e-3 --epochs 6
grid17/10pc_full_lr4e-3_e6 10pc full 0,1,2 --lr 4e-3 --epochs 6
grid17/10pc_full_lr2e-3_e12 10pc full 0,1,2 --lr 2e-3 --epochs 12
grid17/10pc_full_lr2e-3_e24 10pc full 0,1,2 --lr 2e-3 --epochs 24
grid17/10pc_full_lr2e-3_e48 10pc full 0,1,2 --lr 2e-3 --epochs 48
grid17/10pc_full_lr2e-3_e12_gkl1 10pc full 0,1,2 --lr 2e-3 --epochs 12 --gamma-kl 1
grid17/heldout_10pc_supervised_lr1e-3_e12 10pc supervised 3,4 --lr 1e-3 --epochs 12
grid17/heldout_10pc_full_lr2e-3_e12 10pc full 3,4 --lr 2e-3 --epochs 12
grid17/heldout_10pc_supervised_lr1e-3_e24 10pc supervised 3,4 --lr 1e-3 --epochs 24
grid17/heldout_10pc_full_lr2e-3_e24 10pc full 3,4 --lr 2e-3 --epochs 24
grid17/heldout_40pc_supervised_lr1e-3_e96_s3 40pc supervised 3 --lr 1e-3 --epochs 96
grid17/heldout_40pc_supervised_lr1e-3_e96_s4 40pc supervised 4 --lr 1e-3 --epochs 96
grid17/heldout_40pc_full_lr1e-3_e96_s3 40pc full 3 --lr 1e-3 --epochs 96 --gamma-nl 1
grid17/heldout_40pc_full_lr1e-3_e96_s4 40pc full 4 --lr 1e-3 --epochs 96 --gamma-nl 1
grid17/40pc_supervised_lr1e-3_e6 40pc supervised 0,1,2 --lr 1e-3 --epochs 6
grid17/40pc_supervised_lr1e-3_e12 40pc supervised 0,1,2 --lr 1e-3 --epochs 12
grid17/40pc_supervised_lr2e-3_e12 40pc supervised 0,1,2 --lr 2e-3 --epochs 12
grid17/40pc_supervised_lr1e-3_e24 40pc supervised 0,1,2 --lr 1e-3 --epochs 24
grid17/40pc_supervised_lr1e-3_e48 40pc supervised 0,1,2 --lr 1e-3 --epochs 48
grid17/40pc_supervised_lr1e-3_e96 40pc supervised 0,1,2 --lr 1e-3 --epochs 96
grid17/40pc_full_lr1e-3_e6 40pc full 0,1,2 --lr 1e-3 --epochs 6 --gamma-nl 1
grid17/40pc_full_lr1e-3_e6_gkl1 40pc full 0,1,2 --lr 1e-3 --epochs 6 --gamma-kl 1 --gamma-nl 1
grid17/40pc_full_lr1e-3_e6_gkl0.5 40pc full 0,1,2 --lr 1e-3 --epochs 6 --gamma-kl 0.5 --gamma-nl 1
grid17/40pc_full_lr1e-3_e12 40pc full 0,1,2 --lr 1e-3 --epochs 12 --gamma-nl 1
grid17/40pc_full_lr1e-3_e12_gkl0.5 40pc full 0,1,2 --lr 1e-3 --epochs 12 --gamma-kl 0.5 --gamma-nl 1
grid17/40pc_full_lr2e-3_e12 40pc full 0,1,2 --lr 2e-3 --epochs 12 --gamma-nl 1
grid17/40pc_full_lr1e-3_e24 40pc full 0,1,2 --lr 1e-3 --epochs 24 --gamma-nl 1
grid17/40pc_full_lr1e-3_e48 40pc full 0,1,2 --lr 1e-3 --epochs 48 --gamma-nl 1
grid17/heldout_40pc_full_with_anl_lr1e-3_e48_s3 40pc full 3 --lr 1e-3 --epochs 48 --gamma-nl 1
grid17/heldout_40pc_full_with_anl_lr1e-3_e48_s4 40pc full 4 --lr 1e-3 --epochs 48 --gamma-nl 1
grid17/40pc_full_lr1e-3_e96 40pc full 0,1,2 --lr 1e-3 --epochs 96 --gamma-nl 1
grid17/40pc_full_no_anl_lr1e-3_e96_s0 40pc full 0 --lr 1e-3 --epochs 96
grid17/40pc_full_no_anl_lr1e-3_e96_s1 40pc full 1 --lr 1e-3 --epochs 96
grid17/40pc_full_no_anl_lr1e-3_e96_s2 40pc full 2 --lr 1e-3 --epochs 96
grid17/heldout_40pc_full_no_anl_lr1e-3_e96_s3 40pc full 3 --lr 1e-3 --epochs 96
grid17/all_labels_lr1e-3_e12_s0 1pc all_labels 0 --lr 1e-3 --epochs 12
grid17/all_labels_lr1e-3_e12_s1 1pc all_labels 1 --lr 1e-3 --epochs 12
grid17/all_labels_lr1e-3_e12_s2 1pc all_labels 2 --lr 1e-3 --epochs 12
grid17/all_labels_lr1e-3_e24_s0 1pc all_labels 0 --lr 1e-3 --epochs 24
grid17/all_labels_lr1e-3_e24_s1 1pc all_labels 1 --lr 1e-3 --epochs 24
grid17/all_labels_lr1e-3_e24_s2 1pc all_labels 2 --lr 1e-3 --epochs 24
intel/10pc_supervised_lr1e-3_e12 10pc supervised 0,1,2 --lr 1e-3 --epochs 12
intel/10pc_full_lr2e-3_e12 10pc full 0,1,2 --lr 2e-3 --epochs 12
grid17/all_labels_lr1e-3_e48_s0 1pc all_labels 0 --lr 1e-3 --epochs 48
grid17/all_labels_lr1e-3_e48_s1 1pc all_labels 1 --lr 1e-3 --epochs 48
grid17/all_labels_lr1e-3_e48_s2 1pc all_labels 2 --lr 1e-3 --epochs 48
grid17/all_labels_lr1e-3_e96_s0 1pc all_labels 0 --lr 1e-3 --epochs 96
grid17/all_labels_lr1e-3_e96_s1 1pc all_labels 1 --lr 1e-3 --epochs 96
grid17/all_labels_lr1e-3_e96_s2 1pc all_labels 2 --lr 1e-3 --epochs 96
hyp1/gamma_kl1 1pc full 0,1,2 --lr 5e-4 --epochs 3 --gamma-kl 1
hyp1/kl_weight_conf 1pc full 0,1,2 --lr 5e-4 --epochs 3 --kl-weight confidence
hyp1/strong_crop_own 1pc full 0,1,2 --lr 5e-4 --epochs 3 --strong-crop own
hyp1/nl_start1 1pc full 0,1,2 --lr 5e-4 --epochs 3 --nl-start-epochs 1
hyp1/kl_tau1 1pc full 0,1,2 --lr 5e-4 --epochs 3 --kl-tau 1
hyp1/kl_threshold0.5 1pc full 0,1,2 --lr 5e-4 --epochs 3 --kl-threshold 0.5
hyp10_e12/nl_start4_s0 10pc full 0 --lr 2e-3 --epochs 12 --nl-start-epochs 4
hyp10_e12/nl_start4_s1 10pc full 1 --lr 2e-3 --epochs 12 --nl-start-epochs 4
hyp10_e12/nl_start4_s2 10pc full 2 --lr 2e-3 --epochs 12 --nl-start-epochs 4
hyp10_e12/strong_crop_own_s0 10pc full 0 --lr 2e-3 --epochs 12 --strong-crop own
hyp10_e12/strong_crop_own_s1 10pc full 1 --lr 2e-3 --epochs 12 --strong-crop own
hyp10_e12/strong_crop_own_s2 10pc full 2 --lr 2e-3 --epochs 12 --strong-crop own
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
  # The figure of bench/README.md: full vs supervised-only over training, seed 0, a 1-view eval every epoch, each at
  # the table's settings: 1pc the preset (3 epochs, lr 5e-4) for both; 10pc the full method at label_rule's (24 epochs,
  # lr 2e-3), supervised-only at SUPERVISED_TUNED's (24, lr 1e-3). Checkpoints are deleted, metrics.jsonl and
  # summary.json kept.
  C=$R/curves
  B="--dataset synthetic --eval-every 1 --log-every 10 --device cpu --workers 0 --seed 0 --split-seed 0"
  S="--gamma-kl 0 --gamma-mix 0 --gamma-nl 0"
  for run in "1pc-full --labeled 0.01" "1pc-supervised --labeled 0.01 $S" "10pc-full --labeled 0.1" \
             "10pc-supervised --labeled 0.1 --lr 1e-3 --epochs 24 $S"; do
    set -- $run; name=$1; shift
    [[ -f $C/$name/summary.json ]] || OMP_NUM_THREADS=1 python fullsvformer.py $B "$@" --out $C/$name > /dev/null
    rm -f $C/$name/*.pt
  done
  python bench/plot.py --compare $C/1pc-supervised $C/1pc-full $C/10pc-supervised $C/10pc-full --out $C/curves.png
fi
if [[ $part == all || $part == table ]]; then
  # The table of README.md and bench/README.md: 3 regimes x 7 variants x seeds 0-4, a file per regime, variant and
  # seed (bench/results/table17/), then merged (test_accuracy.py --merge) into $R/accuracy.json. At 10 and 40 labels
  # per class the runs give label_rule's lr and epochs (full and ablations) or SUPERVISED_TUNED's (supervised) as
  # --extra, so they are the same commands as the grid's cells at those settings (grid17/: supervised-only and full at
  # 10pc seeds 0-4, supervised-only at 40pc seeds 0-2), which the merge reuses instead of rerunning.
  T=$R/table17
  for s in 0 1 2 3 4; do
    cmds+=("$A --regimes 1pc --variants supervised,full,no_anl,plain_kl,no_tokenmix,oracle --seeds $s --out $T/1pc_s$s.json")
    for v in oracle no_anl plain_kl no_tokenmix; do
      cmds+=("$A --regimes 10pc --variants $v --seeds $s --extra='--lr 2e-3 --epochs 24' --out $T/10pc_${v}_s$s.json")
    done
  done
  for s in 3 4; do
    cmds+=("$A --regimes 40pc --variants supervised --seeds $s --extra='--lr 1e-3 --epochs 48' --out $T/40pc_supervised_s$s.json")
  done
  # 40pc full: label_rule turns ANL off at 40 per class, so these are grid17/40pc_full_lr1e-3_e48's runs without ANL
  # (that cell and its held-out seeds 3-4, grid17/heldout_40pc_full_with_anl_*, ran before the rule did, with
  # gamma_nl 1); no_anl repeats them.
  for s in 0 1 2 3 4; do for v in full oracle no_anl plain_kl no_tokenmix; do
    cmds+=("$A --regimes 40pc --variants $v --seeds $s --extra='--lr 1e-3 --epochs 48' --out $T/40pc_${v}_s$s.json")
  done; done
  # The 40pc ablations from the old base, with ANL (before label_rule turned it off): kept for the comparison.
  for s in 0 1 2 3 4; do for v in oracle plain_kl no_tokenmix; do
    [[ $v == no_tokenmix && $s -gt 2 ]] && continue  # not run
    cmds+=("$A --regimes 40pc --variants $v --seeds $s --extra='--lr 1e-3 --epochs 48 --gamma-nl 1' --out ${T}_with_anl/40pc_${v}_s$s.json")
  done; done
  for s in 3 4; do  # all_labels at ALL_LABELS_TUNED; seeds 0-2 are the grid's
    cmds+=("$A --regimes 1pc --variants all_labels --seeds $s --extra='$ALL_LABELS' --out $T/all_labels_s$s.json")
  done
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
  G=$R/grid17
  python bench/test_accuracy.py --out $R/accuracy.json --merge $T/*.json $G/10pc_supervised_lr1e-3_e24.json \
    $G/heldout_10pc_supervised_lr1e-3_e24.json $G/10pc_full_lr2e-3_e24.json $G/heldout_10pc_full_lr2e-3_e24.json \
    $G/40pc_supervised_lr1e-3_e48.json $G/all_labels_${ALL_LABELS_CELL}_s[012].json
fi
