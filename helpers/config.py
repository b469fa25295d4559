"""Run configuration and the rules for finding data, weights and run folders.

The only shared state in the package is a :class:`RunConfig`, built from notebook
parameters. Everything a notebook writes lives under ``runs/<run_name>/``; report
figures go to the configured figures folder.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path

from helpers import atomic

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_ENV = "FAKEFACE_DATA"
WEIGHTS_ENV = "FAKEFACE_WEIGHTS"
RUNS_ENV = "FAKEFACE_RUNS"
FIGURES_ENV = "FAKEFACE_FIGURES"
DOWNLOADS_ENV = "FAKEFACE_DOWNLOADS"
EAGER_ENV = "FAKEFACE_EAGER"   # "1": TensorFlow functions run eagerly (the smoke profile sets it)

GET_DATA_HELP = (
    "Put a face folder laid out <label>/<source>/<file> (label is 'real' or 'fake') at one of "
    "those places, or set FAKEFACE_DATA=/path/to/faces. A lab machine usually has the shared "
    "sample at ../shared/data/faces beside the checkout; notebook 01 explains how to collect data."
)


class DataNotFoundError(FileNotFoundError):
    """No face data folder was found; the message lists every place looked at."""


def data_root_candidates(explicit: str | os.PathLike | None = None,
                         repo_root: Path = REPO_ROOT) -> list[tuple[str, Path]]:
    """Return the places searched for face data, in priority order, with where each came from."""
    candidates: list[tuple[str, Path]] = []
    if explicit:
        candidates.append(("parameter", Path(explicit).expanduser()))
    if os.environ.get(DATA_ENV):
        candidates.append((f"${DATA_ENV}", Path(os.environ[DATA_ENV]).expanduser()))
    candidates.append(("repository data/faces", repo_root / "data" / "faces"))
    candidates.append(("shared folder beside the checkout", repo_root.parent / "shared" / "data" / "faces"))
    return candidates


def _looks_like_face_root(path: Path) -> bool:
    return path.is_dir() and any((path / label).is_dir() for label in ("real", "fake"))


def resolve_data_root(explicit: str | os.PathLike | None = None, repo_root: Path = REPO_ROOT) -> Path:
    """Find the face data root: parameter, then ``$FAKEFACE_DATA``, ``data/faces``, ``../shared/data/faces``.

    An explicit parameter or environment variable that points nowhere is an error rather
    than a silent fall-through, so a typo never trains on the wrong data.
    """
    tried = []
    for origin, path in data_root_candidates(explicit, repo_root):
        if _looks_like_face_root(path):
            return path.resolve()
        tried.append(f"  - {path} ({origin}): "
                     + ("exists but has no real/ or fake/ folder" if path.exists() else "not found"))
        if origin in ("parameter", f"${DATA_ENV}"):
            break
    raise DataNotFoundError("No face data found. Looked at:\n" + "\n".join(tried) + "\n" + GET_DATA_HELP)


def default_runs_root() -> Path:
    """Where run folders live when no ``runs_root`` is given: ``$FAKEFACE_RUNS`` or ``runs/``."""
    return Path(os.environ.get(RUNS_ENV) or REPO_ROOT / "runs").expanduser()


def default_figures_dir() -> Path:
    """Where report figures go when no ``figures_dir`` is given: ``$FAKEFACE_FIGURES`` or ``figures/``."""
    return Path(os.environ.get(FIGURES_ENV) or REPO_ROOT / "figures").expanduser()


def default_collect_root() -> Path:
    """Where fetched sources are written when no folder is given: ``$FAKEFACE_DATA`` or ``data/faces``."""
    return Path(os.environ.get(DATA_ENV) or REPO_ROOT / "data" / "faces").expanduser()


def default_downloads_dir() -> Path:
    """Where downloaded archives are cached: ``$FAKEFACE_DOWNLOADS`` or ``data/downloads``."""
    return Path(os.environ.get(DOWNLOADS_ENV) or REPO_ROOT / "data" / "downloads").expanduser()


def weights_search_dirs(repo_root: Path = REPO_ROOT) -> list[Path]:
    """Folders searched for offline Keras weight files: ``$FAKEFACE_WEIGHTS``, Keras cache, shared."""
    dirs = []
    if os.environ.get(WEIGHTS_ENV):
        dirs.append(Path(os.environ[WEIGHTS_ENV]).expanduser())
    keras_home = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))
    dirs.append(keras_home / "models")
    dirs.append(repo_root.parent / "shared" / "weights")
    return dirs


# The report's input size: the default of every run and every model builder (a run's models record
# the size they were trained at, and everything after training reads it from there).
DEFAULT_IMAGE_SIZE = 180


@dataclass
class RunConfig:
    """Everything a notebook needs to know about the current run.

    Attributes:
        run_name: folder name under ``runs/``; notebooks of one series share it.
        data_root: resolved face data root.
        figures_dir: where report figures are written (stable names).
        image_size: square input size fed to the models.
        seed: seed for splits, shuffling and weight initialisation.
        limit_per_source: keep at most this many images per source (None keeps all).
    """

    run_name: str = "dev"
    data_root: Path | None = None
    figures_dir: Path = field(default_factory=default_figures_dir)
    runs_root: Path = field(default_factory=default_runs_root)
    image_size: int = DEFAULT_IMAGE_SIZE
    seed: int = 42
    limit_per_source: int | None = None

    @property
    def run_dir(self) -> Path:
        """The run's artifact folder (created on first use)."""
        path = Path(self.runs_root) / self.run_name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def path(self, *parts: str) -> Path:
        """A path inside the run folder, with its parent folders created."""
        target = self.run_dir.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def folder(self, *parts: str) -> Path:
        """A folder inside the run folder, created if missing."""
        target = self.run_dir.joinpath(*parts)
        target.mkdir(parents=True, exist_ok=True)
        return target

    def cache_dir(self, kind: str) -> Path:
        """A cache shared by every run under the same runs folder (``runs/cache/<kind>``: ``features``,
        ``faces``): its entries are keyed by content, so runs and notebooks reuse them safely."""
        target = Path(self.runs_root) / "cache" / kind
        target.mkdir(parents=True, exist_ok=True)
        return target

    def figure_path(self, name: str) -> Path:
        """A stable report-figure path, e.g. ``figure_path('03_mobilenetv2_history.png')``."""
        folder = Path(self.figures_dir)
        folder.mkdir(parents=True, exist_ok=True)
        return folder / name


def make_config(run_name: str = "dev", data_root: str | None = None, figures_dir: str | None = None,
                runs_root: str | None = None, image_size: int = DEFAULT_IMAGE_SIZE, seed: int = 42,
                limit_per_source: int | None = None) -> RunConfig:
    """Build a :class:`RunConfig` from notebook parameters (relative paths are from the repo root;
    ``None`` means ``$FAKEFACE_FIGURES`` / ``$FAKEFACE_RUNS`` or the repository's folder)."""
    def _abs(p: str | None, default: Path) -> Path:
        if not p:
            return default
        path = Path(p).expanduser()
        return path if path.is_absolute() else REPO_ROOT / path

    return RunConfig(
        run_name=run_name,
        data_root=resolve_data_root(data_root),
        figures_dir=_abs(figures_dir, default_figures_dir()),
        runs_root=_abs(runs_root, default_runs_root()),
        image_size=image_size,
        seed=seed,
        limit_per_source=limit_per_source,
    )


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and Keras/TensorFlow so reruns give the same numbers on one machine."""
    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    try:
        import keras

        keras.utils.set_random_seed(seed)
    except ImportError:  # plotting-only use without TensorFlow
        pass


def apply_execution_mode() -> bool:
    """Run TensorFlow functions (Keras train, test and predict steps) eagerly when ``$FAKEFACE_EAGER``
    is ``"1"``; return whether it did.

    The smoke profile sets it for its kernels: on its tiny batches tracing a step costs more than
    graph execution saves (the nine smoke notebooks: 558 s traced, 347 s eager on 2 cores;
    ``benchmarks/README.md``). Every other run keeps graphs; ``tf.data`` functions are traced either way.
    """
    if os.environ.get(EAGER_ENV) != "1":
        return False
    import tensorflow as tf

    tf.config.run_functions_eagerly(True)
    return True


def save_run_config(cfg: RunConfig, **extra) -> Path:
    """Record the run's data root and settings so later notebooks of the run find them."""

    record = dict(run_name=cfg.run_name, data_root=str(cfg.data_root), image_size=cfg.image_size,
                  seed=cfg.seed, limit_per_source=cfg.limit_per_source, **extra)
    path = cfg.path("run_config.json")
    atomic.write_json(path, record, indent=2)
    return path


def load_run_config(run_name: str, runs_root: str | None = None, figures_dir: str | None = None,
                    image_size: int | None = None) -> RunConfig:
    """The :class:`RunConfig` recorded by notebook 01 for ``run_name`` (run notebook 01 first)."""
    import json

    root = Path(runs_root).expanduser() if runs_root else default_runs_root()
    root = root if root.is_absolute() else REPO_ROOT / root
    record_path = root / run_name / "run_config.json"
    if not record_path.is_file():
        raise FileNotFoundError(f"{record_path} not found: run notebook 01_data_collection with "
                                f"run_name={run_name!r} first (it scans and splits the data).")
    record = json.loads(record_path.read_text())
    cfg = make_config(run_name=run_name, data_root=record["data_root"], figures_dir=figures_dir,
                      runs_root=str(root), image_size=image_size or record["image_size"],
                      seed=record["seed"], limit_per_source=record["limit_per_source"])
    apply_execution_mode()
    return cfg
