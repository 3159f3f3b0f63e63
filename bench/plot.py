"""Training curves of one run as PNGs.

    python bench/plot.py RUN_DIR [--out DIR]        (DIR defaults to RUN_DIR/plots)
    python bench/plot.py --compare RUN_DIR... --out FILE.png     (several runs on one figure)

Reads RUN_DIR/metrics.jsonl (one JSON object per line; "kind" is "train" or "eval", a line without "kind"
counts as train) and writes one PNG per figure below, x = step. A key that no line has is skipped with a note
on stderr, not an error, so runs from older code or with parts of the method switched off still plot.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and in tests
import matplotlib.pyplot as plt  # noqa: E402

# `python bench/plot.py` puts bench/ (not the repository root) on sys.path; `bench.compare` needs the root.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import BenchError  # noqa: E402

LOSSES = "loss*"  # stands for every key starting with "loss", found in the file
# file stem -> (line kind, panels); each panel is a list of keys drawn on one set of axes. Panels are stacked,
# so quantities of different scale (ANL's k and its negative count) do not share an axis.
FIGURES = {
    "losses": ("train", [[LOSSES]]),
    "accuracy": ("eval", [["top1", "top5", "teacher_top1", "teacher_top5"]]),
    "mask_ratio": ("train", [["mask_ratio"]]),
    "anl": ("train", [["anl_k"], ["anl_negatives"]]),
    "pseudo_label_acc": ("train", [["pseudo_label_acc"]]),
    "lr": ("train", [["lr"]]),
    "clips_per_s": ("train", [["clips_per_s"]]),
}


def read_metrics(path) -> list[dict]:
    """Parse metrics.jsonl; blank lines are skipped, anything else that is not a JSON object is an error."""
    path = Path(path)
    if not path.is_file():
        raise BenchError(f"{path}: no such file")
    records = []
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise BenchError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
        if not isinstance(record, dict):
            raise BenchError(f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}")
        records.append(record)
    if not records:
        raise BenchError(f"{path}: empty, no metrics to plot")
    return records


def _series(records, key):
    """(steps, values) of the records that have a numeric `key`; x is "step", else the record's index."""
    xs, ys = [], []
    for i, r in enumerate(records):
        v = r.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            xs.append(r.get("step", i))
            ys.append(v)
    return xs, ys


def plot_run(run_dir, out_dir=None) -> dict:
    """Write RUN_DIR's curves; returns {"written": [png paths], "skipped": [notes]}."""
    run_dir = Path(run_dir)
    out_dir = Path(out_dir) if out_dir is not None else run_dir / "plots"
    records = read_metrics(run_dir / "metrics.jsonl")
    by_kind = {"train": [r for r in records if r.get("kind", "train") == "train"],
               "eval": [r for r in records if r.get("kind") == "eval"]}
    written, skipped = [], []
    for stem, (kind, panels) in FIGURES.items():
        lines = by_kind[kind]
        # Resolve "loss*" and drop keys with no numeric value in any line of this kind.
        resolved = []
        for keys in panels:
            if keys == [LOSSES]:
                keys = sorted({k for r in lines for k in r if k.startswith("loss")}, key=lambda k: (k != "loss", k))
            present = [k for k in keys if _series(lines, k)[1]]
            missing = [k for k in keys if k not in present]
            if missing or not keys:
                skipped.append(f"{stem}.png: no {kind} line has {', '.join(missing) or 'loss*'}; not plotted")
            if present:
                resolved.append(present)
        if not resolved:
            skipped.append(f"{stem}.png: nothing to plot; not written")
            continue
        fig, axes = plt.subplots(len(resolved), 1, figsize=(7, 3 * len(resolved)), sharex=True, squeeze=False)
        for ax, keys in zip(axes[:, 0], resolved):
            for k in keys:
                ax.plot(*_series(lines, k), label=k, marker="o" if kind == "eval" else None, markersize=3)
            ax.legend(fontsize=8)
            ax.grid(alpha=0.3)
        axes[-1, 0].set_xlabel("step")
        axes[0, 0].set_title(f"{run_dir.name}: {stem}")
        fig.tight_layout()
        out_dir.mkdir(parents=True, exist_ok=True)
        fig.savefig(out_dir / f"{stem}.png", dpi=100)
        plt.close(fig)
        written.append(out_dir / f"{stem}.png")
    for note in skipped:
        print(f"plot.py: {run_dir}: {note}", file=sys.stderr)
    return {"written": written, "skipped": skipped}


COMPARE = (("train", "pseudo_label_acc", "pseudo-label accuracy (teacher, weak view)"),
           ("eval", "top1", "student top-1 (%), 1-view eval"))


def plot_compare(run_dirs, out_file) -> dict:
    """One figure of several runs: pseudo-label accuracy and the student's test top-1 against the epoch (step / the
    run's steps per epoch, so runs of other lengths share the axis), a line per run named by its directory."""
    runs = {Path(d).name: read_metrics(Path(d) / "metrics.jsonl") for d in run_dirs}
    fig, axes = plt.subplots(1, len(COMPARE), figsize=(6 * len(COMPARE), 4), squeeze=False)
    skipped = []
    for ax, (kind, key, title) in zip(axes[0], COMPARE):
        for name, records in runs.items():
            evals = [r for r in records if r.get("kind") == "eval" and "epoch" in r]
            per_epoch = evals[-1]["step"] / evals[-1]["epoch"] if evals and evals[-1]["epoch"] else None
            xs, ys = _series([r for r in records if r.get("kind", "train") == kind], key)
            if not ys or per_epoch is None:
                skipped.append(f"{name}: no {kind} line with {key}" if not ys else f"{name}: no eval line to scale "
                               "steps to epochs")
                continue
            ax.plot([x / per_epoch for x in xs], ys, label=name, marker="o" if kind == "eval" else None, markersize=3)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    Path(out_file).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_file, dpi=100)
    plt.close(fig)
    for note in skipped:
        print(f"plot.py: {note}", file=sys.stderr)
    return {"written": [Path(out_file)], "skipped": skipped}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", metavar="RUN_DIR", nargs="+", help="run directory holding metrics.jsonl (several with "
                                                                 "--compare)")
    p.add_argument("--compare", action="store_true", help="draw every RUN_DIR on one figure, written to --out FILE")
    p.add_argument("--out", type=Path, help="where the PNGs go (default RUN_DIR/plots); with --compare, the PNG file")
    args = p.parse_args(argv)
    if args.compare:
        if args.out is None:
            p.error("--compare needs --out FILE.png")
        result = plot_compare(args.run_dir, args.out)
    elif len(args.run_dir) > 1:
        p.error("several RUN_DIRs need --compare")
    else:
        result = plot_run(args.run_dir[0], args.out)
    for path in result["written"]:
        print(path)
    return result


if __name__ == "__main__":
    try:
        main()
    except BenchError as e:
        sys.exit(f"plot.py: {e}")
