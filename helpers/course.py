"""Course-lab kit: the student release of the notebooks and a grader for submitted ones.

The exercises live in the research notebooks themselves, marked the nbgrader way: a solution
cell (``nbgrader.solution``) holds the answer between ``### BEGIN SOLUTION`` and
``### END SOLUTION``; a check cell (``nbgrader.grade``, with ``points``) holds visible asserts and,
between ``### BEGIN HIDDEN TESTS`` and ``### END HIDDEN TESTS``, the hidden ones. Papermill runs
the research notebooks with the solutions in place, so every smoke run also checks the solutions
against the ``helpers`` implementations they mirror.

* :func:`make_release` applies nbgrader's own preprocessors (solutions replaced by
  ``raise NotImplementedError()``, hidden tests removed, check cells locked, checksums, outputs
  cleared) and writes ``course/release/``.
* :func:`autograde` grades submitted notebooks the way nbgrader's ``autograde`` does (check cells
  restored from the source so hidden tests come back and edited asserts do not count; a check cell
  scores its points when it runs without an error; nbgrader's ``determine_grade``, except that
  text on stderr, where TensorFlow logs at import, costs nothing), but it runs only the exercise
  cells, which are self-contained by design, and the student's cells that only import
  (:data:`GRADING_RULE`, stated in every exercise's cell), instead of the whole notebook: grading a
  notebook takes seconds, not the minutes-to-hours of re-running the training pipeline, and no
  course database is needed. Teachers who want nbgrader's formgrader can point it at the same
  notebooks: the metadata is nbgrader's.

In the release, exercise and check cells carry the ``raises-exception`` tag, so "Run all" goes on
past an unfinished exercise (reported in its cell) to the end of the notebook; the Colab badge,
which opens the research notebook with its solutions, is replaced by how to open the release.

Command line: ``python -m helpers.course release`` and
``python -m helpers.course autograde course/submitted --out course/grades.csv``.
"""
from __future__ import annotations

import argparse
import copy
import sys
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pandas as pd

from helpers import atomic
from helpers.config import REPO_ROOT

NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
COURSE_DIR = REPO_ROOT / "course"
GRADE_COLUMNS = ["student", "notebook", "exercise", "points", "max_points", "status"]
GRADING_RULE = ("# Graded on its own: this cell, the check below and your cells that only import (import ...,\n"
                "# from ... import ...) run in a fresh kernel; define here anything else your answer needs.\n")
RELEASE_BADGE = ("*Student release: open it in Colab with File → Upload notebook, or in Jupyter. The badge of the "
                 "research notebook opens the version with the solutions.*")
_KERNEL_PRELUDE = ("import os, warnings\nwarnings.filterwarnings('ignore')\n"
                   "os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')")


def _grading(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {}) or {}


def is_check_cell(cell) -> bool:
    """A cell whose points are earned by running without an error."""
    return bool(_grading(cell).get("grade")) and not _grading(cell).get("solution")


def is_exercise_cell(cell) -> bool:
    """A solution cell or a check cell (what the grader runs)."""
    return bool(_grading(cell).get("solution") or _grading(cell).get("grade"))


@dataclass(frozen=True)
class Exercise:
    """One graded exercise of a notebook: its check cell's id and points."""
    grade_id: str
    points: float


def only_imports(source: str) -> bool:
    """True for code that is nothing but import statements (and comments): what the grader runs of the
    student's own cells."""
    import ast

    try:
        body = ast.parse(source).body
    except SyntaxError:
        return False
    return bool(body) and all(isinstance(node, (ast.Import, ast.ImportFrom)) for node in body)


def exercises(notebook: nbformat.NotebookNode) -> list[Exercise]:
    """The graded exercises (check cells) of a notebook, in order."""
    return [Exercise(_grading(c)["grade_id"], float(_grading(c)["points"]))
            for c in notebook.cells if is_check_cell(c)]


def release_notebook(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The student version of a source notebook, made by nbgrader's preprocessors."""
    from nbgrader.preprocessors import (
        CheckCellMetadata,
        ClearHiddenTests,
        ClearMarkScheme,
        ClearOutput,
        ClearSolutions,
        ComputeChecksums,
        LockCells,
    )

    student = copy.deepcopy(notebook)
    resources: dict = {}
    for step in (CheckCellMetadata(), LockCells(), ClearSolutions(), ClearOutput(), ClearHiddenTests(),
                 ClearMarkScheme(), ComputeChecksums(), CheckCellMetadata()):
        student, resources = step.preprocess(student, resources)
    for cell in student.cells:
        if is_exercise_cell(cell):  # "Run all" reports an unfinished exercise and goes on
            tags = cell.metadata.setdefault("tags", [])
            if "raises-exception" not in tags:
                tags.append("raises-exception")
        elif cell.cell_type == "markdown" and "colab.research.google.com/github/" in cell.source:
            cell.source = _without_badge(cell.source)
    return student


def _without_badge(markdown: str) -> str:
    """A markdown cell with its Colab badge (which opens the research notebook) replaced by :data:`RELEASE_BADGE`."""
    import re

    return re.sub(r"\[!\[Open In Colab\]\([^)]*\)\]\(https://colab\.research\.google\.com/github/[^)]*\)",
                  RELEASE_BADGE, markdown)


def make_release(source_dir: str | Path = NOTEBOOKS_DIR, out_dir: str | Path = COURSE_DIR / "release") -> pd.DataFrame:
    """Write the student release of every notebook of ``source_dir``; returns its exercises and points."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for path in sorted(Path(source_dir).glob("*.ipynb")):
        notebook = nbformat.read(path, as_version=4)
        target = out / path.name
        atomic.write_text(target, nbformat.writes(release_notebook(notebook)) + "\n")
        rows += [dict(notebook=path.name, exercise=e.grade_id, points=e.points) for e in exercises(notebook)]
    return pd.DataFrame(rows, columns=["notebook", "exercise", "points"])


def grading_notebook(submitted: nbformat.NotebookNode, source: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The cells the grader runs: the student's exercise cells and the code cells that only import
    (:data:`GRADING_RULE`), in the notebook's order, with every check cell taken from the source
    (hidden tests restored, edits undone; a deleted one put back at the end)."""
    checks = {_grading(c)["grade_id"]: c for c in source.cells if is_check_cell(c)}
    cells, seen = [nbformat.v4.new_code_cell(_KERNEL_PRELUDE)], set()
    for cell in submitted.cells:
        if cell.cell_type != "code":
            continue
        if not is_exercise_cell(cell):
            if only_imports(cell.source):
                cells.append(copy.deepcopy(cell))
            continue
        grade_id = _grading(cell).get("grade_id")
        if is_check_cell(cell) and grade_id in checks:
            cell = copy.deepcopy(checks[grade_id])
            seen.add(grade_id)
        elif is_check_cell(cell):
            continue                                   # a check the source does not have: not graded
        cells.append(copy.deepcopy(cell))
    cells += [copy.deepcopy(c) for g, c in checks.items() if g not in seen]
    for cell in cells:
        cell.outputs, cell.execution_count = [], None
    grading = nbformat.v4.new_notebook(cells=cells, metadata=copy.deepcopy(source.metadata))
    nbformat.validator.normalize(grading)
    return grading


def _without_stderr(cell):
    """The cell without its stderr text: TensorFlow's C++ logging writes there when it is first
    imported, which nbgrader's rule would count as a failed test. An error still costs the points."""
    kept = copy.deepcopy(cell)
    kept.outputs = [o for o in kept.outputs if not (o.get("output_type") == "stream" and o.get("name") == "stderr")]
    return kept


def _status(cell, points: float) -> str:
    for output in cell.get("outputs", []):
        if output.get("output_type") == "error":
            return f"{output.get('ename', 'Error')}: {output.get('evalue', '')}"[:200]
    return "passed" if points > 0 else "no points"


def grade_notebook(submitted_path: str | Path, source_path: str | Path, timeout: int = 300) -> list[dict]:
    """Run a submitted notebook's exercise cells and score each check cell (nbgrader's rule)."""
    from nbclient import NotebookClient
    from nbgrader.utils import determine_grade

    source = nbformat.read(source_path, as_version=4)
    try:
        submitted = nbformat.read(submitted_path, as_version=4)
    except Exception as error:  # unreadable submission: zero for every exercise, with the reason
        return [dict(notebook=Path(source_path).name, exercise=e.grade_id, points=0.0, max_points=e.points,
                     status=f"unreadable notebook: {error}"[:200]) for e in exercises(source)]
    grading = grading_notebook(submitted, source)
    NotebookClient(grading, timeout=timeout, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(Path(submitted_path).parent)}}).execute()
    rows = []
    for cell in grading.cells:
        if is_check_cell(cell):
            points, max_points = determine_grade(_without_stderr(cell))
            points = float(points or 0.0)
            rows.append(dict(notebook=Path(source_path).name, exercise=_grading(cell)["grade_id"],
                             points=points, max_points=float(max_points), status=_status(cell, points)))
    return rows


def autograde(submitted_dir: str | Path, source_dir: str | Path = NOTEBOOKS_DIR,
              out_csv: str | Path | None = None, timeout: int = 300) -> pd.DataFrame:
    """Grade ``submitted_dir/<student>/<notebook>.ipynb`` against the source notebooks.

    Every exercise of every notebook a student submitted gets a row (points, max points and why
    points were lost); a missing notebook is not graded. Writes ``out_csv`` when given.
    """
    rows = []
    for student_dir in sorted(p for p in Path(submitted_dir).iterdir() if p.is_dir()):
        for path in sorted(student_dir.glob("*.ipynb")):
            source = Path(source_dir) / path.name
            if not source.exists():
                print(f"{student_dir.name}/{path.name}: no source notebook of that name, not graded", file=sys.stderr)
                continue
            rows += [dict(student=student_dir.name, **row) for row in grade_notebook(path, source, timeout)]
    grades = pd.DataFrame(rows, columns=GRADE_COLUMNS)
    if out_csv:
        Path(out_csv).parent.mkdir(parents=True, exist_ok=True)
        atomic.write_csv(out_csv, grades)
    return grades


def class_run_summary(run_dir: str | Path) -> str:
    """The course's numbers, as Markdown, from a finished ``class`` run (``helpers.reproduce``'s
    ``summary.json``, the metrics and notebook 07's cluster purity): when and where it ran, seconds
    per notebook, each model's test AUC with its 95% interval, and the cluster purity. Nothing typed."""
    import json

    run_dir = Path(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    environment = summary.get("environment", {})
    lines = [f"Class run `{summary['run']}` (profile `{summary['profile']}`), finished {summary['finished']} on "
             f"{environment.get('cpu_count', '?')} CPU cores ({environment.get('platform', 'unknown platform')}), "
             f"TensorFlow {environment.get('tensorflow-cpu', environment.get('tensorflow', '?'))}. Generated by "
             "`python -m helpers.course class-summary` from the run's own files.", "",
             "| notebook | " + " | ".join(name[:2] for name in summary["notebooks"]) + " | all |",
             "|---|" + "---:|" * (len(summary["notebooks"]) + 1),
             "| seconds | " + " | ".join(f"{seconds:.0f}" for seconds in summary["notebooks"].values())
             + f" | {summary['total_seconds']:.0f} |", "",
             "| model | test AUC [95% CI] | test accuracy |", "|---|---|---:|"]
    for model, headline in summary["headline"].items():
        low, high = headline.get("test_auc_ci") or (float("nan"), float("nan"))
        lines.append(f"| {model} | {headline['test_auc']:.3f} [{low:.3f}, {high:.3f}] | "
                     f"{headline['test_accuracy']:.3f} |")
    for path in sorted((run_dir / "tables").glob("cluster_purity_*.csv")):
        purity = pd.read_csv(path)
        lines += ["", f"Cluster purity ({path.stem.removeprefix('cluster_purity_')}, notebook 07):", "",
                  purity.round(3).to_markdown(index=False)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.course", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    release = commands.add_parser("release", help="write the student release (solutions and hidden tests removed)")
    release.add_argument("--source", default=str(NOTEBOOKS_DIR))
    release.add_argument("--out", default=str(COURSE_DIR / "release"))
    grade = commands.add_parser("autograde", help="grade submitted/<student>/<notebook>.ipynb; write a CSV")
    grade.add_argument("submitted")
    grade.add_argument("--source", default=str(NOTEBOOKS_DIR))
    grade.add_argument("--out", default=str(COURSE_DIR / "grades.csv"))
    grade.add_argument("--timeout", type=int, default=300, help="seconds per cell")
    summary = commands.add_parser("class-summary", help="write the course's numbers from a finished class run")
    summary.add_argument("--run", default="class", help="run name under the runs folder")
    summary.add_argument("--runs-root", default=None)
    summary.add_argument("--out", default=str(COURSE_DIR / "class_run.md"))
    args = parser.parse_args(argv)
    if args.command == "class-summary":
        from helpers import config

        root = Path(args.runs_root) if args.runs_root else config.default_runs_root()
        atomic.write_text(args.out, class_run_summary(root / args.run))
        print(f"wrote {args.out}")
        return 0
    if args.command == "release":
        table = make_release(args.source, args.out)
        print(f"student release in {args.out}: {len(table)} exercises, {table.points.sum():g} points")
        print(table.groupby("notebook").points.agg(["count", "sum"]).to_string())
    else:
        grades = autograde(args.submitted, args.source, args.out, args.timeout)
        print(f"grades in {args.out}")
        if len(grades):
            print(grades.groupby("student")[["points", "max_points"]].sum().to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
