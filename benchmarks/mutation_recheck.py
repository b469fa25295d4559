"""Check surviving mutants again against the current tests, in one process (minutes, not an hour).

``make mutation`` picks each mutant's tests from the coverage it recorded when it started, so a test
written after that run never meets the mutants it was written for. This script activates each
named mutant of ``mutants/`` (mutmut's trampolines read ``MUTANT_UNDER_TEST`` at call time) and runs
the given test files with pytest; a failing run kills the mutant. Usage::

    .venv/bin/python benchmarks/mutation_recheck.py --tests tests/test_evaluate.py [-k EXPR] -- NAME [NAME ...]
    .venv/bin/python benchmarks/mutation_recheck.py --unchecked helpers.evaluate --tests-from-stats [--limit N]

``--unchecked MODULE`` takes every mutant of the module that the last ``make mutation`` left without a result;
``--tests-from-stats`` runs, for each mutant, the tests mutmut recorded as calling its function
(``mutants/mutmut-stats.json``) instead of whole files, as ``make mutation`` does.

Prints one line per mutant (``killed`` / ``survived`` / ``error``, or ``no tests`` where the record names none for
its function) and the counts. Not a test: a benchmark tool.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
from collections import Counter
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def unchecked_mutants(module: str) -> list[str]:
    """The mutants of ``module`` (e.g. ``helpers.evaluate``) without a result in mutmut's record of its last run."""
    meta = json.loads((ROOT / "mutants" / (module.replace(".", "/") + ".py.meta")).read_text())
    return [name for name, code in meta["exit_code_by_key"].items() if code is None]


def tests_by_function() -> dict[str, list[str]]:
    """mutmut's record of which tests call each function (its mangled name, ``helpers.evaluate.x_save_json``)."""
    return json.loads((ROOT / "mutants" / "mutmut-stats.json").read_text())["tests_by_mangled_function_name"]


def recheck(names: list[str], tests: list[str] | dict[str, list[str]], keyword: str | None = None) -> dict[str, str]:
    """``{mutant: "killed" | "survived" | "error"}`` with the mutated package first on ``sys.path``; only
    failing tests kill a mutant (pytest exit 1), a run that could not test it (bad path, no tests) is an error.
    ``tests`` is one list for every mutant, or each mutant's tests by its function's mangled name."""
    sys.path.insert(0, str(ROOT / "mutants"))
    results = {}
    for name in names:
        os.environ["MUTANT_UNDER_TEST"] = name
        chosen = tests if isinstance(tests, list) else sorted(tests.get(name.split("__mutmut_")[0], []))
        if not chosen:
            results[name] = "no tests"
            print(f"{results[name]:8s} {name}", flush=True)
            continue
        with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
            code = pytest.main(["-x", "-q", "-p", "no:cacheprovider", *(["-k", keyword] if keyword else []), *chosen])
        results[name] = {0: "survived", 1: "killed"}.get(int(code), "error")
        print(f"{results[name]:8s} {name}", flush=True)
    os.environ["MUTANT_UNDER_TEST"] = ""
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", nargs="+", help="test files (or node ids) to run per mutant")
    parser.add_argument("--tests-from-stats", action="store_true",
                        help="each mutant's tests from mutants/mutmut-stats.json (the tests that call its function)")
    parser.add_argument("-k", dest="keyword", help="pytest -k expression (e.g. to leave out a slow test)")
    parser.add_argument("--unchecked", metavar="MODULE", help="every mutant of MODULE the last make mutation left unchecked")
    parser.add_argument("--limit", type=int, default=None, help="at most this many mutants (the first ones)")
    parser.add_argument("names", nargs="*", help="mutant names, as benchmarks/mutation_scores.py --survivors prints")
    args = parser.parse_args(argv)
    if bool(args.tests) == args.tests_from_stats:
        parser.error("give --tests or --tests-from-stats")
    names = args.names + (unchecked_mutants(args.unchecked) if args.unchecked else [])
    if not names:
        parser.error("no mutants: name them or give --unchecked MODULE")
    results = recheck(names[:args.limit], tests_by_function() if args.tests_from_stats else args.tests, args.keyword)
    counts = Counter(results.values())
    print(f"{counts['killed']} of {len(results)} killed; " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
