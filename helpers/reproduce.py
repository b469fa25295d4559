"""Run the notebook series with papermill: ``python -m helpers.reproduce --profile sample``.

Each profile (``helpers/profiles/<name>.yml``) gives common parameters, per-notebook
parameters and, optionally, ``environment:`` variables for the notebooks' kernels. Executed
copies go to ``runs/<run>/notebooks/``; the run stops at the first failing notebook and names it
and the failing cell; a summary (time per notebook and the headline metrics) is printed and
written to ``runs/<run>/summary.json``.

``--jobs 2`` runs two notebooks at once, each in its own process, where the series allows it
(:data:`NEEDS`: a notebook starts once the notebooks whose outputs it reads have finished), so a
notebook that leaves a core idle (face detection, bootstrap intervals, plotting) lends it to one
that trains. A profile's ``priority:`` names notebooks a free worker starts first when several are
ready (the longest chain first); the others follow in series order. Each notebook's outputs are
the same as in a run one at a time.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Executor, ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

from helpers import atomic, config, training_cache
from helpers.config import REPO_ROOT

PROFILES_DIR = Path(__file__).resolve().parent / "profiles"
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
# notebook number -> the numbers of the notebooks whose outputs it reads (run folder, models, metrics):
# every path of helpers.colab.needed_paths, plus annotations.csv, which 05 and 08 read when it exists
NEEDS = {"01": (), "02": ("01",), "03": ("01",), "04": ("01",), "05": ("01", "02", "03", "04"),
         "06": ("01", "05"), "07": ("01", "05"), "08": ("01", "02"), "09": ("01",)}


class NotebookFailed(RuntimeError):
    """A notebook of the series failed; the message names the notebook and the cell."""


@dataclass
class NotebookRun:
    notebook: str
    seconds: float
    output: Path


def load_profile(name_or_path: str) -> dict:
    """Read a profile by name (``smoke``, ``sample``, ``full``) or from a YAML path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PROFILES_DIR / f"{name_or_path}.yml"
    if not path.is_file():
        known = sorted(p.stem for p in PROFILES_DIR.glob("*.yml"))
        raise FileNotFoundError(f"no profile {name_or_path!r}; known profiles: {known}")
    profile = yaml.safe_load(path.read_text())
    profile.setdefault("common", {})
    profile.setdefault("notebooks", {})
    return profile


PARAMETER_TAGS = ("advanced", "parameters")  # a notebook's advanced settings cell, then its parameters cell


def declared_parameters(notebook: Path) -> dict[str, str]:
    """The parameters ``notebook`` declares, each with the source text of its default
    (``{"n_boot": "1000", ...}``): every top-level assignment to one name, in order, of its cell tagged
    ``advanced`` (recipes and lists the profiles set; it comes before the parameters cell, so papermill's
    injected values, placed after the parameters cell, override both) and of its cell tagged ``parameters``,
    as papermill's ``inspect_notebook`` reads the latter. Read with ``json`` and ``ast`` because a
    notebook's setup cell calls this in its kernel, where importing papermill alone takes seconds."""
    import ast

    cells = json.loads(Path(notebook).read_text(encoding="utf-8"))["cells"]
    declared = {}
    for tag in PARAMETER_TAGS:
        tagged = [c for c in cells if tag in c.get("metadata", {}).get("tags", [])]
        if not tagged:
            continue
        source = tagged[0]["source"]
        source = "".join(source) if isinstance(source, list) else source
        for node in ast.parse(source).body:
            targets = node.targets if isinstance(node, ast.Assign) else \
                [node.target] if isinstance(node, ast.AnnAssign) and node.value is not None else []
            if len(targets) == 1 and isinstance(targets[0], ast.Name):
                declared[targets[0].id] = ast.get_source_segment(source, node.value)
    return declared


def notebook_parameters(profile: dict, notebook: str, run_name: str, runs_root: Path,
                        overrides: dict | None = None) -> dict:
    """Parameters for one notebook: common, then the notebook's own, then overrides."""
    params = {**profile["common"], **(profile["notebooks"].get(notebook) or {}), **(overrides or {})}
    params["run_name"] = run_name
    params["runs_root"] = str(runs_root)
    run_dir = runs_root / run_name
    return {k: (v.format(run_dir=run_dir) if isinstance(v, str) else v) for k, v in params.items()}


def _failed_cell(exc: Exception) -> str:
    """'cell N (first line of its code): error' from papermill's execution error."""
    count = getattr(exc, "exec_count", None)
    source = (getattr(exc, "source", "") or "").strip().splitlines()
    ename = getattr(exc, "ename", type(exc).__name__)
    evalue = getattr(exc, "evalue", str(exc))
    where = f"cell {count}" + (f" ({source[0][:80]!r})" if source else "")
    return f"{where}: {ename}: {str(evalue)[:500]}"


@contextmanager
def kernel_environment(values: dict | None) -> Iterator[None]:
    """Set a profile's ``environment:`` variables while its notebook runs (the kernel inherits them when
    it starts), then put the previous values back, so the calling process is left as it was."""
    values = {str(k): str(v) for k, v in (values or {}).items()}
    previous = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class DeclaredParametersFilter(logging.Filter):
    """Papermill reads only the cell tagged ``parameters`` and calls every setting of the ``advanced`` cell
    "unknown"; its warning is dropped for the names ``notebook`` declares (a name it does not declare still
    warns: a typo in a profile stays visible)."""

    def __init__(self, notebook: Path):
        super().__init__()
        self.declared = set(declared_parameters(notebook))

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        prefix = "Passed unknown parameter: "
        return not (message.startswith(prefix) and message[len(prefix):] in self.declared)


def run_notebook(notebook: Path, output: Path, parameters: dict, timeout: int | None = None,
                 environment: dict | None = None) -> float:
    """Execute one notebook with papermill (its kernel gets ``environment`` on top of ours); raise
    :class:`NotebookFailed` naming the cell."""
    import papermill as pm

    output.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    declared = DeclaredParametersFilter(notebook)
    logging.getLogger("papermill").addFilter(declared)
    try:
        with kernel_environment(environment):
            pm.execute_notebook(str(notebook), str(output), parameters=parameters, kernel_name="python3",
                                cwd=str(notebook.parent), progress_bar=False, log_output=False,
                                execution_timeout=timeout)
    except Exception as exc:  # papermill raises PapermillExecutionError with the cell details
        raise NotebookFailed(f"{notebook.name} failed at {_failed_cell(exc)} "
                             f"(executed copy: {output})") from exc
    finally:
        logging.getLogger("papermill").removeFilter(declared)
    return time.perf_counter() - start


def executed_notebook(runs_root: Path, run_name: str, notebook: str) -> Path:
    """Where the executed copy of ``notebook`` goes: ``runs/<run>/notebooks/<notebook>.ipynb``."""
    return runs_root / run_name / "notebooks" / f"{notebook}.ipynb"


def run_profile_notebook(profile: dict, notebook: str, run_name: str, runs_root: Path,
                         overrides: dict | None = None) -> float:
    """Run one of the series' notebooks as ``profile`` says: its parameters (those the notebook
    declares), the profile's ``cell_timeout`` and kernel ``environment``; the executed copy goes to
    :func:`executed_notebook`. Returns the seconds it took (:func:`run_notebook`)."""
    python_dir = os.path.dirname(sys.executable)  # the kernel spec runs "python": this interpreter's
    if not os.environ.get("PATH", "").startswith(python_dir + os.pathsep):
        os.environ["PATH"] = python_dir + os.pathsep + os.environ.get("PATH", "")
    source = NOTEBOOKS_DIR / f"{notebook}.ipynb"
    params = notebook_parameters(profile, notebook, run_name, runs_root, overrides)
    declared = set(declared_parameters(source))
    return run_notebook(source, executed_notebook(runs_root, run_name, notebook),
                        {k: v for k, v in params.items() if k in declared},
                        timeout=profile.get("cell_timeout"), environment=profile.get("environment"))


class _Reported:
    """``run_one(notebook)`` in a worker process, printing when it is done (picklable, unlike a closure)."""

    def __init__(self, run_one: Callable[..., float]) -> None:
        self.run_one = run_one

    def __call__(self, notebook: str) -> float:
        seconds = self.run_one(notebook)
        print(f"[reproduce] {notebook} done in {seconds:.0f}s", flush=True)
        return seconds


def headline_metrics(run_dir: Path) -> dict:
    """Test AUC (with CI) and accuracy of every evaluated model, from ``metrics/*.json``."""
    headlines = {}
    for path in sorted((run_dir / "metrics").glob("*_metrics.json")):
        data = json.loads(path.read_text())
        test = data.get("test", {})
        headlines[data.get("model", path.stem)] = dict(
            test_auc=test.get("auc"), test_auc_ci=test.get("auc_ci"), test_accuracy=test.get("accuracy"),
            threshold=data.get("threshold"), weights=data.get("weights", {}).get("source"))
    return headlines


def environment_versions() -> dict:
    """The versions the numbers of a run came from (printed by the results book)."""
    import platform
    from importlib import metadata

    from helpers import __version__

    versions = {"fakeface-lab": __version__, "python": platform.python_version(), "platform": platform.platform(),
                "cpu_count": os.cpu_count()}
    for dist in ("tensorflow", "tensorflow-cpu", "keras", "numpy", "pandas", "scikit-learn", "umap-learn", "hdbscan",
                 "papermill"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return versions


def notebook_needs(notebooks: list[str], parameters: dict[str, dict] | None = None) -> dict[str, set[str]]:
    """For each of ``notebooks``, those among them it must wait for: :data:`NEEDS`, and 02 for a notebook whose
    ``parameters`` ask for face crops (``input_kind: face``). A notebook the run leaves out is taken as done,
    as ``--only`` assumes."""
    by_number = {nb[:2]: nb for nb in notebooks}
    needs = {}
    for notebook in notebooks:
        numbers = set(NEEDS.get(notebook[:2], tuple(NEEDS)))
        if (parameters or {}).get(notebook, {}).get("input_kind") == "face":
            numbers.add("02")
        needs[notebook] = {by_number[n] for n in numbers if n in by_number and n < notebook[:2]}
    return needs


def run_in_dependency_order(notebooks: list[str], needs: dict[str, set[str]], run_one: Callable[[str], float],
                            executor: Executor, jobs: int, priority: list[str] | None = None,
                            on_start: Callable[[str], None] = lambda nb: None) -> dict[str, float]:
    """Run every notebook through ``executor.submit(run_one, notebook)``, at most ``jobs`` at a time, each
    once the notebooks ``needs`` names for it (:func:`notebook_needs`) have finished; a free worker takes the
    ready notebook that comes first in ``priority``, then in series order. Returns each notebook's seconds in
    the order they finished. A failure starts nothing more, waits for the notebooks already running, then
    raises the first failure."""
    rank = {nb: (0, (priority or []).index(nb)) if nb in (priority or []) else (1, i) for i, nb in enumerate(notebooks)}
    waiting, running, done = list(notebooks), {}, {}
    failure: BaseException | None = None
    while waiting or running:
        ready = sorted((nb for nb in waiting if needs[nb] <= set(done)), key=rank.__getitem__)
        while failure is None and ready and len(running) < max(jobs, 1):
            notebook = ready.pop(0)
            waiting.remove(notebook)
            on_start(notebook)
            running[executor.submit(run_one, notebook)] = notebook
        if not running:
            break
        finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
        for future in finished:
            notebook = running.pop(future)
            if future.exception() is not None:
                failure = failure or future.exception()
            else:
                done[notebook] = future.result()
    if failure is not None:
        raise failure
    return done


def reproduce(profile_name: str, run_name: str | None = None, runs_root: Path | None = None,
              only: list[str] | None = None, overrides: dict | None = None, jobs: int = 1) -> dict:
    """Run the profile's notebooks, ``jobs`` at a time in dependency order (one: in series order, in this
    process); return (and save) the run summary."""
    profile = load_profile(profile_name)
    run_name = run_name or profile.get("run_name", Path(profile_name).stem)
    runs_root = Path(runs_root or config.default_runs_root()).resolve()
    run_dir = runs_root / run_name
    run_dir.mkdir(parents=True, exist_ok=True)
    swept = atomic.sweep_temporaries(runs_root)  # what writes killed in an earlier run left behind
    if swept:
        print(f"[reproduce] removed {len(swept)} temporary files left by interrupted writes", flush=True)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    notebooks = [nb for nb in profile["notebooks"] if not only or any(nb.startswith(o) for o in only)]
    overrides = {"profile": profile_name, **(overrides or {})}
    started = time.perf_counter()
    if jobs <= 1:
        seconds = {}
        for notebook in notebooks:
            print(f"[reproduce] {notebook} ...", flush=True)
            seconds[notebook] = run_profile_notebook(profile, notebook, run_name, runs_root, overrides)
            print(f"[reproduce] {notebook} done in {seconds[notebook]:.0f}s", flush=True)
    else:
        import multiprocessing
        from functools import partial

        run_one = partial(run_profile_notebook, profile, run_name=run_name, runs_root=runs_root, overrides=overrides)
        # spawn: each worker a fresh interpreter (no forked TensorFlow or thread state); one notebook per worker
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), max_tasks_per_child=1) as pool:
            parameters = {nb: notebook_parameters(profile, nb, run_name, runs_root, overrides) for nb in notebooks}
            seconds = run_in_dependency_order(
                notebooks, notebook_needs(notebooks, parameters), _Reported(run_one), pool, jobs, profile.get("priority"),
                on_start=lambda nb: print(f"[reproduce] {nb} ... (at {time.perf_counter() - started:.0f}s)", flush=True))
        seconds = {nb: seconds[nb] for nb in notebooks}
    timings = [NotebookRun(nb, s, executed_notebook(runs_root, run_name, nb)) for nb, s in seconds.items()]
    summary = dict(profile=profile_name, run=run_name, run_dir=str(run_dir), jobs=max(jobs, 1),
                   total_seconds=round(time.perf_counter() - started, 1),
                   finished=time.strftime("%Y-%m-%d %H:%M %Z"), environment=environment_versions(),
                   notebooks={t.notebook: round(t.seconds, 1) for t in timings},
                   headline=headline_metrics(run_dir))
    atomic.write_json(run_dir / "summary.json", summary, indent=2)
    return summary


def format_summary(summary: dict) -> str:
    """Human-readable summary lines."""
    lines = [f"run {summary['run']} (profile {summary['profile']}): {summary['total_seconds']:.0f}s in all"]
    lines += [f"  {name:<40} {seconds:>7.0f}s" for name, seconds in summary["notebooks"].items()]
    for model, h in summary["headline"].items():
        ci = h.get("test_auc_ci") or [float("nan")] * 2
        lines.append(f"  {model:<40} test AUC {h['test_auc']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]  "
                     f"accuracy {h['test_accuracy']:.3f}  weights: {h['weights']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="sample", help="smoke, sample, full, or a YAML path")
    parser.add_argument("--run", default=None, help="run name under runs/ (default: the profile name)")
    parser.add_argument("--runs-root", default=None, help="folder holding runs (default: runs/)")
    parser.add_argument("--only", nargs="*", help="run only notebooks whose names start with these")
    parser.add_argument("--data", default=None, help="face data root (else the usual search)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="notebooks run at once, each in its own process, in dependency order (default 1: in "
                             "series order; `make reproduce` runs 2 on a CPU; one GPU's memory is not shared well)")
    parser.add_argument("--retrain", action="store_true",
                        help="train every detector and frozen head again, and score again, instead of reading "
                             "unchanged trainings back from runs/cache/trained and runs/cache/protocols "
                             "(sets FAKEFACE_RETRAIN=1; helpers/training_cache.py, helpers/protocol_cache.py)")
    args = parser.parse_args(argv)
    if args.retrain:
        os.environ[training_cache.RETRAIN_ENV] = "1"  # the notebooks' kernels inherit the environment
    overrides = {"data_root": args.data} if args.data else None
    try:
        summary = reproduce(args.profile, args.run, Path(args.runs_root) if args.runs_root else None,
                            args.only, overrides, args.jobs)
    except NotebookFailed as exc:
        print(f"[reproduce] FAILED: {exc}", file=sys.stderr)
        return 1
    print(format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
