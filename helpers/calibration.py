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


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Weighted mean |accuracy − confidence| over equal-width probability bins (on P(fake))."""
    edges = np.linspace(0, 1, bins + 1)
    index = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    return float(sum((index == b).mean() * abs(y[index == b].mean() - p[index == b].mean())
                     for b in range(bins) if (index == b).any()))


def fit_temperature(y: np.ndarray, p: np.ndarray) -> float:
    """The temperature T minimising the log loss of sigmoid(logit(p) / T) (fit on validation)."""
    from scipy.optimize import minimize_scalar

    logits = np.log(np.clip(p, 1e-7, 1 - 1e-7) / np.clip(1 - p, 1e-7, 1))

    def nll(t):
        q = np.clip(1 / (1 + np.exp(-logits / t)), 1e-7, 1 - 1e-7)
        return -np.mean(y * np.log(q) + (1 - y) * np.log(1 - q))

    return float(minimize_scalar(nll, bounds=(0.05, 20), method="bounded").x)


def calibration_table(trained, bank: Bank, bins: int = 10) -> tuple[dict, pd.DataFrame]:
    """ECE on test before and after temperature scaling fitted on validation, and reliability bins."""
    y_val, p_val = labels_of(bank.frames["val"]), score(trained, bank, "val")
    y, p = labels_of(bank.frames["test"]), score(trained, bank, "test")
    temperature = fit_temperature(y_val, p_val)
    logits = np.log(np.clip(p, 1e-7, 1 - 1e-7) / np.clip(1 - p, 1e-7, 1))
    scaled = 1 / (1 + np.exp(-logits / temperature))
    edges = np.linspace(0, 1, bins + 1)
    rows = []
    for name, probs in (("raw", p), ("temperature-scaled", scaled)):
        index = np.clip(np.digitize(probs, edges[1:-1]), 0, bins - 1)
        for b in range(bins):
            members = index == b
            if members.any():
                rows.append(dict(recipe=trained.recipe.name, scores=name, bin_centre=(edges[b] + edges[b + 1]) / 2,
                                 confidence=float(probs[members].mean()), fraction_fake=float(y[members].mean()),
                                 n=int(members.sum())))
    summary = dict(recipe=trained.recipe.name, temperature=temperature, ece_raw=expected_calibration_error(y, p, bins),
                   ece_scaled=expected_calibration_error(y, scaled, bins))
    return summary, pd.DataFrame(rows)
