"""Property-based tests (Hypothesis): invariants a wrong refactor would break, on generated data.

Splits: groups never straddle splits, every source gets its share, the result does not depend
on row order. Thresholds: chosen from validation alone, the accuracy rule is optimal, moving
scores by a monotone map moves the threshold with them. Bootstrap intervals: contain the
point estimate and shrink with more data. Loader: any accepted image is 8-bit RGB of the
requested size; any rejected file has a reason.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from sklearn.metrics import roc_auc_score

from helpers import data, evaluate, splits, stats

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def manifests(draw):
    """Manifests of 2-4 sources of 20-80 images, with near-duplicate groups and real/fake pairs."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n_sources = draw(st.integers(2, 4))
    rows = []
    for s in range(n_sources):
        label = "real" if s % 2 == 0 else "fake"
        for k in range(draw(st.integers(20, 80))):
            rows.append(dict(path=f"{label}/src{s}/{k:03d}.jpg", label=label, source=f"src{s}",
                             sha256=f"{s}-{k}", phash=f"{int(rng.integers(0, 2**63)):016x}", pair_id=""))
    frame = pd.DataFrame(rows)
    for _ in range(draw(st.integers(0, 6))):  # identical files: the same sha256 inside one source
        i, j = rng.choice(frame.index[frame.source == "src0"], 2, replace=False)
        frame.loc[j, "sha256"] = frame.loc[i, "sha256"]
    reals, fakes = frame.index[frame.label == "real"], frame.index[frame.label == "fake"]
    for p in range(draw(st.integers(0, 5))):  # a real photo and the fake made from it
        frame.loc[rng.choice(reals), "pair_id"] = frame.loc[rng.choice(fakes), "pair_id"] = f"pair{p}"
    return frame


@FAST
@given(manifests(), st.integers(0, 1000))
def test_split_groups_never_straddle_and_row_order_does_not_matter(manifest, seed):
    split = splits.split_manifest(manifest, seed=seed)
    assert split.groupby("group")["split"].nunique().max() == 1
    assert split.groupby("sha256")["split"].nunique().max() == 1
    paired = split[split.pair_id != ""]
    assert (paired.groupby("pair_id")["split"].nunique() == 1).all()
    shuffled = splits.split_manifest(manifest.sample(frac=1, random_state=seed), seed=seed)
    pd.testing.assert_frame_equal(split, shuffled)


@FAST
@given(manifests(), st.integers(0, 1000))
def test_every_source_is_split_near_its_target_share(manifest, seed):
    split = splits.split_manifest(manifest, seed=seed)
    groups = split.groupby("group").size()
    for source, rows in split.groupby("source"):
        # A stratum is filled group by group in a fixed order: a source misses its target by at most
        # the largest groups at the two boundaries it crosses (plus rounding of one image).
        slack = (2 * groups[rows.group.unique()].max() + 1) / len(rows)
        shares = rows["split"].value_counts(normalize=True)
        for name, target in (("train", 0.7), ("val", 0.15), ("test", 0.15)):
            assert abs(shares.get(name, 0.0) - target) <= slack + 1e-9, (source, name, shares.to_dict())


@st.composite
def scored_validation(draw):
    n = draw(st.integers(10, 200))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    y = rng.integers(0, 2, n)
    y[:2] = [0, 1]  # both classes present
    s = np.round(rng.uniform(size=n) * 0.6 + 0.4 * y * rng.uniform(size=n), 3)
    return y, s


@FAST
@given(scored_validation())
def test_accuracy_threshold_is_optimal_among_all_cut_points(validation):
    y, s = validation
    t = stats.choose_threshold(y, s, "accuracy")
    best = max(np.mean((s >= c) == y) for c in np.unique(s))
    assert np.mean((s >= t) == y) == best


@FAST
@given(scored_validation())
def test_thresholds_follow_a_monotone_change_of_scores(validation):
    y, s = validation
    for method in ("youden", "accuracy"):
        t = stats.choose_threshold(y, s, method)
        squashed = stats.choose_threshold(y, s**2, method)  # the same ranking, other numbers
        assert np.array_equal(s >= t, s**2 >= squashed)


@FAST
@given(scored_validation(), st.integers(0, 2**16))
def test_threshold_depends_on_validation_data_only(validation, seed):
    """Metrics computed on different test data never change the threshold chosen on validation."""
    y, s = validation
    frame = pd.DataFrame({"label": np.where(y == 1, "fake", "real"), "source": np.where(y == 1, "g", "r")})
    rng = np.random.default_rng(seed)
    other = rng.uniform(size=len(y))
    first = evaluate.evaluate_scores("m", frame, s, frame, other, n_boot=10)
    second = evaluate.evaluate_scores("m", frame, s, frame, rng.uniform(size=len(y)), n_boot=10)
    assert first["threshold"] == second["threshold"] == stats.choose_threshold(y, s)


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**16), st.floats(0.3, 2.0))
def test_bootstrap_interval_contains_the_estimate_and_shrinks_with_n(seed, separation):
    rng = np.random.default_rng(seed)

    def sample(n):
        y = np.r_[0, 1, rng.integers(0, 2, n - 2)]
        return y, rng.normal(size=n) + separation * y

    y, s = sample(150)
    low, high = stats.bootstrap_ci(y, s, "auc", n_boot=200, seed=seed)
    assert low <= roc_auc_score(y, s) <= high
    y_big, s_big = sample(2400)
    big_low, big_high = stats.bootstrap_ci(y_big, s_big, "auc", n_boot=200, seed=seed)
    assert big_high - big_low < high - low  # 16x the data: about a quarter of the width


MODES = ["RGB", "RGBA", "L", "LA", "P", "CMYK", "I;16", "1"]


@st.composite
def image_files(draw):
    """An image file of any common mode and format, or its bytes cut short."""
    mode = draw(st.sampled_from(MODES))
    width, height = draw(st.integers(1, 90)), draw(st.integers(1, 90))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if mode == "I;16":
        image = Image.fromarray(rng.integers(0, 65536, (height, width), dtype=np.uint16))
    else:
        image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).convert(mode)
    formats = (["TIFF", "JPEG"] if mode == "CMYK" else ["PNG", "TIFF"] + (["JPEG"] if mode in ("RGB", "L") else []))
    fmt = draw(st.sampled_from(formats))
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    payload = buffer.getvalue()
    if draw(st.booleans()):
        payload = payload[: draw(st.integers(0, len(payload) - 1))]
    return payload, fmt.lower()


@settings(max_examples=60, deadline=None)
@given(image_files(), st.sampled_from([None, 16, 33]))
def test_loader_returns_rgb_uint8_of_the_asked_size_or_a_reason(tmp_path_factory, file, size):
    payload, suffix = file
    path = tmp_path_factory.mktemp("img") / f"x.{suffix}"
    path.write_bytes(payload)
    loaded = data.load_image(path, size=size)
    if loaded.ok:
        assert loaded.image.dtype == np.uint8 and loaded.image.ndim == 3 and loaded.image.shape[2] == 3
        if size:
            assert loaded.image.shape[:2] == (size, size)
        else:
            assert loaded.image.shape[:2] == (loaded.height, loaded.width)
    else:
        assert loaded.image is None and isinstance(loaded.error, str) and len(loaded.error) > 5
