"""Numbers a user reads, checked against independent oracles: scikit-learn, scipy, Pillow, brute force
or a hand-worked example, with values put on the boundaries (ties at thresholds, one-class groups).

Each test names the plausible one-line bug it exists to catch; none compares a function with itself.
"""

import numpy as np
import pandas as pd
import pytest
from oracles import bootstrap_interval
from PIL import Image

from helpers import data, evaluate, perturb, served, splits, stats


def _scored_frame():
    """Two real and two fake sources with known scores; some scores sit exactly on 0.5."""
    frame = pd.DataFrame({"label": ["real"] * 6 + ["fake"] * 6,
                          "source": ["ra"] * 3 + ["rb"] * 3 + ["fa"] * 3 + ["fb"] * 3})
    scores = np.array([0.1, 0.5, 0.2,  0.5, 0.7, 0.3,  0.5, 0.9, 0.4,  0.8, 0.6, 0.95])
    return frame, scores


def test_per_source_rates_count_scores_on_the_threshold_as_fake():
    """Bug caught: a rate that drops scores lying exactly on the threshold (> instead of >=).
    Hand-worked at threshold 0.5: ra 1 of 3 called fake, rb 2 of 3, fa 2 of 3, fb 3 of 3."""
    frame, scores = _scored_frame()
    table = evaluate.per_source_metrics(frame, scores, 0.5, n_boot=20).set_index("source")
    assert table.rate.to_dict() == pytest.approx({"ra": 1 / 3, "rb": 2 / 3, "fa": 2 / 3, "fb": 1.0})
    assert table.accuracy.to_dict() == pytest.approx({"ra": 2 / 3, "rb": 1 / 3, "fa": 2 / 3, "fb": 1.0})
    # every fb image is right, so any resample of its own rows is too: its interval is [1, 1]
    assert (table.at["fb", "accuracy_lo"], table.at["fb", "accuracy_hi"]) == (1.0, 1.0)
    metrics = stats.binary_metrics((frame.label == "fake").astype(int).to_numpy(), scores, 0.5)
    assert (metrics["fp"], metrics["tp"]) == (3, 5)  # 0.5 twice among reals, once among fakes: all "fake"


def test_per_source_auc_and_its_interval_use_this_source_against_the_other_class():
    """Bug caught: a source's interval computed on the wrong rows (this source plus its own class, or
    everything). Oracle: scikit-learn's AUC of the source against the other class, and a percentile
    bootstrap written out here on exactly those rows."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(5)
    frame = pd.DataFrame({"label": ["real"] * 60 + ["fake"] * 60,
                          "source": ["ra"] * 30 + ["rb"] * 30 + ["fa"] * 30 + ["fb"] * 30})
    scores = np.concatenate([rng.beta(2, 5, 30), rng.beta(3, 3, 30), rng.beta(5, 2, 30), rng.beta(3, 3, 30)])
    table = evaluate.per_source_metrics(frame, scores, 0.5, n_boot=400, seed=0).set_index("source")
    y = (frame.label == "fake").to_numpy().astype(int)
    for source in ("ra", "rb", "fa", "fb"):
        own = (frame.source == source).to_numpy()
        rows = own | (y != y[own][0])
        assert table.at[source, "auc"] == pytest.approx(roc_auc_score(y[rows], scores[rows]))
        assert table.at[source, "auc_lo"] <= table.at[source, "auc"] <= table.at[source, "auc_hi"]
        draws = []
        boot = np.random.default_rng(123)
        ys, ss = y[rows], scores[rows]
        for _ in range(400):
            pick = boot.integers(0, len(ys), len(ys))
            if len(set(ys[pick])) == 2:
                draws.append(roc_auc_score(ys[pick], ss[pick]))
        low, high = np.percentile(draws, [2.5, 97.5])
        assert table.at[source, "auc_lo"] == pytest.approx(low, abs=0.04)  # another bootstrap, same rows
        assert table.at[source, "auc_hi"] == pytest.approx(high, abs=0.04)
    assert table.loc["rb", "auc"] < table.loc["ra", "auc"]  # rb overlaps the fakes: a lower AUC


def test_bootstrap_interval_is_the_textbook_stratified_percentile_bootstrap():
    """Bug caught: a rank-sum AUC with the wrong offset, accuracy that drops scores on the threshold, the
    wrong tail share. Oracle: the same draws (negatives then positives, each resampled within its class
    from one seeded generator, as documented) scored replicate by replicate with scikit-learn, and NumPy's
    percentiles at (1 - level) / 2 and its complement."""
    y = np.array([0] * 7 + [1] * 5)
    scores = np.array([0.1, 0.5, 0.2, 0.5, 0.7, 0.3, 0.45, 0.5, 0.9, 0.4, 0.8, 0.5])  # ties, some on 0.5
    for statistic, level in (("auc", 0.95), ("auc", 0.8), ("accuracy", 0.95), ("accuracy", 0.5)):
        expected = bootstrap_interval(y, scores, n_boot=300, seed=11, statistic=statistic, threshold=0.5,
                                      level=level)
        got = stats.bootstrap_ci(y, scores, statistic, threshold=0.5, n_boot=300, level=level, seed=11)
        assert got == pytest.approx(expected, abs=1e-12), (statistic, level)


def test_wilson_interval_matches_statsmodels_formula_and_the_edges():
    """Oracle: the Wilson score interval written from its formula with scipy's normal quantile."""
    from scipy.stats import norm

    z = norm.ppf(0.975)
    for hits, total in ((0, 10), (10, 10), (3, 7), (50, 100), (1, 1)):
        p = hits / total
        centre = (p + z * z / (2 * total)) / (1 + z * z / total)
        half = z / (1 + z * z / total) * np.sqrt(p * (1 - p) / total + z * z / (4 * total * total))
        low, high = stats.wilson_ci(hits, total)
        assert low == pytest.approx(max(0.0, min(p, centre - half)), abs=1e-12)
        assert high == pytest.approx(min(1.0, max(p, centre + half)), abs=1e-12)
    assert all(np.isnan(stats.wilson_ci(0, 0)))


def test_validation_thresholds_are_set_on_validation_rows_only():
    """Bug caught: a threshold chosen on test scores. Validation and test are built so the two choices
    differ: the reported threshold must be validation's (Youden's J by brute force on validation)."""
    y_val = np.array([0, 0, 0, 1, 1, 1])
    s_val = np.array([0.1, 0.2, 0.6, 0.3, 0.7, 0.8])
    y_test = np.array([0, 0, 0, 1, 1, 1])
    s_test = np.array([0.4, 0.45, 0.5, 0.2, 0.25, 0.9])
    frame = lambda y: pd.DataFrame({"label": np.where(y == 1, "fake", "real"), "source": "s"})  # noqa: E731
    result = evaluate.evaluate_scores("m", frame(y_val), s_val, frame(y_test), s_test, n_boot=20)
    best = max(np.unique(s_val), key=lambda t: ((s_val >= t)[y_val == 1].mean() - (s_val >= t)[y_val == 0].mean(), -t))
    on_test = max(np.unique(s_test), key=lambda t: (s_test >= t)[y_test == 1].mean() - (s_test >= t)[y_test == 0].mean())
    assert best != on_test and result["threshold"] == pytest.approx(best)
    assert result["test"]["threshold"] == pytest.approx(best)


def test_fpr_controlled_threshold_by_brute_force_with_ties():
    """Oracle: the lowest candidate threshold (scores and just above them) with every real source's
    false-positive rate at most the bound, found by trying each one."""
    rng = np.random.default_rng(2)
    for case in range(20):
        frame = pd.DataFrame({"label": ["real"] * 24 + ["fake"] * 8,
                              "source": ["a"] * 10 + ["b"] * 14 + ["g"] * 8})
        scores = np.round(rng.random(32), 1)  # many ties
        bound = (0.05, 0.1, 0.2, 0.3)[case % 4]
        chosen = stats.fpr_controlled_threshold(frame, scores, bound)
        reals = frame.label == "real"
        sources = frame.source.to_numpy()

        def worst(t, scores=scores, sources=sources):
            return max((scores[sources == s] >= t).mean() for s in ("a", "b"))

        candidates = sorted(set(scores[reals.to_numpy()]) | {np.nextafter(v, 2) for v in scores} | {0.0})
        lowest = min(t for t in candidates if worst(t) <= bound)
        assert worst(chosen) <= bound and chosen == pytest.approx(lowest), case


def test_served_rates_are_counted_at_the_fake_threshold_not_the_real_one():
    """Bug caught: per-source rates counted at the other of the two thresholds. Hand-worked: fake at
    >= 0.7, real below 0.4; ra's 0.5 is unsure, not a false positive; fb's 0.6 is unsure, not detected."""
    frame, scores = _scored_frame()
    point = served.OperatingPoint(fake_threshold=0.7, real_threshold=0.4)
    answers = served.answer(point, scores)
    rates = served.answer_rates(frame, answers, scores, point).set_index("source")
    assert rates.rate.to_dict() == pytest.approx({"ra": 0.0, "rb": 1 / 3, "fa": 1 / 3, "fb": 2 / 3})
    assert rates.unsure.to_dict() == pytest.approx({"ra": 1 / 3, "rb": 1 / 3, "fa": 2 / 3, "fb": 1 / 3})
    assert rates.called_real.to_dict() == pytest.approx({"ra": 2 / 3, "rb": 1 / 3, "fa": 0.0, "fb": 0.0})
    assert rates.definite_accuracy.to_dict() == pytest.approx({"ra": 1.0, "rb": 0.5, "fa": 1.0, "fb": 1.0})
    assert answers.labels.tolist()[:3] == ["real", "unsure", "real"]


def test_resize_keeps_channel_order_and_matches_pillow():
    """Bug caught: a resize that returns BGR. Oracle: Pillow's own bilinear resize on an image whose red
    and blue channels differ everywhere."""
    rng = np.random.default_rng(0)
    image = np.zeros((40, 60, 3), np.uint8)
    image[..., 0] = 250  # red
    image[..., 2] = rng.integers(0, 40, (40, 60))  # a little blue
    resized = data.resize_square(image, 24)
    expected = np.asarray(Image.fromarray(image).resize((24, 24), Image.Resampling.BILINEAR))
    assert np.array_equal(resized, expected)
    assert resized[..., 0].min() > 200 and resized[..., 2].max() < 60  # red stays red


def test_resize_of_a_float_map_is_pillow_bilinear_in_float():
    """A Grad-CAM heatmap (float, [0, 1]) is resized in 32-bit float, bilinear, not quantised to 8 bits."""
    heat = np.random.default_rng(3).random((7, 9))
    got = data.resize_square(heat, 20)
    expected = np.asarray(Image.fromarray(heat.astype(np.float32), mode="F").resize((20, 20), Image.Resampling.BILINEAR))
    assert got.shape == (20, 20) and got.dtype == np.float32 and np.array_equal(got, expected)
    assert not np.array_equal(got, np.asarray(Image.fromarray(heat.astype(np.float32)).resize((20, 20))))  # not bicubic
    assert got.min() >= 0.0 and got.max() <= 1.0 and len(np.unique(got)) > 256  # not 8-bit steps


def test_the_loader_resize_keeps_channel_order(tmp_path):
    image = np.zeros((50, 50, 3), np.uint8)
    image[..., 0] = 240
    Image.fromarray(image).save(tmp_path / "red.png")
    loaded = data.load_image(tmp_path / "red.png", size=20).image
    assert loaded[..., 0].min() == 240 and loaded[..., 1:].max() == 0


def test_augmentation_mirrors_left_right_and_keeps_the_top_at_the_top():
    """Bug caught: a flip upside down instead of a mirror. A picture bright at the top and red on the left:
    every augmented copy keeps the bright rows on top (any crop, blur or JPEG), and the mirrored ones
    move the red to the right."""
    image = np.zeros((64, 64, 3), np.uint8)
    image[:16] = 200            # bright top
    image[:, :16, 0] = 255      # red left edge
    mirrored = 0
    for seed in range(40):
        copy = perturb.augment(image, seed).astype(int)
        third = copy.shape[0] // 3
        assert copy[:third].mean() > copy[-third:].mean() + 40, seed
        left, right = copy[:, : copy.shape[1] // 5, 0].mean(), copy[:, -copy.shape[1] // 5:, 0].mean()
        mirrored += right > left
    assert 10 <= mirrored <= 30  # about half are mirrored


def test_a_seed_changes_the_sample_and_the_same_seed_repeats_it(face_tree):
    """Bug caught: a sampling seed ignored in favour of a constant."""
    manifest = data.usable(data.scan_folder(face_tree, progress=False))
    split = splits.split_manifest(manifest, seed=0)
    picks = {seed: set(splits.subsample(split, "train", 3, seed=seed).path) for seed in (1, 2, 3)}
    assert picks[1] == set(splits.subsample(split, "train", 3, seed=1).path)
    assert len({frozenset(p) for p in picks.values()}) == 3
    listed = {seed: set(data.list_image_files(face_tree, limit_per_source=4, seed=seed).path) for seed in (1, 2)}
    assert listed[1] != listed[2]
    other_split = splits.split_manifest(manifest, seed=1)
    assert (split.set_index("path").split != other_split.set_index("path").split).any()


def test_a_copy_and_its_original_land_on_one_side_even_among_unhashed_rows():
    """Bug caught: near-duplicate pairs indexed by position among hashed rows only. Rows without a
    perceptual hash sit between a photo and its near-copy: the pair must still be found, grouped and
    kept on one side, and the leakage audit must see a pair forced across."""
    base = int("f0f0f0f0aaaa5555", 16)
    near = base ^ 0b101  # 2 bits apart
    rows = [dict(path=f"real/s/{k}.jpg", label="real", source="s", sha256=f"{k:064x}", phash="", pair_id="")
            for k in range(6)]
    rows[1]["phash"], rows[4]["phash"] = f"{base:016x}", f"{near:016x}"
    rows += [dict(path=f"real/s/x{k}.jpg", label="real", source="s", sha256=f"{k + 100:064x}",
                  phash=f"{(k * 0x9E3779B97F4A7C15) & (2**64 - 1):016x}", pair_id="") for k in range(20)]
    manifest = pd.DataFrame(rows)
    assert splits.near_duplicate_pairs(manifest.phash.tolist()) == [(1, 4)]
    groups = splits.assign_groups(manifest)
    assert groups[1] == groups[4] and groups[0] != groups[1]
    split = splits.split_manifest(manifest, seed=0)
    by_path = split.set_index("path").split
    assert by_path["real/s/1.jpg"] == by_path["real/s/4.jpg"]
    forced = split.copy()
    forced.loc[forced.path == "real/s/4.jpg", "split"] = "test" if by_path["real/s/1.jpg"] != "test" else "train"
    assert len(splits.leakage_report(forced)) >= 1


def test_coverage_rule_with_a_one_class_source_and_an_empty_band():
    """Boundaries: a source whose scores are all one value, and classes that separate perfectly."""
    frame = pd.DataFrame({"label": ["real"] * 5 + ["fake"] * 5, "source": ["r"] * 5 + ["f"] * 5})
    scores = np.array([0.3] * 5 + [0.3, 0.8, 0.8, 0.9, 0.9])
    point = served.choose_operating_point(frame, scores, rule="coverage", min_definite_accuracy=0.95)
    verdicts = point.verdicts(scores)
    assert verdicts[5] != "fake" or (verdicts[:5] == "fake").sum() == 0
    assert set(verdicts[6:]) == {"fake"} and set(verdicts[:5]) <= {"real", "unsure"}
    real = verdicts[:5]
    assert (real == "real").all() or (real == "unsure").all()  # the five equal scores share one answer


def test_a_balanced_sample_follows_its_seed():
    """Bug caught: the balanced sample's draw seeded with a constant."""
    from helpers import balance

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"path": [f"p{k}" for k in range(400)], "glasses": rng.choice(["yes", "no"], 400),
                          "gender": rng.choice(["female", "male"], 400)})
    draws = {seed: set(balance.balanced_sample(frame, ["glasses", "gender"], 40, seed=seed).path) for seed in (1, 2)}
    assert draws[1] == set(balance.balanced_sample(frame, ["glasses", "gender"], 40, seed=1).path)
    assert draws[1] != draws[2] and len(draws[1]) == len(draws[2]) == 40
