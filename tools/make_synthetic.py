r"""Write the built-in synthetic clips as video files in the official UCF-101 or HMDB-51 layout, lists included, so
that the real path (lists -> split -> decode -> loader) runs end to end without the datasets:

    python tools/make_synthetic.py --out /tmp/synth --layout ucf101
    python fullsvformer.py --dataset ucf101 --data-root /tmp/synth --labeled 0.02 --arch tiny --img-size 64 \
        --global-batch 4 --labeled-batch 2 --epochs 1 --device cpu --out /tmp/synth-run

(the second trains a small model for one epoch on the CPU in about a minute, from scratch; the paper's defaults, a
ViT-B at 224 px with a global batch of 64, need a GPU and more clips than these).

Videos are 25 fps mpeg4 AVIs. UCF-101 style: CamelCase class folders under UCF-101/, v_<Class>_gGG_cCC.avi, and split
k tests groups 7(k-1)+1..7k as the official lists do. HMDB-51 style: per 10 clips 3 test (tag 2), 1 unused (tag 0) and
6 train (tag 1), rotated per split. Committed splits/ apply only to the real lists: use a fraction without one.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import fullsvformer as fs  # noqa: E402


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The docstring as written, and each option's default."""


def main(argv: list[str] | None = None) -> dict:
    p = fs.ArgumentParser(prog="tools/make_synthetic.py", description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--out", required=True, default=argparse.SUPPRESS, help="folder to write")
    p.add_argument("--layout", required=True, choices=("ucf101", "hmdb51"), default=argparse.SUPPRESS,
                   help="official list format")
    p.add_argument("--task", default="ucf-proxy", help="a task of fullsvformer.SYNTH_TASKS")
    p.add_argument("--classes", type=int, default=4, help="its first N classes (0: all)")
    # UCF-101 layout: clip k is group k %% 25 + 1 and split 1 tests groups 1-7, so 30 clips give 18 train, 12 test.
    p.add_argument("--clips-per-class", type=int, default=30, help="videos per class")
    p.add_argument("--size", default="96x72", help="frame size in pixels, even: N (square) or WxH, e.g. 320x240 as "
                                                   "UCF-101 (4:3, so that test crops along the long side differ)")
    p.add_argument("--length", type=int, default=64, help="frames per video (25 fps)")
    p.add_argument("--seed", type=int, default=0, help="content seed")
    a = p.parse_args(argv)
    try:
        W, H = (int(v) for v in (a.size.split("x") if "x" in a.size else (a.size, a.size)))
    except ValueError:
        p.error(f"--size {a.size!r}: expected N or WxH")
    from torchcodec.encoders import VideoEncoder  # here: --help works without FFmpeg

    if a.task not in fs.SYNTH_TASKS:
        p.error(f"--task {a.task!r}: expected one of {sorted(fs.SYNTH_TASKS)}")
    task = fs.SYNTH_TASKS[a.task]

    def clip(index: int, label: int) -> torch.Tensor:  # a square clip of the longer side, cropped to H x W
        return torch.cat([fs.synthetic_frames(index, label, t, task, max(W, H), a.seed)[..., :H, :W]
                          for t in torch.arange(a.length).split(8)])  # 8 frames at a time bounds the memory
    out = Path(a.out)
    names = task.names()[:a.classes or None]
    if a.layout == "ucf101":
        # UCF style: CamelCase classes, v_<Class>_gGG_cCC.avi; split k tests groups 7(k-1)+1..7k, as the official one.
        camel = ["".join(w.title() for w in n.split("_")) for n in names]
        lists = out / "ucfTrainTestlist"
        lists.mkdir(parents=True, exist_ok=True)
        (lists / "classInd.txt").write_text("".join(f"{i + 1} {c}\n" for i, c in enumerate(camel)))
        rows = []
        for y, c in enumerate(camel):
            (out / "UCF-101" / c).mkdir(parents=True, exist_ok=True)
            for k in range(a.clips_per_class):
                rel = f"{c}/v_{c}_g{k % 25 + 1:02d}_c{k // 25 + 1:02d}.avi"
                VideoEncoder(clip(y * a.clips_per_class + k, y), frame_rate=25).to_file(str(out / "UCF-101" / rel),
                                                                                        codec="mpeg4")
                rows.append((rel, y, k % 25 + 1))
        for s in (1, 2, 3):
            test = [r for r in rows if 7 * (s - 1) < r[2] <= 7 * s]
            (lists / f"trainlist0{s}.txt").write_text("".join(f"{r} {y + 1}\n" for r, y, _ in rows
                                                              if (r, y, _) not in test))
            (lists / f"testlist0{s}.txt").write_text("".join(f"{r}\n" for r, _, _ in test))
    else:
        sdir = out / "testTrainMulti_7030_splits"
        sdir.mkdir(parents=True, exist_ok=True)
        for y, c in enumerate(names):
            (out / c).mkdir(parents=True, exist_ok=True)
            vids = [f"{c}_clip_{k}.avi" for k in range(a.clips_per_class)]
            for k, v in enumerate(vids):
                VideoEncoder(clip(y * a.clips_per_class + k, y), frame_rate=25).to_file(str(out / c / v), codec="mpeg4")
            for s in (1, 2, 3):  # per 10 clips: 3 test (tag 2), 1 unused (tag 0), 6 train (tag 1), rotated per split
                tags = [2 if (k + s) % 10 < 3 else 0 if (k + s) % 10 == 3 else 1 for k in range(len(vids))]
                (sdir / f"{c}_test_split{s}.txt").write_text("".join(f"{v} {t} \n" for v, t in zip(vids, tags)))
    print(f"wrote {len(names) * a.clips_per_class} videos ({a.layout} layout) under {out}")
    return {}


if __name__ == "__main__":
    sys.exit(fs.cli(entry=main))
