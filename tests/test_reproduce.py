"""Profiles, notebook hygiene and the papermill runner's failure reporting."""

import json
import os
import re
import threading
from pathlib import Path

import nbformat
import papermill as pm
import pytest

import helpers
from helpers import colab, course, reproduce

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_code_cell_is_python(path):
    """Each code cell compiles (IPython's ``%`` and ``!`` lines aside): a syntax slip fails here in a second,
    not at its cell after an hour of the notebooks before it."""
    import ast

    for number, cell in enumerate(nbformat.read(path, 4).cells):
        if cell.cell_type != "code":
            continue
        source = "\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!")))
        try:
            ast.parse(source)
        except SyntaxError as exc:
            pytest.fail(f"{path.name}, cell {number}: {exc}")


@pytest.mark.parametrize("profile", ["smoke", "sample", "full", "class"])
def test_profiles_name_existing_notebooks_and_declared_parameters(profile):
    loaded = reproduce.load_profile(profile)
    assert list(loaded["notebooks"]) == sorted(loaded["notebooks"])
    for notebook, params in loaded["notebooks"].items():
        path = reproduce.NOTEBOOKS_DIR / f"{notebook}.ipynb"
        assert path.is_file(), path
        declared = set(reproduce.declared_parameters(path))  # its advanced cell and its parameters cell
        unknown = set({**loaded["common"], **(params or {})}) - declared
        assert not unknown, f"{profile}/{notebook} sets undeclared parameters {unknown}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_declared_parameters_read_as_papermill_reads_them(path):
    """The setup cell reads a notebook's defaults without papermill (seconds to import in a kernel):
    the same names in the same order, and the same values, as papermill's own reading."""
    import ast

    theirs = {name: v["default"] for name, v in pm.inspect_notebook(str(path)).items()}
    mine = reproduce.declared_parameters(path)  # the advanced cell's names first, then the parameters cell's
    assert list(mine)[len(mine) - len(theirs):] == list(theirs)
    for name, default in theirs.items():
        try:
            expected = ast.literal_eval(default)
        except (ValueError, SyntaxError):  # an expression papermill keeps as text (joined onto one line)
            assert " ".join(mine[name].split()) == " ".join(default.split()), name
            continue
        assert ast.literal_eval(mine[name]) == expected, name


def test_declared_parameters_skip_what_papermill_skips(tmp_path):
    """Only top-level assignments to one name are parameters (papermill's rule too); a notebook without
    a cell tagged ``parameters`` declares none."""
    notebook = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "language": "python",
                                                                 "display_name": "Python 3"}})
    notebook.cells = [nbformat.v4.new_code_cell("a = 1"),
                      nbformat.v4.new_code_cell("b: int = 2\nc, d = 3, 4\ne = f = 5\ng += 1\nh = [1,\n     2]\n"
                                                "x = 'y'  # a comment", metadata={"tags": ["parameters"]})]
    path = tmp_path / "n.ipynb"
    nbformat.write(notebook, path)
    assert reproduce.declared_parameters(path) == {"b": "2", "h": "[1,\n     2]", "x": "'y'"}
    assert list(pm.inspect_notebook(str(path))) == ["b", "h", "x"]
    notebook.cells[1].metadata = {}
    nbformat.write(notebook, path)
    assert reproduce.declared_parameters(path) == {}


def test_settings_of_the_advanced_cell_do_not_warn_and_a_typo_does(tmp_path, caplog):
    """Papermill calls every name outside the parameters cell unknown; run_notebook drops that warning for the
    advanced cell's names only, and overrides both cells' values (the executed notebook prints them)."""
    import logging

    notebook = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "language": "python",
                                                                 "display_name": "Python 3"}})
    notebook.cells = [nbformat.v4.new_code_cell("recipe = 'plain'", metadata={"tags": ["advanced"]}),
                      nbformat.v4.new_code_cell("n = 1", metadata={"tags": ["parameters"]}),
                      nbformat.v4.new_code_cell("print(recipe, n)")]
    source, output = tmp_path / "n.ipynb", tmp_path / "out.ipynb"
    nbformat.write(notebook, source)
    with caplog.at_level(logging.WARNING, logger="papermill"):
        reproduce.run_notebook(source, output, {"recipe": "improved", "n": 2, "nn": 3})
    warned = [r.getMessage() for r in caplog.records if "unknown parameter" in r.getMessage()]
    assert warned == ["Passed unknown parameter: nn"]
    assert nbformat.read(output, 4).cells[-1].outputs[0]["text"] == "improved 2\n"
    assert not logging.getLogger("papermill").filters  # the filter goes with the run


def test_unknown_profile_lists_the_known_ones():
    with pytest.raises(FileNotFoundError, match="smoke"):
        reproduce.load_profile("nope")


def test_parameters_merge_and_fill_the_run_folder(tmp_path):
    profile = {"common": {"seed": 1, "figures_dir": "{run_dir}/figures"},
               "notebooks": {"01_x": {"seed": 2}}}
    params = reproduce.notebook_parameters(profile, "01_x", "r", tmp_path, {"data_root": "/d"})
    assert params == {"seed": 2, "figures_dir": f"{tmp_path}/r/figures", "data_root": "/d",
                      "run_name": "r", "runs_root": str(tmp_path)}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_are_clean_and_follow_the_template(path):
    nb = nbformat.read(path, as_version=4)
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    assert "colab-badge" in nb.cells[0].source
    for heading in ("**You will learn**", "**Time:**", "**Needs:**"):
        assert heading in nb.cells[0].source, heading
    # an advanced-settings cell (recipes the profiles set) comes before the parameters cell, so papermill's
    # injected values, placed after the parameters cell, override both
    at = 2 if "advanced" in nb.cells[1].metadata.get("tags", []) else 1
    assert "parameters" in nb.cells[at].metadata.get("tags", [])
    assert len(nb.cells[at].source.splitlines()) <= 15, "what a student would change; the rest is advanced"
    assert nb.cells[at + 1].source == colab.setup_cell(path.stem), "run `python -m helpers.colab --write`"
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    assert {"run_name", "profile", "use_drive"} <= set(pm.inspect_notebook(str(path)))
    assert {"prepare_missing", "runs_root"} <= set(reproduce.declared_parameters(path))
    assert nb.cells[-1].cell_type == "markdown" and nb.cells[-1].source.startswith("## What we learned")
    for k, cell in enumerate(nb.cells[:-1]):  # every figure the notebook writes has a line on what to look for
        if cell.cell_type == "code" and re.search(r"\d\d_[a-z0-9_]+\.png", cell.source) and "aligned" not in cell.source:
            assert nb.cells[k + 1].source.startswith("**What to look for:**"), cell.source[:80]
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None
            if not course.is_exercise_cell(cell):  # exercises: the student writes what a helper does
                assert "\ndef " not in "\n" + cell.source, "notebooks call helpers; they define no functions"


def test_a_failing_notebook_is_named_with_its_cell(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("y = x + 1"),
                nbformat.v4.new_code_cell("raise ValueError('broken on purpose')")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    source = tmp_path / "99_broken.ipynb"
    nbformat.write(nb, source)
    with pytest.raises(reproduce.NotebookFailed) as err:
        reproduce.run_notebook(source, tmp_path / "out" / "99_broken.ipynb", {"x": 5})
    message = str(err.value)
    assert "99_broken.ipynb" in message and "ValueError" in message and "broken on purpose" in message
    assert "cell 4" in message  # counted in the executed copy, after papermill's parameters cell
    assert "raise ValueError('broken on purpose')" in message


def test_a_profile_environment_reaches_the_kernel_only(tmp_path, face_tree, monkeypatch):
    """The smoke profile's FAKEFACE_EAGER reaches the notebook's kernel, whose run config then runs Keras
    steps eagerly; this process's environment is left as it was (a variable it had keeps its value)."""
    from helpers import config

    cfg = config.make_config(run_name="t", data_root=str(face_tree), runs_root=str(tmp_path / "runs"))
    config.save_run_config(cfg)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("runs_root = None", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell(
                    "import os, tensorflow as tf\nfrom helpers import config\n"
                    "config.load_run_config('t', runs_root)\n"
                    "assert tf.config.functions_run_eagerly(), 'Keras steps traced'\n"
                    "assert os.environ['FAKEFACE_EAGER'] == '1' and os.environ['KEPT'] == 'profile'")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    source = tmp_path / "99_env.ipynb"
    nbformat.write(nb, source)
    monkeypatch.delenv("FAKEFACE_EAGER", raising=False)
    monkeypatch.setenv("KEPT", "ours")
    environment = reproduce.load_profile("smoke")["environment"]
    assert environment == {"FAKEFACE_EAGER": "1"}
    reproduce.run_notebook(source, tmp_path / "out.ipynb", {"runs_root": str(tmp_path / "runs")},
                           environment={**environment, "KEPT": "profile"})
    assert "FAKEFACE_EAGER" not in os.environ and os.environ["KEPT"] == "ours"
    with pytest.raises(reproduce.NotebookFailed, match="Keras steps traced"):  # without it: graphs
        reproduce.run_notebook(source, tmp_path / "out.ipynb", {"runs_root": str(tmp_path / "runs")},
                               environment={"KEPT": "profile"})


def test_one_profile_notebook_gets_its_declared_parameters_timeout_and_environment(tmp_path, monkeypatch):
    """The one runner that `make reproduce` and Colab's prepare step share: a parameter the notebook does
    not declare is left out (papermill would add it anyway), the notebook's own value beats the common
    one, the profile's environment reaches the kernel and its cell timeout stops a hanging cell."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 0\nrun_name = ''\nsleep = 0", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("import os, time\nassert 'undeclared' not in globals()\n"
                                          "assert os.environ['PROFILE_VAR'] == 'on'\ntime.sleep(sleep)\n"
                                          "path = os.path.join(os.environ['OUT_DIR'], 'seen.txt')\n"
                                          "open(path, 'w').write(f'{x} {run_name}')")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    monkeypatch.setattr(reproduce, "NOTEBOOKS_DIR", tmp_path)
    nbformat.write(nb, tmp_path / "99_tiny.ipynb")
    monkeypatch.setenv("OUT_DIR", str(tmp_path))
    profile = {"common": {"x": 1, "undeclared": 2}, "notebooks": {"99_tiny": {"x": 5}},
               "environment": {"PROFILE_VAR": "on"}, "cell_timeout": 20}
    reproduce.run_profile_notebook(profile, "99_tiny", "r1", tmp_path / "runs")
    assert (tmp_path / "seen.txt").read_text() == "5 r1"
    assert (tmp_path / "runs" / "r1" / "notebooks" / "99_tiny.ipynb").is_file()
    assert "PROFILE_VAR" not in os.environ
    with pytest.raises(reproduce.NotebookFailed, match="99_tiny"):
        reproduce.run_profile_notebook({**profile, "cell_timeout": 2}, "99_tiny", "r1", tmp_path / "runs",
                                       {"sleep": 30})


def test_summary_formatting(tmp_path):
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "m_metrics.json").write_text(json.dumps(
        {"model": "M", "threshold": 0.4, "test": {"auc": 0.9, "auc_ci": [0.8, 0.95], "accuracy": 0.85},
         "weights": {"source": "local"}}))
    headline = reproduce.headline_metrics(tmp_path)
    assert headline["M"]["test_auc"] == 0.9
    text = reproduce.format_summary({"run": "r", "profile": "p", "total_seconds": 10,
                                     "notebooks": {"01": 10}, "headline": headline})
    assert "test AUC 0.900 [0.800, 0.950]" in text


def test_the_setup_cell_installs_the_ref_the_badge_opens():
    """Each notebook's Colab badge opens REPOSITORY at REF, and its setup cell clones that same ref
    (overridable from the environment); the repository is written in one place."""
    pyproject = (reproduce.NOTEBOOKS_DIR.parent / "pyproject.toml").read_text()
    assert f'version = "{helpers.__version__}"' in pyproject
    github = colab.REPOSITORY.removeprefix("https://github.com/")
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        badge = f"https://colab.research.google.com/github/{github}/blob/{colab.REF}/notebooks/{path.name}"
        assert badge in nb.cells[0].source, path.name
        cell = next(c.source for c in nb.cells if "setup" in c.metadata.get("tags", []))
        assert f'os.environ.get("FAKEFACE_REPOSITORY", "{colab.REPOSITORY}")' in cell
        assert f'os.environ.get("FAKEFACE_REF", "{colab.REF}")' in cell and '"--branch", REF' in cell
        assert "-c\", \"/tmp/keep.txt\"" in cell  # Colab's TensorFlow/Keras/NumPy are kept
    assert 'CHECKOUT + "[annotate]"' in colab.setup_cell("02_annotation")
    assert 'CHECKOUT + ""' in colab.setup_cell("05_evaluation")


def test_the_longest_tests_named_for_the_scheduler_exist():
    """conftest.LONGEST_FIRST names tests by file and function; a rename would silently send the smoke run
    last under `make test`'s two workers (and the suite would take minutes longer)."""
    import ast

    from conftest import LONGEST_FIRST

    tests_dir = Path(__file__).resolve().parent
    for name in LONGEST_FIRST:
        file, function = name.split("::")
        tree = ast.parse((tests_dir / file).read_text())
        assert function in {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}, name


def test_retrain_asks_every_notebook_kernel_to_train_again(monkeypatch):
    """``--retrain`` reaches the notebooks' kernels (they inherit the environment) as FAKEFACE_RETRAIN=1."""
    from helpers import training_cache

    monkeypatch.setenv(training_cache.RETRAIN_ENV, "0")  # recorded: the test leaves the variable as it found it
    seen = []
    monkeypatch.setattr(reproduce, "reproduce", lambda *args: seen.append(training_cache.retrain_requested()) or {})
    monkeypatch.setattr(reproduce, "format_summary", lambda summary: "")
    assert reproduce.main(["--profile", "smoke"]) == 0 and seen == [False]
    assert reproduce.main(["--profile", "smoke", "--retrain"]) == 0 and seen == [False, True]
    assert os.environ[training_cache.RETRAIN_ENV] == "1"


def test_every_notebook_waits_for_what_it_reads():
    """NEEDS covers every earlier notebook whose outputs a notebook reads for Colab (helpers.colab), and each
    notebook needs only earlier ones (the series order is one valid order)."""
    series = [path.stem for path in NOTEBOOKS]
    parameters = {"input_kind": "face", "model_keys": ["mobilenetv2_finetune", "resnet50_head"]}
    needs = reproduce.notebook_needs(series, {notebook: parameters for notebook in series})
    def before(notebook):  # everything a notebook waits for, directly or through another
        return set().union(*({n} | before(n) for n in needs[notebook])) if needs[notebook] else set()

    for notebook in series:
        producers = {colab.producer_of(p) for p in colab.needed_paths(notebook, parameters)}
        assert producers <= before(notebook), notebook
        assert all(n < notebook for n in needs[notebook]), notebook
    assert needs["08_generalization_and_robustness"] == {"01_data_collection", "02_annotation"}
    assert reproduce.notebook_needs(series)["03_train_mobilenetv2"] == {"01_data_collection"}  # whole images
    # a notebook left out of the run (--only) is taken as done
    assert reproduce.notebook_needs(["05_evaluation", "08_generalization_and_robustness"]) == {
        "05_evaluation": set(), "08_generalization_and_robustness": set()}


class _Clock:
    """A fake notebook runner on threads: each notebook 'runs' until the test releases it."""

    def __init__(self):
        self.events, self.lock, self.gates = [], threading.Lock(), {}

    def __call__(self, notebook):
        with self.lock:
            self.events.append(("start", notebook))
        if "fail" in notebook:  # fails at once, while the other worker's notebook still runs
            raise reproduce.NotebookFailed(f"{notebook} failed at cell 3")
        gate = self.gates.setdefault(notebook, threading.Event())
        assert gate.wait(10), notebook
        with self.lock:
            self.events.append(("end", notebook))
        return float(len(notebook))


def _run_released_in_turn(notebooks, jobs, priority=None, failing=()):
    """Run the scheduler with a fake runner, releasing the running notebooks one at a time (oldest first)."""
    import time as clock
    from concurrent.futures import ThreadPoolExecutor

    runner = _Clock()
    result = {}

    def release():
        released = set()
        deadline = clock.monotonic() + 20
        while clock.monotonic() < deadline and "done" not in result:
            with runner.lock:
                started = [nb for kind, nb in runner.events if kind == "start" and nb not in released]
            if started:
                clock.sleep(0.1)  # let the scheduler start whatever else it would
                released.add(started[0])
                runner.gates.setdefault(started[0], threading.Event()).set()
            clock.sleep(0.01)

    thread = threading.Thread(target=release)
    thread.start()
    try:
        with ThreadPoolExecutor(4) as pool:
            result["seconds"] = reproduce.run_in_dependency_order(notebooks, reproduce.notebook_needs(notebooks),
                                                                  runner, pool, jobs, priority)
    except reproduce.NotebookFailed as exc:
        result["error"] = str(exc)
    finally:
        result["done"] = True
        thread.join()
    return runner.events, result


def test_two_jobs_start_what_is_ready_priority_first_and_never_before_its_needs():
    series = ["01_data_collection", "02_annotation", "03_train_mobilenetv2", "04_train_resnet50", "05_evaluation",
              "06_feature_maps_and_heatmaps", "07_embeddings_umap_hdbscan", "08_generalization_and_robustness",
              "09_baselines"]
    events, result = _run_released_in_turn(series, 2, priority=["02_annotation", "08_generalization_and_robustness"])
    assert set(result["seconds"]) == set(series)
    starts = [nb for kind, nb in events if kind == "start"]
    assert starts[:3] == ["01_data_collection", "02_annotation", "03_train_mobilenetv2"]
    assert starts[3] == "08_generalization_and_robustness"  # 02 finished first: the priority goes next
    needs = reproduce.notebook_needs(series)
    for i, (kind, notebook) in enumerate(events):
        if kind == "start":
            ended_before = {nb for k, nb in events[:i] if k == "end"}
            assert needs[notebook] <= ended_before, notebook
            running = {nb for k, nb in events[:i] if k == "start"} - ended_before
            assert len(running) < 2, (notebook, running)


def test_one_job_runs_the_series_in_order_and_a_failure_stops_the_rest():
    events, result = _run_released_in_turn(["01_a", "02_b", "03_c"], 1)
    assert [nb for kind, nb in events if kind == "start"] == ["01_a", "02_b", "03_c"]
    assert list(result["seconds"]) == ["01_a", "02_b", "03_c"]
    # 03 fails while 02 runs beside it: 02 finishes, nothing more starts, the failure is raised
    events, result = _run_released_in_turn(["01_a", "02_b", "03_fail", "04_d", "05_evaluation"], 2)
    assert "03_fail failed at cell 3" in result["error"]
    assert ("end", "02_b") in events and "04_d" not in [nb for _, nb in events]
    assert "05_evaluation" not in [nb for _, nb in events]


def test_two_jobs_run_each_notebook_in_its_own_worker_process(tmp_path, face_tree):
    """``--jobs 2`` runs notebooks through a pool of fresh (spawned) interpreters: notebook 01 of the smoke
    profile on a tiny tree writes its split and executed copy as a run one at a time does."""
    summary = reproduce.reproduce("smoke", "two", tmp_path / "runs", only=["01"],
                                  overrides={"data_root": str(face_tree)}, jobs=2)
    assert summary["jobs"] == 2 and list(summary["notebooks"]) == ["01_data_collection"]
    run_dir = tmp_path / "runs" / "two"
    assert (run_dir / "split.csv").is_file()
    assert reproduce.executed_notebook(tmp_path / "runs", "two", "01_data_collection").is_file()
