"""Issue 14: the served detector — its three answers, its record, and that the CLI and the app serve it."""


import numpy as np
import pandas as pd
import pytest

from helpers import cli, config, predict, served
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

    monkeypatch.setenv(config.RUNS_ENV, str(served_run["runs"]))
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


def test_a_served_export_checks_one_pass_and_carries_the_served_card(served_run, monkeypatch, tmp_path):
    monkeypatch.setenv(config.RUNS_ENV, str(served_run["runs"]))
    out = tmp_path / "export"
    assert cli.main(["export", "--format", "tflite", "--out", str(out), "--n-samples", "2"]) == cli.EXIT_OK
    card = (out / "MODEL_CARD.md").read_text()
    point = served_run["point"]
    assert "## Served answer" in card and f"{point.real_threshold:.4f}" in card and "averaging each image" in card
    assert "# Served detector — model card" in card  # the served card travels with the export
