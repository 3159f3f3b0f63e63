"""Decode + augment throughput of one data worker: one decode per unlabeled clip (ours) vs two (official SVFormer).

    python bench/decode_speed.py [--clips 60] [--repeats 3]

Writes a 320x240, 25 fps, 7 s mpeg4 AVI (UCF-101's format) of synthetic motion to a temp folder, then times, on one
thread, 8x8 training clips (8 frames, stride 8, random start) with 224 crops. Warm-up iterations are excluded; each
row is mean ± std over --repeats runs of --clips clips. Returns the table as a dict (importable from bench/ wrappers).
"""
import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import fullsvformer as fs  # noqa: E402


def make_video(path: Path, seconds: float = 7.0) -> None:
    from torchcodec.encoders import VideoEncoder
    n = round(25 * seconds)
    task = fs.SYNTH_TASKS["ucf-proxy"]
    frames = torch.cat([fs.synthetic_frames(0, 2, t, task, 320)[:, :, :240]
                        for t in torch.arange(n).split(8)])  # (N, 3, 240, 320)
    VideoEncoder(frames.contiguous(), frame_rate=25).to_file(str(path), codec="mpeg4")


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", type=int, default=60)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args(argv)
    torch.set_num_threads(1)  # one data worker = one core
    cfg = fs.DataConfig(img_size=224, num_frames=8, clip_stride=8)
    aug = fs.ClipAugment(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "v_Synthetic_g01_c01.avi"
        make_video(path)

        def pick(seed):
            g = torch.Generator().manual_seed(seed)
            return lambda n: fs.clip_indices(n, 8, 8, fs.random_clip_start(n, 8, 8, g))

        def decode_once(s):
            fs.decode_frames(path, pick(s))

        def decode_twice(s):  # the official loader reads the video once per view
            fs.decode_frames(path, pick(s))
            fs.decode_frames(path, pick(s))

        def ours(s):  # one decode, weak view, strong = warped weak + RandAugment
            aug(fs.decode_frames(path, pick(s))[0], s, strong=True)

        def official(s):  # two decodes, each augmented on its own (weak; strong)
            aug(fs.decode_frames(path, pick(s))[0], s, strong=False)
            aug(fs.decode_frames(path, pick(s))[0], s, strong=True)

        rows = {"decode x1 (8x8 clip)": decode_once, "decode x2": decode_twice,
                "decode x1 + weak + strong (ours)": ours, "decode x2 + weak, strong (official style)": official}
        out = {}
        for name, fn in rows.items():
            for s in range(5):  # warm-up
                fn(s)
            rates = []
            for r in range(a.repeats):
                t = time.perf_counter()
                for s in range(a.clips):
                    fn(1000 * r + s)
                rates.append(a.clips / (time.perf_counter() - t))
            out[name] = (statistics.mean(rates), statistics.stdev(rates) if len(rates) > 1 else 0.0)
    print(f"torch {torch.__version__}, one thread; 320x240 25 fps 7 s mpeg4 AVI; 8x8 clips, 224 crops, "
          f"{a.repeats} x {a.clips} clips")
    print(f"{'pipeline':44s} {'clips/s':>16s}")
    for name, (m, sd) in out.items():
        print(f"{name:44s} {m:9.1f} ± {sd:4.1f}")
    return out


if __name__ == "__main__":
    main()
