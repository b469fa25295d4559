"""The served detector's per-source table (``served.answer_rates``) on a hand-worked batch: every
column, with scipy's Wilson intervals as the oracle for the CIs."""

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
