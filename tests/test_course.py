"""Course-lab kit: the student release and the grader (helpers.course)."""
from __future__ import annotations

import copy

import nbformat
import pandas as pd
import pytest

from helpers import course

NOTEBOOKS = sorted(course.NOTEBOOKS_DIR.glob("*.ipynb"))


def _source(path):
    return nbformat.read(path, as_version=4)


def _filled_in(student: nbformat.NotebookNode, source: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A student notebook with the source's answers typed into its solution cells."""
    answers = {c.metadata.nbgrader["grade_id"]: c.source for c in source.cells
               if c.metadata.get("nbgrader", {}).get("solution")}
    filled = copy.deepcopy(student)
    for cell in filled.cells:
        grading = cell.metadata.get("nbgrader", {})
        if grading.get("solution"):
            cell.source = answers[grading["grade_id"]]
    return filled


def test_every_teaching_notebook_has_exercises_and_04_has_none():
    counts = {p.name[:2]: len(course.exercises(_source(p))) for p in NOTEBOOKS}
    assert counts.pop("04") == 0  # 04 repeats 03's lesson on ResNet50; its questions are in course/README.md
    assert all(1 <= n <= 3 for n in counts.values()), counts


def test_release_removes_solutions_and_hidden_tests_and_leaves_the_rest(tmp_path):
    table = course.make_release(course.NOTEBOOKS_DIR, tmp_path)
    assert sorted(p.name for p in tmp_path.glob("*.ipynb")) == [p.name for p in NOTEBOOKS]
    assert table.points.sum() == sum(e.points for p in NOTEBOOKS for e in course.exercises(_source(p)))
    for path in NOTEBOOKS:
        source, student = _source(path), nbformat.read(tmp_path / path.name, as_version=4)
        assert len(source.cells) == len(student.cells)
        for before, after in zip(source.cells, student.cells):
            grading = before.metadata.get("nbgrader", {})
            assert "BEGIN SOLUTION" not in after.source and "HIDDEN TESTS" not in after.source
            if grading.get("solution"):
                assert "### BEGIN SOLUTION" in before.source
                assert "raise NotImplementedError()" in after.source
                # the function's signature and docstring stay, only the answer goes
                assert after.source.split("\n")[0] == before.source.split("\n")[0]
            elif grading.get("grade"):
                assert after.metadata.nbgrader["locked"] and after.metadata.nbgrader["checksum"]
                visible = before.source.split("### BEGIN HIDDEN TESTS")[0]
                assert after.source.startswith(visible.rstrip()) and len(after.source) < len(before.source)
            else:
                assert after.source == before.source  # the research notebook is otherwise untouched


def test_grading_notebook_restores_check_cells_from_the_source(tmp_path):
    path = course.NOTEBOOKS_DIR / "05_evaluation.ipynb"
    source = _source(path)
    student = course.release_notebook(source)
    for cell in student.cells:
        if course.is_check_cell(cell):
            cell.source = "pass  # the student deleted the asserts"
    grading = course.grading_notebook(student, source)
    checks = [c for c in grading.cells if course.is_check_cell(c)]
    originals = [c for c in source.cells if course.is_check_cell(c)]
    assert [c.source for c in checks] == [c.source for c in originals]   # hidden tests back, edits undone
    assert all("### BEGIN HIDDEN TESTS" in c.source for c in checks)
    # a deleted check cell comes back too; non-exercise cells are not run
    student.cells = [c for c in student.cells if not course.is_check_cell(c)]
    grading = course.grading_notebook(student, source)
    assert [c.source for c in grading.cells if course.is_check_cell(c)] == [c.source for c in originals]
    assert not any("evaluate_run_models" in c.source for c in grading.cells)


def test_autograde_full_marks_for_the_solutions_zero_for_the_blank_release(tmp_path):
    release = tmp_path / "release"
    course.make_release(course.NOTEBOOKS_DIR, release)
    submitted = tmp_path / "submitted"
    for student in ("solved", "blank", "wrong"):
        (submitted / student).mkdir(parents=True)
    for path in NOTEBOOKS:
        if not course.exercises(_source(path)):
            continue
        student = nbformat.read(release / path.name, as_version=4)
        nbformat.write(student, submitted / "blank" / path.name)
        nbformat.write(_filled_in(student, _source(path)), submitted / "solved" / path.name)
    # "wrong": the accuracy rule instead of Youden's J, and a notebook file that is not a notebook
    wrong = _filled_in(nbformat.read(release / "05_evaluation.ipynb", as_version=4),
                       _source(course.NOTEBOOKS_DIR / "05_evaluation.ipynb"))
    for cell in wrong.cells:
        if cell.metadata.get("nbgrader", {}).get("solution"):
            cell.source = ("from helpers import stats\n\ndef youden_threshold(y_true, scores):\n"
                           "    return stats.choose_threshold(y_true, scores, method='accuracy')\n")
    nbformat.write(wrong, submitted / "wrong" / "05_evaluation.ipynb")
    (submitted / "wrong" / "01_data_collection.ipynb").write_text("{not json")

    out = tmp_path / "grades.csv"
    assert course.main(["autograde", str(submitted), "--out", str(out)]) == 0
    grades = pd.read_csv(out)
    expected = {(p.name, e.grade_id, e.points) for p in NOTEBOOKS for e in course.exercises(_source(p))}
    for name in ("solved", "blank"):
        mine = grades[grades.student == name]
        assert set(zip(mine.notebook, mine.exercise, mine.max_points)) == expected
    solved, blank = grades[grades.student == "solved"], grades[grades.student == "blank"]
    assert (solved.points == solved.max_points).all(), solved[solved.points < solved.max_points]
    assert (solved.status == "passed").all()
    assert (blank.points == 0).all() and blank.status.str.startswith("NotImplementedError").all()
    wrong_rows = grades[grades.student == "wrong"].set_index("notebook")
    assert wrong_rows.loc["05_evaluation.ipynb", "points"] == 0
    assert wrong_rows.loc["05_evaluation.ipynb", "status"].startswith("AssertionError")
    assert wrong_rows.loc["01_data_collection.ipynb", "points"] == 0
    assert wrong_rows.loc["01_data_collection.ipynb", "status"].startswith("unreadable notebook")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name[:2])
def test_solutions_sit_between_markers_and_checks_carry_hidden_tests(path):
    for cell in _source(path).cells:
        grading = cell.metadata.get("nbgrader", {})
        if grading.get("solution"):
            assert cell.source.count("### BEGIN SOLUTION") == cell.source.count("### END SOLUTION") == 1
        if course.is_check_cell(cell):
            assert cell.source.count("### BEGIN HIDDEN TESTS") == cell.source.count("### END HIDDEN TESTS") == 1
            assert grading["points"] > 0 and grading["grade_id"].endswith("_check")
