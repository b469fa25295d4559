"""Downloads that resume, verify and write atomically; safe archive extraction; image import.

:func:`download` streams a URL (or copies a file from an offline mirror) into ``dest``
through ``dest.part`` with a progress bar, resumes an interrupted transfer with an HTTP
``Range`` request, checks size and SHA-256, and only then renames the file into place.
:func:`safe_extract` refuses archive members that would escape the target folder, links,
devices, and archives over size or file-count limits. :func:`import_images` brings files
into ``<root>/<label>/<source>/`` through the validated loader and records provenance.
"""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path, PurePosixPath

import pandas as pd

from helpers import atomic
from helpers.data import file_sha256, load_image

CHUNK = 1 << 16  # small enough that a dropped connection loses little
PROVENANCE_COLUMNS = ["path", "label", "source", "original_path", "origin", "licence", "sha256",
                      "status", "reason"]


class DownloadError(RuntimeError):
    """A download failed for good (after retries), with the URL and why."""


class ChecksumError(DownloadError):
    """The downloaded bytes do not match the expected size or SHA-256."""


class ArchiveError(RuntimeError):
    """An archive cannot be extracted (corrupt, not an archive, or its members clash); names the archive."""


class UnsafeArchiveError(ArchiveError):
    """An archive member would escape the target folder, is a link or device, or limits are exceeded."""


def _verify(path: Path, sha256: str | None, size: int | None) -> None:
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        raise ChecksumError(f"{path.name}: size {actual_size} != expected {size}")
    if sha256:
        actual = file_sha256(path)
        if actual != sha256.lower():
            raise ChecksumError(f"{path.name}: sha256 {actual} != expected {sha256}")


class _StartOver(ConnectionError):
    """The partial file cannot be resumed (416, or a 206 at the wrong offset): it was removed, fetch again."""


def _content_range(header: str | None) -> tuple[int | None, int | None]:
    """``(first byte, total size)`` of a ``Content-Range`` header; ``None`` for what it does not say."""
    if not header or not header.startswith("bytes "):
        return None, None
    span, _, total = header[len("bytes "):].partition("/")
    first = int(span.split("-")[0]) if span[:1].isdigit() else None
    return first, (int(total) if total.isdigit() else None)


def _stream_http(url: str, part: Path, session, progress: bool, timeout: float,
                 expected_size: int | None = None) -> int | None:
    """Append the rest of ``url`` to ``part`` (Range from its current size); return the total size.

    The server's answer is checked, not trusted: a 416 means "done" only when the partial
    file has the size known in advance (or announced by the server); a 206 must start where
    the partial file ends; the bytes received must equal what ``Content-Length`` announced.
    Anything else removes the partial file and raises :class:`_StartOver` (retried from zero).
    """
    from tqdm.auto import tqdm

    have = part.stat().st_size if part.exists() else 0
    if expected_size is not None and have > expected_size:  # left over from another file
        part.unlink()
        have = 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    with session.get(url, stream=True, timeout=timeout, headers=headers) as response:
        if response.status_code == 416:
            _, announced = _content_range(response.headers.get("Content-Range"))
            known = expected_size if expected_size is not None else announced
            if have and known is not None and have == known:
                return have
            part.unlink(missing_ok=True)
            raise _StartOver(f"the server refused to resume at byte {have} (416): starting over")
        response.raise_for_status()
        total = None
        if response.status_code == 206:
            first, total = _content_range(response.headers.get("Content-Range"))
            if first != have:
                part.unlink(missing_ok=True)
                raise _StartOver(f"asked for bytes from {have}, the server sent from {first}: starting over")
        elif have:  # server ignored Range and sent the whole file: start over
            have = 0
        length = response.headers.get("Content-Length")
        if total is None and length is not None:
            total = have + int(length)
        mode = "ab" if have else "wb"
        with open(part, mode) as handle, tqdm(total=total, initial=have, unit="B", unit_scale=True,
                                              desc=part.name.removesuffix(".part"),
                                              disable=not progress) as bar:
            for block in response.iter_content(CHUNK):
                handle.write(block)
                bar.update(len(block))
    received = part.stat().st_size
    if total is not None and received < total:
        raise ConnectionError(f"connection closed at {received} of {total} bytes")
    if total is not None and received > total:
        part.unlink()
        raise _StartOver(f"received {received} bytes, more than the {total} announced: starting over")
    return total


def download(url: str, dest: str | os.PathLike, sha256: str | None = None, size: int | None = None,
             mirror: str | os.PathLike | None = None, retries: int = 4, progress: bool = True,
             timeout: float = 60.0, session=None) -> Path:
    """Fetch ``url`` to ``dest``: resumable, verified, atomic; a no-op if ``dest`` already verifies.

    With ``mirror``, the file named like ``dest`` is copied from that folder instead (offline
    labs keep a folder of the same archives). Raises :class:`ChecksumError` on a mismatch
    (the partial file is deleted) and :class:`DownloadError` after ``retries`` failed attempts.
    """
    import requests

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        try:
            _verify(dest, sha256, size)
            return dest
        except ChecksumError:
            dest.unlink()
    part = dest.with_name(dest.name + ".part")
    if mirror is not None:
        source = Path(mirror) / dest.name
        if not source.is_file():
            raise DownloadError(f"{dest.name} is not in the mirror folder {mirror}")
        shutil.copyfile(source, part)
    else:
        session = session or requests.Session()
        total = None
        for attempt in range(1, retries + 1):
            try:
                total = _stream_http(url, part, session, progress, timeout, expected_size=size)
                break
            except (requests.ConnectionError, requests.Timeout, ConnectionError,
                    requests.exceptions.ChunkedEncodingError) as exc:
                if attempt == retries:
                    raise DownloadError(f"{url}: failed after {retries} attempts ({exc})") from exc
                time.sleep(min(2 ** attempt * 0.25, 10))
            except requests.HTTPError as exc:
                raise DownloadError(f"{url}: HTTP {exc.response.status_code}") from exc
        size = size if size is not None else total
    try:
        _verify(part, sha256, size)
    except ChecksumError:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, dest)
    return dest


def contained_path(folder: str | os.PathLike, relative: str) -> Path | None:
    """Where a remote name (an object key below its prefix, an archive member) lands inside ``folder``,
    or None when it would land anywhere else: empty, absolute, with ``.`` or ``..`` or empty parts, a
    backslash, a drive colon, a NUL or another control byte, or resolving (through links already
    on disk) outside ``folder``."""
    parts = relative.split("/")
    if (not relative or relative.startswith("/") or any(part in ("", ".", "..") for part in parts)
            or ":" in parts[0] or any(ord(c) < 32 or c in "\\\x7f" for c in relative)):
        return None
    folder = Path(folder).resolve()
    target = (folder / relative).resolve()
    return target if target.is_relative_to(folder) and target != folder else None


def _check_member(name: str, target: Path) -> PurePosixPath:
    if contained_path(target, name.removeprefix("./").removesuffix("/")) is None:
        raise UnsafeArchiveError(f"member {name!r} would be written outside {target}")
    return PurePosixPath(name)


def safe_extract(archive: str | os.PathLike, target: str | os.PathLike, max_files: int = 200_000,
                 max_bytes: int = 20 * 1024**3) -> list[Path]:
    """Extract a zip or tar archive into ``target`` after checking every member; return file paths.

    Rejects absolute paths, ``..`` components, symbolic and hard links, devices, more than
    ``max_files`` members and more than ``max_bytes`` uncompressed. Extraction goes to a
    temporary folder first, so a rejected archive leaves nothing behind.
    """
    archive, target = Path(archive), Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=target.parent))
    try:
        _extract_checked(archive, target, staging, max_files, max_bytes)
    except ArchiveError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, tarfile.TarError, EOFError, OSError) as exc:
        raise ArchiveError(f"{archive.name}: cannot be extracted ({type(exc).__name__}: {exc})") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return sorted(p for p in target.rglob("*") if p.is_file())


def _extract_checked(archive: Path, target: Path, staging: Path, max_files: int, max_bytes: int) -> None:
    """Check every member, extract into ``staging``, then move the result into ``target``."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            members = [m for m in zf.infolist() if not m.is_dir()]
            _limits(len(members), sum(m.file_size for m in members), max_files, max_bytes, archive)
            for member in members:
                _check_member(member.filename, target)
                if stat.S_ISLNK(member.external_attr >> 16):
                    raise UnsafeArchiveError(f"member {member.filename!r} is a symbolic link")
            for member in members:
                zf.extract(member, staging)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            members = [m for m in tf.getmembers() if not m.isdir()]
            _limits(len(members), sum(m.size for m in members), max_files, max_bytes, archive)
            for member in members:
                _check_member(member.name, target)
                if not member.isfile():
                    raise UnsafeArchiveError(f"member {member.name!r} is a link or device")
            tf.extractall(staging, members=members, filter="data")
    else:
        raise UnsafeArchiveError(f"{archive.name} is neither a zip nor a tar archive")
    target.mkdir(parents=True, exist_ok=True)
    for item in staging.iterdir():
        destination = target / item.name
        if destination.is_dir():
            shutil.rmtree(destination)
        elif destination.exists():
            destination.unlink()
        shutil.move(str(item), destination)


def _limits(count: int, total: int, max_files: int, max_bytes: int, archive: Path) -> None:
    if count > max_files:
        raise UnsafeArchiveError(f"{archive.name}: {count} files > limit {max_files}")
    if total > max_bytes:
        raise UnsafeArchiveError(f"{archive.name}: {total / 1e9:.1f} GB uncompressed > limit "
                                 f"{max_bytes / 1e9:.1f} GB")


def import_images(files: list[tuple[Path, str]], root: str | os.PathLike, label: str, source: str,
                  origin: str, licence: str, progress: bool = True) -> pd.DataFrame:
    """Copy validated images into ``root/label/source/`` as ``<sha8>_<name>``; return provenance.

    ``files`` pairs each file with its original path (inside the archive or folder). Files
    the loader rejects are not copied but appear in the provenance with their reason; files
    already imported (same name) are left as they are.
    """
    from tqdm.auto import tqdm

    folder = Path(root) / label / source
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for path, original in tqdm(files, desc=f"importing {label}/{source}", disable=not progress):
        loaded = load_image(path, draft=64)
        row = dict(label=label, source=source, original_path=original, origin=origin, licence=licence)
        if not loaded.ok:
            rows.append(dict(row, path="", sha256="", status="rejected", reason=loaded.error))
            continue
        digest = file_sha256(path)
        name = f"{digest[:8]}_{Path(original).name}"
        destination = folder / name
        if not destination.exists():
            with atomic.atomic_path(destination) as temporary:
                shutil.copyfile(path, temporary)
        rows.append(dict(row, path=destination.relative_to(root).as_posix(), sha256=digest,
                         status="converted" if loaded.conversions else "ok",
                         reason="; ".join(loaded.conversions)))
    return pd.DataFrame(rows, columns=PROVENANCE_COLUMNS)

