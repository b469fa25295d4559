"""Deterministic, leakage-free train/validation/test splits.

Images are first grouped: identical files (same SHA-256), near-duplicates (perceptual
hashes within a Hamming distance) and explicitly paired images (a ``pair_id`` column, e.g.
a real face and the fake generated from it) end up in one group. Whole groups are then
assigned to splits, stratified by label and source, in an order fixed by a seeded hash,
so the same manifest and seed always give the same split.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd

from helpers import atomic

SPLITS = ("train", "val", "test")


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        ri, rj = self.find(i), self.find(j)
        if ri != rj:
            self.parent[max(ri, rj)] = min(ri, rj)


def _popcount64(values: np.ndarray) -> np.ndarray:
    return np.unpackbits(values.view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1)


def near_duplicate_pairs(phashes: list[str], max_distance: int = 6) -> list[tuple[int, int]]:
    """Index pairs whose 64-bit perceptual hashes differ in at most ``max_distance`` bits.

    Uses the pigeonhole principle: split each hash into ``max_distance + 1`` bands; two hashes
    within the distance agree exactly on at least one band, so only hashes sharing a band
    value are compared. Scales to the report's 70k images.
    """
    valid = [(i, int(h, 16)) for i, h in enumerate(phashes) if isinstance(h, str) and h]
    if len(valid) < 2:
        return []
    index = np.array([i for i, _ in valid])
    values = np.array([v for _, v in valid], dtype=np.uint64)
    n_bands = min(max_distance + 1, 64)
    edges = np.linspace(0, 64, n_bands + 1).astype(int)
    pairs: set[tuple[int, int]] = set()
    for lo, hi in zip(edges[:-1], edges[1:]):
        mask = np.uint64(((1 << (hi - lo)) - 1) << lo)
        buckets: dict[int, list[int]] = defaultdict(list)
        for k, band in enumerate((values & mask).tolist()):
            buckets[band].append(k)
        for members in buckets.values():
            if len(members) < 2:
                continue
            members_arr = np.array(members)
            for a_pos, a in enumerate(members_arr[:-1]):
                rest = members_arr[a_pos + 1:]
                dist = _popcount64(values[rest] ^ values[a])
                for b in rest[dist <= max_distance]:
                    pairs.add((int(index[a]), int(index[b])))
    return sorted(pairs)


def assign_groups(manifest: pd.DataFrame, max_distance: int = 6,
                  pair_column: str = "pair_id") -> pd.Series:
    """Group ids: same SHA-256, near-duplicate perceptual hash, or same ``pair_id`` share one."""
    n = len(manifest)
    uf = _UnionFind(n)
    for column in ("sha256", pair_column):
        if column not in manifest:
            continue
        first: dict[str, int] = {}
        for i, key in enumerate(manifest[column].tolist()):
            if isinstance(key, str) and key:
                uf.union(i, first.setdefault(key, i))
    if "phash" in manifest:
        for i, j in near_duplicate_pairs(manifest["phash"].tolist(), max_distance):
            uf.union(i, j)
    roots = [uf.find(i) for i in range(n)]
    paths = manifest["path"].tolist()
    return pd.Series([paths[r] for r in roots], index=manifest.index, name="group")


def _seeded_key(text: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}:{text}".encode()).hexdigest()


def split_manifest(manifest: pd.DataFrame, fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
                   seed: int = 42, max_distance: int = 6) -> pd.DataFrame:
    """Return the manifest with ``group`` and ``split`` columns added.

    Groups (see :func:`assign_groups`) are stratified by the label and source of their first
    member, ordered by a seeded hash, and filled into train/val/test to match ``fractions``
    by image count. Deterministic for a given manifest and seed, independent of row order.
    """
    if not np.isclose(sum(fractions), 1.0):
        raise ValueError(f"split fractions must sum to 1, got {fractions}")
    frame = manifest.sort_values("path").reset_index(drop=True).copy()
    frame["group"] = assign_groups(frame, max_distance=max_distance)
    group_info = frame.groupby("group").agg(label=("label", "first"), source=("source", "first"),
                                            size=("path", "size"))
    group_split: dict[str, str] = {}
    for _, stratum in group_info.groupby(["label", "source"], sort=True):
        ordered = sorted(stratum.index, key=lambda g: _seeded_key(g, seed))
        total = int(stratum["size"].sum())
        targets = np.cumsum(fractions) * total
        filled = 0
        for group in ordered:
            # Put the group where its midpoint falls, so big groups do not skew one split.
            midpoint = filled + stratum.at[group, "size"] / 2
            split_index = int(np.searchsorted(targets, midpoint, side="right"))
            group_split[group] = SPLITS[min(split_index, len(SPLITS) - 1)]
            filled += stratum.at[group, "size"]
    frame["split"] = frame["group"].map(group_split)
    return frame


def split_summary(split_frame: pd.DataFrame) -> pd.DataFrame:
    """Image counts per label/source (rows) and split (columns)."""
    table = split_frame.pivot_table(index=["label", "source"], columns="split", values="path",
                                    aggfunc="count", fill_value=0)
    return table.reindex(columns=[s for s in SPLITS if s in table.columns]).reset_index()


def leakage_report(split_frame: pd.DataFrame, max_distance: int = 6) -> pd.DataFrame:
    """Pairs of images that sit in different splits but must not (should be empty): identical files,
    near-duplicates (perceptual hash within ``max_distance`` bits) and generated pairs (a real face
    and the fake made from it share a ``pair_id``). One row per pair, with its ``kind``."""
    rows = []
    for i, j in near_duplicate_pairs(split_frame["phash"].tolist(), max_distance):
        a, b = split_frame.iloc[i], split_frame.iloc[j]
        if a["split"] != b["split"]:
            rows.append(dict(kind="near-duplicate", path_a=a["path"], split_a=a["split"], path_b=b["path"],
                             split_b=b["split"]))
    for column, kind in (("sha256", "identical file"), ("pair_id", "generated pair")):
        if column not in split_frame:
            continue
        keyed = split_frame[split_frame[column].fillna("").astype(str) != ""]
        spread = keyed.groupby(column)["split"].nunique()
        for key in spread[spread > 1].index:
            members = keyed[keyed[column] == key].drop_duplicates("split")
            rows.append(dict(kind=kind, path_a=members.iloc[0]["path"], split_a=members.iloc[0]["split"],
                             path_b=members.iloc[1]["path"], split_b=members.iloc[1]["split"]))
    return pd.DataFrame(rows, columns=["kind", "path_a", "split_a", "path_b", "split_b"])


def save_split(split_frame: pd.DataFrame, path: str | Path) -> Path:
    """Write the split manifest as CSV (the run's record of which image went where)."""
    path = Path(path)
    return atomic.write_csv(path, split_frame)


def load_split(path: str | Path) -> pd.DataFrame:
    """Read a split manifest written by :func:`save_split`."""
    return pd.read_csv(path, keep_default_na=False, dtype={"phash": str, "sha256": str})


def subsample(split_frame: pd.DataFrame, split: str, max_per_source: int | None,
              seed: int = 42) -> pd.DataFrame:
    """At most ``max_per_source`` rows of one split per label/source, picked by a seeded hash."""
    rows = split_frame[split_frame["split"] == split]
    if not max_per_source:
        return rows.reset_index(drop=True)
    order = rows["path"].map(lambda p: _seeded_key(p, seed))
    picked = (rows.assign(_order=order).sort_values("_order")
              .groupby(["label", "source"], sort=True).head(max_per_source))
    return picked.drop(columns="_order").sort_values("path").reset_index(drop=True)
