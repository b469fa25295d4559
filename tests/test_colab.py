"""Colab: the setup cell's logic, data on first use, and notebooks opened alone on a fresh runtime.

A fresh Colab runtime is simulated: ``$FAKEFACE_COLAB=1``, an empty folder standing in for Google
Drive, no face data anywhere the loader looks, and the registry's GitHub archives served from
127.0.0.1 (built from the lab's face sample, so the real pins must match).
"""

import io
import json
import os
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from servers import FileServer, free_port

from helpers import colab, config, data, reproduce, sources

SMOKE = reproduce.load_profile("smoke")


def test_each_notebook_needs_what_the_earlier_ones_write(tmp_path):
    run = tmp_path / "run"
    assert colab.missing_inputs("01_data_collection", {}, run) == {}
    assert colab.missing_inputs("02_annotation", {}, run) == {"01_data_collection": ["run_config.json", "split.csv"]}
    assert colab.missing_inputs("03_train_mobilenetv2", {"input_kind": "face"}, run) == {
        "01_data_collection": ["run_config.json", "split.csv"], "02_annotation": ["faces"]}
    keys = ["mobilenetv2_head", "resnet50_finetune"]
    assert colab.missing_inputs("05_evaluation", {"model_keys": keys}, run) == {
        "01_data_collection": ["run_config.json", "split.csv"],
        "03_train_mobilenetv2": ["models/mobilenetv2_head.keras"], "04_train_resnet50": ["models/resnet50_finetune.keras"]}
    for path in ("run_config.json", "split.csv", "models/mobilenetv2_head.keras"):
        (run / path).parent.mkdir(parents=True, exist_ok=True)
        (run / path).write_text("x")
    assert colab.missing_inputs("05_evaluation", {"model_keys": keys}, run) == {
        "04_train_resnet50": ["models/resnet50_finetune.keras"]}
    assert colab.missing_inputs("07_embeddings_umap_hdbscan", {"model_key": "mobilenetv2_head"}, run) == {
        "05_evaluation": ["metrics/mobilenetv2_head_metrics.json"]}
    with pytest.raises(KeyError, match="no notebook"):
        colab.producer_of("models/vgg16.keras")


def test_setup_elsewhere_changes_nothing_and_names_the_missing_notebooks(tmp_path, monkeypatch, capsys):
    for name in (colab.COLAB_ENV, config.RUNS_ENV, config.DATA_ENV, config.FIGURES_ENV):
        monkeypatch.delenv(name, raising=False)
    before = dict(os.environ)
    session = colab.setup("06_feature_maps_and_heatmaps", {"run_name": "r", "runs_root": str(tmp_path)})
    assert not session.on_colab and session.prepared == [] and dict(os.environ) == before
    assert session.missing == {"01_data_collection": ["run_config.json", "split.csv"],
                               "03_train_mobilenetv2": ["models/mobilenetv2_finetune.keras"],
                               "05_evaluation": ["metrics/mobilenetv2_finetune_metrics.json"]}
    out = capsys.readouterr().out
    assert "run notebook 03_train_mobilenetv2 first" in out and "prepare_missing=True" in out


def test_config_honours_the_run_and_figure_folders_of_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(config.RUNS_ENV, str(tmp_path / "drive-runs"))
    monkeypatch.setenv(config.FIGURES_ENV, str(tmp_path / "drive-figures"))
    monkeypatch.setenv(config.DATA_ENV, str(tmp_path / "drive-data"))
    assert config.default_runs_root() == tmp_path / "drive-runs"
    assert config.default_collect_root() == tmp_path / "drive-data"
    cfg = config.RunConfig(run_name="r")
    assert cfg.run_dir == tmp_path / "drive-runs" / "r" and cfg.figures_dir == tmp_path / "drive-figures"
    with pytest.raises(FileNotFoundError, match="drive-runs"):
        config.load_run_config("r")


def test_no_data_and_offline_keeps_the_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv(config.DATA_ENV, str(tmp_path / "empty"))
    monkeypatch.setenv(sources.GITHUB_ENV, f"http://127.0.0.1:{free_port()}")
    monkeypatch.delenv(sources.MIRROR_ENV, raising=False)
    with pytest.raises(config.DataNotFoundError) as err:
        sources.ensure_face_data([], progress=False)
    assert "Looked at" in str(err.value) and "default sample could not be fetched" in str(err.value)
    assert "cannot be reached" in str(err.value) and not (tmp_path / "empty").exists()
    with pytest.raises(config.DataNotFoundError, match="Looked at"):
        sources.ensure_face_data([], fetch_when_missing=False)


def _sample_archives(faces: Path) -> dict[str, bytes]:
    """The registry's default-sample archives as GitHub would serve them, from the lab's face sample.

    A re-encoded source (sd15) is served as a mirror of the lab's sample holds it: the sample's JPEGs
    at their upstream paths, which the pins accept by SHA-256 (the upstream PNGs are not here; the
    re-encoding itself is tested on PNGs the tests make, tests/test_download.py)."""
    registry = sources.load_registry()
    members: dict[str, dict[str, Path]] = {}
    for name in sources.default_sample():
        source = registry[name]
        folder = faces / source.label / source.folder
        if source.reencode:
            pins = source.pins().set_index("sha256")
            for path in sorted(folder.iterdir()):
                row = pins.loc[data.file_sha256(path)]
                part = next(p for p in source.archives() if p.repo == row.repo)
                url_path = f"/{part.repo}/archive/{part.ref}.zip"
                members.setdefault(url_path, {})[f"{part.repo.split('/')[1]}-{part.ref}/{row.upstream_path}"] = path
            continue
        top = f"{source.repo.split('/')[1]}-{source.ref}"
        pattern = source.include[0].replace("*", top, 1)
        url_path = f"/{source.repo}/archive/{source.ref}.zip"
        for path in sorted(folder.iterdir()):
            original = path.name.split("_", 1)[1]  # imported files are named <sha8>_<original name>
            members.setdefault(url_path, {})[pattern[:-1] + original] = path
    archives = {}
    for url_path, files in members.items():
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:
            for member, path in files.items():
                zf.write(path, member)
        archives[url_path] = buffer.getvalue()
    return archives


@pytest.fixture(scope="module")
def fresh_runtime(shared_faces, tmp_path_factory):
    """A simulated fresh Colab runtime whose notebook 01 ran with its default parameters."""
    drive = tmp_path_factory.mktemp("drive")
    patch = pytest.MonkeyPatch()
    for name in (config.RUNS_ENV, config.DATA_ENV, config.FIGURES_ENV, sources.MIRROR_ENV):
        patch.delenv(name, raising=False)
    patch.setenv(colab.COLAB_ENV, "1")
    patch.setenv(colab.DRIVE_ENV, str(drive))
    patch.setenv(config.DOWNLOADS_ENV, str(tmp_path_factory.mktemp("downloads")))
    patch.setenv("PATH", os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    archives = _sample_archives(shared_faces)
    with FileServer(archives) as server:
        patch.setenv(sources.GITHUB_ENV, server.url)
        output = drive / "executed" / "01_data_collection.ipynb"
        reproduce.run_notebook(reproduce.NOTEBOOKS_DIR / "01_data_collection.ipynb", output, {})
        requested = sorted({r["path"] for r in server.requests})
    yield drive / "fakeface-lab", requested
    patch.undo()


@pytest.mark.integration
def test_notebook_01_with_its_defaults_fetches_the_sample_onto_drive(fresh_runtime, shared_faces):
    home, requested = fresh_runtime
    faces = home / "data" / "faces"
    registry = sources.load_registry()
    for name in sources.default_sample():
        check = sources.check_pins(registry[name], faces / registry[name].label / registry[name].folder)
        assert check["missing"] == 0 and check["unexpected"] == 0, check
    run = home / "runs" / "dev"
    assert config.load_run_config("dev", str(home / "runs")).data_root == faces.resolve()
    split = pd.read_csv(run / "split.csv", keep_default_na=False)
    assert len(split) == sum(1 for p in shared_faces.rglob("*") if p.suffix.lower() in sources.IMAGE_SUFFIXES)
    assert set(split.source) == {registry[n].folder for n in sources.default_sample()}
    assert (home / "figures" / "01_data_card.png").is_file()
    assert requested == sorted({f"/{part.repo}/archive/{part.ref}.zip" for n in sources.default_sample()
                                for part in registry[n].archives()})
    provenance = pd.read_csv(faces / "provenance.csv", keep_default_na=False)
    assert provenance.origin.str.startswith("http://127.0.0.1:").all() and (provenance.status != "rejected").all()


def _local_remote(tmp_path: Path) -> Path:
    """A git repository holding this checkout's files (tracked, and untracked ones git does not ignore)
    committed on branch ``main``: what a fresh clone of the published ``main`` would get."""
    import shutil
    import subprocess

    root = config.REPO_ROOT
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                            capture_output=True, check=True).stdout.decode().split("\0")
    remote = tmp_path / "remote"
    for name in filter(None, listed):
        if (root / name).is_file():
            (remote / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / name, remote / name)
    git = ["git", "-c", "user.name=lab", "-c", "user.email=lab@localhost", "-C", str(remote)]
    for step in (["init", "--quiet", "--initial-branch", "main"], ["add", "--all"], ["commit", "--quiet", "-m", "lab"]):
        subprocess.run(git + step, check=True, capture_output=True)
    return remote


def _runtime_without_helpers(tmp_path: Path) -> Path:
    """A fresh virtual environment standing for Colab's: this lab's dependencies are importable (a .pth
    line adds this environment's site-packages, as Colab has TensorFlow, Keras and NumPy preinstalled)
    but ``helpers`` is not (that site-packages' own .pth files, this checkout's editable install among
    them, are not processed). Returns its ``bin`` folder."""
    import site
    import subprocess

    runtime = tmp_path / "runtime"
    subprocess.run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", str(runtime)], check=True)
    packages = next(runtime.glob("lib/python*/site-packages"))
    (packages / "colab_preinstalled.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    probe = subprocess.run([str(runtime / "bin" / "python"), "-c", "import helpers"], cwd=tmp_path,
                           capture_output=True, text=True)
    assert probe.returncode != 0 and "No module named 'helpers'" in probe.stderr
    # papermill's kernel "python3" must start this runtime's interpreter (a spec saying just "python"
    # is replaced by the launching process's own): a spec of that name on $JUPYTER_PATH comes first
    spec = tmp_path / "jupyter" / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [str(runtime / "bin" / "python"), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Colab-like runtime", "language": "python"}))
    return runtime / "bin"


@pytest.mark.integration
def test_notebook_05_opened_alone_clones_installs_and_prepares_what_it_needs(tmp_path, shared_faces):
    """The setup cell for real on a simulated fresh runtime: no helpers installed, the repository a
    local git remote; it clones the ref the badge opens, installs it, and notebook 05, opened alone,
    prepares 01 and 03 with the smoke profile and runs to its end."""
    remote = _local_remote(tmp_path)
    runtime_bin = _runtime_without_helpers(tmp_path)
    checkout = tmp_path / "content" / "fakeface-lab"
    drive = tmp_path / "drive"
    environment = {colab.COLAB_ENV: "1", colab.DRIVE_ENV: str(drive), colab.REPOSITORY_ENV: remote.as_uri(),
                   colab.CHECKOUT_ENV: str(checkout), config.DATA_ENV: str(shared_faces),
                   "PATH": str(runtime_bin) + os.pathsep + os.environ["PATH"], "PYTHONPATH": "",
                   "JUPYTER_PATH": str(tmp_path / "jupyter"),
                   config.RUNS_ENV: "", config.FIGURES_ENV: ""}
    # MobileNetV2's models only: 04 (ResNet50 from scratch, a minute) would test nothing more here; the
    # dependency map's 04 entries are checked in test_each_notebook_needs_what_the_earlier_ones_write
    params = {"run_name": "colab-smoke", "profile": "smoke", **SMOKE["notebooks"]["05_evaluation"],
              "model_keys": ["mobilenetv2_head", "mobilenetv2_finetune"], "use_drive": False}
    output = tmp_path / "executed" / "05_evaluation.ipynb"
    saved = {name: os.environ.get(name) for name in environment}
    os.environ.update({k: v for k, v in environment.items() if v})
    for name in (config.RUNS_ENV, config.FIGURES_ENV, "PYTHONPATH"):
        os.environ.pop(name, None)
    try:
        reproduce.run_notebook(reproduce.NOTEBOOKS_DIR / "05_evaluation.ipynb", output, params,
                               timeout=SMOKE["cell_timeout"])
    finally:
        for name, value in saved.items():
            os.environ.pop(name, None) if value is None else os.environ.__setitem__(name, value)
    assert (checkout / "helpers" / "pins.py").is_file()  # the clone holds this checkout's code
    text = output.read_text()
    assert str(checkout / "helpers") in text or "[prepare] 03_train_mobilenetv2 done" in text
    run = drive / "fakeface-lab" / "runs" / "colab-smoke"
    prepared = sorted(p.stem for p in (run / "notebooks").glob("*.ipynb"))
    assert prepared == ["01_data_collection", "03_train_mobilenetv2"]  # 02 and 04 are not needed
    assert json_of(run / "run_config.json")["limit_per_source"] == SMOKE["notebooks"]["01_data_collection"][
        "limit_per_source"], "the earlier notebooks ran with the same profile"
    table = pd.read_csv(run / "tables" / "table5_model_comparison.csv")
    assert len(table) == 2
    assert "[prepare] 03_train_mobilenetv2 done" in text and "missing from" not in text


def test_a_notebook_opened_alone_asks_only_for_what_its_profile_trains(tmp_path, monkeypatch):
    """On a CPU runtime the class profile is chosen, and 05's default model list becomes the profile's:
    no "missing" ResNet50 model that the class profile never trains."""
    for name in (config.RUNS_ENV, config.DATA_ENV, config.FIGURES_ENV):
        monkeypatch.delenv(name, raising=False)
    import papermill as pm

    defaults = {name: __import__("ast").literal_eval(v["default"]) for name, v in
                pm.inspect_notebook(str(reproduce.NOTEBOOKS_DIR / "05_evaluation.ipynb")).items()
                if name in ("model_keys", "n_boot")}
    assert colab.runtime_profile(None) == "class" and colab.runtime_profile("T4") == "full"
    namespace = {**defaults, "model_keys": list(defaults["model_keys"]), "n_boot": 7}
    changed = colab.apply_profile("05_evaluation", namespace, "class")
    assert namespace["model_keys"] == reproduce.load_profile("class")["notebooks"]["05_evaluation"]["model_keys"]
    assert changed == {"model_keys": namespace["model_keys"]} and namespace["n_boot"] == 7  # a typed value is kept
    session = colab.setup("05_evaluation", {**defaults, "run_name": "r", "runs_root": str(tmp_path),
                                            "profile": "class", "prepare_missing": False})
    assert all("resnet50" not in path for paths in session.missing.values() for path in paths)
    assert "04_train_resnet50" not in session.missing


def json_of(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.mark.parametrize("arch", ["mobilenetv2", "resnet50", "custom_cnn"])
def test_detectors_answer_in_float32_under_mixed_precision(arch):
    """On a GPU the setup cell turns on mixed float16: every detector's sigmoid must stay float32
    (float16 saturates near 0 and 1, which would break thresholds and AUCs)."""
    import keras
    import numpy as np

    from helpers import models

    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model, _ = models.build_detector(arch, image_size=32, augment=False, **({} if arch == "custom_cnn" else
                                                                                {"weights": None}))
        head = models.build_head("resnet50" if arch == "resnet50" else "mobilenetv2")
        output = model(np.zeros((2, 32, 32, 3), "float32"))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert keras.backend.standardize_dtype(output.dtype) == "float32"
    assert keras.backend.standardize_dtype(head.outputs[0].dtype) == "float32"
    assert any(layer.compute_dtype == "float16" for layer in model.layers), "mixed precision was on"
