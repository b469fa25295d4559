"""Calibration (notebook 08): is a score of 0.8 fake 80% of the time?

Expected calibration error over equal-width bins, a temperature fitted on validation scores, and
the reliability bins before and after scaling, for any trained model a protocol bank scores
(:class:`helpers.protocols.Bank`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from helpers.data import labels_of
from helpers.protocols import Bank, score


def logit(p: np.ndarray) -> np.ndarray:
    """log(p / (1 − p)), with p kept inside [1e-7, 1 − 1e-7]."""
    p = np.clip(np.asarray(p, dtype=float), 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))


def scale_scores(p: np.ndarray, temperature: float) -> np.ndarray:
    """sigmoid(logit(p) / T): the temperature-scaled scores."""
    return 1 / (1 + np.exp(-logit(p) / temperature))


def reliability_bins(y: np.ndarray, p: np.ndarray, bins: int = 10) -> pd.DataFrame:
    """Per non-empty equal-width bin of P(fake): its centre, mean score, share of fakes and count."""
    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    edges = np.linspace(0, 1, bins + 1)
    index = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    rows = [dict(bin_centre=(edges[b] + edges[b + 1]) / 2, confidence=float(p[index == b].mean()),
                 fraction_fake=float(y[index == b].mean()), n=int((index == b).sum()))
            for b in range(bins) if (index == b).any()]
    return pd.DataFrame(rows, columns=["bin_centre", "confidence", "fraction_fake", "n"])


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Weighted mean |accuracy − confidence| over equal-width probability bins (on P(fake))."""
    table = reliability_bins(y, p, bins)
    return float((table.n * (table.fraction_fake - table.confidence).abs()).sum() / table.n.sum())


def fit_temperature(y: np.ndarray, p: np.ndarray) -> float:
    """The temperature T minimising the log loss of sigmoid(logit(p) / T) (fit on validation)."""
    from scipy.optimize import minimize_scalar

    def nll(t):
        q = np.clip(scale_scores(p, t), 1e-7, 1 - 1e-7)
        return -np.mean(y * np.log(q) + (1 - y) * np.log(1 - q))

    return float(minimize_scalar(nll, bounds=(0.05, 20), method="bounded").x)


def calibration_table(trained, bank: Bank, bins: int = 10) -> tuple[dict, pd.DataFrame]:
    """ECE on test before and after temperature scaling fitted on validation, and reliability bins."""
    y_val, p_val = labels_of(bank.frames["val"]), score(trained, bank, "val")
    y, p = labels_of(bank.frames["test"]), score(trained, bank, "test")
    temperature = fit_temperature(y_val, p_val)
    scaled = scale_scores(p, temperature)
    table = pd.concat([reliability_bins(y, probs, bins).assign(recipe=trained.recipe.name, scores=name)
                       for name, probs in (("raw", p), ("temperature-scaled", scaled))], ignore_index=True)
    table = table[["recipe", "scores", "bin_centre", "confidence", "fraction_fake", "n"]]
    summary = dict(recipe=trained.recipe.name, temperature=temperature, ece_raw=expected_calibration_error(y, p, bins),
                   ece_scaled=expected_calibration_error(y, scaled, bins))
    return summary, table
