"""Check surviving mutants again against the current tests, in one process (minutes, not an hour).

``make mutation`` picks each mutant's tests from the coverage it recorded when it started, so a test
written after that run never meets the mutants it was written for. This script activates each
named mutant of ``mutants/`` (mutmut's trampolines read ``MUTANT_UNDER_TEST`` at call time) and runs
the given test files with pytest; a failing run kills the mutant. Usage::

    .venv/bin/python benchmarks/mutation_recheck.py --tests tests/test_evaluate.py [-k EXPR] -- NAME [NAME ...]

Prints one line per mutant (``killed`` / ``survived`` / ``error``) and a count. Not a test: a benchmark tool.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def recheck(names: list[str], tests: list[str], keyword: str | None = None) -> dict[str, str]:
    """``{mutant: "killed" | "survived" | "error"}`` with the mutated package first on ``sys.path``; only
    failing tests kill a mutant (pytest exit 1), a run that could not test it (bad path, no tests) is an error."""
    sys.path.insert(0, str(ROOT / "mutants"))
    results = {}
    for name in names:
        os.environ["MUTANT_UNDER_TEST"] = name
        with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
            code = pytest.main(["-x", "-q", "-p", "no:cacheprovider", *(["-k", keyword] if keyword else []), *tests])
        results[name] = {0: "survived", 1: "killed"}.get(int(code), "error")
        print(f"{results[name]:8s} {name}", flush=True)
    os.environ["MUTANT_UNDER_TEST"] = ""
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", nargs="+", required=True, help="test files (or node ids) to run per mutant")
    parser.add_argument("-k", dest="keyword", help="pytest -k expression (e.g. to leave out a slow test)")
    parser.add_argument("names", nargs="+", help="mutant names, as benchmarks/mutation_scores.py --survivors prints")
    args = parser.parse_args(argv)
    results = recheck(args.names, args.tests, args.keyword)
    killed = sum(v == "killed" for v in results.values())
    print(f"{killed} of {len(results)} killed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
