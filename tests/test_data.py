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


def test_16_bit_mid_ramp_values_are_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257, 1000, 32768, 40000, 65535]], np.uint16).repeat(4, axis=0)
    Image.fromarray(values).save(tmp_path / "deep.png")
    loaded = data.load_image(tmp_path / "deep.png")
    expected = np.rint(values[0] / 65535 * 255).astype(np.uint8)  # 0, 1, 4, 128, 156, 255
    assert loaded.image[0, :, 0].tolist() == expected.tolist()


def _peak_rss_mib(tmp_path, code: str) -> float:
    """Peak RSS added by ``code`` in a fresh interpreter that has already imported the loader.

    Read from VmHWM, which a new process starts afresh (``ru_maxrss`` carries the parent's
    peak across fork and exec, which would hide the cost inside a large test process).
    """
    import subprocess
    import sys

    script = ("from helpers import data, decoding\n"
              "before = decoding.peak_rss_mib()\n"
              f"{code}\n"
              "print(decoding.peak_rss_mib() - before)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def test_memory_is_bounded_before_and_while_decoding(tmp_path):
    Image.new("1", (13000, 13000)).save(tmp_path / "bomb.png")  # a few hundred KB on disk
    Image.fromarray(np.full((8000, 8000), 40000, np.uint16)).save(tmp_path / "deep.png")
    assert (tmp_path / "bomb.png").stat().st_size < 1_000_000
    rejected = _peak_rss_mib(tmp_path, "r = data.load_image('bomb.png'); assert 'image too large' in r.error, r.error")
    assert rejected < 20, f"a rejected image cost {rejected:.0f} MiB"  # was ~790 MB: EXIF read decoded it
    accepted = _peak_rss_mib(tmp_path, "r = data.load_image('deep.png', size=64); assert r.ok, r.error\n"
                                       "assert r.image.shape == (64, 64, 3) and r.image[0, 0, 0] == 156")
    assert accepted < 300, f"loading a 16-bit 8000x8000 PNG cost {accepted:.0f} MiB"  # was 1.7 GB
    full = _peak_rss_mib(tmp_path, "r = data.load_image('deep.png'); assert r.ok and r.image.shape == (4000, 4000, 3)")
    assert full < 300, f"a full-resolution load cost {full:.0f} MiB"


def test_decode_cost_guard_and_longest_side(tmp_path):
    Image.fromarray(smooth_image(7, 600)).save(tmp_path / "big.png")
    refused = data.load_image(tmp_path / "big.png", max_decode_bytes=1_000_000)
    assert not refused.ok and "too large to decode: 600x600 PNG RGB needs 21 MiB" in refused.error  # 600²*16 B + 16 MiB
    capped = data.load_image(tmp_path / "big.png", max_side=200)
    assert capped.image.shape == (200, 200, 3) and (capped.width, capped.height) == (600, 600)
    assert "downscaled from 600x600 to 200x200 (longest side limit 200)" in capped.conversions
    Image.fromarray(np.zeros((300, 600, 3), np.uint8)).save(tmp_path / "wide.png")
    wide = data.load_image(tmp_path / "wide.png", max_side=200)
    assert wide.image.shape == (100, 200, 3) and "downscaled from 600x300 to 200x100 (longest side limit 200)" in \
        wide.conversions
    assert not data.load_image(tmp_path / "wide.png", max_side=600).conversions  # at the limit: kept as it is
    tiny = write_jpeg(tmp_path / "tiny.jpg", smooth_image(8, 20))
    assert "too small to judge: 20x20" in data.load_image(tiny, min_side=32).error
    assert data.load_image(tiny).ok  # no minimum unless asked (training data may hold small crops)


def test_decode_budget_holds_concurrent_decodes_under_its_total():
    import threading
    import time

    from helpers.decoding import DecodeBudget

    budget, holders, snapshots = DecodeBudget(100), [], []
    lock = threading.Lock()

    def work(n):
        with budget.reserve(n):
            with lock:
                holders.append(n)
                snapshots.append(list(holders))
            time.sleep(0.02)
            with lock:
                holders.remove(n)

    threads = [threading.Thread(target=work, args=(n,)) for n in (60, 60, 30, 30, 150, 10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(snapshots) == 6 and budget.in_use == 0
    for held in snapshots:  # under the total, or one oversized decode alone
        assert sum(held) <= 100 or held == [150], held
    assert max(len(held) for held in snapshots) >= 2  # it does let decodes overlap


def test_each_unreadable_thing_gets_its_own_reason(tmp_path, monkeypatch):
    import os

    good = write_jpeg(tmp_path / "good.jpg", smooth_image(9))
    (tmp_path / "dangling.jpg").symlink_to(tmp_path / "gone.jpg")
    (tmp_path / "folder.jpg").mkdir()
    os.mkfifo(tmp_path / "pipe.jpg")
    assert "broken symbolic link" in data.load_image(tmp_path / "dangling.jpg").error
    assert data.load_image(tmp_path / "folder.jpg").error == "a folder, not an image file"
    assert "not a regular file" in data.load_image(tmp_path / "pipe.jpg").error  # and does not hang
    assert data.load_image(tmp_path / "missing.jpg").error == "cannot read file: no such file"

    def refuse(path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(data, "_open_for_reading", refuse)  # root reads any file, so the refusal is simulated
    assert data.load_image(good).error == "cannot read file: Permission denied"


def test_scan_keeps_broken_links_and_undecodable_names_as_rows(face_tree):
    import os

    folder = face_tree / "real" / "cam_a"
    (folder / "dangling.jpg").symlink_to(folder / "nowhere.jpg")
    odd = os.path.join(os.fsencode(folder), b"\xe9t\xe9.jpg")  # Latin-1 bytes, not valid UTF-8
    with open(odd, "wb") as handle:
        handle.write((folder / "cam_a_00.jpg").read_bytes())
    manifest = data.scan_folder(face_tree, progress=False)
    by_path = manifest.set_index("path")
    assert len(manifest) == 42
    assert "broken symbolic link" in by_path.at["real/cam_a/dangling.jpg", "reason"]
    assert "not valid UTF-8" in by_path.at["real/cam_a/\\xe9t\\xe9.jpg", "reason"]
    manifest.to_csv(face_tree / "manifest.csv", index=False)  # writes: every path is valid text


def test_a_draft_decode_is_not_a_conversion(tmp_path):
    """``draft`` (the manifest scan decodes small to hash fast) changes no status: the file is fine as it is."""
    path = write_jpeg(tmp_path / "plain.jpg", smooth_image(12, 512))
    loaded = data.load_image(path, draft=128)
    assert loaded.ok and loaded.conversions == [] and loaded.image.shape == (128, 128, 3)
    assert (loaded.width, loaded.height) == (512, 512)


def test_every_limit_accepts_its_own_value_and_refuses_one_more(tmp_path):
    path = write_jpeg(tmp_path / "a.jpg", smooth_image(13, 40))
    size = path.stat().st_size
    assert data.load_image(path, max_bytes=size).ok
    assert data.load_image(path, max_bytes=size - 1).error == \
        f"file too large: {size / 1e6:.1f} MB > limit {(size - 1) / 1e6:.1f} MB"
    assert data.load_image(path, max_pixels=1600).ok
    assert data.load_image(path, max_pixels=1599).error == "image too large: 40x40 = 1,600 pixels > limit 1,599"
    assert data.load_image(path, min_side=40).ok
    assert data.load_image(path, min_side=41).error == "image too small to judge: 40x40 (at least 41 px a side)"
    Image.fromarray(smooth_image(14, 40)).save(tmp_path / "b.png")
    # RGB: 4 bytes a pixel in Pillow, 12 more a pixel for the conversions, 16 MiB for the decoder's own state
    cost = 40 * 40 * (4 + 12) + 16 * 2**20
    assert data.load_image(tmp_path / "b.png", max_decode_bytes=cost).ok
    assert data.load_image(tmp_path / "b.png", max_decode_bytes=cost - 1).error == \
        "image too large to decode: 40x40 PNG RGB needs 16 MiB > limit 16 MiB"
    loaded = data.load_image(path)
    assert (loaded.format, loaded.mode, loaded.path) == ("JPEG", "RGB", path)


def test_bombs_memory_errors_and_the_shared_decode_budget(tmp_path, monkeypatch):
    from PIL import Image

    from helpers.decoding import DecodeBudget

    path = write_jpeg(tmp_path / "face.jpg", smooth_image(4))
    budget = DecodeBudget(10**9)
    assert data.load_image(path, size=32, budget=budget).ok
    assert budget.peak > 0 and budget.in_use == 0  # the decode reserved its bytes and gave them back
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # Pillow's own bomb guard: 64x64 > 2 x 100 pixels
    bomb = data.load_image(path)
    assert bomb.error.startswith("image too large (decompression bomb guard): ") and bomb.image is None
    monkeypatch.undo()

    def out_of_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(data, "_decode", out_of_memory)
    failed = data.load_image(path)
    assert failed.error == "image too large to decode in memory" and failed.image is None and not failed.ok


def test_fuzzed_files_of_every_format_never_raise(tmp_path):
    """Seeded byte mutations of JPEG, PNG, WebP, GIF, multi-page TIFF and MPO files (480 cases): the
    loader answers each with an image or a reason; no exception escapes (the TypeError of a TIFF page
    without its width included)."""
    from hostile import mutants, seed_images, tiff_second_page_without_width

    cases = [tiff_second_page_without_width()]
    for k, body in enumerate(seed_images().values()):
        cases += mutants(body, 80, seed=100 + k)
    outcomes = []
    for k, body in enumerate(cases):
        path = tmp_path / f"case{k}"
        path.write_bytes(body)
        for size in (None, 32):
            loaded = data.load_image(path, size=size)
            assert loaded.ok == (loaded.error is None) and (loaded.image is None) == (not loaded.ok)
            outcomes.append(loaded.ok)
    assert 0.1 < np.mean(outcomes) < 0.95  # the mutants reach both outcomes: they test something
    assert "Missing dimensions" in data.load_image(tmp_path / "case0").error


def test_conversions_record_only_what_happened(tmp_path):
    from hostile import jpeg_with_orientation, rgb16_png

    (tmp_path / "rgb16.png").write_bytes(rgb16_png(40))
    loaded = data.load_image(tmp_path / "rgb16.png")
    assert loaded.conversions == ["16-bit RGB -> 8-bit (high byte of each sample)"]
    raw = (np.arange(40 * 40 * 3, dtype=np.uint32) * 97 % 65536).reshape(40, 40, 3)
    assert np.array_equal(loaded.image, (raw >> 8).astype(np.uint8))  # the high byte, as recorded
    for value in ("upside down", 99):
        (tmp_path / "o.jpg").write_bytes(jpeg_with_orientation(value))
        loaded = data.load_image(tmp_path / "o.jpg")
        assert loaded.ok and loaded.conversions == [f"EXIF orientation {str(value)!r} ignored (not 1-8)"]
        assert (loaded.width, loaded.height) == loaded.image.shape[1::-1]  # not rotated
    (tmp_path / "o.jpg").write_bytes(jpeg_with_orientation(6))
    assert data.load_image(tmp_path / "o.jpg").conversions == ["EXIF orientation 6 applied"]


def test_a_data_root_with_unexpected_entries_is_reported_not_fatal(face_tree, tmp_path):
    """A folder beside real/ and fake/ (a provenance CSV inside), a stray file, a pipe and a hidden file:
    each is a rejected row with its reason, and the data card draws and names them."""
    import os

    from helpers import plots

    (face_tree / "provenance").mkdir()
    (face_tree / "provenance" / "sd15.csv").write_text("path,repo\n")
    (face_tree / "stray.jpg").write_bytes(b"x")
    (face_tree / "manifest.csv").write_text("path\n")  # the data root's own files are not rows
    os.mkfifo(face_tree / "real" / "cam_a" / "pipe.jpg")
    (face_tree / "real" / "cam_a" / ".DS_Store").write_bytes(b"x")
    (face_tree / "real" / "cam_a" / ".fetched-x.json").write_text("{}")  # the lab's own marker: not a row
    manifest = data.scan_folder(face_tree, progress=False)
    rejected = manifest[manifest.status == "rejected"].set_index("path")
    assert "outside the <label>/<source>/<file> layout" in rejected.loc["stray.jpg", "reason"]
    assert "top folder 'provenance' is not one of" in rejected.loc["provenance/sd15.csv", "reason"]
    assert rejected.loc["real/cam_a/pipe.jpg", "reason"].startswith("not a regular file")
    assert rejected.loc["real/cam_a/.DS_Store", "reason"].startswith("hidden")
    assert "manifest.csv" not in set(manifest.path) and not manifest.path.str.contains(".fetched").any()
    assert set(data.usable(manifest).label) == {"real", "fake"}
    figure = plots.data_card(manifest, path=tmp_path / "card.png")
    assert (tmp_path / "card.png").stat().st_size > 5_000
    assert any("provenance/sd15.csv" in text.get_text() for text in figure.texts)
