"""Decode cost, the JPEG draft scale, integer shrinking and band-wise 16-bit conversion, value by value."""

import numpy as np
import pytest
from PIL import Image

from helpers import decoding


def test_decoded_bytes_follow_pillows_storage():
    assert decoding.decoded_bytes(10, 20, "L") == 200 and decoding.decoded_bytes(10, 20, "1") == 200
    assert decoding.decoded_bytes(10, 20, "P") == 200 and decoding.decoded_bytes(10, 20, "I;16") == 400
    assert decoding.decoded_bytes(10, 20, "RGB") == 800 and decoding.decoded_bytes(10, 20, "CMYK") == 800
    image = Image.new("RGB", (10, 20))
    assert len(image.tobytes("raw", "RGBX")) == decoding.decoded_bytes(10, 20, "RGB")  # 4 bytes a pixel, as stored


@pytest.mark.parametrize("width, height, side, longest, budget, expected", [
    (800, 600, 100, 4096, 10**9, 4),     # 600/4 = 150 >= 100, 600/8 = 75 < 100
    (800, 600, 150, 4096, 10**9, 4),     # exactly 150 at 1/4 keeps the detail
    (800, 600, 151, 4096, 10**9, 2),
    (800, 600, 600, 4096, 10**9, 1),
    (8000, 8000, None, 4096, 10**9, 1),  # full resolution: 4000 would be under the longest side
    (8000, 8000, None, 4000, 10**9, 2),
    (8000, 8000, None, 4096, 200 * 2**20, 2),  # 244 MiB at 1/1 is over the budget: 1/2
    (8000, 8000, None, 100, 10**9, 8),   # never more than 1/8
])
def test_jpeg_scale(width, height, side, longest, budget, expected):
    assert decoding.jpeg_scale(width, height, "RGB", side, longest, budget) == expected


def test_shrink_to_uses_the_smallest_factor_that_fits():
    assert decoding.shrink_to(Image.new("L", (1000, 400)), 500).size == (500, 200)   # factor 2 exactly
    assert decoding.shrink_to(Image.new("L", (1001, 400)), 500).size == (334, 134)   # ceil(1001/500) = 3
    assert decoding.shrink_to(Image.new("L", (999, 400)), 500).size == (500, 200)
    untouched = Image.new("L", (500, 10))
    assert decoding.shrink_to(untouched, 500) is untouched
    palette = Image.new("P", (1000, 1000))
    assert decoding.shrink_to(palette, 100) is palette  # palettes are converted before they are shrunk


@pytest.mark.parametrize("mode, values, expected", [
    ("I;16", [0, 257, 32768, 65535], [0, 1, 128, 255]),
    ("I;16", [0, 257, 33025, 40000], [0, 1, 129, 156]),    # 16-bit full scale, not the image's own peak
    ("I", [0, 100, 255, 255], [0, 100, 255, 255]),          # 32-bit values within 0..255 stay as they are
    ("I", [0, 500, 1000, 1000], [0, 128, 255, 255]),        # larger ones scale to their peak
    ("F", [0.0, 0.5, 1.0, 2.0], [0, 0, 1, 2]),              # float grey within 0..255: rounded
    ("I", [0, 100, 200, 256], [0, 100, 199, 255]),          # one past 255: already scaled to its peak
    ("F", [-5.0, -0.4, 3.0, 200.0], [0, 0, 3, 200]),        # below 0 is black, never wrapped round to white
])
def test_high_bit_depth_grey_becomes_8_bit(mode, values, expected):
    dtype = {"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode]
    rows = 600  # more than one band of rows
    image = Image.fromarray(np.tile(np.array(values, dtype), (rows, 1)), mode=mode if mode != "I;16" else None)
    converted = decoding.high_bit_depth_to_l(image)
    assert converted.mode == "L" and converted.size == (4, rows)
    out = np.asarray(converted)
    assert out[0].tolist() == expected and (out == out[0]).all()


def test_to_rgb_records_each_conversion():
    cases = {"L": "grayscale -> RGB", "CMYK": "CMYK -> RGB", "1": "1-bit -> RGB", "RGBA": "RGBA with alpha -> RGB on white",
             "LA": "LA with alpha -> RGB on white"}
    for mode, note in cases.items():
        conversions = []
        converted = decoding.to_rgb(Image.new(mode, (3, 2)), conversions)
        assert converted.mode == "RGB" and conversions == [note], (mode, conversions)
    rgb = Image.new("RGB", (2, 2))
    conversions = []
    assert decoding.to_rgb(rgb, conversions) is rgb and conversions == []
    transparent = Image.new("RGBA", (2, 1), (10, 20, 30, 0))
    assert np.asarray(decoding.to_rgb(transparent, [])).tolist() == [[[255, 255, 255]] * 2]  # alpha 0: white
    half = Image.new("RGBA", (1, 1), (0, 0, 0, 128))
    assert np.asarray(decoding.to_rgb(half, []))[0, 0].tolist() == [127, 127, 127]


def test_decode_budget_rejects_nonsense_and_counts_its_peak():
    with pytest.raises(ValueError):
        decoding.DecodeBudget(0)
    budget = decoding.DecodeBudget(100)
    with budget.reserve(30), budget.reserve(50):
        assert budget.in_use == 80
    assert budget.in_use == 0 and budget.peak == 80


def test_peak_rss_is_read_from_this_process():
    before = decoding.peak_rss_mib()
    block = np.ones(64 * 2**20, np.uint8)  # 64 MiB touched
    assert decoding.peak_rss_mib() >= before and decoding.peak_rss_mib() > 60 and block.sum() == 64 * 2**20


def test_read_ahead_yields_in_order_and_never_runs_more_than_depth_ahead():
    import threading
    import time

    started, taken, lock = [], [], threading.Lock()

    def load(item):
        with lock:
            started.append(item)
            ahead = len(started) - len(taken)
        time.sleep(0.002 * (item % 3))  # uneven loads: order must still hold
        return item * 10, ahead, threading.get_ident()

    results = []
    for value, ahead, thread in decoding.read_ahead(range(12), load, depth=3):
        time.sleep(0.01)  # a slow caller: an unbounded reader would run far ahead
        with lock:
            taken.append(value)
        results.append((value, ahead, thread))
    assert [value for value, _, _ in results] == [10 * i for i in range(12)]
    assert max(ahead for _, ahead, _ in results) <= 3 + 1  # the one being read and at most depth waiting
    assert {thread for _, _, thread in results} != {threading.get_ident()}  # loaded off the caller's thread
    assert list(decoding.read_ahead([], load)) == []
    with pytest.raises(ValueError, match="depth"):
        next(decoding.read_ahead([1], load, depth=0))


def test_read_ahead_stops_early_without_loading_everything():
    loaded = []
    reader = decoding.read_ahead(range(100), lambda item: loaded.append(item) or item, depth=2)
    assert [next(reader), next(reader)] == [0, 1]
    reader.close()  # the caller stops: the loads already started finish, no more start
    assert loaded == list(range(len(loaded))) and len(loaded) <= 4
