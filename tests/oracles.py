"""Oracles the oracle test files share: textbook computations written out with third-party code, never with
the lab's own."""

import numpy as np
from sklearn.metrics import roc_auc_score


def bootstrap_auc_interval(y: np.ndarray, scores: np.ndarray, n_boot: int, seed: int) -> tuple[float, float]:
    """The documented percentile bootstrap of an AUC: reals then fakes, each resampled within its class from one
    seeded generator, each replicate scored by scikit-learn, the 2.5% and 97.5% quantiles."""
    rng = np.random.default_rng(seed)
    negatives, positives = np.flatnonzero(y == 0), np.flatnonzero(y == 1)
    idx = np.concatenate([rng.choice(negatives, (n_boot, len(negatives))),
                          rng.choice(positives, (n_boot, len(positives)))], axis=1)
    values = [roc_auc_score(y[i], scores[i]) for i in idx]
    return float(np.quantile(values, 0.025)), float(np.quantile(values, 0.975))
