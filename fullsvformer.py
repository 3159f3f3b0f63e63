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


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices) in one visible place."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def pick_device(name: str = "auto") -> torch.device:
    """'auto' picks CUDA when present, else CPU; anything else is passed to torch.device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def autocast_context(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """Mixed precision by construction: a no-op context when amp is 'none'."""
    if amp == "none":
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    return torch.autocast(device_type=device.type, dtype=dtype)


def setup_logging(run_dir: str | Path | None = None, rank: int = 0) -> None:
    """Log to the console and, on rank 0, to RUN_DIR/log.txt. Other ranks only log warnings."""
    log.handlers.clear()
    log.propagate = False
    log.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(fmt)
    log.addHandler(console)
    if run_dir is not None and rank == 0:
        fh = logging.FileHandler(Path(run_dir) / "log.txt")
        fh.setFormatter(fmt)
        log.addHandler(fh)


# ======================================================================================================================
# Model: divided space-time attention TimeSformer (Bertasius et al., ICML 2021)
# ======================================================================================================================
# Shapes: B clips, C channels, T frames, H x W pixels, N patches per frame, D token width, K classes.


class Attention(nn.Module):
    """Multi-head self-attention over the middle axis of (B, L, D), through F.scaled_dot_product_attention.

    Parameter names (qkv, proj) equal timm's ViT and the official TimeSformer, so their weights load as they are.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape
        qkv = self.qkv(x).view(B, L, 3, self.num_heads, D // self.num_heads).permute(2, 0, 3, 1, 4)  # 3,B,h,L,d
        x = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # B,h,L,d
        return self.proj(x.transpose(1, 2).reshape(B, L, D))


class DividedSpaceTimeBlock(nn.Module):
    """One TimeSformer block: temporal attention, then spatial attention, then MLP (reference.md section 5).

    Tokens are (B, 1 + N*T, D): the cls token, then patches ordered space-major, time-minor (index n*T + t), as in
    the official code, so that a position's T tokens are contiguous and temporal attention needs no copy.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, drop_path: float = 0.0):
        from timm.layers import DropPath, Mlp
        super().__init__()
        self.temporal_norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.temporal_attn = Attention(dim, num_heads)
        self.temporal_fc = nn.Linear(dim, dim)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, T: int) -> torch.Tensor:
        B, L, D = x.shape
        N = (L - 1) // T
        cls, xt = x[:, :1], x[:, 1:]  # (B,1,D), (B,N*T,D)
        # 1. Temporal attention among the T tokens of each spatial position; temporal_fc starts at zero, so an
        #    ImageNet-initialised model begins as a per-frame ViT.
        r = self.temporal_attn(self.temporal_norm1(xt.reshape(B * N, T, D)))  # (B*N, T, D)
        xt = xt + self.temporal_fc(self.drop_path(r).reshape(B, N * T, D))
        # 2. Spatial attention among the N patches of each frame, with the cls token repeated into every frame.
        xs = xt.view(B, N, T, D).transpose(1, 2).reshape(B * T, N, D)  # (B*T, N, D)
        xs = torch.cat([cls.expand(B, T, D).reshape(B * T, 1, D), xs], dim=1)  # (B*T, 1+N, D)
        r = self.drop_path(self.attn(self.norm1(xs)))  # (B*T, 1+N, D)
        cls_r = r[:, 0].view(B, T, D).mean(dim=1, keepdim=True)  # the frames' cls outputs are averaged: (B,1,D)
        r = r[:, 1:].reshape(B, T, N, D).transpose(1, 2).reshape(B, N * T, D)  # back to n*T + t order
        x = torch.cat([cls, xt], dim=1) + torch.cat([cls_r, r], dim=1)
        # 3. MLP.
        return x + self.drop_path(self.mlp(self.norm2(x)))


class TimeSformer(nn.Module):
    """TimeSformer with divided space-time attention. Input (B, C, T, H, W) float, output (B, num_classes) logits.

    The forward runs in stages so that training can change tokens between them:
        patchify (B,C,T,H,W) -> (B,T,N,D)  ->  token_hook (e.g. Tube TokenMix)  ->  embed -> (B,1+N*T,D)
        -> blocks -> head.
    """

    def __init__(self, num_classes: int, num_frames: int = 8, img_size: int = 224, patch_size: int = 16,
                 embed_dim: int = 768, depth: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0,
                 drop_path: float = 0.1, head_dropout: float = 0.0, in_chans: int = 3):
        from timm.layers import PatchEmbed, trunc_normal_
        super().__init__()
        self.num_classes, self.num_frames, self.embed_dim = num_classes, num_frames, embed_dim
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)  # per-frame 16x16 conv
        N = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + N, embed_dim))
        self.time_embed = nn.Parameter(torch.zeros(1, num_frames, embed_dim))  # zero: T=1 is exactly a ViT
        dpr = [drop_path * i / max(depth - 1, 1) for i in range(depth)]  # stochastic depth grows linearly
        self.blocks = nn.ModuleList(DividedSpaceTimeBlock(embed_dim, num_heads, mlp_ratio, p) for p in dpr)
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head_drop = nn.Dropout(head_dropout)
        self.head = nn.Linear(embed_dim, num_classes)
        self.grad_checkpointing = False

        trunc_normal_(self.pos_embed, std=0.02)
        trunc_normal_(self.cls_token, std=0.02)
        self.apply(self._init_weights)
        for blk in self.blocks:  # zero temporal_fc in every block (the official code skips block 0)
            nn.init.zeros_(blk.temporal_fc.weight)
            nn.init.zeros_(blk.temporal_fc.bias)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        from timm.layers import trunc_normal_
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    @classmethod
    def from_preset(cls, arch: str, num_classes: int, **kw) -> "TimeSformer":
        """TimeSformer.from_preset('base', 101, num_frames=8) -- a named size plus any constructor keyword."""
        if arch not in ARCH_PRESETS:
            raise ValueError(f"unknown arch {arch!r}; expected one of {sorted(ARCH_PRESETS)}")
        return cls(num_classes=num_classes, **{**ARCH_PRESETS[arch], **kw})

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T, H, W) video -> (B, T, N, D) patch tokens, before any position or time embedding."""
        B, C, T, H, W = x.shape
        if T != self.num_frames:
            raise ValueError(f"model was built for {self.num_frames} frames, got a clip of {T} "
                             "(set --num-frames, or load the weights into a model of the clip length)")
        x = x.transpose(1, 2).reshape(B * T, C, H, W)  # free when x is a permuted (B,T,C,H,W) tensor
        return self.patch_embed(x).view(B, T, -1, self.embed_dim)  # (B,T,N,D)

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T, N, D) patch tokens -> (B, 1 + N*T, D): add pos_embed per frame, then time_embed per position."""
        B, T, N, D = tokens.shape
        x = tokens + self.pos_embed[:, 1:].unsqueeze(1)  # same spatial position embedding in every frame
        x = x.transpose(1, 2) + self.time_embed.unsqueeze(1)  # (B,N,T,D): same time embedding at every position
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(B, 1, D)
        return torch.cat([cls, x.reshape(B, N * T, D)], dim=1)

    def forward_blocks(self, x: torch.Tensor, T: int) -> torch.Tensor:
        for blk in self.blocks:
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(blk, x, T, use_reentrant=False)
            else:
                x = blk(x, T)
        return x

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        # LayerNorm is per token, so normalising only the cls token equals norm(x)[:, 0].
        return self.head(self.head_drop(self.norm(x[:, 0])))

    def forward(self, x: torch.Tensor, token_hook: Callable[[torch.Tensor], torch.Tensor] | None = None):
        tokens = self.patchify(x)  # (B,T,N,D)
        if token_hook is not None:  # may change the batch size, e.g. append token-mixed clips
            tokens = token_hook(tokens)
        T = tokens.shape[1]
        return self.forward_head(self.forward_blocks(self.embed(tokens), T))


def build_model(mcfg: ModelConfig, num_classes: int, num_frames: int, img_size: int) -> TimeSformer:
    model = TimeSformer(num_classes=num_classes, num_frames=num_frames, img_size=img_size,
                        patch_size=mcfg.patch_size, embed_dim=mcfg.embed_dim, depth=mcfg.depth,
                        num_heads=mcfg.num_heads, mlp_ratio=mcfg.mlp_ratio, drop_path=mcfg.drop_path,
                        head_dropout=mcfg.head_dropout)
    model.set_grad_checkpointing(mcfg.grad_checkpointing)
    return model


# ======================================================================================================================
# Checkpoint loading and conversion
# ======================================================================================================================

# Formats that load_pretrained accepts, detected from the keys (never from the file name alone):
#   vit      timm / ImageNet ViT state dict (.pth/.pt/.bin/.safetensors), raw or under 'model'/'state_dict'/'model_state'
#   official the official TimeSformer .pyth: {'model_state': {'model.<key>': ...}, 'cfg', 'epoch', ...}
#   hf       HF transformers TimesformerForVideoClassification (a directory, model.safetensors or pytorch_model.bin)
#   ours     a fullsvformer checkpoint: {'format': 'fullsvformer', 'model': ..., 'ema': ...}; PATH:teacher picks 'ema'

HF_BLOCK_KEYS = {  # HF name inside timesformer.encoder.layer.<i>. -> our name inside blocks.<i>.
    "layernorm_before": "norm1",
    "attention.attention.qkv": "attn.qkv",
    "attention.output.dense": "attn.proj",
    "temporal_layernorm": "temporal_norm1",
    "temporal_attention.attention.qkv": "temporal_attn.qkv",
    "temporal_attention.output.dense": "temporal_attn.proj",
    "temporal_dense": "temporal_fc",
    "layernorm_after": "norm2",
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
}
HF_TOP_KEYS = {
    "timesformer.embeddings.cls_token": "cls_token",
    "timesformer.embeddings.position_embeddings": "pos_embed",
    "timesformer.embeddings.time_embeddings": "time_embed",
    "timesformer.embeddings.patch_embeddings.projection": "patch_embed.proj",
    "timesformer.layernorm": "norm",
    "classifier": "head",
}


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded as asked: the message names the file and the offending keys."""


@dataclass
class LoadReport:
    source: str
    format: str
    loaded: list[str] = field(default_factory=list)  # copied as they are
    adapted: dict[str, str] = field(default_factory=dict)  # key -> what was done (copied, resized, ...)
    initialized: list[str] = field(default_factory=list)  # not in the checkpoint, kept at the model's init
    ignored: list[str] = field(default_factory=list)  # in the checkpoint, deliberately not used (e.g. the head)

    def __str__(self) -> str:
        lines = [f"loaded {self.source} ({self.format}): {len(self.loaded)} tensors as they are"]
        lines += [f"  adapted {k}: {v}" for k, v in self.adapted.items()]
        if self.initialized:
            lines.append(f"  kept at init (not in the checkpoint): {', '.join(self.initialized)}")
        if self.ignored:
            lines.append(f"  ignored: {', '.join(self.ignored)}")
        return "\n".join(lines)


def _abbrev(keys, n: int = 10) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:n]) + (f" ... ({len(keys)} in all)" if len(keys) > n else "")


def resolve_timm_cache(name: str, cache_dir: str | None = None) -> Path:
    """Find the weights of timm model `name` (e.g. vit_base_patch16_224.orig_in21k_ft_in1k) in the local caches.

    Nothing is downloaded: the error says which file to fetch and where to pass it.
    """
    import timm.models
    try:
        pcfg = timm.models.get_pretrained_cfg(name)
    except Exception:
        pcfg = None
    if pcfg is None:
        raise CheckpointError(f"timm:{name}: timm {timm.__version__} knows no pretrained tag of that name")
    tried = []
    if pcfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache
        for fname in ("model.safetensors", "pytorch_model.bin"):
            hit = try_to_load_from_cache(pcfg.hf_hub_id, fname, cache_dir=cache_dir)
            if isinstance(hit, str) and Path(hit).is_file():
                return Path(hit)
            tried.append(f"huggingface cache: {pcfg.hf_hub_id}/{fname}")
    if pcfg.url:
        hub = Path(torch.hub.get_dir()) / "checkpoints" / Path(pcfg.url).name
        if hub.is_file():
            return hub
        tried.append(f"torch hub cache: {hub}")
    where = (f"https://huggingface.co/{pcfg.hf_hub_id}/resolve/main/model.safetensors" if pcfg.hf_hub_id
             else pcfg.url)
    raise CheckpointError(f"timm:{name} is not in the local caches (looked in: {'; '.join(tried)}). "
                          f"Download {where} on a machine with internet and pass it as --pretrained /path/to/file")


def read_checkpoint(source: str | Path) -> tuple[dict[str, torch.Tensor], str, str]:
    """Read a checkpoint file or directory into a flat {key: tensor} dict. Returns (state, format, path).

    The format is one of vit/official/hf/ours (see above). Wrappers ('model', 'state_dict', 'model_state') and the
    'module.' (DDP) and '_orig_mod.' (torch.compile) prefixes are removed.
    """
    source = str(source)
    which = "student"
    if source.startswith("timm:"):
        path = resolve_timm_cache(source[5:])
    else:
        path = Path(source)
        if not path.exists() and source.rsplit(":", 1)[-1] in ("teacher", "student"):
            path, which = Path(source.rsplit(":", 1)[0]), source.rsplit(":", 1)[1]
    if path.is_dir():  # an HF model directory
        for fname in ("model.safetensors", "pytorch_model.bin"):
            if (path / fname).is_file():
                path = path / fname
                break
        else:
            raise CheckpointError(f"{path} is a directory without model.safetensors or pytorch_model.bin "
                                  "(expected a HF transformers Timesformer directory, or pass a checkpoint file)")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        try:
            obj = load_file(str(path))
        except Exception as e:
            raise CheckpointError(f"{path} is not a readable safetensors file: {e}") from None
    else:
        try:  # mmap avoids a second copy of large checkpoints; legacy (non-zip) files cannot be mapped
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception:
            try:
                obj = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as e:
                raise CheckpointError(f"{path} is not a PyTorch checkpoint that loads with weights_only=True: "
                                      f"{str(e).splitlines()[0][:300]}") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, expected a state dict (a mapping of tensors)")

    fmt = None
    if obj.get("format") == "fullsvformer":
        key = {"student": "model", "teacher": "ema"}[which]
        if not isinstance(obj.get(key), dict):
            raise CheckpointError(f"{path} is a fullsvformer checkpoint without '{key}' weights")
        obj, fmt = obj[key], "ours"
    elif which != "student":
        raise CheckpointError(f"{path}: ':{which}' is only meaningful for fullsvformer checkpoints")
    else:
        for wrapper in ("model_state", "state_dict", "model"):
            if isinstance(obj.get(wrapper), dict):
                obj = obj[wrapper]
                break
    state = {}
    for k, v in obj.items():
        if not isinstance(v, torch.Tensor):
            raise CheckpointError(f"{path}: entry {k!r} is a {type(v).__name__}, not a tensor; "
                                  "expected a model state dict")
        for prefix in ("module.", "_orig_mod."):
            k = k[len(prefix):] if k.startswith(prefix) else k
        state[k] = v
    if not state:
        raise CheckpointError(f"{path} holds no tensors")
    if fmt is None:
        if any(k.startswith(("timesformer.", "classifier.")) for k in state):
            fmt = "hf"
        elif all(k.startswith("model.") for k in state):
            fmt, state = "official", {k[len("model."):]: v for k, v in state.items()}
        elif any(".temporal_attn." in k for k in state):
            fmt = "official"  # official layout without the 'model.' prefix (e.g. re-saved)
        elif any(k.startswith("blocks.") for k in state):
            fmt = "vit"
        else:
            raise CheckpointError(f"{path}: keys look like no supported format (timm ViT, official TimeSformer, "
                                  f"HF Timesformer, fullsvformer); first keys: {_abbrev(state, 5)}")
    if fmt == "hf":
        state = hf_to_timesformer_keys(state, str(path))
    return state, fmt, str(path)


def hf_to_timesformer_keys(state: dict[str, torch.Tensor], where: str = "") -> dict[str, torch.Tensor]:
    """Rename HF transformers Timesformer keys to the official TimeSformer names (reference.md section 5)."""
    import re
    out, unknown = {}, []
    for k, v in state.items():
        name, _, param = k.rpartition(".")
        m = re.fullmatch(r"timesformer\.encoder\.layer\.(\d+)\.(.+)", name)
        if m and m.group(2) in HF_BLOCK_KEYS:
            out[f"blocks.{m.group(1)}.{HF_BLOCK_KEYS[m.group(2)]}.{param}"] = v
        elif name in HF_TOP_KEYS:
            out[f"{HF_TOP_KEYS[name]}.{param}"] = v
        elif k in HF_TOP_KEYS:  # parameters without a '.weight' suffix (cls_token, embeddings)
            out[HF_TOP_KEYS[k]] = v
        else:
            unknown.append(k)
    if unknown:
        raise CheckpointError(f"{where}: HF Timesformer keys with no TimeSformer equivalent: {_abbrev(unknown)}")
    return out


def resize_pos_embed(pos_embed: torch.Tensor, num_patches: int) -> torch.Tensor:
    """(1, 1+N_old, D) -> (1, 1+N_new, D): bicubic on the square 2-D patch grid; the cls position is kept."""
    cls, grid = pos_embed[:, :1], pos_embed[:, 1:]
    old, new = math.isqrt(grid.shape[1]), math.isqrt(num_patches)
    if old * old != grid.shape[1] or new * new != num_patches:
        raise CheckpointError(f"pos_embed: cannot resize a non-square grid ({grid.shape[1]} -> {num_patches})")
    D = grid.shape[-1]
    grid = grid.reshape(1, old, old, D).permute(0, 3, 1, 2).float()  # (1,D,h,w)
    grid = F.interpolate(grid, size=(new, new), mode="bicubic", align_corners=False)
    return torch.cat([cls.float(), grid.permute(0, 2, 3, 1).reshape(1, new * new, D)], dim=1).to(pos_embed.dtype)


def resize_time_embed(time_embed: torch.Tensor, num_frames: int) -> torch.Tensor:
    """(1, T_old, D) -> (1, T_new, D), linear interpolation along time."""
    x = F.interpolate(time_embed.float().transpose(1, 2), size=num_frames, mode="linear", align_corners=False)
    return x.transpose(1, 2).to(time_embed.dtype)


def load_pretrained(model: TimeSformer, source: str | Path) -> LoadReport:
    """Load weights into `model` from any supported checkpoint (see read_checkpoint), adapting where meaningful.

    - image ViT: spatial attn/norm1 are copied into temporal_attn/temporal_norm1; time_embed and temporal_fc keep
      their zero init, so the video model starts as the image model applied per frame;
    - pos_embed is resized (bicubic, 2-D) and time_embed interpolated when the grid or T differs;
    - the head is dropped (kept at init) when the class count differs.
    Anything else (unknown keys, missing keys, shape mismatches) raises CheckpointError listing the keys.
    """
    state, fmt, path = read_checkpoint(source)
    target = model.state_dict()
    report = LoadReport(source=path, format=fmt)
    allowed_missing = set()
    if fmt == "vit":
        for k in list(state):
            if k.startswith("blocks.") and (".attn." in k or ".norm1." in k):
                tk = k.replace(".attn.", ".temporal_attn.").replace(".norm1.", ".temporal_norm1.")
                if tk not in state:
                    state[tk] = state[k]
                    report.adapted[tk] = f"copied from {k}"
        allowed_missing = {k for k in target if k == "time_embed" or ".temporal_fc." in k}
    if "pos_embed" in state and state["pos_embed"].shape != target["pos_embed"].shape \
            and state["pos_embed"].shape[-1] == target["pos_embed"].shape[-1]:
        old = tuple(state["pos_embed"].shape)
        state["pos_embed"] = resize_pos_embed(state["pos_embed"], target["pos_embed"].shape[1] - 1)
        report.adapted["pos_embed"] = f"resized bicubic {old} -> {tuple(target['pos_embed'].shape)}"
    if "time_embed" in state and state["time_embed"].shape != target["time_embed"].shape \
            and state["time_embed"].shape[-1] == target["time_embed"].shape[-1]:
        old = tuple(state["time_embed"].shape)
        state["time_embed"] = resize_time_embed(state["time_embed"], target["time_embed"].shape[1])
        report.adapted["time_embed"] = f"interpolated {old} -> {tuple(target['time_embed'].shape)}"
    head = [k for k in state if k.startswith("head.")]
    if head and any(state[k].shape != target.get(k, state[k]).shape for k in head):
        for k in head:
            report.ignored.append(f"{k} {tuple(state.pop(k).shape)} (class count differs from the model's "
                                  f"{model.num_classes})")
    allowed_missing |= {k for k in target if k.startswith("head.") and not any(h in state for h in head)}

    unknown = [k for k in state if k not in target]
    missing = [k for k in target if k not in state and k not in allowed_missing]
    mismatched = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(target[k].shape)}"
                  for k in state if k in target and state[k].shape != target[k].shape]
    problems = []
    if unknown:
        problems.append(f"unknown keys: {_abbrev(unknown)}")
    if missing:
        problems.append(f"missing keys: {_abbrev(missing)}")
    if mismatched:
        problems.append(f"shape mismatches: {_abbrev(mismatched)}")
    if problems:
        raise CheckpointError(f"{path} ({fmt}) does not fit this TimeSformer "
                              f"(D={model.embed_dim}, depth={len(model.blocks)}, T={model.num_frames}): "
                              + "; ".join(problems))
    for k in target:
        if k in state:
            if k not in report.adapted:
                report.loaded.append(k)
        else:
            report.initialized.append(k)
            state[k] = target[k]
    model.load_state_dict(state, strict=True)  # strict: every key was checked above, nothing is skipped silently
    log.info("%s", report)
    return report


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
