"""Reading face images: the one validated loader and the manifest scan.

Every image in the project enters through :func:`load_image`. It never raises for a bad
file: it returns a :class:`LoadedImage` whose ``error`` says why the file was rejected,
or whose ``conversions`` say what was done to make it a plain 8-bit RGB array
(EXIF rotation, CMYK, 16-bit, grayscale, alpha, palette). :func:`scan_folder` runs the
loader over a ``<label>/<source>/<file>`` tree and returns a manifest in which every
file appears, rejected ones with their reason.
"""

from __future__ import annotations

import hashlib
import os
import stat
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from helpers.decoding import (  # noqa: F401 - DecodeBudget, MAX_JPEG_SCANS: part of this module's interface
    MAX_JPEG_SCANS,
    DeadlineFile,
    DecodeBudget,
    DecodeLimits,
    DecodeTimeout,
    MiB,
)
from helpers.decoding import decode_into as _decode

LABELS = ("real", "fake")
LABEL_TO_INT = {"real": 0, "fake": 1}
DEFAULT_MAX_BYTES = 50 * 1024 * 1024  # 50 MB on disk
DEFAULT_MAX_PIXELS = 64_000_000  # 8000 x 8000
DEFAULT_MAX_DECODE_BYTES = 448 * MiB  # peak working memory of one decode (helpers.decoding.decode_cost)
DEFAULT_MAX_SIDE = 4096  # full-resolution loads are downscaled to this longest side
DEFAULT_DECODE_BUDGET = 448 * MiB  # what concurrent decodes of one scan or prediction may hold at once
DEFAULT_MAX_SECONDS = 20.0  # one file's decode (and its preparation) stops after this, on 2 CPU cores
MANIFEST_COLUMNS = ["path", "label", "source", "file_size", "width", "height", "format", "mode",
                    "sha256", "phash", "status", "reason", "pair_id"]


def labels_of(frame: pd.DataFrame) -> np.ndarray:
    """Integer labels (1 = fake) of a frame, in row order."""
    return frame["label"].map(LABEL_TO_INT).astype(int).to_numpy()


class ImageLoadError(RuntimeError):
    """An image that passed the scan failed to load later (file changed on disk)."""


@dataclass
class LoadedImage:
    """Result of :func:`load_image`.

    ``image`` is an ``H x W x 3`` uint8 array, or None when ``error`` is set. ``width`` and
    ``height`` are those of the file as displayed (after EXIF rotation), before any resize.
    """

    path: Path
    image: np.ndarray | None = None
    width: int = 0
    height: int = 0
    format: str = ""
    mode: str = ""
    conversions: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def required(self, name: str | os.PathLike) -> np.ndarray:
        """The image of a file the scan accepted; :class:`ImageLoadError` (named ``name``) if it fails now."""
        if self.error is not None:
            raise ImageLoadError(f"{name}: {self.error} (re-run the scan in notebook 01)")
        return self.image


def _file_problem(path: Path) -> str | None:
    """Why ``path`` cannot be an image file before it is opened (missing, link, folder, device), or None."""
    try:
        info = path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            return f"broken symbolic link (its target {os.readlink(path)!r} does not exist)"
        return "cannot read file: no such file"
    except OSError as exc:
        return f"cannot read file: {exc.strerror or exc}"
    if stat.S_ISDIR(info.st_mode):
        return "a folder, not an image file"
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file (a pipe, socket or device)"
    return None


def _open_for_reading(path: Path):
    """The file opened in binary mode (one place, so tests can make it unreadable)."""
    return open(path, "rb")


def load_image(path: str | os.PathLike, size: int | None = None, *,
               max_bytes: int = DEFAULT_MAX_BYTES, max_pixels: int = DEFAULT_MAX_PIXELS,
               max_decode_bytes: int = DEFAULT_MAX_DECODE_BYTES, max_side: int = DEFAULT_MAX_SIDE,
               min_side: int | None = None, draft: int | None = None,
               budget: DecodeBudget | None = None, max_seconds: float = DEFAULT_MAX_SECONDS,
               prepare: Callable[[np.ndarray], np.ndarray] | None = None) -> LoadedImage:
    """Load one image file as 8-bit RGB, validating it; never raises for a bad file.

    Memory is bounded before any pixel is decoded: the header gives the size and the decode's
    peak working memory (:func:`~helpers.decoding.decode_cost`), JPEGs are decoded already scaled
    down (``draft``) and JPEG 2000 files reduced, a file whose decode would need more than
    ``max_decode_bytes`` is rejected, and large decodes are reduced by an integer factor
    before any conversion. Time is bounded too: a progressive JPEG with more than
    :data:`MAX_JPEG_SCANS` scans is rejected before decoding, and a decode still running after
    ``max_seconds`` is stopped with the reason "took longer than ...". With ``budget``, the decode
    waits until its bytes fit in a budget shared with other threads.

    Args:
        path: the image file.
        size: if given, resize to ``size x size`` (bilinear, antialiased).
        max_bytes: files larger than this on disk are rejected.
        max_pixels: images with more pixels than this are rejected before decoding.
        max_decode_bytes: images whose decoded form (after JPEG draft scaling) needs more
            memory than this are rejected before decoding.
        max_side: without ``size``, images whose longest side is larger are downscaled to at
            most this, by the smallest integer factor that fits (recorded in ``conversions``).
        min_side: images whose shortest side is smaller are rejected (too small to judge).
        draft: let JPEG decoding shrink by a power of two down to at least this size
            (much faster for large files); defaults to ``size``.
        budget: a :class:`~helpers.decoding.DecodeBudget` shared by concurrent loads.
        max_seconds: a decode (from the moment its memory is reserved) and ``prepare`` together
            stop after this many seconds.
        prepare: a function applied to the decoded array inside the same reservation (e.g. a
            re-encoding and resize), so that its working memory is bounded too.

    Returns:
        A :class:`LoadedImage`; check ``.ok`` / ``.error``.
    """
    path = Path(path)
    result = LoadedImage(path=path)
    result.error = _file_problem(path)
    if result.error:
        return result
    n_bytes = path.stat().st_size
    if n_bytes == 0:
        result.error = "empty file (0 bytes)"
        return result
    if n_bytes > max_bytes:
        result.error = f"file too large: {n_bytes / 1e6:.1f} MB > limit {max_bytes / 1e6:.1f} MB"
        return result
    try:
        handle = DeadlineFile(_open_for_reading(path))
    except OSError as exc:
        result.error = f"cannot read file: {exc.strerror or exc}"
        return result
    limits = DecodeLimits(max_pixels, max_decode_bytes, max_side, min_side, max_seconds, n_bytes)
    try:
        with handle, warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            warnings.simplefilter("ignore", UserWarning)  # a corrupt file's decoder notes: its reason says enough
            with Image.open(handle) as img:
                _decode(img, handle, result, size, limits, draft, budget, prepare)
    except DecodeTimeout:
        result.error = f"took longer than {max_seconds:g} s to decode (the limit for one file)"
    except UnidentifiedImageError:
        result.error = "not an image (format not recognised)"
    except Image.DecompressionBombError as exc:
        result.error = f"image too large (decompression bomb guard): {exc}"
    except MemoryError:
        result.error = "image too large to decode in memory"
    except Exception as exc:  # noqa: BLE001 - any decoder failure on hostile bytes is this file's reason
        result.error = f"truncated or corrupt image: {type(exc).__name__}: {exc}"[:300]
    if result.error:
        result.image = None
    return result


def file_digest(path: str | os.PathLike, algorithm: str = "sha256", chunk: int = 1 << 20) -> str:
    """Hex digest (``sha256``, ``md5``, ...) of a file, read in chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    return file_digest(path, "sha256")


def perceptual_hash(image: np.ndarray) -> str:
    """64-bit DCT perceptual hash (``imagehash.phash``) of an RGB array, as 16 hex digits."""
    import imagehash

    return str(imagehash.phash(Image.fromarray(image)))


def path_text(path: str | os.PathLike) -> str:
    """A path as valid UTF-8 text: bytes of a file name that are not UTF-8 become ``\\xNN`` escapes."""
    return os.fspath(path).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


ROOT_FILES = {"manifest.csv", "provenance.csv", "pairs.csv", "SOURCES.md", "README.md"}  # a data root's own files
LAB_MARKERS = (".fetched-",)  # hidden files the lab itself writes into a source folder (helpers.sources)


def _layout_problem(root: Path, entry: Path) -> tuple[str, str, str]:
    """``(label, source, reason)`` of a file under ``root``; ``reason`` is empty when it fits the layout."""
    rel = entry.relative_to(root).as_posix()
    parts = entry.relative_to(root).parts
    label = parts[0].lower() if len(parts) > 1 else ""
    source = parts[1] if len(parts) > 2 else ""
    if rel != path_text(rel):
        return label, source, ("file name is not valid UTF-8 (written here with \\x escapes): rename the file, "
                               "e.g. with convmv")
    if len(parts) == 1:
        return "", "", "a file in the data root, outside the <label>/<source>/<file> layout (left out)"
    if label not in LABELS:
        return "", "", f"top folder '{parts[0]}' is not one of {LABELS} (left out)"
    if len(parts) < 3:
        return label, "", "file not inside a <label>/<source>/ folder"
    if any(part.startswith(".") for part in parts[1:]):
        return label, source, "hidden (a name starting with '.'): left out"
    return label, source, ""


def list_image_files(root: str | os.PathLike, limit_per_source: int | None = None,
                     seed: int = 0) -> pd.DataFrame:
    """List files under ``root/<label>/<source>/`` (recursively) with their label and source.

    Every entry met gets a row: files whose place does not fit the layout (a folder or file
    beside ``real/`` and ``fake/``, a file directly under a label), hidden files, pipes, sockets
    and devices (the loader says why they cannot be read), and names that are not valid UTF-8
    are kept with ``status='rejected'`` and the reason, so they are reported, not dropped.
    Only the data root's own files (:data:`ROOT_FILES`) and the lab's fetch markers are not
    rows. With ``limit_per_source``, a seeded hash of the path picks a deterministic subset of
    each source.
    """
    root = Path(root)
    rows = []
    for entry in sorted(root.rglob("*")):
        if entry.is_dir() and not entry.is_symlink() or entry.name.startswith(LAB_MARKERS):
            continue  # folders hold files; broken links are kept and reported by the loader
        if entry.parent == root and entry.name in ROOT_FILES:
            continue
        label, source, reason = _layout_problem(root, entry)
        rows.append(dict(path=path_text(entry.relative_to(root).as_posix()), label=label, source=source,
                         status="rejected" if reason else "", reason=reason))
    files = pd.DataFrame(rows, columns=["path", "label", "source", "status", "reason"])
    if limit_per_source:
        order = files["path"].map(lambda p: hashlib.sha256(f"{seed}:{p}".encode()).hexdigest())
        files = (files.assign(_order=order).sort_values(["label", "source", "_order"])
                 .groupby(["label", "source"], sort=True).head(limit_per_source)
                 .drop(columns="_order").sort_values("path"))
    return files.reset_index(drop=True)


def _describe_file(root: Path, row: dict, max_pixels: int, budget: DecodeBudget | None = None) -> dict:
    full = root / row["path"]
    loaded = load_image(full, draft=128, max_pixels=max_pixels, budget=budget)
    record = dict(row)
    record.update(file_size=full.stat().st_size if full.is_file() else 0, width=loaded.width,
                  height=loaded.height, format=loaded.format, mode=loaded.mode)
    if not loaded.ok:
        record.update(status="rejected", reason=loaded.error, sha256="", phash="")
        return record
    record.update(sha256=file_sha256(full), phash=perceptual_hash(loaded.image),
                  status="converted" if loaded.conversions else "ok",
                  reason="; ".join(loaded.conversions))
    return record


def scan_folder(root: str | os.PathLike, limit_per_source: int | None = None, seed: int = 0,
                workers: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
                progress: bool = True) -> pd.DataFrame:
    """Scan a face folder into a manifest (see ``MANIFEST_COLUMNS``); every file gets a row.

    Each file goes through :func:`load_image`; ``status`` is ``ok``, ``converted`` (with what
    was converted in ``reason``) or ``rejected`` (with why). Hashing and decoding run on a
    thread pool whose decodes share one memory budget.
    """
    from tqdm.auto import tqdm

    root = Path(root)
    files = list_image_files(root, limit_per_source=limit_per_source, seed=seed)
    todo = [r for r in files.to_dict("records") if r["status"] != "rejected"]
    misplaced = [dict(r, file_size=0, width=0, height=0, format="", mode="", sha256="", phash="")
                 for r in files.to_dict("records") if r["status"] == "rejected"]
    budget = DecodeBudget(DEFAULT_DECODE_BUDGET)
    with ThreadPoolExecutor(max_workers=workers or min(8, (os.cpu_count() or 2) * 2)) as pool:
        described = list(tqdm(pool.map(lambda r: _describe_file(root, r, max_pixels, budget), todo),
                              total=len(todo), desc="scanning images", disable=not progress))
    manifest = pd.DataFrame(described + misplaced, columns=MANIFEST_COLUMNS)
    manifest["pair_id"] = pair_ids(root, manifest["path"])
    return manifest.sort_values("path").reset_index(drop=True)


def pair_ids(root: str | os.PathLike, paths: pd.Series) -> pd.Series:
    """The ``pair_id`` of each path from ``<root>/pairs.csv`` (a real face and the fake made from it)."""
    pairs_file = Path(root) / "pairs.csv"
    if not pairs_file.exists():
        return pd.Series("", index=paths.index)
    pairs = pd.read_csv(pairs_file, keep_default_na=False)
    lookup = dict(zip(pairs["real_path"], pairs["pair_id"]))
    lookup.update(zip(pairs["fake_path"], pairs["pair_id"]))
    return paths.map(lambda p: lookup.get(p, ""))


def usable(manifest: pd.DataFrame) -> pd.DataFrame:
    """Rows whose image loaded (``ok`` or ``converted``)."""
    return manifest[manifest["status"] != "rejected"].reset_index(drop=True)


def rejected_report(manifest: pd.DataFrame) -> pd.DataFrame:
    """Rejected files with their reasons, for display in a notebook."""
    return manifest.loc[manifest["status"] == "rejected", ["path", "label", "source", "reason"]]


def summarize_manifest(manifest: pd.DataFrame) -> pd.DataFrame:
    """Counts per label and source, with status breakdown and typical size/format."""
    grouped = manifest.groupby(["label", "source"])
    summary = grouped.agg(
        files=("path", "size"),
        ok=("status", lambda s: int((s == "ok").sum())),
        converted=("status", lambda s: int((s == "converted").sum())),
        rejected=("status", lambda s: int((s == "rejected").sum())),
        median_width=("width", "median"),
        median_height=("height", "median"),
        formats=("format", lambda s: ",".join(sorted(set(s) - {""}))),
        mean_kb=("file_size", lambda s: round(float(s.mean()) / 1024, 1)),
    )
    return summary.reset_index()


def resize_square(array: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize to ``size x size`` of a uint8 RGB image or a float map (e.g. a [0, 1] heatmap)."""
    if array.dtype == np.uint8:
        return np.asarray(Image.fromarray(array).resize((size, size), Image.Resampling.BILINEAR))
    resized = Image.fromarray(array.astype(np.float32)).resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(resized)
