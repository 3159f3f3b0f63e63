"""Accuracy regression bench: Full-SVFormer vs supervised-only on the synthetic set with 5% labels, plus ablations.

Run: `python -m pytest bench/test_accuracy.py` (the path is needed: pytest.ini's testpaths is tests/). It pretrains
one image model, then trains 6 variants x SEEDS seeds from it, two processes at a time with one thread each, and writes
bench/results/accuracy.json. Two checks on mean student top-1: the full method beats supervised-only by MARGIN points,
and the full method fed the true labels as pseudo-labels (oracle) beats supervised-only by ORACLE_MARGIN points.
About 6 minutes on 2 cores.

- Why a pretrained start. The paper fine-tunes an ImageNet-initialised TimeSformer. From scratch, a 2-block ViT needs
  far more steps than a CPU bench can afford to learn the motion classes at all (an earlier version of this bench:
  every variant at chance), and SSL cannot help a teacher at chance. So stage 0 plays ImageNet: an image model (T=1)
  is trained with all labels on single frames of OTHER synthetic clips (--synth-seed 1, so no bench clip is seen) and
  a wider label set (8 motions: axis and speed), 800 steps, ~45 s. Its head is dropped when the 4-class video model
  loads it.
- Task: 4 motion classes (still, vertical, horizontal, diagonal) of 8 dots with motion blur (--synth-blur 16, so a
  frame shows a streak along the axis), 32 px, 8 px patches, 4 frames; 100 clips per class, 5% labeled = 5 per class
  (UCF-101 1% is 1 per class), 50 test clips per class, 8 epochs (184 steps). With all labels the same fine-tuning
  reaches 90.5 (one run, seed 0, --labeled 1.0 --mu 0 --labeled-batch 8 --global-batch 8 --epochs 4, 200 steps;
  bench/results/sweep/all_labels_seed0.json).
- Supervised-only baseline: the same run with gamma_kl = gamma_mix = gamma_nl = 0, i.e. labeled CE alone on the same
  labeled clips, in the same order, for the same number of steps and lr schedule.
- Three more settings differ from the synthetic demo preset, each measured (seeds 0-2 unless noted, full vs supervised
  62.3 +- 5.0; bench/README.md has the table):
  * --randaug-n 0: the strong view is SVFormer's as its official code runs it (temporal warping + channel dropout; its
    RandAugment branch is dead code). RandAugment 2x9 hurts on these 32 px dot clips: with 10 labels per class
    (--synth-clips-per-class 200 --epochs 4) the KL consistency alone gives 70.5 with it and 80.8 without it
    (supervised 80.2).
  * --ema-momentum 0.99: the dataclass default (a SVFormer reproduction's value) instead of the demo preset's 0.97.
  * --mix-threshold 0.5: delta = 0.3 is SVFormer's for 101 classes (30x chance); with 4 classes it is barely above
    chance (0.25), so nearly every pseudo-label became a one-hot TokenMix target (logged mask_ratio 0.84-0.95, mean
    over each run). 0.5 is 2x chance.
  Full-method student, mean of seeds 0-2: demo-preset values of all three 65.0 +- 8.3 (the previous version of this
  bench); --randaug-n 0 alone 66.7; plus EMA 0.99 70.0, or plus delta 0.5 70.5; all three 71.5 +- 7.0.
- --ssl-rampup-epochs 4 in every variant: the fresh head makes the teacher's first pseudo-labels noise. Without the
  ramp (seed 0, previous settings) the full method's pseudo-label accuracy stayed at 0.40-0.45 for all 8 epochs and the
  student ended at 52.5 instead of 65.5.
- Seeds: run i uses --seed i (init of the head, augmentation, data order) and --split-seed i (which clips are
  labeled), so the spread includes the luck of the labeled draw, which dominates with 5 labeled clips per class.
  The settings above were chosen on seeds 0-2; seeds 3-5, not used for the choice, give full 72.0 vs supervised 65.7.
- Ablations: no_anl (--gamma-nl 0), plain_kl (--no-kl-standardize), no_tokenmix (--gamma-mix 0). They are recorded,
  not asserted: 3 seeds are too few for a check on their differences from the full method (see below).
- oracle (--oracle-pseudo-labels): the full method with the teacher's predictions on the unlabeled clips replaced by
  their true labels. It bounds what the unlabeled losses can add and tests everything but the teacher's quality.
- What the gap is made of (teacher_top1 in the results): the supervised-only run's own EMA teacher, an average of its
  weights that uses no unlabeled clip, reaches 69.7 (seeds 3-5: 71.7), and the full method's teacher 71.5 (73.8). So
  most of the student's gain is what weight averaging alone gives, consistent with a mean-teacher effect (the
  consistency losses carrying the averaged model's accuracy into the student; no run isolates it). Over the supervised
  run's best model the unlabeled clips add ~2 points with the full method, and 8 without Tube TokenMix (teacher 78.0;
  student +4.7, of which +11.5 on seed 0): in these runs TokenMix costs accuracy.
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
               "--ssl-rampup-epochs", "4", "--randaug-n", "0", "--ema-momentum", "0.99", "--mix-threshold", "0.5"]
VARIANTS = {
    "supervised": ["--gamma-kl", "0", "--gamma-mix", "0", "--gamma-nl", "0"],
    "full": [],
    "no_anl": ["--gamma-nl", "0"],
    "plain_kl": ["--no-kl-standardize"],
    "no_tokenmix": ["--gamma-mix", "0"],
    "oracle": ["--oracle-pseudo-labels"],
}
# Full must beat supervised-only by this many top-1 points (mean student top-1 over SEEDS). Measured: +9.2 on seeds 0-2
# (71.5 +- 7.0 vs 62.3 +- 5.0; per seed +9.5, +16.5, +1.5; bench/results/accuracy.json) and +6.3 on seeds 3-5, which
# were not used to choose the settings (72.0 vs 65.7; per seed +7.5, +3.0, +8.5; bench/results/accuracy_seeds_3-5.json).
# The margin is half the mean gap over those 6 seeds (+7.75), rounded: a change that removes most of the gain fails it.
# The runs are deterministic on a given torch build (two runs here gave identical tables), so the margin guards against
# numeric changes, not run-to-run noise; those act like a new draw of seeds, and with a per-seed gap sd of 5.3 a 3-seed
# mean has a standard error of 3.1: a new draw would fall below 4 about 1 time in 9 (the worst 3 of the 6 seeds give 4.0).
MARGIN = 4.0
# The full method fed the true labels as pseudo-labels must beat supervised-only by this much. Measured: +28.0 points
# (90.3 +- 0.6 vs 62.3 +- 5.0, seeds 0-2; per seed +34, +27, +23). Half of that, rounded: noise does not fail it, but
# losing the unlabeled losses' effect does.
ORACLE_MARGIN = 14.0


def run(args: list[str], out: Path) -> dict:
    """One training run in its own process with one thread (two run side by side on 2 cores)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, str(ROOT / "fullsvformer.py"), *args, "--out", str(out)], cwd=ROOT, env=env,
                       capture_output=True, text=True)
    assert p.returncode == 0, f"{' '.join(args)}\n{p.stderr[-3000:]}"
    return json.loads((out / "summary.json").read_text())


def measure(tmp: Path, seeds=SEEDS, variants=tuple(VARIANTS), extra: list[str] = ()) -> dict:
    """Pretrain once, train each variant x seed (BASE + the variant's flags + `extra`, so a flag in `extra` overrides
    BASE), and return the table that bench/results/accuracy.json holds. Runs go under `tmp`."""
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown}; expected some of {list(VARIANTS)}")
    t0 = time.perf_counter()
    pre = run(PRETRAIN, tmp / "pretrain")
    jobs = [(name, seed, BASE + VARIANTS[name] + list(extra) + ["--pretrained", str(tmp / "pretrain" / "last.pt"),
                                                               "--seed", str(seed), "--split-seed", str(seed)])
            for name in variants for seed in seeds]
    with ThreadPoolExecutor(max(1, min(2, os.cpu_count() or 1))) as pool:
        summaries = list(pool.map(lambda j: run(j[2], tmp / f"{j[0]}-{j[1]}"), jobs))
    out = {}
    for name in variants:
        runs = [{"seed": seed, "top1": s["top1"], "teacher_top1": s["teacher_top1"],
                 "pseudo_label_acc": s["pseudo_label_acc"]}
                for (n, seed, _), s in zip(jobs, summaries) if n == name]
        top1 = [x["top1"] for x in runs]
        out[name] = {"mean": statistics.mean(top1), "std": statistics.stdev(top1) if len(top1) > 1 else 0.0,
                     "runs": runs, "teacher_mean": statistics.mean(x["teacher_top1"] for x in runs)}
    out["pretrain"] = {"argv": PRETRAIN, "top1": pre["top1"], "steps": pre["steps"],
                       "note": "8-class image model (T=1) on synthetic clips of another content seed"}
    out["config"] = {"argv": BASE, "extra": list(extra), "variants": {v: VARIANTS[v] for v in variants},
                     "seeds": list(seeds), "margin": MARGIN, "oracle_margin": ORACLE_MARGIN,
                     "metric": "student top-1 (%), 1-view eval on the synthetic test set (200 clips)"}
    out["machine"] = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                      "threads_per_run": 1, "torch": torch.__version__, "python": platform.python_version()}
    out["wall_time_s"] = time.perf_counter() - t0
    return out


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> dict:
    """The bench's own table (SEEDS, every variant, no extra flags), also written to bench/results/accuracy.json."""
    out = measure(tmp_path_factory.mktemp("accuracy"))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=1) + "\n")
    return out


def test_oracle_pseudo_labels_beat_supervised(table):
    """The unlabeled half of the method (strong views, TokenMix, standardized KL, ANL, their weights and the ramp)
    turns correct pseudo-labels into accuracy, independently of the teacher's quality: when test_full_beats_supervised
    fails, this one tells whether the student side or the pseudo-labels broke."""
    gap = table["oracle"]["mean"] - table["supervised"]["mean"]
    assert gap >= ORACLE_MARGIN, (f"oracle {table['oracle']['mean']:.1f} vs supervised "
                                  f"{table['supervised']['mean']:.1f}: gap {gap:.1f} < {ORACLE_MARGIN} points")


def test_full_beats_supervised(table):
    """The method's claim on the synthetic task: with 5% labels, training on the unlabeled clips makes the student
    better than labeled CE alone. Students are compared, as SVFormer's code evaluates the student (never the teacher).
    It does not show that the method beats the supervised run's own EMA teacher: that gap is ~2 points (recorded in
    teacher_mean, not asserted), so most of what this checks is the teacher's accuracy reaching the student."""
    gap = table["full"]["mean"] - table["supervised"]["mean"]
    assert gap >= MARGIN, (f"full {table['full']['mean']:.1f} vs supervised {table['supervised']['mean']:.1f}: gap "
                           f"{gap:.1f} < {MARGIN} points")


if __name__ == "__main__":
    # The same measurement at other seeds or settings, for the numbers the docs quote beside the bench's own (held-out
    # seeds, the settings sweep). It asserts nothing: the tests above are the regression check.
    import argparse
    import shlex
    import tempfile
    ap = argparse.ArgumentParser(description="Run the accuracy bench's variants at other seeds or settings and write "
                                             "the table as JSON (pytest runs the checks; this only measures).")
    ap.add_argument("--seeds", default=",".join(map(str, SEEDS)), help="comma-separated seeds (default: %(default)s)")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated, from: %(default)s")
    ap.add_argument("--extra", default="", help="flags appended to every run, overriding BASE's, e.g. "
                                                "\"--ema-momentum 0.97\"")
    ap.add_argument("--out", required=True, help="JSON file to write")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        table = measure(Path(d), [int(x) for x in a.seeds.split(",")], a.variants.split(","), shlex.split(a.extra))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(table, indent=1) + "\n")
    for name in a.variants.split(","):
        r = table[name]
        print(f"{name:12s} student {r['mean']:5.1f} +- {r['std']:4.1f}  teacher {r['teacher_mean']:5.1f}  "
              f"per seed {[x['top1'] for x in r['runs']]}")
