"""The coverage rule of the served answer (``stats.coverage_thresholds``) against a brute-force search
over every pair of thresholds, written from its docstring in plain Python with exact fractions."""

from fractions import Fraction

import numpy as np
import pandas as pd

from helpers import stats

ABOVE_ONE = float(np.nextafter(1.0, 2.0))


def _brute_force(frame: pd.DataFrame, scores: np.ndarray, min_accuracy: float, candidates: list[float]):
    groups = {}
    for label, source, score in zip(frame.label, frame.source, scores):
        groups.setdefault((label, source), []).append(float(score))
    need = Fraction(min_accuracy).limit_denominator(1000)
    best = None
    for i, real_t in enumerate(candidates):
        for j, fake_t in enumerate(candidates):
            if fake_t < real_t:
                continue
            shares, ok = [], True
            for (label, _), values in groups.items():
                called_real = sum(s < real_t for s in values)
                called_fake = sum(s >= fake_t for s in values)
                right, wrong = (called_real, called_fake) if label == "real" else (called_fake, called_real)
                if right + wrong and Fraction(right, right + wrong) < need:
                    ok = False
                shares.append(Fraction(len(values) - called_real - called_fake, len(values)))
            if ok:
                key = (max(shares), sum(shares), fake_t - real_t, i, j)
                best = key if best is None or key < best else best
    return candidates[best[3]], candidates[best[4]]


def test_coverage_thresholds_match_a_brute_force_search():
    rng = np.random.default_rng(11)
    for trial in range(150):
        sources = [("real", "ra"), ("fake", "fa")] + [g for g in (("real", "rb"), ("fake", "fb")) if rng.random() < 0.6]
        rows, scores = [], []
        for label, source in sources:
            n = int(rng.integers(2, 16))
            # overlapping classes, so that a band with no unsure answer is rarely allowed; ties on purpose
            centre = (0.65 if label == "fake" else 0.35) + float(rng.uniform(-0.1, 0.1))
            scores += np.round(np.clip(rng.normal(centre, 0.25, n), 0, 1), 1).tolist()
            rows += [dict(label=label, source=source)] * n
        frame, scores = pd.DataFrame(rows), np.asarray(scores)
        accuracy = float(rng.choice([0.7, 0.8, 0.9, 0.95]))
        candidates = sorted({0.0, ABOVE_ONE, *map(float, scores)})
        assert stats.coverage_thresholds(frame, scores, accuracy) == _brute_force(frame, scores, accuracy, candidates), trial


def test_coverage_candidates_are_evenly_spaced_ranks_when_there_are_many():
    rng = np.random.default_rng(5)
    frame = pd.DataFrame({"label": ["real"] * 30 + ["fake"] * 30, "source": ["r"] * 30 + ["f"] * 30})
    scores = np.concatenate([rng.uniform(0.0, 0.6, 30), rng.uniform(0.4, 1.0, 30)])
    values = np.unique(scores)
    for limit in (5, 9, 59):
        ranks = sorted({int(np.floor(k * (len(values) - 1) / (limit - 1) + 0.5)) for k in range(limit)})
        candidates = sorted({0.0, ABOVE_ONE, *map(float, values[ranks])})
        assert ranks[0] == 0 and ranks[-1] == len(values) - 1
        got = stats.coverage_thresholds(frame, scores, 0.9, max_candidates=limit)
        assert got == _brute_force(frame, scores, 0.9, candidates), limit
    # at the limit itself every score is a candidate
    assert stats.coverage_thresholds(frame, scores, 0.9, max_candidates=len(values)) == \
        _brute_force(frame, scores, 0.9, sorted({0.0, ABOVE_ONE, *map(float, values)}))
    assert stats.coverage_thresholds(frame, scores, 0.9) == stats.coverage_thresholds(frame, scores, 0.9, 400)


def test_coverage_defaults_are_95_percent_and_400_candidates():
    """Without arguments: definite answers at least 95% right (one wrong answer in 20 is allowed, so the band
    is narrower than at 100%), and at most 400 candidates: of 401 perfectly separated scores, the one rank
    that 400 evenly spaced ranks leave out is the only threshold with no unsure answer, so without it the
    band holds one real and one fake image."""
    frame = pd.DataFrame({"label": ["real"] * 20 + ["fake"] * 20, "source": ["r"] * 20 + ["f"] * 20})
    scores = np.array([0.1] * 19 + [0.9] + [0.8] * 20)  # one real photo scored above every fake
    candidates = sorted({0.0, ABOVE_ONE, *map(float, scores)})
    assert stats.coverage_thresholds(frame, scores) == _brute_force(frame, scores, 0.95, candidates) == (0.8, 0.8)
    assert _brute_force(frame, scores, 1.0, candidates) == (0.8, ABOVE_ONE)  # at 100%: every fake unsure
    values = np.linspace(0.0, 0.8, 401)
    kept = np.unique(np.floor(np.linspace(0, 400, 400) + 0.5).astype(int))
    dropped = int(np.setdiff1d(np.arange(401), kept)[0])
    frame = pd.DataFrame({"label": ["real"] * dropped + ["fake"] * (401 - dropped), "source": ["r"] * dropped +
                          ["f"] * (401 - dropped)})
    assert stats.coverage_thresholds(frame, values, 1.0, max_candidates=401) == (values[dropped], values[dropped])
    assert stats.coverage_thresholds(frame, values, 1.0) == (values[dropped - 1], values[dropped + 1])
