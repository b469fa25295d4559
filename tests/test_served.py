"""Issue 14: the served detector — its three answers, its record, and that the CLI and the app serve it."""


import numpy as np
import pandas as pd
import pytest

from helpers import cli, config, predict, served
from helpers.data import load_image


def _brute_force_distance(features: np.ndarray, reference: np.ndarray, k: int) -> np.ndarray:
    """Mean cosine distance to the k most similar reference rows: every similarity at once, fully sorted
    (the served code partitions chunk by chunk). The one oracle of the familiarity distance."""
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    ref = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    return 1 - np.sort(unit @ ref.T, axis=1)[:, ::-1][:, :k].mean(axis=1)


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


class _ColourBank:
    """An image bank of flat-colour images scored by a detector with the real layout whose two pooled
    features are brightness and redness (red minus blue) and whose score is sigmoid(6 · redness):
    real "dim" (dark grey), real "pale" (bright, pinkish: scored like the fakes, unlike anything else), fake
    "red" (reddish)."""

    SIZE = 8

    def __init__(self, n: int = 30, seed: int = 0):
        import keras

        from helpers import models

        rng = np.random.default_rng(seed)
        colours = {"dim": (50, 50, 50), "pale": (250, 200, 170), "red": (160, 110, 60)}
        frames, self.images = {}, {}
        for split in ("train", "val", "test"):
            rows = [(label, source) for label, source in (("real", "dim"), ("real", "pale"), ("fake", "red"))
                    for _ in range(n)]
            frames[split] = pd.DataFrame(rows, columns=["label", "source"])
            jitter = rng.integers(-6, 7, size=(len(rows), 3))
            pixels = np.clip(np.array([colours[s] for _, s in rows]) + jitter, 0, 255).astype(np.uint8)
            self.images[split] = np.broadcast_to(pixels[:, None, None, :], (len(rows), self.SIZE, self.SIZE, 3)).copy()
        self.frames = frames
        base = keras.Sequential([keras.Input((self.SIZE, self.SIZE, 3)), keras.layers.Conv2D(2, 1, use_bias=False)],
                                name=models.BACKBONE_NAME)
        base.layers[0].set_weights([np.array([[1, 1], [1, 0], [1, -1]], np.float32).reshape(1, 1, 3, 2) / 255])
        inputs = keras.Input((self.SIZE, self.SIZE, 3))
        head = keras.layers.Dense(1, activation="sigmoid", name="prediction")
        self.model = keras.Model(inputs, head(keras.layers.GlobalAveragePooling2D(name="gap")(base(inputs))))
        head.set_weights([np.array([[0.0], [6.0]], np.float32), np.zeros(1, np.float32)])

    def features(self, split: str) -> np.ndarray:
        """The pooled features, in NumPy: (R + G + B, R - B) / 255."""
        pixel = self.images[split][:, 0, 0].astype(np.float64)
        return np.stack([pixel.sum(1), pixel[:, 0] - pixel[:, 2]], 1) / 255

    def score(self, trained, split: str, variant: str = "clean") -> np.ndarray:
        return 1 / (1 + np.exp(-6 * self.features(split)[:, 1]))

    def images_of(self, split: str, variant: str = "clean") -> np.ndarray:
        return self.images[split]

    def scored_images(self, trained, split: str, variant: str = "clean") -> np.ndarray:
        return self.images[split]


def test_served_answers_for_a_held_out_source_are_fitted_without_it(monkeypatch):
    from types import SimpleNamespace

    from helpers import protocols

    bank = _ColourBank()
    trained = SimpleNamespace(model=bank.model)
    test, sources = bank.frames["test"], ["dim", "red"]
    fitted = served.fit_answers(trained, bank, sources, seed=3, k=3)
    # oracle: the operating point from the validation rows of the training sources only, the distance's
    # reference all their training images (60 < 2,000), its limit the 99% quantile of their validation distances
    val_rows = bank.frames["val"].source.isin(sources).to_numpy()
    point = served.choose_operating_point(bank.frames["val"][val_rows], bank.score(None, "val")[val_rows])
    assert (fitted.point.fake_threshold, fitted.point.real_threshold) == (point.fake_threshold, point.real_threshold)
    reference = bank.features("train")[bank.frames["train"].source.isin(sources).to_numpy()]
    limit = np.quantile(_brute_force_distance(bank.features("val")[val_rows], reference, 3), 0.99)
    assert fitted.distance.max_distance == pytest.approx(limit, abs=1e-5)
    far = _brute_force_distance(bank.features("test"), reference, 3) > limit
    scores = bank.score(None, "test")
    expected = np.where(far, "unsure", np.where(scores >= point.fake_threshold, "fake",
                                                np.where(scores < point.real_threshold, "real", "unsure")))
    assert fitted.answers["test"].labels.tolist() == expected.tolist()
    shares = served.held_out_answers(fitted, test, "pale")
    pale, fake = (test.source == "pale").to_numpy(), (test.label == "fake").to_numpy()
    assert shares["held_out_unfamiliar"] == pytest.approx(far[pale].mean()) and far[pale].mean() > 0.9
    assert shares["fakes_called_fake"] == pytest.approx((expected[fake] == "fake").mean())
    for prefix in ("held_out", "fakes"):
        assert sum(shares[f"{prefix}_{k}"] for k in ("called_fake", "called_real", "unsure")) == pytest.approx(1)
    # control: fitted with the pale photos among the training sources, they are familiar
    assert served.held_out_answers(served.fit_answers(trained, bank, None, seed=3, k=3), test,
                                   "pale")["held_out_unfamiliar"] < 0.1
    # the protocol adds the same shares to each held-out row (the bank "trains" by handing out the detector)
    bank.train = lambda recipe, out_dir, seed=42: SimpleNamespace(model=bank.model, threshold=0.5)
    table = protocols.leave_one_real_source_out(protocols.Recipe(name="colour"), bank, None, n_boot=20,
                                                held_outs=["pale"], served_answers=True)
    assert table.loc[0, "held_out_unfamiliar"] == pytest.approx(shares["held_out_unfamiliar"])
    # the protocol fits the answers with its own seed and false-positive limit, without the held-out source
    calls, fit = [], served.fit_answers

    def recorded(trained, bank, sources, **settings):
        calls.append((sorted(sources), settings))
        return fit(trained, bank, sources, **settings)

    monkeypatch.setattr(served, "fit_answers", recorded)
    table = protocols.leave_one_real_source_out(protocols.Recipe(name="colour"), bank, None, n_boot=20, seed=5,
                                                held_outs=["pale"], served_answers=True, max_real_fpr=0.4)
    assert calls == [(sorted(set(bank.frames["train"].source) - {"pale"}), {"seed": 5, "max_real_fpr": 0.4})]
    assert table.loc[0, "held_out_unfamiliar"] == pytest.approx(shares["held_out_unfamiliar"])
    assert "held_out_unsure" not in protocols.leave_one_real_source_out(
        protocols.Recipe(name="colour"), bank, None, n_boot=20, held_outs=["pale"]).columns


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


def test_a_served_detector_that_reencodes_scores_every_picture_as_notebook_08_did(served_run, tmp_path):
    """A served recipe with ``score_reencode`` (issue 14): the CLI's files, the app's whole image and each
    face crop are re-encoded at their own resolution before the resize — the images an ImageBank scores."""
    import json
    import shutil

    from helpers import perturb
    from helpers.data import resize_square

    folder = tmp_path / "models"
    shutil.copytree(served_run["path"].parent, folder)
    record = json.loads((folder / "served.json").read_text())
    record["recipe"]["score_reencode"] = "jpeg:30"
    (folder / "served.json").write_text(json.dumps(record))
    predictor = predict.Predictor.load(folder / "served.keras")
    plain = predict.Predictor.load(served_run["path"])
    assert predictor.reencode == "jpeg:30" and plain.reencode == ""
    paths = [p for p in sorted(served_run["inbox"].iterdir()) if p.suffix != ".png"]
    natives = [load_image(p).image for p in paths]
    expected = np.stack([resize_square(perturb.jpeg(image, 30), 64) for image in natives])
    np.testing.assert_array_equal(np.stack([predictor.model_input(image) for image in natives]), expected)
    np.testing.assert_array_equal(np.stack([plain.model_input(image) for image in natives]),
                                  np.stack([resize_square(image, 64) for image in natives]))
    rows = predictor.predict_files(paths, progress=False)
    assert rows.score.to_numpy() == pytest.approx(predictor.score_arrays(expected), abs=1e-5)
    assert not np.allclose(rows.score, plain.predict_files(paths, progress=False).score, atol=1e-4)
    card = served.model_card(served.read_record(folder / "served.keras"))
    assert "re-encoded (jpeg:30) at its own resolution" in card
    assert "re-encoded" not in served.model_card(served.read_record(served_run["path"]))


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


def _brute_force_band(frame, scores, accuracy):
    """Every pair of thresholds over the scores, 0 and just above 1, counted one by one: the best
    (worst-source unsure share, summed share) of the pairs whose definite answers are right often enough."""
    import itertools

    candidates = sorted(set(scores.tolist()) | {0.0, float(np.nextafter(1.0, 2.0))})
    best = None
    for low, high in itertools.product(candidates, repeat=2):
        if low > high:
            continue
        worst, total, allowed = 0.0, 0.0, True
        for (label, _), members in frame.assign(score=scores).groupby(["label", "source"]):
            x = members.score.to_numpy()
            real, fake = int((x < low).sum()), int((x >= high).sum())
            right, wrong = (real, fake) if label == "real" else (fake, real)
            allowed &= wrong * accuracy <= right * (1 - accuracy) + 1e-9
            worst, total = max(worst, 1 - (real + fake) / len(x)), total + 1 - (real + fake) / len(x)
        if allowed and (best is None or (worst, total) < best):
            best = (worst, total)
    return best


def test_the_coverage_rule_is_the_best_band_that_keeps_every_source_right():
    """Against a brute-force search on small data: definite answers at least the asked accuracy on every
    source, and no allowed band leaves less of the worst-served source unsure."""
    rng = np.random.default_rng(11)
    for case in range(24):
        n = int(rng.integers(4, 14))
        frame = pd.DataFrame({"label": ["real"] * (n + 6) + ["fake"] * n,
                              "source": ["a"] * n + ["b"] * 6 + ["g"] * n})
        scores = np.round(np.concatenate([rng.beta(2, 4, n), rng.beta(3, 3, 6), rng.beta(4, 2, n)]), 2)
        accuracy = (0.95, 0.8, 0.6)[case % 3]
        point = served.choose_operating_point(frame, scores, rule="coverage", min_definite_accuracy=accuracy)
        verdicts = point.verdicts(scores)
        worst, total = 0.0, 0.0
        for (label, _), rows in frame.groupby(["label", "source"]):
            given = verdicts[rows.index]
            definite = given[given != "unsure"]
            assert (definite == label).sum() >= accuracy * len(definite) - 1e-9, case
            worst, total = max(worst, (given == "unsure").mean()), total + (given == "unsure").mean()
        best = _brute_force_band(frame, scores, accuracy)
        assert worst == pytest.approx(best[0]) and total == pytest.approx(best[1]), case


def test_the_coverage_rule_on_a_hand_worked_example():
    """Reals 0.1 0.2 0.3 0.6, fakes 0.4 0.7 0.8 0.9. At 95% (four images a source) a definite answer may
    never be wrong, so the band must hold 0.4 and 0.6: real below 0.4, fake from 0.7, one real and one
    fake unsure (25% each). At 75% one wrong answer in four is allowed: a single threshold at 0.4 (the
    lowest of the equally good ones) calls the real 0.6 fake, 3 of 4 reals right, nothing unsure."""
    frame = pd.DataFrame({"label": ["real"] * 4 + ["fake"] * 4, "source": ["r"] * 4 + ["f"] * 4})
    scores = np.array([0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9])
    strict = served.choose_operating_point(frame, scores, rule="coverage", min_definite_accuracy=0.95)
    assert strict.verdicts(scores).tolist() == ["real", "real", "real", "unsure", "unsure", "fake", "fake", "fake"]
    assert (strict.real_threshold, strict.fake_threshold) == (0.4, 0.7)
    loose = served.choose_operating_point(frame, scores, rule="coverage", min_definite_accuracy=0.75)
    assert (loose.real_threshold, loose.fake_threshold) == (0.4, 0.4) and (loose.verdicts(scores) != "unsure").all()
    rates = served.choose_operating_point(frame, scores, rule="rates", max_real_fpr=0.0, max_fake_miss=0.0)
    assert (rates.real_threshold, rates.fake_threshold) == (0.4, np.nextafter(0.6, 1))  # no real above, no fake below
