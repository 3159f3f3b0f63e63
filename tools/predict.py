"""Classify video files with a trained run:

    python tools/predict.py --checkpoint runs/RUN/last.pt [--teacher] [--topk 5] [--json] VIDEO [VIDEO ...]
    python tools/predict.py --checkpoint runs/RUN VIDEO ...        # a run directory: its last.pt

It uses the checkpoint's own config (frames, size, normalisation, the test_clips x test_crops views of `eval`, logits
averaged) and the class names stored in it. An unreadable video is reported on stderr and skipped (exit status 1); a
mistake in the arguments or the checkpoint is one line, exit 2, as in fullsvformer.py.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import fullsvformer as fs  # noqa: E402


def predict(argv: list[str]) -> dict:
    """Print the top-k classes of each video; -> {"predicted": n, "failed": n}."""
    p = fs.ArgumentParser(prog="tools/predict.py", description=__doc__,
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a run's last.pt (or best.pt), or its run directory (last.pt)")
    p.add_argument("--teacher", action="store_true", help="use the EMA teacher instead of the student")
    p.add_argument("--topk", type=int, default=5, help="classes to show per video (default: 5)")
    p.add_argument("--json", action="store_true",
                   help='one JSON object per video on stdout: {"video", "topk": [{"label", "name", "prob"}, ...]}')
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, ...")
    p.add_argument("videos", nargs="+", metavar="VIDEO")
    a = p.parse_args(argv)
    if a.topk < 1:
        p.error("--topk must be at least 1")
    fs.log.addHandler(logging.StreamHandler(sys.stderr))  # notes on stderr: stdout is the predictions (--json)
    fs.log.setLevel(logging.INFO)
    ckpt = fs.read_run_checkpoint(fs.checkpoint_path(a.checkpoint))
    cfg = fs.config_from_dict(ckpt["config"])
    names = ckpt.get("class_names") or [str(y) for y in range(ckpt["num_classes"])]  # older checkpoints: numbers
    device = fs.pick_device(a.device)
    amp = fs.resolve_amp(cfg.train.amp if device.type == "cuda" else "none", device)  # the run's amp, on CUDA only
    model = fs.model_from_checkpoint(ckpt, cfg, "ema" if a.teacher else "model").to(device).eval()
    videos = fs.VideoClips("", [(v, -1) for v in a.videos], cfg.data, "predict")
    failed = 0
    for i, path in enumerate(a.videos):
        try:
            views = videos.test_item(i)["views"]  # (V, T, C, S, S) uint8
        except fs.BadVideo as e:
            print(f"predict: cannot read {e}", file=sys.stderr)
            failed += 1
            continue
        with torch.inference_mode(), fs.autocast_context(device, amp):
            logits = model(fs.normalize_clips(views.to(device), cfg.data.mean, cfg.data.std)).float().mean(dim=0)
        prob, label = logits.softmax(dim=-1).topk(min(a.topk, len(names)))
        top = [{"label": int(y), "name": names[y], "prob": float(q)} for q, y in zip(prob.tolist(), label.tolist())]
        if a.json:
            print(json.dumps({"video": path, "topk": top}), flush=True)
        else:
            print(f"{path}\n" + "".join(f"  {r['prob']:7.2%}  {r['label']:>4}  {r['name']}\n" for r in top), flush=True)
    return {"predicted": len(a.videos) - failed, "failed": failed}


if __name__ == "__main__":
    sys.exit(fs.cli(entry=predict))
