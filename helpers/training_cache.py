"""Trained-model cache: a training that repeats one already done is read back instead of run again.

Training here is deterministic: the same code, data, model, settings and seed give the same weights
(two processes trained bit-identical detectors, ``tests/test_finetuned.py``; a re-run of the whole
sample series reproduced every table, metric and figure, docs/findings.md). So re-running an
unchanged training only costs time — most of a warm ``make reproduce`` (notebook 08's protocol
folds and served model, notebooks 03/04's detectors, 09's custom CNN).
:func:`helpers.train.train_two_stage` keeps each training it runs under a key that covers
everything deciding its outcome, and reads it back when the key comes again:

- **code**: the source of the helpers modules that train and make the data, with every helpers
  module they import (followed through the source, :func:`code_fingerprint`), and the versions of
  TensorFlow, Keras and NumPy;
- **model**: its architecture (``to_json``, :func:`architecture`) and a checksum of every initial
  weight and random-generator state (:func:`weights_checksum`);
- **data**: the data folder and the rows trained and validated on (path, label, source, split) with
  each file's size and modification time (:func:`data_fingerprint`) — re-made face crops are new
  data, and augmentation copies are seeded by the file's path;
- **settings**: epochs, learning rates, the share unfrozen, patience, seed, batch size, recipe.

An entry is ``<cache>/<key>/`` (``runs/cache/trained``): each stage's checkpoint and per-epoch log,
and ``entry.json`` (the stages' summaries, the original training time, when it was made), written
to a temporary folder and renamed, so a crash never leaves half an entry. A result read back says so
(``from_cache`` in its notes; the tables still show the training's own time). Set
``FAKEFACE_RETRAIN=1`` (``python -m helpers.reproduce --retrain``) to train everything again: the new
result replaces the entry. Any edit of a module in the closure, a comment included, is a new
training: the key errs towards training again. Entries are never pruned (about 40 MB each for the
sample's MobileNetV2 detectors, 110 MB for ResNet50): delete ``runs/cache/trained`` to reclaim them.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import os
import shutil
import time
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd

from helpers import atomic

RETRAIN_ENV = "FAKEFACE_RETRAIN"
ENTRY_FILE = "entry.json"


def retrain_requested() -> bool:
    """Whether ``$FAKEFACE_RETRAIN`` asks to train again instead of reading cached trainings."""
    return os.environ.get(RETRAIN_ENV, "").strip().lower() not in ("", "0", "false", "no")


def _helpers_imports(source: str) -> set[str]:
    """The helpers modules a module's source imports, anywhere in it (functions' local imports too)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "helpers":
                found |= {f"helpers.{alias.name}" for alias in node.names}
            elif node.module.startswith("helpers."):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("helpers.")}
    return found


@cache
def _module_source(name: str) -> str | None:
    """A module's source, read once per process: the key describes the code this process loaded (a
    module edited while a notebook's kernel runs is a new key from the next kernel on)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    return Path(spec.origin).read_text(encoding="utf-8")


def module_closure(*modules: str) -> list[str]:
    """``modules`` and every helpers module they import, transitively (sorted)."""
    seen, todo = set(), list(modules)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        source = _module_source(name)
        if source is None:  # a name imported from helpers that is not a module (a function)
            continue
        seen.add(name)
        todo.extend(_helpers_imports(source) - seen)
    return sorted(seen)


def code_fingerprint(*modules: str) -> str:
    """A checksum of the source of :func:`module_closure` of ``modules``, with the versions of the
    libraries that train (a change in any of them is a new training)."""
    import keras
    import tensorflow as tf

    digest = hashlib.sha1(json.dumps([tf.__version__, keras.__version__, np.__version__]).encode())
    for name in module_closure(*modules):
        digest.update(name.encode() + b"\0" + _module_source(name).encode() + b"\0")
    return digest.hexdigest()


def architecture(model) -> str:
    """``model``'s architecture as JSON, its layers' names replaced by their order: Keras numbers
    unnamed layers per session (``dense_3``), and a model built again is the same model."""
    config, names = json.loads(model.to_json()), []

    def collect(value) -> None:  # every serialized layer's name, in the config's order
        if isinstance(value, dict):
            if "class_name" in value and isinstance(value.get("config"), dict) and "name" in value["config"]:
                names.append(value["config"]["name"])
            for item in value.values():
                collect(item)
        elif isinstance(value, list):
            for item in value:
                collect(item)

    collect(config)
    order = {name: f"layer{i}" for i, name in enumerate(dict.fromkeys(names))}

    def canonical(value):
        if isinstance(value, dict):
            return {key: canonical(item) for key, item in value.items()}
        if isinstance(value, list):
            return [canonical(item) for item in value]
        return order.get(value, value) if isinstance(value, str) else value

    return json.dumps(canonical(config), sort_keys=True)


def weights_checksum(model) -> str:
    """A checksum of every variable of ``model``: weights and random-generator states (its initial
    state, when called before training)."""
    digest = hashlib.sha1()
    for weight in model.variables:
        value = np.ascontiguousarray(np.asarray(weight))
        digest.update(f"{value.dtype}|{value.shape}".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def data_fingerprint(frame: pd.DataFrame, root: str | Path) -> str:
    """A checksum of the rows (path, label, source, split, in order) and of each file's size and
    modification time under ``root`` (a missing file counts as such: the training would fail anyway)."""
    columns = [c for c in ("path", "label", "source", "split") if c in frame.columns]
    digest = hashlib.sha1(str(Path(root).resolve()).encode())
    for row in frame[columns].astype(str).itertuples(index=False):
        try:
            info = (Path(root) / row[0]).stat()
            stamp = f"{info.st_size}|{info.st_mtime_ns}"
        except OSError:
            stamp = "missing"
        digest.update(("|".join(row) + "|" + stamp + "\n").encode())
    return digest.hexdigest()


def training_key(parts: dict) -> str:
    """The key of one training: a checksum of ``parts`` (JSON, keys sorted)."""
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def lookup(cache_dir: str | Path, key: str) -> tuple[Path, dict] | None:
    """``(entry folder, entry)`` of a stored training, or ``None`` (absent, retraining requested, or an entry
    that cannot be read back whole: it is removed with a warning, and the caller trains afresh)."""
    folder = Path(cache_dir) / key
    if retrain_requested() or not (folder / ENTRY_FILE).is_file():
        return None
    problem = entry_problem(folder)
    if problem is None:
        return folder, json.loads((folder / ENTRY_FILE).read_text())
    warnings.warn(f"cached training {key} is unreadable ({problem}): removed, computing it again", stacklevel=2)
    shutil.rmtree(folder, ignore_errors=True)
    return None


def entry_problem(folder: Path) -> str | None:
    """Why a stored entry cannot be used (its record unreadable, a listed file missing, an archive's
    checksums wrong), or None."""
    try:
        entry = json.loads((folder / ENTRY_FILE).read_text())
        for name in entry.get("files", {}).values():
            path = folder / name
            if not path.is_file():
                return f"{name} is missing"
            if path.suffix in (".keras", ".npz"):  # zip archives: every member's CRC checked
                with zipfile.ZipFile(path) as archive:
                    broken = archive.testzip()
                if broken is not None:
                    return f"{name}: member {broken} is corrupt"
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, zlib.error) as exc:
        return f"{type(exc).__name__}: {exc}"[:200]
    return None


def store(cache_dir: str | Path, key: str, files: dict[str, Path], entry: dict) -> Path:
    """Keep ``files`` (name in the entry -> file to copy; missing ones are skipped) and ``entry``
    under ``key``, atomically: written to a temporary folder, then renamed over any older entry."""
    target = Path(cache_dir) / key
    try:
        with atomic.atomic_path(target) as staging:  # retrained (FAKEFACE_RETRAIN): the new entry replaces the old
            staging.mkdir()
            kept = {}
            for name, source in files.items():
                if Path(source).is_file():
                    shutil.copyfile(source, staging / name)
                    kept[name] = name
            entry = {**entry, "files": kept, "stored": time.strftime("%Y-%m-%d %H:%M:%S")}
            (staging / ENTRY_FILE).write_text(json.dumps(entry, indent=2, default=str))
    except OSError:  # another process stored the same training meanwhile: keep its entry
        if not (target / ENTRY_FILE).is_file():
            raise
    return target


@dataclass
class CacheSpec:
    """Where :func:`helpers.train.train_two_stage` keeps a training, and what its data is.

    ``data``: what identifies the training and validation data and how they are fed (fingerprints
    from :func:`data_fingerprint`, image size, batch size, seed, recipe); ``code``: the helpers
    modules that make that data (``helpers.train`` is always included, with all they import).
    """

    cache_dir: Path
    data: dict
    code: tuple[str, ...] = ()

    def key(self, model, settings: dict) -> str:
        """The key of training ``model`` (as it is now, before training) with ``settings`` on this data."""
        return training_key(dict(code=code_fingerprint("helpers.train", *self.code), model=architecture(model),
                                 weights=weights_checksum(model), data=self.data, settings=settings))
