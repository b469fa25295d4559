"""The results book renders a run's own files: every notebook page, every table, every metric."""

import json
import re

import nbformat
import pandas as pd

from helpers import book, reproduce


def _run_folder(tmp_path):
    run = tmp_path / "demo"
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# 05 · Evaluation of a demo\n\nWhy."),
                nbformat.v4.new_code_cell("print(6 * 7)", outputs=[nbformat.v4.new_output(
                    "stream", name="stdout", text="42\n"), nbformat.v4.new_output(
                    "stream", name="stderr", text="I0000 oneDNN custom operations are on\n")], execution_count=1),
                nbformat.v4.new_code_cell("def answer():\n    ### BEGIN SOLUTION\n    return 'the secret 41 + 1'\n"
                                          "    ### END SOLUTION")]
    (run / "notebooks").mkdir(parents=True)
    nbformat.write(nb, run / "notebooks" / "05_evaluation.ipynb")
    (run / "tables").mkdir()
    pd.DataFrame({"model": ["a", "b", "c"], "auc": [0.91234, 0.5, 0.75]}).to_csv(run / "tables" / "table5.csv",
                                                                             index=False)
    pd.DataFrame({"source": ["ffhq"], "fpr": [0.0625]}).to_csv(run / "tables" / "per_source.csv", index=False)
    (run / "metrics").mkdir()
    (run / "metrics" / "m_metrics.json").write_text(json.dumps(
        {"model": "MobileNetV2 demo", "test": {"auc": 0.8765, "auc_ci": [0.8, 0.93], "accuracy": 0.81},
         "threshold": 0.42, "weights": {"source": "local"}}))
    (run / "summary.json").write_text(json.dumps({"profile": "demo", "total_seconds": 12.0,
                                                  "notebooks": {"05_evaluation": 7.0},
                                                  "environment": reproduce.environment_versions()}))
    return run


def test_the_book_renders_every_notebook_table_and_metric(tmp_path):
    run = _run_folder(tmp_path)
    index = book.build_book(run)
    page = index.read_text()
    assert 'href="05_evaluation.html"' in page and "05 · Evaluation of a demo" in page and "7 s" in page
    assert "keras" in page and reproduce.environment_versions()["keras"] in page
    notebook = (index.parent / "05_evaluation.html").read_text()
    assert "Evaluation of a demo" in notebook and "<pre>42\n</pre>" in notebook  # the output, embedded
    assert "oneDNN" not in notebook and "the secret" not in notebook and "not shown in the results book" in notebook
    assert not re.search(r"<script[^>]+src=|https?://cdn", notebook)  # works offline
    assert re.search(r"0\.87[67]", page) and "Headline numbers" in page  # the index shows the headline numbers
    tables = (index.parent / "tables.html").read_text()
    for name, rows in (("table5", 3), ("per_source", 1)):
        block = tables.split(f'id="{name}"')[1].split("<h2")[0]
        assert f"{rows} rows" in block and len(re.findall(r"<tr", block)) == rows + 1  # + the header row
    assert "0.9123" in tables and "0.0625" in tables
    metrics = (index.parent / "metrics.html").read_text()
    assert "MobileNetV2 demo" in metrics and "0.8765" in metrics and "0.93" in metrics and "local" in metrics


def test_a_missing_run_is_a_clear_error(tmp_path):
    import pytest

    with pytest.raises(FileNotFoundError, match="run the series first"):
        book.build_book(tmp_path / "nope")
    # a fresh clone's `make book`: the hint names a command that makes that very run, and what exists
    with pytest.raises(FileNotFoundError, match=r"make reproduce \(or make smoke, then make book RUN=smoke"):
        book.build_book(tmp_path / "sample")
    with pytest.raises(FileNotFoundError, match=r"with make reproduce PROFILE=smoke$"):
        book.build_book(tmp_path / "smoke")
    (tmp_path / "class" / "notebooks").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"runs here: class \(make book RUN=<name>\)"):
        book.build_book(tmp_path / "sample")
    assert book.main(["--run", "sample", "--runs-root", str(tmp_path / "none")]) == 1  # one line, no traceback
