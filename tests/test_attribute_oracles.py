"""Tables 6 and 9 (accuracy per annotated attribute, notebook 05) against independent oracles: counts and
accuracies worked by hand, scipy's Wilson interval, scikit-learn's AUC and the documented stratified
bootstrap written out with scikit-learn on exactly the group's rows. Scores sit on the threshold, one group
has a single class, one path has no annotation and one annotation has no prediction.

Each test names the plausible bugs it exists to catch; none compares a function with itself.
"""

import numpy as np
import pandas as pd
import pytest
from oracles import bootstrap_auc_interval
from scipy.stats import binomtest
from sklearn.metrics import roc_auc_score

from helpers import evaluate

COLUMNS = ["attribute", "value", "n", "real", "fake", "accuracy", "accuracy_lo", "accuracy_hi",
           "false_positive_rate", "auc", "auc_lo", "auc_hi"]


def _predictions() -> pd.DataFrame:
    """Eleven test images of one model; three scores lie exactly on the threshold 0.5."""
    return pd.DataFrame({
        "path": [f"img{k}.jpg" for k in range(11)],
        "label": ["real", "real", "real", "real", "fake", "fake", "fake", "real", "fake", "fake", "fake"],
        "score": [0.1, 0.5, 0.7, 0.2, 0.5, 0.9, 0.3, 0.4, 0.8, 0.5, 0.15],
    })


def _annotations() -> pd.DataFrame:
    """Glasses for nine of the eleven (img8 has no row: no face; img9's is missing), one annotation of an
    image not predicted, and a gender column with a missing value."""
    return pd.DataFrame({
        "path": [f"img{k}.jpg" for k in (0, 1, 2, 3, 4, 5, 6, 7, 9, 10)] + ["other.jpg"],
        "glasses": ["no", "no", "yes", "no", "yes", "no", "yes", "no", None, "no", "yes"],
        "gender": ["f", "m", "m", "f", "f", "m", None, "f", "m", "m", "f"],
        "age": [20] * 11,
    })



@pytest.mark.filterwarnings("error")  # a group without reals must not average an empty slice
def test_per_attribute_rows_match_hand_counts_wilson_and_sklearn():
    """Bugs caught: scores on the threshold called real (> for >=); the unknown group dropped or merged; an
    annotated image nobody predicted counted; a false-positive rate over every image instead of the group's
    reals; the interval from another formula or another count; the AUC over the wrong rows; an attribute the
    annotations lack given rows; columns renamed or reordered.

    By hand at threshold 0.5 (fake iff score >= 0.5):
    glasses "no":  img0 r .1 ok, img1 r .5 wrong, img3 r .2 ok, img5 f .9 ok, img7 r .4 ok, img10 f .15 wrong
                   -> 4 of 6, FPR 1/4, AUC 5/8 (.9 above the four reals, .15 above .1 only)
    glasses "yes": img2 r .7 wrong, img4 f .5 ok, img6 f .3 wrong -> 1 of 3, FPR 1/1
    glasses "unknown": img8 f .8 ok (no annotation), img9 f .5 ok (annotated None) -> 2 of 2, no reals
    """
    predictions, annotations = _predictions(), _annotations()
    n_boot, seed = 200, 7
    table = evaluate.per_attribute_metrics(predictions, annotations, ["glasses", "tattoo", "gender"], 0.5,
                                           n_boot=n_boot, seed=seed)
    assert table.columns.tolist() == COLUMNS
    assert table.index.equals(pd.RangeIndex(len(table)))
    assert table.attribute.tolist() == ["glasses"] * 3 + ["gender"] * 3  # no rows for the missing "tattoo"
    glasses = table[table.attribute == "glasses"].set_index("value")
    assert glasses.index.tolist() == ["no", "unknown", "yes"]
    expected = {"no": (6, 4, 2, 4, 0.25), "yes": (3, 1, 2, 1, 1.0), "unknown": (2, 0, 2, 2, np.nan)}
    for value, (n, real, fake, correct, fpr) in expected.items():
        row = glasses.loc[value]
        assert (row.n, row.real, row.fake) == (n, real, fake), value
        assert row.accuracy == pytest.approx(correct / n)
        wilson = binomtest(correct, n).proportion_ci(confidence_level=0.95, method="wilson")
        assert (row.accuracy_lo, row.accuracy_hi) == pytest.approx((wilson.low, wilson.high), abs=1e-9), value
        assert row.false_positive_rate == pytest.approx(fpr, nan_ok=True), value
    assert glasses.at["no", "auc"] == pytest.approx(5 / 8)
    for value, paths in (("no", [0, 1, 3, 5, 7, 10]), ("yes", [2, 4, 6])):
        rows = predictions.iloc[paths]
        y, scores = (rows.label == "fake").to_numpy().astype(int), rows.score.to_numpy()
        assert glasses.at[value, "auc"] == pytest.approx(roc_auc_score(y, scores))
        low, high = bootstrap_auc_interval(y, scores, n_boot, seed)
        assert (glasses.at[value, "auc_lo"], glasses.at[value, "auc_hi"]) == pytest.approx((low, high), abs=1e-12)
    assert glasses.loc["unknown", ["auc", "auc_lo", "auc_hi"]].isna().all()  # fakes only: no AUC
    gender = table[table.attribute == "gender"].set_index("value")
    # f: img0 r ok, img3 r ok, img4 f ok, img7 r ok -> 4 of 4; m: img1 r wrong, img2 r wrong, img5 f ok,
    # img9 f ok, img10 f wrong -> 2 of 5; unknown: img6 (None) f wrong, img8 (no annotation) f ok -> 1 of 2
    assert gender.n.to_dict() == {"f": 4, "m": 5, "unknown": 2}
    assert gender.accuracy.to_dict() == pytest.approx({"f": 1.0, "m": 0.4, "unknown": 0.5})
    assert gender.false_positive_rate.to_dict() == pytest.approx({"f": 0.0, "m": 1.0, "unknown": np.nan}, nan_ok=True)
    assert gender.at["f", "auc"] == 1.0 and np.isnan(gender.at["unknown", "auc"])  # unknown: fakes only


def test_per_attribute_threshold_and_seed_are_the_ones_given():
    """Bugs caught: a fixed 0.5 instead of the model's validation threshold; the seed or the resample count
    not passed to the bootstrap, or defaults other than the documented 1,000 resamples and seed 0."""
    predictions, annotations = _predictions(), _annotations()
    at_03 = evaluate.per_attribute_metrics(predictions, annotations, ["glasses"], 0.3, n_boot=200, seed=7)
    glasses = at_03.set_index("value")
    # at 0.3: "no" -> img0 ok, img1 wrong, img3 ok, img5 ok, img7 wrong (0.4 >= 0.3), img10 wrong: 3 of 6,
    # FPR 2/4; "yes" -> img2 wrong, img4 ok, img6 ok (0.3 >= 0.3): 2 of 3
    assert glasses.accuracy.to_dict() == pytest.approx({"no": 0.5, "unknown": 1.0, "yes": 2 / 3})
    assert glasses.at["no", "false_positive_rate"] == pytest.approx(0.5)
    # forty overlapping scores under one attribute value, so that seeds and resample counts move the interval
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 20)
    scores = np.concatenate([rng.beta(2, 4, 20), rng.beta(4, 2, 20)])
    many = pd.DataFrame({"path": [f"p{k}" for k in range(40)], "label": np.where(y == 1, "fake", "real"),
                         "score": scores})
    one_value = pd.DataFrame({"path": many.path, "glasses": "yes"})
    intervals = set()
    for n_boot, seed in ((200, 8), (200, 7), (50, 7)):
        row = evaluate.per_attribute_metrics(many, one_value, ["glasses"], 0.3, n_boot=n_boot, seed=seed).iloc[0]
        expected = bootstrap_auc_interval(y, scores, n_boot, seed)
        assert (row.auc_lo, row.auc_hi) == pytest.approx(expected, abs=1e-12), (n_boot, seed)
        intervals.add(expected)
    assert len(intervals) == 3  # the three settings give three intervals: the check can tell them apart
    documented = bootstrap_auc_interval(y, scores, 1000, 0)
    row = evaluate.per_attribute_metrics(many, one_value, ["glasses"], 0.3).iloc[0]
    assert (row.auc_lo, row.auc_hi) == pytest.approx(documented, abs=1e-12)
    result = [{"key": "m", "model": "M", "threshold": 0.3}]
    table = evaluate.attribute_tables(result, many.assign(model="m"), one_value, ["glasses"])
    assert (table["table6_mobilenetv2_attributes"].auc_lo[0], table["table6_mobilenetv2_attributes"].auc_hi[0]) == \
        pytest.approx(documented, abs=1e-12)
    table = evaluate.attribute_tables(result, many.assign(model="m"), one_value, ["glasses"], n_boot=200, seed=8)
    assert (table["table6_mobilenetv2_attributes"].auc_lo[0], table["table6_mobilenetv2_attributes"].auc_hi[0]) == \
        pytest.approx(bootstrap_auc_interval(y, scores, 200, 8), abs=1e-12)  # its settings reach the bootstrap


def test_attribute_tables_split_the_models_by_family_each_at_its_own_threshold():
    """Bugs caught: one model's threshold or predictions used for another; a ResNet50 model filed under
    table 6; the model column missing, misplaced or carrying the key instead of the title; a table for a
    family with no model; the rows' index not reset."""
    base = _predictions()
    predictions = pd.concat([
        base.assign(model="mobilenetv2_finetune"),
        base.assign(model="resnet50_head", score=1 - base.score),  # another model, other scores
        base.assign(model="mobilenetv2_head", score=base.score / 2),
    ], ignore_index=True)
    results = [{"key": "mobilenetv2_finetune", "model": "MobileNetV2 fine-tuned", "threshold": 0.5},
               {"key": "resnet50_head", "model": "ResNet50 frozen head", "threshold": 0.55},
               {"key": "mobilenetv2_head", "model": "MobileNetV2 frozen head", "threshold": 0.2}]
    tables = evaluate.attribute_tables(results, predictions, _annotations(), ["glasses"], n_boot=50, seed=3)
    assert sorted(tables) == ["table6_mobilenetv2_attributes", "table9_resnet50_attributes"]
    six, nine = tables["table6_mobilenetv2_attributes"], tables["table9_resnet50_attributes"]
    assert six.columns.tolist() == ["model", *COLUMNS] and nine.columns.tolist() == ["model", *COLUMNS]
    assert six.index.equals(pd.RangeIndex(6)) and nine.index.equals(pd.RangeIndex(3))
    assert six.model.tolist() == ["MobileNetV2 fine-tuned"] * 3 + ["MobileNetV2 frozen head"] * 3
    assert nine.model.tolist() == ["ResNet50 frozen head"] * 3
    # hand-worked accuracies of "no" (img0 r, img1 r, img3 r, img5 f, img7 r, img10 f):
    # fine-tuned at 0.5: .1 .5 .2 .9 .4 .15 -> 4 of 6; ResNet50 (1 - score) at 0.55: .9 .5 .8 .1 .6 .85 -> img1
    # and img10 right, 2 of 6; frozen head (score / 2) at 0.2: .05 .25 .1 .45 .2 .075 -> img0, img3, img5, 3 of 6
    def no_row(table, model):
        return table[(table.model == model) & (table.value == "no")].iloc[0]

    assert no_row(six, "MobileNetV2 fine-tuned").accuracy == pytest.approx(4 / 6)
    assert no_row(nine, "ResNet50 frozen head").accuracy == pytest.approx(2 / 6)
    assert no_row(six, "MobileNetV2 frozen head").accuracy == pytest.approx(3 / 6)
    assert no_row(nine, "ResNet50 frozen head").n == 6  # its own eleven predictions, not all thirty-three
    only_mobile = evaluate.attribute_tables(results[:1], predictions, _annotations(), ["glasses"], n_boot=50)
    assert list(only_mobile) == ["table6_mobilenetv2_attributes"]
