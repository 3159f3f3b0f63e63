"""setup.sh's FFmpeg check, run against fake system tools (nothing is installed): it must see libraries that the
linker cache lists, however long that listing is."""
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def fake(path: Path, body: str) -> None:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def run_setup(tmp_path: Path, cache_lines: str) -> str:
    """setup.sh from a copy, with fake ldconfig, apt-get, sudo and python; returns the apt-get calls it made."""
    if shutil.which("bash") is None:
        pytest.skip("no bash")
    bin_dir, repo = tmp_path / "bin", tmp_path / "repo"
    bin_dir.mkdir()
    repo.mkdir()
    shutil.copy(ROOT / "setup.sh", repo / "setup.sh")
    calls = tmp_path / "apt-get.calls"
    # The linker cache: the given lines, then ~2 MB more, far beyond a pipe's buffer: a reader that stops at the
    # first match (grep -q) makes this writer die of SIGPIPE, as the real ldconfig did.
    fake(bin_dir / "ldconfig", f"printf '%s\\n' {cache_lines}\n"
                               "yes '\tlibfoo.so.1 (libc6,x86-64) => /usr/lib/libfoo.so.1' | head -c 2000000\n")
    # apt-get records its arguments; `install` fails, so setup.sh stops at its first installation.
    fake(bin_dir / "apt-get", f'echo "$*" >> {calls}\n[ "$1" = update ]\n')
    fake(bin_dir / "sudo", 'exec "$@"\n')
    fake(bin_dir / "python-without-venv", "exit 1\n")  # so that setup.sh goes on to install python3-venv, and stops
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    out = subprocess.run(["bash", str(repo / "setup.sh"), str(bin_dir / "python-without-venv")], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0  # the failing fake install stops it, before any venv or pip
    assert not (repo / ".venv").exists()
    return calls.read_text() if calls.exists() else ""


def test_ffmpeg_found_in_a_long_linker_cache(tmp_path):
    """libavcodec.so.59 is listed first: the old `ldconfig -p | grep -q` under pipefail called it missing."""
    calls = run_setup(tmp_path, "'\tlibavcodec.so.59 (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libavcodec.so.59'")
    assert "libavcodec" not in calls and "ffmpeg" not in calls
    assert "python3-venv" in calls  # the check after it ran: the fakes work


def test_ffmpeg_missing_is_installed(tmp_path):
    calls = run_setup(tmp_path, "'\tlibavcodec.so.57 (libc6,x86-64) => /usr/lib/libavcodec.so.57'")
    assert "install -y -qq --no-install-recommends libavcodec59" in calls
