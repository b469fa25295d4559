"""Splits: deterministic, stratified, and no near-duplicate or pair across splits."""

import numpy as np
import pandas as pd
from conftest import smooth_image, write_jpeg

from helpers import data, splits


def _tree_with_duplicates(root):
    seed = 1000
    for label, sources in (("real", ("r1", "r2")), ("fake", ("f1", "f2"))):
        for source in sources:
            for k in range(30):
                seed += 1
                image = smooth_image(seed, 96)
                write_jpeg(root / label / source / f"{k:02d}.jpg", image)
                if k % 5 == 0:  # a re-encoded, slightly brightened near-duplicate
                    near = np.clip(image.astype(int) + 4, 0, 255).astype(np.uint8)
                    write_jpeg(root / label / source / f"{k:02d}_copy.jpg", near, quality=60)
    return data.scan_folder(root, progress=False)


def test_near_duplicate_pairs_match_brute_force():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 2**63, 300, dtype=np.int64).astype(np.uint64)
    flips = rng.integers(0, 64, (300, 3))
    near = base.copy()
    for i in range(0, 300, 3):
        for bit in flips[i, : rng.integers(1, 4)]:
            near[i] ^= np.uint64(1) << np.uint64(bit)
    hashes = [f"{int(v):016x}" for v in np.concatenate([base, near])]
    values = [int(h, 16) for h in hashes]
    brute = {(i, j) for i in range(len(values)) for j in range(i + 1, len(values))
             if bin(values[i] ^ values[j]).count("1") <= 6}
    assert set(splits.near_duplicate_pairs(hashes, 6)) == brute
    assert len(brute) >= 100


def test_split_is_deterministic_and_independent_of_row_order(tmp_path):
    manifest = _tree_with_duplicates(tmp_path / "faces")
    first = splits.split_manifest(manifest, seed=3)
    shuffled = splits.split_manifest(manifest.sample(frac=1, random_state=1), seed=3)
    pd.testing.assert_frame_equal(first, shuffled)
    other_seed = splits.split_manifest(manifest, seed=4)
    assert not first["split"].equals(other_seed["split"])


def test_near_duplicates_stay_together_and_strata_are_balanced(tmp_path):
    manifest = _tree_with_duplicates(tmp_path / "faces")
    split = splits.split_manifest(manifest, seed=0)
    for path in split.loc[split["path"].str.contains("_copy"), "path"]:
        original = path.replace("_copy", "")
        a = split.loc[split["path"] == path].iloc[0]
        b = split.loc[split["path"] == original].iloc[0]
        assert a["group"] == b["group"] and a["split"] == b["split"]
    assert split.groupby("group")["split"].nunique().max() == 1
    assert splits.leakage_report(split).empty
    counts = splits.split_summary(split).set_index(["label", "source"])
    assert (counts[["train", "val", "test"]] > 0).all().all()
    share = counts["train"] / counts.sum(axis=1)
    assert share.between(0.55, 0.85).all()


def test_leakage_report_catches_a_moved_duplicate(tmp_path):
    manifest = _tree_with_duplicates(tmp_path / "faces")
    split = splits.split_manifest(manifest, seed=0)
    copy_row = split.index[split["path"] == "real/r1/00_copy.jpg"][0]
    split.loc[copy_row, "split"] = "test" if split.loc[copy_row, "split"] != "test" else "train"
    report = splits.leakage_report(split)
    assert set(report["path_a"]).union(report["path_b"]) >= {"real/r1/00.jpg", "real/r1/00_copy.jpg"}


def test_pairs_and_identical_files_share_a_group(tmp_path):
    rows = []
    for k in range(40):
        rows.append(dict(path=f"real/r/{k}.jpg", label="real", source="r", sha256=f"s{k}",
                         phash=f"{k * 0x0F0F0F0F0F0F:016x}"[-16:], pair_id=f"p{k}"))
        rows.append(dict(path=f"fake/g/{k}.jpg", label="fake", source="g", sha256=f"t{k}",
                         phash=f"{(k * 0x3333) ^ 0xFFFF000000000000:016x}"[-16:], pair_id=f"p{k}"))
    rows.append(dict(path="real/r/dup.jpg", label="real", source="r", sha256="s7", phash="", pair_id=""))
    split = splits.split_manifest(pd.DataFrame(rows), seed=0)
    by_path = split.set_index("path")
    for k in range(40):
        assert by_path.at[f"real/r/{k}.jpg", "split"] == by_path.at[f"fake/g/{k}.jpg", "split"]
    assert by_path.at["real/r/dup.jpg", "group"] == by_path.at["real/r/7.jpg", "group"]


def test_save_and_load_round_trip_and_subsample(tmp_path):
    manifest = _tree_with_duplicates(tmp_path / "faces")
    split = splits.split_manifest(manifest, seed=0)
    path = splits.save_split(split, tmp_path / "run" / "split.csv")
    loaded = splits.load_split(path)
    assert loaded["path"].tolist() == split["path"].tolist()
    assert loaded["phash"].tolist() == split["phash"].tolist()
    small = splits.subsample(loaded, "train", 5, seed=1)
    assert small.groupby("source").size().le(5).all() and (small["split"] == "train").all()
    assert small.equals(splits.subsample(loaded, "train", 5, seed=1))
