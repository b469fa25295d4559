"""Statistics of a detector's scores: thresholds, metrics and confidence intervals.

The lab's one owner of each rule: the validation threshold (:func:`choose_threshold`, and the
per-source rules :func:`fpr_controlled_threshold` / :func:`miss_controlled_threshold`), ROC AUC with
its bootstrap interval (:func:`auc_ci`), the Wilson interval of a rate (:func:`wilson_ci`). Arrays
in, numbers out: no model, no files (:mod:`helpers.evaluate` runs the models and writes the tables).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn import metrics as skm


def choose_threshold(y_true: np.ndarray, scores: np.ndarray, method: str = "youden") -> float:
    """Pick a decision threshold on validation data.

    ``youden`` maximises TPR - FPR on the ROC curve; ``accuracy`` maximises accuracy. Falls
    back to 0.5 when the validation data has a single class.
    """
    y_true = np.asarray(y_true).astype(int)
    scores = np.asarray(scores, dtype=float)
    if len(np.unique(y_true)) < 2:
        return 0.5
    if method == "youden":
        fpr, tpr, thresholds = skm.roc_curve(y_true, scores)
        best = int(np.argmax(tpr - fpr))
        return float(np.clip(thresholds[best], 0.0, 1.0))
    if method == "accuracy":
        candidates = np.unique(scores)
        accuracy = [np.mean((scores >= t) == y_true) for t in candidates]
        return float(candidates[int(np.argmax(accuracy))])
    raise ValueError(f"unknown threshold method {method!r}")


def fpr_controlled_threshold(frame: pd.DataFrame, scores: np.ndarray, max_fpr: float = 0.05) -> float:
    """The lowest threshold at which no real source of ``frame`` (validation data) has a false-positive
    rate above ``max_fpr``: an operating point fixed before the test set is seen, paid for in recall."""
    scores = np.asarray(scores, dtype=float)
    reals = frame["label"].to_numpy() == "real"
    threshold = 0.0
    for source in np.unique(frame["source"].to_numpy()[reals]):
        own = np.sort(scores[reals & (frame["source"].to_numpy() == source)])
        allowed = int(np.floor(max_fpr * len(own)))       # at most this many of its images called fake
        threshold = max(threshold, float(np.nextafter(own[len(own) - allowed - 1], np.inf)))
    return threshold  # just above 1 when a real score of 1.0 must not be called fake (a saturated sigmoid)


def miss_controlled_threshold(frame: pd.DataFrame, scores: np.ndarray, max_miss: float = 0.05) -> float:
    """The highest threshold below which no fake source of ``frame`` (validation data) has more than
    ``max_miss`` of its images: a score under it is called real with each generator's miss rate bounded."""
    scores = np.asarray(scores, dtype=float)
    fakes = frame["label"].to_numpy() == "fake"
    threshold = 1.0
    for source in np.unique(frame["source"].to_numpy()[fakes]):
        own = np.sort(scores[fakes & (frame["source"].to_numpy() == source)])
        allowed = int(np.floor(max_miss * len(own)))      # at most this many of its images below the threshold
        threshold = min(threshold, float(own[allowed]))
    return max(threshold, 0.0)


def binary_metrics(y_true: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> dict:
    """Accuracy, ROC AUC, average precision, precision, recall, F1 and confusion counts (fake = 1)."""
    y_true = np.asarray(y_true).astype(int)
    scores = np.asarray(scores, dtype=float)
    y_pred = (scores >= threshold).astype(int)
    tn, fp, fn, tp = skm.confusion_matrix(y_true, y_pred, labels=[0, 1]).ravel()
    both = len(np.unique(y_true)) == 2
    return dict(
        n=int(len(y_true)), threshold=float(threshold),
        accuracy=float(skm.accuracy_score(y_true, y_pred)),
        auc=float(skm.roc_auc_score(y_true, scores)) if both else float("nan"),
        average_precision=float(skm.average_precision_score(y_true, scores)) if both else float("nan"),
        precision=float(skm.precision_score(y_true, y_pred, zero_division=0)),
        recall=float(skm.recall_score(y_true, y_pred, zero_division=0)),
        f1=float(skm.f1_score(y_true, y_pred, zero_division=0)),
        tn=int(tn), fp=int(fp), fn=int(fn), tp=int(tp),
    )


def bootstrap_ci(y_true: np.ndarray, scores: np.ndarray, statistic: str, threshold: float = 0.5,
                 n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of ``auc`` or ``accuracy``, resampling within each class.

    All replicates are computed at once: AUC from the rank sums of the positives
    (Mann-Whitney, ties averaged), identical to ``roc_auc_score`` on each replicate.
    """
    from scipy.stats import rankdata

    y_true = np.asarray(y_true).astype(int)
    scores = np.asarray(scores, dtype=float)
    if statistic not in ("auc", "accuracy"):
        raise ValueError(f"unknown statistic {statistic!r}")
    rng = np.random.default_rng(seed)
    negatives, positives = (np.flatnonzero(y_true == c) for c in (0, 1))
    if statistic == "auc" and (not len(negatives) or not len(positives)):
        return (float("nan"), float("nan"))
    idx = np.concatenate([rng.choice(members, (n_boot, len(members)))
                          for members in (negatives, positives) if len(members)], axis=1)
    resampled = scores[idx]
    if statistic == "auc":
        n0, n1 = len(negatives), len(positives)
        ranks = rankdata(resampled, axis=1)
        values = (ranks[:, n0:].sum(axis=1) - n1 * (n1 + 1) / 2) / (n0 * n1)
    else:
        values = ((resampled >= threshold) == y_true[idx]).mean(axis=1)
    alpha = (1 - level) / 2
    return float(np.quantile(values, alpha)), float(np.quantile(values, 1 - alpha))


def auc_ci(y_true: np.ndarray, scores: np.ndarray, n_boot: int = 1000, seed: int = 0,
           level: float = 0.95) -> tuple[float, float, float]:
    """``(auc, low, high)``: ROC AUC with its percentile-bootstrap interval; NaNs for a single class.
    ``n_boot=0`` skips the bootstrap (interval NaN) where only the point estimate is shown.

    The one place the lab computes an AUC with its interval (tables, protocols, attributes).
    """
    y_true = np.asarray(y_true).astype(int)
    if len(np.unique(y_true)) < 2:
        return (float("nan"),) * 3
    auc = float(skm.roc_auc_score(y_true, np.asarray(scores, dtype=float)))
    if n_boot <= 0:
        return auc, float("nan"), float("nan")
    low, high = bootstrap_ci(y_true, scores, "auc", n_boot=n_boot, level=level, seed=seed)
    return auc, low, high


def wilson_ci(hits: int, total: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion ``hits / total`` (NaN for ``total == 0``)."""
    from scipy.stats import norm

    if total == 0:
        return (float("nan"), float("nan"))
    z = float(norm.ppf(0.5 + level / 2))
    p = hits / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * np.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    # the interval always holds p itself (at 0 or n hits rounding could put a bound a hair past it)
    return (float(min(p, max(0.0, centre - half))), float(max(p, min(1.0, centre + half))))


def coverage_thresholds(frame: pd.DataFrame, scores: np.ndarray, min_accuracy: float = 0.95,
                        max_candidates: int = 400) -> tuple[float, float]:
    """``(real_threshold, fake_threshold)`` of a three-way answer chosen on validation rows (``label``,
    ``source``): real below the first, fake at or above the second, unsure in between.

    Of all pairs, those whose definite answers are at least ``min_accuracy`` right on every source
    (a real source's "real" answers among its real and fake answers, a fake source's "fake" ones)
    are kept, and of those the one whose largest per-source share of unsure answers is smallest;
    ties go to the smallest mean share, then the narrowest band. Candidates are the scores
    themselves (at most ``max_candidates`` of them, at evenly spaced ranks), 0 and just above 1,
    so "unsure for everything" is always allowed and the answer is never forced.
    """
    scores = np.asarray(scores, dtype=float)
    labels, sources = frame["label"].to_numpy(), frame["source"].to_numpy()
    values = np.unique(scores)
    if len(values) > max_candidates:
        values = values[np.unique(np.linspace(0, len(values) - 1, max_candidates).round().astype(int))]
    candidates = np.unique(np.concatenate([[0.0], values, [np.nextafter(1.0, 2.0)]]))
    worst = np.zeros((len(candidates), len(candidates)))
    total = np.zeros_like(worst)
    allowed = np.triu(np.ones_like(worst, dtype=bool))  # real_threshold <= fake_threshold
    groups = sorted({(label, source) for label, source in zip(labels, sources)})
    for label, source in groups:
        own = np.sort(scores[(labels == label) & (sources == source)])
        below = np.searchsorted(own, candidates, side="left").astype(float)  # scores < candidate
        n = float(len(own))
        called_real, called_fake = below[:, None], n - below[None, :]       # real_threshold i, fake_threshold j
        right, wrong = (called_real, called_fake) if label == "real" else (called_fake, called_real)
        allowed &= wrong * min_accuracy <= right * (1 - min_accuracy) + 1e-9
        unsure = np.maximum(below[None, :] - below[:, None], 0) / n
        worst = np.maximum(worst, unsure)
        total += unsure
    width = candidates[None, :] - candidates[:, None]
    key = np.where(allowed, worst, np.inf), np.where(allowed, total, np.inf), np.where(allowed, width, np.inf)
    order = np.lexsort((key[2].ravel(), key[1].ravel(), key[0].ravel()))
    i, j = np.unravel_index(order[0], worst.shape)
    return float(candidates[i]), float(min(candidates[j], np.nextafter(1.0, 2.0)))
