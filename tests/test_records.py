"""What a run records (summary.json, config.yaml, metrics.jsonl, the log, TensorBoard) and what it records when the
unlabeled clips carry no label."""
import json

import pytest
import torch

import fullsvformer as fs
from test_train import TINY, one_step_inputs

CPU = torch.device("cpu")


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
