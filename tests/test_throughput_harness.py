"""The throughput harness's own logic (bench/throughput.py): the baseline check and one tiny train step. The timed
benchmarks themselves run with `python -m pytest bench/test_throughput.py --benchmark-only`."""
import json

import torch

from bench import throughput as tp


def test_check_baseline_flags_only_real_slowdowns():
    b = {"tolerance": {"mfu": 0.35, "ours_over_hf": 0.15},  # explicit, not the defaults
         "settings": {"k": {"train_step.mfu": 0.5, "fwd_bwd_vs_hf.ours_over_hf": 1.0}}}
    assert tp.check_baseline("k", {"train_step.mfu": 0.34, "fwd_bwd_vs_hf.ours_over_hf": 0.86}, b) == []
    assert tp.check_baseline("k", {"train_step.mfu": 9.0}, b) == []  # faster never fails
    bad = tp.check_baseline("k", {"train_step.mfu": 0.3, "fwd_bwd_vs_hf.ours_over_hf": 0.8}, b)
    assert len(bad) == 2 and "train_step.mfu" in bad[0] and "35%" in bad[0]
    assert tp.check_baseline("other", {"train_step.mfu": 0.0}, b) == []  # no baseline for the setting: pass


def test_update_baseline_merges(tmp_path, monkeypatch):
    monkeypatch.setattr(tp, "BASELINE", tmp_path / "baseline.json")
    tp.update_baseline("k", {"a.mfu": 0.123456})
    tp.update_baseline("k", {"b.mfu": 0.5})
    d = json.loads((tmp_path / "baseline.json").read_text())
    assert d["settings"]["k"] == {"a.mfu": 0.1235, "b.mfu": 0.5} and d["tolerance"] == tp.DEFAULT_TOLERANCE


def test_ssl_step_runs_and_counts_flops():
    s = tp.Setting("t", img_size=16, patch_size=8, num_frames=2, num_classes=5, labeled_batch=1, mu=2)
    step = tp.SSLStep(s)
    before = [p.detach().clone() for p in step.teacher.parameters()]
    step()
    assert any(not torch.equal(a, p) for a, p in zip(before, step.teacher.parameters()))  # EMA moved the teacher
    assert step.flops() > 0 and s.clips_per_step == 3
