"""Decoding images within a memory and time bound: cost from the header, a shared budget, a deadline.

:func:`helpers.data.load_image` is the only caller. The cost of decoding a file is known
from its header before a single pixel is decoded (:func:`decode_cost`: each format's measured
working memory at the size it decodes to, after JPEG's draft scaling or JPEG 2000's reduction,
a progressive JPEG's coefficient buffers, and the conversions after it); a progressive JPEG's
scans are counted before it is decoded (:func:`jpeg_scan_count`), and :class:`DeadlineFile`
stops a decode that reads past its deadline; :class:`DecodeBudget` lets several threads
decode at once while their reserved bytes stay under one total; :func:`to_rgb` converts
any mode to 8-bit RGB without float64 copies of the whole image (high bit depths are
scaled in bands of rows); :func:`read_ahead` decodes the next files in a background thread while
the caller works on the current one (notebook 02's annotators).
"""

from __future__ import annotations

import io
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image, ImageOps

MiB = 1 << 20
MAX_JPEG_SCANS = 100  # libjpeg writes 10 scans for a progressive colour JPEG; every scan is a pass over the image
_READ_BLOCK = 16 * 1024  # how much a decoder reads between deadline checks
_ORIENTATIONS = range(1, 9)
_ROTATING_ORIENTATIONS = {5, 6, 7, 8}
# Bytes per pixel in Pillow's own storage (RGB is stored as 4 bytes a pixel).
_PILLOW_BYTES_PER_PIXEL = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}
HIGH_BIT_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
_BAND_ROWS = 256
# Peak working memory of a decode, in bytes per pixel of the size decoded to, measured on 2,000-8,000 px
# files with Pillow 12 (benchmarks/bench_decode_memory.py): libwebp's canvas and its copies; OpenJPEG's
# 32-bit planes; a palette image converted to RGB at full size. Other formats: Pillow's own storage,
# twice for images with alpha (compositing on white).
_DECODER_BYTES_PER_PIXEL = {"WEBP": 17, "JPEG2000": 20}
_READ_WHOLE = ("WEBP", "JPEG2000")  # their decoders hold the whole compressed file in memory too
_HIGH_BIT_DEPTH_EXTRA = 2  # a 16/32-bit image's 8-bit copy and its bands of float rows, per pixel
_PALETTE_BYTES_PER_PIXEL = 5
_OUTPUT_BYTES_PER_PIXEL = 12  # conversions, resizes and the NumPy copy after the decode, per output pixel
_PREPARE_BYTES_PER_PIXEL = 9  # a preparation of the decoded array (a JPEG re-encoding and its decode, a resize)
_DECODE_OVERHEAD = 16 * MiB
JPEG_COEFFICIENT_BYTES = 2  # a progressive JPEG keeps every 16-bit DCT coefficient of the full image
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


def jpeg_coefficient_bytes(width: int, height: int, layers: list[tuple]) -> int:
    """Bytes libjpeg holds for a progressive JPEG's coefficients: every 8x8 block of every component at full
    size (``layers``: Pillow's ``(id, h_sampling, v_sampling, table)`` per component), 2 bytes a coefficient."""
    if not layers:
        return 3 * width * height * JPEG_COEFFICIENT_BYTES
    h_max, v_max = max(layer[1] for layer in layers) or 1, max(layer[2] for layer in layers) or 1
    total = 0
    for _, h, v, _ in layers:
        blocks_wide = math.ceil(math.ceil(width * h / h_max) / 8)
        blocks_high = math.ceil(math.ceil(height * v / v_max) / 8)
        total += blocks_wide * blocks_high * 64 * JPEG_COEFFICIENT_BYTES
    return total


def output_size(width: int, height: int, mode: str, side: int | None, longest_side: int) -> tuple[int, int]:
    """The size at which an image decoded at ``width x height`` goes through the conversions after the decode:
    :func:`shrink_to`'s reduction (to twice a resize target ``side``, or ``longest_side``), then, without a
    resize target, the longest-side limit. A palette or 1-bit image is converted to RGB before it is reduced
    (that conversion is part of its decoder cost), so with a resize target only the target size is left."""
    if mode in ("P", "1"):
        if side:
            return side, side
    else:
        factor = -(-max(width, height) // max(2 * side if side else longest_side, 1))
        if factor >= 2:
            width, height = -(-width // factor), -(-height // factor)
    if not side and max(width, height) > longest_side:
        ratio = longest_side / max(width, height)
        width, height = max(1, round(width * ratio)), max(1, round(height * ratio))
    return width, height


def decode_cost(fmt: str, mode: str, decoded: tuple[int, int], full: tuple[int, int], side: int | None,
                longest_side: int, jpeg_layers: list[tuple] | None = None, progressive: bool = False,
                prepared: bool = False, file_bytes: int = 0) -> int:
    """Peak bytes that decoding and converting one image will hold, from its header alone.

    ``decoded`` is the size the decoder produces (after JPEG draft scaling or JPEG 2000 reduction),
    ``full`` the file's own size; ``side``/``longest_side`` are :func:`helpers.data.load_image`'s resize
    target and longest-side limit; ``prepared``: the decoded array is then prepared (re-encoded, resized)
    inside the same reservation; ``file_bytes``: the file's size (WebP and JPEG 2000 decoders read it
    whole). Tested against measured peaks (tests/test_decode_limits.py).
    """
    pixels = decoded[0] * decoded[1]
    if fmt in _DECODER_BYTES_PER_PIXEL:
        decoder = pixels * _DECODER_BYTES_PER_PIXEL[fmt]
    elif mode in ("P", "1"):
        decoder = pixels * _PALETTE_BYTES_PER_PIXEL
    else:
        decoder = decoded_bytes(*decoded, mode) * (2 if "A" in mode else 1)
    if mode in HIGH_BIT_DEPTH_MODES:
        decoder += pixels * _HIGH_BIT_DEPTH_EXTRA
    if fmt in _READ_WHOLE:
        decoder += file_bytes
    if fmt == "JPEG" and progressive:
        decoder += jpeg_coefficient_bytes(*full, jpeg_layers or [])
    out_w, out_h = output_size(*decoded, mode, side, longest_side)
    per_output_pixel = _OUTPUT_BYTES_PER_PIXEL + (_PREPARE_BYTES_PER_PIXEL if prepared else 0)
    return decoder + out_w * out_h * per_output_pixel + _DECODE_OVERHEAD


def jpeg_scan_count(handle, chunk: int = 1 << 20) -> int:
    """The number of scans (SOS markers) in a JPEG file, counted without decoding: entropy-coded data
    never holds the bytes ``FF DA`` (a coded ``FF`` is always followed by ``00``)."""
    handle.seek(0)
    count, previous = 0, b""
    while block := handle.read(chunk):
        count += (previous + block).count(b"\xff\xda") - previous.count(b"\xff\xda")
        previous = block[-1:]
    handle.seek(0)
    return count


class DecodeTimeout(TimeoutError):
    """A decode read past its deadline (:class:`DeadlineFile`)."""


class DeadlineFile(io.RawIOBase):
    """A read-only file whose reads fail with :class:`DecodeTimeout` once ``deadline`` (a
    ``time.monotonic()`` value, or None for none) has passed.

    Pillow's decoders pull a file in blocks between decoding steps, so a decode that runs too long
    (a progressive JPEG whose every scan makes a pass over the whole image) stops at its next read.
    """

    def __init__(self, handle, deadline: float | None = None) -> None:
        super().__init__()
        self._handle = handle
        self.deadline = deadline

    def _check(self) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise DecodeTimeout("the decode passed its deadline")

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        self._check()
        return self._handle.read(size)

    def readinto(self, buffer) -> int:
        self._check()
        return self._handle.readinto(buffer)

    def readline(self, size: int = -1) -> bytes:
        self._check()
        return self._handle.readline(size)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._handle.seek(offset, whence)

    def tell(self) -> int:
        return self._handle.tell()

    def fileno(self) -> int:
        return self._handle.fileno()

    def close(self) -> None:
        self._handle.close()
        super().close()


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
    return Image.Image.reduce(img, factor)  # the base method: JPEG 2000 images shadow it with an attribute


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


def _superseded(old: Image.Image, new: Image.Image) -> Image.Image:
    """``new``, after freeing the pixels of ``old`` (the caller's ``with`` would keep them until the end)."""
    if new is not old:
        old.close()
    return new


@dataclass(frozen=True)
class DecodeLimits:
    """The bounds of one decode (:func:`helpers.data.load_image`'s arguments) and the file's size."""

    max_pixels: int
    max_decode_bytes: int
    max_side: int
    min_side: int | None
    max_seconds: float
    file_bytes: int


def decode_into(img: Image.Image, handle: DeadlineFile, result, size: int | None, limits: DecodeLimits,
            draft: int | None, budget: DecodeBudget | None, prepare: Callable | None) -> None:
    """The body of :func:`helpers.data.load_image` once the header is read: guards from the header, then the
    decode into ``result`` (a :class:`helpers.data.LoadedImage`: its size, format, mode, conversions, image
    or error)."""
    result.format, result.mode = img.format or "", img.mode
    width, height = result.width, result.height = img.size
    max_side = limits.max_side
    if width * height > limits.max_pixels:
        result.error = (f"image too large: {width}x{height} = {width * height:,} pixels > limit "
                        f"{limits.max_pixels:,}")
        return
    if limits.min_side and min(width, height) < limits.min_side:
        result.error = f"image too small to judge: {width}x{height} (at least {limits.min_side} px a side)"
        return
    progressive = img.format == "JPEG" and bool(img.info.get("progressive"))
    if progressive:
        scans = jpeg_scan_count(handle)
        if scans > MAX_JPEG_SCANS:
            result.error = (f"progressive JPEG with {scans:,} scans (limit {MAX_JPEG_SCANS}): each scan is a "
                            "pass over the whole image, so it would take too long to decode")
            return
    scalable = img.format in ("JPEG", "JPEG2000")  # decoded already scaled down where that loses nothing needed
    scale = jpeg_scale(width, height, img.mode, draft or size, max_side, limits.max_decode_bytes) if scalable else 1

    def cost_at(scale: int) -> int:
        decoded = (-(-width // scale), -(-height // scale)) if scalable else (width, height)
        return decode_cost(img.format or "", img.mode, decoded, (width, height), draft or size, max_side,
                           getattr(img, "layer", None), progressive, prepared=prepare is not None,
                           file_bytes=limits.file_bytes)

    detail_scale = scale
    while scalable and scale < 8 and cost_at(scale) > limits.max_decode_bytes:
        scale *= 2  # coarser still where the finer decode would not fit in memory
    cost = cost_at(scale)
    if scale > detail_scale and cost <= limits.max_decode_bytes:
        result.conversions.append(f"decoded at 1/{scale} of {width}x{height} to fit the memory limit")
    if img.format == "JPEG":
        img.draft("RGB", (width // scale, height // scale))
    elif scale > 1:
        img.reduce = scale.bit_length() - 1  # JPEG 2000 decodes at 1/2**reduce of its size
    if cost > limits.max_decode_bytes:
        result.error = (f"image too large to decode: {width}x{height} {img.format} {img.mode} needs "
                        f"{cost / MiB:.0f} MiB > limit {limits.max_decode_bytes / MiB:.0f} MiB")
        return
    n_frames = getattr(img, "n_frames", 1)
    raw_mode = img.tile[0][3] if img.tile and isinstance(img.tile[0][3], str) else ""
    img.decodermaxblock = _READ_BLOCK
    with budget.reserve(cost) if budget else nullcontext():
        handle.deadline = time.monotonic() + limits.max_seconds
        img.load()
        orientation = img.getexif().get(0x0112, 1)  # after load: a PNG's EXIF may follow its pixels
        if orientation not in _ORIENTATIONS:
            result.conversions.append(f"EXIF orientation {str(orientation)[:20]!r} ignored (not 1-8)")
            orientation = 1
        if orientation in _ROTATING_ORIENTATIONS:
            result.width, result.height = height, width
        if n_frames > 1:
            result.conversions.append(f"first frame of {n_frames}")
        if ";16" in raw_mode and img.mode in ("RGB", "RGBA"):  # Pillow keeps the high byte of each sample
            result.conversions.append(f"16-bit {img.mode} -> 8-bit (high byte of each sample)")
        img = _superseded(img, to_8_bit(img, result.conversions))  # Pillow cannot reduce 16-bit: 8-bit first
        img = _superseded(img, shrink_to(img, 2 * size if size else max_side))
        if not size and img.mode not in ("P", "1"):  # to the longest side before widening to RGB
            img.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
        if orientation != 1:
            img = ImageOps.exif_transpose(img)
            result.conversions.append(f"EXIF orientation {orientation} applied")
        img = to_rgb(img, result.conversions)
        if size:
            img = img.resize((size, size), Image.Resampling.BILINEAR)
        else:
            img.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
        if not size and max(result.width, result.height) > max_side:  # not for an asked-for draft
            result.conversions.append(f"downscaled from {result.width}x{result.height} to "
                                      f"{img.size[0]}x{img.size[1]} (longest side limit {max_side})")
        result.image = np.asarray(img, dtype=np.uint8).copy()
        if prepare is not None:
            result.image = prepare(result.image)
            if time.monotonic() > handle.deadline:
                raise DecodeTimeout("prepared after the deadline")
