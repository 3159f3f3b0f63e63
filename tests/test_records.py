"""What a run records (summary.json, config.yaml, metrics.jsonl, the log, TensorBoard) and what it records when the
unlabeled clips carry no label."""
import json
import platform
import subprocess
import sys
from importlib import metadata
from types import SimpleNamespace

import pytest
import torch
import yaml

import fullsvformer as fs
from test_train import TINY, one_step_inputs

CPU = torch.device("cpu")
ROOT = fs.Path(fs.__file__).parent


# ---- pseudo-label accuracy of truly unlabeled clips -------------------------------------------------------------------

def losses(cfg, lab, unl, student, teacher):
    return fs.ssl_losses(student, teacher, lab, unl, cfg, CPU, "none", torch.Generator().manual_seed(3))


def test_ssl_losses_needs_no_labels_for_unlabeled_clips():
    """Without unl["label"] the losses are those of labeled clips (labels are diagnostics only); the accuracy of the
    pseudo-labels is unknown (NaN), not 0. Labels of -1 are unknown too; known ones alone are counted."""
    cfg, _, lab, unl, student, teacher = one_step_inputs()
    loss, terms = losses(cfg, lab, unl, student, teacher)
    blind_loss, blind = losses(cfg, lab, {k: v for k, v in unl.items() if k != "label"}, student, teacher)
    assert torch.equal(loss, blind_loss) and terms["loss_kl"] == blind["loss_kl"]
    assert blind["pseudo_label_acc"].isnan() and not terms["pseudo_label_acc"].isnan()
    _, unknown = losses(cfg, lab, {**unl, "label": torch.full_like(unl["label"], -1)}, student, teacher)
    assert unknown["pseudo_label_acc"].isnan()
    with torch.no_grad():
        y = teacher(fs.normalize_clips(unl["weak"], cfg.data.mean, cfg.data.std)).argmax(-1)
    half = torch.where(torch.arange(len(y)) % 2 == 0, y, -1)  # every known label right, the others unknown
    assert losses(cfg, lab, {**unl, "label": half}, student, teacher)[1]["pseudo_label_acc"] == 1


def test_oracle_needs_the_true_labels():
    cfg, _, lab, unl, student, teacher = one_step_inputs("--oracle-pseudo-labels")
    for bad in ({k: v for k, v in unl.items() if k != "label"}, {**unl, "label": torch.full_like(unl["label"], -1)}):
        with pytest.raises(fs.UserError, match="oracle_pseudo_labels: .* true labels"):
            losses(cfg, lab, bad, student, teacher)


def test_unknown_pseudo_label_accuracy_is_null_in_the_records(tmp_path, monkeypatch):
    """A run whose unlabeled clips have no label: metrics.jsonl and summary.json say null, never 0."""
    real = fs.ssl_losses

    def unlabeled(student, teacher, lab, unl, *args, **kw):
        return real(student, teacher, lab, unl and {k: v for k, v in unl.items() if k != "label"}, *args, **kw)
    monkeypatch.setattr(fs, "ssl_losses", unlabeled)
    torch.set_num_threads(1)
    summary = fs.main(TINY + ["--epochs", "1", "--eval-every", "0", "--out", str(tmp_path / "r")])
    rows = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert rows and all(r["pseudo_label_acc"] is None for r in rows if r["kind"] == "train")
    assert summary["pseudo_label_acc"] is None
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["pseudo_label_acc"] is None


# ---- summary.json and config.yaml: provenance, per-class accuracy by name, the model as built -------------------------

@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("records") / "run"
    torch.set_num_threads(1)
    fs.main(TINY + ["--epochs", "1", "--eval-every", "0", "--out", str(out)])
    return out, json.loads((out / "summary.json").read_text())


def test_provenance_is_recorded(tiny_run):
    """summary.json and config.yaml say which command, code and libraries made the run."""
    out, summary = tiny_run
    git = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    commit = git.stdout.strip() if git.returncode == 0 else None
    for record in (summary["provenance"], yaml.safe_load((out / "config.yaml").read_text())["provenance"]):
        assert record["argv"] == sys.argv and record["git_commit"] == commit
        assert isinstance(record["git_dirty"], bool) if commit else record["git_dirty"] is None
        assert record["torch"] == torch.__version__ and record["python"] == platform.python_version()
        assert record["timm"] == metadata.version("timm") and record["torchcodec"] == metadata.version("torchcodec")


def test_config_yaml_with_its_provenance_loads(tiny_run, tmp_path):
    """The loader skips provenance (--config RUN/config.yaml, --resume); any other unknown section is an error."""
    out, _ = tiny_run
    written = yaml.safe_load((out / "config.yaml").read_text())
    assert "provenance" in written
    loaded = fs.config_to_dict(fs.load_config(out / "config.yaml"))  # MACHINE_KEYS are not written: defaults
    assert {s: {k: v for k, v in loaded[s].items() if k not in fs.MACHINE_KEYS[s]} for s in fs.SECTIONS} == \
        {s: written[s] for s in fs.SECTIONS}
    cfg, _ = fs.parse_config(["--config", str(out / "config.yaml")])
    assert cfg.model.embed_dim == 32
    (tmp_path / "other.yaml").write_text(yaml.safe_dump({**written, "provenanse": {}}))
    with pytest.raises(fs.UserError, match="unknown section 'provenanse'"):
        fs.load_config(tmp_path / "other.yaml")


def test_per_class_top1_is_keyed_by_class_name(tiny_run):
    out, summary = tiny_run
    names = fs.read_run_checkpoint(out / "last.pt")["class_names"]
    for key in ("per_class_top1", "teacher_per_class_top1"):
        assert list(summary[key]) == names  # in label order
    # 4 test clips per class: top-1 is the mean of the per-class top-1s.
    assert summary["top1"] == pytest.approx(sum(summary["per_class_top1"].values()) / 3, abs=1e-3)


def test_per_class_names_stay_distinct():
    """Two labels of one name (a `lists` class spread over folders is named by its number, which may clash)."""
    data = SimpleNamespace(labeled=[0], unlabeled=[0], num_classes=3, class_names=["a", "b", "a"])
    cfg = fs.Config()
    res = {m: {"top1": 0.0, "top5": 0.0, "per_class_top1": [1.0, 2.0, 3.0], "videos": 3}
           for m in ("student", "teacher")}
    assert fs.eval_summary(res, cfg, data)["per_class_top1"] == {"a (0)": 1.0, "b": 2.0, "a (2)": 3.0}


def test_the_model_is_reported_as_built(tiny_run):
    """arch names a preset only when the model is that preset; the dimensions and parameter count are recorded."""
    out, summary = tiny_run
    assert summary["config"]["model"]["arch"] == "tiny"  # the synthetic preset's field, overridden by TINY's sizes
    assert summary["arch"] == "D32-depth1-heads2-patch8"
    model = fs.read_run_checkpoint(out / "last.pt")["model"]
    assert summary["model"] == {"arch": "D32-depth1-heads2-patch8", "embed_dim": 32, "depth": 1, "num_heads": 2,
                                "patch_size": 8, "mlp_ratio": 4.0, "num_frames": 4, "img_size": 16, "num_classes": 3,
                                "params": sum(v.numel() for k, v in model.items())}
    assert "model: D32-depth1-heads2-patch8: D 32, depth 1, 2 heads, patch 8" in (out / "log.txt").read_text()
    assert fs.TimeSformer.from_preset("tiny", 5).describe()["arch"] == "tiny"
    assert fs.TimeSformer.from_preset("tiny", 5, patch_size=8).describe()["arch"] == "D192-depth4-heads3-patch8"


def test_stage0_weights_are_not_called_official(caplog):
    """The demo's committed stage-0 file is our own TimeSformer state dict: not logged as an official checkpoint."""
    cfg = fs.config_from_dict(fs.PRESETS["synthetic"])
    model = fs.build_model(cfg.model, 32, cfg.data.num_frames, cfg.data.img_size)
    fs.log.addHandler(caplog.handler)  # fs.log may not propagate (setup_logging)
    caplog.set_level("INFO", logger="fullsvformer")
    try:
        report = fs.load_pretrained(model, next(fs.PRETRAINED_DIR.glob("stage0-*.safetensors")))
    finally:
        fs.log.removeHandler(caplog.handler)
    assert report["format"] == "timesformer"
    assert "stage0-" in caplog.text and "official" not in caplog.text


# ---- TensorBoard (optional) -------------------------------------------------------------------------------------------

def test_tensorboard_gets_the_scalars_of_metrics_jsonl(tmp_path):
    pytest.importorskip("tensorboard", reason="optional: pip install tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    torch.set_num_threads(1)
    out = tmp_path / "r"
    fs.main(TINY + ["--epochs", "1", "--tensorboard", "--out", str(out)])
    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"scalars": 0}).Reload()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    expected = {(f"{r['kind']}/{k}", r["step"]): v for r in rows for k, v in r.items()
                if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}
    got = {(tag, e.step): e.value for tag in events.Tags()["scalars"] for e in events.Scalars(tag)}
    assert {"train/loss", "train/pseudo_label_acc", "eval/top1", "eval/teacher_top1"} <= {t for t, _ in got}
    assert got.keys() == expected.keys()
    for key, v in expected.items():  # metrics.jsonl rounds to 6 digits, TensorBoard stores float32
        assert got[key] == pytest.approx(v, rel=1e-5, abs=1e-6), key


def test_tensorboard_without_the_package_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # `import` of it now raises ImportError
    with pytest.raises(fs.UserError, match=r"--tensorboard needs the tensorboard package.*pip install tensorboard"):
        fs.main(TINY + ["--epochs", "1", "--tensorboard", "--out", str(tmp_path / "r")])
    assert not (tmp_path / "r").exists()  # no half-made run directory is left
    assert fs.cli(TINY + ["--epochs", "1", "--tensorboard", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fullsvformer: error: --tensorboard needs") and err.count("\n") == 1
