"""The loader's cost and time bounds hold for the formats that cost most: the decode cost predicted from the
header is at least the memory a decode really takes (measured in a fresh process), progressive JPEGs with
too many scans are refused before decoding, and a decode that runs past its deadline stops with a reason."""

import io
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import data, decoding

REPO = Path(__file__).resolve().parents[1]


def _gradient(width: int, height: int) -> Image.Image:
    """A smooth picture (compresses small, decodes at full cost), made at 1/8 size and enlarged."""
    y, x = np.mgrid[0:height:8, 0:width:8]
    return Image.fromarray(np.stack([x % 256, y % 256, (x + y) % 256], -1).astype(np.uint8)).resize((width, height))


def jpeg_segments(data_bytes: bytes) -> list[tuple[int, int, int]]:
    """``(marker, start, end)`` of every segment of a JPEG, a scan's entropy-coded data included: a walk over
    the marker structure (ITU T.81 B.1), independent of the byte count in :func:`decoding.jpeg_scan_count`."""
    segments, i = [], 2
    while i < len(data_bytes):
        marker = data_bytes[i + 1]
        if marker == 0xD9:
            segments.append((marker, i, i + 2))
            break
        end = i + 2 + struct.unpack(">H", data_bytes[i + 2:i + 4])[0]
        if marker == 0xDA:  # the scan's data runs to the next marker that is not a stuffed 00 or a restart
            while True:
                end = data_bytes.index(b"\xff", end)
                if data_bytes[end + 1] == 0 or 0xD0 <= data_bytes[end + 1] <= 0xD7:
                    end += 2
                    continue
                break
        segments.append((marker, i, end))
        i = end
    return segments


def many_scan_jpeg(side: int, copies: int) -> bytes:
    """A progressive JPEG whose smallest scan is repeated ``copies`` times: each copy is a few bytes and one
    more pass over every block (the hostile file that took 41 s to decode)."""
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), (128, 128, 128)).save(buffer, "JPEG", progressive=True, quality=95)
    original = buffer.getvalue()
    segments = jpeg_segments(original)
    smallest = min((s for s in segments if s[0] == 0xDA), key=lambda s: s[2] - s[1])
    end_of_image = segments[-1][1]
    return original[:end_of_image] + original[smallest[1]:smallest[2]] * copies + original[end_of_image:]


@pytest.fixture(scope="module")
def costly(tmp_path_factory) -> dict[str, Path]:
    """One file per costly decoder, large enough that its decode dominates the process's memory."""
    folder = tmp_path_factory.mktemp("costly")
    picture = _gradient(4000, 4000)
    files = {"webp": folder / "p.webp", "jp2": folder / "p.jp2", "progressive444": folder / "p444.jpg",
             "progressive420": folder / "p420.jpg", "rgba": folder / "p.png", "gif": folder / "p.gif"}
    picture.save(files["webp"], quality=10, method=0)
    picture.save(files["jp2"])
    picture.save(files["progressive444"], progressive=True, subsampling=0, quality=90)
    picture.save(files["progressive420"], progressive=True, quality=90)
    rgba = picture.copy()
    rgba.putalpha(200)
    rgba.save(files["rgba"], compress_level=1)
    picture.quantize(64).save(files["gif"])
    files["grey16"] = folder / "p16.png"
    Image.fromarray(np.tile(np.linspace(0, 65535, 4000, dtype=np.uint16), (4000, 1))).save(files["grey16"])
    return files


_MEASURE = """
import json, sys
from helpers import data, decoding
from helpers.decoding import peak_rss_mib
costs = []
real = decoding.decode_cost
decoding.decode_cost = lambda *a, **k: costs.append(real(*a, **k)) or costs[-1]
size = int(sys.argv[2]) or None
before = peak_rss_mib()
loaded = data.load_image(sys.argv[1], size=size, max_decode_bytes=1 << 40)
print(json.dumps(dict(ok=loaded.ok, error=loaded.error, predicted_mib=costs[-1] / 2**20,
                      measured_mib=peak_rss_mib() - before)))
"""


@pytest.mark.parametrize("size", [128, 0], ids=["resized", "own-size"])
@pytest.mark.parametrize("kind", ["webp", "jp2", "progressive444", "progressive420", "rgba", "gif", "grey16"])
def test_the_predicted_decode_cost_covers_the_measured_peak(costly, kind, size):
    import json

    done = subprocess.run([sys.executable, "-c", _MEASURE, str(costly[kind]), str(size)], capture_output=True,
                          text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["ok"], result
    print(kind, size, result)
    assert result["measured_mib"] <= result["predicted_mib"], result  # the bound is a bound
    assert result["predicted_mib"] <= 2.5 * result["measured_mib"] + 20, result  # and not a blanket refusal


def test_a_webp_too_costly_to_decode_is_refused_from_its_header(tmp_path):
    path = tmp_path / "wide.webp"
    _gradient(5500, 5500).save(path, quality=10, method=0)  # 30 MP: libwebp alone needs ~490 MiB
    started = time.perf_counter()
    loaded = data.load_image(path, size=128)
    assert not loaded.ok and loaded.error.startswith("image too large to decode: 5500x5500 WEBP RGB needs")
    assert time.perf_counter() - started < 1  # nothing decoded
    assert data.load_image(path, size=128, max_decode_bytes=1 << 40).ok


def test_the_scan_count_matches_a_walk_over_the_markers_and_libjpegs_own_script(tmp_path):
    """libjpeg's jpeg_simple_progression writes 10 scans for a colour image and 6 for a grey one
    (jcparam.c); a baseline JPEG has one."""
    for mode, progressive, expected in (("RGB", True, 10), ("L", True, 6), ("RGB", False, 1)):
        buffer = io.BytesIO()
        Image.new(mode, (64, 48)).save(buffer, "JPEG", progressive=progressive)
        assert decoding.jpeg_scan_count(io.BytesIO(buffer.getvalue())) == expected
    hostile = many_scan_jpeg(256, 500)
    walked = sum(1 for marker, _, _ in jpeg_segments(hostile) if marker == 0xDA)
    assert decoding.jpeg_scan_count(io.BytesIO(hostile), chunk=7) == walked == 510  # across chunk boundaries


def test_a_progressive_jpeg_with_too_many_scans_is_refused_before_decoding(tmp_path):
    path = tmp_path / "scans.jpg"
    path.write_bytes(many_scan_jpeg(2000, 2000))
    started = time.perf_counter()
    loaded = data.load_image(path, size=128)
    assert loaded.error == ("progressive JPEG with 2,010 scans (limit 100): each scan is a pass over the whole "
                            "image, so it would take too long to decode")
    assert time.perf_counter() - started < 2
    path.write_bytes(many_scan_jpeg(64, data.MAX_JPEG_SCANS - 10))  # exactly at the limit: decoded
    assert data.load_image(path).ok
    path.write_bytes(many_scan_jpeg(64, data.MAX_JPEG_SCANS - 9))
    assert "101 scans (limit 100)" in data.load_image(path).error


def test_a_decode_past_its_deadline_stops_with_the_reason(tmp_path):
    path = tmp_path / "big.png"
    _gradient(3000, 3000).save(path, compress_level=1)  # decoded in 16 KiB reads: many deadline checks
    loaded = data.load_image(path, size=64, max_seconds=0.001)
    assert loaded.error == "took longer than 0.001 s to decode (the limit for one file)" and loaded.image is None
    assert data.load_image(path, size=64).ok  # well within the default limit
    slow = data.load_image(path, size=64, prepare=lambda image: time.sleep(0.05) or image, max_seconds=0.02)
    assert slow.error.startswith("took longer than 0.02 s")  # the preparation counts too
    budget = decoding.DecodeBudget(1 << 40)
    assert data.load_image(path, size=64, budget=budget, max_seconds=0.001).error.startswith("took longer")
    assert budget.in_use == 0  # the reservation is given back


def test_a_jpeg_2000_is_decoded_reduced_to_what_is_asked(tmp_path):
    y, x = np.mgrid[0:2000, 0:2000] / 2000.0
    smooth = np.stack([np.sin(3 * x) * 100 + 120, np.cos(2 * y) * 100 + 120, (x + y) * 60], -1)
    path = tmp_path / "smooth.jp2"
    Image.fromarray(smooth.astype(np.uint8)).save(path)
    loaded = data.load_image(path, size=128)
    assert loaded.ok and loaded.image.shape == (128, 128, 3) and (loaded.width, loaded.height) == (2000, 2000)
    with Image.open(path) as img:
        reference = np.asarray(img.convert("RGB").resize((128, 128), Image.Resampling.BILINEAR), dtype=np.float32)
    assert np.abs(loaded.image.astype(np.float32) - reference).mean() < 3  # same picture, decoded smaller


def test_decode_cost_arithmetic_on_hand_worked_headers():
    """Hand-worked: a 4:2:0 progressive 1000x800 JPEG keeps 125x100 luma blocks and 63x50 blocks of each
    chroma component, 64 coefficients of 2 bytes each; its draft at 1/2 is 500x400 RGB (4 bytes a pixel)."""
    layers = [(1, 2, 2, 0), (2, 1, 1, 1), (3, 1, 1, 1)]
    coefficients = (125 * 100 + 2 * 63 * 50) * 64 * 2
    assert decoding.jpeg_coefficient_bytes(1000, 800, layers) == coefficients
    cost = decoding.decode_cost("JPEG", "RGB", (500, 400), (1000, 800), 128, 4096, layers, progressive=True)
    output = decoding.output_size(500, 400, "RGB", 128, 4096)
    assert output == (250, 200)  # reduced by 2 to at most twice the 128 px target
    assert cost == 500 * 400 * 4 + coefficients + 250 * 200 * 12 + 16 * 2**20
    assert decoding.output_size(9000, 3000, "RGB", None, 4096) == (3000, 1000)  # reduced by 3: under the limit
    assert decoding.output_size(9000, 3000, "P", None, 4096) == (4096, 1365)  # converted whole, then the limit
    assert decoding.output_size(9000, 3000, "P", 128, 4096) == (128, 128)  # converted at full size, then resized
    webp = decoding.decode_cost("WEBP", "RGB", (100, 50), (100, 50), None, 4096, file_bytes=999)
    assert webp == 100 * 50 * (17 + 12) + 999 + 16 * 2**20  # the compressed file is held whole too
    grey16 = decoding.decode_cost("PNG", "I;16", (100, 50), (100, 50), None, 4096)
    assert grey16 == 100 * 50 * (2 + 2 + 12) + 16 * 2**20  # 16-bit samples, their 8-bit copy and bands
