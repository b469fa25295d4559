"""Rates a table shows, and their intervals, at the threshold the table's point estimate uses.

A per-source accuracy is read at the threshold chosen on validation; its interval must be computed at that
same threshold (not at a default 0.5), so it contains its own point estimate and matches an independent
bootstrap there. Scores are built so that the validation threshold lies far from 0.5 and the margins are
unequal (sources of different sizes)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix

from helpers import evaluate, stats


def _frame_and_scores(seed: int, shift: float) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    sizes = {("real", "a"): 70, ("real", "b"): 25, ("fake", "c"): 40, ("fake", "d"): 12}
    rows, scores = [], []
    for (label, source), n in sizes.items():
        centre = 0.80 if label == "fake" else 0.70  # every score above 0.5: the Youden threshold is near 0.75
        rows += [dict(path=f"{label}/{source}/{k}.jpg", label=label, source=source) for k in range(n)]
        scores.append(np.clip(rng.normal(centre + shift, 0.04, n), 0, 1))
    return pd.DataFrame(rows), np.concatenate(scores)


def _plain_bootstrap(hits: np.ndarray, n_boot: int, seed: int) -> tuple[float, float]:
    """A percentile bootstrap of a share, written out with NumPy."""
    rng = np.random.default_rng(seed)
    means = rng.choice(hits, (n_boot, len(hits))).mean(axis=1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def test_per_source_intervals_are_at_the_validation_threshold():
    val, val_scores = _frame_and_scores(0, 0.0)
    test, test_scores = _frame_and_scores(1, 0.0)
    result = evaluate.evaluate_scores("m", val, val_scores, test, test_scores, n_boot=400, seed=3)
    threshold = result["threshold"]
    assert 0.7 < threshold < 0.8  # far from the default 0.5, where every picture would be called fake
    y = evaluate.labels_of(test)
    for row in result["per_source"]:
        own = ((test["label"] == row["label"]) & (test["source"] == row["source"])).to_numpy()
        hits = (test_scores[own] >= threshold).astype(int) == y[own]
        assert row["accuracy"] == pytest.approx(accuracy_score(y[own], (test_scores[own] >= threshold).astype(int)))
        assert row["accuracy_lo"] <= row["accuracy"] <= row["accuracy_hi"], row
        low, high = _plain_bootstrap(hits.astype(float), 4000, 0)
        assert row["accuracy_lo"] == pytest.approx(low, abs=0.06) and row["accuracy_hi"] == pytest.approx(high, abs=0.06)
        called = (test_scores[own] >= threshold).mean()
        assert row["rate"] == pytest.approx(called)  # detection rate of a fake source, false positives of a real one
    overall = result["test"]
    assert overall["accuracy_ci"][0] <= overall["accuracy"] <= overall["accuracy_ci"][1]
    # the same rows at 0.5 are another table: every real picture is then a false positive
    at_half = evaluate.per_source_metrics(test, test_scores, 0.5, n_boot=50, seed=3)
    assert (at_half[at_half.label == "real"]["accuracy_hi"] < 0.2).all()


def test_binary_rates_from_the_confusion_matrix_with_unequal_margins():
    """Precision, recall and the confusion counts at a threshold, against scikit-learn's confusion matrix; the
    specificity and negative predictive value derived from the counts differ on these margins."""
    frame, scores = _frame_and_scores(2, 0.0)
    y = evaluate.labels_of(frame)
    for threshold in (0.72, 0.75, 0.78, float(np.sort(scores)[40])):  # the last one sits on a score
        metrics = stats.binary_metrics(y, scores, threshold)
        tn, fp, fn, tp = confusion_matrix(y, (scores >= threshold).astype(int), labels=[0, 1]).ravel()
        assert (metrics["tn"], metrics["fp"], metrics["fn"], metrics["tp"]) == (tn, fp, fn, tp)
        assert metrics["recall"] == pytest.approx(tp / (tp + fn))
        assert metrics["precision"] == pytest.approx(tp / (tp + fp) if tp + fp else 0.0)
        assert metrics["accuracy"] == pytest.approx((tp + tn) / len(y))
        assert tn / (tn + fp) != pytest.approx(tn / (tn + fn))
