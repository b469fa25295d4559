"""helpers.aligned: the stay-positive probe against scikit-learn's logistic regression (its oracle where the
unconstrained optimum is already non-negative), crops on non-square pictures, the difference spectrum's peak."""

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from helpers import aligned


def test_stay_positive_equals_logistic_regression_when_no_bound_is_active():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    x = np.abs(rng.normal(size=(400, 3))) + y[:, None] * np.array([0.8, 0.5, 0.3])  # every feature says "fake"
    ours = aligned.StayPositive(C=0.5).fit(x, y)
    reference = LogisticRegression(C=0.5, max_iter=5000, tol=1e-10).fit(x, y)
    assert (reference.coef_ > 0).all()
    assert np.allclose(ours.coef_, reference.coef_[0], atol=1e-3)
    assert ours.intercept_ == pytest.approx(reference.intercept_[0], abs=1e-3)


def test_stay_positive_keeps_every_weight_non_negative():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    x = np.abs(rng.normal(size=(300, 2)))
    x[:, 1] += 2.0 * (1 - y)  # evidence of "real": an unconstrained probe gives it a negative weight
    assert LogisticRegression(C=1.0).fit(x, y).coef_[0, 1] < 0
    probe = aligned.StayPositive(C=1.0).fit(x, y)
    assert (probe.coef_ >= 0).all() and probe.coef_[1] == pytest.approx(0, abs=1e-6)
    weights = np.where(y == 1, 3.0, 1.0)  # sample weights count as repeated rows
    repeated = np.repeat(np.arange(len(y)), weights.astype(int))
    assert np.allclose(aligned.StayPositive(1.0).fit(x, y, weights).coef_,
                       aligned.StayPositive(1.0).fit(x[repeated], y[repeated]).coef_, atol=1e-4)


def test_centre_crops_of_portrait_and_landscape_pictures():
    picture = np.arange(300 * 200).reshape(300, 200)[..., None].repeat(3, 2)  # 300 high, 200 wide
    crop = aligned.centre_crop(picture, 128)
    assert crop.shape == (128, 128, 3) and crop[0, 0, 0] == picture[86, 36, 0]  # (300-128)//2, (200-128)//2
    wide = picture.transpose(1, 0, 2)  # 200 high, 300 wide
    assert aligned.centre_crop(wide, 128)[0, 0, 0] == wide[36, 86, 0]
    assert aligned.centre_crop(picture, 201) is None and aligned.centre_crop(picture, 200).shape[:2] == (200, 200)


def test_the_mean_difference_spectrum_peaks_at_the_period_of_the_trace():
    rng = np.random.default_rng(2)
    originals = rng.integers(60, 200, (6, 64, 64, 3)).astype(np.uint8)
    pattern = (np.indices((64, 64)).sum(0) % 8 == 0) * 6  # a trace of period 8 along both axes
    rebuilt = np.clip(originals + pattern[..., None], 0, 255).astype(np.uint8)
    spectrum = aligned.mean_difference_spectrum(originals, rebuilt)
    centre = 32
    spectrum[centre, centre] = 0  # the difference's mean
    peak = np.unravel_index(np.argmax(spectrum), spectrum.shape)
    assert {abs(peak[0] - centre), abs(peak[1] - centre)} <= {0, 8, 16, 24, 32}  # multiples of 64/8
    assert max(abs(peak[0] - centre), abs(peak[1] - centre)) > 0


def test_per_source_draws_at_most_n_of_each_source_reproducibly():
    frame = pd.DataFrame({"path": [f"p{i}" for i in range(30)], "source": ["a"] * 20 + ["b"] * 10})
    drawn = aligned.per_source(frame, 5, seed=3)
    assert drawn["source"].value_counts().to_dict() == {"a": 5, "b": 5}
    assert drawn.equals(aligned.per_source(frame, 5, seed=3)) and len(aligned.per_source(frame, 0)) == 30
    assert aligned.per_source(frame, 15)["source"].value_counts().to_dict() == {"a": 15, "b": 10}


def test_the_probe_plan_names_what_each_probe_sees():
    plan = aligned.probe_plan()
    assert plan["aligned only"] == ((), True)
    assert plan["held out sd15 + aligned"] == (("sd21", "stylegan1", "stylegan2"), True)
    assert set(plan) == {"aligned only", "every source", "every source + aligned", "held out sd15",
                         "held out sd15 + aligned", "held out sd21", "held out sd21 + aligned"}
