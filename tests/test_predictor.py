"""`Predictor`, the object the CLI and the app score with, against a detector whose score is known exactly.

The detector has the real ones' layout (a nested ``backbone``, global average pooling named ``gap``, a
``prediction`` layer) and hand-set weights: its two pooled features are the image's brightness and its
mean left-to-right gradient, so every score, every mirrored score (the gradient changes sign) and every
pooled feature has a NumPy oracle below. No training, no pretrained weights: seconds.
"""

import json
import zipfile

import keras
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from helpers import faces, models, predict, served
from helpers.data import load_image, resize_square
from helpers.decoding import decode_cost

SIZE = 24
WEIGHTS, BIAS = np.array([4.0, 30.0]), -2.0  # score = sigmoid(4 brightness + 30 gradient - 2)


def _known_detector() -> keras.Model:
    base = keras.Sequential([keras.Input((SIZE, SIZE, 3)), keras.layers.Conv2D(2, (1, 2), use_bias=False, name="pair")],
                            name=models.BACKBONE_NAME)
    kernel = np.zeros((1, 2, 3, 2), np.float32)
    kernel[0, :, :, 0] = 1 / (2 * 3 * 255)                              # brightness of a pair of pixels, 0..1
    kernel[0, 0, :, 1], kernel[0, 1, :, 1] = -1 / (3 * 255), 1 / (3 * 255)  # right minus left
    base.get_layer("pair").set_weights([kernel])
    inputs = keras.Input((SIZE, SIZE, 3))
    pooled = keras.layers.GlobalAveragePooling2D(name="gap")(base(inputs))
    head = keras.layers.Dense(1, activation="sigmoid", name="prediction")
    model = keras.Model(inputs, head(pooled), name="known")
    head.set_weights([WEIGHTS.reshape(2, 1).astype(np.float32), np.array([BIAS], np.float32)])
    return model


def _features(images: np.ndarray) -> np.ndarray:
    grey = images.astype(np.float64).mean(axis=3) / 255
    brightness = ((grey[:, :, :-1] + grey[:, :, 1:]) / 2).mean(axis=(1, 2))
    gradient = (grey[:, :, 1:] - grey[:, :, :-1]).mean(axis=(1, 2))
    return np.stack([brightness, gradient], 1)


def _oracle(images: np.ndarray, mirror_too: bool = False) -> np.ndarray:
    scores = 1 / (1 + np.exp(-(_features(images) @ WEIGHTS + BIAS)))
    return (scores + _oracle(images[:, :, ::-1])) / 2 if mirror_too else scores


def _ramps(n: int, seed: int = 0, levels=(40, 200), slopes=(-50, 50)) -> np.ndarray:
    """Images with different brightness and left-right slopes (so the mirror changes the score)."""
    rng = np.random.default_rng(seed)
    columns = np.linspace(0, 1, SIZE)
    out = []
    for _ in range(n):
        level, slope = rng.uniform(*levels), rng.uniform(*slopes)
        row = np.clip(level + slope * (columns - 0.5), 0, 255)
        out.append(np.repeat(np.repeat(row[None, :, None], SIZE, 0), 3, 2))
    return np.stack(out).astype(np.uint8)


@pytest.fixture(scope="module")
def known_model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("runs") / "lab" / "models" / "known.keras"
    path.parent.mkdir(parents=True)
    _known_detector().save(path)
    return path


def _write_metrics(model_path, **metrics):
    target = model_path.parent.parent / "metrics" / f"{model_path.stem}_metrics.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(metrics))
    return target


def test_scores_are_the_models_and_the_mirror_is_averaged_only_when_asked(known_model_path):
    predictor = predict.Predictor.load(known_model_path)
    images = _ramps(7)
    assert predictor.score_arrays(images) == pytest.approx(_oracle(images), abs=1e-5)
    assert not np.allclose(_oracle(images), _oracle(images, mirror_too=True), atol=1e-3)  # the check can fail
    predictor.tta_flip = True
    assert predictor.score_arrays(images) == pytest.approx(_oracle(images, mirror_too=True), abs=1e-5)
    assert predictor.single_pass_scores(images) == pytest.approx(_oracle(images), abs=1e-5)  # what an export computes


def test_load_reads_threshold_size_and_name_from_the_metrics_and_warns(known_model_path, tmp_path):
    bare = predict.Predictor.load(known_model_path)
    assert (bare.threshold, bare.image_size, bare.name, bare.path) == (0.5, SIZE, "known", known_model_path)
    assert bare.point is None and bare.distance is None and bare.tta_flip is False
    assert bare.operating_point == served.OperatingPoint(0.5, 0.5)
    assert len(bare.warnings) == 1 and "never evaluated" in bare.warnings[0] and "0.5" in bare.warnings[0]
    metrics = _write_metrics(known_model_path, model="Known detector", threshold=0.37, image_size=SIZE,
                             val=dict(n=12, auc=0.9))
    try:
        few = predict.Predictor.load(known_model_path)
        assert (few.threshold, few.name, few.image_size) == (0.37, "Known detector", SIZE)
        assert few.operating_point == served.OperatingPoint(0.37, 0.37)
        assert few.warnings == [f"this model was validated on only 12 images (fewer than {predict.MIN_VAL_IMAGES}): "
                                "its threshold and scores are unreliable"]
        _write_metrics(known_model_path, threshold=0.37, val=dict(n=predict.MIN_VAL_IMAGES, auc=0.9),
                       weights=dict(source="none", warning="trained from random weights"))
        enough = predict.Predictor.load(known_model_path)
        assert enough.warnings == ["trained from random weights"] and enough.name == "known"
        assert enough.image_size == SIZE  # no image_size in the metrics: the model's input
    finally:
        metrics.unlink()
    with pytest.raises(predict.NoModelError, match="not found") as missing:
        predict.Predictor.load(tmp_path / "nothing.keras")
    assert not isinstance(missing.value, predict.ModelUnusable)
    (tmp_path / "folder.keras").mkdir()
    (tmp_path / "weights.h5").write_bytes(b"x")
    (tmp_path / "broken.keras").write_bytes(b"not a zip")
    for name, reason in (("folder.keras", "is not a .keras model file"), ("weights.h5", "is not a .keras model file"),
                         ("broken.keras", "cannot be loaded as a detector: not a Keras archive")):
        with pytest.raises(predict.ModelUnusable, match=reason) as err:
            predict.Predictor.load(tmp_path / name)
        assert str(err.value).startswith(str(tmp_path / name)) and "\n" not in str(err.value)


def test_assess_labels_equal_score_against_the_threshold_row_by_row(known_model_path):
    predictor = predict.Predictor.load(known_model_path)
    images = _ramps(40, seed=3)
    expected = _oracle(images)
    predictor.threshold = float(np.median(expected))  # half on each side, one exactly on it
    scores, answers = predictor.assess(images)
    assert scores == pytest.approx(expected, abs=1e-5)
    assert answers.labels.tolist() == np.where(scores >= predictor.threshold, "fake", "real").tolist()
    assert set(answers.labels) == {"fake", "real"} and set(answers.reasons) == {""}


def test_a_served_detector_answers_unsure_in_its_band_and_for_unfamiliar_images(known_model_path, tmp_path, capsys):
    # 20 bright images rising to the right (the "training" features), 10 dark ones falling: unfamiliar
    images = np.concatenate([_ramps(20, 5, (150, 200), (40, 50)), _ramps(10, 6, (40, 60), (-50, -40))])
    scores = _oracle(images, mirror_too=True)
    ordered = np.sort(scores)
    point = served.OperatingPoint(fake_threshold=float(ordered[20]), real_threshold=float(ordered[10]))
    familiar = _features(images[:20])
    distance = served.FeatureDistance(served._unit(familiar), k=2)
    distance.max_distance = float(distance.distances(familiar).max()) + 1e-6
    record = served.ServedRecord(recipe={"name": "known served"}, image_size=SIZE, operating_point=point, distance_k=2,
                                 distance_quantile=1.0, max_distance=distance.max_distance, tta_flip=True,
                                 weights={"source": "none", "warning": None}, validation=dict(n=300, auc=0.8, rates=[]),
                                 test_auc=0.8, test_rates=[])
    path = served.save_served(predict.Predictor.load(known_model_path).model, tmp_path / "m" / "served.keras",
                              record, distance)
    predictor = predict.Predictor.load(path)
    assert predictor.point == point and predictor.tta_flip and predictor.threshold == point.fake_threshold
    assert predictor.name == "served: known served" and predictor.warnings == []
    capsys.readouterr()
    got, answers = predictor.assess(images)
    assert capsys.readouterr().out == ""  # no Keras progress bar in the CLI's output
    assert got == pytest.approx(scores, abs=1e-5)
    far = distance.distances(_features(images)) > distance.max_distance
    assert far[20:].any() and not far[:20].any()
    band = np.where(scores >= point.fake_threshold, "fake", np.where(scores < point.real_threshold, "real", "unsure"))
    assert answers.labels.tolist() == np.where(far, "unsure", band).tolist()
    for label, reason, is_far in zip(answers.labels, answers.reasons, far):
        assert (reason != "") == (label == "unsure")
        assert reason.startswith("unlike the training images") == bool(is_far)


def _write(path, image):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return path


def test_predict_files_keeps_order_across_batches_and_reports_bad_files(known_model_path, tmp_path):
    predictor = predict.Predictor.load(known_model_path)
    predictor.threshold = 0.5
    wide = _ramps(5, seed=8)
    files = [_write(tmp_path / f"in/{k}.png", resize_square(wide[k], 48)) for k in range(5)]
    (tmp_path / "in" / "broken.png").write_bytes(b"\x89PNG broken")
    tiny = _write(tmp_path / "in" / "tiny.png", wide[0][:16, :16])
    paths = [files[0], tmp_path / "in" / "broken.png", files[1], files[2], tiny, files[3], files[4]]
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        predictor.predict_files(paths, batch_size=0, progress=False)
    table = predictor.predict_files(paths, batch_size=2, progress=False)
    assert table.columns.tolist() == predict.RESULT_COLUMNS and table.path.tolist() == [str(p) for p in paths]
    good = table.error == ""
    assert good.tolist() == [True, False, True, True, False, True, True]
    expected = _oracle(np.stack([load_image(p, size=SIZE).image for p in files]))
    assert table.score[good].to_numpy() == pytest.approx(expected, abs=1e-5)
    assert table.label[good].tolist() == np.where(table.score[good] >= 0.5, "fake", "real").tolist()
    assert set(table.label[good]) == {"fake", "real"} and (table.threshold == 0.5).all()
    assert table.label[~good].tolist() == ["", ""] and table.score[~good].isna().all()
    assert table.error[4] == f"image too small to judge: 16x16 (at least {predict.MIN_SIDE_FOR_VERDICT} px a side)"
    assert "corrupt" in table.error[1] or "not an image" in table.error[1]
    assert np.allclose(table.score[good] * 1e6, np.round(table.score[good] * 1e6), rtol=0, atol=1e-6)  # 6 decimals
    assert table.unsure_reason.tolist() == [""] * 7
    whole = predictor.predict_files(paths, batch_size=50, progress=False)
    pd.testing.assert_frame_equal(whole, table)
    ordered = np.sort(expected)
    predictor.point = served.OperatingPoint(fake_threshold=float(ordered[3:5].mean()),
                                            real_threshold=float(ordered[0:2].mean()))  # between scores
    banded = predictor.predict_files(paths, batch_size=2, progress=False)
    answers = served.answer(predictor.point, banded.score[good].to_numpy())
    assert banded.label[good].tolist() == answers.labels.tolist() and "unsure" in answers.labels
    assert banded.unsure_reason[good].tolist() == list(answers.reasons)
    assert banded.unsure_reason[~good].tolist() == ["", ""]
    assert predictor.predict_files([tmp_path / "in" / "broken.png"], progress=False).error.tolist() == [table.error[1]]


class _ListedFaces:
    """A face detector that finds the faces it is given for each image's top-left pixel value."""

    def __init__(self, by_key):
        self.by_key = by_key

    def detect(self, image):
        return list(self.by_key.get(int(image[0, 0, 0]), []))


def test_predict_faces_scores_each_crop_and_says_when_there_is_none(known_model_path, tmp_path):
    predictor = predict.Predictor.load(known_model_path)
    predictor.threshold = 0.48
    rng = np.random.default_rng(2)
    base = np.clip(rng.normal(128, 40, (120, 160, 3)), 0, 255).astype(np.uint8)
    base[:, :, 1] = np.linspace(0, 255, 160)[None, :].astype(np.uint8)  # a gradient inside each crop
    many = [faces.Face((10 + 14 * k, 20, 20, 26), 0.987654321 - 0.01 * k) for k in range(7)]
    with_faces, without = base.copy(), base.copy()
    with_faces[0, 0, 0], without[0, 0, 0] = 1, 2
    paths = [tmp_path / "f" / "missing.png", _write(tmp_path / "f" / "faces.png", with_faces),
             _write(tmp_path / "f" / "none.png", without), _write(tmp_path / "f" / "tiny.png", with_faces[:16, :16])]
    detector = _ListedFaces({1: many})
    found, crops = predictor.face_crops(with_faces, detector)
    assert found == many[:5] and crops.shape == (5, SIZE, SIZE, 3)  # at most five, in the detector's order
    assert np.array_equal(crops[2], resize_square(faces.crop_face(with_faces, many[2], 0.4), SIZE))
    _, wider = predictor.face_crops(with_faces, detector, margin=0.1, max_faces=2)
    assert len(wider) == 2 and np.array_equal(wider[1], resize_square(faces.crop_face(with_faces, many[1], 0.1), SIZE))
    none_found = predictor.face_crops(without, detector)[1]
    assert none_found.shape == (0, SIZE, SIZE, 3) and none_found.dtype == crops.dtype == np.uint8
    table = predictor.predict_faces(paths, detector, progress=False)
    assert table.columns.tolist() == predict.FACE_COLUMNS
    assert table.face.tolist() == [-1, 0, 1, 2, 3, 4, -1, -1]
    assert "no such file" in table.error[0] and table.error[1:7].tolist() == [""] * 5 + ["no face detected"]
    assert table.error[7] == f"image too small to judge: 16x16 (at least {predict.MIN_SIDE_FOR_VERDICT} px a side)"
    found = table.face >= 0
    expected = _oracle(crops)
    assert table.score[found].to_numpy() == pytest.approx(expected, abs=1e-5)
    assert table.label[found].tolist() == np.where(expected >= 0.48, "fake", "real").tolist()
    assert len(set(table.label[found])) == 2
    assert table.box[found].tolist() == [" ".join(map(str, f.box)) for f in many[:5]]
    assert table.face_confidence[found].tolist() == [round(f.confidence, 4) for f in many[:5]]
    assert np.allclose(table.score[found] * 1e6, np.round(table.score[found] * 1e6), rtol=0, atol=1e-6)  # 6 decimals
    assert table.path.tolist() == [str(paths[0])] + [str(paths[1])] * 5 + [str(paths[2]), str(paths[3])]
    assert (table.threshold == 0.48).all() and table.score[~found].isna().all()
    assert table.label[~found].tolist() == table.box[~found].tolist() == ["", "", ""]
    assert table.face_confidence[~found].isna().all() and table.unsure_reason.tolist() == [""] * 8
    ordered = np.sort(expected)
    predictor.point = served.OperatingPoint(fake_threshold=float(ordered[3:5].mean()),
                                            real_threshold=float(ordered[0:2].mean()))  # between scores
    banded = predictor.predict_faces(paths, detector, progress=False)
    answers = served.answer(predictor.point, banded.score[found].to_numpy())
    assert banded.label[found].tolist() == answers.labels.tolist() and "unsure" in answers.labels
    assert banded.unsure_reason[found].tolist() == list(answers.reasons)


def test_a_model_that_fails_to_load_gets_a_one_line_reason(known_model_path, monkeypatch, tmp_path):
    from helpers import models as model_module

    target = tmp_path / "odd.keras"
    with zipfile.ZipFile(target, "w") as archive:  # a zip, as a .keras file is: the loader itself is reached
        archive.writestr("config.json", "{}")
    for raised, reason in ((ValueError("first line\nsecond line"), "first line"), (KeyError(), "KeyError"),
                           (OSError("x" * 300), "x" * 200)):
        def failing(path, raised=raised):
            raise raised
        monkeypatch.setattr(model_module, "load_detector", failing)
        with pytest.raises(predict.ModelUnusable) as err:
            predict.Predictor.load(target)
        assert str(err.value) == f"{target} cannot be loaded as a detector: {reason}"


def test_the_input_size_comes_from_the_metrics_else_the_models_height(tmp_path):
    model = keras.Sequential([keras.Input((20, 28, 3)), keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(1, activation="sigmoid")])
    path = tmp_path / "r" / "models" / "tall.keras"
    path.parent.mkdir(parents=True)
    model.save(path)
    assert predict.Predictor.load(path).image_size == 20
    _write_metrics(path, threshold=0.4, image_size=16, val=dict(n=80))
    assert predict.Predictor.load(path).image_size == 16


def test_progress_bars_count_files_and_an_empty_list_keeps_the_columns(known_model_path, tmp_path, capsys):
    predictor = predict.Predictor.load(known_model_path)
    paths = [_write(tmp_path / f"p/{k}.png", resize_square(image, 48)) for k, image in enumerate(_ramps(3, seed=9))]
    predictor.predict_files(paths, batch_size=2)  # a progress bar unless asked not to
    shown = capsys.readouterr().err
    assert "scoring: 100%" in shown and "3/3" in shown and "img/s" in shown
    predictor.predict_faces(paths, _ListedFaces({}))
    shown = capsys.readouterr().err
    assert "faces: 100%" in shown and "3/3" in shown and "img/s" in shown
    predictor.predict_files(paths, progress=False)
    predictor.predict_faces(paths, _ListedFaces({}), progress=False)
    predictor.score_arrays(_ramps(2))
    predictor.tta_flip = True
    predictor.assess(_ramps(2))
    assert capsys.readouterr() == ("", "")  # and Keras prints no progress bar of its own
    assert predictor.predict_files([], progress=False).columns.tolist() == predict.RESULT_COLUMNS
    assert predictor.predict_faces([], _ListedFaces({}), progress=False).columns.tolist() == predict.FACE_COLUMNS
    one_by_one = predictor.predict_files(paths, batch_size=1, progress=False)
    pd.testing.assert_frame_equal(one_by_one, predictor.predict_files(paths, batch_size=3, progress=False))


def test_decoding_shares_one_budget_on_at_most_four_threads(known_model_path, tmp_path, monkeypatch):
    import threading
    import time

    predictor = predict.Predictor.load(known_model_path)
    paths = [_write(tmp_path / f"b/{k}.png", resize_square(image, 48)) for k, image in enumerate(_ramps(12, seed=4))]
    budgets = []

    class RecordedBudget(predict.DecodeBudget):
        def __init__(self, total):
            super().__init__(total)
            budgets.append(self)

    monkeypatch.setattr(predict, "DecodeBudget", RecordedBudget)
    predictor.predict_files(paths, progress=False, decode_budget=1)
    one = decode_cost("PNG", "RGB", (48, 48), (48, 48), predictor.image_size, 4096)  # what one decode reserves
    assert [b.total for b in budgets] == [1] and budgets[0].peak == one  # one at a time: never two reservations
    running, most, lock = [0], [0], threading.Lock()
    real_load = predict.load_image

    def counted(*args, **kwargs):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1
        return real_load(*args, **kwargs)

    monkeypatch.setattr(predict, "load_image", counted)
    for cpus, threads in ((64, predict.MAX_DECODE_THREADS), (None, 2)):
        monkeypatch.setattr(predict.os, "cpu_count", lambda cpus=cpus: cpus)
        most[0] = 0
        predictor.predict_files(paths, progress=False)
        assert most[0] == threads
