"""Decoding images within a memory bound: cost from the header, a shared budget, cheap conversions.

:func:`helpers.data.load_image` is the only caller. The cost of decoding a file is known
from its header before a single pixel is decoded (Pillow's in-memory bytes per pixel times
the pixels left after JPEG's draft scaling); :class:`DecodeBudget` lets several threads
decode at once while their reserved bytes stay under one total; :func:`to_rgb` converts
any mode to 8-bit RGB without float64 copies of the whole image (high bit depths are
scaled in bands of rows); :func:`read_ahead` decodes the next files in a background thread while
the caller works on the current one (notebook 02's annotators).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image

MiB = 1 << 20
# Bytes per pixel in Pillow's own storage (RGB is stored as 4 bytes a pixel).
_PILLOW_BYTES_PER_PIXEL = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}
HIGH_BIT_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
_BAND_ROWS = 256
Item, Result = TypeVar("Item"), TypeVar("Result")


def decoded_bytes(width: int, height: int, mode: str) -> int:
    """Bytes Pillow holds for a decoded ``width x height`` image of ``mode``."""
    return width * height * _PILLOW_BYTES_PER_PIXEL.get(mode, 4)


def jpeg_scale(width: int, height: int, mode: str, side: int | None, longest_side: int, max_bytes: int) -> int:
    """The JPEG draft scale (1, 2, 4 or 8) to decode at.

    The largest scale that keeps the shorter side >= ``side`` (a resize target), or without
    one the longer side >= ``longest_side``; a coarser one where the decode would otherwise
    need more than ``max_bytes``.
    """
    scale = 1
    while scale < 8:
        w, h = -(-width // (2 * scale)), -(-height // (2 * scale))
        keeps_detail = min(w, h) >= side if side else max(w, h) >= longest_side
        too_big = decoded_bytes(-(-width // scale), -(-height // scale), mode) > max_bytes
        if not (keeps_detail or too_big):
            break
        scale *= 2
    return scale


class DecodeBudget:
    """A byte budget shared by threads that decode images at the same time.

    ``with budget.reserve(n): ...`` waits until ``n`` bytes fit under ``total`` next to the
    reservations already held, so a folder of large images is decoded a few at a time
    instead of one per thread. A single reservation larger than ``total`` runs alone.
    """

    def __init__(self, total: int) -> None:
        if total <= 0:
            raise ValueError(f"a decode budget must be positive, not {total}")
        self.total = total
        self.in_use = 0
        self.peak = 0
        self._free = threading.Condition()

    @contextmanager
    def reserve(self, n_bytes: int):
        with self._free:
            self._free.wait_for(lambda: self.in_use == 0 or self.in_use + n_bytes <= self.total)
            self.in_use += n_bytes
            self.peak = max(self.peak, self.in_use)
        try:
            yield
        finally:
            with self._free:
                self.in_use -= n_bytes
                self._free.notify_all()


def high_bit_depth_to_l(img: Image.Image) -> Image.Image:
    """16/32-bit integer or float grey to 8-bit ``L``, scaled by the peak, one band of rows at a time."""
    width, height = img.size
    full_scale = 65535.0 if img.mode.startswith("I;16") else None
    if full_scale is None:  # 32-bit I or F: 0..255 stays as is, larger values scale to their peak
        _, high = img.getextrema()
        full_scale = 255.0 if high <= 255 else float(high)
    out = np.empty((height, width), np.uint8)
    for top in range(0, height, _BAND_ROWS):
        band = np.asarray(img.crop((0, top, width, min(height, top + _BAND_ROWS))), dtype=np.float32)
        out[top:top + band.shape[0]] = np.clip(np.rint(band * (255.0 / full_scale)), 0, 255)
    return Image.fromarray(out, mode="L")


def to_8_bit(img: Image.Image, conversions: list[str]) -> Image.Image:
    """A 16/32-bit or float grey image as 8-bit ``L`` (recorded in ``conversions``); any other image as it is."""
    if img.mode not in HIGH_BIT_DEPTH_MODES:
        return img
    conversions.append(f"{img.mode} (high bit depth) -> 8-bit")
    return high_bit_depth_to_l(img)


def to_rgb(img: Image.Image, conversions: list[str]) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB, recording what was done in ``conversions``."""
    if img.mode == "RGB":
        return img
    img = to_8_bit(img, conversions)
    mode = img.mode
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        conversions.append(f"{mode} with alpha -> RGB on white")
        return Image.alpha_composite(background, rgba).convert("RGB")
    names = {"L": "grayscale", "1": "1-bit", "CMYK": "CMYK", "P": "palette", "YCbCr": "YCbCr",
             "LAB": "Lab", "HSV": "HSV"}
    conversions.append(f"{names.get(mode, mode)} -> RGB")
    return img.convert("RGB")


def shrink_to(img: Image.Image, longest_side: int) -> Image.Image:
    """Reduce by the smallest integer factor (box filter, cheap) that brings the longest side to ``longest_side`` or less."""
    factor = -(-max(img.size) // max(longest_side, 1))
    if factor < 2 or img.mode in ("P", "1"):  # palette and 1-bit images are left to the RGB conversion
        return img
    return img.reduce(factor)


def peak_rss_mib() -> float:
    """This process's peak resident memory in MiB (Linux ``VmHWM``; it starts afresh in a new process)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise OSError("VmHWM is not in /proc/self/status (not Linux?)")


def read_ahead(items: Iterable[Item], load: Callable[[Item], Result], depth: int = 4) -> Iterator[Result]:
    """``load(item)`` for every item, yielded in order, computed by one background thread at most ``depth``
    items ahead of the caller: decoding (which releases the GIL) overlaps the caller's own work, and at most
    ``depth + 1`` results exist at once. Stopping early waits for the loads already started, then returns."""
    if depth < 1:
        raise ValueError(f"depth must be at least 1, not {depth}")
    remaining = iter(items)
    with ThreadPoolExecutor(max_workers=1) as reader:
        pending = deque(reader.submit(load, item) for _, item in zip(range(depth), remaining))
        while pending:
            result = pending.popleft().result()
            for item in remaining:  # one more started for the one taken
                pending.append(reader.submit(load, item))
                break
            yield result
