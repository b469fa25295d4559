"""Splits and the leakage audit against independent oracles: every pair of hashes compared bit by bit,
the documented midpoint rule worked out by hand (ties on a boundary included), and round trips."""

import hashlib
import itertools

import numpy as np
import pandas as pd
import pytest

from helpers import splits


def _flip(value: int, bits) -> int:
    for bit in bits:
        value ^= 1 << int(bit)
    return value


def _hashes_with_near_copies(seed: int) -> list[str]:
    """Random 64-bit hashes, and copies of some of them with 0-9 bits flipped anywhere in the word."""
    rng = np.random.default_rng(seed)
    values = [(int(hi) << 32) | int(lo) for hi, lo in rng.integers(0, 2**32, (200, 2), dtype=np.uint64)]
    for base in values[:60]:
        values.append(_flip(base, rng.choice(64, int(rng.integers(0, 10)), replace=False)))
    return [f"{v:016x}" for v in values]


def _brute_force_pairs(hashes, max_distance):
    return sorted((i, j) for i, j in itertools.combinations(range(len(hashes)), 2)
                  if hashes[i] and hashes[j] and bin(int(hashes[i], 16) ^ int(hashes[j], 16)).count("1") <= max_distance)


@pytest.mark.parametrize("max_distance", [0, 3, 6, 10])
def test_near_duplicate_pairs_are_every_pair_within_the_distance(max_distance):
    hashes = _hashes_with_near_copies(max_distance)
    hashes[5] = ""  # a row without a hash is never paired
    expected = _brute_force_pairs(hashes, max_distance)
    assert splits.near_duplicate_pairs(hashes, max_distance) == expected
    assert len(expected) >= (4 if max_distance == 0 else 20) and all(5 not in pair for pair in expected)


def test_two_hashes_are_enough_for_a_pair_and_one_is_not():
    a = "f0f0f0f0f0f0f0f0"
    b = f"{_flip(int(a, 16), [0, 63]):016x}"
    assert splits.near_duplicate_pairs([a, b], 2) == [(0, 1)]
    assert splits.near_duplicate_pairs([a, b], 1) == []
    assert splits.near_duplicate_pairs([a], 6) == [] and splits.near_duplicate_pairs([a, "", None], 6) == []
    assert splits.near_duplicate_pairs(["", a, "", b], 2) == [(1, 3)]  # positions in the whole list
    # one bit apart at the first bit of the upper band: found through the lower band, which agrees exactly
    assert splits.near_duplicate_pairs([f"{0:016x}", f"{1 << 32:016x}"], 1) == [(0, 1)]
    assert splits._popcount64(np.array([0, 1, 2**64 - 1, 0x8000000000000001], np.uint64)).tolist() == [0, 1, 64, 2]


def _manifest(phashes, index=None, **columns):
    n = len(phashes)
    frame = pd.DataFrame({"path": [f"real/cam/{k:02d}.jpg" for k in range(n)], "label": "real", "source": "cam",
                          "phash": phashes, **columns})
    return frame if index is None else frame.set_axis(index)


def test_groups_honour_the_distance_and_keep_the_manifest_index():
    base = "0123456789abcdef"
    five_off = f"{_flip(int(base, 16), [1, 9, 20, 40, 60]):016x}"
    frame = _manifest([base, five_off, "ffffffffffffffff"], index=[10, 20, 30])
    loose, strict = splits.assign_groups(frame, max_distance=6), splits.assign_groups(frame, max_distance=3)
    assert loose.name == strict.name == "group" and loose.index.tolist() == [10, 20, 30]
    assert loose.tolist() == [frame.path.iloc[0]] * 2 + [frame.path.iloc[2]]  # named by the first member's path
    assert strict.tolist() == frame.path.tolist()
    split = splits.split_manifest(frame, fractions=(0.4, 0.3, 0.3), max_distance=3)
    assert split.group.nunique() == 3
    assert list(split.columns) == [*frame.columns, "group", "split"] and split.index.tolist() == [0, 1, 2]
    assert splits.split_manifest(frame, fractions=(0.4, 0.3, 0.3)).group.nunique() == 2
    with pytest.raises(ValueError, match=r"sum to 1, got \(0.5, 0.5, 0.5\)"):
        splits.split_manifest(frame, fractions=(0.5, 0.5, 0.5))


def test_the_documented_defaults_are_distance_6_and_seed_42():
    base = "0123456789abcdef"
    frame = _manifest([base, f"{_flip(int(base, 16), range(0, 60, 10)):016x}",  # 6 bits apart: one group
                       "fedcba9876543210", f"{_flip(0xfedcba9876543210, range(0, 63, 9)):016x}"])  # 7 apart: two
    assert splits.near_duplicate_pairs(frame.phash.tolist()) == [(0, 1)]
    assert splits.assign_groups(frame).tolist() == [frame.path[0], frame.path[0], frame.path[2], frame.path[3]]
    pd.testing.assert_frame_equal(splits.split_manifest(frame), splits.split_manifest(frame, seed=42, max_distance=6))
    assert splits.split_manifest(frame).group.nunique() == 3
    many = _manifest([""] * 20)  # no hashes: 20 singleton groups
    by_default = splits.split_manifest(many, fractions=(0.5, 0.25, 0.25))
    assert (by_default.split == splits.split_manifest(many, (0.5, 0.25, 0.25), seed=42).split).all()
    assert (by_default.split != splits.split_manifest(many, (0.5, 0.25, 0.25), seed=43).split).any()
    assert (splits.subsample(by_default, "train", 5).path == splits.subsample(by_default, "train", 5, seed=42).path).all()


def _midpoint_rule(groups: list[str], sizes: dict[str, int], fractions, seed: int) -> dict[str, str]:
    """The documented rule, written out: groups in the order of sha256("<seed>:<group>"), each to the first
    split whose cumulative target lies strictly above the group's midpoint (a midpoint on a target moves on)."""
    ordered = sorted(groups, key=lambda g: hashlib.sha256(f"{seed}:{g}".encode()).hexdigest())
    total, filled, out = sum(sizes.values()), 0, {}
    targets = [sum(fractions[:k + 1]) * total for k in range(3)]
    for group in ordered:
        middle = filled + sizes[group] / 2
        out[group] = splits.SPLITS[min(sum(t <= middle for t in targets), 2)]
        filled += sizes[group]
    return out


@pytest.mark.parametrize("seed", [0, 1, 42])
def test_pairs_fill_the_splits_by_their_midpoints_with_ties_moving_on(seed):
    """Five pairs (ten images) at 50/30/20%: targets 5, 8 and 10; the midpoints are 1, 3, 5, 7 and 9, and the
    one on 5 goes to validation, so the split is 4 / 4 / 2 images, whatever the order the seed gives."""
    frame = pd.DataFrame({"path": [f"p{k}.jpg" for k in range(10)], "label": "real", "source": "cam",
                          "pair_id": [f"pair{k // 2}" for k in range(10)]})
    split = splits.split_manifest(frame, fractions=(0.5, 0.3, 0.2), seed=seed)
    expected = _midpoint_rule(sorted(set(split.group)), split.group.value_counts().to_dict(), (0.5, 0.3, 0.2), seed)
    assert dict(zip(split.group, split.split)) == expected
    assert split.split.value_counts().to_dict() == {"train": 4, "val": 4, "test": 2}


def test_strata_are_split_alone_and_by_their_own_counts():
    """Two sources of different sizes: each is split by its own targets (the oracle per stratum)."""
    rows = [(f"real/a/{k:02d}.jpg", "real", "a") for k in range(7)] + [(f"fake/b/{k:02d}.jpg", "fake", "b")
                                                                        for k in range(13)]
    frame = pd.DataFrame(rows, columns=["path", "label", "source"])
    split = splits.split_manifest(frame, fractions=(0.6, 0.2, 0.2), seed=3)
    for source, members in split.groupby("source"):
        expected = _midpoint_rule(members.path.tolist(), dict.fromkeys(members.path, 1), (0.6, 0.2, 0.2), 3)
        assert dict(zip(members.path, members.split)) == expected, source


def test_the_leakage_audit_honours_the_distance_and_names_both_splits():
    base = "0123456789abcdef"
    five_off = f"{_flip(int(base, 16), [1, 9, 20, 40, 60]):016x}"
    frame = pd.DataFrame({"path": ["a", "b", "c", "d", "e"], "phash": [base, five_off, "", "", ""],
                          "split": ["train", "test", "train", "train", "val"],
                          "pair_id": ["", "", "g", "g", "g"]})  # no sha256 column: pairs are still checked
    report = splits.leakage_report(frame, max_distance=6)
    assert report.to_dict("records") == [
        dict(kind="near-duplicate", path_a="a", split_a="train", path_b="b", split_b="test"),
        dict(kind="generated pair", path_a="c", split_a="train", path_b="e", split_b="val")]
    strict = splits.leakage_report(frame, max_distance=3)
    assert strict.kind.tolist() == ["generated pair"]
    clean = splits.leakage_report(frame.assign(split="train"))
    assert clean.empty and list(clean.columns) == ["kind", "path_a", "split_a", "path_b", "split_b"]


def test_subsample_is_the_seeded_order_per_stratum_and_saved_splits_read_back(tmp_path):
    rows = [(f"{label}/{source}/{k:02d}.jpg", label, source, "train" if k < 8 else "val")
            for label, source in (("real", "a"), ("fake", "b")) for k in range(10)]
    frame = pd.DataFrame(rows, columns=["path", "label", "source", "split"])
    picked = splits.subsample(frame, "train", 3)
    expected = sorted(path for source in ("a", "b") for path in sorted(
        frame[(frame.source == source) & (frame.split == "train")].path,
        key=lambda p: hashlib.sha256(f"42:{p}".encode()).hexdigest())[:3])
    assert picked.path.tolist() == expected and list(picked.columns) == list(frame.columns)
    assert picked.index.tolist() == list(range(6))
    assert splits.subsample(frame, "train", 3, seed=7).path.tolist() != expected
    everything = splits.subsample(frame, "val", None)
    assert everything.path.tolist() == frame[frame.split == "val"].path.tolist()
    assert everything.index.tolist() == [0, 1, 2, 3] and list(everything.columns) == list(frame.columns)
    path = tmp_path / "run" / "split.csv"
    splits.save_split(frame, path)
    splits.save_split(frame, path)  # the folder exists the second time
    pd.testing.assert_frame_equal(splits.load_split(path), frame)
