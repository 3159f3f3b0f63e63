"""What a cluster does to a run: a stop signal (SIGTERM, SIGINT, SIGUSR1) ends it at an optimizer step with last.pt
and exit status 75, and --resume then ends exactly as an uninterrupted run (one process, torchrun x 2, tasks started
as the README's SLURM script starts them); a write that fails (full disk, read-only folder, denied, I/O error) is one
line that names the file and the checkpoint to resume from, and loses nothing; the checks made before any work."""
import errno
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import fullsvformer as fs
from test_train import TINY, RESULT_KEYS, small_stage0

ROOT = Path(fs.__file__).parent
# 3 steps per epoch; in one process each step accumulates 2 micro-batches, so a signal can land inside a window.
FLAGS = TINY + ["--global-batch", "4", "--drop-path", "0.1"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
# fullsvformer.py's command line, with a process that sends itself SIGNAL when its ssl_losses call number is in
# SIGNAL_AT_CALL (comma-separated; only on rank SIGNAL_RANK when set; to its whole process group with SIGNAL_GROUP).
SIGNAL_SCRIPT = """
import os, signal, sys, fullsvformer as fs
real, calls = fs.ssl_losses, [0]
at = [int(c) for c in os.environ.get("SIGNAL_AT_CALL", "0").split(",")]
sig = getattr(signal, os.environ.get("SIGNAL", "SIGTERM"))
mine = os.environ.get("SIGNAL_RANK", os.environ.get("RANK", "0")) == os.environ.get("RANK", "0")
def ssl_losses(*a, **k):
    calls[0] += 1
    for c in at:
        if calls[0] == c and mine:
            (os.killpg(0, sig) if os.environ.get("SIGNAL_GROUP") else os.kill(os.getpid(), sig))
    return real(*a, **k)
fs.ssl_losses = ssl_losses
sys.exit(fs.cli(sys.argv[1:]))
"""


def run_signalled(tmp: Path, args: list, procs: int = 1, **env) -> subprocess.CompletedProcess:
    script = tmp / "signalled.py"
    script.write_text(SIGNAL_SCRIPT)
    cmd = [sys.executable, str(script)] if procs == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs), str(script)]
    return subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env={**ENV, **env}, start_new_session=True)  # SIGNAL_GROUP signals this group only


def resume(run_dir: Path, procs: int = 1) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "fullsvformer.py"] if procs == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs),
         "fullsvformer.py"]
    p = subprocess.run(cmd + ["--resume", str(run_dir)], capture_output=True, text=True, timeout=600, cwd=ROOT,
                       env=ENV)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    return p


def assert_same_run(a: Path, b: Path) -> None:
    """Run b ended as run a: summary.json's results, the final student and teacher bit for bit, each step logged once."""
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
    for k in RESULT_KEYS:
        assert sa[k] == sb[k], k
    ca, cb = (torch.load(d / "last.pt", weights_only=True) for d in (a, b))
    for part in ("model", "ema"):
        for k in ca[part]:
            assert torch.equal(ca[part][k], cb[part][k]), f"{part}.{k}"
    rows = [[json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()] for d in (a, b)]
    assert [(r["kind"], r["step"]) for r in rows[0]] == [(r["kind"], r["step"]) for r in rows[1]]
    assert [r["step"] for r in rows[1] if r["kind"] == "train"] == list(range(1, sa["steps"] + 1))


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """FLAGS run without interruption, in one process (6 steps)."""
    out = tmp_path_factory.mktemp("reference") / "run"
    torch.set_num_threads(1)
    fs.main(FLAGS + ["--out", str(out)])
    return out


# ---- a stop signal ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT", "SIGUSR1"])
def test_a_stop_signal_ends_the_step_writes_last_pt_exits_75_and_resume_is_exact(reference, tmp_path, sig):
    """The signal arrives as micro-batch 3 starts, the first of step 2's two: step 2 is completed, last.pt written
    (an exact resume point inside epoch 0), one line logged, exit 75; the resumed run ends as the uninterrupted one."""
    out = tmp_path / "run"
    p = run_signalled(tmp_path, FLAGS + ["--out", out], SIGNAL=sig, SIGNAL_AT_CALL="3")
    assert p.returncode == fs.REQUEUE_EXIT == 75, p.stdout[-2000:] + p.stderr[-3000:]
    line = f"stopped by {sig} at step 2; resume with --resume {out}"
    assert p.stdout.count(line) == 1 and line in (out / "log.txt").read_text(), p.stdout[-2000:]
    assert "Traceback" not in p.stderr and "error" not in p.stderr
    state = torch.load(out / "last.pt", weights_only=True)["state"]
    assert (state["epoch"], state["micro"], state["step"]) == (0, 4, 2)
    assert not (out / "summary.json").exists()
    resume(out)
    assert_same_run(reference, out)


def test_a_second_ctrl_c_aborts_at_once(tmp_path):
    """Two SIGINTs in micro-batch 3: the second raises KeyboardInterrupt there, before step 2 ends: no checkpoint."""
    out = tmp_path / "run"
    p = run_signalled(tmp_path, FLAGS + ["--out", out], SIGNAL="SIGINT", SIGNAL_AT_CALL="3,3")
    assert p.returncode == -signal.SIGINT, p.stdout[-2000:] + p.stderr[-3000:]
    assert "KeyboardInterrupt" in p.stderr and "stopped by" not in p.stdout
    assert not (out / "last.pt").exists()
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1]


def test_sigterm_to_every_process_with_loader_workers(reference, tmp_path):
    """A scheduler signals every process of the job, the loader's workers too (SLURM), as a terminal's Ctrl-C does:
    the workers leave the signal to the training process, which stops as above."""
    out = tmp_path / "run"
    p = run_signalled(tmp_path, FLAGS + ["--workers", "1", "--out", out], SIGNAL_AT_CALL="3", SIGNAL_GROUP="1")
    assert p.returncode == 75, p.stdout[-2000:] + p.stderr[-3000:]
    assert f"stopped by SIGTERM at step 2; resume with --resume {out}" in p.stdout
    resume(out)
    assert_same_run(reference, out)  # the worker count changes no draw (README)


# ---- several processes ------------------------------------------------------------------------------------------------

def stopped_ranks(stderr: str) -> set:
    """The ranks that torchrun's failure report lists with exit status 75."""
    return set(re.findall(r"rank\s+: (\d) \(local_rank: \d\)\s+exitcode\s+: 75\b", stderr))


@pytest.fixture(scope="module")
def ddp_reference(tmp_path_factory) -> Path:
    """FLAGS run without interruption by torchrun x 2 (each step: 1 micro-batch per process)."""
    tmp = tmp_path_factory.mktemp("ddp")
    p = run_signalled(tmp, FLAGS + ["--out", tmp / "run"], procs=2)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    return tmp / "run"


def test_torchrun_a_signal_on_one_rank_stops_every_rank_at_the_same_step(ddp_reference, tmp_path):
    """Only rank 1 gets SIGTERM, in step 2: rank 0 learns it from step 2's collective; both stop after step 2 (no rank
    waits for a peer that left), exit 75 (torchrun reports that as its own status 1), and the resumed run is exact."""
    out = tmp_path / "run"
    p = run_signalled(tmp_path, FLAGS + ["--out", out], procs=2, SIGNAL_AT_CALL="2", SIGNAL_RANK="1")
    assert p.returncode == 1 and stopped_ranks(p.stderr) == {"0", "1"}, p.stderr[-3000:]
    assert p.stdout.count(f"stopped by SIGTERM at step 2; resume with --resume {out}") == 1  # rank 0 logs it
    assert torch.load(out / "last.pt", weights_only=True)["state"]["step"] == 2
    resume(out, procs=2)
    assert_same_run(ddp_reference, out)


def free_port(low: int = 20000, high: int = 40000) -> int:
    for port in range(low + os.getpid() % 1000, high):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) != 0:
                return port
    raise RuntimeError("no free port")


def test_torchrun_forwards_sigterm_and_the_run_resumes_exactly(ddp_reference, tmp_path):
    """SIGTERM to the torchrun process (the README's several-node line, on one node), as Kubernetes sends it to a
    container's first process: torchrun forwards it to both workers, which stop at the same step with last.pt; the
    resumed run ends as the uninterrupted one."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2", "--rdzv_backend",
           "c10d", "--rdzv_endpoint", f"localhost:{free_port()}", "--rdzv_id", "RUN", "fullsvformer.py",
           *map(str, FLAGS), "--out", str(out)]
    p = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and p.poll() is None and not (out / "metrics.jsonl").exists():
        time.sleep(0.02)
    assert p.poll() is None, "the run ended before it could be signalled"
    p.send_signal(signal.SIGTERM)
    stdout, stderr = p.communicate(timeout=300)
    assert p.returncode == 1 and "got signal: 15" in stderr, stderr[-3000:]  # torchrun's own report
    step = torch.load(out / "last.pt", weights_only=True)["state"]["step"]
    assert 1 <= step < 6 and f"stopped by SIGTERM at step {step}; resume with --resume {out}" in stdout
    resume(out, procs=2)
    assert_same_run(ddp_reference, out)


FAKE_SRUN = """#!/bin/bash
# srun on this machine: SLURM_NTASKS tasks with their SLURM_PROCID and SLURM_LOCALID; exits with the highest status
pids=()
for ((i = 0; i < SLURM_NTASKS; i++)); do SLURM_PROCID=$i SLURM_LOCALID=$i "$@" & pids+=($!); done
echo "${pids[@]}" > "$SRUN_PIDS"
status=0
for pid in "${pids[@]}"; do wait "$pid"; s=$?; if [ $s -gt $status ]; then status=$s; fi; done
exit $status
"""
FAKE_SCONTROL = """#!/bin/bash
if [ "$1 $2" = "show hostnames" ]; then echo localhost; else echo "$@" >> "$SCONTROL_LOG"; fi
"""


def readme_block(first: str, last: str) -> str:
    """The README's indented code block from the line `first` to the line `last`, unindented."""
    lines = (ROOT / "README.md").read_text().splitlines()
    start = lines.index("    " + first)
    return "\n".join(line[4:] for line in lines[start:lines.index("    " + last, start) + 1]) + "\n"


def test_the_readme_slurm_script_requeues_a_stopped_run_and_resumes_it(ddp_reference, tmp_path):
    """The README's job script, with srun and scontrol stand-ins: SIGTERM to the batch shell and to both tasks (a
    preemption) stops the run with last.pt, srun exits 75 and the script requeues the job; SLURM then runs it again
    with the same arguments, and it resumes and ends as the uninterrupted torchrun x 2 run."""
    (tmp_path / "job.sh").write_text(readme_block("#!/bin/bash", "exit $status"))
    (tmp_path / "bin").mkdir()
    for name, text in (("srun", FAKE_SRUN), ("scontrol", FAKE_SCONTROL)):
        (tmp_path / "bin" / name).write_text(text)
        (tmp_path / "bin" / name).chmod(0o755)
    job_id = free_port() - 20000  # the script's MASTER_PORT
    env = {**ENV, "PATH": f"{tmp_path / 'bin'}:{Path(sys.executable).parent}:{os.environ['PATH']}",
           "SLURM_JOB_ID": str(job_id), "SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "2",
           "SLURM_JOB_NODELIST": "localhost", "SRUN_PIDS": str(tmp_path / "pids"),
           "SCONTROL_LOG": str(tmp_path / "scontrol.log")}
    out = tmp_path / "run"
    job = ["bash", str(tmp_path / "job.sh"), str(out), *map(str, FLAGS)]
    p = subprocess.Popen(job, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and p.poll() is None and not (out / "metrics.jsonl").exists():
        time.sleep(0.02)
    assert p.poll() is None, "the run ended before it could be signalled"
    for pid in [p.pid, *map(int, (tmp_path / "pids").read_text().split())]:
        os.kill(pid, signal.SIGTERM)
    stdout, stderr = p.communicate(timeout=300)
    assert p.returncode == 75, stdout[-2000:] + stderr[-3000:]
    assert (tmp_path / "scontrol.log").read_text() == f"requeue {job_id}\n"
    step = torch.load(out / "last.pt", weights_only=True)["state"]["step"]
    assert 1 <= step < 6 and f"stopped by SIGTERM at step {step}; resume with --resume {out}" in stdout
    again = subprocess.run(job, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-3000:]
    assert (tmp_path / "scontrol.log").read_text() == f"requeue {job_id}\n"  # not requeued again
    assert_same_run(ddp_reference, out)


# ---- write faults ----------------------------------------------------------------------------------------------------

class HalfWrite:
    """A file whose first write(2) stores half of the bytes, then fails as a full disk or a failing device does."""

    def __init__(self, f, err: int):
        self.f, self.err = f, err

    def write(self, b):
        self.f.write(bytes(b)[:len(b) // 2])
        raise OSError(self.err, os.strerror(self.err))

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def inject(monkeypatch, name: str, err: int, nth: int, at_open: bool) -> None:
    """The nth opening for writing of a file called `name`, by fullsvformer, fails with OSError(err): at open (a
    read-only or denied folder), or after half a write (ENOSPC, EIO)."""
    count = [0]

    def fake_open(file, mode="r", *a, **k):
        if Path(file).name == name and mode[0] in "wa":
            count[0] += 1
            if count[0] == nth:
                if at_open:
                    raise OSError(err, os.strerror(err), str(file))
                return HalfWrite(open(file, mode, *a, **k), err)
        return open(file, mode, *a, **k)
    monkeypatch.setattr(fs, "open", fake_open, raising=False)


# (file, its nth write fails, errno, at open; last.pt's step when it fails: the run continues from there)
WRITE_FAULTS = {"last.pt": ("last.pt.tmp", 2, errno.ENOSPC, False, 3),  # epoch 2's: epoch 1's stays
                "best.pt": ("best.pt.tmp", 1, errno.EIO, False, 3),  # epoch 1's: after last.pt
                "metrics.jsonl": ("metrics.jsonl", 5, errno.ENOSPC, False, 3),  # step 4's line, half written
                "summary.json": ("summary.json.tmp", 1, errno.EACCES, True, 6),
                "config.yaml": ("config.yaml.tmp", 1, errno.EROFS, True, None)}


@pytest.mark.parametrize("site", WRITE_FAULTS)
def test_a_failed_write_is_one_line_and_loses_nothing(reference, tmp_path, monkeypatch, capsys, site):
    name, nth, err, at_open, step = WRITE_FAULTS[site]
    inject(monkeypatch, name, err, nth, at_open)
    out = tmp_path / "run"
    torch.set_num_threads(1)
    assert fs.cli(FLAGS + ["--out", str(out)]) == 2
    lines = re.findall(r"fullsvformer: error: .*", capsys.readouterr().err)  # maybe after a progress bar
    where = (f"{out / 'last.pt'} is intact: make room (or make the folder writable) and continue with --resume {out}"
             if step else "no checkpoint had been written yet")
    assert lines == [f"fullsvformer: error: writing {out / site} failed: {os.strerror(err)}; {where}"]
    assert not list(out.glob("*.tmp"))
    if step is None:
        return
    assert torch.load(out / "last.pt", weights_only=True)["state"]["step"] == step
    for line in (out / "metrics.jsonl").read_text().splitlines():  # no torn line for the resume to trip on
        json.loads(line)
    monkeypatch.undo()  # the disk has room again
    torch.set_num_threads(1)
    fs.main(["--resume", str(out)])
    assert_same_run(reference, out)


def test_a_failed_stage0_cache_write_keeps_its_training(tmp_path, monkeypatch):
    """Stage 0 trained into the cache, then its weights file cannot be written: one line; the next call only
    converts stage 0's last.pt, it does not train again."""
    small_stage0(tmp_path, monkeypatch)
    cfg, _ = fs.parse_config(TINY[:-1] + ["synthetic", "--epochs", "1", "--eval-every", "0"])
    inject(monkeypatch, "stage0.safetensors.tmp", errno.EROFS, 1, True)
    torch.set_num_threads(1)
    with pytest.raises(fs.UserError) as e:
        fs.stage0_checkpoint(cfg)
    target = tmp_path / "cache" / "fullsvformer" / f"stage0-{fs.stage0_config(cfg)[1]}" / "stage0.safetensors"
    assert str(e.value) == f"writing {target} failed: Read-only file system"
    assert not target.exists() and not Path(f"{target}.tmp").exists() and (target.parent / "last.pt").is_file()
    monkeypatch.setattr(fs, "train", lambda *a, **k: pytest.fail("stage 0 trained again"))
    assert fs.stage0_checkpoint(cfg) == str(target) and target.is_file()


def test_atomic_write_syncs_the_file_then_renames_then_syncs_the_folder(tmp_path, monkeypatch):
    events, real_fsync, real_replace = [], os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))),
                                                 real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(("replace", str(a), str(b))), real_replace(a, b))[1])
    fs.atomic_write(tmp_path / "x.json", lambda f: f.write(b"{}"))
    assert events == [("fsync", str(tmp_path / "x.json.tmp")), ("replace", str(tmp_path / "x.json.tmp"),
                      str(tmp_path / "x.json")), ("fsync", str(tmp_path))]
    assert (tmp_path / "x.json").read_bytes() == b"{}"


@contextmanager
def tmpfs(where: Path, options: str):
    """A tmpfs mounted at `where` (root with CAP_SYS_ADMIN only; the test is skipped elsewhere)."""
    where.mkdir()
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True, text=True)
    if p.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {p.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


def test_a_real_full_disk(reference, tmp_path):
    """--out on a tmpfs with room for 2.5 checkpoints: a warning at start; epoch 1 writes last.pt, then best.pt;
    epoch 2's last.pt does not fit: one line, no temp file, epoch 1's last.pt intact; with room again, --resume ends
    as the uninterrupted run."""
    size = (reference / "last.pt").stat().st_size
    with tmpfs(tmp_path / "disk", "size=4m") as disk:
        filler = disk / "filler"
        filler.write_bytes(b"\0" * (os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize - int(2.5 * size)))
        out = disk / "run"
        p = subprocess.run([sys.executable, "fullsvformer.py", *map(str, FLAGS), "--out", str(out)], cwd=ROOT,
                           env=ENV, capture_output=True, text=True, timeout=600)
        assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr[-3000:]
        assert re.search(rf"{out}: 0.00\d+ GB free, but a checkpoint of this model is 0.000\d+ GB and a run needs "
                         r"room for 3", p.stdout), p.stdout[-3000:]
        assert p.stderr.splitlines()[-1] == (
            f"fullsvformer: error: writing {out / 'last.pt'} failed: No space left on device; {out / 'last.pt'} is "
            f"intact: make room (or make the folder writable) and continue with --resume {out}")
        assert not list(out.glob("*.tmp")) and (out / "best.pt").is_file()
        assert torch.load(out / "last.pt", weights_only=True)["state"]["step"] == 3
        filler.unlink()
        resume(out)
        assert_same_run(reference, out)


# ---- checks before any work ------------------------------------------------------------------------------------------

def no_work(monkeypatch, *names):
    for name in names:
        monkeypatch.setattr(fs, name, lambda *a, **k: pytest.fail(f"{name}: work started before the check"))


def test_an_unwritable_out_fails_before_any_work(tmp_path, monkeypatch, capsys):
    no_work(monkeypatch, "stage0_checkpoint", "build_model")
    (tmp_path / "file").write_text("a file, not a folder")
    assert fs.cli(FLAGS + ["--out", str(tmp_path / "file" / "run")]) == 2
    assert capsys.readouterr().err == (f"fullsvformer: error: --out {tmp_path / 'file' / 'run'}: cannot write in "
                                       f"{tmp_path / 'file'}: Not a directory; choose an --out on a writable disk\n")
    with tmpfs(tmp_path / "ro", "ro,size=1m") as ro:
        assert fs.cli(FLAGS + ["--out", str(ro / "runs" / "a")]) == 2
        assert capsys.readouterr().err == (f"fullsvformer: error: --out {ro / 'runs' / 'a'}: cannot write in {ro}: "
                                           "Read-only file system; choose an --out on a writable disk\n")


def test_an_unwritable_stage0_cache_says_how_to_set_xdg_cache_home(tmp_path, monkeypatch):
    no_work(monkeypatch, "train")  # stage 0's training
    (tmp_path / "file").write_text("a file, not a folder")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "file"))
    monkeypatch.setattr(fs, "PRETRAINED_DIR", tmp_path / "committed")  # no committed stage 0: it must be trained
    cfg, _ = fs.parse_config(TINY[:-1] + ["synthetic"])
    with pytest.raises(fs.UserError) as e:
        fs.stage0_checkpoint(cfg)
    assert str(e.value) == (f"the stage-0 cache {tmp_path / 'file' / 'fullsvformer'}/stage0-{fs.stage0_config(cfg)[1]}"
                            f": cannot write in {tmp_path / 'file'}: Not a directory; set XDG_CACHE_HOME to a writable "
                            "folder (stage 0 is cached in $XDG_CACHE_HOME/fullsvformer/)")


def test_low_free_space_warns_with_the_sizes(tmp_path, monkeypatch):
    monkeypatch.setattr(fs.shutil, "disk_usage", lambda path: SimpleNamespace(total=10 ** 6, used=0, free=10 ** 6))
    run = fs.setup_run(fs.parse_config(FLAGS + ["--out", str(tmp_path / "run")])[0], distributed=False)
    need = fs.checkpoint_bytes(run.model, "adamw")
    assert 3 * need > 10 ** 6
    assert (f"{tmp_path / 'run'}: 0.001 GB free, but a checkpoint of this model is {need / 1e9:.3g} GB and a run "
            "needs room for 3") in (tmp_path / "run" / "log.txt").read_text()


def test_the_checkpoint_size_estimate(reference):
    """The warning's size: a written checkpoint of the tiny run (plus its config and RNG states), and the README's
    measured 1.46 GB of ViT-B/16 with SGD."""
    model = fs.model_from_checkpoint(torch.load(reference / "last.pt", weights_only=True),
                                     fs.load_config(reference / "config.yaml"))
    assert 0.8 < fs.checkpoint_bytes(model, "adamw") / (reference / "last.pt").stat().st_size < 1.0
    cfg = fs.parse_config(["--dataset", "ucf101"])[0]
    with torch.device("meta"):
        vit_b = fs.build_model(cfg.model, 101, 8, 224)
    assert cfg.train.optimizer == "sgd" and round(fs.checkpoint_bytes(vit_b, "sgd") / 1e9, 2) == 1.46
