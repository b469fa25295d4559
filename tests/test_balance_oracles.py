"""Balanced sampling (notebook 02's Table 2) against hand-worked counts and a brute-force oracle.

The oracle for :func:`helpers.balance.allocate` is the definition, not the algorithm: the water
level ``lam`` found by bisection with ``sum(min(available, lam * weight)) = min(n, total)``; every
integer allocation the function returns must lie within one image of that continuous solution,
never above a cell's availability, and sum to the requested size.
"""

import itertools

import numpy as np
import pandas as pd
import pytest

from helpers import balance


def _water_level(available: dict, weights: dict, n: int) -> dict:
    """Continuous water-filling by bisection: the definition of a proportional, capped allocation."""
    cells = [c for c in available if weights.get(c, 0) > 0 and available[c] > 0]
    goal = min(n, sum(available[c] for c in cells))
    low, high = 0.0, float(goal) / min(weights[c] for c in cells) + 1.0 if cells else 0.0
    for _ in range(200):
        middle = (low + high) / 2
        if sum(min(available[c], middle * weights[c]) for c in cells) < goal:
            low = middle
        else:
            high = middle
    return {c: (min(available[c], high * weights[c]) if c in cells else 0.0) for c in available}


def test_allocate_by_hand():
    """Three cells, weights 1:1:2, 10 wanted. a has only 1 image: it gives its shortfall to b and c
    in proportion (9 left at 1:2 -> 3 and 6)."""
    assert balance.allocate({"a": 1, "b": 50, "c": 50}, {"a": 1, "b": 1, "c": 2}, 10) == {"a": 1, "b": 3, "c": 6}
    # no cap: 10 at 1:1:2 is 2.5, 2.5, 5 -> floors 2, 2, 5 and the one left goes to the first equal remainder
    assert balance.allocate({"a": 9, "b": 9, "c": 9}, {"a": 1, "b": 1, "c": 2}, 10) == {"a": 3, "b": 2, "c": 5}
    # a larger remainder wins over order: 7 at 1:2 -> 2.33, 4.67 -> 2 + 5
    assert balance.allocate({"a": 9, "b": 9}, {"a": 1, "b": 2}, 7) == {"a": 2, "b": 5}
    # equal remainders and weights: the first cell; equal remainders, unequal weights (2 at 1:3 -> 0.5,
    # 1.5): the heavier cell
    assert balance.allocate({"a": 9, "b": 9}, {"a": 1, "b": 1}, 5) == {"a": 3, "b": 2}
    assert balance.allocate({"a": 9, "b": 9}, {"a": 1, "b": 3}, 2) == {"a": 0, "b": 2}
    # a cell exactly at its availability is capped, not over-filled: 4 at 1:1 with a = 2
    assert balance.allocate({"a": 2, "b": 9}, {"a": 1, "b": 1}, 4) == {"a": 2, "b": 2}
    # more asked than there is: everything available with a weight, nothing for weight 0 or absent weights
    assert balance.allocate({"a": 2, "b": 3, "z": 5, "w": 4}, {"a": 1, "b": 1, "z": 0}, 100) == \
        {"a": 2, "b": 3, "z": 0, "w": 0}
    assert balance.allocate({"a": 0, "b": 0}, {"a": 1, "b": 1}, 5) == {"a": 0, "b": 0}
    assert balance.allocate({"a": 4, "b": 4}, {"a": 1, "b": 1}, 0) == {"a": 0, "b": 0}


def test_allocate_against_continuous_water_filling():
    rng = np.random.default_rng(7)
    for _ in range(400):
        k = int(rng.integers(1, 6))
        cells = [f"c{i}" for i in range(k)]
        available = {c: int(rng.integers(0, 12)) for c in cells}
        weights = {c: float(rng.choice([0.0, 0.5, 1.0, 2.0, 3.0])) for c in cells}
        n = int(rng.integers(0, 40))
        counts = balance.allocate(available, weights, n)
        usable = sum(available[c] for c in cells if weights[c] > 0)
        assert list(counts) == cells and sum(counts.values()) == min(n, usable), (available, weights, n, counts)
        if usable == 0:
            continue
        level = _water_level(available, weights, n)
        for c in cells:
            assert 0 <= counts[c] <= available[c]
            assert abs(counts[c] - level[c]) < 1 + 1e-9, (available, weights, n, counts, level)
            if weights[c] == 0:
                assert counts[c] == 0


def _people(n_per_cell: dict) -> pd.DataFrame:
    rows = []
    for (glasses, gender), count in n_per_cell.items():
        rows += [dict(glasses=glasses, gender=gender) for _ in range(count)]
    frame = pd.DataFrame(rows)
    frame["path"] = [f"img{k:04d}.jpg" for k in range(len(frame))]
    return frame


def test_balanced_sample_counts_by_hand():
    """Equal targets over glasses x gender: each cell 1/4 of 40 = 10, but (yes, female) has 4 images,
    so its 6 go to the three others in proportion: 12 each."""
    frame = _people({("yes", "female"): 4, ("yes", "male"): 30, ("no", "female"): 30, ("no", "male"): 30})
    sample = balance.balanced_sample(frame, ["glasses", "gender"], 40, seed=3)
    counts = sample.groupby(["glasses", "gender"]).size().to_dict()
    assert counts == {("no", "female"): 12, ("no", "male"): 12, ("yes", "female"): 4, ("yes", "male"): 12}
    assert sample.index.is_monotonic_increasing and not sample.index.duplicated().any()
    assert set(sample.columns) == set(frame.columns)
    # ratios: 3 female to 1 male, glasses equal: cells (yes, f) 3/8, (yes, m) 1/8, (no, f) 3/8, (no, m) 1/8
    frame = _people({k: 30 for k in itertools.product(["yes", "no"], ["female", "male"])})
    sample = balance.balanced_sample(frame, ["glasses", "gender"], 16, ratios={"gender": {"female": 3, "male": 1}})
    assert sample.groupby(["glasses", "gender"]).size().to_dict() == {
        ("no", "female"): 6, ("no", "male"): 2, ("yes", "female"): 6, ("yes", "male"): 2}
    # a value given ratio 0 is not sampled; a value not named in the ratios gets 0 too
    sample = balance.balanced_sample(frame, ["gender"], 10, ratios={"gender": {"female": 1}})
    assert set(sample.gender) == {"female"} and len(sample) == 10
    # more asked than there is: every row once
    assert len(balance.balanced_sample(frame, ["gender"], 1000)) == len(frame)


def test_target_ratios_that_sum_to_zero_are_refused():
    frame = _people({("yes", "female"): 2, ("no", "male"): 2})
    with pytest.raises(ValueError, match="gender"):
        balance.balanced_sample(frame, ["gender"], 2, ratios={"gender": {"female": 0, "male": 0}})


def test_balance_report_and_largest_exact_size_by_hand():
    population = _people({("yes", "female"): 4, ("yes", "male"): 30, ("no", "female"): 30, ("no", "male"): 36})
    sample = population.iloc[[0, 1, 10, 40, 80]]  # 2 (yes, f), 1 (yes, m), 1 (no, f), 1 (no, m)
    report = balance.balance_report(population, sample, ["glasses", "gender"]).set_index(["attribute", "value"])
    assert list(report.columns) == ["available", "available_share", "target_share", "sampled", "sampled_share", "gap"]
    assert report.loc[("glasses", "yes")].tolist() == pytest.approx([34, 0.34, 0.5, 3, 0.6, 0.1])
    assert report.loc[("glasses", "no")].tolist() == pytest.approx([66, 0.66, 0.5, 2, 0.4, -0.1])
    assert report.loc[("gender", "female")].tolist() == pytest.approx([34, 0.34, 0.5, 3, 0.6, 0.1])
    assert report.loc[("gender", "male")].tolist() == pytest.approx([66, 0.66, 0.5, 2, 0.4, -0.1])
    ratio = balance.balance_report(population, sample, ["gender"], ratios={"gender": {"female": 1, "male": 3}})
    assert ratio.target_share.tolist() == pytest.approx([0.25, 0.75])
    empty = balance.balance_report(population, sample.iloc[:0], ["gender"])
    assert empty.sampled.tolist() == [0, 0] and empty.sampled_share.tolist() == [0.0, 0.0]
    # each cell's target 1/4: (yes, female)'s 4 images allow 16 in all
    assert balance.largest_exact_size(population, ["glasses", "gender"]) == 16
    # female 1 : male 3 -> (yes, f) 1/8: 4 / (1/8) = 32; (no, m) 3/8: 36 / (3/8) = 96; (yes, m) 30 / (3/8) = 80
    assert balance.largest_exact_size(population, ["glasses", "gender"],
                                      ratios={"gender": {"female": 1, "male": 3}}) == 32
    # female 2 : male 5 -> (yes, f) 1/2 * 2/7 = 1/7: 4 * 7 = 28 (the others allow 84, 100.8 and 210)
    assert balance.largest_exact_size(population, ["glasses", "gender"],
                                      ratios={"gender": {"female": 2, "male": 5}}) == 28
    # a needed cell that is empty: 0
    assert balance.largest_exact_size(_people({("yes", "female"): 5, ("no", "male"): 5}), ["glasses", "gender"]) == 0


def test_one_row_shares_and_a_value_given_no_share():
    """A one-row sample's share is 1, not a half; a value given ratio 0 sets no limit on the exact size."""
    population = _people({("yes", "female"): 4, ("no", "male"): 36})
    report = balance.balance_report(population.iloc[:1], population.iloc[:1], ["gender"])
    assert report.available_share.tolist() == [1.0] and report.sampled_share.tolist() == [1.0]
    # male only: (no, male) 1/2 of glasses x 1 -> 36 / (1/2) = 72; (yes, male) is empty -> 0
    assert balance.largest_exact_size(population, ["glasses", "gender"], ratios={"gender": {"male": 1}}) == 0
    assert balance.largest_exact_size(population, ["gender"], ratios={"gender": {"male": 1, "female": 0}}) == 36
