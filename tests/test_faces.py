"""MTCNN face detection on real sample faces, several faces, no face, tiny and huge images."""

import numpy as np
import pytest

from helpers.data import load_image
from helpers.faces import Face, FaceDetector, crop_face


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
