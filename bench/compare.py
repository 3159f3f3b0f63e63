"""Compare our runs with the published numbers in bench/paper.yaml.

    python bench/compare.py RUN_DIR [RUN_DIR...] [--markdown] [--out FILE] [--plot] [--metric top1]

Each RUN_DIR holds the summary.json that fullsvformer.py writes. Runs are grouped by (dataset, labeled, arch);
a group reports mean ± sample std over its runs (n = number of runs, usually seeds). Every published number
for the group's dataset and labeled fraction is shown beside it, the same-arch methods first, with the delta
ours − published. A setting with no published number (e.g. the synthetic dataset) still gets a row, with "–".
--markdown prints a Markdown table for the README; --plot also runs bench/plot.py on every run directory.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import yaml

# `python bench/compare.py` puts bench/ (not the repository root) on sys.path; `bench.plot` needs the root.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import BenchError  # noqa: E402  (shared with plot.py, so one except catches both)

PAPER_YAML = Path(__file__).resolve().parent / "paper.yaml"
# Keys compare.py cannot work without; everything else in summary.json is optional here.
REQUIRED_KEYS = ("dataset", "labeled", "arch", "top1")
METRICS = ("top1", "teacher_top1")  # the published numbers are top-1, so only top-1 metrics are comparable
DASH = "–"


# ----------------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------------
def labeled_key(labeled) -> str:
    """Canonical string for a labeled fraction, so 0.1, 0.10 and "0.1" meet: '0.1'."""
    return f"{float(labeled):g}"


def load_summary(run_dir, metric: str = "top1") -> dict:
    """Read RUN_DIR/summary.json and check the keys the comparison needs."""
    path = Path(run_dir) / "summary.json"
    if not path.is_file():
        raise BenchError(f"{path}: no such file (is {run_dir} a run directory?)")
    try:
        summary = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise BenchError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(summary, dict):
        raise BenchError(f"{path}: expected a JSON object, got {type(summary).__name__}")
    for key in dict.fromkeys(REQUIRED_KEYS + (metric,)):
        if key not in summary:
            raise BenchError(f"{path}: missing key '{key}'")
    for key in ("labeled", metric):
        if not isinstance(summary[key], (int, float)) or isinstance(summary[key], bool):
            raise BenchError(f"{path}: key '{key}' must be a number, got {summary[key]!r}")
    return {**summary, "run_dir": str(run_dir)}


def load_runs(run_dirs, metric: str = "top1") -> list[dict]:
    """One summary dict per run directory, with 'run_dir' added."""
    if not run_dirs:
        raise BenchError("no run directories given")
    return [load_summary(d, metric) for d in run_dirs]


def load_paper(path=PAPER_YAML) -> dict:
    """paper.yaml's methods: {key: {name, arch, source, results: {dataset: {labeled: top1 | None}}}}."""
    path = Path(path)
    try:
        methods = yaml.safe_load(path.read_text())["methods"]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as e:
        raise BenchError(f"{path}: cannot read 'methods' ({e})") from None
    for key, m in methods.items():
        for field in ("name", "arch", "source", "results"):
            if field not in m:
                raise BenchError(f"{path}: method '{key}' is missing '{field}'")
    return methods


# ----------------------------------------------------------------------------------------------------------
# Grouping and the table
# ----------------------------------------------------------------------------------------------------------
def group_runs(runs) -> dict[tuple[str, str, str], list[dict]]:
    """{(dataset, labeled_key, arch): [runs]}, sorted by dataset, fraction, arch."""
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for run in runs:
        groups.setdefault((run["dataset"], labeled_key(run["labeled"]), run["arch"]), []).append(run)
    return dict(sorted(groups.items(), key=lambda kv: (kv[0][0], float(kv[0][1]), kv[0][2])))


def mean_std(values) -> tuple[float, float | None, int]:
    """Mean, sample std (None for a single run) and n."""
    values = list(values)
    std = statistics.stdev(values) if len(values) > 1 else None
    return statistics.mean(values), std, len(values)


def published(methods, dataset: str, labeled: str) -> list[dict]:
    """Every method with an entry (a number or an explicit null) for this dataset and labeled fraction."""
    out = []
    for key, m in methods.items():
        by_fraction = {labeled_key(k): v for k, v in (m["results"].get(dataset) or {}).items()}
        if labeled in by_fraction:
            out.append({"method": key, "name": m["name"], "arch": m["arch"], "top1": by_fraction[labeled]})
    return out


def compare_table(groups, methods, metric: str = "top1") -> list[dict]:
    """One row per (group, published method); a group with no published entry gets one row with paper None.

    Row keys: dataset, labeled, arch, n, mean, std, runs, method, paper_name, paper_arch, paper, delta.
    Within a group, methods of the same arch come first (SVFormer-S beside small; SVFormer-B, SeFAR-B beside base).
    """
    rows = []
    for (dataset, labeled, arch), runs in groups.items():
        mean, std, n = mean_std(r[metric] for r in runs)
        ours = {"dataset": dataset, "labeled": labeled, "arch": arch, "n": n, "mean": mean, "std": std,
                "runs": [r["run_dir"] for r in runs]}
        entries = sorted(published(methods, dataset, labeled), key=lambda e: e["arch"] != arch)
        if not entries:
            entries = [{"method": None, "name": None, "arch": None, "top1": None}]
        for e in entries:
            delta = None if e["top1"] is None else mean - e["top1"]
            rows.append({**ours, "method": e["method"], "paper_name": e["name"], "paper_arch": e["arch"],
                         "paper": e["top1"], "delta": delta})
    return rows


# ----------------------------------------------------------------------------------------------------------
# Formatting
# ----------------------------------------------------------------------------------------------------------
def _cells(rows, metric: str) -> tuple[list[str], list[list[str]]]:
    header = ["dataset", "labeled", "arch", f"ours {metric} (mean ± std, n)", "published method", "its arch",
              "published top1", "Δ ours − published"]
    body, previous = [], None
    for r in rows:
        group = (r["dataset"], r["labeled"], r["arch"])
        ours = f"{r['mean']:.2f}" + ("" if r["std"] is None else f" ± {r['std']:.2f}") + f" (n={r['n']})"
        # The group's own cells are printed once, on its first row.
        left = ["", "", "", ""] if group == previous else [
            r["dataset"], f"{float(r['labeled']) * 100:g}%", r["arch"], ours]
        previous = group
        right = [r["paper_name"] or DASH, r["paper_arch"] or DASH,
                 DASH if r["paper"] is None else f"{r['paper']:.1f}",
                 DASH if r["delta"] is None else f"{r['delta']:+.2f}"]
        body.append(left + right)
    return header, body


def _notes(methods) -> list[str]:
    return [f"{m['name']}: {m['note']} (source: {m['source']})" for m in methods.values() if m.get("note")]


def format_text(rows, methods, metric: str = "top1") -> str:
    header, body = _cells(rows, metric)
    widths = [max(len(c) for c in col) for col in zip(header, *body)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    out = [line(header), line(["-" * w for w in widths])] + [line(b) for b in body]
    return "\n".join(out + [""] + _notes(methods)) + "\n"


def format_markdown(rows, methods, metric: str = "top1") -> str:
    header, body = _cells(rows, metric)
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(b) + " |" for b in body]
    return "\n".join(out + [""] + [f"- {n}" for n in _notes(methods)]) + "\n"


# ----------------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------------
def main(argv=None) -> list[dict]:
    """Print (and optionally write) the comparison; returns the table rows."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories holding summary.json")
    p.add_argument("--markdown", action="store_true", help="print a Markdown table instead of plain text")
    p.add_argument("--out", type=Path, help="also write the table to this file")
    p.add_argument("--plot", action="store_true", help="run bench/plot.py on every run (PNGs in RUN_DIR/plots)")
    p.add_argument("--metric", choices=METRICS, default="top1", help="which of our top-1 numbers to compare")
    p.add_argument("--paper", type=Path, default=PAPER_YAML, help="published numbers (default bench/paper.yaml)")
    args = p.parse_args(argv)

    methods = load_paper(args.paper)
    rows = compare_table(group_runs(load_runs(args.run_dirs, args.metric)), methods, args.metric)
    text = (format_markdown if args.markdown else format_text)(rows, methods, args.metric)
    print(text, end="")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    if args.plot:
        from bench.plot import plot_run  # imported here: only --plot needs matplotlib

        for run_dir in args.run_dirs:
            plot_run(run_dir)
    return rows


if __name__ == "__main__":
    try:
        main()
    except BenchError as e:
        sys.exit(f"compare.py: {e}")
