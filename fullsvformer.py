"""Full-SVFormer in one file: semi-supervised action recognition with a TimeSformer.

Paper: Zuo, Xu, Wang, "Semi-supervised action recognition using logit aligned consistency and adaptive negative
learning", Scientific Reports 15 (2025), doi 10.1038/s41598-025-01922-2. The method builds on SVFormer (Xing et al.,
CVPR 2023), logit standardization (Sun et al., CVPR 2024) and FullMatch's adaptive negative learning (Chen et al.,
CVPR 2023). Only the paper's abstract is public: every hyper-parameter that it does not state is an assumption,
documented on its config field and listed in the README.

Measured numbers, with their hardware, versions and the bench/ commands that produce them: README "Results".
The method itself: `ssl_losses` (one micro-batch of the objective), built from the pure functions of the objectives
section (`standardized_kl`, `adaptive_negative_loss`, `tube_mask`/`tube_token_mix`/`tokenmix_targets`, `ema_update`),
and `train`/`optimizer_step` (the loop). Everything else feeds them: config, model, checkpoints, data, evaluation.

    python fullsvformer.py                                  # CPU demo: the synthetic UCF-101 proxy at 1 label per class
    python fullsvformer.py --dataset ucf101 --labeled 0.01 --data-root DIR --pretrained FILE   # the paper's setting
    python fullsvformer.py eval --checkpoint runs/RUN/last.pt --data-root DIR   # evaluate a run's final model
    python tools/predict.py --checkpoint runs/RUN/last.pt VIDEO ...            # classify video files
"""
from __future__ import annotations

import argparse
import atexit
import contextlib
import copy
import dataclasses
import difflib
import errno
import functools
import hashlib
import json
import logging
import math
import multiprocessing
import os
import platform
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable, NamedTuple

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint
import torch.utils.data
import yaml
from safetensors.torch import load_file as load_safetensors, save as safetensors_bytes
from tqdm import tqdm

# timm (1.8 s to import), torchvision (1.3 s) and torchcodec (it needs FFmpeg's libraries, which a machine that only
# evaluates may lack) are imported where first used: `import fullsvformer` needs none of them.

log = logging.getLogger("fullsvformer")


class UserError(ValueError):
    """A mistake the user can fix (flag, config value, file, dataset layout): the CLI prints it in one line, exit 2."""


class Stopped(Exception):
    """Training stopped by a signal (stop_on_signals), after writing last.pt: the CLI exits with REQUEUE_EXIT."""


# The exit status of a run stopped by SIGTERM, SIGINT or SIGUSR1 once last.pt is written: EX_TEMPFAIL of sysexits.h,
# "a temporary failure; the user is invited to retry", i.e. requeue it with --resume RUN_DIR (README "On a cluster").
REQUEUE_EXIT = 75


# ==== Config ==========================================================================================================
# Every field is a CLI flag (--field-name) and a YAML key, documented by its help string; defaults live here only.
# Field names are unique across the sections so that flags stay flat.

def F_(default: Any, help: str, choices: tuple | None = None, check: str = "") -> Any:
    """A dataclass field with its help string, and optionally its choices or its bound (a BOUNDS key)."""
    meta = {"help": help, "choices": choices, "check": check}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


BOUNDS = {"count": (lambda v: v >= 1, ">= 1"), "nonneg": (lambda v: v >= 0, ">= 0"), "pos": (lambda v: v > 0, "> 0"),
          "prob": (lambda v: 0 <= v <= 1, "in [0, 1]"), "frac": (lambda v: 0 < v <= 1, "in (0, 1]")}


def check_bounds(section: str, cfg: Any) -> None:
    """A UserError naming section.key for the first field whose value is outside its bound."""
    for f in dataclasses.fields(cfg):
        ok, what = BOUNDS.get(f.metadata.get("check"), (None, ""))
        if ok and not ok(getattr(cfg, f.name)):
            raise UserError(f"{section}.{f.name}={getattr(cfg, f.name)!r} must be {what}")


# --- model ------------------------------------------------------------------------------------------------------------
# Named sizes: tiny runs on a laptop CPU, small is ViT-S/16 (SVFormer-S), base is ViT-B/16 (SVFormer-B, the paper's).
ARCH_PRESETS: dict[str, dict[str, Any]] = {"tiny": dict(embed_dim=192, depth=4, num_heads=3),
                                           "small": dict(embed_dim=384, depth=12, num_heads=6),
                                           "base": dict(embed_dim=768, depth=12, num_heads=12)}


@dataclass
class ModelConfig:
    arch: str = F_("base", "model size preset; sets embed_dim/depth/num_heads unless given", tuple(ARCH_PRESETS))
    embed_dim: int = F_(0, "token width D (0 = from --arch)")
    depth: int = F_(0, "number of divided space-time blocks (0 = from --arch)")
    num_heads: int = F_(0, "attention heads (0 = from --arch)")
    patch_size: int = F_(16, "square patch size in pixels", check="count")
    mlp_ratio: float = F_(4.0, "MLP hidden width / D", check="pos")
    drop_path: float = F_(0.1, "stochastic depth rate at the last block (SVFormer: 0.1)", check="prob")
    head_dropout: float = F_(0.5, "dropout before the classifier (SVFormer: 0.5)", check="prob")
    grad_checkpointing: bool = F_(False, "recompute block activations in backward: less memory, ~30% slower")
    pretrained: str = F_("", "initial weights: a timm ViT / official TimeSformer / HF / fullsvformer checkpoint "
                             "(PATH:teacher: its EMA), timm:<name>, or synthetic (the built-in task's stage-0 model)")

    def __post_init__(self):
        check_bounds("model", self)
        if self.arch not in ARCH_PRESETS:
            raise UserError(f"arch: unknown preset {self.arch!r}; expected one of {sorted(ARCH_PRESETS)}")
        d = self.dims()
        if d["embed_dim"] % d["num_heads"]:
            raise UserError(f"embed_dim={d['embed_dim']} is not divisible by num_heads={d['num_heads']}")

    def dims(self) -> dict[str, int]:
        """embed_dim/depth/num_heads: the explicit values, else the --arch preset's."""
        return {k: getattr(self, k) or v for k, v in ARCH_PRESETS[self.arch].items()}


# --- data -------------------------------------------------------------------------------------------------------------
@dataclass
class DataConfig:
    dataset: str = F_("synthetic", "synthetic (built in), ucf101, hmdb51, or lists (--train-list/--val-list)",
                      ("synthetic", "ucf101", "hmdb51", "lists"))
    num_frames: int = F_(8, "frames per clip T (SVFormer: 8)", check="count")
    img_size: int = F_(224, "square crop size in pixels (SVFormer: 224)", check="count")
    data_root: str = F_("", "dataset folder: ucf101/hmdb51 layout (see the data section) or the root of list paths")
    split: int = F_(1, "official train/test split (UCF-101, HMDB-51)", (1, 2, 3))
    labeled: float = F_(0.01, "labeled fraction of the train list, class-balanced; UCF-101: x% = x clips per class "
                              "(SVFormer); committed splits/ files are used where they exist", check="frac")
    split_seed: int = F_(0, "seed of the labeled/unlabeled draw (committed: 0, 1, 2)")
    train_list: str = F_("", "--dataset lists: labeled '<path> <label>' list (SVFormer's train.csv)")
    unlabeled_list: str = F_("", "--dataset lists: unlabeled list (labels used only for pseudo-label diagnostics)")
    val_list: str = F_("", "--dataset lists: test list")
    list_prefix: str = F_("", "--dataset lists: rewrite list paths OLD=NEW; empty: absolute paths that exist are "
                              "kept, others are DATA_ROOT/<class>/<video>")
    clip_stride: int = F_(8, "frames between sampled frames (SVFormer: 8)", check="count")
    test_clips: int = F_(5, "test: clips uniformly spaced over each video (SVFormer: 5)", check="count")
    test_crops: int = F_(3, "test: spatial crops per clip along the long side (SVFormer: 3)", (1, 3))
    scale_min: float = F_(256 / 224, "weak view: shortest short side after resize, in units of img_size (256/224)")
    scale_max: float = F_(320 / 224, "weak view: longest short side after resize, in units of img_size (320/224)")
    hflip: float = F_(0.5, "weak view: horizontal flip probability", check="prob")
    randaug_n: int = F_(0, "strong view: RandAugment ops per clip, the same for every frame (0 = off: SVFormer's "
                           "code never runs its RandAugment branch)", check="nonneg")
    randaug_m: int = F_(9, "strong view: RandAugment magnitude (0-30)")
    temporal_warp_p: float = F_(2 / 3, "strong view: temporal warping probability (SVFormer: 2/3)", check="prob")
    temporal_warp_keys: str = F_("2,4", "strong view: key-frame counts temporal warping picks from, comma-separated")
    temporal_warp_on: str = F_("partners", "strong view: warp only Tube TokenMix's partners (SVFormer's code) or all "
                                           "strong clips (the consistency losses too)", ("partners", "all"))
    strong_channel_dropout: float = F_(0.2, "strong view: channel dropout p (SVFormer's dropout2d)", check="prob")
    strong_crop: str = F_("shared", "strong view: the weak view's scale, crop and flip (shared) or its own draw of them "
                                    "(own; SVFormer's code decodes and augments each view separately)",
                          ("shared", "own"))
    mean: list = F_([0.45, 0.45, 0.45], "per-channel mean in [0, 1] for normalize_clips (SVFormer: 0.45)")
    std: list = F_([0.225, 0.225, 0.225], "per-channel std in [0, 1] for normalize_clips (SVFormer: 0.225)")
    labeled_batch: int = F_(1, "labeled clips per micro-batch per process (SVFormer: 1 per GPU); lowered, and logged, "
                               "when it does not divide global_batch / processes", check="count")
    mu: int = F_(5, "unlabeled clips per labeled clip (SVFormer: 5); 0: labeled only (epoch = labeled pass)",
                 check="nonneg")
    eval_batch: int = F_(4, "test videos per eval batch (each holds test_clips × test_crops views)", check="count")
    workers: int = F_(-1, "loader worker processes per process (0 = decode in the training process; -1 = auto: this "
                          "process's share of the CPUs minus one, 1 to 8)")
    prefetch: int = F_(2, "batches each worker prepares ahead", check="count")
    pin_memory: bool = F_(True, "page-locked batches for faster host-to-GPU copies (only when CUDA is available)")
    max_bad_fraction: float = F_(0.01, "abort once this fraction of training videos failed to decode", check="prob")
    # The built-in synthetic dataset; the generator's own knobs live in its task preset (SYNTH_TASKS).
    synth_task: str = F_("ucf-proxy", "synthetic: the task (SYNTH_TASKS): ucf-proxy (32 classes, like UCF-101) or "
                                      "ucf-proxy-pretrain (its image pretraining)", ("ucf-proxy", "ucf-proxy-pretrain"))
    synth_classes: int = F_(0, "synthetic: use the task's first N classes (0 = all)", check="nonneg")
    synth_clips_per_class: int = F_(100, "synthetic: train clips per class (labeled + unlabeled)", check="count")
    synth_test_per_class: int = F_(20, "synthetic: test clips per class", check="count")
    synth_size: int = F_(40, "synthetic: frame height and width in pixels before augmentation", check="count")
    synth_length: int = F_(32, "synthetic: frames per video", check="count")
    synth_seed: int = F_(0, "synthetic: content seed (independent of the training seed)")

    def __post_init__(self):
        check_bounds("data", self)
        if self.workers < -1:
            raise UserError(f"data.workers={self.workers} must be >= 0, or -1 for auto")
        if not 0 < self.scale_min <= self.scale_max:
            raise UserError(f"scale_min/scale_max: need 0 < scale_min <= scale_max, got {self.scale_min}, "
                             f"{self.scale_max}")
        if not 0 <= self.randaug_m <= 30:
            raise UserError(f"randaug_m: {self.randaug_m} is outside 0..30")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise UserError(f"mean/std: need 3 values each and std > 0, got {self.mean}, {self.std}")
        try:
            self.warp_keys = tuple(int(k) for k in str(self.temporal_warp_keys).split(","))
        except ValueError:
            raise UserError(f"temporal_warp_keys: expected comma-separated integers, got {self.temporal_warp_keys!r}")
        if not self.warp_keys or min(self.warp_keys) < 1:
            raise UserError(f"temporal_warp_keys: need key counts >= 1, got {self.temporal_warp_keys!r}")
        if self.list_prefix and "=" not in self.list_prefix:
            raise UserError(f"list_prefix: expected OLD=NEW (e.g. /mnt/blob/hmdb51/videos=/data/h), got "
                            f"{self.list_prefix!r}")


# --- training ---------------------------------------------------------------------------------------------------------
@dataclass
class TrainConfig:
    seed: int = F_(0, "seed for the model init, the augmentations and the data order")
    epochs: int = F_(30, "epochs; one epoch = one pass over the unlabeled pool (SVFormer: 30); the presets' value is "
                         "for 1 labeled clip per class, scaled by label_rule above that", check="count")
    # Optimiser (SVFormer: SGD lr 0.005, momentum 0.9, Nesterov, wd 1e-4, batch 64 via accumulation).
    optimizer: str = F_("sgd", "sgd (Nesterov momentum, SVFormer) or adamw", ("sgd", "adamw"))
    lr: float = F_(0.005, "peak learning rate for one optimizer step over global_batch labeled clips (and mu x as many "
                          "unlabeled); not rescaled when the batch changes; scaled by label_rule above 1 labeled clip "
                          "per class", check="pos")
    global_batch: int = F_(64, "labeled clips per optimizer step over all processes, accumulated over global_batch / "
                               "(labeled_batch x processes) micro-batches (SVFormer: 64)", check="count")
    momentum: float = F_(0.9, "SGD momentum (Nesterov) or AdamW beta1", check="prob")
    weight_decay: float = F_(1e-4, "weight decay (SVFormer: 1e-4 with SGD; try 0.05 with AdamW)", check="nonneg")
    schedule: str = F_("step", "lr decay after warmup: step (x lr_gamma at each lr_milestones epoch) or cosine",
                       ("step", "cosine"))
    lr_milestones: str = F_("25,28", "step schedule: comma-separated epochs at which the lr is multiplied by lr_gamma")
    lr_gamma: float = F_(0.1, "step schedule: lr factor at each milestone (SVFormer: 0.1)", check="prob")
    warmup_epochs: float = F_(0.0, "linear warmup from 0, in epochs (may be fractional)", check="nonneg")
    grad_clip: float = F_(0.0, "clip the global gradient norm to this value (0 = off)", check="nonneg")
    # Semi-supervised objective: loss = CE + gamma_kl * KL + gamma_mix * L_mix + gamma_nl * L_NL.
    ema_momentum: float = F_(0.9227, "EMA teacher momentum per optimizer step (SVFormer's code: 0.99 at each of its 8 "
                                     "accumulation iterations = 0.99^8)", check="prob")
    gamma_kl: float = F_(2.0, "weight of the standardized KL (assumption: SVFormer's gamma1 = 2)", check="nonneg")
    kl_tau: float = F_(2.0, "temperature of the standardized KL (logit standardization's base tau = 2)", check="pos")
    kl_standardize: bool = F_(True, "standardize logits before the KL (the paper's idea); off = plain KL ablation")
    kl_threshold: float = F_(0.0, "mask the KL below this teacher confidence (0 = off; not stated)", check="nonneg")
    kl_weight: str = F_("none", "per-clip weight of the KL: none, or confidence (the teacher's top probability, which "
                                "standardization discards; not stated)", ("none", "confidence"))
    gamma_ce_strong: float = F_(0.0, "weight of SVFormer's own consistency: CE(student strong, teacher argmax) masked "
                                     "at confidence >= mix_threshold (its gamma1 L_un; 0 = off: Full-SVFormer replaces "
                                     "it with the KL)", check="nonneg")
    gamma_mix: float = F_(2.0, "weight of the Tube TokenMix loss (assumption: SVFormer's gamma2 = 2)", check="nonneg")
    mix_beta: float = F_(10.0, "Tube TokenMix lambda ~ Beta(mix_beta, mix_beta) (assumed: SVFormer fork)", check="pos")
    mix_threshold: float = F_(0.3, "Tube TokenMix: teacher confidence for a one-hot target, else soft (delta = 0.3 for "
                                   "101 classes; raise it for few classes, e.g. 0.5 for 4)", check="prob")
    mix_weighted: bool = F_(True, "weight L_mix per sample by lam*mask_a + (1-lam)*mask_b (teacher confidence >= "
                                  "delta) as SVFormer's code; off: every sample, soft targets too (its paper's formula)")
    gamma_nl: float = F_(1.0, "weight of adaptive negative learning (FullMatch: 1); label_rule lowers it above 10 "
                                "labeled clips per class, to 0 at 40", check="nonneg")
    nl_drop_threshold: float = F_(0.95 ** 2, "ANL: drop negatives of student probability above this", check="prob")
    nl_start_epochs: float = F_(0.0, "ANL: off for this many epochs, while the teacher is still poor (FullMatch's "
                                     "loss_warm: 5x1024 of its 2^20 iterations; 0 = from the start)", check="nonneg")
    supervised_warmup_epochs: float = F_(0.0, "labeled-only epochs first, then the EMA teacher restarts from the "
                                              "student (SVFormer's WARM_EPOCH)", check="nonneg")
    ssl_rampup_epochs: float = F_(0.0, "ramp the unlabeled-loss weights linearly from 0 over this many epochs (0 = "
                                       "off, as the paper; Mean Teacher-style, our addition)", check="nonneg")
    oracle_pseudo_labels: bool = F_(False, "diagnostic: the teacher's predictions on unlabeled clips are their true "
                                           "labels: an upper bound on what the unlabeled losses can add")
    # Speed and run control.
    device: str = F_("auto", "auto (CUDA when present), cpu, cuda, cuda:1, ...")
    amp: str = F_("auto", "autocast dtype: auto = bf16 on CUDA and none on CPU", ("auto", "bf16", "fp16", "none"))
    compile: str = F_("auto", "torch.compile the student and teacher forwards: auto = on CUDA only (on a CPU ~1 min of "
                              "compilation for no gain), on (--compile), off (--no-compile)", ("auto", "on", "off"))
    out: str = F_("", "run directory (default runs/<dataset>-<labeled>-<time>-<pid>)")
    resume: str = F_("", "resume RUN_DIR from its last.pt with its own config.yaml; other flags override it")
    log_every: int = F_(10, "optimizer steps between metrics.jsonl lines", check="count")
    tensorboard: bool = F_(False, "also write metrics.jsonl's numbers to RUN_DIR/tensorboard (tags train/<key>, "
                                  "eval/<key>); needs the optional tensorboard package (pip install tensorboard)")
    # On 8 GPUs an epoch of UCF-101 1% takes ~7 s, a 1-view eval ~2-4 s and a 1.5 GB checkpoint ~2 s (bench/feed.py):
    # every 5 epochs (as SVFormer's code) keeps them near 10% of the run.
    eval_every: int = F_(5, "epochs between cheap 1-view evals (0 = only the final multi-view eval)", check="nonneg")
    ckpt_epochs: int = F_(5, "epochs between last.pt writes; the last epoch always writes one", check="count")
    ckpt_every: int = F_(0, "also write last.pt every N optimizer steps (0 = off)", check="nonneg")
    max_nonfinite: int = F_(20, "abort after this many non-finite losses in a row (each skips its step)", check="count")

    def __post_init__(self):
        check_bounds("train", self)
        try:
            [float(m) for m in self.lr_milestones.split(",") if m.strip()]
        except ValueError:
            raise UserError(f"train.lr_milestones={self.lr_milestones!r}: expected comma-separated epochs") from None


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


SECTIONS = ("model", "data", "train")


def config_to_dict(cfg: Config) -> dict:
    return {s: dataclasses.asdict(getattr(cfg, s)) for s in SECTIONS}


def config_from_dict(d: dict, base: Config | None = None) -> Config:
    """A Config from a {section: {field: value}} dict over `base`; unknown keys are errors naming the key."""
    base = base or Config()
    out = {}
    for s in SECTIONS:
        cls = type(getattr(base, s))
        values = dataclasses.asdict(getattr(base, s))
        sub = (d or {}).get(s) or {}
        if not isinstance(sub, dict):
            raise UserError(f"config: section {s!r} must be a mapping, got {type(sub).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        for k in sub:
            if k not in known:
                raise UserError(f"config: unknown key {s}.{k}; known keys: {', '.join(sorted(known))}")
        values.update(sub)
        defaults = cls()
        for f in dataclasses.fields(cls):
            values[f.name] = _checked_value(f"{s}.{f.name}", values[f.name], getattr(defaults, f.name),
                                            f.metadata.get("choices"))
        out[s] = cls(**values)
    for s in d or {}:  # 'provenance' (config.yaml of a run) records who wrote the file: not a setting, skipped
        if s not in SECTIONS and s != "provenance":
            raise UserError(f"config: unknown section {s!r}; expected {', '.join(SECTIONS)}")
    return Config(**out)


def _checked_value(key: str, v: Any, default: Any, choices: tuple | None) -> Any:
    """v converted to the type of the field's default (YAML reads '1e-3' as a string), or a UserError naming key."""
    kind = type(default)
    if kind is str and isinstance(v, bool) and choices and "on" in choices:  # YAML reads on/off/true as booleans
        v = "on" if v else "off"
    if kind is float and isinstance(v, (int, str)) and not isinstance(v, bool):
        try:
            v = float(v)
        except ValueError:
            raise UserError(f"config: {key}={v!r} is not a number") from None
    ok = isinstance(v, kind) and not (kind is int and isinstance(v, bool))
    if kind is list:
        ok = ok and len(v) == len(default) and all(isinstance(x, (int, float)) for x in v)
    if not ok:
        raise UserError(f"config: {key}={v!r}: expected {kind.__name__}" + (f" of {len(default)} numbers"
                                                                         if kind is list else ""))
    if choices and v not in choices:
        raise UserError(f"config: {key}={v!r}; expected one of {', '.join(map(str, choices))}")
    return v


def read_config_file(path: str | Path) -> dict:
    """The {section: {field: value}} dict of a YAML config file; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    try:
        d = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise UserError(f"config file {path} is not valid YAML: {e}") from None
    if not isinstance(d, dict):
        raise UserError(f"config file {path}: expected a mapping of sections, got {type(d).__name__}")
    return d


def load_config(path: str | Path) -> Config:
    return config_from_dict(read_config_file(path))


# ==== Utilities =======================================================================================================

def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices) in one visible place."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# Random streams: every draw of a run comes from one, seeded by stream_seed(name, *keys), so no stream shifts another:
# neither the worker count nor a mid-epoch resume changes a draw, and the data order and every clip's augmentation are
# the same for any number of processes (device and dropout are per rank).
#   stream           keys                                      draws
#   (torch global)   train.seed                                the model's init, the same on every rank
#   labeled_order    seed, epoch, pass                         the order of one pass over the labeled set
#   unlabeled_order  seed, epoch                               the order of the unlabeled pool in an epoch
#   sample           seed, epoch, labeled/unlabeled, position  one clip's seed; its weak view draws from it directly:
#     clip_start     sample seed                                 the clip's first frame
#     strong         sample seed                                 temporal warping (RandAugment: the weak view's stream)
#     replacement    sample seed, attempt                        the clip that stands in for an unreadable video
#   device           seed, rank                                Tube TokenMix (lambda, mask, partners), channel dropout
#   dropout          seed, rank, step                          dropout and drop-path (torch's global RNG; a resume
#                                                              restores its state from the checkpoint)
#   loader           seed                                      the DataLoader's own base seed (unused by the draws)
#   synth_clip       synth_seed, clip                          a synthetic clip's content
#   synth_noise      synth_seed, clip, frame                   its per-frame noise
#   strong_crop      sample seed                               the strong view's own crop (--strong-crop own)
# The labeled/unlabeled split: numpy's default_rng([split_seed, label]) per class (class_balanced_split, splits/).
RNG_STREAMS = ("labeled_order", "unlabeled_order", "sample", "clip_start", "strong", "replacement", "device",
               "dropout", "loader", "synth_clip", "synth_noise", "strong_crop")


def stream_seed(name: str, *keys: int) -> int:
    """The 63-bit seed of stream `name` at `keys` (up to 64 bits each); SeedSequence: nearby keys, unrelated seeds."""
    words = [w for x in (RNG_STREAMS.index(name) + 1, *keys) for w in (int(x) & 0xFFFFFFFF, int(x) >> 32 & 0xFFFFFFFF)]
    return int(np.random.SeedSequence(words).generate_state(1, np.uint64)[0]) >> 1


def pick_device(name: str = "auto") -> torch.device:
    """'auto': CUDA when present, else CPU. A CUDA device comes back indexed, current and with TF32 matmuls (the fp32
    EMA teacher, --amp none), so that training, eval and predict compute alike."""
    try:
        dev = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)
    except RuntimeError as e:
        raise UserError(f"--device {name!r}: {e}") from e
    if dev.type == "cuda":
        if not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count():
            raise UserError(f"--device {name}: no such CUDA device on this machine; use --device cpu or auto")
        dev = torch.device("cuda", torch.cuda.current_device() if dev.index is None else dev.index)
        torch.cuda.set_device(dev)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    return dev


def autocast_context(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """Mixed precision by construction: a no-op context when amp is 'none'."""
    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype={"bf16": torch.bfloat16, "fp16": torch.float16}[amp])


def setup_logging(run_dir: str | Path | None = None, rank: int = 0) -> None:
    """Log to the console and, on rank 0, to RUN_DIR/log.txt. Other ranks only log warnings. A record logged with
    extra={"console": False} goes to log.txt alone (a progress line that a progress bar already shows)."""
    log.handlers.clear()
    log.propagate = False
    log.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
    console = logging.StreamHandler(sys.stdout)
    console.addFilter(lambda record: getattr(record, "console", True))
    for h in [console] + ([logging.FileHandler(Path(run_dir) / "log.txt")] if run_dir is not None and rank == 0
                          else []):
        h.setFormatter(fmt)
        log.addHandler(h)


def provenance() -> dict:
    """Where a run's numbers come from: this process's command line, the git commit of this file's checkout (None
    outside one; git_dirty: tracked files differ from the commit) and the Python and library versions. Versions are
    read from the installed packages' metadata, so torchcodec's FFmpeg libraries need not load."""
    from importlib import metadata

    def version(package: str) -> str | None:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return None

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(Path(__file__).resolve().parent), *args], capture_output=True,
                                 text=True, timeout=60)
        except (OSError, subprocess.SubprocessError):  # no git installed, or it hangs
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    return {"argv": list(sys.argv), "git_commit": commit,
            "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")) if commit else None,
            "python": platform.python_version(), "torch": str(torch.__version__),
            **{p: version(p) for p in ("torchvision", "timm", "torchcodec")}}


def progress_bar(rank: int = 0, **kw) -> tqdm:
    """A tqdm bar on rank 0 when stderr is a terminal; redirected to a file it would write hundreds of redraws, so
    there it is off and the caller's log lines tell the progress."""
    return tqdm(disable=rank != 0 or not sys.stderr.isatty(), dynamic_ncols=True, **kw)


# ==== Model: divided space-time attention TimeSformer (Bertasius et al., ICML 2021) ===================================
# Shapes: B clips, C channels, T frames, H x W pixels, N patches per frame, D token width, K classes.

class DividedSpaceTimeBlock(nn.Module):
    """One TimeSformer block: temporal attention, spatial attention, MLP. Tokens are (B, 1 + N*T, D): cls, then the
    patches space-major, time-minor (n*T + t) as the official code, so temporal attention needs no copy."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, drop_path: float = 0.0):
        from timm.layers import Attention, DropPath, Mlp  # timm's ViT layers: qkv/proj names, so ViT weights load
        super().__init__()
        self.temporal_norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.temporal_attn = Attention(dim, num_heads, qkv_bias=True)  # F.scaled_dot_product_attention inside
        self.temporal_fc = nn.Linear(dim, dim)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, qkv_bias=True)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, T: int) -> torch.Tensor:
        B, L, D = x.shape
        N = (L - 1) // T
        cls, xt = x[:, :1], x[:, 1:]  # (B,1,D), (B,N*T,D)
        # Temporal attention among each position's T tokens; temporal_fc starts at zero: at init a per-frame ViT.
        r = self.temporal_attn(self.temporal_norm1(xt.reshape(B * N, T, D)))  # (B*N, T, D)
        xt = xt + self.temporal_fc(self.drop_path(r).reshape(B, N * T, D))
        # Spatial attention among each frame's N patches, with the cls token repeated into every frame.
        xs = xt.view(B, N, T, D).transpose(1, 2).reshape(B * T, N, D)  # (B*T, N, D)
        xs = torch.cat([cls.expand(B, T, D).reshape(B * T, 1, D), xs], dim=1)  # (B*T, 1+N, D)
        r = self.drop_path(self.attn(self.norm1(xs)))  # (B*T, 1+N, D)
        cls_r = r[:, 0].view(B, T, D).mean(dim=1, keepdim=True)  # the frames' cls outputs are averaged: (B,1,D)
        r = r[:, 1:].reshape(B, T, N, D).transpose(1, 2).reshape(B, N * T, D)  # back to n*T + t order
        x = torch.cat([cls, xt], dim=1) + torch.cat([cls_r, r], dim=1)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class TimeSformer(nn.Module):
    """TimeSformer: (B, C, T, H, W) float -> (B, num_classes) logits. The forward runs in stages so that training can
    change the tokens between them: patchify (B,T,N,D) -> token_hook (Tube TokenMix) -> embed -> blocks -> head."""

    def __init__(self, num_classes: int, num_frames: int = 8, img_size: int = 224, patch_size: int = 16,
                 embed_dim: int = 768, depth: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0,
                 drop_path: float = 0.1, head_dropout: float = 0.0, in_chans: int = 3):
        from timm.layers import PatchEmbed
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
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():  # ViT init: Linear weights truncated normal, std 0.02, biases 0 (LayerNorm: 1, 0)
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        for blk in self.blocks:  # zero temporal_fc in every block (the official code skips block 0)
            nn.init.zeros_(blk.temporal_fc.weight)
            nn.init.zeros_(blk.temporal_fc.bias)

    @classmethod
    def from_preset(cls, arch: str, num_classes: int, **kw) -> "TimeSformer":
        """TimeSformer.from_preset('base', 101, num_frames=8) -- a named size plus any constructor keyword."""
        if arch not in ARCH_PRESETS:
            raise UserError(f"unknown arch {arch!r}; expected one of {sorted(ARCH_PRESETS)}")
        return cls(num_classes=num_classes, **{**ARCH_PRESETS[arch], **kw})

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    def describe(self) -> dict:
        """The architecture as built, read off the modules: {arch, embed_dim, depth, num_heads, patch_size, mlp_ratio,
        num_frames, img_size, num_classes, params}. arch is the ARCH_PRESETS name only when the model is that preset
        (ViT-x/16, MLP ratio 4), else its dimensions: the demo's D 64 / 2 blocks is not 'tiny' (D 192 / 4 blocks)."""
        D, depth, heads = self.embed_dim, len(self.blocks), self.blocks[0].attn.num_heads
        patch, mlp_ratio = self.patch_embed.patch_size[0], self.blocks[0].mlp.fc1.out_features / D
        preset = next((k for k, v in ARCH_PRESETS.items() if v == dict(embed_dim=D, depth=depth, num_heads=heads)
                       and patch == 16 and mlp_ratio == 4), None)
        return {"arch": preset or f"D{D}-depth{depth}-heads{heads}-patch{patch}", "embed_dim": D, "depth": depth,
                "num_heads": heads, "patch_size": patch, "mlp_ratio": mlp_ratio, "num_frames": self.num_frames,
                "img_size": self.patch_embed.img_size[0], "num_classes": self.num_classes,
                "params": sum(p.numel() for p in self.parameters())}

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
        return self.forward_head(self.forward_blocks(self.embed(tokens), tokens.shape[1]))


def build_model(mcfg: ModelConfig, num_classes: int, num_frames: int, img_size: int) -> TimeSformer:
    model = TimeSformer(num_classes=num_classes, num_frames=num_frames, img_size=img_size,
                        patch_size=mcfg.patch_size, **mcfg.dims(), mlp_ratio=mcfg.mlp_ratio, drop_path=mcfg.drop_path,
                        head_dropout=mcfg.head_dropout)
    model.set_grad_checkpointing(mcfg.grad_checkpointing)
    return model


# ==== Checkpoint loading and conversion ===============================================================================
# Formats that load_pretrained accepts, detected from the keys (never from the file name alone):
#   vit      a timm / ImageNet ViT state dict (.pth/.pt/.bin/.safetensors), raw or under model/state_dict/model_state
#   official the official TimeSformer .pyth: {'model_state': {'model.<key>': ...}, 'cfg', 'epoch', ...}
#   timesformer  a bare TimeSformer state dict with the official key names, e.g. our stage-0 .safetensors
#   hf       HF transformers TimesformerForVideoClassification (a directory, model.safetensors or pytorch_model.bin)
#   ours     a fullsvformer checkpoint: {'format': 'fullsvformer', 'model': ..., 'ema': ...}; PATH:teacher picks 'ema'

HF_BLOCK_KEYS = {  # HF name inside timesformer.encoder.layer.<i>. -> our name inside blocks.<i>.
    "layernorm_before": "norm1", "attention.attention.qkv": "attn.qkv", "attention.output.dense": "attn.proj",
    "temporal_layernorm": "temporal_norm1", "temporal_attention.attention.qkv": "temporal_attn.qkv",
    "temporal_attention.output.dense": "temporal_attn.proj", "temporal_dense": "temporal_fc",
    "layernorm_after": "norm2", "intermediate.dense": "mlp.fc1", "output.dense": "mlp.fc2"}
HF_TOP_KEYS = {
    "timesformer.embeddings.cls_token": "cls_token", "timesformer.embeddings.position_embeddings": "pos_embed",
    "timesformer.embeddings.time_embeddings": "time_embed",
    "timesformer.embeddings.patch_embeddings.projection": "patch_embed.proj", "timesformer.layernorm": "norm",
    "classifier": "head"}


class CheckpointError(UserError):
    """A checkpoint that cannot be loaded as asked: the message names the file and the offending keys."""


def _abbrev(keys, n: int = 10) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:n]) + (f" ... ({len(keys)} in all)" if len(keys) > n else "")


def timm_state_dict(name: str) -> dict[str, torch.Tensor]:
    """timm's pretrained `name` as timm.create_model(pretrained=True) fetches it; offline: an error naming the file."""
    import timm
    pcfg = timm.models.get_pretrained_cfg(name)
    if pcfg is None:
        raise CheckpointError(f"timm:{name}: timm {timm.__version__} knows no pretrained model of that name")
    log.info("timm:%s: loading through timm (its local cache, else a download from the hub)", name)
    try:
        return timm.create_model(name, pretrained=True).state_dict()
    except OSError as e:  # offline: huggingface_hub's LocalEntryNotFoundError, OfflineModeIsEnabled; HTTP errors
        hub = f"https://huggingface.co/{pcfg.hf_hub_id}/resolve/main/model.safetensors" if pcfg.hf_hub_id else pcfg.url
        raise CheckpointError(f"timm:{name} is neither in the local caches nor downloadable here "
                              f"({type(e).__name__}: {str(e).splitlines()[0][:200]}). Download {hub} on a machine "
                              "with internet and pass it as --pretrained /path/to/file") from e


def torch_load(path: str | Path) -> dict:
    """A checkpoint file (torch.save or .safetensors) as a dict on the CPU, read with weights_only=True."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        try:
            return load_safetensors(str(path))
        except Exception as e:
            raise CheckpointError(f"{path} is not a readable safetensors file: {e}") from e
    try:  # mmap avoids a second copy of large checkpoints; legacy (non-zip) files cannot be mapped
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise CheckpointError(f"{path} is not a PyTorch checkpoint that loads with weights_only=True: "
                                  f"{str(e).splitlines()[0][:300]}") from e
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, expected a state dict (a mapping of tensors)")
    return obj


def read_run_checkpoint(path: str | Path) -> dict:
    """A checkpoint written by train() (last.pt, best.pt), or a CheckpointError naming the file."""
    ckpt = torch_load(path)
    if ckpt.get("format") != "fullsvformer":
        raise CheckpointError(f"{path} is not a fullsvformer training checkpoint (last.pt or best.pt of a run); "
                              "pass other weights with --pretrained to fine-tune from them")
    return ckpt


def read_checkpoint(source: str | Path) -> tuple[dict[str, torch.Tensor], str, str]:
    """A checkpoint file or directory as (flat {key: tensor} dict, format, path), unwrapped, unprefixed."""
    source = str(source)
    which, path = "student", Path(source)
    if not path.exists() and source.rsplit(":", 1)[-1] in ("teacher", "student"):
        path, which = Path(source.rsplit(":", 1)[0]), source.rsplit(":", 1)[1]
    if path.is_dir():  # an HF model directory
        found = [path / f for f in ("model.safetensors", "pytorch_model.bin") if (path / f).is_file()]
        if not found:
            raise CheckpointError(f"{path} is a directory without model.safetensors or pytorch_model.bin "
                                  "(expected a HF transformers Timesformer directory, or pass a checkpoint file)")
        path = found[0]
    obj = timm_state_dict(source[5:]) if source.startswith("timm:") else torch_load(path)
    fmt = None
    if obj.get("format") == "fullsvformer":
        key = {"student": "model", "teacher": "ema"}[which]
        if not isinstance(obj.get(key), dict):
            raise CheckpointError(f"{path} is a fullsvformer checkpoint without '{key}' weights")
        obj, fmt = obj[key], "ours"
    elif which != "student":
        raise CheckpointError(f"{path}: ':{which}' is only meaningful for fullsvformer checkpoints")
    else:
        obj = next((obj[w] for w in ("model_state", "state_dict", "model") if isinstance(obj.get(w), dict)), obj)
    state = {}
    for k, v in obj.items():
        if not isinstance(v, torch.Tensor):
            raise CheckpointError(f"{path}: entry {k!r} is a {type(v).__name__}, not a tensor; "
                                  "expected a model state dict")
        state[k.removeprefix("module.").removeprefix("_orig_mod.")] = v
    if not state:
        raise CheckpointError(f"{path} holds no tensors")
    if fmt is None:
        if any(k.startswith(("timesformer.", "classifier.")) for k in state):
            fmt, state = "hf", hf_to_timesformer_keys(state, str(path))
        elif all(k.startswith("model.") for k in state):
            fmt, state = "official", {k[len("model."):]: v for k, v in state.items()}
        elif any(".temporal_attn." in k for k in state):
            fmt = "timesformer"  # a bare state dict with the official names: ours (stage 0) or an official re-saved
        elif any(k.startswith("blocks.") for k in state):
            fmt = "vit"
        else:
            raise CheckpointError(f"{path}: keys look like no supported format (timm ViT, official TimeSformer, "
                                  f"HF Timesformer, fullsvformer); first keys: {_abbrev(state, 5)}")
    return state, fmt, str(path)


def hf_to_timesformer_keys(state: dict[str, torch.Tensor], where: str = "") -> dict[str, torch.Tensor]:
    """Rename HF transformers Timesformer keys to the official TimeSformer names (HF_BLOCK_KEYS, HF_TOP_KEYS: HF's
    TimesformerForVideoClassification against facebookresearch/TimeSformer's vit.py)."""
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


def load_pretrained(model: TimeSformer, source: str | Path) -> dict:
    """Load any supported checkpoint (read_checkpoint) into `model`, adapting where meaningful, and log it in one line.

    An image ViT's attn/norm1 are copied into temporal_attn/temporal_norm1 (time_embed and temporal_fc stay zero: the
    image model per frame); pos_embed and time_embed are interpolated to the model's grid and T; the head is kept at
    init when the class count differs. Anything else that does not fit raises CheckpointError listing the keys.
    Returns {"format", "adapted": {key: what was done}, "initialized": [kept at init], "ignored": [...]}.
    """
    state, fmt, path = read_checkpoint(source)
    target = model.state_dict()
    report = {"format": fmt, "adapted": {}, "initialized": [], "ignored": []}
    allowed_missing = set()
    if fmt == "vit":
        for k in list(state):
            if k.startswith("blocks.") and (".attn." in k or ".norm1." in k):
                tk = k.replace(".attn.", ".temporal_attn.").replace(".norm1.", ".temporal_norm1.")
                if tk not in state:
                    state[tk] = state[k]
                    report["adapted"][tk] = f"copied from {k}"
        allowed_missing = {k for k in target if k == "time_embed" or ".temporal_fc." in k}
    for k, what in (("pos_embed", "resized bicubic"), ("time_embed", "interpolated")):
        old, new = state.get(k), target[k].shape
        if old is not None and old.shape != new and old.shape[-1] == new[-1]:
            state[k] = resize_pos_embed(old, new[1] - 1) if k == "pos_embed" else resize_time_embed(old, new[1])
            report["adapted"][k] = f"{what} {tuple(old.shape)} -> {tuple(new)}"
    head = [k for k in state if k.startswith("head.")]
    if head and any(state[k].shape != target.get(k, state[k]).shape for k in head):
        for k in head:
            report["ignored"].append(f"{k} {tuple(state.pop(k).shape)} (class count differs from the model's "
                                     f"{model.num_classes})")
    allowed_missing |= {k for k in target if k.startswith("head.") and not any(h in state for h in head)}
    mismatched = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(target[k].shape)}"
                  for k in state if k in target and state[k].shape != target[k].shape]
    problems = [f"{what}: {_abbrev(keys)}" for what, keys in (
        ("unknown keys", [k for k in state if k not in target]),
        ("missing keys", [k for k in target if k not in state and k not in allowed_missing]),
        ("shape mismatches", mismatched)) if keys]
    if problems:
        raise CheckpointError(f"{path} ({fmt}) does not fit this TimeSformer "
                              f"(D={model.embed_dim}, depth={len(model.blocks)}, T={model.num_frames}): "
                              + "; ".join(problems))
    report["initialized"] = [k for k in target if k not in state]
    state.update({k: target[k] for k in report["initialized"]})
    model.load_state_dict(state, strict=True)  # strict: every key was checked above, nothing is skipped silently
    log.info("loaded %s (%s): %d tensors as they are; adapted: %s; kept at init: %s; ignored: %s", path, fmt,
             len(target) - len(report["adapted"]) - len(report["initialized"]),
             _abbrev(f"{k} ({v})" for k, v in report["adapted"].items()) or "-",
             _abbrev(report["initialized"]) or "-", _abbrev(report["ignored"]) or "-")
    return report


# ==== Data: dataset layouts, split lists, clip sampling, decoding, weak/strong views, synthetic clips, loaders ========
# API for the training loop (everything else in this section is a building block usable on its own):
#   data = build_data(cfg.data, seed)       # Data: .labeled .unlabeled .test (Datasets), .num_classes, .class_names
#   n = steps_per_epoch(data, world)        # one epoch = one pass over the UNLABELED pool (SVFormer's "epoch" was one
#                                           # pass over the labeled list: ~12 steps on UCF-101 1%)
#   for lab, unl in train_batches(data, epoch, start_step, rank, world):   # steps start_step..n-1, resumable exactly
#       lab = {"weak": uint8 (B, T, C, H, W), "label": long (B,), "index": long (B,)}          B = labeled_batch
#       unl = {"weak", "strong": uint8 (μB, T, C, H, W), "warp": long (μB, T) the strong view's temporal warp,
#              "label": long (μB,) true label or -1 (diagnostics only), "index": long (μB,)}    unl is None if mu = 0
#   for b in eval_batches(data, full=True, rank, world):   # {"views": uint8 (B, V, T, C, H, W), "label", "index"}
#       ...                                                # V = test_clips × test_crops (full) or 1 (full=False)
# Clips stay uint8 until the training step (4× less to move than float), which normalises them (normalize_clips) and
# applies the strong view's channel dropout on the device. Sampling order and every augmentation draw derive from
# (seed, epoch, sample position) only, so neither the worker count nor a mid-epoch resume changes a batch.

Entry = tuple  # (path relative to data_root, or absolute; 0-based label)

UCF101_TREE = """expected layout for --dataset ucf101:
  DATA_ROOT/
    ucfTrainTestlist/classInd.txt          lines '1 ApplyEyeMakeup'
    ucfTrainTestlist/trainlist0{1,2,3}.txt lines 'ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1'
    ucfTrainTestlist/testlist0{1,2,3}.txt  lines 'ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi'
    UCF-101/<Class>/v_<Class>_gXX_cYY.avi  (or the <Class>/ folders directly under DATA_ROOT)"""
HMDB51_TREE = """expected layout for --dataset hmdb51:
  DATA_ROOT/
    testTrainMulti_7030_splits/<class>_test_split{1,2,3}.txt   lines '<video>.avi <tag>', tag 1 train, 2 test, 0 unused
    <class>/<video>.avi"""
LISTS_TREE = """expected for --dataset lists: --train-list, --unlabeled-list and --val-list files with one '<path> <label>'
per line (0-based labels; SVFormer's CSV format); paths absolute, relative to DATA_ROOT, or remapped with
--list-prefix OLD=NEW (empty: DATA_ROOT/<class>/<video>, the last two components of the listed path)"""


def _lines(path: Path) -> list[tuple[int, str]]:
    """(1-based line number, stripped text) of the non-blank lines; CRLF and stray whitespace are tolerated."""
    return [(n, s.strip()) for n, s in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1) if s.strip()]


def _require(path: Path, tree: str) -> Path:
    if not Path(path).exists():
        raise FileNotFoundError(f"{path} does not exist.\n{tree}")
    return Path(path)


def read_ucf101(root: str | Path, split: int = 1) -> tuple[list[Entry], list[Entry], list[str]]:
    """Official UCF-101 lists -> (train, test, class_names), labels = classInd id - 1. Paths are kept as written: the
    class is their folder part (HandstandPushups/ holds v_HandStandPushups_* files, and the lists spell them so)."""
    root = _require(Path(root), UCF101_TREE)
    lists = _require(root / "ucfTrainTestlist", UCF101_TREE)
    prefix = "UCF-101/" if (root / "UCF-101").is_dir() else ""
    f = _require(lists / "classInd.txt", UCF101_TREE)
    names: list[str] = []
    for n, line in _lines(f):
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit() or int(parts[0]) != len(names) + 1:
            raise UserError(f"{f}:{n}: expected '<id> <ClassName>' with ids 1, 2, 3, ... in order, got {line!r}")
        names.append(parts[1])
    index = {c: i for i, c in enumerate(names)}

    def read(fname: str, labeled: bool) -> list[Entry]:
        f = _require(lists / fname, UCF101_TREE)
        out = []
        for n, line in _lines(f):
            parts = line.split()
            if len(parts) != (2 if labeled else 1) or "/" not in parts[0]:
                want = "'<Class>/<video>.avi <id>'" if labeled else "'<Class>/<video>.avi'"
                raise UserError(f"{f}:{n}: expected {want}, got {line!r}")
            cls = parts[0].split("/")[0]
            if cls not in index:
                raise UserError(f"{f}:{n}: class {cls!r} is not in {lists / 'classInd.txt'}")
            if labeled and int(parts[1]) != index[cls] + 1:
                raise UserError(f"{f}:{n}: label {parts[1]} disagrees with classInd ({cls} is {index[cls] + 1})")
            out.append((prefix + parts[0], index[cls]))
        return out
    return read(f"trainlist0{split}.txt", True), read(f"testlist0{split}.txt", False), names


def read_hmdb51(root: str | Path, split: int = 1) -> tuple[list[Entry], list[Entry], list[str]]:
    """Official HMDB-51 split files -> (train, test, class_names); tag 1 = train, 2 = test, 0 = unused (dropped)."""
    root = _require(Path(root), HMDB51_TREE)
    sdir = _require(root / "testTrainMulti_7030_splits", HMDB51_TREE)
    suffix = f"_test_split{split}.txt"
    # Labels follow the sorted class names, not file names: '_' < 't' puts climb_stairs_test_split1.txt before
    # climb_test_split1.txt, which would swap climb/climb_stairs, kick/kick_ball, sword/sword_exercise (SVFormer's bug).
    files = sorted(sdir.glob("*" + suffix), key=lambda p: p.name[: -len(suffix)])
    if not files:
        raise FileNotFoundError(f"{sdir} holds no *{suffix} files.\n{HMDB51_TREE}")
    names = [p.name[: -len(suffix)] for p in files]
    train, test = [], []
    for label, (cls, f) in enumerate(zip(names, files)):
        for n, line in _lines(f):
            parts = line.split()
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                raise UserError(f"{f}:{n}: expected '<video>.avi <tag>' with tag 0, 1 or 2, got {line!r}")
            if parts[1] != "0":
                (train if parts[1] == "1" else test).append((f"{cls}/{parts[0]}", label))
    return train, test, names


def _remap(path: str, root: Path, prefix: str) -> str:
    """Where a listed video lives: OLD=NEW rewrite, else as written if it exists, else DATA_ROOT/<class>/<video>."""
    if prefix:  # DataConfig checked the form
        old, new = prefix.split("=", 1)
        return new + path[len(old):] if path.startswith(old) else path
    if not Path(path).is_absolute() or Path(path).exists():  # relative paths are relative to data_root
        return path
    return "/".join(Path(path).parts[-2:])


def read_list(path: str | Path, root: str | Path, prefix: str = "") -> list[Entry]:
    """A '<path> <label>' list (SVFormer's CSV) -> entries. Paths may contain spaces: the label is the last field."""
    path = _require(Path(path), LISTS_TREE)
    out = []
    for n, line in _lines(path):
        parts = line.rsplit(None, 1)
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise UserError(f"{path}:{n}: expected '<path> <label>', got {line!r}")
        if int(parts[1]) < 0:
            raise UserError(f"{path}:{n}: label {parts[1]} is negative")
        out.append((_remap(parts[0], Path(root), prefix), int(parts[1])))
    return out


# --- split lists ------------------------------------------------------------------------------------------------------
# splits/<dataset>/<N>pct/seed<k>/{labeled,unlabeled}.txt: '<class>/<video>.avi <label>' lines under a '#' header,
# generated from the official split-1 lists by tools/make_splits.py and committed, so that every run of a setting trains
# on the same clips; other fractions/seeds/splits are drawn on the fly by the same class_balanced_split.
SPLITS_DIR = Path(__file__).resolve().parent / "splits"


def labeled_per_class(dataset: str, fraction: float, n_class: int) -> int:
    """Labeled clips drawn from a class of n_class train clips, at least 1. UCF-101 follows SVFormer: x% = x clips per
    class (classes hold 70-121); elsewhere round(fraction × n_class) (HMDB-51: 70 per class, 40% = 28)."""
    k = 100 * fraction if dataset == "ucf101" else fraction * n_class
    return min(n_class, max(1, math.floor(k + 0.5)))


def class_balanced_split(train: list[Entry], fraction: float, seed: int, dataset: str
                         ) -> tuple[list[Entry], list[Entry]]:
    """Deterministic class-balanced labeled/unlabeled split, both sorted by path. Each class draws with its own
    generator seeded by (seed, label), so its draw depends neither on the other classes nor on the list order."""
    by_class: dict[int, list[str]] = {}
    for rel, y in train:
        by_class.setdefault(y, []).append(rel)
    labeled = []
    for y in sorted(by_class):
        items = sorted(by_class[y])
        k = labeled_per_class(dataset, fraction, len(items))
        pick = np.random.default_rng([seed, y]).permutation(len(items))[:k]
        labeled += [(items[i], y) for i in sorted(pick)]
    chosen = {rel for rel, _ in labeled}
    return sorted(labeled), sorted(e for e in train if e[0] not in chosen)


def split_dir(dataset: str, fraction: float, seed: int, root: Path = SPLITS_DIR) -> Path:
    return Path(root) / dataset / f"{fraction * 100:g}pct" / f"seed{seed}"


def read_split_file(path: str | Path) -> tuple[list[Entry], list[str]]:
    """'<class>/<video> <label>' lines -> (entries, '#' header lines); a malformed line is an error naming file:line."""
    path = Path(path)
    entries, header = [], []
    for n, line in _lines(path):
        if line.startswith("#"):
            header.append(line)
            continue
        parts = line.rsplit(None, 1)
        if len(parts) != 2 or not parts[1].isdigit():
            raise UserError(f"{path}:{n}: expected '<class>/<video> <label>', got {line!r}")
        entries.append((parts[0], int(parts[1])))
    return entries, header


def select_split(dataset: str, train: list[Entry], fraction: float, seed: int, split: int
                 ) -> tuple[list[Entry], list[Entry], str]:
    """(labeled, unlabeled, source): the committed split files if they exist (checked against train), else drawn."""
    d = split_dir(dataset, fraction, seed)
    if split == 1 and (d / "labeled.txt").is_file():
        prefix = "UCF-101/" if train and train[0][0].startswith("UCF-101/") else ""  # split files omit it
        labeled = [(prefix + r, y) for r, y in read_split_file(d / "labeled.txt")[0]]
        unlabeled = [(prefix + r, y) for r, y in read_split_file(d / "unlabeled.txt")[0]]
        if len(labeled) + len(unlabeled) != len(train) or set(labeled) | set(unlabeled) != set(train):
            raise UserError(f"{d}: the committed split does not match the official lists under data_root (labeled "
                            f"{len(labeled)} + unlabeled {len(unlabeled)} vs {len(train)} train clips, or other "
                            "clips); use the official split-1 lists or another --split-seed")
        return labeled, unlabeled, str(d)
    return (*class_balanced_split(train, fraction, seed, dataset), "generated")


# --- clip sampling and decoding ---------------------------------------------------------------------------------------

class BadVideo(RuntimeError):
    """A video that cannot be decoded (missing, truncated, zero frames, not a video)."""


def clip_indices(num_frames: int, num_clip_frames: int, stride: int, start: int) -> torch.Tensor:
    """Frame indices start, start + stride, ...; clamped to the last frame, so a short video repeats its end."""
    return (start + torch.arange(num_clip_frames) * stride).clamp(max=max(num_frames - 1, 0))


def random_clip_start(num_frames: int, num_clip_frames: int, stride: int, generator: torch.Generator) -> int:
    """Training: a uniformly random start such that the clip's span fits (0 if the video is too short)."""
    last = max(0, num_frames - ((num_clip_frames - 1) * stride + 1))
    return int(torch.randint(last + 1, (1,), generator=generator))


def uniform_clip_starts(num_frames: int, num_clip_frames: int, stride: int, clips: int) -> list[int]:
    """Testing: `clips` starts evenly spaced from the first to the last position (one clip: the centre)."""
    last = max(0, num_frames - ((num_clip_frames - 1) * stride + 1))
    return [last // 2] if clips == 1 else [round(last * k / (clips - 1)) for k in range(clips)]


def decode_frames(path: str | Path, pick: Callable[[int], torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode only the frames idx = pick(num_frames) -> (uint8 (len(idx), C, H, W), idx), or raise BadVideo. Each
    distinct frame is decoded once, in increasing order (one forward pass from the nearest key frame)."""
    from torchcodec.decoders import VideoDecoder
    try:
        dec = VideoDecoder(str(path), seek_mode="exact", num_ffmpeg_threads=1)
        n = dec.metadata.num_frames or 0
        if n <= 0:
            raise BadVideo(f"{path}: no video frames")
        idx = pick(n)
        uniq, inverse = torch.unique(idx, sorted=True, return_inverse=True)
        frames = dec.get_frames_at(uniq.tolist()).data  # (U, C, H, W)
    except BadVideo:
        raise
    except Exception as e:  # torchcodec raises RuntimeError/ValueError for unreadable input
        raise BadVideo(f"{path}: {type(e).__name__}: {str(e).splitlines()[-1] if str(e) else e}") from None
    if frames.shape[0] != uniq.numel():
        raise BadVideo(f"{path}: asked for {uniq.numel()} frames, decoded {frames.shape[0]}")
    return frames[inverse], idx


def normalize_clips(x: torch.Tensor, mean=(0.45, 0.45, 0.45), std=(0.225, 0.225, 0.225),
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 (..., T, C, H, W) -> normalised float (..., C, T, H, W) on x's device, a permuted view."""
    m, s = _channel_stats(tuple(mean), tuple(std), dtype, x.device)
    return ((x.to(dtype) / 255 - m) / s).movedim(-3, -4)  # (..., T, C, H, W) -> (..., C, T, H, W)


@functools.lru_cache(maxsize=16)
def _channel_stats(mean: tuple, std: tuple, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, ...]:
    """mean and std as (C, 1, 1) device tensors, built once: a tensor made from Python numbers is a host-to-device
    copy, which would stall the training step's queue at every call."""
    return tuple(torch.tensor(v, dtype=dtype, device=device).view(-1, 1, 1) for v in (mean, std))


def channel_dropout(x: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """SVFormer's dropout2d on the strong view: zero whole channels of each normalised (B, C, T, H, W) clip with
    probability p (a zeroed channel is the mean colour) and scale the rest by 1/(1-p), on x's device."""
    if p <= 0:
        return x
    keep = torch.rand(x.shape[:2], device=x.device, generator=generator) >= p  # (B, C)
    return x * keep.to(x.dtype).view(*x.shape[:2], 1, 1, 1) / (1 - p)


def temporal_warp(clip: torch.Tensor, generator: torch.Generator, p: float = 2 / 3,
                  num_keys: tuple[int, ...] = (2, 4)) -> tuple[torch.Tensor, torch.Tensor]:
    """SVFormer's temporal warping of a (T, ...) clip -> (warped clip, source frame index (T,)). With probability p,
    m ∈ num_keys sorted key frames each repeat to fill the gaps (output frame t shows key ⌊t·m/T⌋), else no change."""
    T = clip.shape[0]
    src = torch.arange(T)
    if float(torch.rand((), generator=generator)) < p:
        m = min(T, num_keys[int(torch.randint(len(num_keys), (1,), generator=generator))])
        keys = torch.randperm(T, generator=generator)[:m].sort().values
        src = keys[torch.arange(T) * m // T]
    return clip[src], src


class ClipAugment:
    """Weak and strong views of one decoded clip, every draw from one per-sample seed.

    Weak: short side resized to a random length in [scale_min, scale_max] × img_size (SVFormer: [256, 320] for 224), a
    random img_size crop, a horizontal flip. Strong: the weak frames with RandAugment, the same on every frame, and the
    source frame index of its temporal warping, which the training step applies (--temporal-warp-on).
    """

    def __init__(self, cfg: "DataConfig"):
        from torchvision.transforms import v2
        self.size, self.hflip = cfg.img_size, cfg.hflip
        self.short = (round(cfg.scale_min * cfg.img_size), round(cfg.scale_max * cfg.img_size))
        self.randaug = v2.RandAugment(cfg.randaug_n, cfg.randaug_m) if cfg.randaug_n > 0 else None
        self.warp_p, self.warp_keys, self.strong_crop = cfg.temporal_warp_p, cfg.warp_keys, cfg.strong_crop

    def weak(self, video: torch.Tensor) -> torch.Tensor:
        """Scale jitter + random crop + flip on (T, C, H, W), done as crop-then-resize: the same result, but the resize
        touches only the crop's pixels (2.5x faster at 320x240 -> 224)."""
        import torchvision.transforms.v2.functional as TF
        H, W = video.shape[-2:]
        short = int(torch.randint(self.short[0], self.short[1] + 1, (1,)))
        side = min(H, W, max(1, round(self.size * min(H, W) / short)))  # crop side in source pixels
        top = int(torch.randint(H - side + 1, (1,)))
        left = int(torch.randint(W - side + 1, (1,)))
        out = TF.resized_crop(video, top, left, side, side, [self.size, self.size], antialias=True)
        return TF.horizontal_flip(out) if float(torch.rand(())) < self.hflip else out

    def __call__(self, frames: torch.Tensor, seed: int, strong: bool) -> dict[str, torch.Tensor]:
        """frames uint8 (T, C, H, W) -> {"weak": uint8 (T, C, S, S)[, "strong": ..., "warp": long (T,)]}."""
        from torchvision import tv_tensors
        # v2 transforms draw from torch's global RNG: fork it, so a per-sample seed does not disturb the caller's.
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)  # CPU only: torch.manual_seed would reseed CUDA too
            weak = self.weak(tv_tensors.Video(frames))  # (T, C, S, S)
            out = {"weak": weak.as_subclass(torch.Tensor)}
            if strong:  # RandAugment is the same on every frame, so it commutes with the warp's frame gather
                g = torch.Generator().manual_seed(stream_seed("strong", seed))
                base = weak
                if self.strong_crop == "own":  # the same frames, another scale, crop and flip
                    torch.default_generator.manual_seed(stream_seed("strong_crop", seed))
                    base = self.weak(tv_tensors.Video(frames))
                _, out["warp"] = temporal_warp(base, g, self.warp_p, self.warp_keys)
                out["strong"] = (self.randaug(base) if self.randaug else base).as_subclass(torch.Tensor).contiguous()
        return out


def test_views(frames: torch.Tensor, clips: int, crops: int, size: int) -> torch.Tensor:
    """uint8 (clips·T, C, H, W) -> (clips·crops, T, C, size, size): short side resized to size, then crops along the
    long side (left/centre/right or top/centre/bottom; one crop = centre). View order is clip-major."""
    import torchvision.transforms.v2.functional as TF
    x = TF.resize(frames, size, antialias=True)
    H, W = x.shape[-2:]
    long_ = max(H, W) - size
    offs = [long_ // 2] if crops == 1 else [0, long_ // 2, long_]
    views = [x[..., o:o + size, :size] if H > W else x[..., :size, o:o + size] for o in offs]  # each (clips·T, C, S, S)
    v = torch.stack(views, 1)  # (clips·T, crops, C, S, S)
    v = v.view(clips, -1, crops, *v.shape[2:]).transpose(1, 2)  # (clips, crops, T, C, S, S)
    return v.reshape(clips * crops, *v.shape[2:])  # (V, T, C, S, S)


# --- datasets ---------------------------------------------------------------------------------------------------------

class VideoClips(torch.utils.data.Dataset):
    """Videos under a root as (path, label) entries; items are dicts of uint8 clips (train_item, test_item)."""

    def __init__(self, root: str | Path, entries: list[Entry], cfg: "DataConfig", name: str):
        self.root, self.entries, self.cfg, self.name = Path(root), list(entries), cfg, name
        self.augment = ClipAugment(cfg)

    def __len__(self) -> int:
        return len(self.entries)

    def path(self, i: int) -> str:
        return str(self.root / self.entries[i][0])

    def read(self, i: int, pick: Callable[[int], torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return decode_frames(self.path(i), pick)

    def train_item(self, i: int, seed: int, strong: bool) -> dict:
        """One training clip (T frames at stride clip_stride from a random start) as weak (and strong) views. An
        unreadable video is replaced by a deterministic other one; its path travels with the item (key "bad")."""
        c, bad = self.cfg, []
        for attempt in range(10):
            j = i if attempt == 0 else int(torch.randint(len(self), (), generator=torch.Generator().manual_seed(
                stream_seed("replacement", seed, attempt))))
            g = torch.Generator().manual_seed(stream_seed("clip_start", seed))
            try:
                frames, idx = self.read(j, lambda n: clip_indices(
                    n, c.num_frames, c.clip_stride, random_clip_start(n, c.num_frames, c.clip_stride, g)))
            except BadVideo as e:
                log.warning(f"skipping unreadable video ({self.name} set): {e}")
                bad.append(self.path(j))
                continue
            return dict(self.augment(frames, seed, strong), label=self.entries[j][1], index=j, bad="\n".join(bad))
        raise UserError(f"10 videos in a row failed to decode in the {self.name} set, starting at {self.path(i)}; "
                        f"last: {bad[-1]}")

    def test_item(self, i: int, full: bool = True) -> dict:
        """All test views of video i from one decode: uniformly spaced clips × crops -> {"views": (V, T, C, S, S)}."""
        c = self.cfg
        clips, crops = (c.test_clips, c.test_crops) if full else (1, 1)
        frames, _ = self.read(i, lambda n: torch.cat([clip_indices(n, c.num_frames, c.clip_stride, s) for s in
                                                      uniform_clip_starts(n, c.num_frames, c.clip_stride, clips)]))
        return {"views": test_views(frames, clips, crops, c.img_size), "label": self.entries[i][1], "index": i}


# --- synthetic clips: a task shaped like UCF-101 (appearance x motion classes) ----------------------------------------
# A clip shows a FLOCK of 5-8 identical glyphs (the actors) over a cluttered, shaking background. A class is an
# APPEARANCE (the glyph) AND a MOTION (how the flock moves). Most glyphs occur with one motion only: one frame tells the
# class (as scenes and objects do for many UCF-101 classes, which is why an ImageNet start helps); a few glyphs occur
# with several motions (a "group"), which only the motion separates. Motions are shared, so a labeled clip teaches its
# motion to every class that uses it. Nothing trivial separates classes: colours, glyph size, count, layout, tilt,
# mirror, speed, phase, clutter and shake are drawn the same way for every class, and every motion keeps its label
# under a horizontal flip and under time reversal (a TimeSformer whose time_embed starts at zero sees a set of frames).
# Patch-sized glyphs, not one large sprite: a 2-block ViT learns a sprite covering ~4 of 16 patches very slowly (26% on
# 32 shapes after 1,000 steps from scratch), local patterns repeated over the frame within a few hundred steps.
# "ucf-proxy-pretrain" is stage 0's "ImageNet": other glyphs, other motions, one class per glyph whatever the motion.
# Units: positions and sizes are fractions of the frame side, speeds per video frame, tuned for 4 frames at stride 4.

def _ring(u: np.ndarray, v: np.ndarray, lo: float, hi: float) -> np.ndarray:
    r2 = u * u + v * v
    return (r2 >= lo * lo) & (r2 <= hi * hi)


def _box(u: np.ndarray, v: np.ndarray, hu: float, hv: float, cu: float = 0.0, cv: float = 0.0) -> np.ndarray:
    return (abs(u - cu) <= hu) & (abs(v - cv) <= hv)


# Glyphs: predicates on glyph-local coordinates (u right, v down) in units of the glyph radius.
GLYPHS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    # the proxy's
    "disc": lambda u, v: _ring(u, v, 0, 1),
    "ring": lambda u, v: _ring(u, v, 0.55, 1),
    "square": lambda u, v: _box(u, v, 0.8, 0.8),
    "frame": lambda u, v: _box(u, v, 0.85, 0.85) & ~_box(u, v, 0.4, 0.4),
    "plus": lambda u, v: _box(u, v, 0.3, 1) | _box(u, v, 1, 0.3),
    "cross": lambda u, v: ((abs(u + v) <= 0.42) | (abs(u - v) <= 0.42)) & _box(u, v, 0.85, 0.85),
    "bar": lambda u, v: _box(u, v, 1, 0.35),
    "triangle": lambda u, v: (v <= 0.75) & (abs(u) <= (v + 0.95) * 0.55),
    "tee": lambda u, v: _box(u, v, 0.9, 0.25, 0, -0.65) | _box(u, v, 0.25, 0.9),
    "chevron": lambda u, v: (abs(v + 0.1 - 0.8 * abs(u)) <= 0.35) & (abs(u) <= 0.95),
    "hourglass": lambda u, v: (abs(u) <= abs(v) * 0.9 + 0.1) & (abs(v) <= 0.9),
    "diamond": lambda u, v: abs(u) + abs(v) <= 1,
    "star": lambda u, v: np.sqrt(u * u + v * v) <= 0.55 + 0.45 * np.cos(5 * np.arctan2(u, -v)),
    "half_disc": lambda u, v: _ring(u, v, 0, 1) & (v >= -0.2),
    "letter_l": lambda u, v: _box(u, v, 0.22, 0.9, -0.55, 0) | _box(u, v, 0.8, 0.22, 0, 0.68),
    "dumbbell": lambda u, v: ((abs(u) - 0.55) ** 2 + v * v <= 0.2) | _box(u, v, 0.6, 0.15),
    "arrow": lambda u, v: _box(u, v, 0.2, 0.55, 0, 0.35) | ((v <= -0.1) & (v >= -0.95) & (abs(u) <= (v + 0.95) * 0.8)),
    "u_shape": lambda u, v: _box(u, v, 0.2, 0.85, -0.65, 0) | _box(u, v, 0.2, 0.85, 0.65, 0)
    | _box(u, v, 0.85, 0.2, 0, 0.65),
    "octagon": lambda u, v: (abs(u) <= 0.85) & (abs(v) <= 0.85) & (abs(u) + abs(v) <= 1.2),
    "dot_row": lambda u, v: (u * u + v * v <= 0.1) | ((abs(u) - 0.65) ** 2 + v * v <= 0.1),
    "lens": lambda u, v: ((abs(u) + 0.45) ** 2 + v * v <= 1),
    "trapezoid": lambda u, v: (abs(v) <= 0.7) & (abs(u) <= 0.55 + 0.3 * v),
    "bowtie": lambda u, v: (abs(v) <= abs(u) * 0.9 + 0.1) & (abs(u) <= 0.9),
    "tri_down": lambda u, v: (v >= -0.75) & (abs(u) <= (0.95 - v) * 0.55),
    "t_down": lambda u, v: _box(u, v, 0.9, 0.25, 0, 0.65) | _box(u, v, 0.25, 0.9),
    "hexagon": lambda u, v: (abs(v) <= 0.8) & (abs(u) * 0.866 + abs(v) * 0.5 <= 0.85),
    # pretraining only
    "target": lambda u, v: _ring(u, v, 0, 0.35) | _ring(u, v, 0.7, 1),
    "crescent": lambda u, v: _ring(u, v, 0, 1) & ((u - 0.5) ** 2 + v * v >= 0.55),
    "letter_h": lambda u, v: _box(u, v, 0.2, 0.9, -0.7, 0) | _box(u, v, 0.2, 0.9, 0.7, 0) | _box(u, v, 0.9, 0.2),
    "three_dots": lambda u, v: (u ** 2 + (v + 0.55) ** 2 <= 0.13) | ((abs(u) - 0.55) ** 2 + (v - 0.4) ** 2 <= 0.13),
    "equals": lambda u, v: _box(u, v, 0.9, 0.2, 0, -0.45) | _box(u, v, 0.9, 0.2, 0, 0.45),
    "colon": lambda u, v: u * u + (abs(v) - 0.55) ** 2 <= 0.16,
    "arc": lambda u, v: _ring(u, v, 0.55, 1) & (v >= 0),
    "pill": lambda u, v: _box(u, v, 0.45, 0.5) | (u * u + (abs(v) - 0.5) ** 2 <= 0.2),
    "bracket": lambda u, v: _box(u, v, 0.2, 0.9, -0.6, 0) | _box(u, v, 0.55, 0.2, -0.25, -0.7)
    | _box(u, v, 0.55, 0.2, -0.25, 0.7),
    "tri_outline": lambda u, v: ((v <= 0.75) & (abs(u) <= (v + 0.95) * 0.55))
    & ~((v <= 0.4) & (abs(u) <= (v + 0.35) * 0.55)),
    "zigzag": lambda u, v: (abs(v - 0.5 * np.sin(3.2 * u)) <= 0.3) & (abs(u) <= 0.95),
    "ex_box": lambda u, v: (_box(u, v, 0.85, 0.85) & ~_box(u, v, 0.55, 0.55)) | (abs(u - v) <= 0.3)
    & _box(u, v, 0.85, 0.85),
    "oval": lambda u, v: u * u + (v / 0.55) ** 2 <= 1,
    "wedge": lambda u, v: _ring(u + 0.6, v + 0.6, 0, 1.5) & (u >= -0.6) & (v >= -0.6),
    "kite": lambda u, v: abs(u) / 0.55 + abs(v) <= 1,
    "pentagon": lambda u, v: np.sqrt(u * u + v * v) * np.cos(
        (np.arctan2(u, -v) + math.pi / 5) % (2 * math.pi / 5) - math.pi / 5) <= 0.8,
    "asterisk": lambda u, v: _ring(u, v, 0, 1) & ((abs(v) <= 0.2) | (abs(0.866 * u + 0.5 * v) <= 0.2)
                                                  | (abs(0.866 * u - 0.5 * v) <= 0.2)),
    "vbars": lambda u, v: _box(u, v, 0.2, 0.9, -0.45, 0) | _box(u, v, 0.2, 0.9, 0.45, 0),
    "y_shape": lambda u, v: _box(u, v, 0.2, 0.45, 0, 0.45) | ((abs((abs(u) + v) * 0.707) <= 0.2)
                                                             & ((abs(u) - v) * 0.707 >= 0)
                                                             & ((abs(u) - v) * 0.707 <= 1)),
    "square_dot": lambda u, v: (_box(u, v, 0.9, 0.9) & ~_box(u, v, 0.6, 0.6)) | _box(u, v, 0.25, 0.25),
    "quad_dots": lambda u, v: (abs(u) - 0.5) ** 2 + (abs(v) - 0.5) ** 2 <= 0.12,
    "arrowhead": lambda u, v: (u >= -0.7) & (abs(v) <= (0.8 - u) * 0.6) & (u <= 0.8),
    "notch": lambda u, v: _box(u, v, 0.85, 0.85) & ~_box(u, v, 0.3, 0.5, 0, -0.5),
    "c_shape": lambda u, v: _ring(u, v, 0.5, 1) & (u <= 0.35),
}


def _flock_motion(t: np.ndarray, name: str, r: list[float]) -> dict:
    """How the flock moves at video frames t (F,), as per-frame (F,) terms: offset oy, ox of every glyph (frame
    fractions; positions wrap around), zoom (scale of the layout and the glyphs), spin (every glyph's rotation in
    place, rad). r: 5 per-clip uniforms (speed, direction, phase, amplitude, second direction)."""
    sign = 1.0 if r[1] < 0.5 else -1.0
    phase = 2 * math.pi * r[2]
    if name == "still":
        return {}
    if name in ("slide_h", "slide_v", "slide_d"):  # constant velocity, 0.035-0.055 frames per video frame
        d = (0.035 + 0.02 * r[0]) * sign * t
        d2 = d * (1 if r[4] < 0.5 else -1)
        return {"oy": d2 if name == "slide_d" else d * (name == "slide_v"), "ox": d * (name != "slide_v")}
    if name == "orbit":  # a circle of radius 0.1-0.15, a turn every 10-16 video frames
        w = 2 * math.pi / (10 + 6 * r[0]) * sign
        rad = 0.1 + 0.05 * r[3]
        return {"oy": rad * np.sin(w * t + phase), "ox": rad * np.cos(w * t + phase)}
    if name == "spin":  # 0.15-0.25 rad per video frame: 35-57 degrees per 4 frames, below a 90-degree symmetry
        return {"spin": (0.15 + 0.1 * r[0]) * sign * t}
    if name == "pulse":  # the layout and the glyphs grow and shrink by +-25-40%, period 8-14 video frames
        return {"zoom": 1 + (0.25 + 0.15 * r[3]) * np.sin(2 * math.pi * t / (8 + 6 * r[0]) + phase)}
    if name == "hop":  # up and back down, a hop every 12-18 video frames
        return {"oy": -(0.08 + 0.06 * r[3]) * abs(np.sin(math.pi * t / (12 + 6 * r[0]) + phase / 2))}
    if name == "wobble":  # the glyphs rock by +-0.5 rad, period 8-12 video frames
        return {"spin": 0.5 * np.sin(2 * math.pi * t / (8 + 4 * r[0]) + phase)}
    if name == "drift":  # slow translation in any direction, 0.005-0.01 frames per video frame
        a = 2 * math.pi * r[4]
        s = (0.005 + 0.005 * r[0]) * t
        return {"oy": s * math.sin(a), "ox": s * math.cos(a)}
    raise ValueError(f"unknown proxy motion {name!r}")


PROXY_MOTIONS = ("still", "slide_h", "slide_v", "orbit", "pulse", "spin")  # the proxy's
PRETRAIN_MOTIONS = ("slide_d", "hop", "wobble", "drift")  # stage 0's ("ImageNet"): none of the proxy's
PROXY_SHAPES = ("disc", "ring", "square", "frame", "plus", "cross", "bar", "triangle", "tee", "chevron", "hourglass",
                "diamond", "star", "half_disc", "letter_l", "dumbbell", "arrow", "u_shape", "octagon", "dot_row",
                "lens", "trapezoid", "bowtie", "tri_down", "t_down", "hexagon")
PRETRAIN_SHAPES = tuple(k for k in GLYPHS if k not in PROXY_SHAPES)  # stage 0's: none of the proxy's


@dataclass(frozen=True)
class SynthTask:
    """A synthetic task of glyph flocks: its classes (glyph, motions), each clip drawing one of its class's motions,
    and every knob of the per-clip draw: the glyph count (on distinct cells of a jittered 3x3 grid), radius (frame
    fraction), tilt (rad, plus a random mirror), clutter rectangles, camera shake (pixels, i.i.d. per frame),
    background gradient amplitude and pixel noise std."""
    classes: tuple
    glyphs: tuple = (5, 8)
    radius: tuple = (0.1, 0.14)
    tilt: float = 0.3
    clutter: tuple = (1, 3)
    shake: float = 1.5
    background: float = 0.15
    noise: float = 0.02

    def names(self) -> list[str]:
        return [f"{a}_{m[0] if len(m) == 1 else 'any'}" for a, m in self.classes]


def proxy_classes(groups: int, group_motions: int, singles: int) -> tuple:
    """`groups` glyphs x `group_motions` motions (told apart by motion only), then `singles` glyphs with one motion
    each; motions cycle through PROXY_MOTIONS, so every motion occurs in several groups and singles."""
    out, k = [], 0
    for i, glyph in enumerate(PROXY_SHAPES[:groups + singles]):
        for _ in range(group_motions if i < groups else 1):
            if glyph in ("disc", "ring") and PROXY_MOTIONS[k % len(PROXY_MOTIONS)] == "spin":
                k += 1  # a turning disc looks still
            out.append((glyph, (PROXY_MOTIONS[k % len(PROXY_MOTIONS)],)))
            k += 1
    return tuple(out)


# 32 classes: 3 glyphs x 3 motions (9 classes only motion tells apart) and 23 glyphs with one motion each.
SYNTH_TASKS: dict[str, SynthTask] = {
    "ucf-proxy": SynthTask(proxy_classes(groups=3, group_motions=3, singles=23)),
    "ucf-proxy-pretrain": SynthTask(tuple((s, PRETRAIN_MOTIONS) for s in PRETRAIN_SHAPES)),
}


def synthetic_frames(index: int, label: int, frames: torch.Tensor, task: "SynthTask", size: int, seed: int = 0
                     ) -> torch.Tensor:
    """Video frames `frames` of clip `index` of class `label` -> uint8 (len(frames), 3, size, size). The clip's draws
    come from (seed, index) and frame t's noise and shake from (seed, index, t), so any subset of frames is generated
    alone (like decoding). numpy: the arrays are small, torch's per-call cost would dominate (~0.8 ms, 4 x 40 px)."""
    g = np.random.default_rng(stream_seed("synth_clip", seed, index))
    glyph, motions = task.classes[label]
    motion = motions[int(g.integers(len(motions)))]
    n = int(g.integers(task.glyphs[0], task.glyphs[1] + 1))
    n_clutter = int(g.integers(task.clutter[0], task.clutter[1] + 1))
    cells = g.permutation(9)[:n]
    d = g.random(16 + 3 * n + 7 * n_clutter)  # every other per-clip draw, in one call
    r = d[:5].tolist()  # the motion's speed, direction, phase, amplitude, second direction
    radius = task.radius[0] + (task.radius[1] - task.radius[0]) * d[5]
    mirror = -1.0 if d[6] < 0.5 else 1.0
    shake_amp = task.shake * d[7]
    grad = (d[8:10] * 2 - 1) * task.background
    # Glyphs lighter than the background in every channel: with a random contrast sign per channel a tiny ViT from
    # scratch stays at chance for 800+ steps (its linear patch embedding sees the two signs as unrelated patterns).
    bg = (d[10:13] * 0.3 + 0.05).reshape(3, 1, 1)
    fg = bg + 0.35 + 0.25 * d[13:16].reshape(3, 1, 1)
    tilt = task.tilt * (2 * d[16:16 + n] - 1)
    pos = (np.stack([cells // 3, cells % 3], 1) + 0.2 + 0.6 * d[16 + n:16 + 3 * n].reshape(n, 2)) / 3  # (n, 2) y, x
    boxes = d[16 + 3 * n:].reshape(n_clutter, 7)  # y0, x0, h, w, colour within +-0.2 of the background
    t = frames.numpy().astype(np.float64)
    per_frame = [np.random.default_rng(stream_seed("synth_noise", seed, index, int(f))) for f in t]
    shake = np.stack([gf.random(2) for gf in per_frame]) * (2 * shake_amp) - shake_amp  # (F, 2) pixels
    eps = np.stack([gf.random((3, size, size), dtype=np.float32) for gf in per_frame])  # (F, 3, S, S)
    ys = np.arange(size) + 0.5
    Y = ys.reshape(1, size, 1) - shake[:, 0, None, None]  # world coordinates of each pixel, (F, S, 1)
    X = ys.reshape(1, 1, size) - shake[:, 1, None, None]  # (F, 1, S)
    # Background: a colour with a linear gradient and static clutter rectangles, all moved by the camera shake.
    img = bg + (grad[0] / size * Y + grad[1] / size * X - (grad[0] + grad[1]) / 2)[:, None]  # (F, 3, S, S)
    for b in boxes:
        y0, x0 = b[0] * size, b[1] * size
        h, w = size / 8 + b[2] * size / 4, size / 8 + b[3] * size / 4
        box = ((Y >= y0) & (Y < y0 + h)) & ((X >= x0) & (X < x0 + w))  # (F, S, S)
        img = np.where(box[:, None], bg + 0.4 * b[4:7].reshape(3, 1, 1) - 0.2, img)
    # The flock: glyph centres (F, n) after the motion, wrapped around the frame.
    m = _flock_motion(t, motion, r)
    ry, rx = pos[:, 0] - 0.5, pos[:, 1] - 0.5  # (n,) the layout about the frame centre
    zoom = m["zoom"][:, None] if "zoom" in m else np.ones((len(t), 1))  # (F, 1)
    cy = 0.5 + ry * zoom + (m["oy"][:, None] if "oy" in m else 0)  # (F, n) frame fractions
    cx = 0.5 + rx * zoom + (m["ox"][:, None] if "ox" in m else 0)
    half = size / 2
    dy = (Y[:, None] - ((cy % 1) * size - half)[..., None, None]) % size - half  # (F, n, S, 1): nearest copy on the
    dx = (X[:, None] - ((cx % 1) * size - half)[..., None, None]) % size - half  # (F, n, 1, S)  torus
    a = tilt[None, :] + (m["spin"][:, None] if "spin" in m else 0)  # (F, n)
    scale = 1 / (radius * size * zoom)  # (F, 1): pixels -> glyph radii
    cos, sin = ((np.cos(a) * scale)[..., None, None].astype(np.float32),
                (np.sin(a) * scale)[..., None, None].astype(np.float32))
    dy, dx = dy.astype(np.float32), dx.astype(np.float32)
    u = dx * (mirror * cos) + dy * (mirror * sin)  # (F, n, S, S) glyph-local coordinates
    v = dy * cos - dx * sin
    inside = GLYPHS[glyph](u, v).any(1)  # (F, S, S)
    video = np.where(inside[:, None], fg, img) + (task.noise * 12 ** 0.5) * (eps - 0.5)  # uniform noise, std task.noise
    return torch.from_numpy((np.clip(video, 0, 1) * 255).round().astype(np.uint8))


class SyntheticClips(VideoClips):
    """In-memory synthetic videos: the same items and augmentations as decoded files (frames generated on demand)."""

    def read(self, i: int, pick: Callable[[int], torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        c, idx = self.cfg, pick(self.cfg.synth_length)
        rel, y = self.entries[i]
        return synthetic_frames(int(rel.rsplit("_", 1)[1]), y, idx, SYNTH_TASKS[c.synth_task], c.synth_size,
                                c.synth_seed), idx


def synthetic_entries(cfg: "DataConfig") -> tuple[list[Entry], list[Entry], list[str]]:
    """(train, test, class_names) of the task's first synth_classes classes (0: all); clip ids are unique."""
    names = SYNTH_TASKS[cfg.synth_task].names()[:cfg.synth_classes or None]
    per = cfg.synth_clips_per_class + cfg.synth_test_per_class
    train, test = [], []
    for y, name in enumerate(names):
        for k in range(per):
            (train if k < cfg.synth_clips_per_class else test).append((f"{name}/clip_{y * per + k}", y))
    return train, test, names


# --- build_data and loaders -------------------------------------------------------------------------------------------

@dataclass
class BadSamples:
    """Videos skipped in training on this process (optimizer_step decides the abort over all processes)."""
    pool_size: int
    max_fraction: float
    failed: dict = field(default_factory=dict)  # path -> times skipped
    served: int = 0  # clips delivered

    def record(self, paths: list[str], served: int) -> None:
        self.served += served
        for p in paths:
            self.failed[p] = self.failed.get(p, 0) + 1

    def summary(self) -> dict:
        return {"bad_videos": len(self.failed), "bad_skips": sum(self.failed.values()), "clips_served": self.served}

    def state_dict(self) -> dict:  # saved in checkpoints, so a resumed run keeps counting
        return {"failed": dict(self.failed), "served": self.served}

    def load_state_dict(self, d: dict) -> None:
        self.failed, self.served = dict(d["failed"]), int(d["served"])


@dataclass
class Data:
    """What build_data returns; see the API note at the top of this section."""
    cfg: "DataConfig"
    seed: int
    labeled: VideoClips
    unlabeled: VideoClips
    test: VideoClips
    num_classes: int
    class_names: list
    split_source: str  # committed split folder, "generated", or the list files
    bad: BadSamples
    _loaders: dict = field(default_factory=dict, repr=False)


def build_data(cfg: "DataConfig", seed: int = 0) -> Data:
    """Read the layout or lists, choose the split, check every file exists, and return the datasets."""
    root = Path(cfg.data_root)
    if cfg.dataset == "synthetic":
        train, test, names = synthetic_entries(cfg)
        labeled, unlabeled = class_balanced_split(train, cfg.labeled, cfg.split_seed, "synthetic")
        make = lambda e, n: SyntheticClips("", e, cfg, n)  # noqa: E731
        source = "synthetic"
    else:
        if not cfg.data_root:
            raise UserError(f"data_root is empty: --dataset {cfg.dataset} needs --data-root.\n"
                             + {"ucf101": UCF101_TREE, "hmdb51": HMDB51_TREE, "lists": LISTS_TREE}[cfg.dataset])
        if cfg.dataset == "lists":
            if not (cfg.train_list and cfg.val_list):
                raise UserError(f"--dataset lists needs --train-list and --val-list.\n{LISTS_TREE}")
            _require(root, LISTS_TREE)
            labeled = read_list(cfg.train_list, root, cfg.list_prefix)
            unlabeled = read_list(cfg.unlabeled_list, root, cfg.list_prefix) if cfg.unlabeled_list else []
            test = read_list(cfg.val_list, root, cfg.list_prefix)
            folders: list[set] = [set() for _ in range(1 + max(y for _, y in labeled + unlabeled + test))]
            for rel, y in labeled + unlabeled + test:
                folders[y].add(Path(rel).parent.name)
            empty = [y for y, f in enumerate(folders) if not f]
            if empty:
                raise UserError(f"lists: labels {empty[:10]} have no clip in any list (are the labels 1-based?); "
                                 "labels must be 0 .. num_classes-1")
            # A class's name is the folder that holds all its videos; if they are spread over several, its number.
            names = [f.pop() if len(f) == 1 else str(y) for y, f in enumerate(folders)]
            source = f"lists {cfg.train_list}"
        else:
            train, test, names = (read_ucf101 if cfg.dataset == "ucf101" else read_hmdb51)(root, cfg.split)
            labeled, unlabeled, source = select_split(cfg.dataset, train, cfg.labeled, cfg.split_seed, cfg.split)
        make = lambda e, n: VideoClips(root, e, cfg, n)  # noqa: E731
    ds = [make(e, n) for e, n in ((labeled, "labeled"), (unlabeled, "unlabeled"), (test, "test"))]
    if cfg.dataset != "synthetic":  # every listed video must exist: a typo in data_root should not cost a GPU hour
        missing = [f"{d.path(i)} ({d.name} set)" for d in ds for i in range(len(d)) if not os.path.isfile(d.path(i))]
        if missing:
            raise FileNotFoundError(f"{len(missing)} of {sum(map(len, ds))} listed videos do not exist under "
                                    f"{ds[0].root}; first {min(10, len(missing))}:\n  " + "\n  ".join(missing[:10]))
    if len(names) < 2:
        raise UserError(f"{cfg.dataset}: {len(names)} class; classification needs at least 2 (logit standardization "
                        "divides by the spread of the class logits)")
    if not len(ds[0]):
        raise UserError("the labeled set is empty")
    if cfg.mu > 0 and not len(ds[1]):
        raise UserError("the unlabeled pool is empty (labeled = 1.0?): use --mu 0 for labeled-only training")
    return Data(cfg, seed, *ds, num_classes=len(names), class_names=list(names), split_source=source,
                bad=BadSamples(len(ds[0]) + len(ds[1]), cfg.max_bad_fraction))


def steps_per_epoch(data: Data, world: int = 1) -> int:
    """Steps in one pass over the unlabeled pool per rank (partial last batch dropped); with mu = 0 the labeled set."""
    c = data.cfg
    if c.mu > 0:
        return math.ceil(len(data.unlabeled) / world) // (c.mu * c.labeled_batch)
    return max(1, math.ceil(len(data.labeled) / world) // c.labeled_batch)


def train_keys(data: Data, epoch: int, step: int, rank: int = 0, world: int = 1) -> list[tuple]:
    """Dataset keys (stream, index, augmentation seed) of one step's samples on one rank, a pure function of (seed,
    epoch, step, rank, world). Like DistributedSampler, ranks take interleaved slots of one global order."""
    c, seed = data.cfg, data.seed
    keys, n_l = [], len(data.labeled)
    for q in range(step * c.labeled_batch, (step + 1) * c.labeled_batch):
        g = q * world + rank  # global position in the endless labeled stream: reshuffled after every pass
        perm = torch.randperm(n_l, generator=torch.Generator().manual_seed(
            stream_seed("labeled_order", seed, epoch, g // n_l)))
        keys.append((0, int(perm[g % n_l]), stream_seed("sample", seed, epoch, 0, g)))
    if c.mu > 0:
        n_u = len(data.unlabeled)
        perm = torch.randperm(n_u, generator=torch.Generator().manual_seed(stream_seed("unlabeled_order", seed, epoch)))
        per = c.mu * c.labeled_batch
        for q in range(step * per, (step + 1) * per):
            g = q * world + rank  # positions past n_u wrap around, as DistributedSampler pads
            keys.append((1, int(perm[g % n_u]), stream_seed("sample", seed, epoch, 1, g)))
    return keys


class _TrainSet(torch.utils.data.Dataset):
    """Labeled and unlabeled sets behind one key space, so one worker pool serves both streams in step."""

    def __init__(self, labeled: VideoClips, unlabeled: VideoClips):
        self.sets = (labeled, unlabeled)

    def __getitem__(self, key):
        stream, i, seed = key
        return dict(self.sets[stream].train_item(i, seed, strong=stream == 1), stream=stream)


def _collate_train(items: list[dict]) -> tuple[dict, dict | None, list[str], int]:
    """-> (labeled batch, unlabeled batch or None, paths of the videos skipped, clips served)."""
    streams, bad = ([], []), []
    for x in items:
        bad += [p for p in x.pop("bad").split("\n") if p]
        streams[x.pop("stream")].append(x)
    lab, unl = (torch.utils.data.default_collate(xs) if xs else None for xs in streams)  # tensors stacked
    return lab, unl, bad, len(items)


class _StepSampler:
    """Batch sampler over steps start..end of one epoch; set() before each iter() (the loader keeps its workers)."""

    def __init__(self, data: Data, rank: int, world: int):
        self.data, self.rank, self.world, self.epoch, self.start, self.end = data, rank, world, 0, 0, None

    def _end(self) -> int:
        n = steps_per_epoch(self.data, self.world)
        return n if self.end is None else min(n, self.end)

    def __iter__(self):
        for step in range(self.start, self._end()):
            yield train_keys(self.data, self.epoch, step, self.rank, self.world)

    def __len__(self):
        return self._end() - self.start


def resolve_workers(workers: int) -> int:
    """Loader workers per process: `workers` if >= 0, else this process's share of the usable CPUs (torchrun's local
    processes split them) minus one for the training process, between 1 and 8."""
    if workers >= 0:
        return workers
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(8, cpus // int(os.environ.get("LOCAL_WORLD_SIZE", 1)) - 1))


def _loader(data: Data, dataset, batch_sampler, collate, persistent: bool) -> torch.utils.data.DataLoader:
    c, workers = data.cfg, resolve_workers(data.cfg.workers)
    if workers > 0:  # once, and after multiprocessing's own exit function, so that it runs before it
        atexit.unregister(_end_loader_workers)
        atexit.register(_end_loader_workers)
    return torch.utils.data.DataLoader(
        dataset, batch_sampler=batch_sampler, collate_fn=collate, num_workers=workers,
        pin_memory=c.pin_memory and torch.cuda.is_available(), persistent_workers=persistent and workers > 0,
        prefetch_factor=c.prefetch if workers > 0 else None, worker_init_fn=_ignore_stop_signals,
        # Its own generator: a new iterator otherwise draws its base seed from the global RNG, which would shift the
        # model's dropout stream between an uninterrupted run and a resumed one.
        generator=torch.Generator().manual_seed(stream_seed("loader", data.seed)))


def _ignore_stop_signals(worker_id: int) -> None:
    """In a loader worker: SIGTERM, SIGINT and SIGUSR1 are the training process's to handle (stop_on_signals). A
    scheduler that signals every process (SLURM), or Ctrl-C (the terminal signals the whole process group), would
    otherwise end the workers, and the loader would fail before the graceful stop. _end_loader_workers ends them."""
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
        signal.signal(sig, signal.SIG_IGN)


def _end_loader_workers() -> None:
    """At exit: kill the loader workers still running (persistent ones, or those of a loader an exception kept), as
    multiprocessing's exit function ends every daemonic child, but with SIGKILL: they ignore its SIGTERM
    (_ignore_stop_signals), and it would then wait for them forever."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # torch's handler would report each killed worker as a failure
    for p in multiprocessing.active_children():
        if p.daemon:
            p.kill()


def train_batches(data: Data, epoch: int, start_step: int = 0, rank: int = 0, world: int = 1,
                  end_step: int | None = None):
    """Yield (labeled batch, unlabeled batch or None) for steps start_step .. end_step-1 of `epoch`; counts data.bad."""
    key = ("train", rank, world)
    if key not in data._loaders:
        sampler = _StepSampler(data, rank, world)
        data._loaders[key] = (_loader(data, _TrainSet(data.labeled, data.unlabeled), sampler, _collate_train,
                                      persistent=True), sampler)
    loader, sampler = data._loaders[key]
    sampler.epoch, sampler.start, sampler.end = epoch, start_step, end_step
    for lab, unl, bad, served in _worker_errors(loader):
        data.bad.record(bad, served)
        yield lab, unl


def _worker_errors(batches):
    """Iterate a DataLoader; a worker's UserError is re-raised without the worker's traceback, as one line."""
    try:
        yield from batches
    except UserError as e:
        raise UserError(str(e).rsplit("UserError: ", 1)[-1].strip()) from e


class _EvalSet(torch.utils.data.Dataset):
    def __init__(self, test: VideoClips, full: bool):
        self.test, self.full = test, full

    def __getitem__(self, i):
        try:
            return self.test.test_item(i, self.full)
        except BadVideo as e:
            raise UserError(f"test video {e} (an unreadable test video is an error: skipping it would change the "
                            "test set)") from e


def eval_batches(data: Data, full: bool = True, rank: int = 0, world: int = 1):
    """Yield {"views": uint8 (B, V, T, C, H, W), "label", "index"} over this rank's share of the test set (every
    world-th video, no padding, so summed counts are exact). full=False: one centre clip × centre crop (V = 1)."""
    shard = list(range(rank, len(data.test), world))
    batches = [shard[i:i + data.cfg.eval_batch] for i in range(0, len(shard), data.cfg.eval_batch)]
    if batches:
        yield from _worker_errors(_loader(data, _EvalSet(data.test, full), batches, torch.utils.data.default_collate,
                                           persistent=False))


# ==== Semi-supervised objectives (pure functions) =====================================================================
# Shapes as in the model section: B samples, K classes, T frames, N patches per frame, D token width. Every loss is
# computed in float32 whatever the logits' dtype: softmax/log over 101 classes in bf16 (~3 significant digits) is
# noisier than the small KL values the student learns from.

def standardize_logits(z: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Logit standardization Z(z) = (z - mean(z)) / (std(z) + eps) over the class axis (Sun et al., CVPR 2024).

    The std is the unbiased one (N-1), as the official code. Z ignores a per-sample shift and positive scale, so teacher
    and student are compared by the *shape* of their logits, not by their magnitude (which the EMA teacher and the
    strong-view student do not share). Needs K >= 2.
    """
    mean = z.mean(dim=-1, keepdim=True)
    std = z.std(dim=-1, keepdim=True)  # correction=1: unbiased, as the official code
    return (z - mean) / (std + eps)


def standardized_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, tau: float = 2.0,
                    mask: torch.Tensor | None = None, standardize: bool = True) -> torch.Tensor:
    """Logit-aligned consistency: tau^2 * KL( softmax(Z(t)/tau) || softmax(Z(s)/tau) ), a float32 scalar.

    As Sun et al., "Logit Standardization in Knowledge Distillation" (CVPR 2024): summed over classes, averaged over
    the batch, teacher detached; Full-SVFormer uses it between the EMA teacher on the weak view and the student on the
    strong view. mask: optional (B,) per-sample weight; the sum is still divided by B, as FixMatch/SVFormer's masked
    losses (the paper does not say whether it masks).
    standardize=False: the plain KL that logit standardization is measured against.
    """
    if student_logits.shape != teacher_logits.shape or student_logits.dim() != 2:
        raise ValueError(f"standardized_kl: expected two (B, K) tensors, got {tuple(student_logits.shape)} "
                         f"and {tuple(teacher_logits.shape)}")
    z = standardize_logits if standardize else (lambda x: x)
    log_p_s = F.log_softmax(z(student_logits.float()) / tau, dim=-1)
    log_p_t = F.log_softmax(z(teacher_logits.detach().float()) / tau, dim=-1)
    # KL(p_t || p_s) = sum_c p_t (log p_t - log p_s); log_target keeps it exact where p_t underflows.
    kl = F.kl_div(log_p_s, log_p_t, reduction="none", log_target=True).sum(dim=-1)  # (B,)
    if mask is not None:
        kl = kl * mask.to(device=kl.device, dtype=kl.dtype)
    return kl.sum() / kl.shape[0] * tau ** 2


class ANLResult(NamedTuple):
    loss: torch.Tensor  # 0-d float32
    k: torch.Tensor  # 0-d int64: the k whose negatives the loss used
    batch_k: torch.Tensor  # 0-d int64: the smallest k that holds on this batch (step 2 below)
    num_negatives: torch.Tensor  # 0-d int64: negative (sample, class) pairs, after dropping
    negatives: torch.Tensor  # (B, K) bool: the negative pairs themselves (for diagnostics)


def adaptive_negative_loss(student_strong_logits: torch.Tensor, teacher_weak_logits: torch.Tensor,
                           drop_threshold: float = 0.95 ** 2, k: torch.Tensor | int | None = None) -> ANLResult:
    """Adaptive Negative Learning (ANL) of FullMatch: Chen et al., "Boosting Semi-Supervised Learning by Exploiting All
    Unlabeled Data", CVPR 2023. No host sync.

    1. y = argmax teacher. 2. batch_k = the smallest k in 2..K with y in the student's top-k for every sample: y's rank
    in the student's order is the number of strictly larger logits (ties count for y), so batch_k = clamp(max rank + 1,
    2, K). 3. Negatives: classes outside the teacher's top-k, minus those whose student probability exceeds
    drop_threshold (FullMatch: 0.95^2). 4. loss = mean over samples of the sum over negatives of -log(1 - p_s + 1e-10).
    k: None = this batch's batch_k; training passes the max over the previous step's micro-batches on every rank, so
    that k belongs to the whole unlabeled batch, whatever the processes and micro-batches (see train()).
    """
    s = student_strong_logits.float()
    t = teacher_weak_logits.detach().float()
    if s.shape != t.shape or s.dim() != 2:
        raise ValueError(f"adaptive_negative_loss: expected two (B, K) tensors, got {tuple(s.shape)} "
                         f"and {tuple(t.shape)}")
    B, K = s.shape
    # One stable descending sort of the teacher gives y (its first entry, as argmax) and every class's teacher rank,
    # so the top-k test is `rank < k` with k a tensor (no .item()).
    order_t = t.argsort(dim=-1, descending=True, stable=True)  # (B, K) class ids, best first
    y = order_t[:, :1]  # (B, 1)
    rank_t = torch.empty_like(order_t).scatter_(-1, order_t, torch.arange(K, device=t.device).expand(B, K))
    rank_y = (s.detach() > s.detach().gather(-1, y)).sum(dim=-1)  # (B,) 0-based rank of y in the student's order
    batch_k = (rank_y.max() + 1).clamp(2, K) if B else torch.full((), 2, device=s.device)
    k = batch_k if k is None else k
    p_s = s.softmax(dim=-1)
    negative = (rank_t >= k) & (p_s.detach() <= drop_threshold)  # (B, K)
    nl = -torch.log(1 - p_s + 1e-10)  # (B, K); finite everywhere thanks to the 1e-10, so masking by * is safe
    loss = (nl * negative).sum() / max(B, 1)
    return ANLResult(loss, torch.as_tensor(k, device=s.device), batch_k, negative.sum(), negative)


def sample_lambda(beta: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """lambda ~ Beta(beta, beta) for Tube TokenMix (one per batch, as SVFormer), a 0-d float64 tensor on the generator's
    device, with no host sync: X / (X + Y) with X, Y ~ Gamma(beta), as torch has no seeded Beta sampler."""
    device = generator.device if generator is not None else None
    g = torch._standard_gamma(torch.full((2,), float(beta), dtype=torch.float64, device=device), generator=generator)
    return g[0] / g.sum()


def tube_mask(batch: int, num_patches: int, lam: float | torch.Tensor, generator: torch.Generator | None = None,
              device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Tube TokenMix mask (SVFormer: Xing et al., "SVFormer: Semi-supervised Video Transformer for Action Recognition",
    CVPR 2023) -> mask (B, N) bool, lam_a (B,) float32.

    Per sample, a random set of round((1 - lam) * N) of the N patch positions is True (taken from clip b, the rest from
    clip a); tube_token_mix applies it to every frame, so the mixed clip keeps coherent motion. lam: a float, a 0-d or
    a (B,) tensor. lam_a is the realised share of clip a, 1 - round((1 - lam) N) / N, which the targets must use (the
    official code mixes its targets with the nominal lambda: they disagree with its inputs by up to 1/N).
    """
    gen_device = generator.device if generator is not None else device
    lam_t = torch.as_tensor(lam, dtype=torch.float64, device=gen_device).expand(batch)
    n_b = torch.round((1 - lam_t) * num_patches).long().clamp(0, num_patches)  # (B,) patches taken from clip b
    # A uniformly random subset of size n_b per sample: the n_b positions with the smallest noise.
    noise = torch.rand(batch, num_patches, generator=generator, device=gen_device)
    rank = noise.argsort(dim=-1).argsort(dim=-1)  # (B, N) rank of each position's noise
    mask = rank < n_b[:, None]
    lam_a = (1 - n_b.double() / num_patches).float()
    if device is not None:
        mask, lam_a = mask.to(device, non_blocking=True), lam_a.to(device, non_blocking=True)
    return mask, lam_a


def tube_token_mix(tokens_a: torch.Tensor, tokens_b: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Tube TokenMix of (B, T, N, D) patch tokens (SVFormer): b's token where mask (B, N) is True, else a's, in every
    frame. The tokens come before the position and time embeddings, so the mixed clip gets one consistent set."""
    if tokens_a.shape != tokens_b.shape or tokens_a.dim() != 4:
        raise ValueError(f"tube_token_mix: expected two (B, T, N, D) tensors, got {tuple(tokens_a.shape)} "
                         f"and {tuple(tokens_b.shape)}")
    B, T, N, D = tokens_a.shape
    if mask.shape != (B, N):
        raise ValueError(f"tube_token_mix: mask must be (B, N) = {(B, N)}, got {tuple(mask.shape)}")
    return torch.where(mask[:, None, :, None], tokens_b, tokens_a)  # mask broadcast over T and D: a tube


def tokenmix_targets(teacher_probs: torch.Tensor, perm: torch.Tensor, lam_a: torch.Tensor | float,
                     threshold: float) -> torch.Tensor:
    """Tube TokenMix target (SVFormer, Xing et al., CVPR 2023): lam_a * y_a + (1 - lam_a) * y_b, clip b of sample i
    being clip perm[i]; y is one-hot(argmax) where the teacher's confidence >= threshold (delta), else its soft
    probabilities. Returns (B, K) float32, detached."""
    p = teacher_probs.detach().float()
    conf, idx = p.max(dim=-1)
    one_hot = torch.zeros_like(p).scatter_(-1, idx[:, None], 1.0)  # not F.one_hot: it checks the range with .item()
    y = torch.where((conf >= threshold)[:, None], one_hot, p)  # (B, K)
    lam_a = torch.as_tensor(lam_a, dtype=p.dtype, device=p.device).reshape(-1, 1)  # (B, 1) or (1, 1)
    return lam_a * y + (1 - lam_a) * y[perm]


def tokenmix_weight(teacher_probs: torch.Tensor, perm: torch.Tensor, lam_a: torch.Tensor,
                    threshold: float) -> torch.Tensor:
    """Per-sample weight of the mix loss in the official SVFormer code (not in the paper): lam_a * mask_a + (1 - lam_a)
    * mask_b, mask = (teacher confidence >= threshold). Returns (B,) float32."""
    m = (teacher_probs.detach().float().max(dim=-1).values >= threshold).float()
    lam_a = torch.as_tensor(lam_a, dtype=m.dtype, device=m.device)
    return lam_a * m + (1 - lam_a) * m[perm]


def tokenmix_loss(student_logits: torch.Tensor, target: torch.Tensor,
                  weight: torch.Tensor | None = None) -> torch.Tensor:
    """L_mix of SVFormer: MSE between the student's *raw logits* on the mixed clip and the target, averaged over classes
    then over the batch, as the official code (ChenHsing/SVFormer, tools/train_net_emamix.py); weight: optional (B,)
    (tokenmix_weight)."""
    per_sample = (student_logits.float() - target.detach().float()).pow(2).mean(dim=-1)  # (B,)
    if weight is not None:
        per_sample = per_sample * weight.to(device=per_sample.device, dtype=per_sample.dtype)
    return per_sample.mean()


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """EMA teacher (SVFormer, Xing et al., CVPR 2023): teacher <- m * teacher + (1 - m) * student, in place, in one
    fused foreach lerp. The teacher keeps its own dtype (fp32: with m = 0.99 an update is 1% of the weight, below
    bf16's resolution); buffers are copied, not averaged."""
    t_params = list(teacher.parameters())
    s_params = [p.detach().to(q.dtype) for p, q in zip(student.parameters(), t_params, strict=True)]
    # lerp(t, s, w) = t + w (s - t) = m t + (1 - m) s with w = 1 - m; exact at m = 0 and m = 1.
    torch._foreach_lerp_(t_params, s_params, 1.0 - momentum)
    for t_buf, s_buf in zip(teacher.buffers(), student.buffers()):
        t_buf.copy_(s_buf)


# ==== Evaluation ======================================================================================================

@torch.no_grad()
def evaluate(models: dict[str, nn.Module], data: "Data", device: torch.device, amp: str = "none",
             full: bool = True, rank: int = 0, world: int = 1) -> dict[str, dict]:
    """Top-1/top-5 and per-class top-1 (%) of each model, decoding the test set once for all. full=True: test_clips x
    test_crops views per video, logits averaged (SVFormer sums them: same argmax); full=False: one centre view. Under
    DDP each rank evaluates every world-th video and the counts are summed, so the result is exact."""
    K = data.num_classes
    counts = {n: torch.zeros(3, K, dtype=torch.float64, device=device) for n in models}  # top1, top5, total per class
    was_training = {n: m.training for n, m in models.items()}
    for m in models.values():
        m.eval()
    total = math.ceil(len(data.test) / world)
    d = data.cfg
    shown = f"{d.test_clips}x{d.test_crops} views" if full and d.test_clips * d.test_crops > 1 else "1 view"
    bar = progress_bar(rank, iterable=eval_batches(data, full, rank, world), total=math.ceil(total / d.eval_batch),
                       unit="video", unit_scale=d.eval_batch,  # in videos (the last batch may be partial)
                       desc=f"eval ({shown})", leave=False)
    failed = ""
    try:
        for b in bar:  # each model's top-1 hits, top-5 hits and videos per class, added to its counts (3, K)
            views = b["views"].to(device, non_blocking=True)  # (B, V, T, C, H, W) uint8
            B, V = views.shape[:2]
            x = normalize_clips(views.flatten(0, 1), data.cfg.mean, data.cfg.std)  # (B*V, C, T, H, W)
            y = b["label"].to(device, non_blocking=True)
            for name, m in models.items():
                with autocast_context(device, amp):
                    logits = m(x).float().view(B, V, K).mean(dim=1)  # (B, K): views averaged
                top5 = logits.topk(min(5, K), dim=-1).indices  # (B, 5)
                c = counts[name]
                c[0].index_add_(0, y, (top5[:, 0] == y).double())
                c[1].index_add_(0, y, (top5 == y[:, None]).any(dim=-1).double())
                c[2].index_add_(0, y, torch.ones_like(y, dtype=torch.float64))
    except UserError as e:  # an unreadable test video: every process stops, not only the one that met it
        failed = str(e)
    if world > 1:
        flag = torch.tensor(float(bool(failed)), device=device)
        dist.all_reduce(flag)
        failed = failed or ("a test video failed to decode on another process" if flag.item() else "")
    if failed:
        raise UserError(failed)
    out = {}
    for name, c in counts.items():
        if world > 1:
            dist.all_reduce(c)
        n = c[2].sum().clamp(min=1)
        per_class = (100 * c[0] / c[2].clamp(min=1)).tolist()
        out[name] = {"top1": float(100 * c[0].sum() / n), "top5": float(100 * c[1].sum() / n),
                     "per_class_top1": [round(v, 3) for v in per_class], "videos": int(c[2].sum())}
        models[name].train(was_training[name])
    return out


# ==== Training ========================================================================================================

def init_distributed() -> tuple[int, int, int]:
    """(rank, world, local_rank) under torchrun (env vars set), else (0, 1, 0). NCCL on CUDA, gloo on CPU."""
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return 0, 1, 0
    local = int(os.environ.get("LOCAL_RANK", 0))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size(), local


def check_config(cfg: Config) -> None:
    """Combinations of fields that the model or the loader cannot honour exactly, each a UserError naming its keys;
    run before any work (setup_run, hence stage 0 too). Each field's own range is checked by its dataclass."""
    m, d, t = cfg.model, cfg.data, cfg.train
    if d.img_size % m.patch_size:
        raise UserError(f"data.img_size={d.img_size} is not a multiple of model.patch_size={m.patch_size}: the patch "
                        f"grid would leave out the last {d.img_size % m.patch_size} pixel rows and columns")
    span = (d.num_frames - 1) * d.clip_stride + 1  # frames from a clip's first to its last
    if d.dataset == "synthetic" and span > d.synth_length:
        raise UserError(f"data.num_frames={d.num_frames} at data.clip_stride={d.clip_stride} span {span} frames, more "
                        f"than the synthetic videos' data.synth_length={d.synth_length}: a clip would repeat its "
                        "last frame")
    if d.mu > 0 and d.temporal_warp_p > 0 and max(d.warp_keys) > d.num_frames:
        raise UserError(f"data.temporal_warp_keys={d.temporal_warp_keys!r}: temporal warping cannot pick "
                        f"{max(d.warp_keys)} key frames of a clip of data.num_frames={d.num_frames}")
    if d.mu > 0 and t.gamma_mix > 0 and d.mu * d.labeled_batch < 2:
        raise UserError(f"train.gamma_mix={t.gamma_mix}: Tube TokenMix mixes each unlabeled clip with another of its "
                        f"micro-batch, which holds data.mu x data.labeled_batch = {d.mu * d.labeled_batch} (per "
                        "process): raise --mu or --labeled-batch, or set --gamma-mix 0")
    check_views(d)


def check_views(d: DataConfig) -> None:
    """The test views (eval, tools/predict.py) must differ: the synthetic clips are square and synth_length long."""
    if d.dataset != "synthetic":
        return  # real videos are checked as they are decoded: a short one repeats frames, as the official code does
    if d.test_crops > 1:
        raise UserError(f"data.test_crops={d.test_crops}: the synthetic frames are square, so the crops along their "
                        "long side would be one view repeated: use --test-crops 1")
    room = d.synth_length - ((d.num_frames - 1) * d.clip_stride + 1)  # the last possible clip start
    if d.test_clips > 1 and room < d.test_clips - 1:
        raise UserError(f"data.test_clips={d.test_clips}: synthetic videos of data.synth_length={d.synth_length} "
                        f"frames hold {max(room, 0) + 1} distinct clips of data.num_frames={d.num_frames} at "
                        f"data.clip_stride={d.clip_stride}")


def check_batches(data: Data, global_batch: int, accum: int, world: int) -> int:
    """Micro-batches per epoch per process, or a UserError when the split cannot fill one optimizer step."""
    c, micro = data.cfg, steps_per_epoch(data, world)
    if micro < accum:
        raise UserError(f"an epoch has {micro} micro-batch(es) of {c.labeled_batch} labeled and "
                        f"{c.mu * c.labeled_batch} unlabeled clips per process, fewer than the {accum} that make one "
                        f"step of train.global_batch={global_batch} over {world} process(es): lower --global-batch or "
                        "--mu, or use more clips")
    if len(data.labeled) < global_batch:
        raise UserError(f"the labeled set has {len(data.labeled)} clips, fewer than train.global_batch={global_batch}:"
                        " an optimizer step would use some twice; lower --global-batch or raise --labeled")
    return micro


def batch_layout(global_batch: int, labeled_batch: int, world: int) -> tuple[int, int]:
    """(labeled clips per micro-batch per process, micro-batches per step) making `global_batch` over `world`
    processes: labeled_batch if it divides each process's share, else the largest smaller one that does."""
    if global_batch % world:
        raise UserError(f"global_batch={global_batch} labeled clips cannot be split evenly over {world} processes: "
                        f"use a --global-batch that is a multiple of {world}")
    share = global_batch // world
    micro = max(b for b in range(1, min(labeled_batch, share) + 1) if share % b == 0)
    return micro, share // micro


def resolve_amp(amp: str, device: torch.device) -> str:
    if amp == "auto":
        return ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if device.type == "cuda" else "none"
    if amp == "fp16" and device.type == "cpu":
        raise UserError("--amp fp16 needs CUDA; use --amp bf16 or none on CPU")
    return amp


def make_optimizer(model: nn.Module, tcfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD-Nesterov (SVFormer) or AdamW. Norms, biases and the cls/pos/time embeddings get no weight decay."""
    no_decay = ("cls_token", "pos_embed", "time_embed")
    decay, rest = [], []
    for n, p in model.named_parameters():
        if p.requires_grad:
            (rest if p.ndim <= 1 or n.endswith(no_decay) else decay).append(p)
    groups = [{"params": decay, "weight_decay": tcfg.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    if tcfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=tcfg.lr, momentum=tcfg.momentum, nesterov=True)
    return torch.optim.AdamW(groups, lr=tcfg.lr, betas=(tcfg.momentum, 0.999),
                             fused=next(model.parameters()).is_cuda or None)  # fused: one kernel per group on CUDA


def lr_at(epoch_progress: float, tcfg: TrainConfig) -> float:
    """Learning rate at a (fractional) epoch: linear warmup, then step decay at the milestones or cosine to 0."""
    if tcfg.warmup_epochs > 0 and epoch_progress < tcfg.warmup_epochs:
        return tcfg.lr * epoch_progress / tcfg.warmup_epochs
    if tcfg.schedule == "cosine":
        span = max(tcfg.epochs - tcfg.warmup_epochs, 1e-9)
        return 0.5 * tcfg.lr * (1 + math.cos(math.pi * min(1.0, (epoch_progress - tcfg.warmup_epochs) / span)))
    milestones = [float(m) for m in tcfg.lr_milestones.split(",") if m.strip()]
    return tcfg.lr * tcfg.lr_gamma ** sum(epoch_progress >= m for m in milestones)


def ssl_weight_at(epoch_progress: float, tcfg: TrainConfig) -> float:
    """Factor on the unlabeled losses: 0 in the supervised warm-up, then a linear ramp to 1 over ssl_rampup_epochs:
    a fresh head's first pseudo-labels are noise, which should not steer the student."""
    after = epoch_progress - tcfg.supervised_warmup_epochs
    if after < 0:
        return 0.0
    return 1.0 if tcfg.ssl_rampup_epochs <= 0 else min(1.0, after / tcfg.ssl_rampup_epochs)


def ssl_losses(student: nn.Module, teacher: nn.Module, lab: dict, unl: dict | None, cfg: Config,
               device: torch.device, amp: str, gen: torch.Generator, ssl_weight: float = 1.0,
               anl_k: torch.Tensor | None = None, anl_on: bool = True) -> tuple[torch.Tensor, dict]:
    """One micro-batch of Full-SVFormer -> (weighted loss, detached terms for logging), with no host sync:

    loss = CE(student(labeled weak), y) + ssl_weight * (gamma_kl * standardized_kl(student(strong), teacher(weak))
           + gamma_mix * tokenmix_loss(student(TubeTokenMix(strong_a, strong_b)), mixed teacher targets)
           + gamma_nl * adaptive_negative_loss(student(strong), teacher(weak), k=anl_k) [if anl_on])
    Labeled, strong and token-mixed clips go through ONE student forward: the mixed clips are made from the strong
    clips' patch tokens inside it (token_hook). terms["anl_batch_k"] is this micro-batch's measurement of ANL's k.
    lab: {"weak": uint8 (Bl, T, C, H, W), "label": long (Bl,)}; unl: {"weak", "strong": uint8 (Bu, T, C, H, W),
    optionally "warp": long (Bu, T) and "label": long (Bu,)}. unl's labels only measure terms["pseudo_label_acc"] (the
    teacher's accuracy on the clips whose label is known, >= 0); without them, or with -1 everywhere, it is NaN:
    unknown. Truly unlabeled data needs none, except for the oracle diagnostic (oracle_pseudo_labels).
    """
    d, t = cfg.data, cfg.train
    xl = normalize_clips(lab["weak"].to(device, non_blocking=True), d.mean, d.std)  # (Bl, C, T, H, W)
    yl = lab["label"].to(device, non_blocking=True)
    Bl = xl.shape[0]
    if unl is None:  # labeled-only (mu = 0)
        with autocast_context(device, amp):
            logits_l = student(xl)
        ce = F.cross_entropy(logits_l.float(), yl)
        return ce, {"loss_ce": ce.detach()}
    strong = unl["strong"].to(device, non_blocking=True)  # (Bu, T, C, H, W) uint8, not warped
    Bu, T = strong.shape[:2]
    warp = unl["warp"].to(device, non_blocking=True) if "warp" in unl else torch.arange(T, device=device).expand(Bu, T)
    if d.temporal_warp_on == "all":
        strong = strong.gather(1, warp[:, :, None, None, None].expand_as(strong))
    xs = channel_dropout(normalize_clips(strong, d.mean, d.std), d.strong_channel_dropout, gen)
    y_true = unl["label"].to(device, non_blocking=True) if "label" in unl else None  # diagnostics and the oracle only
    if t.oracle_pseudo_labels and (y_true is None or bool((y_true < 0).any())):  # a host sync: diagnostic runs only
        raise UserError("train.oracle_pseudo_labels: the oracle replaces the teacher by the unlabeled clips' true "
                        "labels, but this batch has none (no 'label', or -1): use data whose every clip is labeled")
    if not t.oracle_pseudo_labels:
        xw = normalize_clips(unl["weak"].to(device, non_blocking=True), d.mean, d.std)
        with torch.inference_mode(), autocast_context(device, amp):
            t_logits = teacher(xw).float()
        t_logits = t_logits.clone()  # an ordinary tensor: inference tensors cannot be saved for backward
    use_mix = t.gamma_mix > 0
    if use_mix:
        perm = torch.randperm(Bu, generator=gen, device=gen.device).to(device, non_blocking=True)
        N = (d.img_size // cfg.model.patch_size) ** 2
        mask, lam_a = tube_mask(Bu, N, sample_lambda(t.mix_beta, gen), gen, device)

        def mix_hook(tokens):  # (Bl + Bu, T, N, D) -> (Bl + 2 Bu, T, N, D): append the mixed strong clips
            a = tokens[Bl:]
            b = a[perm]  # the partners, temporally warped (patch tokens are per frame, so frames gather as tokens)
            if d.temporal_warp_on == "partners":
                b = b.gather(1, warp[perm][:, :, None, None].expand_as(b))
            return torch.cat([tokens, tube_token_mix(a, b, mask)])
    with autocast_context(device, amp):
        logits = student(torch.cat([xl, xs]), token_hook=mix_hook if use_mix else None).float()
    logits_l, logits_s = logits[:Bl], logits[Bl:Bl + Bu]
    if t.oracle_pseudo_labels:  # diagnostic: a teacher that is always right and sure (softmax 0.9999 at 10)
        t_logits = torch.zeros_like(logits_s).scatter_(-1, y_true[:, None], 10.0)
    t_probs = t_logits.softmax(dim=-1)
    ce = F.cross_entropy(logits_l, yl)
    conf = t_probs.max(dim=-1).values
    kl_mask = (conf >= t.kl_threshold).float() if t.kl_threshold > 0 else None
    if t.kl_weight == "confidence":  # Z(t) looks the same for a sure and an unsure teacher: give the KL back its weight
        kl_mask = conf if kl_mask is None else kl_mask * conf
    kl = standardized_kl(logits_s, t_logits, t.kl_tau, kl_mask, standardize=t.kl_standardize)
    anl = adaptive_negative_loss(logits_s, t_logits, t.nl_drop_threshold, anl_k)
    unlabeled = t.gamma_kl * kl + (t.gamma_nl if anl_on else 0.0) * anl.loss  # k is measured all the same
    terms = {"loss_ce": ce.detach(), "loss_kl": kl.detach(), "loss_nl": anl.loss.detach(), "anl_k": anl.k,
             "anl_batch_k": anl.batch_k, "anl_negatives": anl.num_negatives / Bu,
             "mask_ratio": (conf >= t.mix_threshold).float().mean()}
    if t.gamma_ce_strong > 0:  # SVFormer's L_un: hard pseudo-labels, masked as its L_mix (conf >= delta), mean over B
        ce_s = (F.cross_entropy(logits_s, t_logits.argmax(-1), reduction="none") * (conf >= t.mix_threshold)).mean()
        unlabeled = unlabeled + t.gamma_ce_strong * ce_s
        terms["loss_ce_strong"] = ce_s.detach()
    if use_mix:
        target = tokenmix_targets(t_probs, perm, lam_a, t.mix_threshold)
        weight = tokenmix_weight(t_probs, perm, lam_a, t.mix_threshold) if t.mix_weighted else None
        mix = tokenmix_loss(logits[Bl + Bu:], target, weight)
        unlabeled = unlabeled + t.gamma_mix * mix
        terms["loss_mix"] = mix.detach()
    # Diagnostics (no host sync). The KL's gradient scales as tau * gamma_kl / std(student logits), so the student's
    # logit scale tells how hard the KL pulls; ANL's negative mass is what its loss pushes down.
    p_s = logits_s.detach().softmax(dim=-1)
    terms["logit_scale"] = logits_s.detach().std(dim=-1).mean()
    terms["kl_used"] = kl_mask.mean() if kl_mask is not None else torch.ones((), device=device)  # mean clip weight
    terms["anl_neg_mass"] = (p_s * anl.negatives).sum(dim=-1).mean()
    # Pseudo-label accuracy against the hidden true labels (the key SSL diagnostic); label -1 = unknown. NaN (0 / 0,
    # no host sync) when no clip's label is known: an accuracy that cannot be measured is not 0. ANL's negatives
    # that hit the true class, per clip: log_train turns them into the negatives' precision.
    if y_true is None:
        terms["pseudo_label_acc"] = torch.full((), float("nan"), device=device)
    else:
        known = y_true >= 0
        terms["pseudo_label_acc"] = ((t_logits.argmax(-1) == y_true) & known).sum() / known.sum()
        neg_known = anl.negatives & known[:, None]  # (Bu, K)
        terms["anl_known_negatives"] = neg_known.sum() / Bu
        terms["anl_true_negatives"] = neg_known.gather(-1, y_true.clamp(min=0)[:, None]).sum() / Bu
    return ce + ssl_weight * unlabeled, terms


@dataclass
class Run:
    """One training process: what setup_run builds, and what the loop, the optimizer step and the checkpoints use."""
    cfg: Config  # resolved, with the labeled_batch this layout uses
    rank: int
    world: int
    device: torch.device
    amp: str
    run_dir: Path
    data: Data
    model: TimeSformer  # the student's weights: what the optimizer, the EMA and the checkpoints see
    teacher: TimeSformer  # the EMA teacher, fp32, eval mode, no grad
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler  # enabled only for fp16
    gen: torch.Generator  # the device stream: Tube TokenMix and channel dropout (RNG_STREAMS)
    accum: int  # micro-batches per optimizer step
    steps_per_epoch: int  # optimizer steps per epoch
    state: dict  # the loop's position and counters; saved in every checkpoint
    anl_k: torch.Tensor  # ANL's k for the next optimizer step, on the device
    student: nn.Module = None  # what the step calls: model, wrapped in DDP and/or compiled
    teacher_fwd: nn.Module = None  # the teacher's forward, compiled when the student is
    compiled: bool = False
    warm: bool = False  # a compiled run's first log interval (compilation) has passed
    meter: dict = field(default_factory=dict)  # sums of the logged terms since the last log line (device tensors)
    t_start: float = 0.0
    tb: Any = None  # rank 0's TensorBoard SummaryWriter with --tensorboard, else None
    signal: int = 0  # a stop signal this process received (stop_on_signals sets it)
    stopping: int = 0  # the signal every rank stops for, agreed in optimizer_step's collective


def setup_run(cfg: Config, distributed: bool = True) -> Run:
    """Everything one training process needs, restored from RUN_DIR/last.pt when cfg.train.resume is set."""
    t = cfg.train
    rank, world, local = init_distributed() if distributed else (0, 1, 0)
    device = pick_device(t.device if world == 1 or not torch.cuda.is_available() else f"cuda:{local}")
    amp = resolve_amp(t.amp, device)
    labeled_batch, accum = batch_layout(t.global_batch, cfg.data.labeled_batch, world)
    asked = cfg.data.labeled_batch
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, labeled_batch=labeled_batch))
    check_config(cfg)
    data = build_data(cfg.data, t.seed)  # a wrong layout or list fails here, before anything is written
    micro_per_epoch = check_batches(data, t.global_batch, accum, world)
    run_dir, created = run_directory(cfg, world)  # a run already there: refused before stage 0 trains
    check_writable(run_dir, "--resume" if t.resume else "--out", "copy the run to a writable disk and --resume the "
                   "copy" if t.resume else "choose an --out on a writable disk")  # on every rank: all stop together
    pretrained = cfg.model.pretrained
    if pretrained == "synthetic" and not t.resume:
        pretrained = stage0_checkpoint(cfg)  # before this run's logging starts: stage 0 logs to its own directory
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
    try:
        setup_logging(run_dir, rank)
        log.info("%s run directory %s", "resuming the" if t.resume else "the", run_dir)
        log.info(label_rule_note(cfg))
        if labeled_batch != asked:
            log.info("global_batch %d over %d process(es): %d labeled clips per micro-batch (labeled_batch %d does not "
                     "fit), %d micro-batch(es) per step", t.global_batch, world, labeled_batch, asked, accum)
        seed_everything(t.seed)  # the same init on every rank (DDP also broadcasts rank 0's weights)
        model = build_model(cfg.model, data.num_classes, cfg.data.num_frames, cfg.data.img_size)
        if pretrained and not t.resume:
            if cfg.model.pretrained == "synthetic":  # the file's keys are the official names: say whose it is
                log.info("initial weights: our stage-0 image model of the synthetic task (tools/make_stage0.py)")
            load_pretrained(model, pretrained)
        elif cfg.data.dataset != "synthetic" and not t.resume:
            log.warning("no --pretrained: training a TimeSformer from scratch; the paper's setting starts from "
                        "ImageNet ViT weights (e.g. vit_base_patch16_224.orig_in21k_ft_in1k, see the README)")
        a = model.describe()
        log.info("model: %s: D %d, depth %d, %d heads, patch %d, MLP x%g; %d frames of %d px, %d classes; %.2fM "
                 "parameters", a["arch"], a["embed_dim"], a["depth"], a["num_heads"], a["patch_size"], a["mlp_ratio"],
                 a["num_frames"], a["img_size"], a["num_classes"], a["params"] / 1e6)
        model.to(device)
        if rank == 0:
            check_free_space(run_dir, checkpoint_bytes(model, t.optimizer))
        teacher = copy.deepcopy(model).eval().requires_grad_(False)
        _channel_stats(tuple(cfg.data.mean), tuple(cfg.data.std), torch.float32, device)  # here, not in the first step
        layout = {"world": world, "accum": accum, "steps_per_epoch": micro_per_epoch // accum}
        state = {"epoch": 0, "micro": 0, "step": 0, "best_top1": -1.0, "best_epoch": None, "nonfinite": 0,
                 "nonfinite_total": 0, "wall_time_s": 0.0, "train_clips": 0, "train_time_s": 0.0,
                 "anl_k": data.num_classes, "layout": layout}  # k = K: no negatives until k has been measured once
        run = Run(cfg, rank, world, device, amp, run_dir, data, model, teacher, make_optimizer(model, t),
                  torch.amp.GradScaler(device.type, enabled=amp == "fp16"),
                  torch.Generator(device).manual_seed(stream_seed("device", t.seed, rank)), accum,
                  layout["steps_per_epoch"], state, torch.tensor(0))
        rng_global = load_checkpoint(run, run_dir / "last.pt") if t.resume else None
        if t.tensorboard:  # resumed: the events after the checkpoint's step are hidden, as metrics.jsonl is truncated
            run.tb = tensorboard_writer(run_dir / "tensorboard", run.state["step"] + 1 if t.resume else None, rank)
        run.anl_k = torch.tensor(run.state["anl_k"], device=device)
        if rank == 0:  # as asked (labeled_batch too), without MACHINE_KEYS: `--config RUN/config.yaml` starts a new run
            as_asked = config_to_dict(dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, labeled_batch=asked)))
            reusable = {s: {k: v for k, v in sec.items() if k not in MACHINE_KEYS[s]} for s, sec in as_asked.items()}
            record = {**reusable, "provenance": provenance()}  # the config loader skips provenance
            text = yaml.safe_dump(record, sort_keys=False)
            atomic_write(run_dir / "config.yaml", lambda f: f.write(text.encode()), run_dir)
            truncate_metrics(run_dir / "metrics.jsonl", run.state["step"])
        seed_everything(stream_seed("dropout", t.seed, rank, run.state["step"]))  # dropout and drop-path, per rank
        if rng_global is not None:
            restore_rng(rng_global)
        run.student = model if world == 1 else nn.parallel.DistributedDataParallel(
            model, device_ids=[local] if device.type == "cuda" else None)
        run.compiled = t.compile == "on" or (t.compile == "auto" and device.type == "cuda")
        wrap = torch.compile if run.compiled else (lambda m: m)
        run.student, run.teacher_fwd = wrap(run.student), wrap(teacher)
        log.info("%s | %d classes | labeled %d, unlabeled %d, test %d (%s) | %d steps/epoch x %d micro-batches | "
                 "device %s, amp %s, compile %s, world %d", cfg.data.dataset, data.num_classes, len(data.labeled),
                 len(data.unlabeled), len(data.test), data.split_source, run.steps_per_epoch, accum, device, amp,
                 run.compiled, world)
        horizon = 1 / max(1 - t.ema_momentum, 1e-9)
        log.info("EMA teacher: momentum %.4f per optimizer step, so it averages about the last %.0f steps (%.2f "
                 "epochs)", t.ema_momentum, horizon, horizon / run.steps_per_epoch)
        run.t_start = time.perf_counter() - run.state["wall_time_s"]
        return run
    except UserError:  # e.g. --pretrained that does not fit: no empty run directory is left behind
        if created and rank == 0:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def check_writable(folder: Path, what: str, fix: str) -> None:
    """A UserError unless a file can be created in `folder` (or, before it exists, in its nearest existing parent):
    tried, since root passes os.access on a read-only mount and a full quota shows only on writing."""
    probe = Path(folder).absolute()
    while not probe.exists():
        probe = probe.parent
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as e:
        raise UserError(f"{what} {folder}: cannot write in {probe}: {e.strerror or e}; {fix}") from e


def checkpoint_bytes(model: nn.Module, optimizer: str) -> int:
    """The size of one run checkpoint of `model`: student + EMA teacher + the optimizer's state per parameter (SGD's
    momentum; AdamW's two moments). ViT-B/16 TimeSformer with SGD: ~1.5 GB."""
    weights = sum(v.numel() * v.element_size() for v in model.state_dict().values())
    params = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    return 2 * weights + (2 if optimizer == "adamw" else 1) * params


def check_free_space(run_dir: Path, ckpt_bytes: int) -> None:
    """Warn when the disk of run_dir has room for fewer than 3 checkpoints: last.pt, best.pt and the next last.pt's
    temporary copy (written in full before it replaces last.pt)."""
    probe = Path(run_dir).absolute()
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < 3 * ckpt_bytes:
        log.warning("%s: %.3g GB free, but a checkpoint of this model is %.3g GB and a run needs room for 3 (last.pt, "
                    "best.pt and the copy being written): the run will stop with 'writing ... failed' when the disk "
                    "fills up; free space or choose another --out", probe, free / 1e9, ckpt_bytes / 1e9)


def train(cfg: Config, distributed: bool = True) -> dict:
    """Train (or resume) as configured and return summary.json's metrics; distributed=False: this process alone.
    A SIGTERM, SIGINT or SIGUSR1 stops every rank at the next optimizer step: last.pt, then Stopped."""
    run = setup_run(cfg, distributed)
    with stop_on_signals(run):
        train_epochs(run)
    return finish(run)


def stop_on_signals(run: Run) -> contextlib.AbstractContextManager:
    """While training, SIGTERM (SLURM, Kubernetes, spot instances; torchrun forwards it), SIGINT (Ctrl-C) and SIGUSR1
    only record the signal: train_epochs stops at the next optimizer step, where every rank learns it from the step's
    collective. A second SIGINT aborts at once; a repeated SIGTERM or SIGUSR1 changes nothing (a scheduler that
    signals every process and torchrun's forwarding deliver two). Python runs handlers in the main thread between
    bytecodes, so no step is cut in half. The previous handlers are restored on leaving."""
    stack = contextlib.ExitStack()
    if threading.current_thread() is not threading.main_thread():  # signal.signal works in the main thread only
        return stack

    def on_signal(signum, frame):
        if run.signal and signum == signal.SIGINT:
            raise KeyboardInterrupt
        run.signal = run.signal or signum
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
        previous = signal.signal(sig, on_signal)
        stack.callback(signal.signal, sig, signal.SIG_DFL if previous is None else previous)  # None: set outside Python
    return stack


def train_epochs(run: Run) -> None:
    """The training loop, from the run's position to its last epoch (raises Stopped after a stop signal)."""
    cfg, t, s = run.cfg, run.cfg.train, run.state
    end = run.steps_per_epoch * run.accum  # micro-batches per epoch; a partial last accumulation group is not used
    for epoch in range(s["epoch"], t.epochs):
        run.student.train()
        bar = progress_bar(run.rank, total=run.steps_per_epoch, initial=s["micro"] // run.accum,
                           desc=f"epoch {epoch + 1}/{t.epochs}", unit="step")  # epochs count from 1 wherever shown
        t_log = time.perf_counter()
        for lab, unl in train_batches(run.data, epoch, s["micro"], run.rank, run.world, end_step=end):
            first, last = s["micro"] % run.accum == 0, (s["micro"] + 1) % run.accum == 0
            warm = s["step"] < t.supervised_warmup_epochs * run.steps_per_epoch  # labeled clips only
            with contextlib.nullcontext() if last or run.world == 1 else run.student.no_sync():  # all-reduce once
                progress = s["step"] / run.steps_per_epoch
                loss, terms = ssl_losses(run.student, run.teacher_fwd, lab, None if warm else unl, cfg, run.device,
                                         run.amp, run.gen, ssl_weight_at(progress, t), run.anl_k,
                                         anl_on=progress >= t.nl_start_epochs)
                run.scaler.scale(loss / run.accum).backward()
            # Device tensors only: the step's non-finite AND and ANL's k over its micro-batches, the log's sums.
            finite = torch.isfinite(loss.detach()) & (True if first else finite)
            batch_k = terms.pop("anl_batch_k", run.anl_k)
            step_k = batch_k if first else torch.maximum(step_k, batch_k)
            acc = terms.pop("pseudo_label_acc", None)  # NaN: unknown; the log averages the micro-batches that know it
            if acc is not None:
                terms.update(pseudo_label_acc=acc.nan_to_num(0.0), pseudo_label_n=acc.isfinite())
            for k, v in {**terms, "loss": loss.detach()}.items():
                run.meter[k] = run.meter.get(k, 0.0) + v.float()
            run.meter["n"] = run.meter.get("n", 0) + 1
            run.meter["clips"] = run.meter.get("clips", 0) + len(lab["label"]) + (len(unl["strong"]) if unl else 0)
            s["micro"] += 1
            if not last:
                continue
            lr = optimizer_step(run, finite, step_k)  # the one host sync per optimizer step
            bar.update(1)
            if s["step"] % t.log_every == 0 or s["micro"] == end:
                t_log = log_train(run, epoch, lr, t_log, bar)
            if run.stopping or (t.ckpt_every and s["step"] % t.ckpt_every == 0 and s["micro"] < end):  # else: below
                t0 = time.perf_counter()
                checkpoint(run)
                t_log += time.perf_counter() - t0  # the interval's clips/s excludes the checkpoint write
            if run.stopping:
                bar.close()
                stop_training(run)
        bar.close()
        s["epoch"], s["micro"] = epoch + 1, 0
        improved = False
        if t.eval_every and ((epoch + 1) % t.eval_every == 0 or epoch + 1 == t.epochs):
            improved = eval_epoch(run)
        if (epoch + 1) % t.ckpt_epochs == 0 or epoch + 1 == t.epochs or (
                t.ckpt_every and s["step"] % t.ckpt_every == 0):
            checkpoint(run)
        if improved:  # after last.pt: a disk with room for one checkpoint keeps the one to resume from
            checkpoint(run, best=True)


def stop_training(run: Run) -> None:
    """After a stop signal (last.pt written): one log line, every rank waits until it is on disk, then Stopped."""
    msg = (f"stopped by {signal.Signals(run.stopping).name} at step {run.state['step']}; resume with --resume "
           f"{run.run_dir}")
    if run.rank == 0:
        log.warning(msg)
    if run.world > 1:
        dist.barrier()  # torchrun kills every worker once one exits: rank 0 first finishes writing last.pt
    raise Stopped(msg)


def optimizer_step(run: Run, finite: torch.Tensor, step_k: torch.Tensor) -> float:
    """Apply the accumulated gradients and update the EMA teacher, or skip the step if a loss was non-finite; -> lr.

    Every rank takes the same decisions from one collective, the step's one host sync: skip (a non-finite loss on any
    rank: gradients are averaged, so one NaN reaches everyone), ANL's k for the next step (the max of batch_k over the
    whole unlabeled batch), the bad-video abort (skips counted over all ranks) and the stop (a signal on any rank:
    run.stopping, so that a rank the signal did not reach stops at the same step).
    """
    s, t, bad = run.state, run.cfg.train, run.data.bad
    lr = lr_at((s["step"] + 1) / run.steps_per_epoch, t)  # the lr at the end of this step: never 0 in warmup
    for g in run.optimizer.param_groups:
        g["lr"] = lr
    nonfinite, failed, stop_sig = ~finite, len(bad.failed), run.signal
    if run.world > 1:
        mine = torch.cat([torch.stack([nonfinite.long(), step_k.long()]),
                          torch.tensor([failed, stop_sig], device=step_k.device)])
        every = [torch.empty_like(mine) for _ in range(run.world)]
        dist.all_gather(every, mine)
        every = torch.stack(every)  # (world, 4)
        step_k = every[:, 1].amax()
        nonfinite, failed, stop_sig = torch.stack([every[:, 0].amax(), every[:, 2].sum(), every[:, 3].amax()]).tolist()
    if failed > bad.max_fraction * bad.pool_size:  # the same decision on every rank: no peer waits for a dead one
        raise UserError(f"{failed} of {bad.pool_size} training videos failed to decode on {run.world} process(es), "
                        f"more than max_bad_fraction={bad.max_fraction}; this process's first: "
                        f"{', '.join(sorted(bad.failed)[:5]) or '(none)'}")
    if not bool(nonfinite):
        s["nonfinite"] = 0
        if t.grad_clip > 0:
            run.scaler.unscale_(run.optimizer)  # clip the true gradients, not the fp16-scaled ones
            torch.nn.utils.clip_grad_norm_(run.model.parameters(), t.grad_clip)
        run.scaler.step(run.optimizer)
        run.scaler.update()
        # SVFormer builds its EMA teacher from the warmed-up model: at the warm-up's last step it is a copy.
        warmup_end = math.ceil(t.supervised_warmup_epochs * run.steps_per_epoch) - 1
        ema_update(run.teacher, run.model, 0.0 if s["step"] == warmup_end else t.ema_momentum)
        run.anl_k = step_k
    else:
        s["nonfinite"] += 1
        s["nonfinite_total"] += 1
        log.warning("non-finite loss at step %d: step skipped (%d in a row)", s["step"], s["nonfinite"])
        if s["nonfinite"] >= t.max_nonfinite:
            kept = (f"the last good checkpoint is {run.run_dir / 'last.pt'}" if (run.run_dir / "last.pt").exists()
                    else "no checkpoint was written yet")
            raise FloatingPointError(f"{s['nonfinite']} non-finite losses in a row at step {s['step']}; {kept} (lower "
                                     "--lr, or use --amp bf16 instead of fp16)")
    run.optimizer.zero_grad(set_to_none=True)
    s["step"] += 1
    run.stopping = stop_sig
    return lr


def log_train(run: Run, epoch: int, lr: float, t_log: float, bar) -> float:
    """One metrics.jsonl line: every term's mean since the last line (host syncs here only), clips/s; -> next t_log."""
    s, m = run.state, run.meter
    dt = time.perf_counter() - t_log
    n, clips = m.pop("n"), m.pop("clips") * run.world  # every process trains on as many clips
    known = m.pop("pseudo_label_n", None)  # micro-batches whose pseudo-label accuracy was measurable
    row = {"kind": "train", "step": s["step"], "epoch": epoch + 1, "lr": lr, "clips_per_s": clips / dt,
           "nonfinite_skipped": s["nonfinite_total"], **bad_summary(run), **{k: float(v) / n for k, v in m.items()}}
    if known is not None:  # null: no unlabeled clip of the interval had a known label (truly unlabeled data)
        row["pseudo_label_acc"] = float(m["pseudo_label_acc"]) / float(known) if float(known) else None
    if not run.compiled or run.warm:  # the run's clips/s leaves out the first interval of a compiled run (compiling)
        s["train_clips"] += clips
        s["train_time_s"] += dt
    # ANL's precision: the share of its negatives (of clips with a known label) that are not the clip's true class.
    if "anl_true_negatives" in row:
        true, negs = row.pop("anl_true_negatives"), row.pop("anl_known_negatives")
        row["anl_neg_precision"] = 1 - true / negs if negs > 0 else None
    run.warm, run.meter = True, {}
    if run.rank == 0:
        append_metrics(run.run_dir / "metrics.jsonl", row, run.run_dir)
        write_scalars(run.tb, row)
        bar.set_postfix(loss=f"{row['loss']:.3f}", clips_s=f"{row['clips_per_s']:.1f}")
    pl = f", pseudo-label acc {row['pseudo_label_acc']:.2f}" if row.get("pseudo_label_acc") is not None else ""
    log.info("epoch %d/%d, step %d/%d: loss %.4f%s, lr %.3g, %.1f clips/s", epoch + 1, run.cfg.train.epochs,
             s["step"], run.steps_per_epoch * run.cfg.train.epochs, row["loss"], pl, lr, row["clips_per_s"],
             extra={"console": bar.disable})  # the bar shows it on a terminal; log.txt always has the line
    return time.perf_counter()


def bad_summary(run: Run) -> dict:
    """Skipped-video counters over every process (each meets only its own clips). Every rank must call it."""
    states = [run.data.bad.state_dict()]
    if run.world > 1:
        mine, states = states[0], [None] * run.world
        dist.all_gather_object(states, mine)
    merged = BadSamples(run.data.bad.pool_size, run.data.bad.max_fraction)
    for st in states:
        merged.record([p for p, n in st["failed"].items() for _ in range(n)], st["served"])
    return merged.summary()


def eval_epoch(run: Run) -> bool:
    """The cheap 1-view eval of student and teacher; -> whether either improved on the best so far (the caller then
    writes best.pt, test-selected: see checkpoint)."""
    s = run.state
    res = evaluate({"student": run.model, "teacher": run.teacher}, run.data, run.device, run.amp, False, run.rank,
                   run.world)
    row = {"kind": "eval", "step": s["step"], "epoch": s["epoch"], "views": 1,
           **{k: res["student"][k] for k in ("top1", "top5")},
           **{f"teacher_{k}": res["teacher"][k] for k in ("top1", "top5")}}
    log.info("epoch %d eval (1 view): student %.2f, teacher %.2f", s["epoch"], row["top1"], row["teacher_top1"])
    if run.rank == 0:
        append_metrics(run.run_dir / "metrics.jsonl", row, run.run_dir)
        write_scalars(run.tb, row)
    if max(row["top1"], row["teacher_top1"]) <= s["best_top1"]:
        return False
    s["best_top1"], s["best_epoch"] = max(row["top1"], row["teacher_top1"]), s["epoch"]
    return True


def finish(run: Run) -> dict:
    """The final multi-view evaluation of the student and the EMA teacher; writes summary.json and returns it."""
    cfg, s, arch = run.cfg, run.state, run.model.describe()
    res = evaluate({"student": run.model, "teacher": run.teacher}, run.data, run.device, run.amp, True, run.rank,
                   run.world)
    summary = {**eval_summary(res, cfg, run.data), "split": cfg.data.split, "split_seed": cfg.data.split_seed,
               "arch": arch["arch"], "model": arch, "seed": cfg.train.seed, "epochs": cfg.train.epochs,
               "steps": s["step"],
               "pseudo_label_acc": last_metric(run.run_dir / "metrics.jsonl", "pseudo_label_acc")
               if run.rank == 0 else None,
               "wall_time_s": time.perf_counter() - run.t_start,
               "clips_per_s": s["train_clips"] / max(s["train_time_s"], 1e-9),
               "nonfinite_skipped": s["nonfinite_total"], **bad_summary(run),
               "config": config_to_dict(cfg), "provenance": provenance()}
    if run.rank == 0:
        atomic_write(run.run_dir / "summary.json", lambda f: f.write(json.dumps(summary, indent=1).encode()),
                     run.run_dir)
        log_summary_table(summary, f"run directory: {run.run_dir} (summary.json, last.pt, log.txt, metrics.jsonl)")
    if run.tb is not None:
        run.tb.close()
    return summary


def eval_summary(res: dict, cfg: Config, data: Data) -> dict:
    """The multi-view results of the student and the EMA teacher (evaluate's `res`) as summary.json reports them."""
    st, te = res["student"], res["teacher"]
    n_lab, n_unl = len(data.labeled), len(data.unlabeled)  # --dataset lists has no --labeled: its lists give one
    labeled = cfg.data.labeled if cfg.data.dataset != "lists" else round(n_lab / max(1, n_lab + n_unl), 4)
    # Per-class top-1 keyed by class name, in label order; a name that two labels share gets its label appended.
    names = [str(n) if data.class_names.count(n) == 1 else f"{n} ({y})" for y, n in enumerate(data.class_names)]
    return {"dataset": cfg.data.dataset, "labeled": labeled, "num_classes": data.num_classes,
            "top1": st["top1"], "top5": st["top5"], "teacher_top1": te["top1"], "teacher_top5": te["top5"],
            "per_class_top1": dict(zip(names, st["per_class_top1"], strict=True)),
            "teacher_per_class_top1": dict(zip(names, te["per_class_top1"], strict=True)),
            "eval_views": f"{cfg.data.test_clips}x{cfg.data.test_crops}", "test_videos": st["videos"]}


def run_directory(cfg: Config, world: int = 1) -> tuple[Path, bool]:
    """(the run's directory, whether it is new): --resume's, --out, or runs/<dataset>-<labeled>-<time>-<pid>, decided
    on rank 0 and shared. A directory that holds a run already is refused unless resumed (it would be overwritten)."""
    t = cfg.train
    name = t.resume or t.out or (f"runs/{cfg.data.dataset}-{cfg.data.labeled:g}-{time.strftime('%Y%m%d-%H%M%S')}-"
                                 f"{os.getpid()}")
    verdict = [name, not t.resume and any((Path(name) / f).exists() for f in ("last.pt", "metrics.jsonl")),
               not Path(name).exists()]
    if world > 1:
        dist.broadcast_object_list(verdict, src=0)
    name, taken, new = verdict
    if taken:
        raise UserError(f"{name} already holds a run (last.pt, metrics.jsonl): continue it with --resume {name}, or "
                        "choose another --out")
    return Path(name), new


def append_metrics(path: Path, row: dict, run_dir: Path | None = None) -> None:
    """Append one JSON line; a failed write raises write_error's one line and leaves no partial line (which would
    stop a resume's truncate_metrics)."""
    line = (json.dumps({k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()}) + "\n").encode()
    try:
        with open(path, "ab", buffering=0) as f:  # unbuffered: one write(2), whose failure is seen here
            end = f.tell()
            try:
                if f.write(line) != len(line):  # a short write: the disk filled up within the line
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            except OSError:
                os.ftruncate(f.fileno(), end)
                raise
    except OSError as e:
        raise write_error(path, e, run_dir) from e


def tensorboard_writer(log_dir: Path, purge_step: int | None = None, rank: int = 0):
    """torch.utils.tensorboard's SummaryWriter on rank 0 (None on the others). tensorboard is optional: without it
    every rank raises the same UserError, which says how to install it. purge_step: events from that step on, left by
    an interrupted run, are hidden (TensorBoard's own mechanism for a restart)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise UserError(f"--tensorboard needs the tensorboard package, which is not installed ({e}): "
                        "pip install tensorboard, or run without --tensorboard") from None
    return SummaryWriter(str(log_dir), purge_step=purge_step) if rank == 0 else None


def write_scalars(writer, row: dict) -> None:
    """A metrics.jsonl row to TensorBoard: every number as '<kind>/<key>' at the row's step (None: unknown, skipped)."""
    if writer is None:
        return
    for k, v in row.items():
        if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
            writer.add_scalar(f"{row['kind']}/{k}", v, row["step"])
    writer.flush()  # a killed run keeps what it logged, as metrics.jsonl does


def truncate_metrics(path: Path, step: int) -> None:
    """On resume, drop metrics lines logged after the checkpoint, so the log reads as one uninterrupted run."""
    if path.exists():
        keep = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
        atomic_write(path, lambda f: f.write("".join(line + "\n" for line in keep).encode()), path.parent)


def last_metric(path: Path, key: str) -> float | None:
    if not path.exists():
        return None
    vals = [r[key] for r in map(json.loads, path.read_text().splitlines()) if key in r]
    return vals[-1] if vals else None


def log_summary_table(s: dict, where: str) -> None:
    """The final table, through the logger: the console and log.txt end alike. Training lines only for a training
    run's summary (eval's has no wall time); `where` names the run directory or the checkpoint."""
    lines = [f"{'':>10} {'top-1':>7} {'top-5':>7}    ({s['dataset']}, {s['labeled']:g} labeled, {s['num_classes']} "
             f"classes, {s['eval_views']} views, {s['test_videos']} test videos)",
             f"{'student':>10} {s['top1']:7.2f} {s['top5']:7.2f}",
             f"{'teacher':>10} {s['teacher_top1']:7.2f} {s['teacher_top5']:7.2f}",
             f"{'chance':>10} {100 / s['num_classes']:7.2f}"]
    if s.get("pseudo_label_acc") is not None:
        lines.append(f"pseudo-label accuracy (last log interval): {100 * s['pseudo_label_acc']:.1f}%")
    if "wall_time_s" in s:
        lines.append(f"{s['steps']} steps in {s['wall_time_s']:.0f} s, {s['clips_per_s']:.1f} train clips/s")
    log.info("results:\n%s\n%s\n", "\n".join(lines), where)


# ==== Checkpointing ===================================================================================================

def atomic_write(path: Path, write: Callable[[BinaryIO], Any], run_dir: Path | None = None) -> None:
    """write(PATH.tmp opened for writing), fsync it, rename it to path, fsync the folder: a run killed mid-write keeps
    the previous file, and after a crash or power loss the renamed file is complete (a rename alone does not order
    the data on disk: fsync(2), "Notes"). A failed write (full disk, read-only folder, I/O error) removes PATH.tmp and
    raises write_error's one line; run_dir: the run whose last.pt to resume from."""
    tmp = Path(f"{path}.tmp")
    try:
        with open(tmp, "wb") as f:  # a file object: torch.save on a path reports a full disk without its OSError
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fd = os.open(path.parent, os.O_RDONLY)  # the rename itself is an entry of the folder
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except (OSError, RuntimeError) as e:
        with contextlib.suppress(OSError):  # e.g. a read-only folder, where PATH.tmp was never created
            tmp.unlink(missing_ok=True)
        cause = e if isinstance(e, OSError) else e.__context__  # torch.save may end a failed write with a RuntimeError
        if not isinstance(cause, OSError):
            raise
        raise write_error(path, cause, run_dir) from e


def write_error(path: Path, e: OSError, run_dir: Path | None = None) -> UserError:
    """The one line for a write that failed (ENOSPC, EROFS, EACCES, EIO...): the file, the reason, and, in a run,
    where it continues from: its last.pt is written atomically, so the one on disk is the previous, intact one."""
    msg = f"writing {path} failed: {e.strerror or e}"
    if run_dir is not None:
        last = Path(run_dir) / "last.pt"
        msg += (f"; {last} is intact: make room (or make the folder writable) and continue with --resume {run_dir}"
                if last.is_file() else "; no checkpoint had been written yet")
    return UserError(msg)


def rng_state() -> dict:
    """Every global RNG as tensors/lists, so the checkpoint loads with weights_only=True."""
    np_state = np.random.get_state()
    out = {"python": list(random.getstate()[1]) + [random.getstate()[2] or 0],
           "numpy": [torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2])],
           "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state()  # this process's own device
    return out


def restore_rng(s: dict) -> None:
    random.setstate((3, tuple(int(v) for v in s["python"][:-1]), None))
    np.random.set_state(("MT19937", s["numpy"][0].numpy().astype(np.uint32), int(s["numpy"][1]), 0, 0.0))
    torch.set_rng_state(s["torch"])
    if "cuda" in s and torch.cuda.is_available():
        torch.cuda.set_rng_state(s["cuda"])


def checkpoint(run: Run, best: bool = False) -> None:
    """Write RUN_DIR/last.pt (or best.pt) atomically, with the plain module's keys (no compile or DDP wrapper). Every
    rank must call it: each rank's RNG streams and skipped videos are gathered, so a resumed DDP run continues them."""
    s = run.state
    mine = {"generator": run.gen.get_state().cpu(), "global": rng_state(), "bad": run.data.bad.state_dict()}
    ranks = [mine]
    if run.world > 1:
        ranks = [None] * run.world
        dist.all_gather_object(ranks, mine)
    if run.rank != 0:
        return
    # best.pt is chosen on the TEST set (the protocol has no validation split): the file says so, so that a number read
    # off it is never mistaken for a result. Report the final model (last.pt, summary.json).
    selection = (f"best.pt: the highest 1-view top-1 of student or teacher on the TEST set over the per-epoch evals "
                 f"(epoch {s['best_epoch']}); test-selected, do not report its accuracy" if best else
                 f"last.pt: the model at step {s['step']} (the final model once the run has ended)")
    ckpt = {"format": "fullsvformer", "selection": selection, "model": run.model.state_dict(),
            "ema": run.teacher.state_dict(), "num_classes": run.data.num_classes,
            "class_names": run.data.class_names, "optimizer": run.optimizer.state_dict(),
            "scaler": run.scaler.state_dict(), "ranks": ranks,
            "state": {**s, "anl_k": int(run.anl_k), "wall_time_s": time.perf_counter() - run.t_start},
            "meter": {k: float(v) for k, v in run.meter.items()}, "config": config_to_dict(run.cfg)}
    atomic_write(run.run_dir / ("best.pt" if best else "last.pt"), lambda f: torch.save(ckpt, f), run.run_dir)


def load_checkpoint(run: Run, path: Path) -> dict:
    """Restore `run` from `checkpoint`'s file; returns this rank's global RNG states, for the caller to restore last.
    The layout (processes, micro-batches, steps per epoch) must match, or the step counter would mean other data."""
    if not path.is_file():
        raise UserError(f"cannot resume: {path} does not exist (was the run started with this --out?)")
    ckpt = read_run_checkpoint(path)
    saved, layout = ckpt["state"].get("layout", {}), run.state["layout"]
    if saved != layout:
        raise UserError(f"cannot resume {path} exactly: it was written with {saved}, this run has {layout} "
                        "(keep the number of processes, --global-batch, --labeled-batch and --mu)")
    try:
        mine = ckpt["ranks"][run.rank]
        run.model.load_state_dict(ckpt["model"])
        run.teacher.load_state_dict(ckpt["ema"])
        run.optimizer.load_state_dict(ckpt["optimizer"])
        run.scaler.load_state_dict(ckpt["scaler"])
        run.gen.set_state(mine["generator"])
        run.data.bad.load_state_dict(mine["bad"])
    except (RuntimeError, KeyError, ValueError) as e:
        raise CheckpointError(f"cannot resume from {path}: {type(e).__name__}: {e}") from e
    run.state, run.meter = ckpt["state"], dict(ckpt["meter"])
    return mine["global"]


# ==== CLI =============================================================================================================
# Presets per dataset: the dataclass defaults are the paper's setting (ViT-B, 8x224, SVFormer's optimiser); the
# synthetic preset is the CPU demo. Order of precedence: dataclass defaults < preset < --config FILE < flags.
PRESETS: dict[str, dict[str, dict]] = {
    # The built-in task (SYNTH_TASKS["ucf-proxy"]): a 2-block ViT (D 64) at 32 px with 8 px patches, 4 frames at stride
    # 4, fine-tuned from its stage-0 image model (pretrained="synthetic") as the paper starts from ImageNet; the
    # settings are the accuracy bench's (bench/test_accuracy.py says why each).
    "synthetic": {"model": dict(arch="tiny", embed_dim=64, depth=2, num_heads=2, patch_size=8, drop_path=0.0,
                                head_dropout=0.0, pretrained="synthetic"),
                  "data": dict(img_size=32, num_frames=4, clip_stride=4, scale_min=1.0, scale_max=1.2,
                               temporal_warp_keys="2", randaug_n=1, labeled=0.01, labeled_batch=8, mu=2, workers=0,
                               eval_batch=16, test_clips=1, test_crops=1),
                  "train": dict(epochs=3, optimizer="adamw", lr=5e-4, weight_decay=0.05, global_batch=8,
                                schedule="cosine", warmup_epochs=0.3, grad_clip=1.0, ema_momentum=0.98,
                                ssl_rampup_epochs=0.5, log_every=50, eval_every=1, ckpt_epochs=1)},
    # The paper's runs: on CUDA bf16 autocast (amp auto) and torch.compile (compile auto; --no-compile to debug).
    "ucf101": {"data": dict(labeled=0.01)},
    "hmdb51": {"data": dict(labeled=0.4)},
}
# The label regime. Each preset's settings are for 1 labeled clip per class (UCF-101 1%; the demo). With more labeled
# clips per class the method needs longer runs at a higher lr: on the synthetic proxy (bench/README.md, "Equal
# tuning"; the same lr x length grid for both methods, seeds 0-2) its best cell up to 24 epochs is 24 at lr 2e-3 with
# 10 clips per class (8x and 4x the 1-clip preset's 3 epochs at 5e-4; +4.2 over supervised-only at 24 epochs) and up
# to 48 epochs it is 48 at lr 1e-3 with 40 (16x, 2x; with ANL a tie with supervised-only, without it +0.8). Those
# cells are the rule, for every dataset alike: dataclass defaults < preset < label_rule(n) < --config FILE < flags.
# The length factors are a compute budget, not the optimum: on the proxy the method keeps gaining past them (at 10
# clips per class 90.7 at 96 epochs, against supervised-only's best of any length, 81.6), but the proxy's small model
# from a small pretraining likely needs more passes than a pre-trained ViT-B, and x8 already gives UCF-101 10% 240
# passes over its unlabeled clips (SVFormer's code: about 15). Pass --epochs for more.
# ANL's weight is the third factor. On the proxy (seeds 0-4, at those cells) removing ANL changes the student by
# -0.2 +- 0.4 at 1 clip per class, -0.4 +- 0.8 at 10 (noise both) and +1.0 +- 0.2 at 40 (better on all 5 seeds): the
# rule keeps it up to 10 and turns it off at 40, linearly in log n between (HMDB-51 40%, 28 clips per class: 0.26).
# n labeled clips per class: (epochs factor, lr factor, gamma_nl factor).
LABEL_RULE = {1: (1.0, 1.0, 1.0), 10: (8.0, 4.0, 1.0), 40: (16.0, 2.0, 0.0)}


def labeled_clips_per_class(d: DataConfig) -> float | None:
    """Labeled clips per class of the run d describes, from its config alone (the split rules of class_balanced_split:
    UCF-101 x% = x clips, HMDB-51 70 train clips a class); --dataset lists: its train list's size over its labels (None
    when the list cannot be read: build_data reports that)."""
    if d.dataset == "synthetic":
        return float(labeled_per_class("synthetic", d.labeled, d.synth_clips_per_class))
    if d.dataset in ("ucf101", "hmdb51"):
        return float(labeled_per_class(d.dataset, d.labeled, 10 ** 9 if d.dataset == "ucf101" else 70))
    try:
        labels = [line.rsplit(None, 1)[-1] for _, line in _lines(Path(d.train_list)) if not line.startswith("#")]
    except (OSError, UnicodeDecodeError):
        return None
    return len(labels) / len(set(labels)) if labels else None


def label_rule(per_class: float, base: "Config") -> dict[str, dict]:
    """The settings for `per_class` labeled clips per class, from the preset `base` (whose settings are for 1): its
    epochs (and step milestones), lr and gamma_nl times LABEL_RULE's factors, interpolated between the measured cells
    (in log n: geometric means for the epochs and lr factors, the arithmetic one for gamma_nl's, which reaches 0) and
    held at the last cell beyond them. {section: {field: value}}, to apply over base."""
    cells = sorted(LABEL_RULE.items())
    n = min(max(per_class, cells[0][0]), cells[-1][0])
    (n0, f0), (n1, f1) = next((a, b) for a, b in zip(cells, cells[1:]) if n <= b[0])
    w = math.log(n / n0) / math.log(n1 / n0)
    length, lr = (a ** (1 - w) * b ** w for a, b in zip(f0[:2], f1[:2]))
    anl = (1 - w) * f0[2] + w * f1[2]
    t = base.train
    epochs = max(1, round(t.epochs * length))
    milestones = ",".join(f"{float(m) * epochs / t.epochs:.4g}" for m in t.lr_milestones.split(",") if m.strip())
    return {"train": {"epochs": epochs, "lr_milestones": milestones, "lr": float(f"{t.lr * lr:.2g}"),
                      "gamma_nl": float(f"{t.gamma_nl * anl:.2g}")}}


# Stage 0, the synthetic task's "ImageNet": all labels on single frames of the disjoint pretraining task (other glyphs,
# other motions, another content seed), with the architecture and frame geometry of the run it initialises.
STAGE0 = {"model": dict(pretrained=""),
          "data": dict(synth_task="ucf-proxy-pretrain", synth_classes=0, synth_seed=1, synth_clips_per_class=160,
                       synth_test_per_class=10, num_frames=1, temporal_warp_keys="1", labeled=1.0, mu=0,
                       labeled_batch=32),
          "train": dict(seed=0, epochs=25, lr=1e-3, global_batch=32, eval_every=0, out="", resume="",
                        tensorboard=False)}
STAGE0_FROM_RUN = {"data": ("img_size", "synth_size", "synth_length", "mean", "std"), "train": ()}
RUNTIME_KEYS = {"data": ("workers", "prefetch", "pin_memory", "eval_batch"),  # no effect on the weights trained
                "train": ("device", "amp", "compile", "out", "resume", "log_every", "tensorboard")}
# Settings that only the unlabeled path reads (strong view, teacher, unlabeled losses): stage 0 has no unlabeled clips
# (mu = 0), so they never touch its weights and stay out of its key; changing one never retrains the committed file.
UNLABELED_KEYS = {"data": ("randaug_n", "randaug_m", "temporal_warp_p", "temporal_warp_keys", "temporal_warp_on",
                           "strong_channel_dropout", "strong_crop"),
                  "train": ("ema_momentum", "gamma_kl", "kl_tau", "kl_standardize", "kl_threshold", "kl_weight",
                            "gamma_ce_strong", "gamma_mix", "mix_beta", "mix_threshold", "mix_weighted", "gamma_nl",
                            "nl_drop_threshold", "nl_start_epochs", "supervised_warmup_epochs", "ssl_rampup_epochs",
                            "oracle_pseudo_labels")}
# Left out of RUN/config.yaml, which is meant to be reused (`--config RUN/config.yaml`) and is what --resume reloads:
# where this run lives and what this machine has. A resume takes them from RUN itself, the preset and its flags. amp and
# compile stay: they change a resumed run's numbers.
MACHINE_KEYS = {"model": (), "data": ("workers", "prefetch", "pin_memory"), "train": ("device", "out", "resume")}
PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"


def stage0_config(cfg: Config) -> tuple[Config, str]:
    """Stage 0's config for run cfg (the synthetic preset, cfg's model, frame geometry and runtime settings, STAGE0 on
    top) and its key: a hash of what stage 0's training reads, i.e. that config without RUNTIME_KEYS and UNLABELED_KEYS."""
    d, run = config_to_dict(config_from_dict(PRESETS["synthetic"])), config_to_dict(cfg)
    d["model"].update(run["model"])
    for s in ("data", "train"):
        d[s].update({k: run[s][k] for k in STAGE0_FROM_RUN[s] + RUNTIME_KEYS[s]})
    pre = config_from_dict(STAGE0, config_from_dict(d))
    skip = {s: RUNTIME_KEYS.get(s, ()) + UNLABELED_KEYS.get(s, ()) for s in SECTIONS}
    kept = {s: {k: v for k, v in sec.items() if k not in skip[s]} for s, sec in config_to_dict(pre).items()}
    return pre, hashlib.sha256(yaml.safe_dump(kept).encode()).hexdigest()[:12]


def stage0_checkpoint(cfg: Config) -> str:
    """The stage-0 image model for run cfg: pretrained/stage0-<key>.safetensors when committed (the demo's), else
    trained once into $XDG_CACHE_HOME/fullsvformer/stage0-<key>/ (resumable; under torchrun by rank 0 alone)."""
    pre, key = stage0_config(cfg)
    if (PRETRAINED_DIR / f"stage0-{key}.safetensors").is_file():
        return str(PRETRAINED_DIR / f"stage0-{key}.safetensors")
    out = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fullsvformer" / f"stage0-{key}"
    if not (out / "stage0.safetensors").is_file():
        check_writable(out, "the stage-0 cache", "set XDG_CACHE_HOME to a writable folder (stage 0 is cached in "
                       "$XDG_CACHE_HOME/fullsvformer/)")  # on every rank: all stop
        rank, world, _ = init_distributed()
        if rank == 0:
            log.warning("training the stage-0 image model of the synthetic task into %s (once)", out)
            if not (out / "summary.json").is_file():
                resume = str(out) if (out / "last.pt").is_file() else ""
                train(dataclasses.replace(pre, train=dataclasses.replace(pre.train, out=str(out), resume=resume)),
                      distributed=False)
            weights = {k: v.contiguous() for k, v in torch_load(out / "last.pt")["model"].items()}
            atomic_write(out / "stage0.safetensors", lambda f: f.write(safetensors_bytes(weights)))
        if world > 1:
            dist.barrier()
    return str(out / "stage0.safetensors")


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose mistakes are a UserError: one line under cli()'s `fullsvformer: error:` prefix (no 70 lines of
    usage), with the closest flag or choice when the mistake is a typo."""

    def error(self, message: str):
        hint = []
        unknown = re.match(r"unrecognized arguments: (.*)", message)
        if unknown:
            flags = [a.split("=")[0] for a in unknown.group(1).split() if a.startswith("--")]
            hint = [m for f in flags for m in difflib.get_close_matches(f, self._option_string_actions, 1, 0.75)]
        choice = re.match(r"argument (\S+?)(/\S+)?: invalid choice: '?(.*?)'? \(choose from", message)
        if choice and choice.group(1) in self._option_string_actions:
            choices = self._option_string_actions[choice.group(1)].choices or ()
            hint = difflib.get_close_matches(choice.group(3), [str(c) for c in choices], 1, 0.75)
        raise UserError(message + (f"; did you mean {hint[0]}?" if hint else "")
                        + f" (see {self.prog} --help)")


# What `eval` reads from its flags: where the test set is on this machine, its views, and how to run; the model and
# its frame geometry are the checkpoint's own.
EVAL_KEYS = {"model": (),
             "data": ("dataset", "data_root", "split", "train_list", "unlabeled_list", "val_list", "list_prefix",
                      "test_clips", "test_crops", "eval_batch", "workers", "prefetch", "pin_memory", "synth_task",
                      "synth_classes", "synth_clips_per_class", "synth_test_per_class", "synth_size", "synth_length",
                      "synth_seed"),
             "train": ("device", "amp")}


def preset_note(section: str, name: str) -> str:
    """'; ucf101 preset: 0.01, hmdb51 preset: 0.4' for a field that the --dataset presets change, else ''."""
    return "".join(f"; {d} preset: {p[section][name]}" for d, p in PRESETS.items() if name in p.get(section, {}))


def build_parser(with_checkpoint: bool = False) -> argparse.ArgumentParser:
    """Flags generated from the config dataclasses: --field-name for every field, its help string as help. For eval
    (with_checkpoint), only the fields in EVAL_KEYS, whose default is the checkpoint's value."""
    p = ArgumentParser(
        prog="fullsvformer.py" + (" eval" if with_checkpoint else ""),
        description="Multi-view eval of a run's student and EMA teacher, with the checkpoint's own config: the flags "
                    "below override it (e.g. where the data is on this machine)." if with_checkpoint else
                    "Full-SVFormer: semi-supervised action recognition (TimeSformer, EMA teacher, standardized-logit "
                    "KL, adaptive negative learning, Tube TokenMix). Subcommand: eval (--help); tools/ classifies "
                    "videos (predict.py) and prepares datasets. Defaults shown are the dataclass defaults (the paper's "
                    "setting), followed by what a --dataset preset sets instead (synthetic, the default, is the CPU "
                    "demo). --debug (or FULLSVFORMER_DEBUG=1) shows the traceback of an error.",
        epilog=None if with_checkpoint else
        f"Exit status: 0 done; 2 a mistake, or a failed write (one line: 'fullsvformer: error: ...'); {REQUEUE_EXIT} "
        "stopped by SIGTERM, SIGINT or SIGUSR1 at an optimizer step, after writing last.pt: requeue it with --resume "
        "RUN_DIR (a second Ctrl-C aborts at once).")
    p.add_argument("--config", default="", help="YAML file of {model|data|train: {field: value}}; flags override it")
    if with_checkpoint:
        p.add_argument("--checkpoint", required=True, help="a run's checkpoint: RUN/last.pt (the final model; best.pt "
                                                            "is selected on the test set), or the run directory RUN")
        p.add_argument("--json", default="", metavar="FILE",
                       help="also write the results to FILE as JSON (summary.json's keys of the eval)")
    defaults = Config()
    for section in SECTIONS:
        group = p.add_argument_group(section)
        for f in dataclasses.fields(getattr(defaults, section)):
            if with_checkpoint and f.name not in EVAL_KEYS[section]:
                continue
            default = getattr(getattr(defaults, section), f.name)
            shown = "the checkpoint's" if with_checkpoint else \
                (repr(default) if default == "" else str(default)) + preset_note(section, f.name)
            kw = dict(dest=f"{section}.{f.name}", default=argparse.SUPPRESS,
                      help=f"{f.metadata.get('help', '')} (default: {shown})".replace("%", "%%"))
            if isinstance(default, bool):
                kw["action"] = argparse.BooleanOptionalAction
            elif f.metadata.get("choices") == ("auto", "on", "off"):  # --x forces on, --no-x off, absent: auto
                group.add_argument("--no-" + f.name.replace("_", "-"), dest=kw["dest"], action="store_const",
                                   const="off", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
                kw.update(nargs="?", const="on", choices=f.metadata["choices"])
            elif isinstance(default, list):
                kw.update(nargs=len(default), type=type(default[0]), metavar="X")
            else:
                kw.update(type=type(default), choices=f.metadata.get("choices"))
            group.add_argument("--" + f.name.replace("_", "-"), **kw)
    return p


def parse_config(argv: list[str], with_checkpoint: bool = False) -> tuple[Config, argparse.Namespace]:
    """Resolve the config: dataclass defaults < PRESETS[dataset] < label_rule(labeled clips per class) < --config FILE
    < flags."""
    args = build_parser(with_checkpoint).parse_args(argv)
    flags = flag_overrides(args)
    file_cfg = read_config_file(args.config) if args.config else {}  # validated by config_from_dict below
    dataset = flags.get("data", {}).get("dataset") or (file_cfg.get("data") or {}).get("dataset") \
        or DataConfig().dataset
    preset = config_from_dict(PRESETS.get(dataset, {}))
    cfg = config_from_dict(flags, config_from_dict(file_cfg, preset))
    n = labeled_clips_per_class(cfg.data) if cfg.data.mu > 0 else None  # labeled-only: epochs are labeled passes
    rule = label_rule(n, preset) if n else {}
    given = {s: set(flags.get(s) or ()) | set(file_cfg.get(s) or ()) for s in SECTIONS}
    if "epochs" in given["train"]:  # the length is one setting: an explicit --epochs keeps the preset's milestones
        given["train"].add("lr_milestones")
    rule = {s: {k: v for k, v in sec.items() if k not in given[s]} for s, sec in rule.items()}
    return config_from_dict(rule, cfg), args


def label_rule_note(cfg: Config) -> str:
    """One log line: the labeled clips per class, what label_rule sets for them, and what this run uses instead."""
    if cfg.data.mu == 0:
        return "label regime: labeled-only (mu 0): label_rule does not apply"
    n = labeled_clips_per_class(cfg.data)
    if not n:
        return "label regime: unknown (the train list could not be read)"
    rule = label_rule(n, config_from_dict(PRESETS.get(cfg.data.dataset, {})))["train"]
    own = {k: getattr(cfg.train, k) for k, v in rule.items() if getattr(cfg.train, k) != v}
    return (f"label regime: labeled clips per class n = {n:.4g}; label_rule sets " + ", ".join(f"{k} {v}" for k, v in
            rule.items()) + (" (this run: " + ", ".join(f"{k} {v}" for k, v in own.items()) + ", given)" if own
                             else ""))


def flag_overrides(args: argparse.Namespace) -> dict[str, dict]:
    """The flags given on the command line as {section: {field: value}} (absent flags are not in args)."""
    flags: dict[str, dict] = {}
    for dest, v in vars(args).items():
        if "." in dest:
            section, name = dest.split(".", 1)
            flags.setdefault(section, {})[name] = v
    return flags


def evaluate_checkpoint(argv: list[str]) -> dict:
    """`fullsvformer.py eval --checkpoint RUN/best.pt [flags]`: multi-view eval of the student and EMA teacher, with
    the run's own config as the base (pass --data-root etc. to point at the data on this machine)."""
    args = build_parser(True).parse_args(argv)
    if args.json and not Path(args.json).resolve().parent.is_dir():  # before the eval, not after it
        raise UserError(f"--json {args.json}: the folder {Path(args.json).resolve().parent} does not exist")
    setup_logging(None)
    ckpt_path = checkpoint_path(args.checkpoint)
    ckpt = read_run_checkpoint(ckpt_path)
    if "TEST set" in ckpt.get("selection", ""):
        log.warning("%s: %s", ckpt_path, ckpt["selection"])
    base = config_from_dict(ckpt["config"])
    if args.config:
        base = config_from_dict(read_config_file(args.config), base)
    cfg = config_from_dict(flag_overrides(args), base)
    check_views(cfg.data)
    device = pick_device(cfg.train.device)
    amp = resolve_amp(cfg.train.amp, device)
    data = build_data(cfg.data, cfg.train.seed)
    if ckpt["num_classes"] != data.num_classes:
        raise UserError(f"{ckpt_path} was trained for {ckpt['num_classes']} classes, but --dataset "
                         f"{cfg.data.dataset} has {data.num_classes}")
    models = {name: model_from_checkpoint(ckpt, cfg, key).to(device) for name, key in (("student", "model"),
                                                                                         ("teacher", "ema"))}
    out = {"checkpoint": str(ckpt_path), **eval_summary(evaluate(models, data, device, amp, full=True), cfg, data),
           "steps": ckpt["state"]["step"], "config": config_to_dict(cfg)}
    if args.json:
        atomic_write(Path(args.json), lambda f: f.write(json.dumps(out, indent=1).encode()))
    log_summary_table(out, f"checkpoint: {ckpt_path}" + (f"; results written to {args.json}" if args.json else ""))
    return out


def checkpoint_path(path: str | Path) -> Path:
    """A run's checkpoint given as the file or as its run directory, whose last.pt (the final model) is then taken."""
    path = Path(path)
    if path.is_dir():
        if not (path / "last.pt").is_file():
            raise UserError(f"{path} is a directory without last.pt: expected a run's checkpoint (RUN/last.pt) or "
                            "its run directory")
        log.info("%s is a run directory: using its last.pt", path)
        path = path / "last.pt"
    return path


def model_from_checkpoint(ckpt: dict, cfg: Config, key: str = "model") -> TimeSformer:
    """The student ('model') or EMA teacher ('ema') of a run checkpoint, built from `cfg` (normally its own)."""
    m = build_model(cfg.model, ckpt["num_classes"], cfg.data.num_frames, cfg.data.img_size)
    try:
        m.load_state_dict(ckpt[key])
    except RuntimeError as e:  # a config that does not match the weights, e.g. another --embed-dim
        raise CheckpointError(f"the checkpoint's {key!r} weights do not fit the model of this config: "
                              f"{str(e).splitlines()[0]}") from e
    return m


def main(argv: list[str] | None = None) -> dict:
    """Entry point: train (default), or one of the subcommands. Returns the run's metrics; raises Stopped when a
    signal stopped the run (last.pt written: cli() exits REQUEUE_EXIT)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "eval":
        return evaluate_checkpoint(argv[1:])
    cfg, args = parse_config(argv)
    if cfg.train.resume:  # the run's own config, with any flags given now on top (e.g. --epochs to extend it)
        stored = Path(cfg.train.resume) / "config.yaml"
        if not stored.is_file():
            raise UserError(f"cannot resume: {stored} does not exist (expected a run directory written by a training "
                            "run, holding config.yaml and last.pt)")
        if args.config or cfg.train.out:
            raise UserError("--resume continues RUN_DIR with its own config.yaml: drop --config and --out")
        cfg, args = parse_config(["--config", str(stored), *argv])  # preset < the run's config.yaml < flags
        finished = finished_run(cfg, flag_overrides(args))
        if finished is not None:
            return finished
    try:
        summary = train(cfg)
    except torch.OutOfMemoryError as e:
        raise torch.OutOfMemoryError(f"{e}\nOut of memory: lower --labeled-batch (keep --global-batch: gradients "
                                     "are accumulated), add --grad-checkpointing, or use fewer --num-frames / a "
                                     "smaller --img-size.") from None
    # On success, wait for every rank: one that tears gloo down while a peer still talks to it can abort (SIGABRT).
    # After an error the group is left to cli() (or the caller), so that every rank reports its error first.
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    return summary


def finished_run(cfg: Config, flags: dict) -> dict | None:
    """summary.json of the run that cfg resumes when it has finished the epochs asked (it is then left as it is), or
    None when there is training left. A finished run takes no flag but a larger --epochs, which extends it."""
    run = Path(cfg.train.resume)
    if not (run / "summary.json").is_file():
        return None
    done = json.loads((run / "summary.json").read_text())
    if cfg.train.epochs > done["epochs"]:
        return None
    given = sorted(f"--{k.replace('_', '-')}" for s, sec in flags.items() for k in sec if k not in ("resume", "epochs"))
    if given or cfg.train.epochs < done["epochs"]:
        raise UserError(f"{run} is a finished run of {done['epochs']} epochs (summary.json): "
                        + (f"{', '.join(given)} would change nothing; " if given else
                           f"--epochs {cfg.train.epochs} cannot shorten it; ")
                        + f"extend it with --resume {run} --epochs N (N > {done['epochs']}) alone, evaluate it with "
                        f"`fullsvformer.py eval --checkpoint {run}`, or start another run with --config "
                        f"{run}/config.yaml")
    print(f"{run} is finished ({done['epochs']} epochs, {done['steps']} steps); its results are in "
          f"{run / 'summary.json'}, left as they are (to train it longer: --resume {run} --epochs N)")
    return done


def cli(argv: list[str] | None = None, entry: Callable[[list[str]], dict] | None = None) -> int:
    """main() (or the tool `entry`) for the command line: a user's mistake is one line, exit 2 (traceback: --debug,
    FULLSVFORMER_DEBUG=1); exit 1 when the result counts failures (tools/predict.py: unreadable videos)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv or os.environ.get("FULLSVFORMER_DEBUG", "") not in ("", "0")
    try:
        result = (entry or main)([a for a in argv if a != "--debug"])
    except (UserError, FileNotFoundError) as e:
        if debug:
            raise
        sys.stderr.write(f"fullsvformer: error: {e}\n")  # one write: lines of several ranks do not interleave
        sys.stderr.flush()
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        return 2
    except Stopped:  # by a signal, last.pt written and the line logged: a scheduler's wrapper may requeue the run
        # Exit with REQUEUE_EXIT, not by a late SIGTERM: torchrun terminates the ranks still shutting down as soon as
        # one has exited, and a scheduler may repeat its signal.
        for sig in (signal.SIGTERM, signal.SIGUSR1) if threading.current_thread() is threading.main_thread() else ():
            signal.signal(sig, signal.SIG_IGN)
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        return REQUEUE_EXIT
    except BrokenPipeError:  # e.g. `tools/predict.py --json ... | head -1`: the reader left, nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return 1 if result.get("failed") else 0


if __name__ == "__main__":
    sys.exit(cli())
