"""Mutation scores per module (and per function) from mutmut's results under ``mutants/``.

Run after ``make mutation`` (which calls ``mutmut run`` on the modules the tests must guard):
``.venv/bin/python benchmarks/mutation_scores.py [--survivors]``. Prints a Markdown table:
mutants killed (a test failed) out of those killed or surviving, per module (timeouts apart); with
``--survivors``, the name of every surviving mutant (``mutmut show NAME`` prints its diff).
Not a test: a benchmark of how much the tests notice.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter, defaultdict
from pathlib import Path

from mutmut.stats import status_by_exit_code

MUTANTS = Path(__file__).resolve().parents[1] / "mutants"
KILLED = {"killed", "caught by type check", "segfault"}
# Timeouts are left out of the score: here they mostly mean a worker that hung, not a test that caught the mutant.
# What the tests must guard (the modules that decide published numbers): whole modules, or the named
# functions of a module.
SCOPE = {"helpers.evaluate": None, "helpers.stats": None, "helpers.splits": None, "helpers.predict": None,
         "helpers.protocols": None, "helpers.served": None, "helpers.perturb": None, "helpers.balance": None,
         "helpers.decoding": None, "helpers.models": ("prepare_finetune",), "helpers.data": None,
         # beyond the statistics: what decides a published number or protects a file
         **{f"helpers.{name}": None for name in (
             "faces", "annotate", "annotation_cache", "storage", "download", "pins", "export", "grid", "explain",
             "embed", "pipeline", "training_cache", "protocol_cache", "features", "inputs", "format_blind",
             "publish")}}


def in_scope(name: str) -> str | None:
    """The row a mutant counts in (``module`` or ``module.function``), or None when out of scope."""
    module, _, rest = name.partition(".x")
    if module not in SCOPE:
        return None
    if SCOPE[module] is None:
        return module
    function = rest.lstrip("_").split("__mutmut_")[0]
    return f"{module}.{function}" if function in SCOPE[module] else None


def statuses() -> dict[str, str]:
    """Mutant name -> status, for every mutant mutmut checked."""
    found = {}
    for meta in MUTANTS.rglob("*.py.meta"):
        module = meta.relative_to(MUTANTS).as_posix().removesuffix(".py.meta").replace("/", ".")
        for key, code in json.loads(meta.read_text()).get("exit_code_by_key", {}).items():
            if code is not None:
                found[key if key.startswith(module) else f"{module}.{key}"] = status_by_exit_code[code]
    return found


def table(found: dict[str, str]) -> str:
    per_module: dict[str, Counter] = defaultdict(Counter)
    for name, status in found.items():
        row = in_scope(name)
        if row:
            per_module[row]["killed" if status in KILLED else status] += 1
    lines = ["| module | killed | survived | score | timeout (undetermined) | no tests reach it |",
             "|---|---:|---:|---:|---:|---:|"]
    for module, counts in sorted(per_module.items()):
        checked = counts["killed"] + counts["survived"]
        score = f"{counts['killed'] / checked:.0%}" if checked else "—"
        lines.append(f"| `{module}` | {counts['killed']} | {counts['survived']} | {score} | {counts['timeout']} | "
                     f"{counts['no tests']} |")
    return "\n".join(lines)


def named(found: dict[str, str], status: str) -> list[str]:
    """The in-scope mutants with ``status``, sorted by name."""
    return sorted(name for name, s in found.items() if s == status and in_scope(name))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--survivors", action="store_true", help="list the surviving mutants too")
    parser.add_argument("--status", help='list only the in-scope mutants with this status (e.g. "no tests"), no table')
    args = parser.parse_args()
    found = statuses()
    if args.status:
        print("\n".join(named(found, args.status)))
        return
    print(table(found))
    if args.survivors:
        print("\n".join(named(found, "survived")))


if __name__ == "__main__":
    main()
