"""Throughput measurement helpers shared by bench/test_throughput.py (pytest-benchmark, CI) and bench/gpu_bench.py.

Everything here builds on fullsvformer's own pieces (build_model, make_optimizer, ssl_losses, ema_update), so the
numbers measure the training step that `python fullsvformer.py` runs, not a re-implementation of it. Nothing here
imports torchcodec: decode speed lives in decode_pipeline(), which imports bench/decode_speed.py lazily.

Figures and their meaning:
    clips/s        labeled + unlabeled clips per second (a train step of labeled_batch B_l and mu*B_l unlabeled clips
                   counts B_l + mu*B_l clips); inference counts the clips forwarded.
    flops/clip     torch.utils.flop_counter.FlopCounterMode on one step (2 FLOPs per multiply-add), divided by clips.
    mfu            achieved FLOP/s / dense-matmul FLOP/s measured in the same rounds (fp32 on CPU, bf16 on CUDA).
                   It depends on the CPU model (how fast it runs one big matmul against the model's small GEMMs), so
                   its baseline is per machine.
    ours_over_hf   HF transformers' TimesformerForVideoClassification time / ours, timed in the same alternating
                   rounds (HF: eager, same config and dtype; the work each test compares is in its docstring). HF
                   shares no code with ours and does the same GEMMs, so this holds across machines.
"""
from __future__ import annotations

import copy
import json
import statistics
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import fullsvformer as fs  # noqa: E402
from bench import cpu_info  # noqa: E402

BASELINE = Path(__file__).resolve().parent / "baseline.json"


# ----------------------------------------------------------------------------------------------------------------------
# Settings
# ----------------------------------------------------------------------------------------------------------------------
@dataclass
class Setting:
    """One benchmark setting. `key` names it in baseline.json."""
    key: str
    arch: str = "tiny"
    img_size: int = 32
    patch_size: int = 8
    num_frames: int = 8
    num_classes: int = 101
    labeled_batch: int = 2
    mu: int = 3
    amp: str = "none"  # none / bf16
    compile: bool = False
    grad_checkpointing: bool = False
    device: str = "cpu"
    model_overrides: dict = field(default_factory=dict)

    @property
    def clips_per_step(self) -> int:
        return self.labeled_batch * (1 + self.mu)

    def config(self) -> fs.Config:
        """The fullsvformer Config this setting trains with: the synthetic preset (tiny) or the defaults (base)."""
        base = fs.PRESETS["synthetic"] if self.arch == "tiny" else {}
        d = {s: dict(base.get(s, {})) for s in fs.SECTIONS}
        # The model is the named preset itself (the demo preset shrinks its dims further; the bench does not).
        d["model"] = dict(arch=self.arch, patch_size=self.patch_size, grad_checkpointing=self.grad_checkpointing,
                          **self.model_overrides)
        d["data"].update(img_size=self.img_size, num_frames=self.num_frames, labeled_batch=self.labeled_batch,
                         mu=self.mu, workers=0)
        d["train"].update(device=self.device, amp=self.amp, compile=self.compile)
        return fs.config_from_dict(d)


# The CI setting: fullsvformer's tiny preset as the CPU demo runs it (synthetic preset: 32 px, patch 8, so 16 patches
# per frame, as a 64 px frame with 16 px patches), with 2 labeled + 6 unlabeled clips per step.
TINY_CPU = Setting("cpu-tiny-32px-fp32-eager")
# The paper's setting: ViT-B 8x224, SVFormer's 1 labeled + 5 unlabeled clips per GPU, bf16, compiled.
BASE_CUDA = Setting("cuda-base-224px-bf16-compile", arch="base", img_size=224, patch_size=16, labeled_batch=1, mu=5,
                    amp="bf16", compile=True, device="cuda")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------------------------------------------------
# Dense matmul: the machine's measured peak
# ----------------------------------------------------------------------------------------------------------------------
class Matmul:
    """A large square matmul (fp32 on CPU, bf16 on CUDA unless given): the machine's measured dense peak.
    Each call times one batch of matmuls and appends its FLOP/s to .rates, so it can run between the rounds of another
    benchmark and share its machine load; .median() is the peak to divide by."""

    def __init__(self, device: torch.device, dtype: torch.dtype | None = None, n: int | None = None):
        self.device = device
        dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
        self.n = n or (8192 if device.type == "cuda" else 1024)
        self.inner = 20 if device.type == "cuda" else 4
        self.a = torch.randn(self.n, self.n, device=device, dtype=dtype)
        self.b = torch.randn(self.n, self.n, device=device, dtype=dtype)
        self.rates: list[float] = []
        for _ in range(2):  # warm-up: BLAS/cuBLAS handles and kernels, not recorded
            self.a @ self.b
        sync(device)

    def __call__(self) -> float:
        sync(self.device)
        t = time.perf_counter()
        for _ in range(self.inner):
            self.a @ self.b
        sync(self.device)
        self.rates.append(2 * self.n ** 3 * self.inner / (time.perf_counter() - t))
        return self.rates[-1]

    def median(self) -> float:
        return statistics.median(self.rates)


def matmul_flops_per_s(device: torch.device, dtype: torch.dtype | None = None, reps: int = 5) -> float:
    """Median FLOP/s of `reps` timed batches of a large matmul (see Matmul)."""
    mm = Matmul(device, dtype)
    for _ in range(reps):
        mm()
    return mm.median()


# ----------------------------------------------------------------------------------------------------------------------
# The Full-SVFormer train step, as fullsvformer.train() runs it
# ----------------------------------------------------------------------------------------------------------------------
def synthetic_batch(s: Setting, device: torch.device, seed: int = 0) -> tuple[dict, dict]:
    """Random uint8 clips shaped like a train_batches() item: (B, T, C, H, W), already on `device` (no decoding, no
    host-to-device copy in the timing). Unlabeled labels are -1 (unknown), as for a real unlabeled pool."""
    g = torch.Generator().manual_seed(seed)
    Bl, Bu = s.labeled_batch, s.labeled_batch * s.mu
    shape = (s.num_frames, 3, s.img_size, s.img_size)

    def clips(b):
        return torch.randint(0, 256, (b, *shape), generator=g, dtype=torch.uint8).to(device)

    lab = {"weak": clips(Bl), "label": torch.randint(0, s.num_classes, (Bl,), generator=g).to(device)}
    unl = {"weak": clips(Bu), "strong": clips(Bu), "label": torch.full((Bu,), -1, dtype=torch.long, device=device)}
    return lab, unl


class SSLStep:
    """One Full-SVFormer optimizer step with one micro-batch: fs.ssl_losses (teacher forward on the weak clips, one
    student forward on labeled + strong + token-mixed clips, all losses), backward, the finite check (train()'s one
    host sync per step), optimizer step, fs.ema_update: fs.train()'s step, without its DDP collective, gradient
    clipping and the ANL k carried from step to step (k is measured on each step's own batch here).

    fs.train() accumulates global_batch / labeled_batch micro-batches per optimizer step (64 at the paper's setting),
    so the optimizer step and EMA update here weigh 64x more than in a real run: this is a slight lower bound.
    """

    def __init__(self, s: Setting, seed: int = 0):
        self.s, self.cfg = s, s.config()
        self.device = torch.device(s.device)
        self.amp = fs.resolve_amp(s.amp, self.device)
        fs.seed_everything(seed)
        self.model = fs.build_model(self.cfg.model, s.num_classes, s.num_frames, s.img_size).to(self.device).train()
        self.teacher = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.optimizer = fs.make_optimizer(self.model, self.cfg.train)
        self.gen = torch.Generator(self.device).manual_seed(seed)
        self.student, self.teacher_fwd = self.model, self.teacher
        if s.compile:  # as fs.train(): compile the student and the teacher forwards. dynamic=False: a run's shapes
            # never change, but a benchmark's next setting would otherwise get dynamic-shape kernels (automatic dynamic)
            self.student = torch.compile(self.model, dynamic=False)
            self.teacher_fwd = torch.compile(self.teacher, dynamic=False)
        self.lab, self.unl = synthetic_batch(s, self.device, seed)

    def losses(self, student=None, teacher=None):
        return fs.ssl_losses(student or self.student, teacher or self.teacher_fwd, self.lab, self.unl, self.cfg,
                             self.device, self.amp, self.gen)

    def __call__(self) -> None:
        loss, _ = self.losses()
        loss.backward()
        if bool(torch.isfinite(loss.detach())):
            self.optimizer.step()
            fs.ema_update(self.teacher, self.model, self.cfg.train.ema_momentum)
        self.optimizer.zero_grad(set_to_none=True)
        sync(self.device)

    def flops(self) -> int:
        """Model FLOPs of one step's forwards and backward (eager modules; the optimizer and EMA are not matmuls).
        Gradient checkpointing's recomputed forward is not counted, so MFU compares settings at equal useful work."""
        from torch.utils.flop_counter import FlopCounterMode
        gc_, self.model.grad_checkpointing = self.model.grad_checkpointing, False
        try:
            with FlopCounterMode(display=False) as fc:
                loss, _ = self.losses(self.model, self.teacher)
                loss.backward()
        finally:
            self.model.grad_checkpointing = gc_
        self.optimizer.zero_grad(set_to_none=True)
        return fc.get_total_flops()


# ----------------------------------------------------------------------------------------------------------------------
# Plain forward(+backward) of our TimeSformer and of HF's, at equal config
# ----------------------------------------------------------------------------------------------------------------------
class FwdBwd:
    """Supervised forward (+ backward) of a video classifier on `batch` clips under the setting's autocast.

    impl: "ours" (fs.build_model) or "hf" (transformers' TimesformerForVideoClassification, input (B, T, C, H, W)).
    Both without stochastic depth or dropout (HF's defaults), so both do the same work.
    """

    def __init__(self, s: Setting, impl: str, batch: int, train: bool = True, compile: bool | None = None,
                 seed: int = 0):
        self.s, self.impl, self.train = s, impl, train
        self.device = torch.device(s.device)
        self.amp = fs.resolve_amp(s.amp, self.device)
        fs.seed_everything(seed)
        cfg = s.config()
        if impl == "ours":
            mcfg = fs.ModelConfig(**{**fs.dataclasses.asdict(cfg.model), "drop_path": 0.0, "head_dropout": 0.0})
            self.model = fs.build_model(mcfg, s.num_classes, s.num_frames, s.img_size)
        else:
            from transformers import TimesformerConfig, TimesformerForVideoClassification
            d = cfg.model.dims()
            hcfg = TimesformerConfig(image_size=s.img_size, patch_size=s.patch_size, num_frames=s.num_frames,
                                     hidden_size=d["embed_dim"], num_hidden_layers=d["depth"],
                                     num_attention_heads=d["num_heads"],
                                     intermediate_size=int(d["embed_dim"] * cfg.model.mlp_ratio),
                                     num_labels=s.num_classes, attention_type="divided_space_time")
            self.model = TimesformerForVideoClassification(hcfg)
            if s.grad_checkpointing:
                self.model.gradient_checkpointing_enable()
        self.model.to(self.device).train(train)
        compile = s.compile if compile is None else compile
        self.fwd = torch.compile(self.model, dynamic=False) if compile else self.model
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(batch, s.num_frames, 3, s.img_size, s.img_size, generator=g).to(self.device)  # (B,T,C,H,W)
        self.x = x if impl == "hf" else x.movedim(1, 2)  # ours: (B, C, T, H, W), a permuted view as normalize_clips
        self.y = torch.randint(0, s.num_classes, (batch,), generator=g).to(self.device)

    def logits(self, model=None):
        model = model or self.fwd
        with fs.autocast_context(self.device, self.amp):
            out = model(self.x)
        return (out.logits if self.impl == "hf" else out).float()

    def __call__(self) -> None:
        if self.train:
            F.cross_entropy(self.logits(), self.y).backward()
            for p in self.model.parameters():
                p.grad = None
        else:
            with torch.no_grad():
                self.logits()
        sync(self.device)

    def flops(self) -> int:
        from torch.utils.flop_counter import FlopCounterMode
        with FlopCounterMode(display=False) as fc, (nullcontext() if self.train else torch.no_grad()):
            out = self.logits(self.model)
            if self.train:
                F.cross_entropy(out, self.y).backward()
        for p in self.model.parameters():
            p.grad = None
        return fc.get_total_flops()


def hf_available() -> str | None:
    """None when transformers' Timesformer imports, else the reason to skip."""
    try:
        from transformers import TimesformerForVideoClassification  # noqa: F401
    except Exception as e:  # ImportError, or a broken install
        return f"transformers' Timesformer is not importable ({type(e).__name__}: {e})"
    return None


def alternate(fns: dict[str, Callable[[], None]], warmup: int, rounds: int) -> dict[str, float]:
    """Median seconds per call of each fn, timed in alternating rounds (a, b, a, b, ...) after `warmup` rounds of
    each, so that a change in machine load hits every fn alike."""
    times = {k: [] for k in fns}
    for r in range(warmup + rounds):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            if r >= warmup:
                times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def env_info(device: torch.device, amp: str, compile: bool) -> dict:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu x{torch.get_num_threads()}"
    info = {"device": name,
            "dtype": {"none": "fp32", "bf16": "bf16", "fp16": "fp16"}[amp], "compile": compile,
            "torch": torch.__version__}
    return info


# ----------------------------------------------------------------------------------------------------------------------
# Decode + augment per data worker (needs torchcodec + FFmpeg)
# ----------------------------------------------------------------------------------------------------------------------
def decode_available() -> str | None:
    try:
        from torchcodec.decoders import VideoDecoder  # noqa: F401
        from torchcodec.encoders import VideoEncoder  # noqa: F401
    except Exception as e:  # ImportError, or FFmpeg's shared libraries missing (RuntimeError)
        return f"torchcodec/FFmpeg unavailable ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else e})"
    return None


def decode_pipeline(tmp: Path, img_size: int = 224) -> Callable[[int], None]:
    """fn(seed): decode one 8x8 clip from a UCF-like AVI (320x240, 25 fps, 7 s, mpeg4; written into tmp by
    bench/decode_speed.make_video) and make its weak and strong views: one unlabeled training sample, as a worker
    of fs.train_batches prepares it."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from decode_speed import make_video
    path = tmp / "v_Synthetic_g01_c01.avi"
    make_video(path)
    aug = fs.ClipAugment(fs.DataConfig(img_size=img_size, num_frames=8, clip_stride=8))

    def fn(seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        frames, _ = fs.decode_frames(path, lambda n: fs.clip_indices(n, 8, 8, fs.random_clip_start(n, 8, 8, g)))
        aug(frames, seed, strong=True)
    return fn


# ----------------------------------------------------------------------------------------------------------------------
# Baseline: figures against a reference timed in the same rounds, with a tolerance
# ----------------------------------------------------------------------------------------------------------------------
# baseline.json holds two kinds of figures per setting key:
#   "any_machine": ours_over_hf, HF's TimeSformer time / ours in the same rounds. HF shares none of our code but does
#       the same GEMMs, so the CPU model moves this ratio little (forward+backward: 0.99, ~1.0 and 1.03 on three x86
#       models) and it is asserted on every machine: a slowdown in our code shows up here wherever CI runs.
#   "machines": mfu, keyed by machine_key(). It divides by one big fp32 matmul, which CPU models run at very different
#       speeds relative to the model's small GEMMs (train step: 0.69, 0.45 and 0.48 on the same three), so it is
#       asserted only on the machine that recorded it; it also catches a slowdown that hits HF alike (torch, threads).
# Relative tolerances; bench/README.md (Throughput) gives the runs behind them.
DEFAULT_TOLERANCE = {"train_step.ours_over_hf": 0.25, "inference.ours_over_hf": 0.25,
                     "fwd_bwd_vs_hf.ours_over_hf": 0.15, "mfu": 0.3}


def machine_key(device: torch.device) -> str:
    """The machine a machine-specific figure belongs to: the GPU's name, or the CPU model and torch's thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    info = cpu_info()
    # VMs often show a generic name ("Intel(R) Xeon(R) Processor"); family and model number tell the chips apart.
    return (f"{info['model name']} (family {info.get('cpu family', '?')} model {info.get('model', '?')}), "
            f"threads {torch.get_num_threads()}")


def load_baseline() -> dict:
    return json.loads(BASELINE.read_text()) if BASELINE.exists() else {"tolerance": dict(DEFAULT_TOLERANCE),
                                                                        "settings": {}}


def update_baseline(key: str, machine: str, any_machine: dict[str, float], machine_specific: dict[str, float]) -> None:
    b = load_baseline()
    b.setdefault("tolerance", dict(DEFAULT_TOLERANCE))
    ref = b.setdefault("settings", {}).setdefault(key, {})
    ref.setdefault("any_machine", {}).update({k: round(v, 4) for k, v in any_machine.items()})
    ref.setdefault("machines", {}).setdefault(machine, {}).update({k: round(v, 4) for k, v in machine_specific.items()})
    BASELINE.write_text(json.dumps(b, indent=1, sort_keys=True) + "\n")


def check_baseline(key: str, machine: str, metrics: dict[str, float], baseline: dict | None = None
                   ) -> tuple[list[str], str | None]:
    """(regressions, note). A regression is a metric ("test.metric") more than its tolerance (relative; by full name,
    else by the part after the last dot) below its baseline: the setting's any_machine figures always, its figures
    for `machine` only when that machine has them. Faster never fails; a metric without a baseline passes. The note
    says that the machine-specific figures were not asserted; None when they were."""
    b = baseline if baseline is not None else load_baseline()
    tols, ref = b.get("tolerance") or DEFAULT_TOLERANCE, b.get("settings", {}).get(key, {})
    machines = ref.get("machines", {})
    note = None if machine in machines else (
        f"{key}: no baseline for this machine ({machine}; known: {sorted(machines) or 'none'}): "
        "machine-specific figures (mfu) reported, not asserted")
    expected = {**ref.get("any_machine", {}), **machines.get(machine, {})}
    bad = []
    for k, v in metrics.items():
        tol = tols.get(k, tols.get(k.rsplit(".", 1)[-1], 0.3))
        if k in expected and v < expected[k] * (1 - tol):
            bad.append(f"{key}: {k} = {v:.4g} is below the baseline {expected[k]:.4g} by more than {tol:.0%}")
    return bad, note
