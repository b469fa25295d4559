"""What ``fakeface`` answers for and how it writes it: the entries of the inputs, and cells that are safe.

:func:`input_entries` lists every entry to answer for (files named, everything under folders named, hidden
files and empty folders with a reason of their own); :func:`spreadsheet_safe` neutralises cells a spreadsheet
would run as a formula, reversibly (:func:`spreadsheet_text`); :func:`shown_path` names a path for someone
who is not on this machine (the app), relative to the runs folder.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from helpers import config
from helpers.data import path_text


def has_odd_name(path: str | os.PathLike) -> bool:
    """True when the file name holds bytes that are not valid UTF-8 (written escaped by :func:`path_text`)."""
    return path_text(path) != os.fspath(path)


HIDDEN = "hidden (a name starting with '.'): not scored"
EMPTY_FOLDER = "empty folder: no files to score"
LINKED_FOLDER = "a link to a folder: not followed (name the folder itself to score what it holds)"
SPREADSHEET_TRIGGERS = ("=", "+", "-", "@", "\t", "\r", "'")  # "'" too, so that the escape can be undone


def input_entries(inputs: list[str | Path]) -> tuple[list[Path], dict[Path, str]]:
    """Every entry to answer for: files named directly, and everything under named folders (sorted).

    Each entry gets a row in the results: broken links, pipes, sockets and devices go to the
    loader, which says why they cannot be read; hidden files (a name or folder starting with
    ``.`` below the folder named), a folder with nothing in it (named, or found inside a named one) and a
    link to a folder inside a named one (not followed: it could loop, or lead out of the folder named) are
    answered with a reason of their own, returned in the second value (``{path: reason}``) and never opened.
    A folder named through a link, or inside a hidden folder, is the user's choice and is listed as usual.
    """
    entries: list[Path] = []
    reasons: dict[Path, str] = {}
    for item in map(Path, inputs):
        if not item.is_dir():
            entries.append(item)
            continue
        found = sorted(p for p in item.rglob("*") if not p.is_dir() or p.is_symlink() or _is_empty_folder(p))
        if not found:
            entries.append(item)
            reasons[item] = EMPTY_FOLDER
        for path in found:
            entries.append(path)
            if any(part.startswith(".") for part in path.relative_to(item).parts):
                reasons[path] = HIDDEN
            elif path.is_symlink() and path.is_dir():
                reasons[path] = LINKED_FOLDER
            elif path.is_dir():
                reasons[path] = EMPTY_FOLDER
    return entries, reasons


def _is_empty_folder(path: Path) -> bool:
    try:
        return path.is_dir() and not path.is_symlink() and next(path.iterdir(), None) is None
    except OSError:  # an unreadable folder: the loader says why
        return False


def image_files(inputs: list[str | Path]) -> list[Path]:
    """The entries of :func:`input_entries` that are worth opening (not hidden, not an empty folder)."""
    entries, reasons = input_entries(inputs)
    return [path for path in entries if path not in reasons]


def spreadsheet_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with every text cell a spreadsheet would run as a formula neutralised.

    A cell starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return gets a leading
    ``'`` (the usual rule, OWASP's "CSV injection"), and so does a cell holding a line break anywhere (a
    reader that splits it would start a line with what follows); so does one that already starts with ``'``,
    which makes the escape reversible: a cell that starts with ``'`` had exactly one added, so
    removing one leading ``'`` gives the original text (:func:`spreadsheet_text`).
    """
    def neutral(value):
        return "'" + value if isinstance(value, str) and needs_escape(value) else value

    return frame.apply(lambda column: column.map(neutral) if column.dtype == object or
                       pd.api.types.is_string_dtype(column) else column)


def needs_escape(cell: str) -> bool:
    """Whether :func:`spreadsheet_safe` prefixes ``cell`` with ``'``."""
    return cell.startswith(SPREADSHEET_TRIGGERS) or "\r" in cell or "\n" in cell


def spreadsheet_text(cell: str) -> str:
    """The original text of a cell written by :func:`spreadsheet_safe`."""
    return cell[1:] if cell.startswith("'") else cell


def shown_path(path: str | Path, root: str | Path | None = None) -> str:
    """A path as shown to someone who is not on this machine: relative to the runs folder (``runs/...``),
    never the server's absolute path; a path outside it is shown by its file name alone."""
    root = Path(root or config.default_runs_root()).resolve()
    path = Path(path)
    if path.is_absolute() and path.is_relative_to(root):
        return path_text(Path(root.name) / path.relative_to(root))
    return path_text(path.name if path.is_absolute() else path)


def shown_message(message: str, path: str | Path, root: str | Path | None = None) -> str:
    """``message`` with every mention of ``path`` as :func:`shown_path` gives it, on one line."""
    line = (message.strip().splitlines() or [""])[0]
    return line.replace(path_text(path), shown_path(path, root))
