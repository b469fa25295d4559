"""The validated loader against Pillow's own steps written out by hand (an independent oracle).

Each expected image is made here from the file with Pillow's documented calls and sizes worked out
in the comments, not with :mod:`helpers.decoding`: a JPEG decoded at a draft scale, a large image
reduced by an integer factor before the bilinear resize, a palette image widened before its
thumbnail. Exact equality: any other filter, factor or order changes pixels of a noisy image.
"""

import os
import warnings

import numpy as np
import pytest
from PIL import Image

from helpers import data


def _noise(width: int, height: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize("width, height, size, draft_size, reduced", [
    # 1000x800 at 64 or 100: halving while the shorter side stays >= the size reaches 1/8 (125x100)
    (1000, 800, 64, (125, 100), None),
    (1000, 800, 100, (125, 100), None),
    # at 300: 1/2 (500x400) keeps 400 >= 300, 1/4 (250x200) would not
    (1000, 800, 300, (500, 400), None),
    # 1000x200 at 50: 1/4 (250x50) is the last that keeps 50; then the longest side 250 > 2 x 50, so a
    # reduce by ceil(250 / 100) = 3 (to 84x17) before the resize
    (1000, 200, 50, (250, 50), 3),
    # sides that 8 does not divide: the draft asks for 1001 // 8 = 125 by 801 // 8 = 100, and Pillow
    # decodes at ceil(1001 / 8) x ceil(801 / 8) = 126x101
    (1001, 801, 100, (125, 100), None),
])
def test_a_jpeg_is_decoded_at_its_draft_scale_then_reduced_and_resized(tmp_path, width, height, size, draft_size,
                                                                         reduced):
    path = tmp_path / "big.jpg"
    Image.fromarray(_noise(width, height)).save(path, quality=90)
    with Image.open(path) as img:
        img.draft("RGB", draft_size)
        assert img.size == (-(-width // (width // draft_size[0])), -(-height // (height // draft_size[1])))
        expected = img.convert("RGB")
    if reduced:
        expected = expected.reduce(reduced)
    expected = np.asarray(expected.resize((size, size), Image.Resampling.BILINEAR))
    loaded = data.load_image(path, size=size)
    assert loaded.ok and (loaded.width, loaded.height) == (width, height) and loaded.conversions == []
    assert np.array_equal(loaded.image, expected)


def test_a_large_png_is_reduced_by_the_smallest_factor_then_resized_bilinear(tmp_path):
    """900x300 at 100: the longest side is brought to 2 x 100 or less by ceil(900 / 200) = 5 (180x60)."""
    array = _noise(900, 300, seed=1)
    Image.fromarray(array).save(tmp_path / "wide.png")
    expected = np.asarray(Image.fromarray(array).reduce(5).resize((100, 100), Image.Resampling.BILINEAR))
    loaded = data.load_image(tmp_path / "wide.png", size=100)
    assert loaded.ok and np.array_equal(loaded.image, expected)
    # the longest-side limit is for loads without a size: an asked-for size is not capped by it
    assert np.array_equal(data.load_image(tmp_path / "wide.png", size=100, max_side=128).image, expected)
    # without a size: the longest-side limit, 3000x1000 -> ceil(3000 / 1024) = 3 -> 1000x334, recorded
    array = _noise(3000, 1000, seed=2)
    Image.fromarray(array).save(tmp_path / "wider.png")
    loaded = data.load_image(tmp_path / "wider.png", max_side=1024)
    assert np.array_equal(loaded.image, np.asarray(Image.fromarray(array).reduce(3)))
    assert loaded.conversions == ["downscaled from 3000x1000 to 1000x334 (longest side limit 1024)"]


@pytest.mark.parametrize("mode, name", [("P", "palette"), ("1", "1-bit")])
def test_palette_and_1_bit_images_are_widened_to_rgb_before_their_bilinear_thumbnail(tmp_path, mode, name):
    """Their pixels are indices or bits, not levels: 600x200 -> RGB first, then a bilinear thumbnail to 256x85
    (Pillow would shrink them with the nearest pixel, no grey levels)."""
    picture = Image.fromarray(_noise(600, 200, seed=3))
    picture = picture.quantize(64) if mode == "P" else picture.convert("1")
    picture.save(tmp_path / "p.png")
    expected = picture.convert("RGB")
    expected.thumbnail((256, 256), Image.Resampling.BILINEAR)
    loaded = data.load_image(tmp_path / "p.png", max_side=256)
    assert loaded.image.shape == (85, 256, 3) and np.array_equal(loaded.image, np.asarray(expected))
    assert loaded.conversions == [f"{name} -> RGB", "downscaled from 600x200 to 256x85 (longest side limit 256)"]


def test_a_grey_jpeg_is_costed_at_one_byte_a_pixel(tmp_path):
    """A 400x400 greyscale JPEG needs 160,000 bytes decoded (Pillow's L: one byte a pixel), 12 bytes a pixel
    for the conversions after it and 16 MiB for the decoder: under a limit 100 bytes above that it is
    decoded whole, not at a coarser draft scale, and not refused."""
    grey = _noise(400, 400, seed=7)[..., 0]
    Image.fromarray(grey).save(tmp_path / "grey.jpg", quality=90)
    loaded = data.load_image(tmp_path / "grey.jpg", max_decode_bytes=400 * 400 * (1 + 12) + 16 * 2**20 + 100)
    assert loaded.ok, loaded.error
    with Image.open(tmp_path / "grey.jpg") as img:
        assert np.array_equal(loaded.image, np.asarray(img.convert("RGB")))
    assert loaded.conversions == ["grayscale -> RGB"]


@pytest.mark.parametrize("fmt", ["WEBP", "ICO"])
def test_formats_whose_header_lists_no_tiles_load_exactly(tmp_path, fmt):
    """Pillow reads WebP and ICO without a tile list until they are decoded: nothing to learn about 16-bit
    samples there, and a lossless file comes back as written."""
    array = _noise(48, 48, seed=4)
    path = tmp_path / f"x.{fmt.lower()}"
    Image.fromarray(array).save(path, fmt, **({"lossless": True} if fmt == "WEBP" else {"sizes": [(48, 48)]}))
    with Image.open(path) as img:
        assert img.tile == []  # the case this test is about
    loaded = data.load_image(path)
    assert loaded.ok and loaded.format == fmt and loaded.conversions == [], loaded.error
    assert np.array_equal(loaded.image, array)


def test_a_16_bit_rgba_png_keeps_the_high_byte_and_is_composited_on_white(tmp_path):
    from hostile import png_with_header

    rng = np.random.default_rng(5)
    rgba = rng.integers(0, 65536, (20, 20, 4)).astype(">u2")
    rgba[..., 3] = np.where(np.arange(20) < 10, 65535, 0)[None, :]  # left half opaque, right half clear
    rows = b"".join(b"\x00" + row.tobytes() for row in rgba.reshape(20, 80))
    (tmp_path / "rgba16.png").write_bytes(png_with_header(20, 20, 16, 6, rows))
    loaded = data.load_image(tmp_path / "rgba16.png")
    assert loaded.conversions == ["16-bit RGBA -> 8-bit (high byte of each sample)", "RGBA with alpha -> RGB on white"]
    high = (rgba[..., :3].astype(np.uint32) >> 8).astype(np.uint8)
    assert np.array_equal(loaded.image[:, :10], high[:, :10]) and (loaded.image[:, 10:] == 255).all()


def test_a_long_non_numeric_orientation_is_quoted_to_twenty_characters(tmp_path):
    from hostile import jpeg_with_orientation

    (tmp_path / "o.jpg").write_bytes(jpeg_with_orientation("rotate me ninety degrees, please"))
    assert data.load_image(tmp_path / "o.jpg").conversions == ["EXIF orientation 'rotate me ninety deg' ignored (not 1-8)"]


def test_a_file_too_large_on_disk_gives_both_sizes_in_megabytes(tmp_path):
    """2,350,000 bytes against a 1,350,000-byte limit: 2.4 MB > 1.4 MB (decimal megabytes, one decimal)."""
    (tmp_path / "big.jpg").write_bytes(b"\xff" * 2_350_000)
    loaded = data.load_image(tmp_path / "big.jpg", max_bytes=1_350_000)
    assert loaded.error == "file too large: 2.4 MB > limit 1.4 MB"


def test_a_decoder_failure_names_its_exception_and_is_cut_to_300_characters(tmp_path, monkeypatch):
    from hostile import tiff_second_page_without_width

    (tmp_path / "two.tif").write_bytes(tiff_second_page_without_width())
    assert data.load_image(tmp_path / "two.tif").error == "truncated or corrupt image: TypeError: Missing dimensions"

    def fails(*args):
        raise ValueError("x" * 500)

    Image.fromarray(_noise(8, 8)).save(tmp_path / "ok.png")
    monkeypatch.setattr(data, "_decode", fails)
    error = data.load_image(tmp_path / "ok.png").error
    assert error == "truncated or corrupt image: ValueError: " + "x" * (300 - 40) and len(error) == 300


def test_a_symbolic_link_loop_is_a_file_that_cannot_be_read_with_the_systems_reason(tmp_path):
    os.symlink(tmp_path / "b", tmp_path / "a")
    os.symlink(tmp_path / "a", tmp_path / "b")
    assert data.load_image(tmp_path / "a").error == "cannot read file: Too many levels of symbolic links"


def test_pillows_size_warnings_stay_inside_the_loader(tmp_path, monkeypatch):
    """An image above Pillow's warning limit (lowered here to 1,000 pixels) but below its error limit loads,
    and the warning does not reach the caller (its size is judged by the loader's own limits)."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000)
    Image.fromarray(_noise(40, 40, seed=6)).save(tmp_path / "warned.png")  # 1,600 pixels: warns, < 2,000
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = data.load_image(tmp_path / "warned.png")
    assert loaded.ok and loaded.image.shape == (40, 40, 3), loaded.error
