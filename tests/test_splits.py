"""Splits: deterministic, stratified, and no near-duplicate or pair across splits."""

from pathlib import Path

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


def test_every_source_gets_its_share_of_each_split():
    """Stratified by label *and* source: a small source next to a large one of the same label keeps 70/15/15."""
    rng = np.random.default_rng(0)
    rows = []
    for label, source, n in (("real", "big", 400), ("real", "small", 60), ("fake", "gan", 300), ("fake", "sd", 40)):
        for k in range(n):
            rows.append(dict(path=f"{label}/{source}/{k:04d}.jpg", label=label, source=source, sha256=f"{source}{k}",
                             phash=f"{int(rng.integers(0, 2**63)):016x}", pair_id=""))
    split = splits.split_manifest(pd.DataFrame(rows), seed=0)
    shares = pd.crosstab(split.source, split.split, normalize="index")
    for name, target in (("train", 0.70), ("val", 0.15), ("test", 0.15)):
        assert (shares[name] - target).abs().max() <= 0.05, shares


def _frame(rows):
    return pd.DataFrame(rows, columns=["path", "label", "source", "sha256", "phash", "split"])


def test_leakage_report_lists_exactly_the_crossing_pairs():
    rng = np.random.default_rng(3)
    base = int(rng.integers(0, 2**63))
    hashes = [base, base ^ 0b111111, base ^ (0b1111111 << 20)] + [int(v) for v in rng.integers(0, 2**63, 17)]
    hashes += [h ^ (1 << int(rng.integers(0, 64))) for h in hashes[3:8]]  # near-duplicates of five of them
    names = rng.choice(["train", "val", "test"], len(hashes))
    split = _frame([(f"real/a/{k:02d}.jpg", "real", "a", f"s{k}", f"{h:016x}", names[k]) for k, h in enumerate(hashes)]
                   + [("fake/b/x.jpg", "fake", "b", "s3", "", "test" if names[3] != "test" else "train")])
    report = splits.leakage_report(split)
    assert list(report.columns) == ["kind", "path_a", "split_a", "path_b", "split_b"]
    oracle = {(f"real/a/{i:02d}.jpg", names[i], f"real/a/{j:02d}.jpg", names[j])  # brute force, Python ints
              for i in range(len(hashes)) for j in range(i + 1, len(hashes))
              if bin(hashes[i] ^ hashes[j]).count("1") <= 6 and names[i] != names[j]}
    oracle.add(("real/a/03.jpg", names[3], "fake/b/x.jpg", split.split.iloc[-1]))  # same bytes, other split
    assert {tuple(r) for r in report.drop(columns="kind").itertuples(index=False)} == oracle and len(oracle) >= 3
    assert (report.kind == "identical file").sum() == 1 and (report.kind == "near-duplicate").sum() == len(oracle) - 1
    boundary = _frame([("a", "real", "a", "1", f"{base:016x}", "train"),
                       ("b", "real", "a", "2", f"{base ^ 0b111111:016x}", "val"),      # 6 bits from a
                       ("c", "real", "a", "3", f"{base ^ 0b1111111:016x}", "test")])   # 7 from a, 1 from b
    assert {(r.path_a, r.path_b) for r in splits.leakage_report(boundary).itertuples()} == {("a", "b"), ("b", "c")}
    assert splits.leakage_report(split.assign(split="train")).empty  # nothing crosses inside one split
    # a real face and the fake made from it (one pair_id) in different splits; a pair inside one split is fine
    paired = _frame([("real/r/1.jpg", "real", "r", "1", "", "train"), ("fake/g/1.jpg", "fake", "g", "2", "", "test"),
                     ("real/r/2.jpg", "real", "r", "3", "", "val"), ("fake/g/2.jpg", "fake", "g", "4", "", "val")])
    paired["pair_id"] = ["p1", "p1", "p2", "p2"]
    report = splits.leakage_report(paired)
    assert report.values.tolist() == [["generated pair", "real/r/1.jpg", "train", "fake/g/1.jpg", "test"]]


def test_saved_split_reads_back_identically_with_hash_strings_kept():
    import tempfile

    split = _frame([("real/a/0.jpg", "real", "a", "00e1", "0000000000000123", "train"),  # hashes that look like numbers
                    ("fake/b/1.jpg", "fake", "b", "1234", "0000000000000456", "val")]).assign(pair_id=["", "p1"])
    with tempfile.TemporaryDirectory() as folder:
        target = Path(folder) / "run" / "deep" / "split.csv"
        assert splits.save_split(split, target) == target
        assert target.read_text().splitlines()[0] == ",".join(split.columns)  # no index column
        loaded = splits.load_split(target)
    pd.testing.assert_frame_equal(loaded, split)  # read back as text: leading zeros kept, "00e1" is not 0.0


def test_subsample_takes_the_same_seeded_rows_per_label_and_source():
    rows = [(f"{label}/{source}/{k:02d}.jpg", label, source, f"{source}{k}", "", split)
            for label, source in (("real", "a"), ("fake", "b")) for k in range(12)
            for split in (["train"] if k < 10 else ["val"])]
    frame = _frame(rows)
    picked = splits.subsample(frame, "train", 4, seed=1)
    assert picked.groupby("source").size().to_dict() == {"a": 4, "b": 4} and (picked.split == "train").all()
    assert picked.path.tolist() == sorted(picked.path)  # in path order
    order = frame[frame.split == "train"].assign(key=lambda f: f.path.map(lambda p: splits._seeded_key(p, 1)))
    expected = order.sort_values("key").groupby("source").head(4).path
    assert set(picked.path) == set(expected)
    assert len(splits.subsample(frame, "train", None)) == 20 and len(splits.subsample(frame, "val", 0)) == 4


def test_split_summary_counts_every_cell():
    frame = _frame([("r/a/0", "real", "a", "", "", "train"), ("r/a/1", "real", "a", "", "", "train"),
                    ("r/a/2", "real", "a", "", "", "test"), ("f/b/3", "fake", "b", "", "", "val")])
    table = splits.split_summary(frame).set_index(["label", "source"])
    assert list(table.columns) == ["train", "val", "test"]
    assert table.loc[("real", "a")].tolist() == [2, 0, 1] and table.loc[("fake", "b")].tolist() == [0, 1, 0]


def test_near_duplicates_at_the_distance_limit_are_all_found():
    """Pairs exactly 5 or 6 bits apart with the bits spread over the bands: only one band agrees."""
    rng = np.random.default_rng(11)
    edges = np.linspace(0, 64, 8).astype(int)  # the 7 bands used for a distance of 6
    base = [int(v) for v in rng.integers(0, 2**63, 150)]
    near = []
    for value in base:
        flipped = value
        for band in rng.choice(7, int(rng.integers(5, 7)), replace=False):
            flipped ^= 1 << int(rng.integers(edges[band], edges[band + 1]))
        near.append(flipped)
    hashes = [f"{v:016x}" for v in base + near]
    values = base + near
    brute = {(i, j) for i in range(len(values)) for j in range(i + 1, len(values))
             if bin(values[i] ^ values[j]).count("1") <= 6}
    assert len(brute) >= 150 and set(splits.near_duplicate_pairs(hashes, 6)) == brute
    assert set(splits.near_duplicate_pairs(hashes[:2] + hashes[150:152], 6)) == {(0, 2), (1, 3)}
