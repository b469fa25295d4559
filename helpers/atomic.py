"""Writing files so that a crash, a full disk or a second process never leaves a torn one.

Every file the lab writes (results, tables, markers, provenance, caches, downloads, exports, models)
goes through this module: the bytes go to a temporary file in the target's own folder, are flushed
and fsynced, and the temporary is renamed over the target (an atomic step on one file system). On
any failure the temporary is removed and the previous file, if any, is left exactly as it was.
Two processes writing the same target each write their own temporary: the target ends up as the
whole output of the one that renamed last, never a mix.

Temporaries are named ``.<name>.tmp-<pid>-<token><suffix>`` (the suffix kept, because NumPy, Keras
and Pillow choose a format by it). A process killed mid-write leaves one behind;
:func:`sweep_temporaries` removes those whose process is gone.
"""

from __future__ import annotations

import io
import json
import os
import re
import secrets
import shutil
import time
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

TEMPORARY_PATTERN = re.compile(r"^\..+\.tmp-(?P<pid>\d+)-[0-9a-f]{8}")


def is_temporary(path: str | os.PathLike) -> bool:
    """Whether ``path`` is one of this module's temporaries (never a result to read, sync or list)."""
    return bool(TEMPORARY_PATTERN.match(Path(path).name))


def temporary_name(target: str | os.PathLike) -> Path:
    """A fresh temporary path beside ``target`` (same folder, same suffix), owned by this process."""
    target = Path(target)
    return target.with_name(f".{target.stem}.tmp-{os.getpid()}-{secrets.token_hex(4)}{target.suffix}")


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (a no-op where folders cannot be opened, e.g. Windows)."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def _fsync_tree(path: Path) -> None:
    """fsync a written file, or every file below a written folder."""
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    for file in files:
        with open(file, "rb") as handle:
            os.fsync(handle.fileno())


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """A temporary path to write ``target``'s new content to (a file or a folder), put in place on success.

    Use it for writers that want a file name (``np.savez``, ``model.save``, a TFLite converter's
    bytes, a SavedModel folder). When the ``with`` block ends without an exception the temporary is
    fsynced and renamed over ``target`` (a folder target is replaced whole); on an exception it is
    removed and ``target`` is untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_name(target)
    try:
        yield temporary
        if not temporary.exists():
            raise FileNotFoundError(f"nothing was written for {target.name}")
        _fsync_tree(temporary)
        if temporary.is_dir() and target.is_dir() and not target.is_symlink():
            old = temporary_name(target)
            target.rename(old)  # a folder cannot be renamed over a non-empty one: move the old one aside
            try:
                temporary.rename(target)
            except OSError:
                old.rename(target)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(temporary, target)
        _fsync_folder(target.parent)
    except BaseException:
        _remove(temporary)
        raise


@contextmanager
def atomic_open(target: str | os.PathLike, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """``open(target, mode)`` whose content replaces ``target`` only when the block ends without an error."""
    if not mode.startswith("w"):
        raise ValueError(f"atomic_open writes a whole file: mode 'w' or 'wb', not {mode!r}")
    with atomic_path(target) as temporary, open(temporary, mode, **kwargs) as handle:
        yield handle
        handle.flush()


def write_bytes(target: str | os.PathLike, data: bytes) -> Path:
    """Replace ``target`` with ``data`` atomically."""
    with atomic_open(target, "wb") as handle:
        handle.write(data)
    return Path(target)


def write_text(target: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Replace ``target`` with ``text`` atomically."""
    with atomic_open(target, "w", encoding=encoding, newline="") as handle:
        handle.write(text)
    return Path(target)


def write_json(target: str | os.PathLike, data: Any, **kwargs: Any) -> Path:
    """Replace ``target`` with ``data`` as JSON atomically (``kwargs`` go to :func:`json.dumps`)."""
    return write_text(target, json.dumps(data, **kwargs))


def write_csv(target: str | os.PathLike, frame, **kwargs: Any) -> Path:
    """Replace ``target`` with ``frame.to_csv(**kwargs)`` atomically (``index=False`` unless given)."""
    buffer = io.StringIO()
    frame.to_csv(buffer, **{"index": False, **kwargs})
    return write_text(target, buffer.getvalue())


UNREADABLE = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)  # what a cut-short file raises on load


def read_kept(path: str | os.PathLike, load: Callable[[Path], Any], what: str = "kept file") -> Any | None:
    """``load(path)`` for a kept cache file, or None: absent, or unreadable (cut short or damaged on disk),
    in which case it is removed with a warning and the caller computes it again."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return load(path)
    except UNREADABLE as exc:
        warnings.warn(f"{what} {path.name} is unreadable ({type(exc).__name__}): removed, computing it again",
                      stacklevel=3)
        path.unlink(missing_ok=True)
        return None


def kept_array(path: str | os.PathLike | None, make: Callable[[], Any], what: str = "kept array") -> Any:
    """The array kept at ``path`` (a ``.npy``), or ``make()``'s, written there whole before it is returned;
    an unreadable kept file is computed again (:func:`read_kept`). ``path`` None: ``make()``, nothing kept."""
    import numpy as np

    if path is None:
        return make()
    kept = read_kept(path, np.load, what)
    if kept is not None:
        return kept
    array = make()
    with atomic_path(path) as partial:
        np.save(partial, array)
    return array


def check_writable(folder: str | os.PathLike) -> Path:
    """Create ``folder`` if needed and prove a file can be written in it (a temporary, removed at once);
    ``OSError`` with the reason otherwise. For work that should fail before it starts, not after."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    probe = temporary_name(folder / "probe")
    try:
        probe.write_bytes(b"")
    finally:
        probe.unlink(missing_ok=True)
    return folder


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def sweep_temporaries(folder: str | os.PathLike, older_than_s: float = 3600.0) -> list[Path]:
    """Remove temporaries below ``folder`` left by writes that never finished; return what was removed.

    A temporary goes when the process that wrote it is gone, or when it is older than
    ``older_than_s`` (a reused process id cannot keep one forever). A live writer's are kept.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed, now = [], time.time()
    for path in sorted(folder.rglob(".*.tmp-*")):
        match = TEMPORARY_PATTERN.match(path.name)
        if not match or not path.parent.exists():  # not ours, or inside one already removed
            continue
        try:
            age = now - path.lstat().st_mtime
        except OSError:
            continue
        if not _process_alive(int(match["pid"])) or age > older_than_s:
            _remove(path)
            removed.append(path)
    return removed
