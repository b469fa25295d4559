"""MTCNN face detection on real sample faces, several faces, no face, tiny and huge images."""

import json

import numpy as np
import pytest

from helpers.data import load_image
from helpers.faces import (
    Face,
    FaceDetector,
    align_face,
    crop_face,
    detect_manifest,
    detection_summary,
    eye_angle,
    input_view,
    write_crops,
)


@pytest.fixture(scope="module")
def detector():
    return FaceDetector()


def _face(shared_faces, source="real/ffhq", index=0):
    return load_image(sorted((shared_faces / source).iterdir())[index]).image


def test_one_face_in_a_sample_photo(detector, shared_faces):
    faces = detector.detect(_face(shared_faces))
    assert len(faces) == 1 and faces[0].confidence > 0.95
    assert set(faces[0].keypoints) == {"left_eye", "right_eye", "nose", "mouth_left", "mouth_right"}


def test_several_faces_are_all_kept_most_confident_first(detector, shared_faces):
    pair = np.concatenate([_face(shared_faces, "real/ffhq", 0), _face(shared_faces, "fake/stylegan1", 0)], axis=1)
    faces = detector.detect(pair)
    assert len(faces) == 2
    assert faces[0].confidence >= faces[1].confidence
    assert {f.box[0] < 256 for f in faces} == {True, False}  # one on each half


def test_no_face_tiny_and_huge_images(detector):
    rng = np.random.default_rng(0)
    assert detector.detect(np.full((200, 200, 3), 128, np.uint8)) == []
    assert detector.detect(rng.integers(0, 255, (10, 10, 3), dtype=np.uint8)) == []
    assert detector.detect(rng.integers(0, 255, (3000, 3000, 3), dtype=np.uint8)) == []


def test_crop_is_square_centred_and_stays_inside_the_image():
    image = np.zeros((100, 120, 3), np.uint8)
    image[40:60, 50:70] = 255
    crop = crop_face(image, Face((50, 40, 20, 20), 0.99), margin=0.5)
    assert crop.shape == (40, 40, 3) and crop[10:30, 10:30].min() == 255 and crop[:10].max() == 0
    image[0:30, 0:30] = 7
    corner = crop_face(image, Face((0, 0, 30, 30), 0.99), margin=0.5)
    assert corner.shape == (60, 60, 3) and (corner[:30, :30] == 7).all()  # shifted, not padded
    huge = crop_face(image, Face((30, 20, 60, 60), 0.99), margin=0.5)
    assert huge.shape == (100, 100, 3)  # shrunk to the largest square that fits


def test_batch_detection_matches_one_at_a_time(detector, shared_faces):
    images = [_face(shared_faces, "real/ffhq", i) for i in range(4)] + [_face(shared_faces, "fake/sd21", 0)]
    batched = detector.detect_batch(images, batch_size=4)
    single = [detector.detect(image) for image in images]
    assert [len(f) for f in batched] == [len(f) for f in single] == [1, 1, 1, 1, 1]
    for b, s in zip(batched, single):
        assert np.abs(np.array(b[0].box) - np.array(s[0].box)).max() <= 2


def test_huge_images_are_detected_on_a_downscaled_copy_and_mapped_back(shared_faces):
    from PIL import Image

    image = _face(shared_faces)
    big = np.asarray(Image.fromarray(image).resize((image.shape[1] * 8, image.shape[0] * 8)))  # 2048 px
    small_detector = FaceDetector(max_side=512)
    [face] = small_detector.detect(big)
    [reference] = small_detector.detect(image)
    assert np.allclose(np.array(face.box) / 8, reference.box, atol=6)


def test_align_levels_the_eyes():
    from PIL import Image, ImageDraw

    canvas = Image.new("RGB", (200, 200), "white")
    draw = ImageDraw.Draw(canvas)
    draw.ellipse((55, 75, 75, 95), fill="black")    # left eye at (65, 85)
    draw.ellipse((125, 105, 145, 125), fill="black")  # right eye at (135, 115): tilted ~23 degrees
    face = Face((40, 40, 120, 130), 0.99, {"left_eye": (65, 85), "right_eye": (135, 115)})
    rotated, moved = align_face(np.asarray(canvas), face)
    (lx, ly), (rx, ry) = moved.keypoints["left_eye"], moved.keypoints["right_eye"]
    assert abs(ly - ry) <= 1 and abs(eye_angle(moved)) < 1
    for x, y in ((lx, ly), (rx, ry)):  # the eyes really are where the landmarks moved to
        assert rotated[y, x].max() < 80


def test_detect_manifest_records_every_case_and_reuses_its_cache(tmp_path, shared_faces):
    from PIL import Image

    from helpers.data import scan_folder

    root = tmp_path / "faces"
    (root / "real" / "mix").mkdir(parents=True)
    one = _face(shared_faces)
    Image.fromarray(one).save(root / "real" / "mix" / "one.png")
    Image.fromarray(np.concatenate([one, _face(shared_faces, "fake/stylegan1", 0)], axis=1)).save(
        root / "real" / "mix" / "two.png")
    Image.fromarray(np.full((200, 200, 3), 128, np.uint8)).save(root / "real" / "mix" / "blank.png")
    Image.fromarray(np.full((12, 12, 3), 90, np.uint8)).save(root / "real" / "mix" / "tiny.png")
    manifest = scan_folder(root, progress=False)
    cache = tmp_path / "cache"
    table = detect_manifest(manifest, root, FaceDetector(), cache_dir=cache, progress=False).set_index("path")
    assert table.loc["real/mix/one.png", "face_status"] == "face"
    assert table.loc["real/mix/two.png", "n_faces"] == 2 and "2 faces" in table.loc["real/mix/two.png", "face_reason"]
    assert len(json.loads(table.loc["real/mix/two.png", "faces"])) == 2
    assert table.loc["real/mix/blank.png", "face_reason"] == "no face detected"
    assert "too small" in table.loc["real/mix/tiny.png", "face_reason"]
    assert not table["cached"].any()

    class Exploding(FaceDetector):
        def detect_batch(self, images, batch_size=16):
            raise AssertionError("the cache should have answered")

    again = detect_manifest(manifest, root, Exploding(), cache_dir=cache, progress=False).set_index("path")
    assert again["cached"].all()
    assert again.drop(columns="cached").equals(table.drop(columns="cached"))

    crops = write_crops(table.reset_index(), root, tmp_path / "crops", size=64, progress=False)
    with_crop = crops[crops.crop_path != ""]
    assert set(with_crop.path) == {"real/mix/one.png", "real/mix/two.png"}
    assert Image.open(tmp_path / "crops" / with_crop.crop_path.iloc[0]).size == (64, 64)
    summary = detection_summary(table.reset_index())
    assert summary.iloc[0][["images", "face", "several_faces", "no_face"]].tolist() == [4, 2, 1, 2]


def test_input_view_switches_to_crops_and_reports_images_without_a_face(tmp_path, capsys):
    import pandas as pd

    split = pd.DataFrame({"path": ["real/a.jpg", "fake/b.jpg", "real/c.jpg"], "label": ["real", "fake", "real"],
                          "source": ["x", "y", "x"], "split": ["test"] * 3})
    frame, root = input_view(split, tmp_path / "data", tmp_path, "image")
    assert frame is split and root == tmp_path / "data"
    with pytest.raises(FileNotFoundError, match="notebook 02"):
        input_view(split, tmp_path / "data", tmp_path, "face")
    pd.DataFrame({"path": ["real/a.jpg", "fake/b.jpg", "real/c.jpg"],
                  "crop_path": ["real/a.jpg.png", "fake/b.jpg.png", ""]}).to_csv(tmp_path / "annotations.csv")
    frame, root = input_view(split, tmp_path / "data", tmp_path, "face")
    assert frame.path.tolist() == ["real/a.jpg.png", "fake/b.jpg.png"]
    assert frame.image_path.tolist() == ["real/a.jpg", "fake/b.jpg"]
    assert root == tmp_path / "faces" / "crops"
    assert "1 images without a detected face" in capsys.readouterr().out
    with pytest.raises(ValueError):
        input_view(split, tmp_path, tmp_path, "crops")


def _coordinates(height: int, width: int) -> np.ndarray:
    """Pixel (y, x) holds (y, x, 0) (values under 256 here): a crop's place can be read off its corner pixel."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([y, x, np.zeros_like(y)], axis=-1).astype(np.uint8)


@pytest.mark.parametrize(("shape", "box", "margin", "top", "left", "side"), [
    ((250, 200), (150, 10, 40, 60), 0.5, 0, 80, 120),     # portrait, face at the top-right edge
    ((200, 250), (5, 170, 30, 20), 0.4, 146, 0, 54),      # landscape, face at the bottom-left corner
    ((250, 200), (50, 100, 150, 150), 0.4, 50, 0, 200),   # portrait, the square shrunk to the width, at the bottom
    ((200, 250), (100, 60, 50, 50), 0.5, 35, 75, 100),    # landscape, face inside: centred
    ((120, 240), (200, 40, 30, 30), 0.5, 25, 180, 60),    # wide, face at the right edge
])
def test_face_crops_on_non_square_pictures_at_every_edge(shape, box, margin, top, left, side):
    """Hand-worked crops: side = the box's longer side x (1 + 2 x margin), at most the picture's shorter side;
    centred on the box, then shifted inside the picture along each axis by that axis' own length."""
    image = _coordinates(*shape)
    crop = crop_face(image, Face(box, 0.99), margin=margin)
    assert crop.shape == (side, side, 3)
    assert (int(crop[0, 0, 0]), int(crop[0, 0, 1])) == (top, left)
    assert (int(crop[-1, -1, 0]), int(crop[-1, -1, 1])) == (top + side - 1, left + side - 1)
