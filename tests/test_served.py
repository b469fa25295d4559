"""Issue 14: the served detector — its three answers, its record, and that the CLI and the app serve it."""

import shutil

import numpy as np
import pandas as pd
import pytest

from helpers import cli, models, predict, served
from helpers.data import load_image


def _brute_force_distance(features, reference, k):
    """Mean cosine distance to the k nearest reference rows, written out plainly."""
    out = []
    for row in features:
        sims = sorted((float(np.dot(row, r) / (np.linalg.norm(row) * np.linalg.norm(r))) for r in reference),
                      reverse=True)
        out.append(1 - np.mean(sims[:k]))
    return np.array(out)


def test_feature_distance_matches_a_brute_force_oracle_and_its_quantile():
    rng = np.random.default_rng(0)
    train, val = rng.normal(size=(300, 16)), rng.normal(size=(200, 16))
    distance = served.FeatureDistance.fit(train, val, k=3, quantile=0.9, max_reference=120, seed=1)
    assert distance.reference.shape == (120, 16)
    assert np.allclose(np.linalg.norm(distance.reference, axis=1), 1, atol=1e-5)
    unit_train = train / np.linalg.norm(train, axis=1, keepdims=True)
    gaps = np.abs(distance.reference[:, None, :] - unit_train[None]).max(axis=2).min(axis=1)
    assert gaps.max() < 1e-5  # every reference row is one of the training rows
    queries = rng.normal(size=(7, 16))
    assert distance.distances(queries) == pytest.approx(_brute_force_distance(queries, distance.reference, 3), abs=1e-5)
    assert np.mean(distance.distances(val) > distance.max_distance) == pytest.approx(0.1, abs=0.01)
    # features clustered in one direction: a point in the opposite direction is unfamiliar, one inside is not
    centre = np.ones(16)
    clustered = served.FeatureDistance.fit(centre + 0.3 * rng.normal(size=(300, 16)),
                                           centre + 0.3 * rng.normal(size=(100, 16)), k=3)
    assert clustered.unfamiliar(np.stack([-centre, centre])).tolist() == [True, False]


def test_answers_give_reasons_only_for_unsure():
    point = served.OperatingPoint(fake_threshold=0.7, real_threshold=0.3)
    result = served.answer(point, np.array([0.9, 0.5, 0.1, 0.95]), np.array([0.1, 0.1, 0.1, 0.8]), max_distance=0.5)
    assert result.labels.tolist() == ["fake", "unsure", "real", "unsure"]
    assert result.reasons[0] == result.reasons[2] == ""
    assert "too close to call" in result.reasons[1] and "0.300" in result.reasons[1] and "0.700" in result.reasons[1]
    assert result.reasons[3].startswith("unlike the training images") and "0.800 > 0.500" in result.reasons[3]


@pytest.fixture(scope="module")
def served_run(tmp_path_factory, shared_faces):
    """A runs folder holding a served detector (64 px ImageNet MobileNetV2, untrained head, mirrored scoring)
    beside a notebook-05 model with a better validation AUC, and the images it is asked about.

    The operating point and the unfamiliarity limit are set from the model's own scores and features
    so that each answer occurs; the test's oracle recomputes every answer independently.
    """
    from helpers import evaluate, features

    runs = tmp_path_factory.mktemp("runs")
    inbox = tmp_path_factory.mktemp("inbox")
    for source in ("real/ffhq", "real/utkface", "fake/sd21", "fake/stylegan2"):
        for path in sorted((shared_faces / source).iterdir())[:3]:
            shutil.copy(path, inbox / f"{source.replace('/', '_')}_{path.name}")
    noise = np.random.default_rng(0).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    from PIL import Image

    Image.fromarray(noise).save(inbox / "noise.png")
    model, weights = models.build_mobilenetv2(image_size=64, seed=7)
    model = models.inference_model(model)
    (runs / "lab" / "models").mkdir(parents=True)
    other = runs / "lab" / "models" / "mobilenetv2_finetune.keras"
    model.save(other)
    frame = pd.DataFrame({"label": ["real", "fake"] * 40, "source": ["ffhq", "sd21"] * 40})
    perfect = np.where(frame.label == "fake", 0.9, 0.1)
    evaluate.save_json(evaluate.evaluate_scores("better val AUC", frame, perfect, frame, perfect, n_boot=20,
                                                extra=dict(image_size=64, weights=weights.to_dict())),
                       runs / "lab" / "metrics" / "mobilenetv2_finetune_metrics.json")
    paths = sorted(inbox.iterdir())
    images = np.stack([load_image(p, size=64).image for p in paths]).astype(np.float32)
    scores = (model.predict(images, verbose=0).reshape(-1) + model.predict(images[:, :, ::-1], verbose=0).reshape(-1)) / 2
    ordered = np.sort(scores)
    point = served.OperatingPoint(fake_threshold=float(ordered[-4]), real_threshold=float(ordered[4]))
    pooled = features.pooled_extractor(model).predict(images, verbose=0)
    references = pooled[[p.name != "noise.png" for p in paths]]  # every image but the noise one
    distance = served.FeatureDistance(served._unit(references), k=2)
    own = distance.distances(references)
    distance.max_distance = float(np.max(own)) + 1e-4  # every training-like image familiar
    record = served.ServedRecord(recipe={"name": "demo served", "tta_flip": True}, image_size=64, operating_point=point,
                                 distance_k=2, distance_quantile=1.0, max_distance=distance.max_distance, tta_flip=True,
                                 weights=weights.to_dict(), validation=dict(n=400, auc=0.6, test_auc=0.6, rates=[]),
                                 test_rates=[])
    path = served.save_served(model, runs / "lab" / "models" / "served.keras", record, distance)
    return dict(runs=runs, inbox=inbox, path=path, point=point, references=references, model=model)


def test_the_served_detector_is_the_default_and_lists_first(served_run, monkeypatch, capsys):
    table = predict.find_models(served_run["runs"])
    assert table.key.tolist() == ["served", "mobilenetv2_finetune"] and table.served.tolist() == [True, False]
    assert table.val_auc.iloc[1] > table.val_auc.iloc[0]  # served first although the other validated better
    assert predict.default_model(served_run["runs"]) == served_run["path"]
    loaded = predict.Predictor.load(served_run["path"])
    assert loaded.point == served_run["point"] and loaded.tta_flip and loaded.threshold == served_run["point"].fake_threshold
    for name in ("served.json", "served_reference.npy", "served_card.md"):
        assert (served_run["path"].parent / name).is_file()
    card = (served_run["path"].parent / "served_card.md").read_text()
    assert f"{served_run['point'].fake_threshold:.4f}" in card and "demo served" in card


def test_cli_answers_fake_real_or_unsure_row_by_row(served_run, monkeypatch, tmp_path, capsys):
    from helpers import features

    monkeypatch.setenv(predict.RUNS_ENV, str(served_run["runs"]))
    out = tmp_path / "answers.csv"
    assert cli.main(["predict", str(served_run["inbox"]), "--out", str(out), "--quiet"]) == cli.EXIT_OK
    rows = pd.read_csv(out, keep_default_na=False)
    paths = sorted(served_run["inbox"].iterdir())
    assert rows.path.tolist() == [str(p) for p in paths]
    # oracle: the model scored on each image and its mirror, averaged; the distance by brute force
    model, point = served_run["model"], served_run["point"]
    images = np.stack([load_image(p, size=64).image for p in paths]).astype(np.float32)
    scores = (model.predict(images, verbose=0).reshape(-1) + model.predict(images[:, :, ::-1], verbose=0).reshape(-1)) / 2
    assert rows.score.to_numpy() == pytest.approx(scores, abs=1e-5)
    pooled = features.pooled_extractor(model).predict(images, verbose=0)
    far = _brute_force_distance(pooled, served_run["references"], 2) > served.read_record(served_run["path"]).max_distance
    assert far.tolist() == [p.name == "noise.png" for p in paths]
    expected = np.where(far, "unsure", np.where(scores >= point.fake_threshold, "fake",
                                                np.where(scores < point.real_threshold, "real", "unsure")))
    assert rows.label.tolist() == expected.tolist()
    assert {"fake", "real", "unsure"} <= set(expected)
    assert (rows.unsure_reason != "").tolist() == (expected == "unsure").tolist()
    assert rows.loc[rows.path.str.endswith("noise.png"), "unsure_reason"].iloc[0].startswith("unlike the training")
    summary = capsys.readouterr().err
    assert f"{(expected == 'unsure').sum()} unsure" in summary and f"{(expected == 'fake').sum()} fake" in summary


def test_other_models_still_answer_at_one_threshold(served_run):
    other = predict.Predictor.load(served_run["path"].parent / "mobilenetv2_finetune.keras")
    assert other.point is None and other.distance is None
    scores, answers = other.assess(np.zeros((2, 64, 64, 3), np.float32))
    assert answers.labels.tolist() == np.where(scores >= other.threshold, "fake", "real").tolist()
    assert answers.reasons == ["", ""]
