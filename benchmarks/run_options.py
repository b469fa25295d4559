"""The command-line options the benchmark scripts share, in a module that imports nothing heavy (a script
that only reads saved scores need not start TensorFlow to parse its arguments)."""

from __future__ import annotations

import argparse


def add_run_arguments(parser: argparse.ArgumentParser, *, size: bool = True, n_boot: bool = True) -> None:
    """The options every script over a run's split shares: which run (``--run``), for scripts that build
    images the input size in pixels (``--size``) and, for scripts that report confidence intervals, the
    bootstrap resamples (``--n-boot``)."""
    parser.add_argument("--run", default="sample")
    if size:
        parser.add_argument("--size", type=int, default=128)
    if n_boot:
        parser.add_argument("--n-boot", type=int, default=1000)
