"""The full Full-SVFormer train step of the tiny preset on CPU, eager vs torch.compile, same process.

    python bench/compile_cpu.py [--threads 1] [--rounds 7]

Same step and setting as bench/test_throughput.py's `test_train_step[tiny-cpu]` (bench/throughput.py: SSLStep,
TINY_CPU: 32 px, patch 8, T 8, fp32, 2 labeled + 6 unlabeled clips). The first compiled step (compilation) and 4
warm-up steps are kept out of the statistics; the eager and compiled steps then alternate round by round, so machine
load hits both alike. Prints the median clips/s of each and their ratio.
"""
import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import throughput as tp  # noqa: E402


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (one: the least noisy)")
    p.add_argument("--rounds", type=int, default=7)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    steps, first = {}, {}
    for compiled in (False, True):
        s = dataclasses.replace(tp.TINY_CPU, compile=compiled)
        steps[compiled] = tp.SSLStep(s)
        t0 = time.perf_counter()
        steps[compiled]()
        first[compiled] = time.perf_counter() - t0
        for _ in range(4):  # the first compiled steps after compilation are still slow
            steps[compiled]()
    times = {False: [], True: []}
    for _ in range(a.rounds):
        for compiled, step in steps.items():
            t0 = time.perf_counter()
            step()
            times[compiled].append(time.perf_counter() - t0)
    clips = tp.TINY_CPU.clips_per_step
    out = {("compiled" if c else "eager"): clips / statistics.median(t) for c, t in times.items()}
    out["ratio"] = out["compiled"] / out["eager"]
    print(f"tiny preset train step, CPU fp32, {a.threads} thread(s), torch {torch.__version__}")
    print(f"  eager    {out['eager']:6.1f} clips/s   (first step {first[False]:.1f} s)")
    print(f"  compiled {out['compiled']:6.1f} clips/s   (first step, compiling: {first[True]:.1f} s)")
    print(f"  compiled / eager = {out['ratio']:.2f}")
    return out


if __name__ == "__main__":
    main()
