"""The documentation is true: the README's library example runs as written, and citations point at the papers."""
import re
import subprocess
from pathlib import Path

import pytest
import torch

import fullsvformer as fs
from test_train import TINY

ROOT = Path(fs.__file__).parent


def readme_section(title: str) -> str:
    """The text of README.md's `## title` section, up to the next `## ` heading."""
    text = (ROOT / "README.md").read_text()
    m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", text, re.S | re.M)
    assert m, f"README.md has no '## {title}' section"
    return m.group(1)


def test_readme_library_example_runs(tmp_path, monkeypatch, capsys):
    """The "Use it in your code" block, exec'd unchanged from a directory holding runs/demo (a tiny trained run)."""
    blocks = re.findall(r"^```python\n(.*?)^```", readme_section("Use it in your code"), re.S | re.M)
    assert len(blocks) == 1
    monkeypatch.chdir(tmp_path)
    torch.set_num_threads(1)
    fs.main(TINY + ["--epochs", "1", "--eval-every", "0", "--out", "runs/demo"])
    names = fs.read_run_checkpoint("runs/demo/last.pt")["class_names"]
    capsys.readouterr()
    exec(compile(blocks[0], "README.md", "exec"), {"__name__": "readme"})
    assert capsys.readouterr().out.splitlines()[-1] in names  # its last line prints the predicted class's name


def test_readme_usage_shows_the_plots():
    assert "python bench/plot.py RUN_DIR" in readme_section("Usage")


def test_citations_name_papers_not_a_file_outside_the_repository():
    """The facts once came from a notes file that is not in the repository: cite the papers and code instead."""
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    if not files:
        pytest.skip("not a git checkout")
    pattern = re.compile("reference" + r"(\.md| §| section \d)")  # split: this line must not match itself
    hits = [f"{f}:{i}" for f in files if f.endswith((".py", ".md", ".yaml", ".sh", ".txt"))
            for i, line in enumerate((ROOT / f).read_text().splitlines(), 1) if pattern.search(line)]
    assert not hits
