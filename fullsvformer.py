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
