"""The command line as a user meets it: mistakes read as one message (exit 2, no traceback), tools/predict.py on
video files, torchrun on the demo as is."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import fullsvformer as fs
from tools import make_synthetic
from test_train import TINY

ROOT = Path(fs.__file__).parent


def cli(*args, timeout=300, env=None, script="fullsvformer.py"):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT, env=env)


def predict(*args):
    return cli(*args, script="tools/predict.py")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny trained run (3 synthetic classes) and a UCF-style folder of AVIs written by make-synthetic."""
    tmp = tmp_path_factory.mktemp("cli")
    torch.set_num_threads(1)
    fs.main(TINY + ["--out", str(tmp / "run")])
    make_synthetic.main(["--out", str(tmp / "videos"), "--layout", "ucf101", "--classes", "3",
             "--clips-per-class", "2", "--size", "32", "--length", "20"])
    return tmp


# ---- a user's mistake is a message, not a crash ----------------------------------------------------------------------

def bad_inputs(tmp: Path) -> list[tuple[str, list, str]]:
    """(what, argv, a fragment the message must contain: the file or key at fault)."""
    (tmp / "ucf").mkdir(exist_ok=True)  # a data root without ucfTrainTestlist/
    (tmp / "notes.pt").write_text("not a checkpoint")
    (tmp / "bad_value.yaml").write_text("train:\n  lr: fast\n")
    (tmp / "broken.yaml").write_text("train: [lr: 1\n")
    return [("data root without lists", ["--dataset", "ucf101", "--data-root", tmp / "ucf"], "ucfTrainTestlist"),
            ("not a checkpoint as --pretrained", [*TINY, "--pretrained", tmp / "notes.pt", "--out", tmp / "r1"],
             "notes.pt is not a PyTorch checkpoint"),
            ("bad config value", ["--config", tmp / "bad_value.yaml"], "train.lr='fast' is not a number"),
            ("broken YAML", ["--config", tmp / "broken.yaml"], "broken.yaml is not valid YAML"),
            ("negative lr", ["--lr", "-1"], "train.lr=-1.0 must be > 0"),
            ("labeled fraction above 1", ["--labeled", "2.0"], "data.labeled=2.0 must be in (0, 1]"),
            ("resume of a missing run", ["--resume", tmp / "no_such_run"], "no_such_run/config.yaml does not exist"),
            ("eval of a non-checkpoint", ["eval", "--checkpoint", tmp / "notes.pt"], "notes.pt is not a PyTorch"),
            ("zero frames", ["--num-frames", "0"], "data.num_frames=0 must be >= 1"),
            ("a CUDA device on a CPU machine", ["--device", "cuda"], "--device cuda: no such CUDA device"),
            ("no such device", ["--device", "tpu9"], "--device 'tpu9'"),
            ("one class", ["--synth-classes", "1"], "synthetic: 1 class; classification needs at least 2")]


@pytest.mark.parametrize("case", range(12))
def test_user_mistakes_give_one_message_and_exit_2(tmp_path, case):
    what, argv, fragment = bad_inputs(tmp_path)[case]
    out = cli(*argv)
    assert out.returncode == 2, (what, out.returncode, out.stderr[-2000:])
    assert "Traceback" not in out.stderr, what
    first = [line for line in out.stderr.splitlines() if line.startswith("fullsvformer: error: ")]
    assert len(first) == 1 and fragment in out.stderr, (what, out.stderr[-2000:])
    assert not (tmp_path / "r1" / "last.pt").exists()


def test_debug_shows_the_traceback_and_a_crash_keeps_it(tmp_path):
    out = cli("--lr", "-1", "--debug")
    assert out.returncode == 1 and "Traceback" in out.stderr and "UserError: train.lr=-1.0" in out.stderr
    assert cli("--lr", "-1", env={"FULLSVFORMER_DEBUG": "1"}).stderr.count("Traceback") == 1
    # A bug is not a user error: a TypeError keeps its traceback without --debug.
    code = "import fullsvformer as fs, sys; fs.main = lambda argv: 1 + None; sys.exit(fs.cli([]))"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert p.returncode == 1 and "Traceback" in p.stderr and "TypeError" in p.stderr


def test_run_checkpoint_readers_agree_on_a_non_checkpoint(tmp_path):
    (tmp_path / "x.pt").write_text("not a checkpoint")
    for read in (fs.read_run_checkpoint, lambda p: fs.load_pretrained(fs.TimeSformer(3, 4, 16, 8, 32, 1, 2), p)):
        with pytest.raises(fs.CheckpointError, match="x.pt is not a PyTorch checkpoint"):
            read(tmp_path / "x.pt")
    weights = tmp_path / "vit.pt"
    torch.save({"blocks.0.norm1.weight": torch.ones(2)}, weights)
    with pytest.raises(fs.CheckpointError, match="vit.pt is not a fullsvformer training checkpoint"):
        fs.read_run_checkpoint(weights)


def test_a_worker_error_is_one_line_and_a_finished_run_is_not_overwritten(run_dir, tmp_path):
    """An unreadable test video met by a DataLoader worker process (whose errors come back wrapped in the worker's
    traceback) still reads as one line; and --out pointing at a finished run is refused instead of overwriting it."""
    root = tmp_path / "ucf"
    make_synthetic.main(["--out", str(root), "--layout", "ucf101", "--classes", "3", "--clips-per-class", "12",
                         "--size", "32", "--length", "20"])
    test_video = root / "UCF-101" / (root / "ucfTrainTestlist" / "testlist01.txt").read_text().split()[0]
    test_video.write_bytes(b"not a video")
    flags = [a for a in TINY if a != "synthetic"]
    flags[flags.index("--dataset") + 1:flags.index("--dataset") + 1] = ["ucf101"]
    out = cli(*flags, "--data-root", root, "--labeled", "0.02", "--epochs", "1", "--workers", "1",
              "--out", tmp_path / "r")
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-3000:]
    assert re.search(r"fullsvformer: error: test video .*v_\w+\.avi: .*an unreadable test video is an error",
                     out.stderr), out.stderr[-2000:]
    again = cli(*TINY, "--out", run_dir / "run")
    assert again.returncode == 2 and "already holds a run" in again.stderr and "--resume" in again.stderr
    assert torch.load(run_dir / "run" / "last.pt", weights_only=True)["state"]["step"] == 12  # untouched


# ---- best.pt and last.pt say what they are ---------------------------------------------------------------------------

def test_checkpoints_record_how_they_were_selected(run_dir):
    best = torch.load(run_dir / "run" / "best.pt", weights_only=True)
    last = torch.load(run_dir / "run" / "last.pt", weights_only=True)
    assert "TEST set" in best["selection"] and "do not report" in best["selection"]
    assert last["selection"].startswith("last.pt: the model at step 12")
    assert best["class_names"] == last["class_names"] == ["disc_still", "disc_slide_h", "disc_slide_v"]
    out = cli("eval", "--checkpoint", run_dir / "run" / "best.pt", "--device", "cpu")
    assert out.returncode == 0 and "best.pt: best.pt: the highest 1-view top-1" in out.stdout
    assert "TEST set" not in cli("eval", "--checkpoint", run_dir / "run" / "last.pt", "--device", "cpu").stdout


# ---- predict ---------------------------------------------------------------------------------------------------------

def test_predict_json_matches_the_models_multiview_average(run_dir):
    videos = sorted((run_dir / "videos" / "UCF-101").glob("*/*.avi"))
    broken = run_dir / "broken.avi"
    broken.write_bytes(b"\x00" * 100)
    args = ["--checkpoint", run_dir / "run" / "last.pt", "--json", "--topk", "2", "--device", "cpu"]
    out = predict(*args, videos[0], broken, run_dir / "missing.avi", *videos[1:])
    assert out.returncode == 1  # two videos could not be read
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["video"] for r in rows] == [str(v) for v in videos]  # every readable one, in order, one line each
    errors = out.stderr.strip().splitlines()
    assert len(errors) == 2 and "broken.avi" in errors[0] and "missing.avi" in errors[1]
    assert "Traceback" not in out.stderr

    # Reference: the student's logits on the test views (test_clips x test_crops from the run's config), averaged,
    # then softmax; computed here with the model and the dataset code directly.
    ckpt = torch.load(run_dir / "run" / "last.pt", weights_only=True)
    cfg = fs.config_from_dict(ckpt["config"])
    names = ckpt["class_names"]
    for teacher in (False, True):
        if teacher:
            rows = [json.loads(line) for line in predict(*args, "--teacher", *videos).stdout.splitlines()]
        model = fs.model_from_checkpoint(ckpt, cfg, "ema" if teacher else "model").eval()
        clips = fs.VideoClips("", [(str(v), -1) for v in videos], cfg.data, "ref")
        for i, r in enumerate(rows):
            views = clips.test_item(i)["views"]
            assert views.shape[0] == cfg.data.test_clips * cfg.data.test_crops
            with torch.no_grad():
                p = model(fs.normalize_clips(views, cfg.data.mean, cfg.data.std)).mean(0).softmax(-1)
            top = p.topk(2)
            assert [x["label"] for x in r["topk"]] == top.indices.tolist()
            assert [x["name"] for x in r["topk"]] == [names[y] for y in top.indices.tolist()]
            assert [x["prob"] for x in r["topk"]] == pytest.approx(top.values.tolist(), abs=1e-5)
            assert r["topk"][0]["prob"] >= r["topk"][1]["prob"]


def test_predict_table_without_json(run_dir):
    video = sorted((run_dir / "videos" / "UCF-101").glob("*/*.avi"))[0]
    out = predict("--checkpoint", run_dir / "run" / "last.pt", "--device", "cpu", video)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert lines[0] == str(video) and len(lines) == 1 + 3  # the video, then its 3 classes (topk 5 > 3 classes)
    assert {line.split()[-1] for line in lines[1:]} == {"disc_still", "disc_slide_h", "disc_slide_v"}


def test_predict_mistakes_are_one_line(tmp_path):
    """tools/predict.py reports a bad checkpoint as fullsvformer.py does: one line naming the file, exit 2."""
    (tmp_path / "notes.pt").write_text("not a checkpoint")
    out = predict("--checkpoint", tmp_path / "notes.pt", "--device", "cpu", "a.avi")
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert out.stderr.startswith("fullsvformer: error: ") and "notes.pt is not a PyTorch checkpoint" in out.stderr


# ---- torchrun on the demo, as the README shows it --------------------------------------------------------------------

@pytest.mark.parametrize("procs", [2, 4])
def test_torchrun_runs_the_demo_as_is(tmp_path, procs):
    """`torchrun --nproc_per_node N fullsvformer.py --epochs 1`: the demo preset's global batch (8) is kept; the
    per-process micro-batch is derived (8 / N) and logged."""
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs),
           str(ROOT / "fullsvformer.py"), "--epochs", "1", "--out", str(out)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    assert json.loads((out / "summary.json").read_text())["epochs"] == 1
    assert f"{8 // procs} labeled clips per micro-batch" in (out / "log.txt").read_text()
    assert fs.load_config(out / "config.yaml").train.global_batch == 8


# ---- what the console and log.txt show -------------------------------------------------------------------------------

def test_console_off_a_terminal_logs_lines_and_ends_like_log_txt(tmp_path):
    """Redirected (no TTY), training logs one plain line per --log-every steps instead of tqdm redraws; the run
    directory is named at the start and under the final table, and log.txt ends with the table the console shows."""
    out = cli(*TINY, "--epochs", "1", "--log-every", "3", "--out", tmp_path / "r")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "\r" not in out.stderr and "step/s" not in out.stderr and "it/s" not in out.stderr  # no tqdm bar
    progress = [line for line in out.stdout.splitlines() if " INFO epoch 1/1, step " in line]
    assert [line.split("step ")[1].split(":")[0] for line in progress] == ["3/6", "6/6"]
    assert f"the run directory {tmp_path / 'r'}" in out.stdout
    log_txt = (tmp_path / "r" / "log.txt").read_text()
    table = out.stdout[out.stdout.index(" INFO results:"):].rstrip()
    assert table.endswith(f"run directory: {tmp_path / 'r'} (summary.json, last.pt, log.txt, metrics.jsonl)")
    assert "student" in table and log_txt.rstrip().endswith(table)
    assert all(line in log_txt for line in progress)


def test_eval_bar_names_its_views(monkeypatch):
    """The eval progress bar says '1 view' for a 1x1 eval, not 'multi-view'."""
    seen = []
    monkeypatch.setattr(fs, "progress_bar", lambda rank=0, **kw: seen.append(kw["desc"]) or kw["iterable"])
    monkeypatch.setattr(fs, "eval_batches", lambda *a, **k: iter(()))
    model = torch.nn.Identity()
    for clips, crops, full in ((1, 1, True), (5, 3, True), (5, 3, False)):
        data = SimpleNamespace(num_classes=2, test=[], cfg=fs.DataConfig(test_clips=clips, test_crops=crops))
        fs.evaluate({"m": model}, data, torch.device("cpu"), full=full)
    assert seen == ["eval (1 view)", "eval (5x3 views)", "eval (1 view)"]


# ---- eval and predict: a run directory as --checkpoint, --json ------------------------------------------------------

def test_eval_of_a_run_directory_writes_json_without_a_training_line(run_dir, tmp_path):
    out = cli("eval", "--checkpoint", run_dir / "run", "--device", "cpu", "--json", tmp_path / "eval.json")
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"{run_dir / 'run'} is a run directory: using its last.pt" in out.stdout
    assert "train clips/s" not in out.stdout and "steps in" not in out.stdout  # eval trains nothing
    assert f"results written to {tmp_path / 'eval.json'}" in out.stdout
    got = json.loads((tmp_path / "eval.json").read_text())
    summary = json.loads((run_dir / "run" / "summary.json").read_text())
    assert got["checkpoint"] == str(run_dir / "run" / "last.pt")
    for k in ("top1", "top5", "teacher_top1", "teacher_top5", "per_class_top1", "num_classes", "eval_views",
              "test_videos", "steps", "dataset", "labeled"):
        assert got[k] == summary[k], k
    missing = cli("eval", "--checkpoint", run_dir / "run", "--json", tmp_path / "no" / "such" / "e.json")
    assert missing.returncode == 2 and "no/such" in missing.stderr and "does not exist" in missing.stderr
    crops = cli("eval", "--checkpoint", run_dir / "run", "--test-crops", "3")  # square synthetic frames: one view
    assert crops.returncode == 2 and "data.test_crops=3: the synthetic frames are square" in crops.stderr


def test_predict_takes_a_run_directory(run_dir):
    video = sorted((run_dir / "videos" / "UCF-101").glob("*/*.avi"))[0]
    out = predict("--checkpoint", run_dir / "run", "--device", "cpu", "--json", video)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout)["video"] == str(video)  # stdout stays pure JSON
    assert "is a run directory: using its last.pt" in out.stderr


# ---- --help and typos ------------------------------------------------------------------------------------------------

TYPOS = [(["--labled", "0.01"], "unrecognized arguments: --labled 0.01; did you mean --labeled?"),
         (["--dataset", "ucf-101"], "invalid choice: 'ucf-101'"),
         (["--dataset", "ucf-101"], "did you mean ucf101?"),
         (["--optimiser", "adamw"], "did you mean --optimizer?"),
         (["--compile", "of"], "did you mean off?"),
         (["eval", "--checkpoint", "x.pt", "--data-rot", "d"], "did you mean --data-root?"),
         (["eval", "--checkpoint", "x.pt", "--lr", "1"], "unrecognized arguments: --lr 1 (see fullsvformer.py eval")]


@pytest.mark.parametrize("case", range(len(TYPOS)))
def test_a_typo_is_one_line_with_the_closest_flag_or_choice(case):
    argv, fragment = TYPOS[case]
    out = cli(*argv)
    assert out.returncode == 2 and out.stdout == "", out.stderr
    assert out.stderr.startswith("fullsvformer: error: ") and len(out.stderr.splitlines()) == 1, out.stderr
    assert fragment in out.stderr, out.stderr


def test_predict_typo_is_one_line():
    out = predict("--checkpoint", "x.pt", "--top-k", "2", "a.avi")
    assert out.returncode == 2 and len(out.stderr.splitlines()) == 1, out.stderr
    assert out.stderr.startswith("fullsvformer: error: ") and "did you mean --topk?" in out.stderr


def squeeze(text):
    return " ".join(text.split())


def test_help_says_what_the_presets_change_and_eval_help_lists_only_eval_flags():
    helptext = squeeze(fs.build_parser().format_help())
    assert "(default: 224; synthetic preset: 32)" in helptext  # --img-size
    assert "(default: 0.01; synthetic preset: 0.01; ucf101 preset: 0.01; hmdb51 preset: 0.4)" in helptext
    assert "(default: 30; synthetic preset: 3)" in helptext  # --epochs
    evalhelp = squeeze(fs.build_parser(True).format_help())
    for flag in ("--checkpoint", "--json", "--data-root", "--test-clips", "--test-crops", "--eval-batch", "--device",
                 "--amp", "--workers", "--val-list"):
        assert flag in evalhelp, flag
    for flag in ("--lr", "--epochs", "--mu", "--gamma-kl", "--embed-dim", "--resume", "--out", "--num-frames"):
        assert flag + " " not in evalhelp, flag
    assert "(default: the checkpoint's)" in evalhelp


def test_make_synthetic_help_shows_defaults_and_a_command_that_works(tmp_path):
    """tools/make_synthetic.py --help shows each default and suggests two commands; run as written (paths moved
    under tmp_path), they write the videos and train on them."""
    helptext = cli("--help", script="tools/make_synthetic.py").stdout
    assert "(default: 30)" in helptext and "(default: 96x72)" in helptext and "(default: 64)" in helptext
    commands = [" ".join(c.replace("\\\n", " ").split()) for c in
                re.findall(r"^ {4}(python .*?(?:\\\n.*?)*)$", make_synthetic.__doc__, re.M)]
    assert len(commands) == 2 and commands[1].startswith("python fullsvformer.py --dataset ucf101")
    for command in commands:
        args = command.replace("/tmp/synth", str(tmp_path / "synth")).split()
        out = cli(*args[2:], script=args[1], timeout=600)
        assert out.returncode == 0, (command, out.stderr[-2000:])
    assert json.loads((tmp_path / "synth-run" / "summary.json").read_text())["test_videos"] == 4 * 12
