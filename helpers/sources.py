"""The registry of public face sources (``data/sources.yml``) and fetching one into the data folder.

A source says what it is (label, generator, licence, citation), where it comes from (a
public GitHub repository archive at a pinned commit, an HTTP archive, a Kaggle dataset, or a
local folder), which paths inside hold the images, and what content to expect: a pin file
(``data/pins/<folder>.csv``: each file's name and md5) lists exactly the files to import.
:func:`fetch_source` downloads (or reads from an offline mirror), extracts safely, keeps the
pinned files (a cached archive that lacks some is removed and fetched again once), imports
them through the validated loader into ``<root>/<label>/<folder>/`` and appends provenance;
a second run is a no-op. ``python -m helpers.sources --check NAME`` checks a folder against
its pins; ``--pin NAME --pin-from DIR`` writes a pin file from a folder of files.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd
import yaml

from helpers import atomic, config
from helpers import pins as pins_module
from helpers.config import REPO_ROOT
from helpers.download import ChecksumError, download, import_images, safe_extract

REGISTRY = REPO_ROOT / "data" / "sources.yml"
PINS_DIR = REPO_ROOT / "data"
MIRROR_ENV = "FAKEFACE_MIRROR"
GITHUB_ENV = "FAKEFACE_GITHUB"  # base URL of GitHub archives: a mirror or proxy; default https://github.com
IMAGE_SUFFIXES = pins_module.IMAGE_SUFFIXES


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
    sha256: str | None = None   # of the archive, where its bytes are stable (not GitHub's archives)
    size: int | None = None     # of the archive, likewise
    files: str | None = None
    parts: list[dict] | None = None  # several repositories that make one source: each {repo, ref, include}
    reencode: str | None = None      # "jpeg": the pinned files were re-encoded from the upstream ones
    expected_count: int | None = None
    notes: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def archive_name(self) -> str:
        """File name of the archive, in the download cache and in an offline mirror."""
        return f"{self.name}.zip" if self.kind == "github" else Path(self.url or self.name).name

    @property
    def archive_url(self) -> str | None:
        """Where the archive is downloaded from (a source of several parts: its first part's)."""
        if self.parts:
            return self.archives()[0].archive_url
        if self.kind == "github":
            base = (os.environ.get(GITHUB_ENV) or "https://github.com").rstrip("/")
            return f"{base}/{self.repo}/archive/{self.ref}.zip"
        return self.url

    def archives(self) -> list[Source]:
        """The archives this source is fetched from: itself, or one per entry of ``parts``."""
        if not self.parts:
            return [self]
        return [replace(self, name=f"{self.name}-{k}", parts=None, **part) for k, part in enumerate(self.parts, 1)]

    def pins(self) -> pd.DataFrame | None:
        """The pinned files (``name``, ``md5``, ``sha256``; :mod:`helpers.pins`) this source must deliver, or None."""
        if not self.files:
            return None
        return pd.read_csv(PINS_DIR / self.files, dtype=str, keep_default_na=False)


def write_pins(folder: str | os.PathLike, out: str | os.PathLike) -> pd.DataFrame:
    """Pin the image files under ``folder`` (:func:`helpers.pins.write_pins`)."""
    return pins_module.write_pins(folder, out)


def check_pins(source: Source, folder: str | os.PathLike) -> dict:
    """Compare the image files under ``folder`` with ``source``'s pins: counts of matched, missing, unexpected."""
    pins = source.pins()
    if pins is None:
        raise ValueError(f"{source.name} has no pin file")
    return dict(source=source.name, **pins_module.check_folder(pins, folder))


def load_registry(path: str | os.PathLike = REGISTRY) -> dict[str, Source]:
    """All sources of the registry, by name."""
    entries = yaml.safe_load(Path(path).read_text())["sources"]
    known = set(Source.__dataclass_fields__)
    sources = {}
    for entry in entries:
        extra = {k: v for k, v in entry.items() if k not in known}
        sources[entry["name"]] = Source(**{k: v for k, v in entry.items() if k in known}, extra=extra)
    return sources


def default_sample(path: str | os.PathLike = REGISTRY) -> list[str]:
    """The registry's ``sample:`` list: the pinned sources that make the lab's face sample."""
    return list(yaml.safe_load(Path(path).read_text()).get("sample") or [])


def unreachable_reason(url: str, timeout: float = 5.0) -> str | None:
    """Why ``url``'s server cannot be reached from here (``None`` when a TCP connection opens)."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            return None
    except OSError as exc:
        return f"{parts.hostname}:{port} cannot be reached ({exc})"


def ensure_face_data(fetch_sources: list[str], data_root: str | os.PathLike | None = None,
                     collect_root: str | os.PathLike | None = None, mirror: str | os.PathLike | None = None,
                     registry_path: str | os.PathLike = REGISTRY, fetch_when_missing: bool = True,
                     progress: bool = True) -> pd.DataFrame | None:
    """Notebook 01's data step: fetch ``fetch_sources``; with none named and no face data found,
    fetch the registry's default sample (when online or a mirror is set) into ``collect_root``
    (default ``$FAKEFACE_DATA`` or ``data/faces``). Returns what was fetched, or ``None``.

    Offline with no data and no mirror, or with ``fetch_when_missing=False``, the loader's
    :class:`~helpers.config.DataNotFoundError` (every place looked at) is raised, with the reason
    the sample could not be fetched.
    """
    registry = load_registry(registry_path)
    collect = Path(collect_root).expanduser() if collect_root else config.default_collect_root()
    collect = collect if collect.is_absolute() else REPO_ROOT / collect
    if fetch_sources:
        return fetch_many(list(fetch_sources), collect, mirror=mirror, registry=registry, progress=progress)
    try:
        print("face data:", config.resolve_data_root(data_root))
        return None
    except config.DataNotFoundError as missing:
        names = default_sample(registry_path)
        if not fetch_when_missing or data_root or not names:
            raise
        mirror = mirror or os.environ.get(MIRROR_ENV)
        reason = None if mirror else unreachable_reason(registry[names[0]].archive_url)
        if reason:
            raise config.DataNotFoundError(f"{missing}\nThe default sample could not be fetched: {reason}.") \
                from missing
        print(f"No face data found: fetching the registry's default sample ({len(names)} sources) into {collect}")
        return fetch_many(names, collect, mirror=mirror, registry=registry, progress=progress)


def registry_table(sources: dict[str, Source]) -> pd.DataFrame:
    """The registry as a table, for notebook 01."""
    def where(s: Source) -> str | None:
        return s.repo or ", ".join(part["repo"] for part in s.parts or []) or s.url or s.dataset or s.path

    return pd.DataFrame([dict(name=s.name, label=s.label, folder=s.folder, generator=s.generator or "",
                              kind=s.kind, where=where(s), expected=s.expected_count, licence=s.licence)
                         for s in sources.values()])


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


Chosen = list[tuple[Path, str]]  # (file, its path inside the archive or folder)


def _choose(source: Source, candidates: Chosen, workdir: Path, origin: str) -> pins_module.Choice:
    """The pinned files among ``candidates`` (all of them without pins), re-encoded where the source says."""
    if not candidates:
        raise SourceUnavailable(f"{source.name}: no images match {source.include} in {origin}")
    return pins_module.choose(candidates, source.pins(), source.reencode, workdir)


def _fetch_archives(source: Source, cache: Path, mirror, progress: bool) -> tuple[list[Path], pins_module.Choice]:
    """Download (or reuse) and extract each of the source's archives and choose their files.

    A bad archive is never kept for the next fetch: one that fails extraction (an HTML error page,
    a truncated zip) is deleted from the cache before the error is raised, and when pinned files
    are missing every archive is deleted and fetched once more, then :class:`ChecksumError`.
    Returns the temporary folders to remove after the import, and the choice.
    """
    parts = source.archives()
    for attempt in (1, 2):
        folders: list[Path] = []
        archives: list[Path] = []
        try:
            candidates: Chosen = []
            for part in parts:
                archives.append(download(part.archive_url, cache / part.archive_name, sha256=part.sha256,
                                         size=part.size, mirror=mirror, progress=progress))
                folders.append(Path(tempfile.mkdtemp(prefix=f"{part.name}-", dir=cache)))
                candidates += _selected(safe_extract(archives[-1], folders[-1]), folders[-1], part.include)
            folders.append(Path(tempfile.mkdtemp(prefix=f"{source.name}-made-", dir=cache)))
            choice = _choose(source, candidates, folders[-1], _origin(source))
        except Exception:
            _discard(folders, archives)
            for part in parts[len(archives):]:  # the one whose download or extraction failed
                (cache / part.archive_name).unlink(missing_ok=True)
            raise
        if not choice.missing:
            return folders, choice
        _discard(folders, archives)
        if attempt == 2:
            raise ChecksumError(f"{source.name}: {choice.missing} pinned files are missing or changed in "
                                f"{_origin(source)} (fetched twice); the upstream differs from the pins")
        print(f"{source.name}: the cached archives lack {choice.missing} pinned files; fetching them again")
    raise AssertionError("unreachable")


def _discard(folders: list[Path], archives: list[Path] = ()) -> None:
    """Remove a fetch's temporary folders and, when given, its cached archives (a bad one is never kept)."""
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)
    for archive in archives:
        archive.unlink(missing_ok=True)


def _origin(source: Source) -> str:
    """Where a fetched source's files come from: its archive URL (several, space-separated, for parts)."""
    return " ".join(part.archive_url or "" for part in source.archives())


def fetch_source(source: Source, root: str | os.PathLike, mirror: str | os.PathLike | None = None,
                 cache_dir: str | os.PathLike | None = None, progress: bool = True) -> pd.DataFrame:
    """Bring one source into ``root/<label>/<folder>/``; return its provenance rows.

    A marker file records a completed import, so re-running is a no-op. ``mirror`` (or
    ``$FAKEFACE_MIRROR``) names a folder holding the same archives for offline machines.
    """
    root = Path(root)
    marker = root / source.label / source.folder / f".fetched-{source.name}.json"
    provenance_path = root / "provenance.csv"
    done = read_marker(marker)
    if done is not None:
        print(f"{source.name}: already imported ({done['imported']} images); nothing to do")
        existing = pd.read_csv(provenance_path, keep_default_na=False) if provenance_path.exists() else None
        return existing[existing["origin"] == done["origin"]] if existing is not None else pd.DataFrame()
    mirror = mirror or os.environ.get(MIRROR_ENV)
    if source.kind in ("local", "kaggle"):
        if source.kind == "local":
            base = Path(source.path).expanduser()
            base = base if base.is_absolute() else (REPO_ROOT / base).resolve()
            origin = str(base)
        else:
            base, origin = _kaggle_folder(source), f"kaggle:{source.dataset}"
            print(f"WARNING {source.name}: Kaggle files are not verified (no pins: a dataset's versions "
                  "cannot be checked from this lab); compare the counts below with the dataset page")
        folders = [Path(tempfile.mkdtemp(prefix=f"{source.name}-made-"))]
        try:
            candidates = _selected(sorted(p for p in base.rglob("*") if p.is_file()), base, source.include)
            choice = _choose(source, candidates, folders[0], origin)
        except BaseException:
            shutil.rmtree(folders[0], ignore_errors=True)
            raise
        if choice.missing:
            shutil.rmtree(folders[0], ignore_errors=True)
            raise ChecksumError(f"{source.name}: {choice.missing} pinned files are missing or changed in {origin}")
    else:
        cache = Path(cache_dir) if cache_dir else config.default_downloads_dir()
        folders, choice = _fetch_archives(source, cache, mirror, progress)
        origin = _origin(source)
    try:
        provenance = import_images(choice.kept, root, source.label, source.folder, origin, source.licence,
                                   progress)
    finally:
        _discard(folders)
    for position, (path, _) in enumerate(choice.kept):  # re-encoded files: their upstream path and how
        if path in choice.notes and provenance.at[position, "status"] != "rejected":
            upstream, note = choice.notes[path]
            provenance.at[position, "original_path"] = upstream
            provenance.at[position, "status"] = "converted"
            provenance.at[position, "reason"] = "; ".join(filter(None, [note, provenance.at[position, "reason"]]))
    skipped = pd.DataFrame(choice.left_out, columns=["path", "original_path", "sha256", "status", "reason"])
    if len(skipped):
        provenance = pd.concat([provenance, skipped.assign(label=source.label, source=source.folder, origin=origin,
                                                           licence=source.licence)], ignore_index=True)
    imported = int(provenance["status"].isin(["ok", "converted"]).sum())
    if source.expected_count and imported != source.expected_count:
        print(f"WARNING {source.name}: imported {imported} images, the registry expects "
              f"{source.expected_count} (the upstream may have changed)")
    record_provenance(provenance_path, provenance, origin)
    atomic.write_json(marker, dict(source=source.name, imported=imported, origin=origin,
                                   rejected=int((provenance["status"] == "rejected").sum())))
    return provenance


def read_marker(marker: Path) -> dict | None:
    """A completed import's marker, or None: absent, or unreadable (a write cut short before markers were
    written atomically), in which case it is removed with a note and the source is imported again."""
    if not marker.exists():
        return None
    try:
        done = json.loads(marker.read_text())
        if {"imported", "origin"} <= set(done):
            return done
    except (OSError, ValueError, TypeError):
        pass
    print(f"{marker.name}: unreadable import marker removed; importing the source again")
    marker.unlink(missing_ok=True)
    return None


def record_provenance(provenance_path: Path, rows: pd.DataFrame, origin: str) -> None:
    """Put one import's provenance ``rows`` in ``provenance_path`` in place of any earlier rows from the same
    ``origin`` (an import cut short, then run again, lists each image once), atomically."""
    if provenance_path.exists():
        earlier = pd.read_csv(provenance_path, keep_default_na=False, dtype=str)
        rows = pd.concat([earlier[earlier["origin"] != origin], rows], ignore_index=True)
    atomic.write_csv(provenance_path, rows)


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
    """``python -m helpers.sources --list``, ``--fetch NAME...``, ``--check NAME...`` or ``--pin NAME --pin-from DIR``.

    ``--check`` exits 1 when a folder differs from its pins (a file missing, changed or unexpected).
    """
    import argparse

    parser = argparse.ArgumentParser(description="List, fetch, pin or check the public face sources of "
                                                 "data/sources.yml")
    parser.add_argument("--list", action="store_true", help="print the registry")
    parser.add_argument("--fetch", nargs="*", default=[], help="source names to fetch")
    parser.add_argument("--check", nargs="*", default=[], help="check these sources' folders under --root "
                                                               "against their pins (md5 of every file)")
    parser.add_argument("--pin", metavar="NAME", help="write NAME's pin file from the images under --pin-from")
    parser.add_argument("--pin-from", metavar="DIR", help="folder of the files to pin")
    parser.add_argument("--root", default=str(REPO_ROOT / "data" / "faces"), help="face data root")
    parser.add_argument("--mirror", default=None, help=f"offline folder of archives (or ${MIRROR_ENV})")
    args = parser.parse_args(argv)
    registry = load_registry()
    if args.list or not (args.fetch or args.check or args.pin):
        print(registry_table(registry).to_string(index=False))
    if args.pin:
        source = registry[args.pin]
        if not (args.pin_from and source.files):
            parser.error(f"--pin needs --pin-from DIR and a `files:` entry for {args.pin} in the registry")
        pins = write_pins(args.pin_from, PINS_DIR / source.files)
        print(f"pinned {len(pins)} files of {args.pin} in {PINS_DIR / source.files}")
    if args.fetch:
        print(fetch_many(args.fetch, args.root, args.mirror, registry).to_string(index=False))
    if args.check:
        checks = pd.DataFrame([check_pins(registry[name], Path(args.root) / registry[name].label / registry[name].folder)
                               for name in args.check])
        print(checks.to_string(index=False))
        return int(bool((checks["missing"] + checks["unexpected"]).any()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
