"""Benchmark tools: compare.py (our runs vs paper.yaml) and plot.py (training curves)."""


class BenchError(Exception):
    """A bad input file; the message names the file (and the key or line)."""
