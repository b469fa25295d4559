"""The results book of a run: a static site rendered from what the run wrote, offline.

``python -m helpers.book --run sample`` (or ``make book RUN=sample``) turns ``runs/<run>/`` into
``runs/<run>/book/``:

- ``index.html``: the run (profile, date, time per notebook from ``summary.json``), the
  environment the numbers came from (Python, TensorFlow, Keras, NumPy, … recorded by
  :mod:`helpers.reproduce`), links to every page;
- the headline numbers and the key figures of the run;
- one page per executed notebook (``notebooks/*.ipynb``, rendered by nbconvert with its
  outputs and figures embedded, nothing loaded from the network; TensorFlow's stderr lines and
  the exercises' solutions are left out);
- ``tables.html``: every ``tables/*.csv`` as an HTML table; ``metrics.html``: the headline of
  every ``metrics/*.json`` (test AUC with its CI, accuracy, threshold, weights).

Every number comes from the run's files: nothing is typed by hand. A plain static site (nbconvert
and pandas) rather than a Jupyter Book: it builds in seconds, offline, with what the lab already
installs, and the results are the run's tables rather than prose.
"""

from __future__ import annotations

import argparse
import html
import json
import sys
from pathlib import Path

import pandas as pd

from helpers import atomic, config

STYLE = """<style>
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: right; }
th { background: #f3f3f3; } nav a { margin-right: 1em; }
</style>"""


def _page(title: str, body: str) -> str:
    nav = '<nav><a href="index.html">run</a><a href="tables.html">tables</a><a href="metrics.html">metrics</a></nav>'
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>{STYLE}</head>"
            f"<body>{nav}<h1>{html.escape(title)}</h1>{body}</body></html>")


def notebook_title(path: Path) -> str:
    """The first Markdown heading of an executed notebook (or its file name)."""
    import nbformat

    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type == "markdown" and cell.source.lstrip().startswith("# "):
            return cell.source.lstrip()[2:].splitlines()[0].strip()
    return path.stem


SOLUTION_HIDDEN = "    # (the exercise's solution is not shown in the results book)"
KEY_FIGURES = ("05_roc_pr.png", "05_per_source.png", "08_leave_one_generator_out.png",
               "08_leave_one_real_source_out.png", "08_robustness.png", "07_umap_hdbscan.png")


def book_notebook(path: Path):
    """An executed notebook as the book shows it: no stderr streams (TensorFlow's log lines), and each
    exercise's solution replaced by a line saying it is not shown."""
    import re

    import nbformat

    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        cell.outputs = [o for o in cell.outputs if not (o.get("output_type") == "stream" and o.get("name") == "stderr")]
        if "### BEGIN SOLUTION" in cell.source:
            cell.source = re.sub(r"[ \t]*### BEGIN SOLUTION.*?### END SOLUTION", SOLUTION_HIDDEN, cell.source,
                                 flags=re.S)
    return notebook


def render_notebook(path: Path, out: Path) -> Path:
    """An executed notebook as a standalone HTML page that works offline: nbconvert's ``basic`` template
    (no MathJax or require.js from a CDN) inside the book's own page, outputs and figures embedded."""
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter(template_name="basic").from_notebook_node(book_notebook(path))
    target = out / f"{path.stem}.html"
    atomic.write_text(target, _page(notebook_title(path), body))
    return target


def tables_page(run_dir: Path) -> str:
    """Every CSV table of the run, each under its own anchor (its file name)."""
    sections = []
    for path in sorted((run_dir / "tables").glob("*.csv")):
        table = pd.read_csv(path, keep_default_na=False)
        sections.append(f'<h2 id="{path.stem}">{html.escape(path.stem)}</h2>'
                        f"<p>{len(table)} rows, from <code>tables/{path.name}</code></p>"
                        + table.to_html(index=False, float_format=lambda v: f"{v:.4g}", border=0,
                                        classes="run-table", table_id=f"table-{path.stem}"))
    return "".join(sections) or "<p>This run wrote no tables.</p>"


def metrics_frame(run_dir: Path) -> pd.DataFrame:
    """One row per ``metrics/*.json``: model, test AUC and its CI, accuracy, threshold, weights."""
    rows = []
    for path in sorted((run_dir / "metrics").glob("*_metrics.json")):
        data = json.loads(path.read_text())
        test = data.get("test", {})
        ci = test.get("auc_ci") or [None, None]
        rows.append(dict(file=path.name, model=data.get("model", path.stem), test_auc=test.get("auc"),
                         auc_ci_low=ci[0], auc_ci_high=ci[1], test_accuracy=test.get("accuracy"),
                         threshold=data.get("threshold"),
                         weights=(data.get("weights") or {}).get("source") or "not recorded"))
    return pd.DataFrame(rows)


def index_page(run_dir: Path, notebook_pages: list[tuple[str, str]]) -> str:
    """The run's summary, its environment and links to every page."""
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    parts = [f"<p>Run folder <code>{html.escape(str(run_dir))}</code>; profile "
             f"<b>{html.escape(str(summary.get('profile', 'unknown')))}</b>"
             + (f", finished {html.escape(summary['finished'])}" if summary.get("finished") else "")
             + (f", {summary['total_seconds']:.0f} s in all" if summary.get("total_seconds") else "") + ".</p>"]
    seconds = summary.get("notebooks", {})
    items = "".join(f'<li><a href="{stem}.html">{html.escape(title)}</a>'
                    + (f" — {seconds[stem]:.0f} s" if stem in seconds else "") + "</li>"
                    for stem, title in notebook_pages)
    metrics = metrics_frame(run_dir)
    if len(metrics):
        headline = metrics[["model", "test_auc", "auc_ci_low", "auc_ci_high", "test_accuracy", "weights"]]
        parts.append("<h2>Headline numbers (test split)</h2>"
                     + headline.to_html(index=False, float_format=lambda v: f"{v:.3f}", border=0))
    figures = [name for name in KEY_FIGURES if (run_dir / "figures" / name).is_file()]
    if figures:
        import base64

        images = "".join(f'<figure><img style="max-width:100%" alt="{name}" src="data:image/png;base64,'
                         f'{base64.b64encode((run_dir / "figures" / name).read_bytes()).decode()}">'
                         f"<figcaption>{name}</figcaption></figure>" for name in figures)
        parts.append(f"<h2>Key figures</h2>{images}")
    parts.append(f"<h2>Notebooks</h2><ol>{items}</ol>")
    parts.append('<h2>Results</h2><ul><li><a href="tables.html">every table of the run</a></li>'
                 '<li><a href="metrics.html">every model\'s headline metrics</a></li></ul>')
    environment = summary.get("environment")
    if environment:
        rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
                       for k, v in environment.items())
        parts.append(f"<h2>Environment of these numbers</h2><table>{rows}</table>")
    else:
        parts.append("<h2>Environment of these numbers</h2><p>not recorded (run through "
                     "<code>python -m helpers.reproduce</code> to record it)</p>")
    return _page(f"Results book: {run_dir.name}", "".join(parts))


def build_book(run_dir: str | Path, out_dir: str | Path | None = None) -> Path:
    """Render ``run_dir`` into a static site (default ``run_dir/book``); returns its ``index.html``."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        done = sorted(p.name for p in run_dir.parent.glob("*") if (p / "notebooks").is_dir()) \
            if run_dir.parent.is_dir() else []
        profile = run_dir.name if run_dir.name in ("smoke", "sample", "full", "class") else "sample"
        hint = (f"make reproduce PROFILE={profile}" if profile != "sample" else "make reproduce") + \
            (" (or make smoke, then make book RUN=smoke: minutes)" if run_dir.name != "smoke" else "")
        have = f"; runs here: {', '.join(done)} (make book RUN=<name>)" if done else ""
        raise FileNotFoundError(f"{run_dir} not found: run the series first with {hint}{have}")
    out = Path(out_dir) if out_dir else run_dir / "book"
    out.mkdir(parents=True, exist_ok=True)
    notebook_pages = []
    for path in sorted((run_dir / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        render_notebook(path, out)
        notebook_pages.append((path.stem, notebook_title(path)))
    atomic.write_text(out / "tables.html", _page(f"Tables: {run_dir.name}", tables_page(run_dir)))
    metrics = metrics_frame(run_dir)
    body = metrics.to_html(index=False, float_format=lambda v: f"{v:.4g}", border=0) if len(metrics) else \
        "<p>This run wrote no metrics.</p>"
    atomic.write_text(out / "metrics.html", _page(f"Metrics: {run_dir.name}", body))
    index = out / "index.html"
    atomic.write_text(index, index_page(run_dir, notebook_pages))
    return index


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Render a run's notebooks, tables and metrics as a static site")
    parser.add_argument("--run", default="sample", help="run name under the runs folder")
    parser.add_argument("--runs-root", default=None, help="runs folder (default: runs/ or $FAKEFACE_RUNS)")
    parser.add_argument("--out", default=None, help="output folder (default: runs/<run>/book)")
    args = parser.parse_args(argv)
    root = Path(args.runs_root) if args.runs_root else config.default_runs_root()
    try:
        print(build_book(root / args.run, args.out))
    except FileNotFoundError as missing:
        print(f"make book: {missing}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
