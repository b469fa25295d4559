"""Hostile inputs the tests make: broken, odd, oversized and mutated image files, and odd entries.

:func:`seed_images` gives one small valid file of each format the loader meets (JPEG, PNG, WebP,
GIF, multi-page TIFF, MPO); :func:`mutants` makes seeded byte mutations of one; :func:`make_corpus`
writes a folder of at least 60 hostile entries for the ``fakeface`` process.
"""

from __future__ import annotations

import io
import os
import socket
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def _picture(seed: int = 0, size: int = 64) -> Image.Image:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size]
    base = np.stack([x * 3, y * 3, (x + y) * 2], -1) + rng.integers(0, 30, (size, size, 3))
    return Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))


def _saved(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def seed_images() -> dict[str, bytes]:
    """One small valid file per format: ``name -> bytes``."""
    first, second = _picture(1), _picture(2)
    return {
        "seed.jpg": _saved(first, "JPEG", quality=90),
        "seed.png": _saved(first, "PNG"),
        "seed.webp": _saved(first, "WEBP", quality=80),
        "seed.gif": _saved(first.convert("P"), "GIF", save_all=True, append_images=[second.convert("P")]),
        "seed.tif": _saved(first, "TIFF", save_all=True, append_images=[second]),
        "seed.mpo": _saved(first, "MPO", save_all=True, append_images=[second]),
    }


def tiff_second_page_without_width() -> bytes:
    """A two-page TIFF whose second page lacks its ImageWidth tag (Pillow: TypeError on ``n_frames``)."""
    data = bytearray(_saved(_picture(1), "TIFF", save_all=True, append_images=[_picture(2)]))
    endian = "<" if data[:2] == b"II" else ">"
    first = struct.unpack(endian + "I", data[4:8])[0]
    count = struct.unpack(endian + "H", data[first:first + 2])[0]
    second = struct.unpack(endian + "I", data[first + 2 + 12 * count:first + 6 + 12 * count])[0]
    count2 = struct.unpack(endian + "H", data[second:second + 2])[0]
    for k in range(count2):
        entry = second + 2 + 12 * k
        if struct.unpack(endian + "H", data[entry:entry + 2])[0] == 256:  # ImageWidth -> a private tag
            data[entry:entry + 2] = struct.pack(endian + "H", 65000)
    return bytes(data)


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def png_with_header(width: int, height: int, bit_depth: int = 8, colour: int = 2, rows: bytes = b"") -> bytes:
    """A PNG with the given IHDR and ``rows`` (raw scanlines) as its only IDAT."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", zlib.compress(rows))
            + _png_chunk(b"IEND", b""))


def rgb16_png(size: int = 40) -> bytes:
    """A 16-bit RGB PNG (Pillow reads it as 8-bit RGB, keeping the high byte)."""
    values = (np.arange(size * size * 3, dtype=np.uint32) * 97 % 65536).astype(">u2").reshape(size, size * 3)
    return png_with_header(size, size, 16, 2, b"".join(b"\x00" + row.tobytes() for row in values))


def jpeg_with_orientation(value) -> bytes:
    """A JPEG whose EXIF orientation tag holds ``value`` (e.g. a string, which is not an orientation)."""
    from PIL import TiffImagePlugin

    directory = TiffImagePlugin.ImageFileDirectory_v2(prefix=b"II")
    directory[0x0112] = value
    directory.tagtype[0x0112] = 2 if isinstance(value, str) else 3  # ASCII, or SHORT
    exif = b"Exif\x00\x00" + b"II\x2a\x00\x08\x00\x00\x00" + directory.tobytes(8)
    return _saved(_picture(3), "JPEG", exif=exif)


def mutants(original: bytes, n: int, seed: int) -> list[bytes]:
    """``n`` seeded byte mutations: flipped bytes, cut tails, duplicated or removed spans."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        data = bytearray(original)
        kind = rng.integers(4)
        if kind == 0:
            for position in rng.integers(0, len(data), size=int(rng.integers(1, 8))):
                data[position] = int(rng.integers(256))
        elif kind == 1:
            data = data[: int(rng.integers(1, len(data)))]
        elif kind == 2:
            start = int(rng.integers(len(data)))
            data[start:start] = data[start:start + int(rng.integers(1, 64))]
        else:
            start = int(rng.integers(len(data)))
            del data[start:start + int(rng.integers(1, 64))]
        out.append(bytes(data))
    return out


def make_corpus(folder: Path, face_jpeg: bytes) -> list[Path]:
    """Write at least 60 hostile entries under ``folder``; return the entries a scan must answer for
    (one row each). ``face_jpeg``: a real face photo, so that a few files are scored."""
    folder.mkdir(parents=True, exist_ok=True)
    entries: list[Path] = []

    def put(name: str, body: bytes) -> None:
        path = folder / name
        path.write_bytes(body)
        entries.append(path)

    put("face.jpg", face_jpeg)
    put("face.png", _saved(Image.open(io.BytesIO(face_jpeg)), "PNG"))
    for name, body in seed_images().items():
        put(name, body)
        for k, mutant in enumerate(mutants(body, 6, seed=len(name))):
            put(f"mutant{k}_{name}", mutant)
    put("tiff_no_width.tif", tiff_second_page_without_width())
    put("rgb16.png", rgb16_png())
    put("orientation_text.jpg", jpeg_with_orientation("upside down"))
    put("orientation_99.jpg", jpeg_with_orientation(99))
    put("bomb.png", png_with_header(60_000, 60_000))                   # 3.6 gigapixels in a few bytes
    put("wide.png", png_with_header(2 ** 31 - 1, 1))
    put("empty.jpg", b"")
    put("notes.txt", b"not a picture")
    put("error_page.jpg", b"<!doctype html><title>404</title>")
    put("cut.jpg", face_jpeg[: len(face_jpeg) // 3])
    put("dot.png", _saved(Image.new("RGB", (1, 1)), "PNG"))
    put("cmyk.jpg", _saved(_picture(4).convert("CMYK"), "JPEG"))
    put("=HYPERLINK(\"http-x\",\"click\").jpg", face_jpeg)
    put("+cmd.jpg", face_jpeg)
    put("@sum.jpg", face_jpeg)
    put("-2+3.jpg", face_jpeg)
    put(".hidden.jpg", face_jpeg)
    odd = os.fsencode(folder) + b"/\xe9t\xe9.jpg"
    with open(odd, "wb") as handle:
        handle.write(face_jpeg)
    entries.append(Path(os.fsdecode(odd)))
    (folder / "a_folder.jpg").mkdir()
    put("a_folder.jpg/inside.jpg", face_jpeg)
    os.mkfifo(folder / "pipe.jpg")
    entries.append(folder / "pipe.jpg")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(folder / "socket.jpg"))
    server.close()
    entries.append(folder / "socket.jpg")
    (folder / "broken_link.jpg").symlink_to(folder / "nowhere.jpg")
    entries.append(folder / "broken_link.jpg")
    (folder / "device_link.jpg").symlink_to("/dev/zero")
    entries.append(folder / "device_link.jpg")
    (folder / "loop.jpg").symlink_to(folder / "loop.jpg")
    entries.append(folder / "loop.jpg")
    return entries
