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
import torch.utils.data

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
    data_root: str = F_("", "dataset folder: ucf101/hmdb51 layout (see the data section) or the root of list paths")
    split: int = F_(1, "official train/test split (UCF-101, HMDB-51)", (1, 2, 3))
    labeled: float = F_(0.01, "labeled fraction of the train list, class-balanced; UCF-101: x%% = x clips per class "
                              "as SVFormer; committed splits/ files are used where they exist")
    split_seed: int = F_(0, "seed of the labeled/unlabeled draw (committed: 0, 1, 2)")
    train_list: str = F_("", "--dataset lists: labeled '<path> <label>' list (SVFormer's train.csv)")
    unlabeled_list: str = F_("", "--dataset lists: unlabeled list (labels used only for pseudo-label diagnostics)")
    val_list: str = F_("", "--dataset lists: test list")
    list_prefix: str = F_("", "--dataset lists: rewrite list paths OLD=NEW; empty: absolute paths that exist are "
                              "kept, others are DATA_ROOT/<class>/<video>")
    clip_stride: int = F_(8, "frames between sampled frames (SVFormer: 8)")
    test_clips: int = F_(5, "test: clips uniformly spaced over each video (SVFormer: 5)")
    test_crops: int = F_(3, "test: spatial crops per clip along the long side (SVFormer: 3)", (1, 3))
    scale_min: float = F_(256 / 224, "weak view: shortest short side after resize, in units of img_size (256/224)")
    scale_max: float = F_(320 / 224, "weak view: longest short side after resize, in units of img_size (320/224)")
    hflip: float = F_(0.5, "weak view: horizontal flip probability")
    randaug_n: int = F_(2, "strong view: RandAugment ops per clip, the same for every frame (0 = off)")
    randaug_m: int = F_(9, "strong view: RandAugment magnitude (0-30)")
    temporal_warp_p: float = F_(2 / 3, "strong view: temporal warping probability (SVFormer: 2/3, i.e. 1/3 per option)")
    temporal_warp_keys: str = F_("2,4", "strong view: key-frame counts temporal warping picks from, comma-separated")
    strong_channel_dropout: float = F_(0.2, "strong view: channel dropout p, applied on device by the training step "
                                            "with channel_dropout() (SVFormer dropout2d: 0.2)")
    mean: list = F_([0.45, 0.45, 0.45], "per-channel mean in [0, 1] for normalize_clips (SVFormer: 0.45)")
    std: list = F_([0.225, 0.225, 0.225], "per-channel std in [0, 1] for normalize_clips (SVFormer: 0.225)")
    labeled_batch: int = F_(1, "labeled clips per step per process (SVFormer: 1 per GPU)")
    mu: int = F_(5, "unlabeled clips per labeled clip μ (SVFormer: 5); 0 = labeled only, epoch = labeled pass")
    eval_batch: int = F_(4, "test videos per eval batch (each holds test_clips × test_crops views)")
    workers: int = F_(4, "data loader worker processes per process (0 = decode in the training process)")
    prefetch: int = F_(2, "batches each worker prepares ahead")
    pin_memory: bool = F_(True, "page-locked batches for faster host-to-GPU copies (only when CUDA is available)")
    max_bad_fraction: float = F_(0.01, "abort once more than this fraction of the training videos failed to decode")
    synth_classes: int = F_(6, "synthetic: classes (motions), at most 12")
    synth_clips_per_class: int = F_(80, "synthetic: train clips per class (labeled + unlabeled)")
    synth_test_per_class: int = F_(20, "synthetic: test clips per class")
    synth_size: int = F_(40, "synthetic: frame height and width in pixels before augmentation")
    synth_length: int = F_(64, "synthetic: frames per video; the mover crosses the frame once per unit speed")
    synth_noise: float = F_(0.08, "synthetic: per-frame Gaussian noise std, in [0, 1] intensity units")
    synth_distractors: int = F_(3, "synthetic: static squares that look like the moving one")
    synth_seed: int = F_(0, "synthetic: content seed (independent of the training seed)")

    def __post_init__(self):
        if not 0 < self.labeled <= 1:
            raise ValueError(f"labeled: {self.labeled} is not a fraction in (0, 1]")
        for k in ("hflip", "temporal_warp_p", "strong_channel_dropout", "max_bad_fraction"):
            if not 0 <= getattr(self, k) <= 1:
                raise ValueError(f"{k}: {getattr(self, k)} is not a probability in [0, 1]")
        for k in ("num_frames", "img_size", "clip_stride", "test_clips", "labeled_batch", "eval_batch", "prefetch",
                  "synth_classes", "synth_clips_per_class", "synth_test_per_class", "synth_size", "synth_length"):
            if getattr(self, k) < 1:
                raise ValueError(f"{k}: must be at least 1, got {getattr(self, k)}")
        for k in ("mu", "workers", "randaug_n", "synth_distractors"):
            if getattr(self, k) < 0:
                raise ValueError(f"{k}: must be >= 0, got {getattr(self, k)}")
        if not 0 < self.scale_min <= self.scale_max:
            raise ValueError(f"scale_min/scale_max: need 0 < scale_min <= scale_max, got {self.scale_min}, "
                             f"{self.scale_max}")
        if not 0 <= self.randaug_m <= 30:
            raise ValueError(f"randaug_m: {self.randaug_m} is outside 0..30")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"mean/std: need 3 values each and std > 0, got {self.mean}, {self.std}")
        try:
            self.warp_keys = tuple(int(k) for k in str(self.temporal_warp_keys).split(","))
        except ValueError:
            raise ValueError(f"temporal_warp_keys: expected comma-separated integers, got {self.temporal_warp_keys!r}")
        if not self.warp_keys or min(self.warp_keys) < 1:
            raise ValueError(f"temporal_warp_keys: need key counts >= 1, got {self.temporal_warp_keys!r}")
        if self.synth_classes > 12:
            raise ValueError(f"synth_classes: at most 12 motions are defined, got {self.synth_classes}")
        if self.list_prefix and "=" not in self.list_prefix:
            raise ValueError(f"list_prefix: expected OLD=NEW, got {self.list_prefix!r}")


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
# API for the training loop (everything else in this section is a building block usable on its own):
#
#   data = build_data(cfg.data, seed)       # Data: .labeled .unlabeled .test (Dataset), .num_classes, .class_names, .bad
#   n = steps_per_epoch(data, world)        # one epoch = one pass over the UNLABELED pool (SVFormer's "epoch" was one
#                                           # pass over the labeled list: ~12 steps on UCF-101 1%)
#   for lab, unl in train_batches(data, epoch, start_step, rank, world):   # steps start_step..n-1, resumable exactly
#       lab = {"weak": uint8 (B, T, C, H, W), "label": long (B,), "index": long (B,)}          B = labeled_batch
#       unl = {"weak": uint8 (μB, T, C, H, W), "strong": uint8 (μB, T, C, H, W),
#              "label": long (μB,) true label or -1 (diagnostics only), "index": long (μB,)}    unl is None if mu = 0
#       x = normalize_clips(lab["weak"].to(dev, non_blocking=True), cfg.data.mean, cfg.data.std)  # float (B, C, T, H, W)
#       xs = channel_dropout(normalize_clips(unl["strong"].to(dev), ...), cfg.data.strong_channel_dropout, gen)
#   for b in eval_batches(data, full=True, rank, world):   # {"views": uint8 (B, V, T, C, H, W), "label", "index"}
#       ...                                                # V = test_clips × test_crops (full) or 1 (full=False)
#   data.bad.summary()                      # counters of skipped videos, for the metrics log
#
# Clips stay uint8 until the training step (4× less to move than float); normalisation and the strong view's channel
# dropout run on the device. Sampling order and every augmentation draw derive from (seed, epoch, sample position)
# only, so neither the worker count nor a mid-epoch resume changes a batch.

VIDEO_EXTS = (".avi", ".mp4", ".mkv", ".webm", ".mov", ".mpg", ".mpeg")
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
    """Official UCF-101 lists -> (train, test, class_names). Labels are classInd id - 1.

    The class comes from the folder part of each listed path: HandstandPushups/ holds v_HandStandPushups_* files and the
    lists spell them that way, so paths are kept exactly as written.
    """
    root = _require(Path(root), UCF101_TREE)
    lists = _require(root / "ucfTrainTestlist", UCF101_TREE)
    prefix = "UCF-101/" if (root / "UCF-101").is_dir() else ""
    f = _require(lists / "classInd.txt", UCF101_TREE)
    names: list[str] = []
    for n, line in _lines(f):
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit() or int(parts[0]) != len(names) + 1:
            raise ValueError(f"{f}:{n}: expected '<id> <ClassName>' with ids 1, 2, 3, ... in order, got {line!r}")
        names.append(parts[1])
    index = {c: i for i, c in enumerate(names)}

    def read(fname: str, labeled: bool) -> list[Entry]:
        f = _require(lists / fname, UCF101_TREE)
        out = []
        for n, line in _lines(f):
            parts = line.split()
            if len(parts) != (2 if labeled else 1) or "/" not in parts[0]:
                want = "'<Class>/<video>.avi <id>'" if labeled else "'<Class>/<video>.avi'"
                raise ValueError(f"{f}:{n}: expected {want}, got {line!r}")
            cls = parts[0].split("/")[0]
            if cls not in index:
                raise ValueError(f"{f}:{n}: class {cls!r} is not in {lists / 'classInd.txt'}")
            if labeled and int(parts[1]) != index[cls] + 1:
                raise ValueError(f"{f}:{n}: label {parts[1]} disagrees with classInd ({cls} is {index[cls] + 1})")
            out.append((prefix + parts[0], index[cls]))
        return out

    return read(f"trainlist0{split}.txt", True), read(f"testlist0{split}.txt", False), names


def read_hmdb51(root: str | Path, split: int = 1) -> tuple[list[Entry], list[Entry], list[str]]:
    """Official HMDB-51 split files -> (train, test, class_names); tag 1 = train, 2 = test, 0 = unused (dropped).
    Labels follow the sorted class names; the class set is whatever split files exist."""
    root = _require(Path(root), HMDB51_TREE)
    sdir = _require(root / "testTrainMulti_7030_splits", HMDB51_TREE)
    suffix = f"_test_split{split}.txt"
    files = sorted(sdir.glob("*" + suffix))
    if not files:
        raise FileNotFoundError(f"{sdir} holds no *{suffix} files.\n{HMDB51_TREE}")
    names = [p.name[: -len(suffix)] for p in files]
    train, test = [], []
    for label, (cls, f) in enumerate(zip(names, files)):
        for n, line in _lines(f):
            parts = line.split()
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                raise ValueError(f"{f}:{n}: expected '<video>.avi <tag>' with tag 0, 1 or 2, got {line!r}")
            if parts[1] != "0":
                (train if parts[1] == "1" else test).append((f"{cls}/{parts[0]}", label))
    return train, test, names


def _remap(path: str, root: Path, prefix: str) -> str:
    """Where a listed video lives: OLD=NEW prefix rewrite, else as written if it exists, else DATA_ROOT/<class>/<video>."""
    if prefix:
        old, new = prefix.split("=", 1)
        return new + path[len(old):] if path.startswith(old) else path
    if Path(path).is_absolute() and Path(path).exists():
        return path
    if not Path(path).is_absolute():
        return path  # relative to data_root
    return "/".join(Path(path).parts[-2:])


def read_list(path: str | Path, root: str | Path, prefix: str = "") -> list[Entry]:
    """A '<path> <label>' list (SVFormer's CSV) -> entries. Paths may contain spaces: the label is the last field."""
    path = _require(Path(path), LISTS_TREE)
    out = []
    for n, line in _lines(path):
        parts = line.rsplit(None, 1)
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise ValueError(f"{path}:{n}: expected '<path> <label>', got {line!r}")
        if int(parts[1]) < 0:
            raise ValueError(f"{path}:{n}: label {parts[1]} is negative")
        out.append((_remap(parts[0], Path(root), prefix), int(parts[1])))
    return out


# --- split lists ------------------------------------------------------------------------------------------------------
# splits/<dataset>/<N>pct/seed<k>/{labeled,unlabeled}.txt hold '<class>/<video>.avi <label>' lines under a '#' header.
# They are generated by make_splits_main from the official split-1 lists and committed, so that every run of a setting
# trains on the same clips; other fractions/seeds/splits are generated on the fly by the same function.

SPLITS_DIR = Path(__file__).resolve().parent / "splits"
DEFAULT_FRACTIONS = {"ucf101": (0.01, 0.1), "hmdb51": (0.4, 0.5, 0.6)}


def labeled_per_class(dataset: str, fraction: float, n_class: int) -> int:
    """Labeled clips drawn from a class with n_class train clips.

    UCF-101 follows SVFormer: x% means x clips per class (1% = 1, 10% = 10 per class; classes hold 70-121 train clips,
    94 on average). Elsewhere (HMDB-51: 70 per class, so 40/50/60% = 28/35/42) it is round(fraction × n_class).
    Never fewer than 1, never more than the class has.
    """
    k = 100 * fraction if dataset == "ucf101" else fraction * n_class
    return min(n_class, max(1, math.floor(k + 0.5)))


def class_balanced_split(train: list[Entry], fraction: float, seed: int, dataset: str
                         ) -> tuple[list[Entry], list[Entry]]:
    """Deterministic class-balanced labeled/unlabeled split of a train list; both outputs sorted by path.

    Each class draws its labeled clips with its own generator seeded by (seed, label), so a class's draw does not
    depend on the other classes or on the list order.
    """
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


def check_split(labeled: list[Entry], unlabeled: list[Entry], train: list[Entry] | None = None,
                test: list[Entry] | None = None, dataset: str = "", fraction: float | None = None) -> None:
    """Raise ValueError unless: labeled ∩ unlabeled = ∅, labeled ∪ unlabeled = train, nothing from test, and the
    per-class labeled counts follow labeled_per_class. Checks that lack their input (train/test/fraction) are skipped."""
    lab, unl = {r for r, _ in labeled}, {r for r, _ in unlabeled}
    if len(lab) != len(labeled) or len(unl) != len(unlabeled):
        raise ValueError("split: a video is listed twice")
    if lab & unl:
        raise ValueError(f"split: {len(lab & unl)} videos are both labeled and unlabeled, e.g. {sorted(lab & unl)[0]}")
    if train is not None and set(labeled) | set(unlabeled) != set(train):
        raise ValueError(f"split: labeled ∪ unlabeled ({len(lab | unl)}) differs from the train list ({len(train)})")
    if test is not None and (lab | unl) & {r for r, _ in test}:
        raise ValueError("split: a test video is in the labeled or unlabeled set")
    if fraction is not None:
        n_class: dict[int, int] = {}
        for _, y in list(labeled) + list(unlabeled):
            n_class[y] = n_class.get(y, 0) + 1
        got: dict[int, int] = {}
        for _, y in labeled:
            got[y] = got.get(y, 0) + 1
        for y, n in n_class.items():
            if got.get(y, 0) != labeled_per_class(dataset, fraction, n):
                raise ValueError(f"split: class {y} has {got.get(y, 0)} labeled clips, expected "
                                 f"{labeled_per_class(dataset, fraction, n)} of {n}")


def split_dir(dataset: str, fraction: float, seed: int, root: Path = SPLITS_DIR) -> Path:
    pct = f"{fraction * 100:g}"
    return Path(root) / dataset / f"{pct}pct" / f"seed{seed}"


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
            raise ValueError(f"{path}:{n}: expected '<class>/<video> <label>', got {line!r}")
        entries.append((parts[0], int(parts[1])))
    return entries, header


def _sha256(data: bytes) -> str:
    import hashlib
    return hashlib.sha256(data).hexdigest()


def split_sources(dataset: str, root: str | Path, split: int = 1) -> list[str]:
    """'<sha256> <what>' for the official list files a split is generated from (recorded in the split headers)."""
    root = Path(root)
    if dataset == "ucf101":
        names = ["classInd.txt", f"trainlist0{split}.txt", f"testlist0{split}.txt"]
        # Digests of the LF-normalised text, so a CRLF copy of the same lists checks out.
        return [f"{_sha256(_norm_bytes(root / 'ucfTrainTestlist' / n))} ucfTrainTestlist/{n}" for n in names]
    files = sorted((root / "testTrainMulti_7030_splits").glob(f"*_test_split{split}.txt"))
    blob = b"".join(_norm_bytes(f) for f in files)
    return [f"{_sha256(blob)} testTrainMulti_7030_splits/*_test_split{split}.txt "
            f"({len(files)} files concatenated in name order)"]


def _norm_bytes(path: Path) -> bytes:
    return Path(path).read_bytes().replace(b"\r\n", b"\n")


def write_split(out: Path, dataset: str, root: str | Path, split: int, fraction: float, seed: int,
                command: str) -> tuple[list[Entry], list[Entry]]:
    """Generate, check and write one setting's labeled.txt/unlabeled.txt under `out`."""
    read = read_ucf101 if dataset == "ucf101" else read_hmdb51
    train, test, names = read(root, split)
    labeled, unlabeled = class_balanced_split(train, fraction, seed, dataset)
    check_split(labeled, unlabeled, train, test, dataset, fraction)
    out.mkdir(parents=True, exist_ok=True)
    for kind, entries in (("labeled", labeled), ("unlabeled", unlabeled)):
        head = [f"# fullsvformer split: {dataset} official split {split}, {fraction:g} labeled fraction "
                f"({len(labeled)} labeled / {len(unlabeled)} unlabeled of {len(train)} train clips), {kind} part",
                f"# command: {command}", f"# seed: {seed}"] + [f"# source-sha256: {s}" for s in
                                                              split_sources(dataset, root, split)]
        body = [f"{rel.removeprefix('UCF-101/')} {y}" for rel, y in entries]
        (out / f"{kind}.txt").write_text("\n".join(head + body) + "\n")
    return labeled, unlabeled


def make_splits_main(argv: list[str]) -> None:
    """`python fullsvformer.py make-splits --dataset ucf101 --root ../shared/data/ucf101` (and hmdb51): write and check
    splits/<dataset>/<N>pct/seed<k>/{labeled,unlabeled}.txt from the official lists under --root (no videos needed)."""
    p = argparse.ArgumentParser(prog="fullsvformer.py make-splits", description=make_splits_main.__doc__)
    p.add_argument("--dataset", required=True, choices=("ucf101", "hmdb51"))
    p.add_argument("--root", required=True, help="folder holding ucfTrainTestlist/ or testTrainMulti_7030_splits/")
    p.add_argument("--split", type=int, default=1, choices=(1, 2, 3), help="official split")
    p.add_argument("--fractions", type=float, nargs="+", help="labeled fractions (default: the paper's settings)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--out", default=str(SPLITS_DIR), help="splits folder (default: splits/ next to this file)")
    a = p.parse_args(argv)
    command = "python fullsvformer.py make-splits " + " ".join(argv)
    for fraction in a.fractions or DEFAULT_FRACTIONS[a.dataset]:
        for seed in a.seeds:
            out = split_dir(a.dataset, fraction, seed, Path(a.out))
            lab, unl = write_split(out, a.dataset, a.root, a.split, fraction, seed, command)
            print(f"{out}: {len(lab)} labeled, {len(unl)} unlabeled (checked)")


def select_split(dataset: str, train: list[Entry], fraction: float, seed: int, split: int
                 ) -> tuple[list[Entry], list[Entry], str]:
    """(labeled, unlabeled, where from): the committed files for this setting if they exist, else generated.
    Committed files must match the train list found under data_root, or it is an error."""
    d = split_dir(dataset, fraction, seed)
    if split == 1 and (d / "labeled.txt").is_file():
        prefix = "UCF-101/" if train and train[0][0].startswith("UCF-101/") else ""  # split files omit it
        labeled, _ = read_split_file(d / "labeled.txt")
        unlabeled, _ = read_split_file(d / "unlabeled.txt")
        labeled = [(prefix + r, y) for r, y in labeled]
        unlabeled = [(prefix + r, y) for r, y in unlabeled]
        try:
            check_split(labeled, unlabeled, train)
        except ValueError as e:
            raise ValueError(f"{d}: the committed split does not match the official lists under data_root ({e}); "
                             "use the official split-1 lists or another --split-seed") from None
        return labeled, unlabeled, str(d)
    labeled, unlabeled = class_balanced_split(train, fraction, seed, dataset)
    return labeled, unlabeled, "generated"


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
    if clips == 1:
        return [last // 2]
    return [round(last * k / (clips - 1)) for k in range(clips)]


def decode_frames(path: str | Path, pick: Callable[[int], torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode only the frames pick(num_frames) asks for -> (uint8 (len(idx), C, H, W), idx). Raises BadVideo.

    Each distinct frame is decoded once, in increasing order (one forward pass from the nearest key frame).
    """
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
    """uint8 (..., T, C, H, W) -> normalised float (..., C, T, H, W), the model's input, on x's device.
    The result is a permuted view (not contiguous); the model's patch embedding copes with that."""
    m = torch.as_tensor(mean, dtype=dtype, device=x.device).view(-1, 1, 1)  # (C, 1, 1) against (..., T, C, H, W)
    s = torch.as_tensor(std, dtype=dtype, device=x.device).view(-1, 1, 1)
    return ((x.to(dtype) / 255 - m) / s).movedim(-3, -4)  # (..., T, C, H, W) -> (..., C, T, H, W)


def channel_dropout(x: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """SVFormer's dropout2d on the strong view: zero whole channels of each clip with probability p, scale the rest
    by 1/(1-p). x is normalised float (B, C, T, H, W); a zeroed channel is the mean colour. Runs on x's device."""
    if p <= 0:
        return x
    keep = torch.rand(x.shape[:2], device=x.device, generator=generator) >= p  # (B, C)
    return x * keep.to(x.dtype).view(*x.shape[:2], 1, 1, 1) / (1 - p)


def temporal_warp(clip: torch.Tensor, generator: torch.Generator, p: float = 2 / 3,
                  num_keys: tuple[int, ...] = (2, 4)) -> tuple[torch.Tensor, torch.Tensor]:
    """SVFormer's temporal warping -> (warped clip, source frame index (T,)).

    With probability 1 - p keep all T frames; otherwise pick m ∈ num_keys (uniformly) sorted key frames and repeat
    each to fill the gaps, preserving order: output frame t shows key ⌊t·m/T⌋. SVFormer: p = 2/3, m ∈ {2, 4}, so each
    of the three options has probability 1/3. clip is (T, ...) with time first.
    """
    T = clip.shape[0]
    src = torch.arange(T)
    if float(torch.rand((), generator=generator)) < p:
        m = min(T, num_keys[int(torch.randint(len(num_keys), (1,), generator=generator))])
        keys = torch.randperm(T, generator=generator)[:m].sort().values
        src = keys[torch.arange(T) * m // T]
    return clip[src], src


class ClipAugment:
    """Weak and strong views of one decoded clip, every draw from one per-sample seed.

    Weak (labeled clips and the teacher's input): short side resized to a random length in
    [scale_min, scale_max] × img_size (SVFormer: [256, 320] for 224), a random img_size crop, horizontal flip.
    Strong (the student's input): the same weak frames, then temporal_warp and RandAugment applied identically to
    every frame (torchvision.transforms.v2 on a Video tensor). Channel dropout is left to the training step.
    """

    def __init__(self, cfg: "DataConfig"):
        from torchvision.transforms import v2
        self.size, self.hflip = cfg.img_size, cfg.hflip
        self.short = (round(cfg.scale_min * cfg.img_size), round(cfg.scale_max * cfg.img_size))
        self.randaug = v2.RandAugment(cfg.randaug_n, cfg.randaug_m) if cfg.randaug_n > 0 else None
        self.warp_p, self.warp_keys = cfg.temporal_warp_p, cfg.warp_keys

    def weak(self, video: torch.Tensor) -> torch.Tensor:
        """Scale jitter + random crop + flip on (T, C, H, W). Equivalent to resizing the short side to a random length
        in `short` and cropping size × size, but done as crop-then-resize: the resize then touches only the crop's
        pixels (2.5x faster at 320x240 -> 224)."""
        import torchvision.transforms.v2.functional as TF
        H, W = video.shape[-2:]
        short = int(torch.randint(self.short[0], self.short[1] + 1, (1,)))
        side = min(H, W, max(1, round(self.size * min(H, W) / short)))  # crop side in source pixels
        top = int(torch.randint(H - side + 1, (1,)))
        left = int(torch.randint(W - side + 1, (1,)))
        out = TF.resized_crop(video, top, left, side, side, [self.size, self.size], antialias=True)
        return TF.horizontal_flip(out) if float(torch.rand(())) < self.hflip else out

    def __call__(self, frames: torch.Tensor, seed: int, strong: bool) -> dict[str, torch.Tensor]:
        """frames uint8 (T, C, H, W) -> {"weak": uint8 (T, C, S, S)[, "strong": ..., "warp": (T,) source index]}."""
        from torchvision import tv_tensors
        # v2 transforms draw from torch's global RNG: fork it so a per-sample seed does not disturb the caller's stream
        # (with workers = 0 the caller is the training process).
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            weak = self.weak(tv_tensors.Video(frames))  # (T, C, S, S)
            out = {"weak": weak.as_subclass(torch.Tensor)}
            if strong:
                g = torch.Generator().manual_seed(seed + 1)
                s, out["warp"] = temporal_warp(weak, g, self.warp_p, self.warp_keys)
                s = tv_tensors.Video(s)
                out["strong"] = (self.randaug(s) if self.randaug else s).as_subclass(torch.Tensor).contiguous()
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


def _mix(*xs: int) -> int:
    """A 63-bit seed from integers (SeedSequence hashing: nearby inputs give unrelated seeds)."""
    return int(np.random.SeedSequence([int(x) & 0xFFFFFFFF for x in xs]).generate_state(2, np.uint32).astype(np.uint64)
               .dot(np.array([1 << 31, 1], dtype=np.uint64)))


# --- datasets ---------------------------------------------------------------------------------------------------------


class VideoClips(torch.utils.data.Dataset):
    """Videos under a root as (path, label) entries. Items are dicts of uint8 clips (see train_item / test_item).

    Keys are tuples, not bare indices, because the augmentation seed travels with the index (see train_batches).
    """

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
        """One training clip: T frames at stride clip_stride from a random start, weak (and strong) views.
        An unreadable video is skipped with a warning and replaced by a deterministic other one (seeded by the sample
        seed); the skipped paths travel with the item (key "bad") so the main process can count them."""
        c, bad = self.cfg, []
        for attempt in range(10):
            j = i if attempt == 0 else int(np.random.default_rng([seed & 0xFFFFFFFF, attempt]).integers(len(self)))
            g = torch.Generator().manual_seed(seed)
            try:
                frames, idx = self.read(j, lambda n: clip_indices(
                    n, c.num_frames, c.clip_stride, random_clip_start(n, c.num_frames, c.clip_stride, g)))
            except BadVideo as e:
                log.warning(f"skipping unreadable video ({self.name} set): {e}")
                bad.append(self.path(j))
                continue
            out = self.augment(frames, seed, strong)
            out.pop("warp", None)
            return dict(out, label=self.entries[j][1], index=j, bad="\n".join(bad))
        raise RuntimeError(f"10 videos in a row failed to decode in the {self.name} set, starting at {self.path(i)}; "
                           f"last: {bad[-1]}")

    def test_item(self, i: int, full: bool = True) -> dict:
        """All test views of video i: clips uniformly spaced × spatial crops -> {"views": (V, T, C, S, S), ...}.
        All clips come from one decode. An unreadable test video is an error: skipping it would change the test set."""
        c = self.cfg
        clips, crops = (c.test_clips, c.test_crops) if full else (1, 1)

        def pick(n):
            return torch.cat([clip_indices(n, c.num_frames, c.clip_stride, s)
                              for s in uniform_clip_starts(n, c.num_frames, c.clip_stride, clips)])
        frames, _ = self.read(i, pick)  # (clips·T, C, H, W)
        return {"views": test_views(frames, clips, crops, c.img_size), "label": self.entries[i][1], "index": i}


# --- synthetic motion clips -------------------------------------------------------------------------------------------
# A class is a motion: the velocity (vy, |vx|) of one square among look-alike static squares, over static clutter and
# per-frame noise. The square starts anywhere and wraps around the borders, so its position is uniform in every frame
# and no single frame tells the classes apart. The sign of vx is random per clip, so horizontal flips keep the label.
SYNTH_MOTIONS = [("move_up", -1, 0), ("move_down", 1, 0), ("move_sideways", 0, 1), ("rise_diagonal", -1, 1),
                 ("fall_diagonal", 1, 1), ("stay_still", 0, 0), ("rush_up", -2, 0), ("rush_down", 2, 0),
                 ("rush_sideways", 0, 2), ("rise_steep", -2, 1), ("fall_steep", 1, 2), ("rise_flat", -1, 2)]


def synthetic_frames(index: int, label: int, frames: torch.Tensor, size: int, length: int, seed: int = 0,
                     noise: float = 0.08, distractors: int = 3) -> torch.Tensor:
    """Frames `frames` (indices into a `length`-frame video) of synthetic clip `index` -> uint8 (len, 3, size, size).

    Everything is drawn from (seed, index), and the noise of frame t from (seed, index, t), so any subset of frames is
    generated without the others (like decoding only the needed frames). Speed: the square crosses the frame once
    over `length` frames per unit of velocity.
    """
    g = torch.Generator().manual_seed(_mix(seed, index))
    _, vy, vx = SYNTH_MOTIONS[label]
    vx = vx * (1 if float(torch.rand((), generator=g)) < 0.5 else -1)
    bg = torch.rand(3, 1, 1, generator=g) * 0.5 + 0.25
    img = bg.expand(3, size, size).clone()
    ys, xs = torch.arange(size), torch.arange(size)
    for _ in range(6):  # static clutter rectangles
        y0, x0 = torch.randint(size, (2,), generator=g).tolist()
        h, w = torch.randint(size // 8 + 1, size // 3 + 2, (2,), generator=g).tolist()
        box = (((ys - y0) % size < h)[:, None] & ((xs - x0) % size < w)[None, :])  # (size, size)
        img = torch.where(box, torch.rand(3, 1, 1, generator=g), img)
    side = max(2, size // 8)
    colour = torch.rand(3, 1, 1, generator=g)
    pos = torch.rand(distractors + 1, 2, generator=g) * size  # row 0 is the mover
    t = frames.to(torch.float32)
    step = size / max(length, 1)
    py = (pos[0, 0] + vy * step * t) % size  # (F,)
    px = (pos[0, 1] + vx * step * t) % size
    inside_y = ((ys[None, :] - py[:, None]) % size) < side  # (F, size)
    inside_x = ((xs[None, :] - px[:, None]) % size) < side
    mover = inside_y[:, :, None] & inside_x[:, None, :]  # (F, size, size)
    still = torch.zeros(size, size, dtype=torch.bool)
    for d in range(1, distractors + 1):
        still |= (((ys - pos[d, 0]) % size < side)[:, None] & ((xs - pos[d, 1]) % size < side)[None, :])
    shapes = (mover | still)[:, None]  # (F, 1, size, size)
    video = torch.where(shapes, colour, img)  # (F, 3, size, size)
    eps = torch.stack([torch.randn(3, size, size, generator=torch.Generator().manual_seed(_mix(seed, index, int(f))))
                       for f in frames])
    return ((video + noise * eps).clamp(0, 1) * 255).round().to(torch.uint8)


class SyntheticClips(VideoClips):
    """In-memory synthetic videos: same items and augmentation path as decoded files (frames generated on demand)."""

    def read(self, i: int, pick: Callable[[int], torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.cfg
        idx = pick(c.synth_length)
        rel, y = self.entries[i]
        return synthetic_frames(int(rel.rsplit("_", 1)[1]), y, idx, c.synth_size, c.synth_length, c.synth_seed,
                                c.synth_noise, c.synth_distractors), idx


def synthetic_entries(cfg: "DataConfig") -> tuple[list[Entry], list[Entry], list[str]]:
    """(train, test, class_names) of the synthetic dataset; clip ids are global so train and test never share one."""
    names = [m[0] for m in SYNTH_MOTIONS[: cfg.synth_classes]]
    per = cfg.synth_clips_per_class + cfg.synth_test_per_class
    train, test = [], []
    for y, name in enumerate(names):
        for k in range(per):
            (train if k < cfg.synth_clips_per_class else test).append((f"{name}/clip_{y * per + k}", y))
    return train, test, names


def make_synthetic_main(argv: list[str]) -> None:
    """`python fullsvformer.py make-synthetic --out DIR --layout ucf101|hmdb51`: write the synthetic clips as 25 fps
    mpeg4 AVI files with official-format lists, so the real decode -> split -> loader path can run end to end."""
    p = argparse.ArgumentParser(prog="fullsvformer.py make-synthetic", description=make_synthetic_main.__doc__)
    p.add_argument("--out", required=True)
    p.add_argument("--layout", required=True, choices=("ucf101", "hmdb51"))
    p.add_argument("--classes", type=int, default=4)
    p.add_argument("--clips-per-class", type=int, default=10)
    p.add_argument("--size", type=int, default=64, help="frame height and width in pixels (even)")
    p.add_argument("--length", type=int, default=64, help="frames per video (25 fps)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    from torchcodec.encoders import VideoEncoder
    out = Path(a.out)
    names = [m[0] for m in SYNTH_MOTIONS[: a.classes]]
    allf = torch.arange(a.length)
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
                VideoEncoder(synthetic_frames(y * a.clips_per_class + k, y, allf, a.size, a.length, a.seed),
                             frame_rate=25).to_file(str(out / "UCF-101" / rel), codec="mpeg4")
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
                VideoEncoder(synthetic_frames(y * a.clips_per_class + k, y, allf, a.size, a.length, a.seed),
                             frame_rate=25).to_file(str(out / c / v), codec="mpeg4")
            for s in (1, 2, 3):  # per 10 clips: 3 test (tag 2), 1 unused (tag 0), 6 train (tag 1), rotated per split
                tags = [2 if (k + s) % 10 < 3 else 0 if (k + s) % 10 == 3 else 1 for k in range(len(vids))]
                (sdir / f"{c}_test_split{s}.txt").write_text("".join(f"{v} {t} \n" for v, t in zip(vids, tags)))
    print(f"wrote {len(names) * a.clips_per_class} videos ({a.layout} layout) under {out}")


# --- build_data and loaders -------------------------------------------------------------------------------------------


@dataclass
class BadSamples:
    """Videos skipped during training. Aborts once more than max_fraction of the training pool is known bad."""
    pool_size: int
    max_fraction: float
    failed: dict = field(default_factory=dict)  # path -> times skipped
    served: int = 0  # clips delivered

    def record(self, paths: list[str], served: int) -> None:
        self.served += served
        for p in paths:
            self.failed[p] = self.failed.get(p, 0) + 1
        if len(self.failed) > self.max_fraction * self.pool_size:
            raise RuntimeError(f"{len(self.failed)} of {self.pool_size} training videos failed to decode (more than "
                               f"max_bad_fraction={self.max_fraction}); first: {', '.join(sorted(self.failed)[:5])}")

    def summary(self) -> dict:
        return {"bad_videos": len(self.failed), "bad_skips": sum(self.failed.values()), "clips_served": self.served}


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


def _check_files(sets: list[VideoClips]) -> None:
    """Every listed video must exist before training starts (a typo in data_root should not cost a GPU hour)."""
    missing = [f"{d.path(i)} ({d.name} set)" for d in sets for i in range(len(d)) if not os.path.isfile(d.path(i))]
    if missing:
        total = sum(len(d) for d in sets)
        raise FileNotFoundError(f"{len(missing)} of {total} listed videos do not exist under {sets[0].root}; "
                                f"first {min(10, len(missing))}:\n  " + "\n  ".join(missing[:10]))


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
            raise ValueError(f"data_root is empty: --dataset {cfg.dataset} needs --data-root.\n"
                             + {"ucf101": UCF101_TREE, "hmdb51": HMDB51_TREE, "lists": LISTS_TREE}[cfg.dataset])
        if cfg.dataset == "lists":
            if not (cfg.train_list and cfg.val_list):
                raise ValueError(f"--dataset lists needs --train-list and --val-list.\n{LISTS_TREE}")
            _require(root, LISTS_TREE)
            labeled = read_list(cfg.train_list, root, cfg.list_prefix)
            unlabeled = read_list(cfg.unlabeled_list, root, cfg.list_prefix) if cfg.unlabeled_list else []
            test = read_list(cfg.val_list, root, cfg.list_prefix)
            k = 1 + max(y for _, y in labeled + unlabeled + test)
            empty = sorted(set(range(k)) - {y for _, y in labeled + unlabeled + test})
            if empty:
                raise ValueError(f"lists: labels {empty[:10]} have no clip in any list (are the labels 1-based?); "
                                 "labels must be 0 .. num_classes-1")
            names = [""] * k
            for rel, y in labeled + unlabeled + test:  # class name = the folder that holds the video
                names[y] = names[y] or Path(rel).parent.name
            source = f"lists {cfg.train_list}"
        else:
            read = read_ucf101 if cfg.dataset == "ucf101" else read_hmdb51
            train, test, names = read(root, cfg.split)
            labeled, unlabeled, source = select_split(cfg.dataset, train, cfg.labeled, cfg.split_seed, cfg.split)
        make = lambda e, n: VideoClips(root, e, cfg, n)  # noqa: E731
        for e in (labeled, unlabeled, test):
            bad = [x for x in e if not 0 <= x[1] < len(names)]
            if bad:
                raise ValueError(f"label {bad[0][1]} of {bad[0][0]} is out of range for {len(names)} classes")
    ds = [make(e, n) for e, n in ((labeled, "labeled"), (unlabeled, "unlabeled"), (test, "test"))]
    if cfg.dataset != "synthetic":
        _check_files(ds)
    if not len(ds[0]):
        raise ValueError("the labeled set is empty")
    if cfg.mu > 0 and not len(ds[1]):
        raise ValueError("the unlabeled pool is empty (labeled = 1.0?): use --mu 0 for labeled-only training")
    return Data(cfg, seed, *ds, num_classes=len(names), class_names=list(names), split_source=source,
                bad=BadSamples(len(ds[0]) + len(ds[1]), cfg.max_bad_fraction))


def steps_per_epoch(data: Data, world: int = 1) -> int:
    """Steps in one epoch: one pass over the unlabeled pool (each rank gets ⌈n/world⌉ clips; a partial last batch is
    dropped). With mu = 0 (labeled only) one pass over the labeled set."""
    c = data.cfg
    if c.mu > 0:
        return math.ceil(len(data.unlabeled) / world) // (c.mu * c.labeled_batch)
    return max(1, math.ceil(len(data.labeled) / world) // c.labeled_batch)


def train_keys(data: Data, epoch: int, step: int, rank: int = 0, world: int = 1) -> list[tuple]:
    """Dataset keys (stream, index, augmentation seed) of one step's samples on one rank; a pure function of
    (seed, epoch, step, rank, world). Like DistributedSampler, ranks take interleaved slots of one global order."""
    c, seed = data.cfg, data.seed
    keys = []
    n_l = len(data.labeled)
    for q in range(step * c.labeled_batch, (step + 1) * c.labeled_batch):
        g = q * world + rank  # global position in the endless labeled stream: reshuffled after every pass
        perm = torch.randperm(n_l, generator=torch.Generator().manual_seed(_mix(seed, epoch, 1, g // n_l)))
        keys.append((0, int(perm[g % n_l]), _mix(seed, epoch, 1, g, 7)))
    if c.mu > 0:
        n_u = len(data.unlabeled)
        perm = torch.randperm(n_u, generator=torch.Generator().manual_seed(_mix(seed, epoch, 2)))
        per = c.mu * c.labeled_batch
        for q in range(step * per, (step + 1) * per):
            g = q * world + rank  # positions past n_u wrap around, as DistributedSampler pads
            keys.append((1, int(perm[g % n_u]), _mix(seed, epoch, 2, g, 7)))
    return keys


class _TrainSet(torch.utils.data.Dataset):
    """Labeled and unlabeled sets behind one key space, so one worker pool serves both streams in step."""

    def __init__(self, labeled: VideoClips, unlabeled: VideoClips):
        self.sets = (labeled, unlabeled)

    def __len__(self):
        return sum(len(s) for s in self.sets)

    def __getitem__(self, key):
        stream, i, seed = key
        return dict(self.sets[stream].train_item(i, seed, strong=stream == 1), stream=stream)


def _collate_train(items: list[dict]) -> tuple[dict, dict | None, list[str], int]:
    def batch(xs, keys):
        out = {k: torch.stack([x[k] for x in xs]) for k in keys}  # (B, T, C, H, W)
        out["label"] = torch.tensor([x["label"] for x in xs], dtype=torch.long)
        out["index"] = torch.tensor([x["index"] for x in xs], dtype=torch.long)
        return out
    lab = [x for x in items if x["stream"] == 0]
    unl = [x for x in items if x["stream"] == 1]
    bad = [p for x in items for p in x["bad"].split("\n") if p]
    return batch(lab, ("weak",)), (batch(unl, ("weak", "strong")) if unl else None), bad, len(items)


class _StepSampler:
    """Batch sampler over steps start..end of one epoch; set() before each iter() (the loader keeps its workers)."""

    def __init__(self, data: Data, rank: int, world: int):
        self.data, self.rank, self.world, self.epoch, self.start = data, rank, world, 0, 0

    def __iter__(self):
        for step in range(self.start, steps_per_epoch(self.data, self.world)):
            yield train_keys(self.data, self.epoch, step, self.rank, self.world)

    def __len__(self):
        return steps_per_epoch(self.data, self.world) - self.start


def _loader(data: Data, dataset, batch_sampler, collate, persistent: bool) -> torch.utils.data.DataLoader:
    c = data.cfg
    return torch.utils.data.DataLoader(
        dataset, batch_sampler=batch_sampler, collate_fn=collate, num_workers=c.workers,
        pin_memory=c.pin_memory and torch.cuda.is_available(), persistent_workers=persistent and c.workers > 0,
        prefetch_factor=c.prefetch if c.workers > 0 else None)


def train_batches(data: Data, epoch: int, start_step: int = 0, rank: int = 0, world: int = 1):
    """Yield (labeled batch, unlabeled batch or None) for steps start_step .. steps_per_epoch-1 of `epoch`.
    Skipped videos are counted in data.bad (which aborts past max_bad_fraction)."""
    key = ("train", rank, world)
    if key not in data._loaders:
        sampler = _StepSampler(data, rank, world)
        train_set = _TrainSet(data.labeled, data.unlabeled)
        data._loaders[key] = (_loader(data, train_set, sampler, _collate_train, persistent=True), sampler)
    loader, sampler = data._loaders[key]
    sampler.epoch, sampler.start = epoch, start_step
    for lab, unl, bad, served in loader:
        data.bad.record(bad, served)
        yield lab, unl


class _EvalSet(torch.utils.data.Dataset):
    def __init__(self, test: VideoClips, full: bool):
        self.test, self.full = test, full

    def __len__(self):
        return len(self.test)

    def __getitem__(self, i):
        return self.test.test_item(i, self.full)


def _collate_eval(items: list[dict]) -> dict:
    return {"views": torch.stack([x["views"] for x in items]),  # (B, V, T, C, H, W)
            "label": torch.tensor([x["label"] for x in items], dtype=torch.long),
            "index": torch.tensor([x["index"] for x in items], dtype=torch.long)}


def eval_batches(data: Data, full: bool = True, rank: int = 0, world: int = 1):
    """Yield {"views": uint8 (B, V, T, C, H, W), "label", "index"} over this rank's share of the test set (every
    world-th video, no padding, so summed counts are exact). full=False: one centre clip × centre crop (V = 1)."""
    c = data.cfg
    shard = list(range(rank, len(data.test), world))
    batches = [shard[i:i + c.eval_batch] for i in range(0, len(shard), c.eval_batch)]
    yield from _loader(data, _EvalSet(data.test, full), batches, _collate_eval, persistent=False) if batches else ()


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
