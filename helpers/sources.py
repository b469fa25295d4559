"""The registry of public face sources (``data/sources.yml``) and fetching one into the data folder.

A source says what it is (label, generator, licence, citation), where it comes from (a
public GitHub repository archive, an HTTP archive, a Kaggle dataset, or a local folder),
which paths inside hold the images, and how many to expect. :func:`fetch_source` downloads
(or reads from an offline mirror), extracts safely, imports through the validated loader
into ``<root>/<label>/<folder>/`` and appends provenance; a second run is a no-op.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from helpers.config import REPO_ROOT
from helpers.download import download, import_images, safe_extract

REGISTRY = REPO_ROOT / "data" / "sources.yml"
MIRROR_ENV = "FAKEFACE_MIRROR"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}


class SourceUnavailable(RuntimeError):
    """A source cannot be fetched here (no credentials, no network and no mirror); says why."""


@dataclass
class Source:
    """One entry of the registry."""

    name: str
    label: str
    folder: str
    kind: str
    licence: str
    citation: str
    include: list[str]
    generator: str | None = None
    repo: str | None = None
    ref: str = "HEAD"
    url: str | None = None
    dataset: str | None = None
    path: str | None = None
    sha256: str | None = None
    expected_count: int | None = None
    notes: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def archive_name(self) -> str:
        """File name of the archive, in the download cache and in an offline mirror."""
        return f"{self.name}.zip" if self.kind == "github" else Path(self.url or self.name).name

    @property
    def archive_url(self) -> str | None:
        if self.kind == "github":
            return f"https://github.com/{self.repo}/archive/{self.ref}.zip"
        return self.url


def load_registry(path: str | os.PathLike = REGISTRY) -> dict[str, Source]:
    """All sources of the registry, by name."""
    entries = yaml.safe_load(Path(path).read_text())["sources"]
    known = set(Source.__dataclass_fields__)
    sources = {}
    for entry in entries:
        extra = {k: v for k, v in entry.items() if k not in known}
        sources[entry["name"]] = Source(**{k: v for k, v in entry.items() if k in known}, extra=extra)
    return sources


def registry_table(sources: dict[str, Source]) -> pd.DataFrame:
    """The registry as a table, for notebook 01."""
    return pd.DataFrame([dict(name=s.name, label=s.label, folder=s.folder, generator=s.generator or "",
                              kind=s.kind, where=s.repo or s.url or s.dataset or s.path,
                              expected=s.expected_count, licence=s.licence) for s in sources.values()])


def _selected(files: list[Path], base: Path, include: list[str]) -> list[tuple[Path, str]]:
    chosen = []
    for path in files:
        relative = path.relative_to(base).as_posix()
        if path.suffix.lower() in IMAGE_SUFFIXES and any(fnmatch.fnmatch(relative, pat) for pat in include):
            chosen.append((path, relative))
    return chosen


def _kaggle_folder(source: Source) -> Path:
    has_credentials = (os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY")) or \
        (Path.home() / ".kaggle" / "kaggle.json").exists()
    if not has_credentials:
        raise SourceUnavailable(f"{source.name}: Kaggle credentials not set (KAGGLE_USERNAME and "
                                "KAGGLE_KEY, or ~/.kaggle/kaggle.json)")
    try:
        import kagglehub
    except ImportError as exc:
        raise SourceUnavailable(f"{source.name}: pip install kagglehub to fetch Kaggle datasets") from exc
    return Path(kagglehub.dataset_download(source.dataset))


def fetch_source(source: Source, root: str | os.PathLike, mirror: str | os.PathLike | None = None,
                 cache_dir: str | os.PathLike | None = None, progress: bool = True) -> pd.DataFrame:
    """Bring one source into ``root/<label>/<folder>/``; return its provenance rows.

    A marker file records a completed import, so re-running is a no-op. ``mirror`` (or
    ``$FAKEFACE_MIRROR``) names a folder holding the same archives for offline machines.
    """
    root = Path(root)
    marker = root / source.label / source.folder / f".fetched-{source.name}.json"
    provenance_path = root / "provenance.csv"
    if marker.exists():
        done = json.loads(marker.read_text())
        print(f"{source.name}: already imported ({done['imported']} images); nothing to do")
        existing = pd.read_csv(provenance_path, keep_default_na=False) if provenance_path.exists() else None
        return existing[existing["origin"] == done["origin"]] if existing is not None else pd.DataFrame()
    mirror = mirror or os.environ.get(MIRROR_ENV)
    if source.kind == "local":
        base = Path(source.path).expanduser()
        base = base if base.is_absolute() else (REPO_ROOT / base).resolve()
        files = sorted(p for p in base.rglob("*") if p.is_file())
        origin = str(base)
    elif source.kind == "kaggle":
        base = _kaggle_folder(source)
        files = sorted(p for p in base.rglob("*") if p.is_file())
        origin = f"kaggle:{source.dataset}"
    else:
        cache = Path(cache_dir or REPO_ROOT / "data" / "downloads")
        archive = download(source.archive_url, cache / source.archive_name, sha256=source.sha256,
                           mirror=mirror, progress=progress)
        base = Path(tempfile.mkdtemp(prefix=f"{source.name}-", dir=cache))
        files = safe_extract(archive, base)
        origin = source.archive_url
    try:
        chosen = _selected(files, base, source.include)
        if not chosen:
            raise SourceUnavailable(f"{source.name}: no images match {source.include} in {origin}")
        provenance = import_images(chosen, root, source.label, source.folder, origin, source.licence,
                                   progress)
    finally:
        if source.kind in ("github", "http"):
            shutil.rmtree(base, ignore_errors=True)
    imported = int((provenance["status"] != "rejected").sum())
    if source.expected_count and imported != source.expected_count:
        print(f"WARNING {source.name}: imported {imported} images, the registry expects "
              f"{source.expected_count} (the upstream may have changed)")
    header = not provenance_path.exists()
    provenance.to_csv(provenance_path, mode="a", header=header, index=False)
    marker.write_text(json.dumps(dict(source=source.name, imported=imported, origin=origin,
                                      rejected=int(len(provenance) - imported))))
    return provenance


def fetch_many(names: list[str], root: str | os.PathLike, mirror: str | os.PathLike | None = None,
               registry: dict[str, Source] | None = None, progress: bool = True) -> pd.DataFrame:
    """Fetch several sources; one unavailable here (e.g. no Kaggle credentials) is skipped with its reason."""
    registry = registry or load_registry()
    rows = []
    for name in names:
        if name not in registry:
            raise KeyError(f"unknown source {name!r}; known: {sorted(registry)}")
        try:
            provenance = fetch_source(registry[name], root, mirror=mirror, progress=progress)
            status = provenance["status"] if "status" in provenance else pd.Series(dtype=str)
            rows.append(dict(source=name, status="imported", images=int((status != "rejected").sum()),
                             rejected=int((status == "rejected").sum())))
        except SourceUnavailable as exc:
            print(f"skipped {name}: {exc}")
            rows.append(dict(source=name, status=f"skipped: {exc}", images=0, rejected=0))
    return pd.DataFrame(rows, columns=["source", "status", "images", "rejected"])


def main(argv: list[str] | None = None) -> int:
    """``python -m helpers.sources --list`` or ``--fetch NAME... [--root DIR] [--mirror DIR]``."""
    import argparse

    parser = argparse.ArgumentParser(description="List or fetch the public face sources of data/sources.yml")
    parser.add_argument("--list", action="store_true", help="print the registry")
    parser.add_argument("--fetch", nargs="*", default=[], help="source names to fetch")
    parser.add_argument("--root", default=str(REPO_ROOT / "data" / "faces"), help="face data root to fill")
    parser.add_argument("--mirror", default=None, help=f"offline folder of archives (or ${MIRROR_ENV})")
    args = parser.parse_args(argv)
    registry = load_registry()
    if args.list or not args.fetch:
        print(registry_table(registry).to_string(index=False))
    if args.fetch:
        print(fetch_many(args.fetch, args.root, args.mirror, registry).to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
