"""Balanced sampling by attributes (the report's Table 2: 21k images drawn from 70k).

:func:`balanced_sample` draws ``n`` rows whose distribution over each attribute matches a
target: equal shares by default, or given ratios. The joint target of a cell (one value per
attribute) is the product of the marginal targets; cells are filled by water-filling, so a
cell with too few images gives its shortfall to the others in proportion to their targets.
:func:`balance_report` puts achieved next to target shares (and available counts), so a
shortfall is visible rather than hidden.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd


def _targets(frame: pd.DataFrame, by: list[str], ratios: dict[str, dict[str, float]] | None) -> dict[str, dict]:
    """Normalised target share per value of each attribute (equal unless ``ratios`` says)."""
    targets = {}
    for attribute in by:
        given = (ratios or {}).get(attribute)
        values = sorted(frame[attribute].astype(str).unique())
        shares = {v: float(given.get(v, 0.0)) for v in values} if given else {v: 1.0 for v in values}
        total = sum(shares.values())
        if total <= 0:
            raise ValueError(f"target ratios for {attribute!r} sum to zero")
        targets[attribute] = {v: s / total for v, s in shares.items()}
    return targets


def allocate(available: dict[tuple, int], weights: dict[tuple, float], n: int) -> dict[tuple, int]:
    """Integer counts per cell summing to ``min(n, available)``, proportional to ``weights``,
    never above a cell's availability (water-filling, then largest remainders; equal remainders
    and weights go to the cell that comes first in ``available``).

    Every loop runs in ``available``'s order, never over a set: a set of string tuples iterates in
    an order that changes with each process's hash seed, which broke ties differently from one
    run to the next (notebook 02's Table 2 moved by an image between two runs of the same data).
    """
    counts = {cell: 0 for cell in available}
    open_cells = [c for c in available if weights.get(c, 0) > 0 and available[c] > 0]
    remaining = min(n, sum(available[c] for c in open_cells))
    while remaining > 0 and open_cells:
        total_weight = sum(weights[c] for c in open_cells)
        quota = {c: remaining * weights[c] / total_weight for c in open_cells}
        capped = [c for c in open_cells if counts[c] + quota[c] >= available[c]]
        if capped:
            for c in capped:
                remaining -= available[c] - counts[c]
                counts[c] = available[c]
            open_cells = [c for c in open_cells if c not in capped]
            continue
        floors = {c: int(np.floor(quota[c])) for c in open_cells}
        for c in open_cells:
            counts[c] += floors[c]
        left = remaining - sum(floors.values())
        # stable sort on the ordered list: ties keep ``available``'s order
        for c in sorted(open_cells, key=lambda c: (-(quota[c] - floors[c]), -weights[c]))[:left]:
            counts[c] += 1
        remaining = 0
    return counts


def balanced_sample(frame: pd.DataFrame, by: list[str], n: int,
                    ratios: dict[str, dict[str, float]] | None = None, seed: int = 42) -> pd.DataFrame:
    """``n`` rows of ``frame`` whose shares over each attribute in ``by`` match the target.

    Args:
        frame: rows with the attribute columns (e.g. the real images of ``annotations.csv``).
        by: attribute columns to balance, e.g. ``["glasses", "expression", "gender"]``.
        n: sample size (fewer if ``frame`` has fewer rows).
        ratios: target ratios per attribute value, e.g. ``{"gender": {"female": 1, "male": 1}}``;
            attributes not named get equal shares; a value given 0 is not sampled.
        seed: the draw within each cell is seeded, so the sample is reproducible.
    """
    targets = _targets(frame, by, ratios)
    keys = frame[by].astype(str).apply(tuple, axis=1)
    available = keys.value_counts().to_dict()
    cells = list(itertools.product(*[list(targets[a]) for a in by]))
    weights = {cell: float(np.prod([targets[a][v] for a, v in zip(by, cell)])) for cell in cells}
    counts = allocate({c: int(available.get(c, 0)) for c in cells}, weights, n)
    rng = np.random.default_rng(seed)
    picked = []
    for cell, count in counts.items():
        if count:
            members = np.flatnonzero((keys == cell).to_numpy())
            picked.extend(rng.choice(members, count, replace=False).tolist())
    return frame.iloc[sorted(picked)].copy()


def balance_report(population: pd.DataFrame, sample: pd.DataFrame, by: list[str],
                   ratios: dict[str, dict[str, float]] | None = None) -> pd.DataFrame:
    """Table 2: per attribute value, available count and share, target share, sampled count and share."""
    targets = _targets(population, by, ratios)
    rows = []
    for attribute in by:
        have = population[attribute].astype(str).value_counts()
        got = sample[attribute].astype(str).value_counts()
        for value, target in targets[attribute].items():
            rows.append(dict(attribute=attribute, value=value, available=int(have.get(value, 0)),
                             available_share=have.get(value, 0) / max(len(population), 1),
                             target_share=target, sampled=int(got.get(value, 0)),
                             sampled_share=got.get(value, 0) / max(len(sample), 1)))
    report = pd.DataFrame(rows)
    report["gap"] = report["sampled_share"] - report["target_share"]
    return report


def largest_exact_size(frame: pd.DataFrame, by: list[str], ratios: dict[str, dict[str, float]] | None = None) -> int:
    """The largest sample whose every joint cell can meet its target share exactly (0 if a needed cell is empty)."""
    targets = _targets(frame, by, ratios)
    available = frame[by].astype(str).apply(tuple, axis=1).value_counts().to_dict()
    sizes = []
    for cell in itertools.product(*[list(targets[a]) for a in by]):
        weight = float(np.prod([targets[a][v] for a, v in zip(by, cell)]))
        if weight > 0:
            sizes.append(available.get(cell, 0) / weight)
    return int(np.floor(min(sizes))) if sizes else 0
