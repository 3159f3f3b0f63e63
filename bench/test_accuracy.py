"""Accuracy regression bench: Full-SVFormer vs supervised-only on the synthetic set with 5% labels, plus ablations.

Run: `python -m pytest bench/test_accuracy.py` (the path is needed: pytest.ini's testpaths is tests/). It trains
5 variants x SEEDS seeds in-process with fullsvformer.main(), writes bench/results/accuracy.json and asserts that
the full method beats supervised-only by MARGIN points of mean student top-1.

- Task: the synthetic random-dot motion classes (4: still, vertical, horizontal, diagonal; no single frame tells them
  apart), 16 px clips of 8 frames, a 2-block ViT (D 64): small enough for 15 runs in < 10 min on 2 CPU cores.
- Supervised-only baseline: the same run with gamma_kl = gamma_mix = gamma_nl = 0, i.e. labeled CE alone on the same
  labeled clips, in the same order, for the same number of steps and lr schedule (mu = 0 would change what an epoch
  is, and thus the step budget).
- Seeds: run i uses --seed i (init, augmentation, data order) and --split-seed i (which clips are labeled), so the
  spread includes the luck of the labeled draw, which dominates with 4 labeled clips per class.
- Ablations: no_anl (--gamma-nl 0), plain_kl (--no-kl-standardize), no_tokenmix (--gamma-mix 0). They are recorded,
  not asserted: with 3 seeds their differences to full are within the noise.
"""
import json
import platform
import statistics
import time
from pathlib import Path

import pytest
import torch

import fullsvformer as fs

SEEDS = (0, 1, 2)
RESULTS = Path(__file__).resolve().parent / "results" / "accuracy.json"
BASE = ["--dataset", "synthetic", "--synth-classes", "4", "--labeled", "0.05", "--img-size", "16",
        "--patch-size", "4", "--embed-dim", "64", "--depth", "2", "--num-heads", "2", "--labeled-batch", "4",
        "--global-batch", "4", "--mu", "3", "--epochs", "4", "--warmup-epochs", "0.3", "--lr", "2e-3",
        "--ema-momentum", "0.97", "--eval-every", "0", "--log-every", "25", "--device", "cpu"]
VARIANTS = {
    "supervised": ["--gamma-kl", "0", "--gamma-mix", "0", "--gamma-nl", "0"],
    "full": [],
    "no_anl": ["--gamma-nl", "0"],
    "plain_kl": ["--no-kl-standardize"],
    "no_tokenmix": ["--gamma-mix", "0"],
}
# Full must beat supervised-only by this many top-1 points (mean over SEEDS). Not yet set from a measured gap: there is
# none so far (see the xfail reason); 10 points is the target the bench is meant to hold once the task allows it.
MARGIN = 10.0


@pytest.mark.xfail(strict=True, reason="open: on the synthetic task every variant is still at chance within this "
                                       "budget (bench/results/accuracy.json), so there is no measured gap to set "
                                       "MARGIN from; strict, so a fix that makes it pass must remove this marker")
def test_full_beats_supervised(tmp_path):
    t0 = time.perf_counter()
    out = {}
    for name, extra in VARIANTS.items():
        runs = []
        for seed in SEEDS:
            r = fs.main(BASE + extra + ["--seed", str(seed), "--split-seed", str(seed),
                                        "--out", str(tmp_path / f"{name}-{seed}")])
            runs.append({"seed": seed, "top1": r["top1"], "teacher_top1": r["teacher_top1"]})
        top1 = [x["top1"] for x in runs]
        out[name] = {"mean": statistics.mean(top1), "std": statistics.stdev(top1), "runs": runs,
                     "teacher_mean": statistics.mean(x["teacher_top1"] for x in runs)}
    out["config"] = {"argv": BASE, "variants": VARIANTS, "seeds": list(SEEDS), "margin": MARGIN,
                     "metric": "student top-1 (%), 1-view eval on the synthetic test set"}
    out["machine"] = {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                      "torch": torch.__version__, "python": platform.python_version()}
    out["wall_time_s"] = time.perf_counter() - t0
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=1) + "\n")
    gap = out["full"]["mean"] - out["supervised"]["mean"]
    assert gap >= MARGIN, (f"full {out['full']['mean']:.1f} vs supervised {out['supervised']['mean']:.1f}: gap "
                           f"{gap:.1f} < {MARGIN} points")
