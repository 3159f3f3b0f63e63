"""Accuracy regression bench: Full-SVFormer vs supervised-only on the synthetic set with 5% labels, plus ablations.

Run: `python -m pytest bench/test_accuracy.py` (the path is needed: pytest.ini's testpaths is tests/). It pretrains
one image model, then trains 6 variants x SEEDS seeds from it, two processes at a time with one thread each, and writes
bench/results/accuracy.json. Two checks on mean student top-1: the full method fed true labels as pseudo-labels
(oracle) beats supervised-only by ORACLE_MARGIN points (holds: the regression check that .ci/run runs), and the full
method itself beats supervised-only by MARGIN points (does not hold yet: a strict xfail). About 6 minutes on 2 cores.

- Why a pretrained start. The paper fine-tunes an ImageNet-initialised TimeSformer. From scratch, a 2-block ViT needs
  far more steps than a CPU bench can afford to learn the motion classes at all (the previous version of this bench:
  every variant at chance), and SSL cannot help a teacher at chance. So stage 0 plays ImageNet: an image model (T=1)
  is trained with all labels on single frames of OTHER synthetic clips (--synth-seed 1, so no bench clip is seen) and
  a wider label set (8 motions: axis and speed), 800 steps, ~45 s. Its head is dropped when the 4-class video model
  loads it.
- Task: 4 motion classes (still, vertical, horizontal, diagonal) of 8 dots with motion blur (--synth-blur 16, so a
  frame shows a streak along the axis), 32 px, 8 px patches, 4 frames; 100 clips per class, 5% labeled = 5 per class
  (UCF-101 1% is 1 per class), 50 test clips per class, 8 epochs (184 steps). Supervised-only reaches 62.3 +- 5.0
  top-1 here; with all labels it reaches 90.5 (one run, seed 0, --labeled 1.0 --mu 0 --labeled-batch 8
  --global-batch 8 --epochs 4, 200 steps): the headroom semi-supervision is meant to close.
- Supervised-only baseline: the same run with gamma_kl = gamma_mix = gamma_nl = 0, i.e. labeled CE alone on the same
  labeled clips, in the same order, for the same number of steps and lr schedule.
- --ssl-rampup-epochs 4 in every variant: the fresh head makes the teacher's first pseudo-labels noise. Without the
  ramp (seed 0) the full method's pseudo-label accuracy stayed at 0.40-0.45 for all 8 epochs and the student ended at
  52.5 instead of 65.5.
- Seeds: run i uses --seed i (init of the head, augmentation, data order) and --split-seed i (which clips are
  labeled), so the spread includes the luck of the labeled draw, which dominates with 5 labeled clips per class.
- Ablations: no_anl (--gamma-nl 0), plain_kl (--no-kl-standardize), no_tokenmix (--gamma-mix 0). They are recorded,
  not asserted.
- oracle (--oracle-pseudo-labels): the full method with the teacher's predictions on the unlabeled clips replaced by
  their true labels. It bounds what the unlabeled losses can add and tests everything but the teacher's quality.
- Finding so far: no clear gap (full 65.0 +- 8.3 vs supervised 62.3 +- 5.0; seed 2 loses 10.5 points). The teacher's
  pseudo-label accuracy peaks at ~0.75 after 2 epochs, then falls (to 0.53 in supervised-only, 0.64 in full) as the
  model overfits its 20 labeled clips (labeled CE 0.1); the unlabeled losses slow that fall but do not stop it. With
  correct pseudo-labels (oracle) the same losses add 19.7 points, so what is missing is pseudo-label quality.
"""
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results" / "accuracy.json"
SEEDS = (0, 1, 2)
# What the image and the video model share: the synthetic look and the architecture (the synthetic preset's D 64,
# 2 blocks, 2 heads).
LOOK = ["--dataset", "synthetic", "--synth-movers", "8", "--synth-side", "0.1", "--synth-blur", "16",
        "--synth-size", "40", "--img-size", "32", "--patch-size", "8", "--lr", "5e-4", "--eval-every", "0",
        "--log-every", "50", "--device", "cpu", "--workers", "0"]
PRETRAIN = LOOK + ["--synth-seed", "1", "--synth-classes", "8", "--synth-clips-per-class", "200", "--num-frames", "1",
                   "--temporal-warp-keys", "1", "--labeled", "1.0", "--mu", "0", "--labeled-batch", "32",
                   "--global-batch", "32", "--epochs", "16", "--seed", "0"]
BASE = LOOK + ["--synth-classes", "4", "--synth-clips-per-class", "100", "--synth-test-per-class", "50",
               "--num-frames", "4", "--temporal-warp-keys", "2", "--labeled", "0.05", "--epochs", "8",
               "--ssl-rampup-epochs", "4"]
VARIANTS = {
    "supervised": ["--gamma-kl", "0", "--gamma-mix", "0", "--gamma-nl", "0"],
    "full": [],
    "no_anl": ["--gamma-nl", "0"],
    "plain_kl": ["--no-kl-standardize"],
    "no_tokenmix": ["--gamma-mix", "0"],
    "oracle": ["--oracle-pseudo-labels"],
}
# Full must beat supervised-only by this many top-1 points (mean over SEEDS). Not set from a measured gap: there is none
# so far (see the xfail reason and bench/results/accuracy.json). 5 points is the least we would call clear given the
# measured spread (std 2-10 points per variant over 3 seeds).
MARGIN = 5.0
# The full method fed the true labels as pseudo-labels must beat supervised-only by this much. Measured: +19.7 points
# (82.0 +- 2.6 vs 62.3 +- 5.0, seeds 0-2; per seed +26.5, +20.5, +12; bench/results/accuracy.json). The margin is about
# half of that and 2 times the larger std, so noise does not fail it, but losing the unlabeled losses' effect does.
ORACLE_MARGIN = 10.0


def run(args: list[str], out: Path) -> dict:
    """One training run in its own process with one thread (two run side by side on 2 cores)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, str(ROOT / "fullsvformer.py"), *args, "--out", str(out)], cwd=ROOT, env=env,
                       capture_output=True, text=True)
    assert p.returncode == 0, f"{' '.join(args)}\n{p.stderr[-3000:]}"
    return json.loads((out / "summary.json").read_text())


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> dict:
    """Pretrain once, train every variant x seed, write bench/results/accuracy.json and return its content."""
    tmp = tmp_path_factory.mktemp("accuracy")
    t0 = time.perf_counter()
    pre = run(PRETRAIN, tmp / "pretrain")
    jobs = [(name, seed, BASE + extra + ["--pretrained", str(tmp / "pretrain" / "last.pt"), "--seed", str(seed),
                                         "--split-seed", str(seed)])
            for name, extra in VARIANTS.items() for seed in SEEDS]
    with ThreadPoolExecutor(max(1, min(2, os.cpu_count() or 1))) as pool:
        summaries = list(pool.map(lambda j: run(j[2], tmp / f"{j[0]}-{j[1]}"), jobs))
    out = {}
    for name in VARIANTS:
        runs = [{"seed": seed, "top1": s["top1"], "teacher_top1": s["teacher_top1"],
                 "pseudo_label_acc": s["pseudo_label_acc"]}
                for (n, seed, _), s in zip(jobs, summaries) if n == name]
        top1 = [x["top1"] for x in runs]
        out[name] = {"mean": statistics.mean(top1), "std": statistics.stdev(top1), "runs": runs,
                     "teacher_mean": statistics.mean(x["teacher_top1"] for x in runs)}
    out["pretrain"] = {"argv": PRETRAIN, "top1": pre["top1"], "steps": pre["steps"],
                       "note": "8-class image model (T=1) on synthetic clips of another content seed"}
    out["config"] = {"argv": BASE, "variants": VARIANTS, "seeds": list(SEEDS), "margin": MARGIN,
                     "oracle_margin": ORACLE_MARGIN,
                     "metric": "student top-1 (%), 1-view eval on the synthetic test set (200 clips)"}
    out["machine"] = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                      "threads_per_run": 1, "torch": torch.__version__, "python": platform.python_version()}
    out["wall_time_s"] = time.perf_counter() - t0
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=1) + "\n")
    return out


def test_oracle_pseudo_labels_beat_supervised(table):
    """The unlabeled half of the method (strong views, TokenMix, standardized KL, ANL, their weights and the ramp)
    turns correct pseudo-labels into accuracy: the check that holds today, independent of the teacher's quality."""
    gap = table["oracle"]["mean"] - table["supervised"]["mean"]
    assert gap >= ORACLE_MARGIN, (f"oracle {table['oracle']['mean']:.1f} vs supervised "
                                  f"{table['supervised']['mean']:.1f}: gap {gap:.1f} < {ORACLE_MARGIN} points")


@pytest.mark.xfail(strict=True, reason="open: with 3 seeds full does not beat supervised-only by a clear margin on "
                                       "the synthetic task (bench/results/accuracy.json); strict, so a fix that makes "
                                       "it pass must remove this marker and set MARGIN from the measured gap")
def test_full_beats_supervised(table):
    gap = table["full"]["mean"] - table["supervised"]["mean"]
    assert gap >= MARGIN, (f"full {table['full']['mean']:.1f} vs supervised {table['supervised']['mean']:.1f}: gap "
                           f"{gap:.1f} < {MARGIN} points")
