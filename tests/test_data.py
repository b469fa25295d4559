"""The validated loader on every kind of bad file, and the manifest scan."""

import io

import numpy as np
from conftest import smooth_image, write_jpeg
from PIL import Image

from helpers import data


def test_plain_jpeg_loads_and_resizes(tmp_path):
    path = write_jpeg(tmp_path / "a.jpg", smooth_image(1, 80))
    loaded = data.load_image(path)
    assert loaded.ok and loaded.image.shape == (80, 80, 3) and loaded.conversions == []
    assert (loaded.width, loaded.height, loaded.format) == (80, 80, "JPEG")
    small = data.load_image(path, size=32)
    assert small.image.shape == (32, 32, 3) and small.image.dtype == np.uint8


def test_truncated_jpeg_is_reported(tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(smooth_image(2, 128)).save(buffer, "JPEG", quality=95)
    path = tmp_path / "cut.jpg"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    loaded = data.load_image(path)
    assert not loaded.ok and loaded.image is None and "truncated" in loaded.error


def test_not_an_image_and_empty_file(tmp_path):
    (tmp_path / "notes.jpg").write_text("this is not a picture")
    (tmp_path / "empty.png").write_bytes(b"")
    assert data.load_image(tmp_path / "notes.jpg").error == "not an image (format not recognised)"
    assert data.load_image(tmp_path / "empty.png").error == "empty file (0 bytes)"
    assert "cannot read file" in data.load_image(tmp_path / "missing.jpg").error


def test_huge_images_are_rejected_before_decoding(tmp_path):
    path = write_jpeg(tmp_path / "big.jpg", smooth_image(3, 200))
    by_pixels = data.load_image(path, max_pixels=100 * 100)
    assert not by_pixels.ok and "image too large: 200x200" in by_pixels.error
    by_bytes = data.load_image(path, max_bytes=100)
    assert not by_bytes.ok and "file too large" in by_bytes.error


def test_cmyk_is_converted(tmp_path):
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[..., 0] = 200
    path = tmp_path / "cmyk.jpg"
    Image.fromarray(rgb).convert("CMYK").save(path, quality=95)
    loaded = data.load_image(path)
    assert loaded.ok and "CMYK -> RGB" in loaded.conversions
    assert loaded.image[..., 0].mean() > 150 and loaded.image[..., 2].mean() < 60


def test_16_bit_png_is_scaled_to_8_bit(tmp_path):
    ramp = np.tile(np.linspace(0, 65535, 32).astype(np.uint16), (8, 1))
    path = tmp_path / "deep.png"
    Image.fromarray(ramp).save(path)
    loaded = data.load_image(path)
    assert loaded.ok and any("high bit depth" in c for c in loaded.conversions)
    assert loaded.image.shape == (8, 32, 3)
    assert loaded.image[0, 0, 0] == 0 and loaded.image[0, -1, 0] == 255


def test_exif_rotation_is_applied(tmp_path):
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:, :20] = (255, 0, 0)  # left half red
    stored[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = tmp_path / "rotated.jpg"
    Image.fromarray(stored).save(path, quality=95, exif=exif.tobytes())
    loaded = data.load_image(path)
    assert loaded.ok and "EXIF orientation 6 applied" in loaded.conversions
    assert loaded.image.shape == (40, 20, 3) and (loaded.width, loaded.height) == (20, 40)
    assert loaded.image[5, 10, 0] > 200 and loaded.image[35, 10, 2] > 200  # red on top now


def test_grayscale_alpha_and_palette_are_converted(tmp_path):
    gray = tmp_path / "gray.png"
    Image.fromarray(smooth_image(4)[..., 0]).save(gray)
    loaded = data.load_image(gray)
    assert "grayscale -> RGB" in loaded.conversions
    assert np.array_equal(loaded.image[..., 0], loaded.image[..., 2])

    rgba = np.zeros((8, 8, 4), np.uint8)
    Image.fromarray(rgba).save(tmp_path / "clear.png")
    clear = data.load_image(tmp_path / "clear.png")
    assert "RGBA with alpha -> RGB on white" in clear.conversions and clear.image.min() == 255

    frames = [Image.fromarray(smooth_image(s, 16)).convert("P") for s in (5, 6)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    gif = data.load_image(tmp_path / "anim.gif")
    assert gif.ok and "first frame of 2" in gif.conversions and gif.image.shape == (16, 16, 3)


def test_scan_reports_every_file(face_tree):
    (face_tree / "real" / "cam_a" / "broken.jpg").write_text("nope")
    stray = (face_tree / "real" / "cam_a" / "cam_a_00.jpg").read_bytes()
    (face_tree / "real" / "stray.jpg").write_bytes(stray)
    Image.fromarray(smooth_image(99)).convert("CMYK").save(face_tree / "fake" / "gan_a" / "cmyk.jpg")
    (face_tree / "other").mkdir()
    (face_tree / "other" / "x" ).mkdir()
    (face_tree / "other" / "x" / "y.jpg").write_bytes(b"")
    manifest = data.scan_folder(face_tree, progress=False)
    assert len(manifest) == 40 + 4  # every file has a row
    by_path = manifest.set_index("path")
    assert by_path.at["real/cam_a/broken.jpg", "status"] == "rejected"
    assert "not an image" in by_path.at["real/cam_a/broken.jpg", "reason"]
    assert "not inside a <label>/<source>/" in by_path.at["real/stray.jpg", "reason"]
    assert "is not one of" in by_path.at["other/x/y.jpg", "reason"]
    assert by_path.at["fake/gan_a/cmyk.jpg", "status"] == "converted"
    ok = data.usable(manifest)
    assert len(ok) == 41 and ok["sha256"].str.len().eq(64).all() and ok["phash"].str.len().eq(16).all()
    summary = data.summarize_manifest(manifest)
    assert summary["files"].sum() == len(manifest)
    assert len(data.rejected_report(manifest)) == 3


def test_limit_per_source_is_deterministic(face_tree):
    first = data.list_image_files(face_tree, limit_per_source=3, seed=1)
    again = data.list_image_files(face_tree, limit_per_source=3, seed=1)
    other = data.list_image_files(face_tree, limit_per_source=3, seed=2)
    assert first.equals(again) and len(first) == 12
    assert first.groupby("source").size().eq(3).all()
    assert not first["path"].equals(other["path"])
