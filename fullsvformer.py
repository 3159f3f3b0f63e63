"""Full-SVFormer in one file: semi-supervised action recognition with a TimeSformer.

Paper: Zuo, Xu, Wang, "Semi-supervised action recognition using logit aligned consistency and adaptive
negative learning", Scientific Reports 15 (2025), doi 10.1038/s41598-025-01922-2. The method builds on
SVFormer (Xing et al., CVPR 2023), logit standardization (Sun et al., CVPR 2024) and FullMatch's adaptive
negative learning (Chen et al., CVPR 2023). Only the paper's abstract is public: every hyper-parameter that it
does not state is an assumption, documented on its config field and listed in the README.

Measured claims live in the README's Results table, each with the bench/ command and machine that produced it.

    python fullsvformer.py                                            # CPU demo: tiny model, synthetic motion clips
    python fullsvformer.py --dataset ucf101 --labeled 0.01 --data-root DIR --pretrained FILE   # the paper's setting
    python fullsvformer.py eval --checkpoint runs/RUN/best.pt --dataset ucf101 --data-root DIR  # evaluate a run
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

log = logging.getLogger("fullsvformer")

# ======================================================================================================================
# Config
# ======================================================================================================================
# Every field is a CLI flag (--field-name) and a YAML key; its help string is its documentation. Defaults live here
# and nowhere else. Field names are unique across the config sections so that flags stay flat.


def F_(default: Any, help: str, choices: tuple | None = None) -> Any:
    """A dataclass field with a help string (and optional choices) for the generated CLI."""
    meta = {"help": help, "choices": choices}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


# --- model ------------------------------------------------------------------------------------------------------------
# Named sizes: tiny runs on a laptop CPU, small is ViT-S/16 (SVFormer-S), base is ViT-B/16 (SVFormer-B, the paper's).
ARCH_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(embed_dim=192, depth=4, num_heads=3),
    "small": dict(embed_dim=384, depth=12, num_heads=6),
    "base": dict(embed_dim=768, depth=12, num_heads=12),
}


@dataclass
class ModelConfig:
    arch: str = F_("tiny", "model size preset; sets embed_dim/depth/num_heads unless given", tuple(ARCH_PRESETS))
    embed_dim: int = F_(0, "token width D (0 = from --arch)")
    depth: int = F_(0, "number of divided space-time blocks (0 = from --arch)")
    num_heads: int = F_(0, "attention heads (0 = from --arch)")
    patch_size: int = F_(16, "square patch size in pixels")
    mlp_ratio: float = F_(4.0, "MLP hidden width / D")
    drop_path: float = F_(0.1, "stochastic depth rate at the last block (SVFormer: 0.1)")
    head_dropout: float = F_(0.5, "dropout before the classifier (SVFormer: 0.5)")
    grad_checkpointing: bool = F_(False, "recompute block activations in backward: less memory, ~30% slower")
    pretrained: str = F_("", "initial weights: a timm ViT / official TimeSformer / HF / fullsvformer checkpoint, "
                             "or timm:<name> from timm's local cache; PATH:teacher picks our EMA weights")

    def __post_init__(self):
        if self.arch not in ARCH_PRESETS:
            raise ValueError(f"arch: unknown preset {self.arch!r}; expected one of {sorted(ARCH_PRESETS)}")
        for k, v in ARCH_PRESETS[self.arch].items():
            if not getattr(self, k):
                setattr(self, k, v)
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim={self.embed_dim} is not divisible by num_heads={self.num_heads}")


# --- data -------------------------------------------------------------------------------------------------------------
@dataclass
class DataConfig:
    dataset: str = F_("synthetic", "synthetic (built in), ucf101, hmdb51, or lists (--train-list/--val-list)",
                      ("synthetic", "ucf101", "hmdb51", "lists"))
    num_frames: int = F_(8, "frames per clip T (SVFormer: 8)")
    img_size: int = F_(224, "square crop size in pixels (SVFormer: 224)")
    # DATA-CONFIG-FIELDS (the data section owns the fields below this line)


# --- training ---------------------------------------------------------------------------------------------------------
@dataclass
class TrainConfig:
    seed: int = F_(0, "seed for the model init, the augmentations and the data order")
    # TRAIN-CONFIG-FIELDS


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


SECTIONS = ("model", "data", "train")


def config_to_dict(cfg: Config) -> dict:
    return {s: dataclasses.asdict(getattr(cfg, s)) for s in SECTIONS}


def config_from_dict(d: dict, base: Config | None = None) -> Config:
    """Build a Config from a {section: {field: value}} dict over `base`; unknown keys are errors naming the key."""
    base = base or Config()
    out = {}
    for s in SECTIONS:
        cls = type(getattr(base, s))
        values = dataclasses.asdict(getattr(base, s))
        sub = (d or {}).get(s) or {}
        if not isinstance(sub, dict):
            raise ValueError(f"config: section {s!r} must be a mapping, got {type(sub).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        for k in sub:
            if k not in known:
                raise ValueError(f"config: unknown key {s}.{k}; known keys: {', '.join(sorted(known))}")
        values.update(sub)
        out[s] = cls(**values)
    for s in d or {}:
        if s not in SECTIONS:
            raise ValueError(f"config: unknown section {s!r}; expected {', '.join(SECTIONS)}")
    return Config(**out)


def save_config(cfg: Config, path: str | Path) -> None:
    import yaml
    Path(path).write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


def load_config(path: str | Path) -> Config:
    import yaml
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    try:
        d = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"config file {path} is not valid YAML: {e}") from None
    return config_from_dict(d or {})


# ======================================================================================================================
# Utilities
# ======================================================================================================================


# ======================================================================================================================
# Model: divided space-time attention TimeSformer (Bertasius et al., ICML 2021)
# ======================================================================================================================
# Shapes: B clips, C channels, T frames, H x W pixels, N patches per frame, D token width, K classes.


# ======================================================================================================================
# Checkpoint loading and conversion
# ======================================================================================================================


# ======================================================================================================================
# Data: dataset layouts, split lists, clip sampling, decoding, weak/strong views, synthetic clips, loaders
# ======================================================================================================================


# ======================================================================================================================
# Semi-supervised objectives (pure functions)
# ======================================================================================================================

# Shapes as in the model section: B samples, K classes, T frames, N patches per frame, D token width.
# Every loss below is computed in float32 whatever the logits' dtype (bf16 under autocast): softmax/log over 101
# classes in bf16 (~3 significant digits) is noisier than the small KL values the student learns from.


def standardize_logits(z: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Logit standardization Z(z) = (z - mean(z)) / (std(z) + eps) over the class axis (last dim).

    Source: Sun et al., "Logit Standardization in Knowledge Distillation", CVPR 2024 (reference §3). The std is the
    unbiased one (N-1), as in the official code. Shape-preserving: (..., K) -> (..., K), same dtype as `z`.
    Z is invariant to adding a per-sample constant and to multiplying by a per-sample positive scale, so teacher and
    student are compared by the *shape* of their logits, not by their magnitude (which the EMA teacher and the
    strong-view student do not share). Needs K >= 2 (the unbiased std of one value is undefined).
    """
    mean = z.mean(dim=-1, keepdim=True)
    std = z.std(dim=-1, keepdim=True)  # correction=1: unbiased, as the official code
    return (z - mean) / (std + eps)


def standardized_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, tau: float = 2.0,
                    mask: torch.Tensor | None = None) -> torch.Tensor:
    """Logit-aligned consistency: tau^2 * KL( softmax(Z(t)/tau) || softmax(Z(s)/tau) ), a float32 scalar.

    Source: Sun et al., CVPR 2024 (reference §3): summed over classes, averaged over the batch, base tau = 2, teacher
    detached. Full-SVFormer (abstract) uses it as the unlabeled consistency loss: teacher = EMA teacher on the weak
    view, student = student on the strong view.

    student_logits, teacher_logits: (B, K), any float dtype; computed in float32 via log_softmax.
    mask: optional (B,) float or bool per-sample weight (e.g. teacher confidence >= delta). Masked-out samples add 0
    and the sum is still divided by the whole batch B, as FixMatch/SVFormer's masked losses do (mean of mask * loss):
    the loss then shrinks with the fraction of confident samples instead of giving a few confident samples the
    weight of a full batch. The paper does not say whether it masks; mask=None is the reference's unmasked loss.
    """
    if student_logits.shape != teacher_logits.shape or student_logits.dim() != 2:
        raise ValueError(f"standardized_kl: expected two (B, K) tensors, got {tuple(student_logits.shape)} "
                         f"and {tuple(teacher_logits.shape)}")
    log_p_s = F.log_softmax(standardize_logits(student_logits.float()) / tau, dim=-1)
    log_p_t = F.log_softmax(standardize_logits(teacher_logits.detach().float()) / tau, dim=-1)
    # KL(p_t || p_s) = sum_c p_t (log p_t - log p_s); log_target keeps it exact where p_t underflows.
    kl = F.kl_div(log_p_s, log_p_t, reduction="none", log_target=True).sum(dim=-1)  # (B,)
    if mask is not None:
        kl = kl * mask.to(device=kl.device, dtype=kl.dtype)
    return kl.sum() / kl.shape[0] * tau ** 2


class ANLResult(tuple):
    """`(loss, k)` from adaptive_negative_loss; also carries `.num_negatives` (for logging) without breaking
    `loss, k = adaptive_negative_loss(...)`."""

    def __new__(cls, loss: torch.Tensor, k: torch.Tensor, num_negatives: torch.Tensor):
        self = super().__new__(cls, (loss, k))
        self.num_negatives = num_negatives
        return self

    @property
    def loss(self) -> torch.Tensor:
        return self[0]

    @property
    def k(self) -> torch.Tensor:
        return self[1]


def adaptive_negative_loss(student_strong_logits: torch.Tensor, teacher_weak_logits: torch.Tensor,
                           drop_threshold: float = 0.95 ** 2, group: Any = None) -> ANLResult:
    """Adaptive Negative Learning (FullMatch, Chen et al., CVPR 2023; reference §4). Returns `(loss, k)`.

    1. y = argmax teacher (whatever its confidence).
    2. k = the smallest k in 2..K with y in the student's top-k for *every* sample (top-k accuracy > 99.99%).
       Vectorised: the rank of y in the student's order is the number of classes with a strictly larger logit,
       so k = clamp(max_b rank_b + 1, 2, K) with no sort and no loop over k. Ties count in y's favour (the best
       case of an arbitrary top-k tie break).
       Under torch.distributed (if initialised) k is all-reduced with MAX. FullMatch all-reduces (averages) the
       top-k accuracy for each k and stops at the first k whose global accuracy exceeds 99.99%, i.e. the first k
       that every sample on every rank satisfies: that is exactly max over ranks of the local k, in one collective
       instead of one per k, and every rank gets the same k. (The two differ only if > 10^4 samples were
       all-reduced and one missed, where 99.99% would tolerate it.)
    3. Negatives of sample b: classes outside the teacher's top-k, minus those whose student probability exceeds
       `drop_threshold` (FullMatch: p_cutoff^2 = 0.95^2).
    4. loss = mean over the B samples of sum over negatives of -log(1 - p_s + 1e-10); float32 scalar. k = K gives no
       negatives and a 0 loss that is still attached to the student's graph.

    student_strong_logits: (B, K), receives the gradient. teacher_weak_logits: (B, K), detached.
    Returns ANLResult (a 2-tuple): loss (0-d float32), k (0-d int64 tensor on the logits' device: no host sync here,
    call int(k) when logging), and `.num_negatives` (0-d int64: negative (sample, class) pairs in the batch, after
    dropping).
    """
    s = student_strong_logits.float()
    t = teacher_weak_logits.detach().float()
    if s.shape != t.shape or s.dim() != 2:
        raise ValueError(f"adaptive_negative_loss: expected two (B, K) tensors, got {tuple(s.shape)} "
                         f"and {tuple(t.shape)}")
    B, K = s.shape
    # One stable descending sort of the teacher gives both y (its first entry: the same as argmax's first maximum)
    # and every class's teacher rank, so the top-k test below is `rank < k` with k a tensor (no .item()).
    order_t = t.argsort(dim=-1, descending=True, stable=True)  # (B, K) class ids, best first
    y = order_t[:, :1]  # (B, 1)
    rank_t = torch.empty_like(order_t).scatter_(-1, order_t, torch.arange(K, device=t.device).expand(B, K))
    rank_y = (s.detach() > s.detach().gather(-1, y)).sum(dim=-1)  # (B,) 0-based rank of y in the student's order
    k = (rank_y.max() + 1).clamp(2, K) if B else torch.tensor(2, device=s.device)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(k, op=torch.distributed.ReduceOp.MAX, group=group)
    p_s = s.softmax(dim=-1)
    negative = (rank_t >= k) & (p_s.detach() <= drop_threshold)  # (B, K)
    nl = -torch.log(1 - p_s + 1e-10)  # (B, K); finite everywhere thanks to the 1e-10, so masking by * is safe
    loss = (nl * negative).sum() / max(B, 1)
    return ANLResult(loss, k, negative.sum())


def sample_lambda(beta: float, generator: torch.Generator | None = None) -> float:
    """lambda ~ Beta(beta, beta) for Tube TokenMix (SVFormer: one lambda per batch), drawn from a torch generator so
    that it follows the run's seed. Beta(a, a) = X / (X + Y) with X, Y ~ Gamma(a), as torch has no seeded Beta."""
    g = torch._standard_gamma(torch.full((2,), float(beta), dtype=torch.float64), generator=generator)
    return float(g[0] / g.sum())


def tube_mask(batch: int, num_patches: int, lam: float | torch.Tensor, generator: torch.Generator | None = None,
              device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Tube TokenMix mask (SVFormer, Xing et al., CVPR 2023; reference §2).

    For each of the `batch` samples, a random set of round((1 - lam) * N) of the N spatial patch positions is True:
    those tokens come from clip b, the rest from clip a, so lam is (nominally) clip a's share. The mask is spatial
    only and tube_token_mix applies it to every frame (a "tube"), so the mixed clip keeps coherent motion.
    lam: a float (one lambda for the batch, as SVFormer) or a (B,) tensor.
    Returns mask (B, N) bool and lam_a (B,) float32 = the exact realised share of clip a's patches,
    1 - round((1 - lam) N) / N, which the targets must use (the official code rounds down and mixes the targets
    with the nominal lambda, so its targets and its inputs disagree by up to 1/N).
    """
    gen_device = generator.device if generator is not None else device
    lam_t = torch.as_tensor(lam, dtype=torch.float64).to(gen_device).expand(batch)
    n_b = torch.round((1 - lam_t) * num_patches).long().clamp(0, num_patches)  # (B,) patches taken from clip b
    # A uniformly random subset of size n_b per sample: the n_b positions with the smallest noise.
    noise = torch.rand(batch, num_patches, generator=generator, device=gen_device)
    rank = noise.argsort(dim=-1).argsort(dim=-1)  # (B, N) rank of each position's noise
    mask = rank < n_b[:, None]
    lam_a = (1 - n_b.double() / num_patches).float()
    if device is not None:
        mask, lam_a = mask.to(device), lam_a.to(device)
    return mask, lam_a


def tube_token_mix(tokens_a: torch.Tensor, tokens_b: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Tube TokenMix of patch tokens (SVFormer): where mask is True take b's token, else a's, in every frame.

    tokens_a, tokens_b: (B, T, N, D) patch tokens right after patch embedding, before the position and time
    embeddings (so the mixed clip gets one consistent set of embeddings). mask: (B, N) bool from tube_mask.
    Returns (B, T, N, D). Typically tokens_b = tokens_a[perm] with a random batch permutation perm.
    """
    if tokens_a.shape != tokens_b.shape or tokens_a.dim() != 4:
        raise ValueError(f"tube_token_mix: expected two (B, T, N, D) tensors, got {tuple(tokens_a.shape)} "
                         f"and {tuple(tokens_b.shape)}")
    B, T, N, D = tokens_a.shape
    if mask.shape != (B, N):
        raise ValueError(f"tube_token_mix: mask must be (B, N) = {(B, N)}, got {tuple(mask.shape)}")
    return torch.where(mask[:, None, :, None], tokens_b, tokens_a)  # mask broadcast over T and D: a tube


def mix_targets(target_a: torch.Tensor, target_b: torch.Tensor, lam_a: torch.Tensor) -> torch.Tensor:
    """lam_a * target_a + (1 - lam_a) * target_b per sample. target_*: (B, K); lam_a: (B,) or a float."""
    lam_a = torch.as_tensor(lam_a, dtype=target_a.dtype, device=target_a.device)
    lam_a = lam_a.reshape(-1, 1) if lam_a.dim() else lam_a
    return lam_a * target_a + (1 - lam_a) * target_b


def tokenmix_targets(teacher_probs: torch.Tensor, perm: torch.Tensor, lam_a: torch.Tensor,
                     threshold: float) -> torch.Tensor:
    """Tube TokenMix target (SVFormer; reference §2): lam_a * y_a + (1 - lam_a) * y_b, with clip b of sample i being
    clip perm[i] of the same batch. y is one-hot(argmax) where the teacher's confidence >= threshold (delta) and the
    teacher's soft probabilities otherwise. teacher_probs: (B, K) softmax of the EMA teacher on the unmixed clips;
    perm: (B,) long; lam_a: (B,) from tube_mask. Returns (B, K) float32, detached.
    """
    p = teacher_probs.detach().float()
    conf, idx = p.max(dim=-1)
    one_hot = F.one_hot(idx, p.shape[-1]).to(p.dtype)
    y = torch.where((conf >= threshold)[:, None], one_hot, p)  # (B, K)
    return mix_targets(y, y[perm], lam_a)


def tokenmix_weight(teacher_probs: torch.Tensor, perm: torch.Tensor, lam_a: torch.Tensor,
                    threshold: float) -> torch.Tensor:
    """Per-sample weight of the mix loss in the official SVFormer code: lam_a * mask_a + (1 - lam_a) * mask_b with
    mask = (teacher confidence >= threshold). The paper does not state it; pass it to tokenmix_loss(weight=...) to
    follow the official code, or leave the loss unweighted. Returns (B,) float32."""
    m = (teacher_probs.detach().float().max(dim=-1).values >= threshold).float()
    lam_a = torch.as_tensor(lam_a, dtype=m.dtype, device=m.device)
    return lam_a * m + (1 - lam_a) * m[perm]


def tokenmix_loss(student_logits: torch.Tensor, target: torch.Tensor,
                  weight: torch.Tensor | None = None) -> torch.Tensor:
    """L_mix of SVFormer: MSE between the student's *raw logits* on the mixed clip and the mixed target, as the
    official code does (reference §2), averaged over classes and then over the batch (the official code's
    mean(dim=1) then mean()). weight: optional (B,) per-sample weight (see tokenmix_weight), still averaged over B.
    student_logits: (B, K); target: (B, K) (detached). Returns a float32 scalar.
    """
    per_sample = (student_logits.float() - target.detach().float()).pow(2).mean(dim=-1)  # (B,)
    if weight is not None:
        per_sample = per_sample * weight.to(device=per_sample.device, dtype=per_sample.dtype)
    return per_sample.mean()


def _unwrap(module: nn.Module) -> nn.Module:
    """The plain module inside DDP (`.module`) and torch.compile (`._orig_mod`) wrappers, however nested."""
    while True:
        if hasattr(module, "_orig_mod") and isinstance(module._orig_mod, nn.Module):
            module = module._orig_mod
        elif isinstance(module, nn.parallel.DistributedDataParallel) or (
                type(module).__name__ in ("DistributedDataParallel", "DataParallel") and hasattr(module, "module")):
            module = module.module
        else:
            return module


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """EMA teacher (SVFormer's EMA-Teacher; reference §2): teacher <- m * teacher + (1 - m) * student, in place.

    Parameters are matched by name (wrappers unwrapped: DDP `.module`, torch.compile `._orig_mod`) and updated with
    one fused foreach lerp; the student may hold bf16 or fp32 parameters, the teacher keeps its own dtype (fp32:
    with m = 0.99 an update is 1% of the weight, below bf16's resolution). Buffers are copied, not averaged.
    Raises ValueError naming the parameters or buffers whose names or shapes differ.
    """
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"ema_update: momentum must be in [0, 1], got {momentum}")
    teacher, student = _unwrap(teacher), _unwrap(student)
    for kind, t_items, s_items in (("parameter", teacher.named_parameters(), student.named_parameters()),
                                   ("buffer", teacher.named_buffers(), student.named_buffers())):
        t_dict, s_dict = dict(t_items), dict(s_items)
        problems = [f"{n} only in teacher" for n in t_dict.keys() - s_dict.keys()]
        problems += [f"{n} only in student" for n in s_dict.keys() - t_dict.keys()]
        problems += [f"{n}: teacher {tuple(t_dict[n].shape)} vs student {tuple(s_dict[n].shape)}"
                     for n in t_dict.keys() & s_dict.keys() if t_dict[n].shape != s_dict[n].shape]
        if problems:
            raise ValueError(f"ema_update: teacher and student {kind}s differ: " + "; ".join(sorted(problems)[:10]))
        names = list(t_dict)
        if kind == "parameter":
            t_list = [t_dict[n] for n in names]
            # .to is a no-op when dtype/device already match; foreach lerp needs equal dtypes.
            s_list = [s_dict[n].detach().to(dtype=t.dtype, device=t.device) for n, t in zip(names, t_list)]
            if t_list:
                # lerp(t, s, w) = t + w (s - t) = m t + (1 - m) s with w = 1 - m; exact at m = 0 and m = 1.
                torch._foreach_lerp_(t_list, s_list, 1.0 - momentum)
        else:
            for n in names:
                t_dict[n].copy_(s_dict[n])


# ======================================================================================================================
# Evaluation
# ======================================================================================================================


# ======================================================================================================================
# Training
# ======================================================================================================================


# ======================================================================================================================
# Checkpointing
# ======================================================================================================================


# ======================================================================================================================
# CLI
# ======================================================================================================================


def main(argv: list[str] | None = None) -> dict:
    raise SystemExit("not yet wired")


if __name__ == "__main__":
    main()
