"""Oracles the oracle test files share: textbook computations written out with third-party code, never with
the lab's own."""

import numpy as np
from sklearn.metrics import accuracy_score, roc_auc_score


def bootstrap_interval(y: np.ndarray, scores: np.ndarray, n_boot: int, seed: int, statistic: str = "auc",
                       threshold: float = 0.5, level: float = 0.95) -> tuple[float, float]:
    """The documented stratified percentile bootstrap: reals then fakes, each resampled within its class from
    one seeded generator, each replicate scored by scikit-learn (the AUC, or the accuracy of ``score >=
    threshold``), and NumPy's quantiles at (1 - level) / 2 and its complement."""
    rng = np.random.default_rng(seed)
    negatives, positives = np.flatnonzero(y == 0), np.flatnonzero(y == 1)
    idx = np.concatenate([rng.choice(negatives, (n_boot, len(negatives))),
                          rng.choice(positives, (n_boot, len(positives)))], axis=1)
    if statistic == "auc":
        values = [roc_auc_score(y[i], scores[i]) for i in idx]
    else:
        values = [accuracy_score(y[i], (scores[i] >= threshold).astype(int)) for i in idx]
    tail = (1 - level) / 2
    return float(np.quantile(values, tail)), float(np.quantile(values, 1 - tail))


def bootstrap_auc_interval(y: np.ndarray, scores: np.ndarray, n_boot: int, seed: int) -> tuple[float, float]:
    """The 95% stratified percentile bootstrap interval of an AUC (:func:`bootstrap_interval`)."""
    return bootstrap_interval(y, scores, n_boot, seed)
