"""The served detector's per-source table (``served.answer_rates``) on a hand-worked batch: every
column, with scipy's Wilson intervals as the oracle for the CIs."""

import json
import re

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest

from helpers import served


def _wilson(k: int, n: int) -> tuple[float, float]:
    interval = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    return interval.low, interval.high


def test_answer_rates_by_hand():
    # fake at >= 0.7, real below 0.3; a row 9.0 away from the training images is unsure whatever its score
    point = served.OperatingPoint(fake_threshold=0.7, real_threshold=0.3)
    frame = pd.DataFrame({"label": ["real"] * 5 + ["fake"] * 4 + ["fake"] * 2,
                          "source": ["ra"] * 5 + ["fa"] * 4 + ["fb"] * 2},
                         index=[10, 11, 12, 13, 14, 20, 21, 22, 23, 30, 31])  # not 0..n-1: rows by position
    scores = np.array([0.1, 0.2, 0.7, 0.5, 0.29,   0.9, 0.7, 0.1, 0.95,   0.5, 0.6])
    distances = np.array([1.0, 9.0, 1.0, 1.0, 1.0,  1.0, 1.0, 1.0, 9.0,   1.0, 1.0])
    answers = served.answer(point, scores, distances, max_distance=5.0)
    # ra: real, unsure(far), fake, unsure, real; fa: fake, fake, real, unsure(far); fb: unsure, unsure
    assert answers.labels.tolist() == ["real", "unsure", "fake", "unsure", "real",
                                       "fake", "fake", "real", "unsure", "unsure", "unsure"]
    table = served.answer_rates(frame, answers, scores, point)
    assert list(table.columns) == ["label", "source", "n", "rate_name", "rate", "rate_lo", "rate_hi", "called_fake",
                                   "called_real", "unsure", "unsure_unfamiliar", "rate_among_definite",
                                   "definite_accuracy", "definite_accuracy_lo", "definite_accuracy_hi"]
    rows = table.set_index("source")
    ra, fa, fb = rows.loc["ra"], rows.loc["fa"], rows.loc["fb"]
    assert (ra.label, ra.n, ra.rate_name) == ("real", 5, "false-positive rate")
    assert (fa.label, fa.n, fa.rate_name) == ("fake", 4, "detection rate")
    # the binary rate counts scores at the fake threshold, far or not: ra 0.7 -> 1 of 5; fa 0.9, 0.7, 0.95 -> 3 of 4
    assert ra.rate == pytest.approx(1 / 5) and (ra.rate_lo, ra.rate_hi) == pytest.approx(_wilson(1, 5))
    assert fa.rate == pytest.approx(3 / 4) and (fa.rate_lo, fa.rate_hi) == pytest.approx(_wilson(3, 4))
    assert fb.rate == 0.0 and (fb.rate_lo, fb.rate_hi) == pytest.approx(_wilson(0, 2))
    assert (ra.called_fake, ra.called_real, ra.unsure, ra.unsure_unfamiliar) == pytest.approx((0.2, 0.4, 0.4, 0.2))
    assert (fa.called_fake, fa.called_real, fa.unsure, fa.unsure_unfamiliar) == pytest.approx((0.5, 0.25, 0.25, 0.25))
    assert (fb.called_fake, fb.called_real, fb.unsure, fb.unsure_unfamiliar) == pytest.approx((0.0, 0.0, 1.0, 0.0))
    # among definite answers: ra 1 fake of 3 (2 right); fa 2 fake of 3 (2 right); fb none definite
    assert ra.rate_among_definite == pytest.approx(1 / 3) and fa.rate_among_definite == pytest.approx(2 / 3)
    assert ra.definite_accuracy == pytest.approx(2 / 3) and fa.definite_accuracy == pytest.approx(2 / 3)
    assert (ra.definite_accuracy_lo, ra.definite_accuracy_hi) == pytest.approx(_wilson(2, 3))
    assert (fa.definite_accuracy_lo, fa.definite_accuracy_hi) == pytest.approx(_wilson(2, 3))
    assert np.isnan(fb.rate_among_definite) and np.isnan(fb.definite_accuracy)
    assert np.isnan(fb.definite_accuracy_lo) and np.isnan(fb.definite_accuracy_hi)
    # a source every definite answer gets right: accuracy 1 and scipy's upper bound 1
    only = served.answer_rates(frame.iloc[5:7], served.answer(point, scores[5:7]), scores[5:7], point).iloc[0]
    assert only.definite_accuracy == 1.0 and only.definite_accuracy_hi == pytest.approx(1.0)
    assert only.definite_accuracy_lo == pytest.approx(_wilson(2, 2)[0])


def _verdicts(scores, far, point):
    """Fake at or above the fake threshold, real below the real one, unsure between or when far: by hand."""
    return np.where(far, "unsure", np.where(scores >= point.fake_threshold, "fake",
                                            np.where(scores < point.real_threshold, "real", "unsure")))


def _shares_by_hand(frame: pd.DataFrame, verdicts: np.ndarray) -> pd.DataFrame:
    rows = {}
    for source in sorted(set(frame.source)):
        own = verdicts[(frame.source == source).to_numpy()]
        label = frame.label[frame.source == source].iloc[0]
        definite = own[own != "unsure"]
        rows[source] = dict(called_fake=np.mean(own == "fake"), called_real=np.mean(own == "real"),
                            unsure=np.mean(own == "unsure"),
                            definite_accuracy=np.mean(definite == label) if len(definite) else np.nan)
    return pd.DataFrame.from_dict(rows, orient="index")


def test_serve_trained_records_and_saves_what_its_parts_compute(tmp_path):
    """``serve_trained`` on the flat-colour bank: the operating point, the distance, the AUCs, the per-source
    table, the answer rules compared, and the files beside the model, each against a computation by hand."""
    from types import SimpleNamespace

    from sklearn.metrics import roc_auc_score
    from test_served import _brute_force_distance, _ColourBank

    from helpers import protocols

    class OverlapBank(_ColourBank):
        """Scores with noise, so pale photos and fakes overlap and the rules leave an unsure band."""

        def score(self, trained, split, variant="clean"):
            noise = np.random.default_rng(len(split)).normal(0, 0.03, len(self.frames[split]))
            return np.clip(super().score(trained, split) + noise, 0, 1)

    bank = OverlapBank()
    bank.image_size = bank.SIZE
    recipe = protocols.Recipe(name="colour", tta_flip=True)
    trained = SimpleNamespace(model=bank.model, recipe=recipe, seconds=12.34,
                              notes={"weights": "imagenet", "weights_warning": "none here"})
    extra = pd.DataFrame({"held_out": ["x"], "auc": [0.5]})
    record, rates = served.serve_trained(trained, bank, tmp_path, seed=3, protocol_tables={"Extra": extra}, k=3,
                                         quantile=0.9, max_real_fpr=0.1, max_fake_miss=0.2)
    frames = bank.frames
    scores = {s: bank.score(None, s) for s in ("val", "test")}
    truth = {s: (frames[s].label == "fake").to_numpy() for s in ("val", "test")}
    point = served.choose_operating_point(frames["val"], scores["val"], 0.1, 0.2)
    assert record.operating_point == point and (point.max_real_fpr, point.max_fake_miss) == (0.1, 0.2)
    assert point.real_threshold < point.fake_threshold  # a band: "unsure" for a score is possible
    assert record.test_auc == pytest.approx(roc_auc_score(truth["test"], scores["test"]))
    assert record.validation["auc"] == pytest.approx(roc_auc_score(truth["val"], scores["val"]))
    assert record.validation["n"] == len(frames["val"]) == 90
    # the distance: every training image is a reference (90 < 2,000), the limit the 90% quantile on validation
    reference = bank.features("train")
    limit = np.quantile(_brute_force_distance(bank.features("val"), reference, 3), 0.9)
    assert record.max_distance == pytest.approx(limit, abs=1e-5)
    assert (record.distance_k, record.distance_quantile, record.image_size) == (3, 0.9, bank.SIZE)
    assert record.tta_flip is True and record.recipe == recipe.to_dict() and record.train_seconds == 12.3
    assert record.weights == {"source": "imagenet", "warning": "none here"}
    far = {s: _brute_force_distance(bank.features(s), reference, 3) > limit for s in ("val", "test")}
    verdicts = _verdicts(scores["test"], far["test"], point)
    assert {"fake", "real", "unsure"} <= set(verdicts[~far["test"]]) and far["test"].any()
    # the per-source table on test (returned and recorded), against verdicts made by hand
    expected = _shares_by_hand(frames["test"], verdicts)
    for table in (rates, pd.DataFrame(record.test_rates)):
        got = table.set_index("source").loc[expected.index]
        for column in expected.columns:
            assert got[column].to_numpy() == pytest.approx(expected[column].to_numpy(), nan_ok=True), column
        fakes = scores["test"][(frames["test"].source == "red").to_numpy()]
        assert got.loc["red", "rate"] == pytest.approx(np.mean(fakes >= point.fake_threshold))
    val_expected = _shares_by_hand(frames["val"], _verdicts(scores["val"], far["val"], point))
    val_got = pd.DataFrame(record.validation["rates"]).set_index("source").loc[val_expected.index]
    assert val_got.unsure.to_numpy() == pytest.approx(val_expected.unsure.to_numpy())
    # both answer rules on the same scores and distances, each at its own validation thresholds
    compared = pd.DataFrame(record.protocols["Answer rules compared"])
    assert sorted(set(zip(compared.rule, compared.split))) == [("coverage", "test"), ("coverage", "val"),
                                                                ("rates", "test"), ("rates", "val")]
    for rule in ("rates", "coverage"):
        own = served.choose_operating_point(frames["val"], scores["val"], 0.1, 0.2, rule, 0.95)
        for split in ("val", "test"):
            rows = compared[(compared.rule == rule) & (compared.split == split)].set_index("source")
            assert (rows.fake_threshold == own.fake_threshold).all() and (rows.real_threshold == own.real_threshold).all()
            by_hand = _shares_by_hand(frames[split], _verdicts(scores[split], far[split], own))
            for column in by_hand.columns:
                assert rows.loc[by_hand.index, column].to_numpy() == pytest.approx(by_hand[column].to_numpy(),
                                                                                   nan_ok=True), (rule, split, column)
            assert (rows.n == 30).all()
    assert record.protocols["Extra"] == extra.to_dict("records")
    assert re.fullmatch(r"20\d\d-[01]\d-[0-3]\d [0-2]\d:[0-5]\d", record.created), record.created
    # called alone, the comparison uses the accuracy it is given, in a table of its own rows
    fitted = served.fit_answers(trained, bank, None, seed=3, k=3, quantile=0.9, max_real_fpr=0.1, max_fake_miss=0.2)
    alone = served.compare_rules(fitted, bank, 0.1, 0.2, min_definite_accuracy=0.8)
    own = served.choose_operating_point(frames["val"], scores["val"], 0.1, 0.2, "coverage", 0.8)
    assert (alone[alone.rule == "coverage"].fake_threshold == own.fake_threshold).all()
    assert (alone[alone.rule == "coverage"].real_threshold == own.real_threshold).all()
    assert alone.index.tolist() == list(range(len(alone))) == list(range(12))
    # the files beside the model: the record reads back, the reference is the unit training features, the card
    path = tmp_path / "served.keras"
    assert path.is_file() and served.read_record(path).to_json() == record.to_json()
    saved = np.load(served.reference_path(path))
    assert saved == pytest.approx(reference / np.linalg.norm(reference, axis=1, keepdims=True), abs=1e-6)
    loaded = served.load_distance(path, record)
    assert (loaded.max_distance, loaded.k, loaded.quantile) == (record.max_distance, record.distance_k,
                                                               record.distance_quantile)
    assert np.array_equal(loaded.reference, saved)
    assert served.record_path(path) == tmp_path / "served.json" and (tmp_path / "served.json").is_file()
    assert (tmp_path / "served_card.md").read_text() == served.model_card(record)


def test_the_operating_point_uses_and_records_the_rates_it_is_given():
    """A hand-worked validation set: the real source's scores 0.1, 0.2, 0.3, 0.9 and the fakes' 0.05, 0.6, 0.7, 0.8.
    At most 25% false positives: fake from above 0.3 (0.9 may stay fake) and 0.8 called fake; at most 0%: only
    above 0.9. At most 25% of fakes missed: real below a threshold above 0.05 that lets 0.3 through as real."""
    frame = pd.DataFrame({"label": ["real"] * 4 + ["fake"] * 4, "source": ["r"] * 4 + ["f"] * 4})
    scores = np.array([0.1, 0.2, 0.3, 0.9, 0.05, 0.6, 0.7, 0.8])
    loose = served.choose_operating_point(frame, scores, max_real_fpr=0.25, max_fake_miss=0.25)
    assert 0.3 < loose.fake_threshold <= 0.8 and loose.verdicts([0.3, 0.8]).tolist()[1] == "fake"
    assert loose.verdicts([0.3]).tolist() != ["fake"] and 0.05 < loose.real_threshold <= loose.fake_threshold
    assert loose.verdicts([0.05, 0.3]).tolist() == ["real", "real"]
    strict = served.choose_operating_point(frame, scores, max_real_fpr=0.0, max_fake_miss=0.0)
    assert strict.fake_threshold > 0.9 and strict.real_threshold <= 0.05
    assert strict.verdicts([0.8, 0.3, 0.01]).tolist() == ["unsure", "unsure", "real"]
    point = served.choose_operating_point(frame, scores, 0.25, 0.125, "rates", 0.8)
    assert (point.max_real_fpr, point.max_fake_miss, point.rule, point.min_definite_accuracy) == (0.25, 0.125, "rates", 0.8)
    assert served.OperatingPoint(**point.to_dict()) == point
    with pytest.raises(ValueError, match=r"rule must be one of \('rates', 'coverage'\), not 'best'"):
        served.choose_operating_point(frame, scores, rule="best")


def test_reference_rows_and_the_distance_follow_their_seed_and_limits():
    rng = np.random.default_rng(1)
    expected = np.sort(np.random.default_rng(3).permutation(100)[:10])
    assert served.reference_rows(100, 10, seed=3).tolist() == expected.tolist()
    default = served.reference_rows(2500)  # at most 2,000, seed 0
    assert default.tolist() == np.sort(np.random.default_rng(0).permutation(2500)[:2000]).tolist()
    train, val = rng.normal(size=(2500, 8)), rng.normal(size=(50, 8))
    unit = train / np.linalg.norm(train, axis=1, keepdims=True)
    fitted = served.FeatureDistance.fit(train, val, k=2, quantile=0.9)
    assert fitted.reference == pytest.approx(unit[default], abs=1e-6) and fitted.quantile == 0.9 and fitted.k == 2
    seeded = served.FeatureDistance.fit(train, val, k=2, max_reference=30, seed=5)
    assert seeded.reference == pytest.approx(unit[served.reference_rows(2500, 30, 5)], abs=1e-6)


def test_distances_are_the_k_nearest_among_many_and_the_limit_itself_is_familiar():
    from test_served import _brute_force_distance

    rng = np.random.default_rng(7)
    reference = rng.normal(size=(1500, 6))
    reference /= np.linalg.norm(reference, axis=1, keepdims=True)
    queries = rng.normal(size=(40, 6))
    for k in (1, 2, 5, 9):
        distance = served.FeatureDistance(reference.astype(np.float32), k=k)
        got = distance.distances(queries, chunk=16)  # three chunks, the last one short
        assert got == pytest.approx(_brute_force_distance(queries, reference, k), abs=1e-5), k
    distance = served.FeatureDistance(reference.astype(np.float32), k=5)
    distance.max_distance = float(distance.distances(queries[:1])[0])
    assert distance.unfamiliar(queries[:1]).tolist() == [False]  # unfamiliar only beyond the limit
    empty = distance.distances(np.zeros((0, 6)))
    assert empty.shape == (0,) and empty.dtype == np.float32


def test_serve_trained_with_its_defaults_on_more_than_2000_training_images(tmp_path):
    """Every default of ``serve_trained``, ``fit_answers`` and ``compare_rules`` against a computation by hand,
    on a bank of 2,100 training images (so the 2,000 references are a seeded draw) whose scores and images
    exist only for the detector it was given (any other object passed on is refused)."""
    from types import SimpleNamespace

    from test_served import _brute_force_distance, _ColourBank

    from helpers import protocols

    trained = SimpleNamespace(recipe=protocols.Recipe(name="colour"), seconds=1.0, notes={})

    class OwnBank(_ColourBank):
        def score(self, given, split, variant="clean"):
            assert given is trained, "scored for another detector"
            noise = np.random.default_rng(len(split)).normal(0, 0.05, len(self.frames[split]))
            return np.clip(super().score(given, split) + noise, 0, 1)

        def scored_images(self, given, split, variant="clean"):
            assert given is trained, "images for another detector"
            return super().scored_images(given, split)

    bank = OwnBank(n=700, seed=1)
    bank.image_size = bank.SIZE
    trained.model = bank.model
    models_dir = tmp_path / "run" / "models"  # folders made as needed
    record, _ = served.serve_trained(trained, bank, models_dir)
    frames = bank.frames
    scores = {s: bank.score(trained, s) for s in ("val", "test")}
    point = served.choose_operating_point(frames["val"], scores["val"], 0.05, 0.05)
    assert record.operating_point == point and (point.max_real_fpr, point.max_fake_miss) == (0.05, 0.05)
    assert (record.distance_k, record.distance_quantile) == (5, 0.99)
    kept = np.sort(np.random.default_rng(42).permutation(2100)[:2000])  # seed 42, at most 2,000
    reference = bank.features("train")[kept]
    saved = np.load(served.reference_path(models_dir / "served.keras"))
    assert saved == pytest.approx(reference / np.linalg.norm(reference, axis=1, keepdims=True), abs=1e-6)
    assert served.read_record(models_dir / "served.keras").to_json() == record.to_json()
    alone = served.FeatureDistance.fit(reference, bank.features("val"))
    assert (alone.k, alone.quantile) == (5, 0.99)
    limit = np.quantile(_brute_force_distance(bank.features("val"), reference, 5), 0.99)
    assert record.max_distance == pytest.approx(limit, abs=1e-6)
    # the comparison of rules at their defaults: 5% / 5%, definite answers 95% right
    compared = pd.DataFrame(record.protocols["Answer rules compared"])
    coverage = served.choose_operating_point(frames["val"], scores["val"], 0.05, 0.05, "coverage", 0.95)
    rows = compared[compared.rule == "coverage"]
    assert (rows.fake_threshold == coverage.fake_threshold).all() and (rows.real_threshold == coverage.real_threshold).all()
    fitted = served.fit_answers(trained, bank, rule="coverage")
    assert fitted.point == coverage and fitted.distance.k == 5 and fitted.distance.quantile == 0.99
    assert fitted.distance.reference == pytest.approx(saved, abs=1e-6)  # its own default seed: 42 too
    again = served.compare_rules(fitted, bank)
    pd.testing.assert_frame_equal(again, served.compare_rules(fitted, bank, 0.05, 0.05, 0.95))
    assert (again[again.rule == "rates"].fake_threshold == point.fake_threshold).all()


def test_answers_compare_float32_outputs_at_full_precision_and_the_limits_themselves():
    """Boundaries of the served answer. A detector's scores and feature distances are float32; its thresholds
    and distance limit are Python floats read from JSON. NumPy 2 compares a float32 array with a Python float
    in float32, where 0.7 and float32(0.7) = 0.69999998... are equal: the answer must compare in float64, so
    a score just below the fake threshold is not called fake and a distance just above the limit is
    unfamiliar. A distance equal to the limit is familiar."""
    point = served.OperatingPoint(fake_threshold=0.7, real_threshold=0.3)
    below = np.array([0.7, 0.9], dtype=np.float32)  # 0.69999998..., then a clear fake
    assert float(below[0]) < 0.7 and (below >= 0.7).tolist() == [True, True]  # the float32 trap itself
    assert point.verdicts(below).tolist() == ["unsure", "fake"]
    assert served.answer(point, below).labels.tolist() == ["unsure", "fake"]
    limit = 0.6999999  # float32(limit) is 0.69999992847..., the distance below
    above = np.array([0.6999999284744263, 0.5], dtype=np.float32)
    assert float(above[0]) > limit and not above[0] > limit  # in float32 the distance is not above the limit
    result = served.answer(point, np.array([0.9, 0.9]), above, max_distance=limit)
    assert result.labels.tolist() == ["unsure", "fake"] and result.reasons[0].startswith("unlike the training")
    at_limit = served.answer(point, np.array([0.9, 0.1, 0.5]), np.array([0.5, 0.5, 0.5]), max_distance=0.5)
    assert at_limit.labels.tolist() == ["fake", "real", "unsure"] and at_limit.reasons[:2] == ["", ""]
    assert at_limit.reasons[2] == "score 0.500 between 0.300 and 0.700: too close to call"


def test_a_record_that_is_not_a_served_one_reads_as_none(tmp_path):
    """``read_record`` answers ``None`` — not an error — for a model without a record, a record of another
    kind, and a record with no kind at all (a plain JSON file beside a model)."""
    model = tmp_path / "detector.keras"
    assert served.read_record(model) is None
    served.record_path(model).write_text(json.dumps({"kind": "something else"}))
    assert served.read_record(model) is None
    served.record_path(model).write_text(json.dumps({"threshold": 0.5}))
    assert served.read_record(model) is None
