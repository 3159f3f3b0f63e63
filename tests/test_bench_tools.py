"""bench/compare.py and bench/plot.py on fake run directories (no training, no ../shared)."""
import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bench import BenchError
from bench import compare

ROOT = Path(__file__).resolve().parent.parent
PAPER = yaml.safe_load((ROOT / "bench" / "paper.yaml").read_text())["methods"]


def make_run(root, name, dataset="ucf101", labeled=0.01, arch="small", top1=30.0, metrics=None, **extra):
    d = root / name
    d.mkdir()
    summary = {"dataset": dataset, "labeled": labeled, "split": 1, "arch": arch, "seed": 0, "top1": top1,
               "top5": top1 + 20, "teacher_top1": top1 + 1.5, "teacher_top5": top1 + 21, "extra_key": [1, 2]}
    summary.update(extra)
    (d / "summary.json").write_text(json.dumps(summary))
    if metrics is not None:
        (d / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    return d


def full_metrics(steps=6):
    lines = []
    for s in range(steps):
        lines.append({"kind": "train", "step": s * 10, "epoch": 0, "lr": 0.005 * (s + 1), "loss": 2.0 - 0.1 * s,
                      "loss_ce": 1.0, "loss_kl": 0.2, "loss_mix": 0.3, "loss_nl": 0.4, "mask_ratio": 0.4,
                      "anl_k": 3 + s % 2, "anl_negatives": 100 + s, "pseudo_label_acc": 0.5, "clips_per_s": 40.0,
                      "bad_samples": 0, "unknown_extra": "x"})
        if s % 2:
            lines.append({"kind": "eval", "step": s * 10, "epoch": s, "top1": 10.0 * s, "top5": 15.0 * s,
                          "teacher_top1": 11.0 * s, "teacher_top5": 16.0 * s})
    return lines


@pytest.fixture
def runs(tmp_path):
    """Three small UCF-1% seeds, one base UCF-1% run, one HMDB-60% base, two synthetic."""
    small = [31.0, 33.5, 29.25]
    dirs = [make_run(tmp_path, f"s{i}", top1=t, seed=i) for i, t in enumerate(small)]
    dirs.append(make_run(tmp_path, "b0", arch="base", top1=47.0))
    dirs.append(make_run(tmp_path, "h0", dataset="hmdb51", labeled=0.6, arch="base", top1=66.0))
    dirs += [make_run(tmp_path, f"syn{i}", dataset="synthetic", labeled=0.1, arch="tiny", top1=t)
             for i, t in enumerate([90.0, 95.0])]
    return {"dirs": dirs, "small": small}


def rows_for(rows, dataset, labeled, arch):
    return [r for r in rows if (r["dataset"], r["labeled"], r["arch"]) == (dataset, labeled, arch)]


# ---------------------------------------------------------------------------------------------------------
# compare.py
# ---------------------------------------------------------------------------------------------------------
def test_grouping_and_mean_std(runs):
    groups = compare.group_runs(compare.load_runs(runs["dirs"]))
    assert list(groups) == [("hmdb51", "0.6", "base"), ("synthetic", "0.1", "tiny"),
                            ("ucf101", "0.01", "base"), ("ucf101", "0.01", "small")]
    assert len(groups[("ucf101", "0.01", "small")]) == 3
    rows = compare.compare_table(groups, PAPER)
    r = rows_for(rows, "ucf101", "0.01", "small")[0]
    assert r["n"] == 3
    assert r["mean"] == pytest.approx(statistics.mean(runs["small"]))
    assert r["std"] == pytest.approx(statistics.stdev(runs["small"]))  # sample std, not population
    single = rows_for(rows, "ucf101", "0.01", "base")[0]
    assert single["n"] == 1 and single["std"] is None and single["mean"] == 47.0


def test_labeled_fractions_written_differently_group_together(tmp_path):
    dirs = [make_run(tmp_path, "a", labeled=0.1), make_run(tmp_path, "b", labeled=0.10000000000000001),
            make_run(tmp_path, "c", labeled=0.01)]
    groups = compare.group_runs(compare.load_runs(dirs))
    assert sorted(len(v) for v in groups.values()) == [1, 2]


def test_deltas_against_paper_yaml(runs):
    rows = compare.compare_table(compare.group_runs(compare.load_runs(runs["dirs"])), PAPER)
    small = rows_for(rows, "ucf101", "0.01", "small")
    # Every published method for UCF-101 1% is shown, the same-arch one first.
    assert [r["method"] for r in small] == ["svformer_s", "svformer_b", "sefar_b"]
    mean = statistics.mean(runs["small"])
    for r in small:
        expected = PAPER[r["method"]]["results"]["ucf101"]["0.01"]
        assert r["paper"] == expected
        assert r["delta"] == pytest.approx(mean - expected)
    base = rows_for(rows, "ucf101", "0.01", "base")
    assert [r["paper_arch"] for r in base] == ["base", "base", "small"]
    assert base[0]["delta"] == pytest.approx(47.0 - PAPER["svformer_b"]["results"]["ucf101"]["0.01"])


def test_absent_published_number_is_a_dash_not_a_number(runs):
    rows = compare.compare_table(compare.group_runs(compare.load_runs(runs["dirs"])), PAPER)
    sefar = [r for r in rows_for(rows, "hmdb51", "0.6", "base") if r["method"] == "sefar_b"]
    assert len(sefar) == 1 and sefar[0]["paper"] is None and sefar[0]["delta"] is None
    syn = rows_for(rows, "synthetic", "0.1", "tiny")
    assert len(syn) == 1 and syn[0]["method"] is None and syn[0]["paper"] is None
    text = compare.format_text(rows, PAPER)
    syn_line = next(line for line in text.splitlines() if line.startswith("synthetic"))
    assert syn_line.count("–") == 4 and "92.50 ± 3.54 (n=2)" in syn_line


def test_paper_yaml_matches_reference():
    # The numbers of the official SVFormer and SeFAR READMEs (sources in paper.yaml); a typo in paper.yaml fails here.
    expected = {"svformer_s": ([31.4, 79.1], [56.2, 58.2, 59.7]), "svformer_b": ([46.3, 86.7], [61.6, 64.4, 68.2]),
                "sefar_b": ([50.3, 87.0], [61.5, 65.7, None])}
    for key, (ucf, hmdb) in expected.items():
        res = PAPER[key]["results"]
        assert [res["ucf101"][k] for k in ("0.01", "0.1")] == ucf
        assert [res["hmdb51"][k] for k in ("0.4", "0.5", "0.6")] == hmdb
        assert PAPER[key]["source"]
    assert PAPER["full_svformer"]["results"] == {}  # abstract only: no invented numbers
    assert "abstract" in PAPER["full_svformer"]["source"]


def test_markdown_output_and_file(runs, tmp_path, capsys):
    out = tmp_path / "table.md"
    rows = compare.main([str(d) for d in runs["dirs"]] + ["--markdown", "--out", str(out)])
    text = out.read_text()
    assert capsys.readouterr().out == text
    table = [line for line in text.splitlines() if line.startswith("|")]
    assert table[1] == "|" + "---|" * 8
    assert len(table) == 2 + len(rows)
    assert all(line.count("|") == 9 for line in table)  # 8 columns on every line
    m, sd = statistics.mean(runs["small"]), statistics.stdev(runs["small"])
    assert f"| ucf101 | 1% | small | {m:.2f} ± {sd:.2f} (n=3) | SVFormer-S | small | 31.4 | {m - 31.4:+.2f} |" in table
    assert any("Full-SVFormer" in line and "abstract" in line for line in text.splitlines())


def test_metric_teacher_top1(runs):
    rows = compare.main([str(d) for d in runs["dirs"][:3]] + ["--metric", "teacher_top1"])
    assert rows[0]["mean"] == pytest.approx(statistics.mean(t + 1.5 for t in runs["small"]))


def test_missing_key_names_file_and_key(tmp_path):
    d = make_run(tmp_path, "r")
    summary = json.loads((d / "summary.json").read_text())
    del summary["arch"]
    (d / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(BenchError, match=r"r/summary\.json: missing key 'arch'"):
        compare.load_runs([d])
    with pytest.raises(BenchError, match="missing key 'nope'"):
        compare.load_summary(make_run(tmp_path, "r2"), metric="nope")


def test_malformed_or_missing_summary(tmp_path):
    d = tmp_path / "bad"
    d.mkdir()
    (d / "summary.json").write_text('{"dataset": "ucf101",')
    with pytest.raises(BenchError, match=r"bad/summary\.json: not valid JSON"):
        compare.load_summary(d)
    with pytest.raises(BenchError, match=r"nothere/summary\.json: no such file"):
        compare.load_summary(tmp_path / "nothere")
    (d / "summary.json").write_text(json.dumps({"dataset": "x", "labeled": "ten", "arch": "tiny", "top1": 1}))
    with pytest.raises(BenchError, match="'labeled' must be a number"):
        compare.load_summary(d)


def test_cli_as_script(runs, tmp_path):
    # Run as the README says, from another directory: checks the sys.path handling and the exit message.
    cmd = [sys.executable, str(ROOT / "bench" / "compare.py")]
    ok = subprocess.run(cmd + [str(runs["dirs"][0])], capture_output=True, text=True, cwd=tmp_path)
    assert ok.returncode == 0 and "SVFormer-S" in ok.stdout
    bad = subprocess.run(cmd + [str(tmp_path / "missing")], capture_output=True, text=True, cwd=tmp_path)
    assert bad.returncode == 1 and "compare.py:" in bad.stderr and "summary.json: no such file" in bad.stderr


# ---------------------------------------------------------------------------------------------------------
# plot.py
# ---------------------------------------------------------------------------------------------------------
@pytest.fixture
def plot():
    pytest.importorskip("matplotlib", reason="matplotlib not installed: bench/plot.py cannot draw (see requirements.txt)")
    from bench import plot

    return plot


def assert_png(path):
    data = Path(path).read_bytes()
    assert len(data) > 1000 and data[:8] == b"\x89PNG\r\n\x1a\n", path


def test_plot_writes_every_figure(plot, tmp_path):
    d = make_run(tmp_path, "run", metrics=full_metrics())
    result = plot.plot_run(d)
    names = sorted(p.name for p in result["written"])
    assert names == sorted(f"{stem}.png" for stem in plot.FIGURES)
    assert result["skipped"] == []
    for p in result["written"]:
        assert p.parent == d / "plots"
        assert_png(p)


def test_plot_skips_absent_keys_with_a_note(plot, tmp_path, capsys):
    metrics = [{k: v for k, v in m.items() if k not in ("mask_ratio", "anl_negatives")} for m in full_metrics()]
    d = make_run(tmp_path, "run", metrics=metrics)
    result = plot.plot_run(d, tmp_path / "out")
    names = {p.name for p in result["written"]}
    assert "mask_ratio.png" not in names and "anl.png" in names  # anl_k alone is still drawn
    assert not (tmp_path / "out" / "mask_ratio.png").exists()
    assert any("mask_ratio" in n for n in result["skipped"]) and any("anl_negatives" in n for n in result["skipped"])
    assert "mask_ratio" in capsys.readouterr().err


def test_plot_errors_name_file_and_line(plot, tmp_path):
    d = make_run(tmp_path, "run", metrics=full_metrics(2))
    with open(d / "metrics.jsonl", "a") as f:
        f.write('{"kind": "train", "step": 30, "loss": \n')
    n_lines = len((d / "metrics.jsonl").read_text().splitlines())
    with pytest.raises(BenchError, match=rf"run/metrics\.jsonl:{n_lines}: not valid JSON"):
        plot.plot_run(d)
    (d / "metrics.jsonl").write_text("\n\n")
    with pytest.raises(BenchError, match=r"run/metrics\.jsonl: empty"):
        plot.plot_run(d)
    (d / "metrics.jsonl").write_text('{"kind": "train"}\n[1, 2]\n')
    with pytest.raises(BenchError, match=r"metrics\.jsonl:2: expected a JSON object"):
        plot.plot_run(d)


def test_plot_compare_draws_every_run_on_one_figure(plot, tmp_path, capsys):
    """--compare: one PNG with a line per run in each panel; x is the epoch (step / steps per epoch from the eval lines),
    so a run without eval lines is skipped with a note."""
    dirs = [make_run(tmp_path, f"r{i}", metrics=full_metrics(4 + 2 * i)) for i in range(2)]
    no_eval = make_run(tmp_path, "train_only", metrics=[m for m in full_metrics() if m["kind"] == "train"])
    result = plot.main(["--compare", *map(str, dirs + [no_eval]), "--out", str(tmp_path / "cmp.png")])
    assert_png(tmp_path / "cmp.png")
    assert result["written"] == [tmp_path / "cmp.png"]
    assert result["skipped"] == ["train_only: no eval line to scale steps to epochs", "train_only: no eval line with top1"]
    assert "train_only" in capsys.readouterr().err
    lines = {}
    real = plot.plt.Axes.plot
    plot.plt.Axes.plot = lambda ax, xs, ys, label=None, **k: lines.setdefault(label, []).append((list(xs), list(ys)))
    try:
        plot.plot_compare(dirs, tmp_path / "cmp2.png")
    finally:
        plot.plt.Axes.plot = real
    # full_metrics: evals every 20 steps at epochs 1, 3, 5: 10 steps per epoch; pseudo-label points every 10 steps.
    assert lines["r0"][0] == ([0.0, 1.0, 2.0, 3.0], [0.5] * 4) and lines["r0"][1] == ([1.0, 3.0], [10.0, 30.0])
    assert len(lines["r1"][0][0]) == 6


def test_plot_needs_compare_for_several_runs(plot, tmp_path):
    dirs = [make_run(tmp_path, f"r{i}", metrics=full_metrics()) for i in range(2)]
    with pytest.raises(SystemExit):
        plot.main([str(d) for d in dirs])
    with pytest.raises(SystemExit):
        plot.main(["--compare", str(dirs[0])])  # no --out


def test_compare_plot_flag_plots_every_run(plot, tmp_path):
    dirs = [make_run(tmp_path, f"r{i}", top1=30.0 + i, metrics=full_metrics(3)) for i in range(2)]
    compare.main([str(d) for d in dirs] + ["--plot"])
    for d in dirs:
        assert_png(d / "plots" / "losses.png")
        assert_png(d / "plots" / "accuracy.png")


def test_paper_flag_reads_another_file(tmp_path):
    paper = tmp_path / "p.yaml"
    paper.write_text(yaml.safe_dump({"methods": {"toy": {"name": "Toy", "arch": "tiny", "source": "test",
                                                         "results": {"synthetic": {"0.1": 80.0}}}}}))
    d = make_run(tmp_path, "syn", dataset="synthetic", labeled=0.1, arch="tiny", top1=85.0)
    rows = compare.main([str(d), "--paper", str(paper)])
    assert [(r["paper_name"], r["delta"]) for r in rows] == [("Toy", pytest.approx(5.0))]
    paper.write_text(yaml.safe_dump({"methods": {"toy": {"name": "Toy", "arch": "tiny", "results": {}}}}))
    with pytest.raises(BenchError, match="method 'toy' is missing 'source'"):
        compare.main([str(d), "--paper", str(paper)])


def test_accuracy_measure_runs_each_command_once_and_pairs_by_seed(tmp_path, monkeypatch):
    """bench/test_accuracy.measure with a plan of other variants and seeds per regime: every (regime, variant, seed)
    run once (all_labels, the same command in every regime, only once), with the regime's and the variant's flags,
    and each variant's paired differences against supervised-only. Reference: the differences computed here."""
    from bench import test_accuracy as ta
    calls = []

    def fake_run(args, out):
        calls.append(tuple(args))
        last = len(args) - 1 - args[::-1].index("--labeled")  # the variant's --labeled comes after the regime's
        seed, labeled = int(args[args.index("--seed") + 1]), float(args[last + 1])
        top1 = 10 * labeled + seed + (5 if "--gamma-kl" not in args else 0)  # full: 5 above supervised-only
        return {"top1": top1, "teacher_top1": top1 - 1, "pseudo_label_acc": None, "steps": 1, "wall_s": 0.0}
    monkeypatch.setattr(ta, "run", fake_run)
    plan = {"1pc": (("supervised", "full", "all_labels"), (0, 1, 2)), "10pc": (("supervised", "full", "all_labels"),
                                                                             (0, 1))}
    out = ta.measure(tmp_path, plan=plan, jobs=1)
    assert len(calls) == len(set(calls)) == 3 + 3 + 2 + 2 + 3  # all_labels: seeds 0-2 once, for both regimes
    assert out["config"]["seeds"] == {"1pc": [0, 1, 2], "10pc": [0, 1]}
    for r, (_, seeds) in plan.items():
        t = out["regimes"][r]
        assert [x["seed"] for x in t["full"]["runs"]] == list(seeds)
        assert t["full"]["vs_supervised"]["student"] == {"mean": 5.0, "se": 0.0, "n": len(seeds)}
        sup = {x["seed"]: x["top1"] for x in t["supervised"]["runs"]}
        diffs = [x["top1"] - sup[x["seed"]] for x in t["all_labels"]["runs"]]
        assert t["all_labels"]["vs_supervised"]["student"]["mean"] == pytest.approx(statistics.mean(diffs))
    assert all("--labeled" in c and c[c.index("--epochs") + 1] == ta.ALL_LABELS_TUNED[3] for c in calls
               if "1.0" in c)


def test_grid_table_pairs_rows_by_seed(tmp_path):
    """bench/grid_table.py: one row per regime and variant, and the paired difference against --vs over the seeds
    both files share (seed 2 is only in one). Reference: the means written out here."""
    from bench import grid_table

    def result(runs, extra):
        return {"regimes": {"10pc": {"full": {"runs": [{"seed": s, "top1": a, "teacher_top1": a - 1,
                                                        "pseudo_label_acc": 0.5} for s, a in runs]}}},
                "config": {"extra": extra}, "machine": {"cpu": "cpu X"}}
    (tmp_path / "a.json").write_text(json.dumps(result([(0, 70.0), (1, 74.0), (2, 50.0)], ["--lr", "1e-3"])))
    (tmp_path / "b.json").write_text(json.dumps(result([(0, 68.0), (1, 71.0)], [])))
    text = grid_table.main([str(tmp_path / "a.json"), "--vs", str(tmp_path / "b.json")])
    row = text.splitlines()[2].split(" | ")
    assert row[:5] == ["| a.json", "10pc", "full", "`--lr 1e-3`", "64.7 ± 12.9"]
    assert row[7] == "70.0, 74.0, 50.0" and row[8] == "+2.5 ± 0.5; +2.5 ± 0.5" and row[9] == "cpu X |"


def test_accuracy_merge_equals_one_measure_and_refuses_mixed_setups(tmp_path, monkeypatch):
    """bench/test_accuracy.merge: per-seed result files (two of them with the flags spelled another way) give the table
    one measure() over the same plan gives, with each run's file as "source" and all_labels in every regime; files of
    another CPU, a regime x variant whose seeds resolve to different configs, or a file whose recorded config the
    code now resolves differently, are refused. Reference: that measure()'s table."""
    from bench import test_accuracy as ta

    def fake_run(args, out):
        seed = int(args[args.index("--seed") + 1])
        top1 = seed + 10 * ("--gamma-kl" not in args) + 20 * ("1.0" in args) + 30 * ("0.1" in args)
        return {"top1": float(top1), "teacher_top1": top1 - 1.0, "pseudo_label_acc": None, "steps": 1, "wall_s": 1.0}
    monkeypatch.setattr(ta, "run", fake_run)
    monkeypatch.setattr(ta, "cpu_model", lambda: "cpu X")
    monkeypatch.setattr(ta, "cpu_id", lambda: "GenuineIntel family 6 model 207 stepping 1")
    plan = {"1pc": (("supervised", "full", "all_labels"), (0, 1, 2)), "10pc": (("supervised", "full"), (0, 1, 2))}
    whole = ta.measure(tmp_path, plan=plan, jobs=1)
    files = []
    for r, (vs, seeds) in plan.items():
        for v in vs:
            for s in seeds:
                extra = ["--lr", "5e-4"] if (r, v, s) in {("1pc", "full", 1), ("10pc", "full", 2)} else []
                if r == "10pc" and v == "full" and s == 2:
                    extra = ["--lr", "2e-3"]  # label_rule's lr at 10 per class, given explicitly: the same config
                files.append(tmp_path / f"{r}_{v}_{s}.json")
                files[-1].write_text(json.dumps(ta.measure(tmp_path, plan={r: ((v,), (s,))}, extra=extra, jobs=1)))
    merged = ta.merge(files)
    strip = lambda t: {r: {v: {**x, "runs": [{k: y for k, y in run.items() if k != "source"} for run in x["runs"]]}
                           for v, x in rows.items()} for r, rows in t.items()}
    expected = whole["regimes"]
    expected["10pc"]["all_labels"] = ta.summarize(whole["regimes"]["1pc"]["all_labels"]["runs"],
                                                  whole["regimes"]["10pc"]["supervised"]["runs"])
    assert strip(merged["regimes"]) == expected
    assert merged["regimes"]["10pc"]["full"]["runs"][2]["source"] == str(files[-1])
    assert merged["config"]["seeds"] == [0, 1, 2] and merged["config"]["merged_from"] == [str(f) for f in files]
    rows = [line for line in ta.markdown(merged).splitlines() if line.startswith("| **Full-SVFormer**")]
    assert rows[1] == "| **Full-SVFormer** | 41.0 ± 1.0 | 40.0 ± 1.0 | +10.0 ± 0.0 | +10.0 ± 0.0 | – | 0,1,2 |"
    # another CPU
    other = json.loads(files[0].read_text())
    other["machine"]["cpu"] = "cpu Y"
    (tmp_path / "other.json").write_text(json.dumps(other))
    with pytest.raises(SystemExit, match="other.json: its cpu"):
        ta.merge(files + [tmp_path / "other.json"])
    # the same model name on another CPU model (a VM's generic name); a file without cpu_id (written before it was
    # recorded) is matched on the name alone
    other["machine"]["cpu"] = "cpu X"
    other["machine"]["cpu_id"] = "GenuineIntel family 6 model 143 stepping 8"
    (tmp_path / "other.json").write_text(json.dumps(other))
    with pytest.raises(SystemExit, match="other.json: its cpu_id"):
        ta.merge(files + [tmp_path / "other.json"])
    old = json.loads(files[0].read_text())
    del old["machine"]["cpu_id"]
    (tmp_path / "old.json").write_text(json.dumps(old))
    merged_old = ta.merge([tmp_path / "old.json"] + files[1:])
    assert merged_old["machine"]["cpu_id"] == "GenuineIntel family 6 model 207 stepping 1"
    # the same regime x variant at another lr
    (tmp_path / "lr.json").write_text(json.dumps(ta.measure(tmp_path, plan={"1pc": (("full",), (3,))},
                                                            extra=["--lr", "1e-3"], jobs=1)))
    with pytest.raises(SystemExit, match=r"lr.json: 1pc full ran with \['--lr', '1e-3'\]"):
        ta.merge(files + [tmp_path / "lr.json"])
    # a file measured before label_rule (or a default) changed what its flags resolve to: the same flags, but the run
    # trained another config, so it is refused rather than paired with runs of the new one
    stale = json.loads(files[-1].read_text())
    stale["config"]["resolved"]["10pc"]["full"]["train"]["gamma_nl"] = 0.5
    (tmp_path / "stale.json").write_text(json.dumps(stale))
    with pytest.raises(SystemExit, match=r"stale.json: 10pc full ran with .*resolves differently \(train.gamma_nl;"):
        ta.merge(files[:-1] + [tmp_path / "stale.json"])
