"""The throughput harness's own logic (bench/throughput.py): the baseline check and one tiny train step. The timed
benchmarks themselves run with `python -m pytest bench/test_throughput.py --benchmark-only`."""
import json

import torch

from bench import throughput as tp

BASELINE = {"tolerance": {"ours_over_hf": 0.15, "train_step.ours_over_hf": 0.25, "mfu": 0.35},  # not the defaults
            "settings": {"k": {"any_machine": {"train_step.ours_over_hf": 1.0, "inference.ours_over_hf": 1.0},
                               "machines": {"cpu A, threads 1": {"train_step.mfu": 0.5}}}}}


def check(machine, metrics):
    return tp.check_baseline("k", machine, metrics, BASELINE)


def test_ratio_checks_fail_below_tolerance_on_any_machine():
    for machine in ("cpu A, threads 1", "cpu B, threads 1"):
        assert check(machine, {"train_step.ours_over_hf": 0.76, "inference.ours_over_hf": 0.86})[0] == []
        assert check(machine, {"train_step.ours_over_hf": 9.0})[0] == []  # faster never fails
        bad, _ = check(machine, {"train_step.ours_over_hf": 0.74, "inference.ours_over_hf": 0.84})
        # the full metric name's tolerance wins over the suffix's
        assert len(bad) == 2 and "train_step.ours_over_hf" in bad[0] and "25%" in bad[0] and "15%" in bad[1]


def test_machine_figures_asserted_only_on_the_matching_machine():
    bad, note = check("cpu A, threads 1", {"train_step.mfu": 0.3})
    assert len(bad) == 1 and "train_step.mfu = 0.3 " in bad[0] and "35%" in bad[0] and note is None
    assert check("cpu A, threads 1", {"train_step.mfu": 0.33})[0] == []
    for other in ("cpu B, threads 1", "cpu A, threads 2"):  # another CPU model, or the same one with more threads
        bad, note = check(other, {"train_step.mfu": 0.01})
        assert bad == [] and "not asserted" in note and other in note


def test_no_baseline_for_the_setting_passes():
    bad, note = tp.check_baseline("other", "cpu A, threads 1", {"train_step.ours_over_hf": 0.0}, BASELINE)
    assert bad == [] and "not asserted" in note


def test_committed_tolerances_catch_a_1_5x_slowdown_of_our_code():
    """Our code 1.5x slower divides every ours_over_hf by 1.5 (HF shares no code with ours) and every mfu too: each
    committed figure must then fail, on its own machine and, for the ratios, on any machine; unchanged ones pass."""
    b = tp.load_baseline()
    ref = b["settings"][tp.TINY_CPU.key]
    ratios = ref["any_machine"]
    assert set(ratios) == {f"{t}.ours_over_hf" for t in ("train_step", "inference", "fwd_bwd_vs_hf")}
    for machine, figures in [("an unknown machine", {}), *ref["machines"].items()]:
        measured = {**ratios, **figures}
        assert tp.check_baseline(tp.TINY_CPU.key, machine, measured, b)[0] == []
        bad, _ = tp.check_baseline(tp.TINY_CPU.key, machine, {k: v / 1.5 for k, v in measured.items()}, b)
        assert len(bad) == len(measured), bad


def test_update_baseline_writes_both_kinds_and_merges(tmp_path, monkeypatch):
    monkeypatch.setattr(tp, "BASELINE", tmp_path / "baseline.json")
    tp.update_baseline("k", "m1", {"a.ours_over_hf": 0.123456}, {"a.mfu": 0.5})
    tp.update_baseline("k", "m2", {"b.ours_over_hf": 1.0}, {"b.mfu": 0.25})
    d = json.loads((tmp_path / "baseline.json").read_text())
    assert d["settings"]["k"] == {"any_machine": {"a.ours_over_hf": 0.1235, "b.ours_over_hf": 1.0},
                                  "machines": {"m1": {"a.mfu": 0.5}, "m2": {"b.mfu": 0.25}}}
    assert d["tolerance"] == tp.DEFAULT_TOLERANCE
    assert tp.check_baseline("k", "m2", {"b.mfu": 0.1})[0] != []  # read back from the file


def test_machine_key_names_the_cpu_and_the_threads():
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = tp.machine_key(torch.device("cpu"))
        torch.set_num_threads(2)
        two = tp.machine_key(torch.device("cpu"))
    finally:
        torch.set_num_threads(threads)
    assert one.endswith("threads 1") and two.endswith("threads 2") and one[:-1] == two[:-1]


def test_ssl_step_runs_and_counts_flops():
    s = tp.Setting("t", img_size=16, patch_size=8, num_frames=2, num_classes=5, labeled_batch=1, mu=2)
    step = tp.SSLStep(s)
    before = [p.detach().clone() for p in step.teacher.parameters()]
    step()
    assert any(not torch.equal(a, p) for a, p in zip(before, step.teacher.parameters()))  # EMA moved the teacher
    # Known answer: the step's FLOPs are the teacher's forward on the Bu unlabeled clips plus the student's forward and
    # backward on Bl + 2 Bu clips (labeled, strong, token-mixed), less the patch embedding of the Bu mixed clips, which
    # are mixed after it (forward and weight gradient: 2 x 2 x T x N x (3 P^2) x D FLOPs per clip).
    Bl, Bu = s.labeled_batch, s.labeled_batch * s.mu
    D, N = step.model.embed_dim, (s.img_size // s.patch_size) ** 2
    patch_embed = 2 * 2 * s.num_frames * N * 3 * s.patch_size ** 2 * D
    expected = (tp.FwdBwd(s, "ours", Bu, train=False).flops() + tp.FwdBwd(s, "ours", Bl + 2 * Bu).flops()
                - Bu * patch_embed)
    assert step.flops() == expected and s.clips_per_step == 3
