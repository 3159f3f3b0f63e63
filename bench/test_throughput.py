"""Throughput benchmarks (pytest-benchmark) with a regression check against bench/baseline.json.

    python -m pytest bench/test_throughput.py --benchmark-only                       # CI: CPU part ~25 s, one thread
    BENCH_UPDATE_BASELINE=1 python -m pytest bench/test_throughput.py --benchmark-only   # re-measure the baseline

Settings: the tiny preset on CPU (always) and ViT-B 8x224 bf16 compiled (only with CUDA). Each test records in
benchmark.extra_info: clips/s, FLOPs per clip, FLOP/s, the dense-matmul FLOP/s measured in the same test, their ratio
(mfu), device, dtype, compile and torch version. The regression check compares only machine-normalised figures
(mfu, ours_over_hf) with the baseline, so a slower or busier machine does not fail it but a slower step does.
See bench/README.throughput.md.
"""
import dataclasses
import os
import statistics
import tempfile
import time
from pathlib import Path

import pytest
import torch

from bench import throughput as tp

UPDATE = os.environ.get("BENCH_UPDATE_BASELINE", "") not in ("", "0")
WARMUP = 2  # rounds kept out of the statistics; a compiled setting adds 3 (compile, then the slow first compiled steps)
# Timed rounds per test (CPU, CUDA): enough for a stable median, while the CPU part stays near a minute on 2 cores.
ROUNDS = {"train_step": (7, 20), "inference": (15, 30), "fwd_bwd_vs_hf": (9, 20)}
# CPU threads for the CPU setting. One: with two threads, every parallel op waits for the slower thread, so a core
# taken by another job slows the model's many small ops far more than the big reference matmul and the normalised
# figures swing; on one thread, load only time-slices, which hits both alike. BENCH_CPU_THREADS=0 keeps torch's default.
CPU_THREADS = int(os.environ.get("BENCH_CPU_THREADS", "1"))
SETTINGS = [
    pytest.param(tp.TINY_CPU, id="tiny-cpu"),
    pytest.param(tp.BASE_CUDA, id="base-cuda",
                 marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="base 8x224 bf16 compiled needs CUDA")),
]


@pytest.fixture(autouse=True)
def cpu_threads():
    threads = torch.get_num_threads()
    if CPU_THREADS > 0:
        torch.set_num_threads(CPU_THREADS)
    yield
    torch.set_num_threads(threads)


def measure(benchmark, s: tp.Setting, target, name: str, others: dict | None = None) -> tuple[float, float, dict]:
    """Time `target` with benchmark.pedantic; in each round's untimed setup, also time a dense matmul and each of
    `others`, so that all of them share the same warm-up rounds and the same machine load (alternating rounds).
    Returns (median target s, median matmul FLOP/s, {other: median s})."""
    device = torch.device(s.device)
    mm = tp.Matmul(device)
    others = others or {}
    times = {k: [] for k in others}

    def setup():
        mm()
        for k, fn in others.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)

    warmup = WARMUP + (3 if s.compile else 0)
    benchmark.pedantic(target, setup=setup, rounds=ROUNDS[name][device.type == "cuda"], warmup_rounds=warmup)
    return (benchmark.stats.stats.median, statistics.median(mm.rates[warmup:]),
            {k: statistics.median(v[warmup:]) for k, v in times.items()})


def finish(benchmark, s: tp.Setting, name: str, clips: int, flops_per_clip: float, peak: float, seconds: float,
           normalised: dict[str, float]) -> None:
    """Record the figures in extra_info and check (or, with BENCH_UPDATE_BASELINE=1, update) the baseline."""
    device = torch.device(s.device)
    rate = clips / seconds
    benchmark.extra_info.update({
        "setting": s.key, "clips_per_s": rate, "flops_per_clip": flops_per_clip, "flops_per_s": rate * flops_per_clip,
        "matmul_flops_per_s": peak, **normalised,
        **tp.env_info(device, tp.fs.resolve_amp(s.amp, device), s.compile)})
    metrics = {f"{name}.{k}": v for k, v in normalised.items()}
    if UPDATE:
        tp.update_baseline(s.key, metrics)
        return
    bad = tp.check_baseline(s.key, metrics)
    assert not bad, "throughput regression (BENCH_UPDATE_BASELINE=1 re-measures the baseline):\n" + "\n".join(bad)


@pytest.mark.parametrize("s", SETTINGS)
def test_train_step(benchmark, s):
    """The full Full-SVFormer step: teacher forward (weak), student forward+backward (labeled + strong + mixed),
    optimizer step, EMA update. clips/s counts labeled + unlabeled clips."""
    step = tp.SSLStep(s)
    flops = step.flops() / s.clips_per_step
    t, peak, _ = measure(benchmark, s, step, "train_step")
    finish(benchmark, s, "train_step", s.clips_per_step, flops, peak, t, {"mfu": s.clips_per_step * flops / t / peak})


@pytest.mark.parametrize("s", SETTINGS)
def test_inference(benchmark, s):
    """Student forward in eval mode without grad (the evaluation path), on a batch of the step's size."""
    batch = s.clips_per_step
    fwd = tp.FwdBwd(s, "ours", batch, train=False)
    flops = fwd.flops() / batch
    t, peak, _ = measure(benchmark, s, fwd, "inference")
    finish(benchmark, s, "inference", batch, flops, peak, t, {"mfu": batch * flops / t / peak})


@pytest.mark.parametrize("s", SETTINGS)
def test_fwd_bwd_vs_hf(benchmark, s):
    """Our TimeSformer vs HF's TimesformerForVideoClassification, forward+backward at the same config and dtype
    (no dropout or stochastic depth in either), both eager: an implementation comparison that a compile failure in
    either cannot break (test_train_step measures the compiled step). pytest-benchmark times ours; HF runs, timed by
    hand, in each round's untimed setup: the same warm-up and timed rounds, alternating.
    ours_over_hf = median HF s / median our s (> 1: ours is faster)."""
    s = dataclasses.replace(s, compile=False)  # same baseline key as the setting
    reason = tp.hf_available()
    if reason:
        pytest.skip(reason)
    batch = s.clips_per_step
    ours, hf = tp.FwdBwd(s, "ours", batch), tp.FwdBwd(s, "hf", batch)
    flops = ours.flops() / batch
    t, peak, other = measure(benchmark, s, ours, "fwd_bwd_vs_hf", {"hf": hf})
    benchmark.extra_info.update({"hf_clips_per_s": batch / other["hf"], "hf_flops_per_clip": hf.flops() / batch})
    finish(benchmark, s, "fwd_bwd_vs_hf", batch, flops, peak, t,
           {"mfu": batch * flops / t / peak, "ours_over_hf": other["hf"] / t})


def test_decode_augment(benchmark):
    """Decode + weak/strong augmentation of one 8x8 clip at 224 px, on one thread (one data worker), from a generated
    UCF-like AVI (320x240, 25 fps, 7 s, mpeg4). clips/s per worker; not baseline-checked (it is not normalised)."""
    reason = tp.decode_available()
    if reason:
        pytest.skip(reason)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            fn = tp.decode_pipeline(Path(tmp))
            seeds = iter(range(10 ** 6))
            benchmark.pedantic(lambda: fn(next(seeds)), rounds=30, warmup_rounds=3)
    finally:
        torch.set_num_threads(threads)
    benchmark.extra_info.update({"clips_per_s_per_worker": 1 / benchmark.stats.stats.median, "torch": torch.__version__,
                                 "video": "320x240 25 fps 7 s mpeg4, 8x8 clip, 224 crop, weak + strong"})
