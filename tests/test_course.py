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
            elif "colab.research.google.com/github/" in before.source:
                assert course.RELEASE_BADGE in after.source and "colab.research.google.com/github/" not in after.source
            else:
                assert after.source == before.source  # the research notebook is otherwise untouched
            if course.is_exercise_cell(before):  # "Run all" goes on past an unfinished exercise
                assert "raises-exception" in after.metadata.get("tags", [])


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
        nbformat.write(_filled_in(student, _source(path)), submitted / "solved" / path.name)
    # "blank": one unfinished notebook through the grader (every released answer raises NotImplementedError,
    # test_release_removes_solutions_and_hidden_tests_and_leaves_the_rest; a kernel per notebook would add nothing)
    nbformat.write(nbformat.read(release / "08_generalization_and_robustness.ipynb", as_version=4),
                   submitted / "blank" / "08_generalization_and_robustness.ipynb")
    # "wrong": the accuracy rule instead of Youden's J, and a notebook file that is not a notebook
    wrong = _filled_in(nbformat.read(release / "05_evaluation.ipynb", as_version=4),
                       _source(course.NOTEBOOKS_DIR / "05_evaluation.ipynb"))
    for cell in wrong.cells:
        if cell.metadata.get("nbgrader", {}).get("solution"):
            cell.source = ("from helpers import stats\n\ndef youden_threshold(y_true, scores):\n"
                           "    return stats.choose_threshold(y_true, scores, method='accuracy')\n")
    nbformat.write(wrong, submitted / "wrong" / "05_evaluation.ipynb")
    # "own_import": a correct answer whose import sits in a cell the student added above it, plus an
    # added cell that does more than import (not run: it would fail the answer if it were)
    mine = _filled_in(nbformat.read(release / "05_evaluation.ipynb", as_version=4),
                      _source(course.NOTEBOOKS_DIR / "05_evaluation.ipynb"))
    at = next(i for i, c in enumerate(mine.cells) if c.metadata.get("nbgrader", {}).get("solution"))
    mine.cells[at].source = mine.cells[at].source.replace("import numpy as np\n", "")
    assert "import numpy" not in mine.cells[at].source
    mine.cells.insert(at, nbformat.v4.new_code_cell("# my imports\nimport numpy as np"))
    mine.cells.insert(at, nbformat.v4.new_code_cell("import numpy as np\nnp = None  # not only imports: not run"))
    (submitted / "own_import").mkdir()
    nbformat.write(mine, submitted / "own_import" / "05_evaluation.ipynb")
    (submitted / "wrong" / "01_data_collection.ipynb").write_text("{not json")

    out = tmp_path / "grades.csv"
    assert course.main(["autograde", str(submitted), "--out", str(out)]) == 0
    grades = pd.read_csv(out)
    expected = {(p.name, e.grade_id, e.points) for p in NOTEBOOKS for e in course.exercises(_source(p))}
    solved, blank = grades[grades.student == "solved"], grades[grades.student == "blank"]
    assert set(zip(solved.notebook, solved.exercise, solved.max_points)) == expected
    assert set(zip(blank.notebook, blank.exercise, blank.max_points)) == {
        row for row in expected if row[0] == "08_generalization_and_robustness.ipynb"} and len(blank) == 2
    assert (solved.points == solved.max_points).all(), solved[solved.points < solved.max_points]
    assert (solved.status == "passed").all()
    assert (blank.points == 0).all() and blank.status.str.startswith("NotImplementedError").all()
    wrong_rows = grades[grades.student == "wrong"].set_index("notebook")
    assert wrong_rows.loc["05_evaluation.ipynb", "points"] == 0
    assert wrong_rows.loc["05_evaluation.ipynb", "status"].startswith("AssertionError")
    assert wrong_rows.loc["01_data_collection.ipynb", "points"] == 0
    assert wrong_rows.loc["01_data_collection.ipynb", "status"].startswith("unreadable notebook")
    own = grades[grades.student == "own_import"]
    assert len(own) == 1 and (own.points == own.max_points).all() and (own.status == "passed").all(), own


def test_every_exercise_states_the_grading_rule_and_the_grader_follows_it():
    for path in NOTEBOOKS:
        for cell in _source(path).cells:
            if cell.metadata.get("nbgrader", {}).get("solution"):
                assert cell.source.startswith(course.GRADING_RULE), path.name
    assert course.only_imports("import numpy as np\nfrom helpers import stats  # mine")
    for code in ("import numpy as np\nnp = None", "", "%matplotlib inline", "def f():\n    import os"):
        assert not course.only_imports(code), code


def test_run_all_on_a_release_notebook_reaches_the_end(tmp_path):
    """An unfinished exercise fails in its check cell, reported there, and execution goes on to the end."""
    from nbclient import NotebookClient

    grading = {"schema_version": 3, "task": False, "locked": False}
    solution = nbformat.v4.new_code_cell(course.GRADING_RULE + "def double(x):\n    ### BEGIN SOLUTION\n"
                                         "    return 2 * x\n    ### END SOLUTION",
                                         metadata={"nbgrader": {**grading, "solution": True, "grade": False,
                                                                "grade_id": "ex_double"}})
    check = nbformat.v4.new_code_cell("assert double(2) == 4",
                                      metadata={"nbgrader": {**grading, "solution": False, "grade": True,
                                                             "grade_id": "ex_double_check", "points": 1,
                                                             "locked": True}})
    last = nbformat.v4.new_code_cell("reached = 'the end'\nprint(reached)")
    source = nbformat.v4.new_notebook(cells=[solution, check, last],
                                      metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                               "language": "python"}})
    student = course.release_notebook(source)
    NotebookClient(student, timeout=60, kernel_name="python3").execute()  # no allow_errors: the tags decide
    assert "raise NotImplementedError()" in student.cells[0].source
    assert student.cells[1].outputs[-1]["ename"] == "NotImplementedError"  # the check calls the unfinished answer
    assert student.cells[2].outputs[0]["text"].strip() == "the end"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name[:2])
def test_solutions_sit_between_markers_and_checks_carry_hidden_tests(path):
    for cell in _source(path).cells:
        grading = cell.metadata.get("nbgrader", {})
        if grading.get("solution"):
            assert cell.source.count("### BEGIN SOLUTION") == cell.source.count("### END SOLUTION") == 1
        if course.is_check_cell(cell):
            assert cell.source.count("### BEGIN HIDDEN TESTS") == cell.source.count("### END HIDDEN TESTS") == 1
            assert grading["points"] > 0 and grading["grade_id"].endswith("_check")
