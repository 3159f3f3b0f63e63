"""Benchmark tools: compare.py (our runs vs paper.yaml) and plot.py (training curves)."""
import platform
from pathlib import Path


class BenchError(Exception):
    """A bad input file; the message names the file (and the key or line)."""


def cpu_info() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo; without it (not Linux), "model name" alone, from platform. Both
    benches key their machine-specific figures on it: VMs often show a generic model name ("Intel(R) Xeon(R)
    Processor"), so family, model and stepping are what tell two chips apart, and float results are reproducible only
    on one chip."""
    try:
        block = Path("/proc/cpuinfo").read_text().split("\n\n")[0]
    except OSError:
        block = ""
    info = {}
    for line in block.splitlines():
        k, sep, v = line.partition(":")
        if sep:
            info.setdefault(k.strip(), v.strip())
    if not info.get("model name"):
        info["model name"] = platform.processor() or platform.machine()
    return info
