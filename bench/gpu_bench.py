"""The Full-SVFormer train step on one GPU: clips/s, MFU and peak memory, eager vs torch.compile, a few batch sizes.

    python bench/gpu_bench.py --out $OUT                     # ViT-B 8x224 bf16 on CUDA (bench/gpu.sh runs this)
    python bench/gpu_bench.py --tiny --device cpu --out /tmp # the same code path in a minute on a CPU

Each row is one setting: labeled_batch B_l with mu*B_l unlabeled clips, eager or compiled, optionally with
grad_checkpointing. A step is fullsvformer's own ssl_losses + backward + optimizer step + ema_update
(bench/throughput.py SSLStep). clips/s counts labeled + unlabeled clips; MFU = FLOP/s (FlopCounterMode on one eager
step) / dense bf16 matmul FLOP/s measured in this process, right before and after the row's timed steps; peak memory is
torch.cuda.max_memory_allocated over the row (model, teacher, optimizer, activations; the matmul's buffers excluded).
Compile time (the first compiled step) is reported apart and kept out of the timing. Rows run in priority order and
the JSON is rewritten after each one, so a --budget-s cut or a timeout still leaves every finished row. Needs torch
and timm; transformers is optional (the HF Timesformer ratio is skipped without it); never imports torchcodec.
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import throughput as tp  # noqa: E402

fs = tp.fs


def settings(tiny: bool, device: str) -> list[tp.Setting]:
    """Rows in priority order: what matters most runs first, in case the budget runs out."""
    base = (tp.Setting("tiny", mu=5, device=device, amp="bf16" if device != "cpu" else "none") if tiny else
            dataclasses.replace(tp.BASE_CUDA, device=device, compile=False))
    rows = []
    for lb, comp, gc_ in ((1, False, False), (1, True, False), (2, False, False), (2, True, False),
                          (2, False, True), (4, True, True)):
        key = f"{'tiny' if tiny else 'base'}-lb{lb}-mu{base.mu}-{'compile' if comp else 'eager'}{'-gc' if gc_ else ''}"
        rows.append(dataclasses.replace(base, key=key, labeled_batch=lb, compile=comp, grad_checkpointing=gc_))
    return rows


def cuda_generator_check(device: torch.device) -> str | None:
    """fs.ssl_losses draws Tube TokenMix's lambda with fs.sample_lambda(beta, gen) from `gen`, a generator on the
    training device. If that fails on CUDA, report it and draw lambda from a CPU generator (a benchmark-only
    workaround; it then costs a host-to-device copy per step)."""
    if device.type != "cuda":
        return None
    try:
        fs.sample_lambda(10.0, torch.Generator(device).manual_seed(0))
        return None
    except RuntimeError as e:
        orig, cpu_gen = fs.sample_lambda, torch.Generator().manual_seed(0)
        fs.sample_lambda = lambda beta, generator=None: orig(beta, cpu_gen)
        return (f"fs.sample_lambda fails with a CUDA generator ({str(e).splitlines()[0]}): fs.train() on CUDA would "
                "crash at its first step; benchmarked with lambda drawn from a CPU generator")


def sync_points(s: tp.Setting) -> list[str]:
    """Host syncs inside one eager step, by torch.cuda.set_sync_debug_mode: 'file:line code' of the innermost
    fullsvformer.py / bench frame of each synchronizing CUDA call (the finite check is train()'s intended one)."""
    import traceback
    import warnings
    if torch.device(s.device).type != "cuda":
        return []
    step, found = tp.SSLStep(dataclasses.replace(s, compile=False)), []
    step()

    def record(message, category, filename, lineno, file=None, line=None):
        frames = [f for f in traceback.extract_stack() if f.filename.endswith(("fullsvformer.py", "throughput.py"))]
        where = f"{Path(frames[-1].filename).name}:{frames[-1].lineno} {frames[-1].line}" if frames else filename
        if where not in found:
            found.append(where)

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = record
        torch.cuda.set_sync_debug_mode("warn")
        try:
            step()
        finally:
            torch.cuda.set_sync_debug_mode(0)
    return found


def micro_step_sync_check(s: tp.Setting) -> str:
    """Two micro-steps as train()'s loop runs them (fs.ssl_losses on a pinned CPU batch, as the DataLoader delivers
    it, with ANL's k a device tensor; backward) under torch.cuda.set_sync_debug_mode("error"): any host sync raises.
    The optimizer step's one intended sync (the skip decision) is outside. Returns a one-line verdict."""
    if torch.device(s.device).type != "cuda":
        return "not run: needs CUDA"
    step = tp.SSLStep(dataclasses.replace(s, compile=False))
    step()  # warm-up: cuBLAS handles, the normalisation constants, allocator pools
    lab, unl = ({k: v.cpu().pin_memory() for k, v in b.items()} for b in (step.lab, step.unl))
    k = torch.tensor(s.num_classes, device=step.device)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(2):
            loss, _ = fs.ssl_losses(step.student, step.teacher_fwd, lab, unl, step.cfg, step.device, step.amp,
                                    step.gen, anl_k=k)
            loss.backward()
        return "ok: no host sync in 2 micro-steps"
    except RuntimeError as e:
        return f"SYNC in a micro-step: {str(e).splitlines()[0]}"
    finally:
        torch.cuda.set_sync_debug_mode(0)
        step.optimizer.zero_grad(set_to_none=True)


def free(device: torch.device) -> None:
    gc.collect()
    torch._dynamo.reset()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def run_row(s: tp.Setting, steps: int, warmup: int, mm: tp.Matmul, flops_cache: dict) -> dict:
    device = torch.device(s.device)
    row = {"setting": s.key, "labeled_batch": s.labeled_batch, "mu": s.mu, "clips_per_step": s.clips_per_step,
           "compile": s.compile, "grad_checkpointing": s.grad_checkpointing, "amp": s.amp}
    free(device)
    base_mem = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0  # the matmul's buffers
    try:
        step = tp.SSLStep(s)
        shape = (s.labeled_batch, s.mu)
        if shape not in flops_cache:
            flops_cache[shape] = step.flops() / s.clips_per_step
        row["flops_per_clip"] = flops_cache[shape]
        t = time.perf_counter()
        step()  # the first step: compile (when compiled) and CUDA/cuBLAS warm-up
        row["first_step_s"] = time.perf_counter() - t
        for _ in range(warmup):
            step()
        mm_rates = [mm() for _ in range(3)]  # the matmul peak right before and after the timed steps
        tp.sync(device)
        t = time.perf_counter()
        for _ in range(steps):
            step()
        tp.sync(device)
        dt = (time.perf_counter() - t) / steps
        mm_rates += [mm() for _ in range(3)]
        row.update(step_s=dt, clips_per_s=s.clips_per_step / dt, matmul_tflops=statistics.median(mm_rates) / 1e12)
        row["mfu"] = row["clips_per_s"] * row["flops_per_clip"] / (row["matmul_tflops"] * 1e12)
        if device.type == "cuda":
            row["peak_mem_gib"] = (torch.cuda.max_memory_allocated(device) - base_mem) / 2 ** 30
    except torch.cuda.OutOfMemoryError as e:
        row["error"] = f"OOM: {str(e).splitlines()[0]}"
    except Exception as e:  # keep the other rows: record what failed
        row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    finally:
        step = None
        free(device)
    return row


def hf_ratio(s: tp.Setting, warmup: int, rounds: int) -> dict:
    reason = tp.hf_available()
    if reason:
        return {"skipped": reason}
    batch = s.clips_per_step
    row = {"batch": batch, "amp": s.amp, "compile": False}
    try:
        ours = tp.FwdBwd(s, "ours", batch, compile=False)
        hf = tp.FwdBwd(s, "hf", batch, compile=False)
        med = tp.alternate({"ours": ours, "hf": hf}, warmup, rounds)
        row.update(ours_clips_per_s=batch / med["ours"], hf_clips_per_s=batch / med["hf"],
                   ours_over_hf=med["hf"] / med["ours"])
    except Exception as e:
        row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    free(torch.device(s.device))
    return row


def print_table(res: dict) -> None:
    print(f"\n{res['env']['device']}, torch {res['env']['torch']}, matmul {res['matmul_tflops']:.1f} TFLOP/s "
          f"({res['env']['matmul_dtype']})")
    print(f"{'setting':32s} {'clips/s':>8s} {'MFU':>6s} {'GFLOP/clip':>10s} {'peak GiB':>9s} {'1st step s':>10s}")
    for r in res["rows"]:
        if "error" in r:
            print(f"{r['setting']:32s} {r['error']}")
            continue
        print(f"{r['setting']:32s} {r['clips_per_s']:8.2f} {100 * r['mfu']:5.1f}% {r['flops_per_clip'] / 1e9:10.1f} "
              f"{r.get('peak_mem_gib', float('nan')):9.2f} {r['first_step_s']:10.1f}")
    for s in res["skipped"]:
        print(f"{s:32s} skipped: over --budget-s")
    h = res.get("hf")
    if h:
        print("HF Timesformer fwd+bwd: " + (h.get("skipped") or h.get("error") or
              f"ours {h['ours_clips_per_s']:.2f} vs HF {h['hf_clips_per_s']:.2f} clips/s, "
              f"ours/HF = {h['ours_over_hf']:.2f} (batch {h['batch']}, {h['amp']}, eager)"))
    for n in res.get("sync_points", []):
        print("host sync in one eager step:", n)
    if "micro_step_sync_check" in res:
        print("set_sync_debug_mode('error') over 2 micro-steps:", res["micro_step_sync_check"])
    for n in res["notes"]:
        print("note:", n)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=".", help="folder (writes gpu_bench.json) or .json file")
    p.add_argument("--device", default="cuda")
    p.add_argument("--tiny", action="store_true", help="tiny model at 32 px: a quick check of the code path")
    p.add_argument("--steps", type=int, default=10, help="timed steps per row")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per row after the first (compile) step")
    p.add_argument("--budget-s", type=float, default=240,
                   help="start no row that would end after this many seconds (a compiled row: + its compile time)")
    p.add_argument("--no-hf", action="store_true", help="skip the HF Timesformer comparison")
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_bench: CUDA is not available (use --device cpu --tiny for a CPU check)")
    if device.type == "cuda":  # as fs.train(): the fp32 teacher runs on TF32 tensor cores
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    out = Path(a.out)
    out = out if out.suffix == ".json" else out / "gpu_bench.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = settings(a.tiny, a.device)
    env = tp.env_info(device, rows[0].amp, False)
    env.pop("compile")
    env["matmul_dtype"] = "bf16" if device.type == "cuda" else "fp32"
    mm = tp.Matmul(device)
    for _ in range(5):
        mm()
    res = {"env": env, "matmul_tflops": mm.median() / 1e12, "rows": [], "skipped": [], "hf": None, "notes": [],
           "torchcodec_imported": False}
    note = cuda_generator_check(device)
    if note:
        res["notes"].append(note)
    flops_cache: dict = {}

    def save():
        res["torchcodec_imported"] = "torchcodec" in sys.modules and sys.modules["torchcodec"] is not None
        res["wall_s"] = time.perf_counter() - t0
        out.write_text(json.dumps(res, indent=1))

    hf_done = False
    compile_s = 0.0  # the longest first compiled step so far: a compiled row is started only if one more fits
    for i, s in enumerate(rows):
        if time.perf_counter() - t0 + (1.2 * compile_s if s.compile else 0) > a.budget_s:
            res["skipped"].append(s.key)
            continue
        row = run_row(s, a.steps, a.warmup, mm, flops_cache)
        if s.compile:
            compile_s = max(compile_s, row.get("first_step_s", 0.0))
        res["rows"].append(row)
        print(json.dumps(row), flush=True)
        save()
        if i == 0:
            try:
                res["sync_points"] = sync_points(s)
                res["micro_step_sync_check"] = micro_step_sync_check(s)
            except Exception as e:
                res["sync_points"] = [f"check failed: {type(e).__name__}: {e}"]
            free(device)
            save()
        if i == 1 and not a.no_hf:  # after the two labeled_batch 1 rows: the HF ratio at 6 clips
            res["hf"] = hf_ratio(rows[0], a.warmup, max(a.steps, 5))
            hf_done = True
            print(json.dumps({"hf": res["hf"]}), flush=True)
            save()
    if not hf_done and not a.no_hf:
        res["hf"] = {"skipped": "over --budget-s"}
    save()
    print_table(res)
    print(f"\nwrote {out} ({res['wall_s']:.0f} s)")
    return res


if __name__ == "__main__":
    main()
