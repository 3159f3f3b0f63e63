"""Feeding the GPUs: what the data loader delivers per worker, and what a paper run spends besides training.

    python bench/feed.py --out bench/results/feed.json [--videos DIR]      # ~5 min on 2 cores

Measured on this machine, with fullsvformer's own loaders on UCF-like AVIs written by `tools/make_synthetic.py
--size 320x240 --length 175` (25 fps, 7 s: UCF-101's size and mean length; mpeg4), 4 classes x 48 train / 3 test names:
- train loader: clips/s (labeled + unlabeled) with the ucf101 preset's views (8 frames at stride 8, 224 crops, one
  decode per clip, weak + strong view, RandAugment 2x9 and off), 1 labeled + 5 unlabeled clips per batch, with 1 and
  2 worker processes; the training process only collates, as on a GPU machine;
- eval loader: 1-view and 5x3-view videos/s per worker, and the time to the first batch (forking the workers);
- checkpoint: torch.save of a ViT-B/16 run checkpoint for 101 classes (student, EMA teacher, SGD momentum), then
  fsync, on the disk of --tmp.
Derived, not measured (no GPU here): FLOPs per step and per eval video counted with torch.utils.flop_counter on the
meta device, and the time they take at 50% MFU of an H100/H200 (989 TFLOP/s dense bf16 each), for one epoch of
UCF-101 1% / 10% and HMDB-51 40% on 8 GPUs.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import fullsvformer as fs  # noqa: E402
from tools import make_synthetic  # noqa: E402

PEAK = 989e12  # H100/H200 SXM dense bf16 FLOP/s (spec)
MFU = 0.5
GPUS = 8
# Clips per epoch and test videos of the paper settings (our splits: splits/; HMDB-51 40% = 28 of 70 per class).
SETTINGS = {"ucf101-1%": (9436, 101, 3783), "ucf101-10%": (8527, 1010, 3783), "hmdb51-40%": (2142, 1428, 1530)}


def write_videos(root: Path, distinct: int = 3, copies: int = 16) -> Path:
    """A UCF-101 tree of 4 classes: tools/make_synthetic.py writes `distinct` AVIs per class (320x240, 175 frames),
    then each is hard-linked under `copies` train names and one test name (decoding cost does not depend on the content, and
    writing 320 px synthetic videos takes seconds each)."""
    src = root / "src"
    make_synthetic.main(["--out", str(src), "--layout", "ucf101", "--classes", "4", "--clips-per-class",
             str(distinct), "--size", "320x240", "--length", "175"])
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    (lists / "classInd.txt").write_text((src / "ucfTrainTestlist" / "classInd.txt").read_text())
    train, test = [], []
    for y, line in enumerate((lists / "classInd.txt").read_text().split("\n")[:-1]):
        name = line.split()[1]
        (root / "UCF-101" / name).mkdir(parents=True)
        for k, video in enumerate(sorted((src / "UCF-101" / name).glob("*.avi"))):
            for c in range(copies + 1):  # group 1 is a test group in split 1, groups 8-23 train
                rel = f"{name}/v_{name}_g{1 if c == copies else 8 + c:02d}_c{k + 1:02d}.avi"
                os.link(video, root / "UCF-101" / rel)
                (test.append(rel) if c == copies else train.append(f"{rel} {y + 1}"))
    (lists / "trainlist01.txt").write_text("\n".join(train) + "\n")
    (lists / "testlist01.txt").write_text("\n".join(test) + "\n")
    return root


def paper_cfg(root: Path, workers: int, randaug: int) -> fs.Config:
    """The ucf101 preset (ViT-B 8x224 views, mu 5, 1 labeled clip per micro-batch) on the written tree."""
    return fs.parse_config(["--dataset", "ucf101", "--data-root", str(root), "--labeled", "0.02", "--workers",
                            str(workers), "--randaug-n", str(randaug), "--eval-batch", "4"])[0]


def train_loader_rate(root: Path, workers: int, randaug: int, batches: int) -> dict:
    cfg = paper_cfg(root, workers, randaug)
    data = fs.build_data(cfg.data, 0)
    it = fs.train_batches(data, 0, end_step=batches + 2)
    t0 = time.perf_counter()
    next(it)  # forks the workers and fills their queues
    first = time.perf_counter() - t0
    next(it)
    t0, clips = time.perf_counter(), 0
    for lab, unl in it:
        clips += len(lab["label"]) + len(unl["label"])
    dt = time.perf_counter() - t0
    return {"workers": workers, "randaug_n": randaug, "clips_per_s": clips / dt,
            "clips_per_s_per_worker": clips / dt / max(workers, 1), "first_batch_s": first, "clips": clips}


def eval_loader_rate(root: Path, workers: int, full: bool) -> dict:
    cfg = paper_cfg(root, workers, 2)
    data = fs.build_data(cfg.data, 0)
    t0 = time.perf_counter()
    it = fs.eval_batches(data, full)
    b = next(it)
    first = time.perf_counter() - t0
    t1, n = time.perf_counter(), 0
    for b in it:
        n += len(b["label"])
    dt = time.perf_counter() - t1
    return {"workers": workers, "views": f"{cfg.data.test_clips}x{cfg.data.test_crops}" if full else "1x1",
            "videos_per_s": n / dt, "videos_per_s_per_worker": n / dt / max(workers, 1), "first_batch_s": first,
            "videos": n}


def checkpoint_cost(tmp: Path) -> dict:
    cfg = fs.parse_config(["--dataset", "ucf101"])[0]
    model = fs.build_model(cfg.model, 101, 8, 224)
    opt = fs.make_optimizer(model, cfg.train)
    for p in model.parameters():  # SGD's momentum buffers exist after the first step
        opt.state[p]["momentum_buffer"] = torch.zeros_like(p)
    ckpt = {"model": model.state_dict(), "ema": {k: v.clone() for k, v in model.state_dict().items()},
            "optimizer": opt.state_dict()}
    path = tmp / "last.pt"
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        torch.save(ckpt, path)
        with open(path, "rb+") as f:
            os.fsync(f.fileno())
        times.append(time.perf_counter() - t0)
    return {"gb": path.stat().st_size / 1e9, "save_and_fsync_s": statistics.median(times), "runs_s": times}


def flops() -> dict:
    """FLOPs of one training step (1 labeled + 5 unlabeled clips, ViT-B 8x224) and of one 1-view eval video (student
    and teacher forwards), counted on the meta device: shapes only, nothing computed."""
    from torch.utils.flop_counter import FlopCounterMode
    cfg = fs.parse_config(["--dataset", "ucf101"])[0]
    meta = torch.device("meta")
    with meta:
        student = fs.build_model(cfg.model, 101, 8, 224)
        teacher = fs.build_model(cfg.model, 101, 8, 224).eval()

    def clips(n):
        return torch.zeros(n, 8, 3, 224, 224, dtype=torch.uint8, device=meta)
    lab = {"weak": clips(1), "label": torch.zeros(1, dtype=torch.long, device=meta)}
    unl = {"weak": clips(5), "strong": clips(5), "label": torch.zeros(5, dtype=torch.long, device=meta)}
    with FlopCounterMode(display=False) as fc:
        loss, _ = fs.ssl_losses(student, teacher, lab, unl, cfg, meta, "none", torch.Generator())
        loss.backward()
    step = fc.get_total_flops()
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        student.eval()(fs.normalize_clips(clips(1), cfg.data.mean, cfg.data.std))
    return {"step": step, "clips_per_step": 6, "eval_video_1view": 2 * fc.get_total_flops()}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="JSON file to write")
    p.add_argument("--videos", default="", help="a tree written before by this script (skips writing it)")
    p.add_argument("--tmp", default=str(Path(__file__).resolve().parent.parent / "runs"),
                   help="folder on the disk that run directories use (for the checkpoint write)")
    p.add_argument("--batches", type=int, default=40, help="timed train batches per setting")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    fs.setup_logging(None)
    res = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                       "torch": torch.__version__}}
    with tempfile.TemporaryDirectory() as d:
        root = Path(a.videos) if a.videos else write_videos(Path(d) / "ucf")
        res["train_loader"] = [train_loader_rate(root, w, r, a.batches) for r in (2, 0) for w in (1, 2)]
        res["eval_loader"] = [eval_loader_rate(root, w, full) for full in (False, True) for w in (1, 2)]
    Path(a.tmp).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=a.tmp) as d:
        res["checkpoint"] = checkpoint_cost(Path(d))
    f = res["flops"] = flops()
    step_s = f["step"] / (PEAK * MFU)  # one GPU, one micro-batch of 6 clips
    res["gpu"] = {"peak_flops": PEAK, "mfu": MFU, "clips_per_s": f["clips_per_step"] / step_s,
                  "eval_videos_per_s": PEAK * MFU / f["eval_video_1view"]}
    per_worker = next(r for r in res["train_loader"] if r["workers"] == 1 and r["randaug_n"] == 2)
    res["workers_per_gpu_needed"] = res["gpu"]["clips_per_s"] / per_worker["clips_per_s_per_worker"]
    ev = next(r for r in res["eval_loader"] if r["workers"] == 1 and r["views"] == "1x1")
    res["epoch_on_8_gpus"] = {}
    for name, (unlabeled, labeled, test) in SETTINGS.items():
        steps = unlabeled // 5  # mu 5: 5 unlabeled clips per labeled one
        res["epoch_on_8_gpus"][name] = {
            "train_compute_s": steps * step_s / GPUS,
            # 1-view eval, decode-bound: 8 GPUs x W workers, each at the measured rate, plus the fork of the workers
            "eval_1view_s_per_worker_count": {w: test / (GPUS * w * ev["videos_per_s_per_worker"]) + ev["first_batch_s"]
                                              for w in (4, 8)},
            "checkpoint_s": res["checkpoint"]["save_and_fsync_s"]}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
