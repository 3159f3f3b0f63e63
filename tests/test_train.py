"""Training loop, CLI and run directory: tiny CLI runs on the built-in synthetic dataset (cleanrl-style tests)."""
import dataclasses
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

import fullsvformer as fs
from tools import make_synthetic

ROOT = Path(fs.__file__).parent
# A model and dataset small enough that an epoch takes about a second on 2 cores.
TINY = ["--dataset", "synthetic", "--img-size", "16", "--patch-size", "8", "--embed-dim", "32", "--depth", "1",
        "--num-heads", "2", "--num-frames", "4", "--clip-stride", "2", "--synth-size", "20", "--synth-length", "16",
        "--synth-classes", "3", "--synth-clips-per-class", "12", "--synth-test-per-class", "4", "--labeled", "0.25",
        "--labeled-batch", "2", "--mu", "2", "--global-batch", "2", "--epochs", "2", "--eval-every", "1",
        "--log-every", "1", "--workers", "0", "--eval-batch", "8", "--device", "cpu", "--pretrained", ""]
RESULT_KEYS = ("top1", "top5", "teacher_top1", "teacher_top5", "per_class_top1", "teacher_per_class_top1", "steps")


def run_cli(args, timeout=300, check=True):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, str(ROOT / "fullsvformer.py"), *args], capture_output=True, text=True,
                         timeout=timeout, cwd=ROOT, env=env)
    if check:
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "run"
    torch.set_num_threads(1)
    summary = fs.main(TINY + ["--out", str(out)])
    return out, summary


# ---- the run directory ------------------------------------------------------------------------------------------------

def test_run_directory_contents(tiny_run):
    out, summary = tiny_run
    for name in ("config.yaml", "log.txt", "metrics.jsonl", "last.pt", "best.pt", "summary.json"):
        assert (out / name).is_file(), name
    on_disk = json.loads((out / "summary.json").read_text())
    for k in ("top1", "top5", "teacher_top1", "teacher_top5", "num_classes", "epochs", "steps", "wall_time_s",
              "clips_per_s"):
        assert k in on_disk, k
    assert on_disk["num_classes"] == 3 and on_disk["epochs"] == 2 and on_disk["steps"] == 12  # 27 unlabeled / 4
    assert on_disk["top1"] == summary["top1"] and len(on_disk["per_class_top1"]) == 3
    # 4 test clips per class: top-1 is the mean of the per-class top-1s.
    assert on_disk["top1"] == pytest.approx(sum(on_disk["per_class_top1"].values()) / 3, abs=1e-3)


def test_metrics_log_has_every_term(tiny_run):
    out, _ = tiny_run
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["kind"] == "train"]
    evals = [r for r in rows if r["kind"] == "eval"]
    assert [r["step"] for r in train] == list(range(1, 13))
    for k in ("loss", "loss_ce", "loss_kl", "loss_mix", "loss_nl", "mask_ratio", "anl_k", "anl_negatives",
              "pseudo_label_acc", "lr", "clips_per_s", "bad_videos", "logit_scale", "kl_used", "anl_neg_mass",
              "anl_neg_precision"):
        assert k in train[0], k
    # The first step has no measured k yet: k = K = 3 leaves no negative, so ANL's loss is exactly 0 there, and its
    # precision is undefined.
    assert train[0]["anl_k"] == 3 and train[0]["loss_nl"] == 0 and train[0]["anl_negatives"] == 0
    assert train[0]["anl_neg_precision"] is None and train[0]["anl_neg_mass"] == 0 and train[0]["kl_used"] == 1
    assert any(r["anl_negatives"] > 0 and r["anl_neg_precision"] is not None for r in train)
    assert [r["epoch"] for r in evals] == [1, 2]  # the last epoch's too, so best.pt compares 1-view figures only
    # One numbering everywhere: the eval after epoch 1 and the steps of epoch 1 both say epoch 1 (6 steps an epoch).
    assert [r["epoch"] for r in train] == [1] * 6 + [2] * 6
    # The logged total is the weighted sum of the logged terms (defaults: 2 KL + 2 mix + 1 NL).
    r = train[-1]
    assert r["loss"] == pytest.approx(r["loss_ce"] + 2 * r["loss_kl"] + 2 * r["loss_mix"] + r["loss_nl"], rel=1e-4)


class Logits(torch.nn.Module):
    """A model that returns prepared logits, one (B*V, K) chunk per call, whatever its input."""

    def __init__(self, chunks):
        super().__init__()
        self.chunks = list(chunks)

    def forward(self, x):
        out = self.chunks.pop(0)
        assert out.shape[0] == x.shape[0]
        return out


def test_evaluate_known_answer(monkeypatch):
    """evaluate() on 6 videos x 2 views with hand-made logits (K = 6; reference: the answer worked out by hand).
    Views are averaged before ranking, so video 3's views, which disagree, still give class 2."""
    K, big = 6, 10.0

    def ranked(label, rank):  # logits whose average puts `label` at 1-based `rank`: classes before it score higher
        order = [c for c in range(K) if c != label][:rank - 1] + [label]
        order += [c for c in range(K) if c not in order]
        z = torch.zeros(K)
        z[torch.tensor(order)] = torch.arange(K, 0, -1, dtype=torch.float)
        return z

    videos = [  # (label, view 1 logits, view 2 logits)
        (0, ranked(0, 1), ranked(0, 1)),  # top-1 hit
        (1, ranked(1, 3), ranked(1, 3)),  # top-5 only
        (1, ranked(1, 6), ranked(1, 6)),  # miss
        (2, ranked(2, 1) * big, ranked(3, 1)),  # views disagree; the average still ranks 2 first: hit
        (5, ranked(5, 1), ranked(5, 1)),  # hit
        (5, ranked(5, 5), ranked(5, 5)),  # rank 5 exactly: top-5 only
    ]
    batches = [videos[:3], videos[3:]]
    monkeypatch.setattr(fs, "eval_batches", lambda data, full=True, rank=0, world=1: (
        {"views": torch.zeros(len(b), 2, 1, 3, 4, 4, dtype=torch.uint8), "label": torch.tensor([v[0] for v in b]),
         "index": torch.arange(len(b))} for b in batches))
    chunks = [torch.stack([z for v in b for z in v[1:]]) for b in batches]  # (B*V, K), video-major as the views
    data = SimpleNamespace(num_classes=K, cfg=fs.DataConfig(eval_batch=3), test=[None] * 6)
    res = fs.evaluate({"a": Logits(chunks), "b": Logits([-c for c in chunks])}, data, torch.device("cpu"))
    a = res["a"]
    assert a["videos"] == 6
    assert a["top1"] == pytest.approx(100 * 3 / 6) and a["top5"] == pytest.approx(100 * 5 / 6)
    assert a["per_class_top1"] == pytest.approx([100, 0, 100, 0, 0, 50])  # class 3 and 4 have no video: 0
    # Negated logits invert every ranking: only video 2 (label last before) is now first.
    assert res["b"]["top1"] == pytest.approx(100 / 6) and res["b"]["per_class_top1"][1] == pytest.approx(50)


def test_config_yaml_round_trips(tiny_run):
    out, _ = tiny_run
    cfg = fs.load_config(out / "config.yaml")
    assert cfg.model.embed_dim == 32 and cfg.data.mu == 2 and cfg.train.epochs == 2


def test_checkpoint_loads_as_pretrained_student_and_teacher(tiny_run):
    out, _ = tiny_run
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert ckpt["format"] == "fullsvformer" and ckpt["state"]["step"] == 12
    assert not any(k.startswith(("_orig_mod.", "module.")) for k in ckpt["model"])
    m = fs.build_model(fs.load_config(out / "config.yaml").model, 3, 4, 16)
    assert fs.load_pretrained(m, out / "last.pt")["format"] == "ours"
    fs.load_pretrained(m, f"{out / 'last.pt'}:teacher")
    torch.testing.assert_close(m.state_dict()["head.weight"], ckpt["ema"]["head.weight"])


def test_eval_subcommand_reproduces_the_final_eval(tiny_run):
    out, summary = tiny_run
    res = fs.main(["eval", "--checkpoint", str(out / "last.pt"), "--device", "cpu"])
    assert res["top1"] == pytest.approx(summary["top1"]) and res["teacher_top1"] == pytest.approx(
        summary["teacher_top1"])


def test_eval_rejects_a_class_count_mismatch(tiny_run):
    out, _ = tiny_run
    with pytest.raises(ValueError, match="trained for 3 classes.*has 4"):
        fs.main(["eval", "--checkpoint", str(out / "last.pt"), "--synth-classes", "4", "--device", "cpu"])


# ---- exact resume -----------------------------------------------------------------------------------------------------

DROPOUT = ["--drop-path", "0.1", "--head-dropout", "0.5"]  # so the model's own RNG stream matters on resume


def test_sigkill_then_resume_gives_the_same_result(tmp_path):
    """A run killed with SIGKILL after a checkpoint and resumed ends with the uninterrupted run's metrics."""
    torch.set_num_threads(1)
    reference = fs.main(TINY + DROPOUT + ["--out", str(tmp_path / "straight")])
    out = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.Popen([sys.executable, str(ROOT / "fullsvformer.py"), *TINY, *DROPOUT, "--out", str(out),
                          "--ckpt-every", "4"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while time.time() < deadline and p.poll() is None:  # kill as soon as a mid-epoch checkpoint exists
        if (out / "last.pt").exists():
            break
        time.sleep(0.05)
    assert p.poll() is None, "the run ended before it could be killed: " + p.stderr.read().decode()[-2000:]
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert not (out / "summary.json").exists()
    killed_at = torch.load(out / "last.pt", weights_only=True)["state"]["step"]
    assert 0 < killed_at < 12
    torch.set_num_threads(1)
    resumed = fs.main(["--resume", str(out)])
    assert resumed["top1"] != 0 or resumed["teacher_top1"] != 0
    for k in RESULT_KEYS:
        assert resumed[k] == reference[k], k
    # Stronger than the metrics: the final student and teacher weights are bit-identical.
    a, b = (torch.load(d / "last.pt", weights_only=True) for d in (tmp_path / "straight", out))
    for part in ("model", "ema"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), f"{part}.{k}"
    # The metrics log reads as one run: every step once.
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()
             if json.loads(line)["kind"] == "train"]
    assert steps == list(range(1, 13))


# ---- config and CLI ---------------------------------------------------------------------------------------------------

def test_every_field_is_a_flag_with_its_help():
    helptext = fs.build_parser().format_help()
    for section in fs.SECTIONS:
        for f in __import__("dataclasses").fields(getattr(fs.Config(), section)):
            flag = "--" + f.name.replace("_", "-")
            assert flag in helptext, flag
    assert "Tube TokenMix lambda" in helptext and "--no-kl-standardize" in helptext


def test_precedence_defaults_preset_file_flags(tmp_path):
    cfg, _ = fs.parse_config([])
    assert cfg.model.arch == "tiny" and cfg.data.dataset == "synthetic"  # the demo preset
    cfg, _ = fs.parse_config(["--dataset", "ucf101"])
    assert cfg.model.arch == "base" and cfg.data.img_size == 224 and cfg.train.optimizer == "sgd"  # the paper's
    assert cfg.model.dims()["embed_dim"] == 768
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump({"train": {"lr": 0.123, "epochs": 3}}))
    cfg, _ = fs.parse_config(["--config", str(f), "--epochs", "5"])
    assert cfg.train.lr == 0.123 and cfg.train.epochs == 5 and cfg.model.arch == "tiny"


def test_label_rule_follows_the_labeled_clips_per_class_and_yields_to_file_and_flags(tmp_path):
    """label_rule: the presets' settings hold at 1 labeled clip per class; at 10 and 40 the preset's epochs (and step
    milestones), lr and gamma_nl times the measured cells' factors, in between interpolated in log n (at 20 geometric
    means for epochs and lr, the arithmetic mean for gamma_nl), beyond 40 held; for every dataset alike (UCF-101 x% = x
    clips, HMDB-51 70 a class, synthetic 100, a list's own count). A key in --config or a flag is never changed, an
    explicit --epochs keeps the milestones, and labeled-only runs (mu 0) are left alone. Reference: the factors written
    out here, and ANL's weight at HMDB-51 40% (28 per class) by hand: 1 - log(28/10)/log(40/10) = 0.257."""
    demo, paper = fs.parse_config([])[0].train, fs.Config().train
    f10, f40 = fs.LABEL_RULE[10], fs.LABEL_RULE[40]
    assert f10[2] == 1.0 and f40[2] == 0.0  # ANL on at 10 clips per class, off at 40
    f20 = [(f10[0] * f40[0]) ** 0.5, (f10[1] * f40[1]) ** 0.5, (f10[2] + f40[2]) / 2]
    w = math.log(28 / 10) / math.log(40 / 10)
    f28 = [f10[0] ** (1 - w) * f40[0] ** w, f10[1] ** (1 - w) * f40[1] ** w, 1 - w]
    assert f28[2] == pytest.approx(0.257, abs=1e-3)
    for argv, base, (length, lr, anl) in ((["--labeled", "0.01"], demo, (1, 1, 1)), (["--labeled", "0.1"], demo, f10),
                                          (["--labeled", "0.4"], demo, f40), (["--labeled", "0.8"], demo, f40),
                                          (["--labeled", "0.2"], demo, f20),
                                          (["--dataset", "ucf101", "--labeled", "0.1"], paper, f10),
                                          (["--dataset", "hmdb51", "--labeled", "0.4"], paper, f28),
                                          (["--dataset", "hmdb51", "--labeled", "0.6"], paper, f40)):
        t = fs.parse_config(argv)[0].train
        assert t.epochs == round(base.epochs * length), argv
        assert t.lr == float(f"{base.lr * lr:.2g}"), argv  # 2 significant digits
        assert [float(m) for m in t.lr_milestones.split(",")] == pytest.approx(
            [float(m) * t.epochs / base.epochs for m in base.lr_milestones.split(",")], rel=1e-3)
        assert t.gamma_nl == pytest.approx(base.gamma_nl * anl, abs=0.005), argv  # 2 significant digits
        assert t.gamma_kl == base.gamma_kl  # not the rule's
    assert fs.parse_config(["--labeled", "0.01"])[0] == fs.parse_config([])[0]  # the demo is the preset
    assert (demo.epochs, demo.lr) == (3, 5e-4) and fs.parse_config(["--labeled", "0.1"])[0].train.epochs == 24
    t = fs.parse_config(["--dataset", "ucf101", "--labeled", "0.1", "--epochs", "7", "--lr", "0.01"])[0].train
    assert (t.epochs, t.lr_milestones, t.lr) == (7, "25,28", 0.01)
    assert fs.parse_config(["--labeled", "1.0", "--mu", "0"])[0].train == demo  # labeled-only: epochs = labeled passes
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump({"train": {"epochs": 4}, "data": {"labeled": 0.1}}))
    t = fs.parse_config(["--config", str(f)])[0].train
    assert t.epochs == 4 and t.lr == fs.parse_config(["--labeled", "0.1"])[0].train.lr
    lst = tmp_path / "train.txt"
    lst.write_text("".join(f"v{i}.mp4 {i % 4}\n" for i in range(40)))  # 10 clips per class
    cfg = fs.parse_config(["--dataset", "lists", "--train-list", str(lst), "--val-list", str(lst)])[0]
    assert fs.labeled_clips_per_class(cfg.data) == 10 and cfg.train.epochs == round(30 * f10[0])
    assert fs.labeled_clips_per_class(dataclasses.replace(cfg.data, train_list=str(tmp_path / "none"))) is None
    note = fs.label_rule_note(fs.parse_config(["--labeled", "0.1", "--epochs", "5"])[0])
    assert note.startswith("label regime: labeled clips per class n = 10; label_rule sets epochs 24, ") and \
        "(this run: epochs 5, lr_milestones 25,28, given)" in note


def test_the_stage0_key_ignores_the_labeled_fraction_and_the_label_rule():
    """Stage 0 trains on its own task: a run's labeled fraction, and what label_rule sets for it, never rename or
    retrain the committed image model."""
    keys = {fs.stage0_config(fs.parse_config(a)[0])[1] for a in ([], ["--labeled", "0.1"], ["--labeled", "0.4"],
                                                                 ["--labeled", "0.1", "--epochs", "2"])}
    assert len(keys) == 1 and (fs.PRETRAINED_DIR / f"stage0-{keys.pop()}.safetensors").is_file()


def test_bad_config_values_name_the_key(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump({"train": {"learning_rate": 0.1}}))
    with pytest.raises(ValueError, match=r"unknown key train\.learning_rate"):
        fs.parse_config(["--config", str(f)])
    f.write_text("train:\n  lr: 1e-3\n")  # YAML reads 1e-3 as a string: converted, not rejected
    assert fs.parse_config(["--config", str(f)])[0].train.lr == 0.001
    for bad, msg in ((f"train:\n  schedule: Cosine\n", r"train\.schedule='Cosine'; expected one of step, cosine"),
                     ("train:\n  log_every: 0\n", r"train\.log_every=0 must be >= 1"),
                     ("model:\n  depth: 2.5\n", r"model\.depth=2\.5: expected int"),
                     ("data:\n  mean: [0.5, 0.5]\n", r"data\.mean=.*expected list of 3 numbers"),
                     ("train:\n  lr_milestones: 25;28\n", r"lr_milestones='25;28'")):
        f.write_text(bad)
        with pytest.raises(ValueError, match=msg):
            fs.parse_config(["--config", str(f)])
    with pytest.raises(fs.UserError, match="argument --arch: invalid choice: 'huge'"):  # one line, not SystemExit
        fs.parse_config(["--arch", "huge"])


def test_compile_and_workers_default_to_what_the_machine_has(tmp_path, monkeypatch):
    assert fs.parse_config(["--dataset", "ucf101"])[0].train.compile == "auto"  # on CUDA only (see train())
    assert fs.parse_config(["--compile"])[0].train.compile == "on"
    assert fs.parse_config(["--no-compile"])[0].train.compile == "off"
    f = tmp_path / "c.yaml"
    for text, want in (("true", "on"), ("off", "off"), ("auto", "auto")):  # YAML reads on/off/true as booleans
        f.write_text(f"train:\n  compile: {text}\n")
        assert fs.parse_config(["--config", str(f)])[0].train.compile == want
    monkeypatch.setattr(fs.os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert fs.resolve_workers(-1) == 8 and fs.resolve_workers(3) == 3  # capped at 8; an explicit count is kept
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert fs.resolve_workers(-1) == 3  # 16 CPUs / 4 local processes, one core left to training
    monkeypatch.setattr(fs.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    assert fs.resolve_workers(-1) == 1  # a 2-core machine: no more workers than cores


def test_paper_defaults_of_the_ema_and_the_per_epoch_costs():
    t = fs.TrainConfig()
    assert t.ema_momentum == pytest.approx(0.99 ** 8, abs=1e-4)  # SVFormer's 0.99 per iteration, 8 iterations a step
    assert t.eval_every == t.ckpt_epochs == 5


def test_normalisation_constants_are_built_at_setup(tmp_path, monkeypatch):
    """setup_run builds the mean/std tensors the step uses, so the first micro-step makes none (a host-to-device copy
    on CUDA)."""
    fs._channel_stats.cache_clear()
    monkeypatch.setattr(fs, "train_batches", lambda *a, **k: iter(()))  # no step: only the setup
    monkeypatch.setattr(fs, "finish", lambda run: {"misses": fs._channel_stats.cache_info().misses})
    cfg, _ = fs.parse_config(TINY + ["--out", str(tmp_path / "r"), "--eval-every", "0"])
    assert fs.train(cfg)["misses"] == 1
    x = torch.zeros(1, 4, 3, 16, 16, dtype=torch.uint8)
    fs.normalize_clips(x, cfg.data.mean, cfg.data.std)  # what the step calls: a cache hit
    assert fs._channel_stats.cache_info().misses == 1


def test_batch_layout_keeps_the_global_batch():
    assert fs.batch_layout(64, 1, 8) == (1, 8)  # SVFormer: 1 clip per GPU, 8 GPUs, accumulated to 64
    assert fs.batch_layout(8, 8, 1) == (8, 1)  # the demo on one process
    assert fs.batch_layout(8, 8, 2) == (4, 1)  # ... under torchrun: the micro-batch shrinks, the global batch stays
    assert fs.batch_layout(8, 8, 4) == (2, 1)
    assert fs.batch_layout(12, 8, 2) == (6, 1) and fs.batch_layout(10, 4, 1) == (2, 5)
    for g, b, w in ((8, 8, 3), (5, 2, 2)):  # no layout of whole clips exists
        with pytest.raises(fs.UserError, match=f"global_batch={g} .* over {w} processes"):
            fs.batch_layout(g, b, w)


def test_lr_schedule():
    t = fs.TrainConfig(lr=1.0, epochs=30, warmup_epochs=2, schedule="step", lr_milestones="25,28", lr_gamma=0.1)
    assert fs.lr_at(0, t) == 0 and fs.lr_at(1, t) == pytest.approx(0.5) and fs.lr_at(2, t) == 1.0
    assert fs.lr_at(24.9, t) == 1.0 and fs.lr_at(25, t) == pytest.approx(0.1) and fs.lr_at(29, t) == pytest.approx(0.01)
    c = fs.TrainConfig(lr=1.0, epochs=10, warmup_epochs=0, schedule="cosine")
    assert fs.lr_at(0, c) == 1.0 and fs.lr_at(5, c) == pytest.approx(0.5) and fs.lr_at(10, c) == pytest.approx(0.0)


def one_step_inputs(*flags):
    """(cfg, num_classes, labeled batch, unlabeled batch, student, teacher) of the TINY setting (+ flags), seeded."""
    cfg, _ = fs.parse_config(TINY + list(flags))
    torch.manual_seed(0)
    data = fs.build_data(cfg.data, seed=0)
    lab, unl = next(fs.train_batches(data, 0))
    student, teacher = (fs.build_model(cfg.model, data.num_classes, cfg.data.num_frames, cfg.data.img_size)
                        for _ in range(2))
    return cfg, data.num_classes, lab, unl, student, teacher


def ssl_losses_with_teacher_logits(cfg, lab, unl, model, t_logits, anl_k=None):
    """ssl_losses with a teacher that returns t_logits -> (loss, terms, the student's strong-view logits, detached)."""
    seen = {}

    def student(x, token_hook=None):
        seen["logits"] = model(x, token_hook=token_hook)
        return seen["logits"]
    loss, terms = fs.ssl_losses(student, lambda x: t_logits, lab, unl, cfg, torch.device("cpu"), "none",
                                torch.Generator().manual_seed(3), anl_k=anl_k)
    Bl, Bu = len(lab["label"]), len(unl["label"])
    return loss, terms, seen["logits"][Bl:Bl + Bu].detach()


class Recorder(torch.nn.Module):
    """Wraps a model: records its input clips and the patch tokens its token_hook returns."""

    def __init__(self, model):
        super().__init__()
        self.model, self.seen = model, {}

    def forward(self, x, token_hook=None):
        self.seen["x"] = x

        def hook(tokens):
            self.seen["tokens"], out = tokens, token_hook(tokens)
            self.seen["mixed"] = out[len(tokens):]
            return out
        return self.model(x, token_hook=hook if token_hook else None)


@pytest.mark.parametrize("warp_on", ["partners", "all"])
def test_temporal_warp_reaches_the_consistency_clips_or_only_the_partners(warp_on):
    """--temporal-warp-on all: the student's strong clips are warped. partners (SVFormer's code): they are not, and
    each Tube TokenMix partner is the warped clip. Reference: the frames gathered here with the loader's index."""
    cfg, _, lab, unl, model, teacher = one_step_inputs("--temporal-warp-on", warp_on, "--strong-channel-dropout", "0",
                                                       "--temporal-warp-keys", "2", "--temporal-warp-p", "1")
    assert not any(torch.equal(w, torch.arange(4)) for w in unl["warp"])  # every clip is warped
    student = Recorder(model)
    fs.ssl_losses(student, teacher, lab, unl, cfg, torch.device("cpu"), "none", torch.Generator().manual_seed(3))
    Bl = len(lab["label"])
    warped = torch.stack([c[w] for c, w in zip(unl["strong"], unl["warp"])])  # (Bu, T, C, H, W)
    expect = warped if warp_on == "all" else unl["strong"]
    assert torch.equal(student.seen["x"][Bl:], fs.normalize_clips(expect, cfg.data.mean, cfg.data.std))
    # Rebuild the mixed tokens: the same draws (seed 3), partners warped in both settings.
    g = torch.Generator().manual_seed(3)
    Bu = len(unl["label"])
    perm = torch.randperm(Bu, generator=g)
    mask, _ = fs.tube_mask(Bu, student.seen["tokens"].shape[2], fs.sample_lambda(cfg.train.mix_beta, g), g)
    a = student.seen["tokens"][Bl:]
    b = torch.stack([a[p][unl["warp"][p]] for p in perm.tolist()]) if warp_on == "partners" else a[perm]
    assert torch.equal(student.seen["mixed"], fs.tube_token_mix(a, b, mask))


def test_supervised_warmup_then_teacher_from_the_student(tmp_path, monkeypatch):
    """--supervised-warmup-epochs 1 (SVFormer's WARM_EPOCH): labeled CE alone for the first epoch's 6 steps, the EMA
    teacher copied from the student at its last step, then every loss."""
    momenta = []
    real = fs.ema_update
    monkeypatch.setattr(fs, "ema_update", lambda t, s, m: (momenta.append(m), real(t, s, m)))
    torch.set_num_threads(1)
    fs.main(TINY + ["--supervised-warmup-epochs", "1", "--out", str(tmp_path / "r")])
    rows = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines() if '"train"' in x]
    assert [("loss_kl" in r) for r in rows] == [False] * 6 + [True] * 6
    assert all(r["loss"] == r["loss_ce"] for r in rows[:6])
    m = fs.parse_config(TINY)[0].train.ema_momentum  # the demo preset's
    assert momenta == [m] * 5 + [0.0] + [m] * 6  # a copy (momentum 0) at the warm-up's end
    t = fs.TrainConfig(supervised_warmup_epochs=1, ssl_rampup_epochs=2)
    assert [fs.ssl_weight_at(e, t) for e in (0.5, 1, 2, 3, 4)] == [0, 0, 0.5, 1, 1]  # the ramp follows the warm-up


def test_nl_start_epochs_keeps_anl_out_of_the_loss_until_then(tmp_path):
    """--nl-start-epochs 1 (FullMatch's ANL warm-up): over the first epoch's 6 steps the loss is CE + the KL and
    TokenMix terms alone, from then on ANL's term too. ANL's loss is still computed (and its k measured) before."""
    torch.set_num_threads(1)
    cfg = fs.main(TINY + ["--nl-start-epochs", "1", "--ssl-rampup-epochs", "0", "--out", str(tmp_path / "r")])["config"]
    t = cfg["train"]
    rows = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines() if '"train"' in x]
    assert len(rows) == 12 and all(r["loss_nl"] > 0 for r in rows[1:])  # step 1: k = K, no negatives yet
    for i, r in enumerate(rows):
        rest = r["loss_ce"] + t["gamma_kl"] * r["loss_kl"] + t["gamma_mix"] * r["loss_mix"]
        assert r["loss"] == pytest.approx(rest + (t["gamma_nl"] * r["loss_nl"] if i >= 6 else 0.0), rel=1e-5)


def test_ssl_rampup_scales_only_the_unlabeled_losses():
    t = fs.TrainConfig(ssl_rampup_epochs=2)
    assert fs.ssl_weight_at(0, t) == 0 and fs.ssl_weight_at(1, t) == 0.5 and fs.ssl_weight_at(5, t) == 1
    assert fs.ssl_weight_at(0, fs.TrainConfig()) == 1  # off by default, as in the paper
    cfg, _, lab, unl, model, teacher = one_step_inputs()
    for w in (0.0, 0.5, 1.0):
        gen = torch.Generator().manual_seed(3)  # the same TokenMix draw for every weight
        loss, terms = fs.ssl_losses(model, teacher, lab, unl, cfg, torch.device("cpu"), "none", gen, w)
        unlabeled = (cfg.train.gamma_kl * terms["loss_kl"] + cfg.train.gamma_nl * terms["loss_nl"]
                     + cfg.train.gamma_mix * terms["loss_mix"])
        assert unlabeled > 0
        assert torch.allclose(loss, terms["loss_ce"] + w * unlabeled, rtol=1e-5, atol=1e-6)
        if w == 0:
            assert torch.equal(loss, terms["loss_ce"])  # weight 0: labeled CE alone


def test_diagnostics_of_the_unlabeled_path_against_a_slow_loop():
    """logit_scale, kl_used, anl_neg_mass and ANL's negatives that hit the true class, from ssl_losses, against the
    same quantities counted clip by clip and class by class from the logits it saw (reference: plain Python loops)."""
    cfg, K, lab, unl, model, _ = one_step_inputs("--kl-threshold", "0.9")
    Bu = len(unl["label"])
    t_logits = torch.randn(Bu, K, generator=torch.Generator().manual_seed(0)) * 3
    k = torch.tensor(2)
    _, terms, s = ssl_losses_with_teacher_logits(cfg, lab, unl, model, t_logits, anl_k=k)
    p_s, p_t = s.softmax(-1), t_logits.softmax(-1)
    y = unl["label"].tolist()
    scale = sum(float(s[i].std()) for i in range(Bu)) / Bu
    used = sum(float(p_t[i].max()) >= 0.9 for i in range(Bu)) / Bu
    mass, hits, count = 0.0, 0, 0
    for i in range(Bu):
        top = sorted(range(K), key=lambda c: -float(t_logits[i, c]))[:int(k)]
        for c in range(K):
            if c not in top and float(p_s[i, c]) <= cfg.train.nl_drop_threshold:
                mass, count, hits = mass + float(p_s[i, c]), count + 1, hits + (c == y[i])
    assert count > 0 and 0 < used < 1  # the draw exercises both sides of the mask and has negatives
    assert float(terms["logit_scale"]) == pytest.approx(scale, rel=1e-5)
    assert float(terms["kl_used"]) == pytest.approx(used)
    assert float(terms["anl_neg_mass"]) == pytest.approx(mass / Bu, rel=1e-5)
    assert float(terms["anl_known_negatives"]) == pytest.approx(count / Bu)
    assert float(terms["anl_true_negatives"]) == pytest.approx(hits / Bu)


@pytest.mark.parametrize("threshold", ["0", "0.9"])
def test_kl_weight_confidence_weights_each_clip_by_the_teachers_top_probability(threshold):
    """--kl-weight confidence: the KL term equals standardized_kl with mask = teacher confidence (times the threshold's
    0/1 mask when one is set). Reference: standardized_kl called directly on the logits ssl_losses saw."""
    cfg, K, lab, unl, model, _ = one_step_inputs("--kl-weight", "confidence", "--kl-threshold", threshold)
    t_logits = torch.randn(len(unl["label"]), K, generator=torch.Generator().manual_seed(0)) * 3
    _, terms, s = ssl_losses_with_teacher_logits(cfg, lab, unl, model, t_logits)
    conf = t_logits.softmax(-1).max(-1).values
    weight = conf * (conf >= float(threshold))
    expect = fs.standardized_kl(s, t_logits, cfg.train.kl_tau, weight)
    assert 0 < float(weight.mean()) < 1 and float(terms["kl_used"]) == pytest.approx(float(weight.mean()))
    assert float(terms["loss_kl"]) == pytest.approx(float(expect), rel=1e-6)
    unweighted = fs.standardized_kl(s, t_logits, cfg.train.kl_tau)
    assert float(terms["loss_kl"]) != pytest.approx(float(unweighted), rel=1e-3)


def test_gamma_ce_strong_is_svformers_masked_hard_label_ce():
    """--gamma-ce-strong: SVFormer's L_un, the mean over the batch of CE(student strong, teacher argmax) x (teacher
    confidence >= delta), added to the loss with its weight. Reference: a loop over the clips with F.cross_entropy."""
    cfg, K, lab, unl, model, _ = one_step_inputs("--gamma-ce-strong", "1.5", "--mix-threshold", "0.9")
    Bu = len(unl["label"])
    t_logits = torch.randn(Bu, K, generator=torch.Generator().manual_seed(0)) * 3
    loss, terms, s = ssl_losses_with_teacher_logits(cfg, lab, unl, model, t_logits)
    p_t = t_logits.softmax(-1)
    kept = [i for i in range(Bu) if float(p_t[i].max()) >= 0.9]
    assert 0 < len(kept) < Bu
    ref = sum(float(torch.nn.functional.cross_entropy(s[i], p_t[i].argmax())) for i in kept) / Bu
    assert float(terms["loss_ce_strong"]) == pytest.approx(ref, rel=1e-5)
    rest = terms["loss_ce"] + 2 * terms["loss_kl"] + 2 * terms["loss_mix"] + terms["loss_nl"]
    assert float(loss.detach()) == pytest.approx(float(rest + 1.5 * terms["loss_ce_strong"]), rel=1e-5)


def test_oracle_pseudo_labels_act_as_a_teacher_that_knows_the_labels():
    """--oracle-pseudo-labels with any teacher == a teacher whose logits are 10 x one-hot(true label)."""
    cfg, num_classes, lab, unl, model, random_teacher = one_step_inputs()
    knowing = lambda x: 10.0 * torch.nn.functional.one_hot(unl["label"], num_classes).float()  # noqa: E731
    oracle = fs.dataclasses.replace(cfg, train=fs.dataclasses.replace(cfg.train, oracle_pseudo_labels=True))
    cpu = torch.device("cpu")
    a, ta = fs.ssl_losses(model, random_teacher, lab, unl, oracle, cpu, "none", torch.Generator().manual_seed(3))
    b, tb = fs.ssl_losses(model, knowing, lab, unl, cfg, cpu, "none", torch.Generator().manual_seed(3))
    c, _ = fs.ssl_losses(model, random_teacher, lab, unl, cfg, cpu, "none", torch.Generator().manual_seed(3))
    assert torch.allclose(a, b) and ta["pseudo_label_acc"] == tb["pseudo_label_acc"] == 1
    assert not torch.allclose(a, c)  # the random teacher's own pseudo-labels give another loss


def test_wrong_pretrained_fails_before_training(tmp_path):
    bogus = tmp_path / "weights.pth"
    bogus.write_text("not weights")
    out = run_cli(TINY + ["--out", str(tmp_path / "r"), "--pretrained", str(bogus)], check=False)
    assert out.returncode != 0 and "weights.pth is not a PyTorch checkpoint" in out.stderr
    assert not (tmp_path / "r" / "last.pt").exists()


def test_non_finite_losses_skip_steps_then_abort(tmp_path, monkeypatch):
    real = fs.ssl_losses
    calls = {"n": 0}

    def flaky(*a, **k):
        loss, terms = real(*a, **k)
        calls["n"] += 1
        return (loss * float("nan") if calls["n"] in (2, 3) else loss), terms

    monkeypatch.setattr(fs, "ssl_losses", flaky)
    res = fs.main(TINY + ["--out", str(tmp_path / "a"), "--epochs", "1"])
    assert res["nonfinite_skipped"] == 2 and res["steps"] == 6
    rows = [json.loads(r) for r in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert rows[2]["nonfinite_skipped"] == 2

    # A good first epoch, then only NaNs: abort after 3 in a row, and keep epoch 1's checkpoint as it was.
    calls["n"] = 0
    monkeypatch.setattr(fs, "ssl_losses", lambda *a, **k: (lambda l, t: (
        l * float("nan") if calls.__setitem__("n", calls["n"] + 1) or calls["n"] > 6 else l, t))(*real(*a, **k)))
    with pytest.raises(FloatingPointError, match="3 non-finite losses in a row"):
        fs.main(TINY + ["--out", str(tmp_path / "b"), "--epochs", "2", "--max-nonfinite", "3"])
    kept = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    assert kept["state"]["step"] == 6 and kept["state"]["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in kept["model"].values())


def test_out_of_memory_names_the_knobs(tmp_path, monkeypatch):
    def oom(cfg):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    monkeypatch.setattr(fs, "train", oom)
    with pytest.raises(torch.OutOfMemoryError, match="--labeled-batch.*--grad-checkpointing.*--num-frames"):
        fs.main(TINY + ["--out", str(tmp_path / "oom")])


# ---- speed paths ------------------------------------------------------------------------------------------------------

def test_compiled_step_runs_without_recompiling(tmp_path):
    """--compile: the student and teacher forwards compile once; after warm-up no step recompiles."""
    code = f"""
import torch, fullsvformer as fs
from torch._dynamo.utils import counters
torch._dynamo.config.recompile_limit = 8
seen = []
real = fs.ssl_losses
def counting(*a, **k):
    out = real(*a, **k)
    seen.append(counters["stats"]["unique_graphs"])
    return out
fs.ssl_losses = counting
fs.main({TINY!r} + ["--out", {str(tmp_path / 'c')!r}, "--compile", "--epochs", "1", "--eval-every", "0"])
print("GRAPHS", seen)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=ROOT,
                         env={**os.environ, "OMP_NUM_THREADS": "2"})
    assert out.returncode == 0, out.stderr[-3000:]
    graphs = json.loads(out.stdout.split("GRAPHS")[-1].strip())
    assert len(graphs) == 6 and graphs[0] >= 2  # the teacher and the student were compiled
    assert graphs[-1] == graphs[1], f"recompiled after warm-up: unique graphs per step {graphs}"


def test_ddp_two_processes_gloo(tmp_path):
    """torchrun with 2 CPU processes (gloo): rank 0 alone writes the run directory; eval counts are summed."""
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
           str(ROOT / "fullsvformer.py"), *TINY, "--out", str(out), "--epochs", "1", "--global-batch", "4"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    s = json.loads((out / "summary.json").read_text())
    assert s["test_videos"] == 12  # 3 classes x 4 test clips, each evaluated once across the 2 ranks
    assert s["steps"] == 3  # 27 unlabeled clips, 2 ranks x 4 per step -> 3 steps
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines if json.loads(x)["kind"] == "train"] == [1, 2, 3]  # rank 0 only


def test_training_on_real_video_files_ucf101_layout(tmp_path):
    """The whole path on files: make-synthetic writes AVIs in the UCF-101 layout, training decodes them.
    (UCF-101 reads x%% as x clips per class, as SVFormer: 0.02 = 2 labeled clips per class.)"""
    root = tmp_path / "ucf"
    make_synthetic.main(["--out", str(root), "--layout", "ucf101", "--classes", "3", "--clips-per-class", "12",
             "--size", "32", "--length", "20"])
    flags = [a for a in TINY if a not in ("synthetic",)]
    flags[flags.index("--dataset") + 1:flags.index("--dataset") + 1] = ["ucf101"]
    res = fs.main(flags + ["--data-root", str(root), "--labeled", "0.02", "--epochs", "1", "--workers", "1",
                           "--out", str(tmp_path / "run")])
    assert res["num_classes"] == 3 and res["steps"] >= 1 and res["bad_videos"] == 0
    assert res["test_videos"] == len((root / "ucfTrainTestlist" / "testlist01.txt").read_text().split())
    # The checkpoint carries classInd's names, so `predict` needs nothing but the checkpoint.
    class_ind = [line.split()[1] for line in (root / "ucfTrainTestlist" / "classInd.txt").read_text().splitlines()]
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["class_names"] == class_ind


def small_stage0(tmp_path, monkeypatch) -> None:
    """Stage 0 trained in seconds into tmp_path/cache, with no committed file under tmp_path/committed."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(fs, "PRETRAINED_DIR", tmp_path / "committed")
    small = {s: dict(v) for s, v in fs.STAGE0.items()}
    small["data"].update(synth_clips_per_class=4, synth_test_per_class=1, labeled_batch=8)
    small["train"].update(epochs=1, global_batch=8)
    monkeypatch.setattr(fs, "STAGE0", small)


def test_stage0_is_trained_once_cached_and_loaded(tmp_path, monkeypatch):
    """--pretrained synthetic: stage 0 (the built-in task's image pretraining) trains on first use into
    $XDG_CACHE_HOME, a second run reuses it without training, a committed file under pretrained/ takes precedence,
    and the run starts from its weights (every tensor but the resized time_embed and the new head)."""
    small_stage0(tmp_path, monkeypatch)
    flags = TINY[:-1] + ["synthetic", "--epochs", "1", "--eval-every", "0"]
    cfg, _ = fs.parse_config(flags)
    path = Path(fs.stage0_checkpoint(cfg))
    assert path.parent.parent == tmp_path / "cache" / "fullsvformer" and path.is_file()
    assert (path.parent / "summary.json").is_file() and fs.stage0_config(cfg)[0].data.synth_task == "ucf-proxy-pretrain"
    stamp = path.stat().st_mtime_ns
    assert fs.stage0_checkpoint(cfg) == str(path) and path.stat().st_mtime_ns == stamp  # cached: not retrained
    # runtime settings do not change the key; the architecture does
    assert fs.stage0_config(fs.parse_config(flags + ["--workers", "1", "--log-every", "7"])[0])[1] == fs.stage0_config(cfg)[1]
    assert fs.stage0_config(fs.parse_config(flags + ["--embed-dim", "16"])[0])[1] != fs.stage0_config(cfg)[1]
    assert fs.stage0_config(fs.parse_config(flags + ["--gamma-kl", "0.5", "--randaug-n", "3"])[0])[1] == \
        fs.stage0_config(cfg)[1]  # the unlabeled path's settings do not either (see the next test)
    committed = tmp_path / "committed" / f"stage0-{fs.stage0_config(cfg)[1]}.safetensors"
    committed.parent.mkdir()
    committed.write_bytes(path.read_bytes())
    shutil.rmtree(path.parent)
    assert fs.stage0_checkpoint(cfg) == str(committed) and not path.parent.exists()
    run = fs.setup_run(fs.parse_config(flags + ["--out", str(tmp_path / "ft")])[0], distributed=False)
    stage0 = fs.torch_load(committed)
    got = run.model.state_dict()
    same = [k for k in stage0 if not k.startswith(("head.", "time_embed"))]
    assert same and all(torch.equal(got[k], stage0[k]) for k in same)


def test_unlabeled_settings_do_not_touch_a_labeled_only_run(tmp_path):
    """UNLABELED_KEYS stay out of stage 0's key because a labeled-only run (mu = 0, as stage 0) never reads them:
    changing every one of them leaves the trained weights bit-identical (reference: the run with the defaults)."""
    torch.set_num_threads(1)
    flags = TINY + ["--mu", "0", "--epochs", "1", "--eval-every", "0"]
    fs.main(flags + ["--out", str(tmp_path / "a")])
    other = {"--randaug-n": "2", "--randaug-m": "20", "--temporal-warp-p": "1", "--temporal-warp-keys": "1",
             "--temporal-warp-on": "all", "--strong-channel-dropout": "0.7", "--ema-momentum": "0.5",
             "--gamma-kl": "7", "--kl-tau": "9", "--no-kl-standardize": None, "--kl-threshold": "0.4",
             "--kl-weight": "confidence", "--strong-crop": "own", "--gamma-ce-strong": "3",
             "--gamma-mix": "0", "--mix-beta": "1", "--mix-threshold": "0.9", "--no-mix-weighted": None,
             "--gamma-nl": "5", "--nl-drop-threshold": "0.5", "--nl-start-epochs": "0.5",
             "--supervised-warmup-epochs": "0.5", "--ssl-rampup-epochs": "3", "--oracle-pseudo-labels": None}
    named = {f.replace("--no-", "--").lstrip("-").replace("-", "_") for f in other}
    assert named == {k for keys in fs.UNLABELED_KEYS.values() for k in keys}  # every key of the list is varied
    fs.main(flags + [x for f, v in other.items() for x in (f, v) if x is not None] + ["--out", str(tmp_path / "b")])
    a, b = (torch.load(tmp_path / r / "last.pt", weights_only=True)["model"] for r in ("a", "b"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_demo_stage0_is_committed():
    """The demo (`python fullsvformer.py`) starts from the committed stage-0 file, so it never trains one: a change
    to the synthetic preset or to STAGE0 that changes the key needs `python tools/make_stage0.py` and a commit."""
    key = fs.stage0_config(fs.parse_config([])[0])[1]
    assert (fs.PRETRAINED_DIR / f"stage0-{key}.safetensors").is_file(), sorted(fs.PRETRAINED_DIR.glob("*"))


# ---- a run's config and a finished run -------------------------------------------------------------------------------

def test_config_yaml_reruns_as_a_new_run(tiny_run, tmp_path):
    """RUN/config.yaml leaves out what names the run or the machine, so `--config RUN/config.yaml` (the README's
    rerun) starts a new run in the default directory instead of stopping at 'already holds a run'."""
    out, summary = tiny_run
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert not {"out", "resume", "device"} & set(saved["train"]) and "workers" not in saved["data"]
    p = subprocess.run([sys.executable, str(ROOT / "fullsvformer.py"), "--config", str(out / "config.yaml")],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stderr[-2000:]
    (new,) = (tmp_path / "runs").iterdir()
    assert json.loads((new / "summary.json").read_text())["top1"] == summary["top1"]  # the same settings


def test_resuming_a_finished_run_leaves_it_as_it_is(tiny_run, tmp_path):
    out, summary = tiny_run
    before = {f.name: (f.stat().st_mtime_ns, f.read_bytes()) for f in out.iterdir()}
    p = run_cli(["--resume", str(out)])
    assert f"{out} is finished (2 epochs, 12 steps)" in p.stdout and str(out / "summary.json") in p.stdout
    assert {f.name: (f.stat().st_mtime_ns, f.read_bytes()) for f in out.iterdir()} == before  # not even log.txt
    for flags, fragment in ((["--lr", "0.1"], "--lr would change nothing"),
                            (["--epochs", "1"], "--epochs 1 cannot shorten it")):
        p = run_cli(["--resume", str(out), *flags], check=False)
        assert p.returncode == 2 and fragment in p.stderr and "is a finished run of 2 epochs" in p.stderr, p.stderr
    assert {f.name: (f.stat().st_mtime_ns, f.read_bytes()) for f in out.iterdir()} == before
    # A larger --epochs extends it (on a copy): one more epoch of 6 steps.
    shutil.copytree(out, tmp_path / "more")
    torch.set_num_threads(1)
    more = fs.main(["--resume", str(tmp_path / "more"), "--epochs", "3"])
    assert more["epochs"] == 3 and more["steps"] == 18


def test_readme_describes_the_demo_that_runs():
    """The README's Quick start and Results describe `python fullsvformer.py` with numbers that are checked here
    against the demo preset and the data it builds, so that they cannot drift from it again."""
    text = " ".join((ROOT / "README.md").read_text().split()).replace("**", "")
    cfg = fs.parse_config([])[0]
    data = fs.build_data(cfg.data, cfg.train.seed)
    per_class, rest = divmod(len(data.labeled), data.num_classes)
    assert rest == 0
    steps = fs.steps_per_epoch(data) * cfg.train.epochs
    model = f"{cfg.model.depth} blocks, D {cfg.model.embed_dim}, {cfg.data.img_size} px, {cfg.data.num_frames} frames"
    clips = (f"{data.num_classes} classes, {per_class} labeled clip{'s' if per_class > 1 else ''} per class, "
             f"{len(data.unlabeled):,} unlabeled, {len(data.test)} test clips")
    quick = text[text.index("## Quick start"):text.index("## Usage")]
    assert f"a small TimeSformer ({model})" in quick and f"({clips})" in quick, quick
    assert f"for {cfg.train.epochs} epochs ({steps} steps)" in quick, quick
    results = text[text.index("CPU demo (`python fullsvformer.py`"):]
    assert results.startswith(f"CPU demo (`python fullsvformer.py`: the synthetic UCF-101 proxy, {data.num_classes} "
                              f"classes, {per_class} labeled clip per class and {len(data.unlabeled):,} unlabeled; "
                              f"a {cfg.model.depth}-block TimeSformer (D {cfg.model.embed_dim}, {cfg.data.img_size} "
                              f"px, {cfg.data.num_frames} frames) fine-tuned for {steps} steps"), results[:300]


# ---- combinations of fields: one-line errors before any work --------------------------------------------------------

COMBINATIONS = [  # (flags on TINY: 16 px, patch 8, 4 frames at stride 2, 16-frame videos, 9 labeled, 27 unlabeled)
    (["--img-size", "20"], "data.img_size=20 is not a multiple of model.patch_size=8"),
    (["--num-frames", "8", "--clip-stride", "3"], "span 22 frames, more than the synthetic videos' "
                                                  "data.synth_length=16"),
    (["--temporal-warp-keys", "2,8"], "cannot pick 8 key frames of a clip of data.num_frames=4"),
    (["--mu", "1", "--labeled-batch", "1"], "mu x data.labeled_batch = 1"),
    (["--test-crops", "3"], "data.test_crops=3: the synthetic frames are square"),
    (["--test-clips", "5", "--synth-length", "8"], "data.test_clips=5: synthetic videos of data.synth_length=8 frames "
                                                   "hold 2 distinct clips"),
    (["--global-batch", "10", "--labeled-batch", "1"], "the labeled set has 9 clips, fewer than "
                                                       "train.global_batch=10"),
    (["--mu", "20"], "an epoch has 0 micro-batch(es)"),
]


@pytest.mark.parametrize("case", range(len(COMBINATIONS)))
def test_combinations_that_cannot_be_honoured_fail_before_any_work(tmp_path, monkeypatch, case):
    """Each is a UserError naming its keys, raised before stage 0 trains and before the run directory exists."""
    flags, message = COMBINATIONS[case]
    monkeypatch.setattr(fs, "stage0_checkpoint", lambda cfg: pytest.fail("stage 0 was reached"))
    with pytest.raises(fs.UserError, match=re.escape(message)):
        fs.main(TINY[:-1] + ["synthetic", *flags, "--out", str(tmp_path / "r")])
    assert not (tmp_path / "r").exists()
