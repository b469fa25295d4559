"""What a registry source must deliver, and choosing exactly that from what was fetched.

A pin file (``data/pins/<folder>.csv``) lists every file of a source by ``name``, ``md5`` and
``sha256``; files are matched by SHA-256 (md5 alone where an old pin file has no ``sha256``
column). A GitHub archive at a pinned commit is not byte-stable (GitHub rebuilds it), so its
files are pinned, not the archive.

A source whose upstream files are not the sample's bytes says how they were made from them
(``reencode: jpeg`` in the registry): its pin file also names each file's ``repo``,
``upstream_path``, ``upstream_md5`` and ``jpeg_quality``. An upstream file is accepted only when
its md5 is that ``upstream_md5`` (the only digest the provenance records), then re-encoded with
Pillow at that quality, as the sample was made. Whether the result is the pinned bytes depends
on the JPEG encoder (same Pillow and libjpeg-turbo: the same bytes); either way the provenance
says which. A file that already has the pinned SHA-256 (a mirror of the lab's sample) is kept
as it is.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from helpers import atomic
from helpers.data import file_digest

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
PIN_COLUMNS = ["name", "md5", "sha256"]


def pin_digest(pins: pd.DataFrame) -> str:
    """The digest a pin file is matched by: ``sha256`` when every row has one, else ``md5``."""
    if "sha256" in pins.columns and pins["sha256"].str.fullmatch(r"[0-9a-f]{64}").all():
        return "sha256"
    return "md5"


def image_paths(folder: str | os.PathLike) -> list[Path]:
    """The image files under ``folder`` (by suffix), sorted."""
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def write_pins(folder: str | os.PathLike, out: str | os.PathLike) -> pd.DataFrame:
    """Pin the image files under ``folder``: ``name`` (without a ``<hash8>_`` prefix), ``md5``, ``sha256``."""
    rows = []
    for path in image_paths(folder):
        name, md5 = path.name, file_digest(path, "md5")
        sha256 = file_digest(path, "sha256")
        prefix, _, rest = name.partition("_")
        short = rest if rest and len(prefix) == 8 and (md5.startswith(prefix) or sha256.startswith(prefix)) else name
        rows.append(dict(name=short, md5=md5, sha256=sha256))
    pins = pd.DataFrame(rows, columns=PIN_COLUMNS).sort_values(["name", "md5"])
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    atomic.write_csv(out, pins)
    return pins


def check_folder(pins: pd.DataFrame, folder: str | os.PathLike) -> dict:
    """Counts of pinned, matched, missing and unexpected files of ``folder`` against ``pins``."""
    digest = pin_digest(pins)
    found = {file_digest(p, digest) for p in image_paths(folder)}
    pinned = set(pins[digest])
    return dict(pinned=len(pinned), matched=len(found & pinned), missing=len(pinned - found),
                unexpected=len(found - pinned))


def reencode_jpeg(path: str | os.PathLike, quality: int) -> bytes:
    """An upstream image re-encoded as the lab's sample was: Pillow, RGB, JPEG at ``quality`` (4:2:0)."""
    from PIL import Image

    with Image.open(path) as image:
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, "JPEG", quality=int(quality))
    return buffer.getvalue()


@dataclass
class Choice:
    """What :func:`choose` keeps of a fetch: files to import, rows for what it left out, what is missing."""

    kept: list[tuple[Path, str]] = field(default_factory=list)  # (file, name it is imported under)
    left_out: list[dict] = field(default_factory=list)
    missing: int = 0
    notes: dict[Path, tuple[str, str]] = field(default_factory=dict)  # file -> (upstream path, how it was made)


def choose(candidates: list[tuple[Path, str]], pins: pd.DataFrame | None, reencode: str | None,
           workdir: Path) -> Choice:
    """Keep each pinned file once from ``candidates`` (file, its path upstream); see the module doc."""
    choice = Choice()
    if pins is None:
        choice.kept = list(candidates)
        return choice
    digest = pin_digest(pins)
    wanted = {row[digest]: row for row in pins.to_dict("records")}
    by_upstream = {row["upstream_md5"]: row for row in pins.to_dict("records")} if reencode else {}
    seen: set[str] = set()
    for path, original in candidates:
        value = file_digest(path, digest)
        row = wanted.get(value)
        note = None
        if row is None and by_upstream:
            row = by_upstream.get(file_digest(path, "md5"))
            if row is not None and row[digest] not in seen:
                path, note = _reencoded(path, row, digest, workdir)
                value = row[digest]
        if row is None or value in seen:
            why = "a copy of a file already kept" if value in seen else "not in the source's pinned file list"
            choice.left_out.append(dict(path="", original_path=original, sha256="", status="skipped", reason=why))
            continue
        seen.add(value)
        name = row["name"] if reencode else original
        choice.kept.append((path, name))
        if note:
            choice.notes[path] = (original, note)
    choice.missing = len(set(wanted) - seen)
    return choice


def _reencoded(upstream: Path, row: dict, digest: str, workdir: Path) -> tuple[Path, str]:
    """The upstream file re-encoded to ``workdir`` under its pinned name, and what the provenance says."""
    from PIL import __version__ as pillow

    target = workdir / row[digest][:16] / row["name"]
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_bytes(target, reencode_jpeg(upstream, int(row["jpeg_quality"])))
    same = file_digest(target, digest) == row[digest]
    note = (f"upstream md5 {row['upstream_md5']} verified; re-encoded to JPEG quality {row['jpeg_quality']} "
            f"with Pillow {pillow}: " + ("the pinned bytes exactly" if same else
                                         "other bytes than the pinned ones (another JPEG encoder build)"))
    return target, note
