"""Markdown rows of accuracy-bench result files (bench/test_accuracy.py --out FILE), one row per regime and variant.

    python bench/grid_table.py bench/results/grid17/*.json [--vs bench/results/grid17/10pc_supervised_lr1e-3_e12.json]

Each row: the file, regime, variant, the flags the runs added (`--extra`), student top-1 mean ± std over the seeds,
EMA teacher mean, pseudo-label accuracy, per-seed students, the CPU. With --vs FILE, also the paired difference (mean
± standard error over the seeds both files share) of students and teachers against FILE's runs of the same regime.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path


def rows(path: Path) -> list[dict]:
    d = json.loads(path.read_text())
    return [{"file": path.name, "regime": r, "variant": v, "extra": " ".join(d["config"].get("extra", [])),
             "cpu": d.get("machine", {}).get("cpu", "?"), "runs": x["runs"]}
            for r, table in d["regimes"].items() for v, x in table.items()]


def paired(runs: list[dict], base: list[dict], key: str) -> str:
    b = {r["seed"]: r[key] for r in base}
    d = [r[key] - b[r["seed"]] for r in runs if r["seed"] in b]
    if not d:
        return "–"
    se = statistics.stdev(d) / math.sqrt(len(d)) if len(d) > 1 else float("nan")
    return f"{statistics.mean(d):+.1f} ± {se:.1f}"


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("--vs", type=Path, help="a result file to pair every row against (same regime, shared seeds)")
    a = ap.parse_args(argv)
    base = {x["regime"]: x["runs"] for x in rows(a.vs)} if a.vs else {}
    head = "| file | regime | variant | flags | student (mean ± std) | teacher | pseudo-label acc. | per seed |"
    head += (" vs " + a.vs.name + " (students; teachers) |" if a.vs else "") + " CPU |"
    out = [head, "|" + "---|" * (head.count("|") - 1)]
    for f in a.files:
        for x in rows(f):
            s = [r["top1"] for r in x["runs"]]
            t = [r["teacher_top1"] for r in x["runs"]]
            pl = [r["pseudo_label_acc"] for r in x["runs"] if r.get("pseudo_label_acc") is not None]
            acc = f"{statistics.mean(pl):.2f}" if pl else "–"
            line = (f"| {x['file']} | {x['regime']} | {x['variant']} | `{x['extra']}` | {statistics.mean(s):.1f} ± "
                    f"{statistics.stdev(s) if len(s) > 1 else 0:.1f} | {statistics.mean(t):.1f} | {acc} | ")
            line += ", ".join(f"{r['top1']:.1f}" for r in x["runs"]) + " |"
            if a.vs:
                b = base.get(x["regime"], [])
                line += f" {paired(x['runs'], b, 'top1')}; {paired(x['runs'], b, 'teacher_top1')} |"
            out.append(line + f" {x['cpu']} |")
    text = "\n".join(out)
    print(text)
    return text


if __name__ == "__main__":
    main()
