"""Issue 7: perturbations, the feature bank, recipes and every generalization protocol."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from helpers import calibration, data, perturb, preprocess, protocols, splits


def test_perturbations_do_what_they_say():
    rng = np.random.default_rng(0)
    image = np.asarray(Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).resize((100, 80)))
    assert perturb.apply(image, "scale:0.5").shape == (40, 50, 3)
    assert perturb.apply(image, "scale:1.5").shape == (120, 150, 3)
    assert perturb.apply(image, "recode:64").shape == (64, 64, 3)
    noisy = np.clip(image + rng.normal(0, 20, image.shape), 0, 255).astype(np.uint8)
    assert np.abs(np.diff(perturb.apply(noisy, "blur:2").astype(float), axis=1)).mean() < \
        0.5 * np.abs(np.diff(noisy.astype(float), axis=1)).mean()
    assert not np.array_equal(perturb.apply(noisy, "jpeg:30"), noisy)
    first, again = perturb.apply(noisy, "augment:0", "a.jpg"), perturb.apply(noisy, "augment:0", "a.jpg")
    assert np.array_equal(first, again)  # seeded by path and copy
    copies = [perturb.apply(noisy, f"augment:{k}", "a.jpg") for k in range(6)]
    assert len({c.tobytes() for c in copies}) > 1
    for bad in ("jpeg", "sharpen:1", "jpeg:"):
        with pytest.raises(ValueError):
            perturb.parse(bad)
    # a "+" chain runs its steps in order (an upload re-encoded by a detector), every step checked first
    np.testing.assert_array_equal(perturb.apply(noisy, "jpeg:50+jpeg:95"), perturb.jpeg(perturb.jpeg(noisy, 50), 95))
    assert perturb.apply(image, "scale:0.5+recode:64").shape == (64, 64, 3)
    with pytest.raises(ValueError):
        perturb.apply(noisy, "jpeg:50+sharpen:1")
    assert perturb.then("jpeg:50", "jpeg:95") == "jpeg:50+jpeg:95"
    assert perturb.then("clean", "jpeg:95") == "jpeg:95" and perturb.then("blur:1", "") == "blur:1"
    assert perturb.then("clean", None) == "clean"


def test_perturbation_runs_before_the_resize(tmp_path):
    image = np.zeros((64, 64, 3), np.uint8)
    image[::2] = 255  # a one-pixel stripe pattern: halving the size first averages it to grey
    Image.fromarray(image).save(tmp_path / "stripes.png")
    plain = preprocess.load_for_model(tmp_path / "stripes.png", 64).image
    halved = preprocess.load_for_model(tmp_path / "stripes.png", 64, perturbation="scale:0.5").image
    assert plain.std() > 100 and halved.std() < 30


def test_calibration_helpers():
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 1, 20000)
    y = (rng.uniform(0, 1, 20000) < p).astype(int)
    assert calibration.expected_calibration_error(y, p) < 0.02
    logits = np.log(p / (1 - p))
    overconfident = 1 / (1 + np.exp(-3 * logits))
    assert calibration.expected_calibration_error(y, overconfident) > 0.05
    assert calibration.fit_temperature(y, overconfident) == pytest.approx(3.0, rel=0.1)


@pytest.fixture(scope="module")
def bank(tmp_path_factory):
    from conftest import make_face_tree

    root = make_face_tree(tmp_path_factory.mktemp("bank"))
    manifest = data.usable(data.scan_folder(root, progress=False))
    split = splits.split_manifest(manifest, fractions=(0.5, 0.25, 0.25), seed=0)
    return protocols.build_bank(split, root, 32, augment_copies=1, perturbations=("jpeg:50", "recode:48"),
                                batch_size=16, cache_dir=root.parent / "features")


def test_protocols_run_end_to_end_on_a_small_tree(bank, tmp_path):
    assert set(bank.arrays["train"]) == {"clean", "flipped", "augment:0"}
    assert {"jpeg:50", "jpeg:50|flipped", "recode:48"} <= set(bank.arrays["test"])
    report = protocols.Recipe("report", ["cam_a", "gan_a"], epochs=3)
    improved = protocols.Recipe("+ blur/JPEG", None, augment_copies=1, balanced=True, tta_flip=True, epochs=3)
    trained = protocols.train_recipe(improved, bank, tmp_path)
    assert 0 <= trained.threshold <= 1 and trained.val_auc > 0.5  # fakes are brighter: learnable
    # the threshold is Youden's J on validation, found by trying every validation score (not test's)
    y_val = (bank.frames["val"].label == "fake").to_numpy()
    val_scores = protocols.score(trained, bank, "val")

    def youden(t):
        return (val_scores[y_val] >= t).mean() - (val_scores[~y_val] >= t).mean()

    assert youden(trained.threshold) == pytest.approx(max(youden(t) for t in np.unique(val_scores)))
    narrow = protocols.train_recipe(report, bank, tmp_path)  # trained and thresholded on cam_a and gan_a only
    rows = bank.frames["val"].source.isin(["cam_a", "gan_a"]).to_numpy()
    own = protocols.score(narrow, bank, "val")[rows]
    assert narrow.threshold in set(own.tolist())  # one of its own validation rows' scores

    matrix = protocols.cross_source_matrix(report, {"a": ["cam_a", "gan_a"], "all": None},
                                           [(["cam_a"], "gan_a"), (["cam_b"], "gan_b")], bank, tmp_path, n_boot=20)
    assert len(matrix) == 4 and set(matrix.test_pair) == {"cam_a vs gan_a", "cam_b vs gan_b"}
    assert matrix.auc.between(0, 1).all() and (matrix.auc_lo <= matrix.auc_hi).all()

    logo = protocols.leave_one_generator_out(improved, bank, tmp_path, n_boot=20)
    assert logo.held_out.tolist() == ["gan_a", "gan_b"]

    from sklearn.metrics import roc_auc_score

    y_test = (bank.frames["test"].label == "fake").to_numpy()
    grid = protocols.robustness_grid(trained, bank, ("jpeg:50",), n_boot=20).set_index("perturbation")
    assert grid.index.tolist() == ["clean", "jpeg:50"]
    jpeg_scores = protocols.score(trained, bank, "test", "jpeg:50")  # the JPEG-50 copies, scored independently
    assert grid.at["jpeg:50", "auc"] == pytest.approx(roc_auc_score(y_test, jpeg_scores))
    assert grid.at["jpeg:50", "accuracy"] == pytest.approx(((jpeg_scores >= trained.threshold) == y_test).mean())
    shortcut = protocols.format_shortcut(trained, bank, "recode:48", n_boot=20)
    recoded = protocols.score(trained, bank, "test", "recode:48")
    assert shortcut["recoded_auc"] == pytest.approx(roc_auc_score(y_test, recoded))
    assert shortcut["clean_auc"] == pytest.approx(roc_auc_score(y_test, protocols.score(trained, bank, "test")))
    summary, bins = calibration.calibration_table(trained, bank)
    assert summary["temperature"] > 0 and set(bins.scores) == {"raw", "temperature-scaled"}


def test_balanced_batches_draw_every_source_equally(bank):
    train = bank.frames["train"]
    one_fake = np.flatnonzero(train.source == "gan_a")[:1]
    rows = np.concatenate([np.flatnonzero(train.source == "cam_a"), one_fake])  # ~5 reals, 1 fake
    shares = {}
    for balanced in (False, True):
        dataset = protocols._training_dataset(bank, protocols.Recipe("b", None, balanced=balanced), rows, 4, seed=0)
        shares[balanced] = np.concatenate([y.numpy() for _ in range(100) for _, y in dataset]).mean()
    assert shares[False] == pytest.approx(1 / len(rows))   # unbalanced: the fake is 1 row in len(rows)
    assert abs(shares[True] - 0.5) < 0.08                   # balanced: half the draws from each source


def test_targets_table_marks_met_and_missed():
    matrix = pd.DataFrame({"recipe": ["imp", "imp"], "trained_on": ["narrow", "narrow"],
                           "test_pair": ["a vs b", "c vs d"], "auc": [0.995, 0.90]})
    logo = pd.DataFrame({"recipe": ["imp"], "held_out": ["g1"], "auc": [0.95]})
    improved = {"all check": 0.98, "jpeg50_drop": 0.01, "scale0.5_drop": 0.2, "worst_real_fpr": 0.04,
                "format_change": -0.03}
    table = protocols.targets_table(improved, matrix, logo, "imp", "narrow", "a vs b", "c vs d", ["g1", "g2"],
                                    ["all check"]).set_index("target")
    # g2 was never left out: "not measured", neither met nor missed
    assert table.met.tolist() == [False, True, True, "not measured", False, True, False, True, False]


class RecordingBank:
    """A stand-in bank that records what each protocol trained on and which splits it scored.

    Its scores are a fixed function of the label: validation scores are over-confident by a
    temperature of 3, test scores are calibrated, so a temperature fitted on test would be 1.
    """

    image_size = 32

    def __init__(self):
        rng = np.random.default_rng(0)
        self.frames, self.p = {}, {}
        for split, n in (("train", 400), ("val", 4000), ("test", 4000)):
            p = rng.uniform(0.02, 0.98, n)  # calibrated: an image scored p is fake with probability p
            fake = rng.uniform(size=n) < p
            sources = np.where(fake, rng.choice(["gan_a", "gan_b", "sd"], n), rng.choice(["cam_a", "cam_b"], n))
            self.frames[split] = pd.DataFrame({"source": sources, "label": np.where(fake, "fake", "real")})
            self.p[split] = p
        self.trained_on, self.scored = [], []

    def train(self, recipe, out_dir, seed=42):
        self.trained_on.append(recipe.train_sources)
        return protocols.TrainedHead(recipe, None, 0.5, 0.9, 0.0)

    def score(self, trained, split, variant="clean"):
        assert trained is not None, "a protocol must score with the model it trained"
        self.scored.append(split)
        p = self.p[split]
        if split == "val":  # over-confident: logit * 3
            return 1 / (1 + np.exp(-3 * np.log(p / (1 - p))))
        return p


def test_leave_one_generator_out_never_trains_on_the_held_out_generator(tmp_path):
    bank = RecordingBank()
    logo = protocols.leave_one_generator_out(protocols.Recipe("r"), bank, tmp_path, n_boot=10)
    assert logo.held_out.tolist() == ["gan_a", "gan_b", "sd"] == sorted(bank.frames["train"].query("label == 'fake'")
                                                                           .source.unique())
    for held_out, trained_on in zip(logo.held_out, bank.trained_on):
        assert held_out not in trained_on
        assert set(trained_on) == {"cam_a", "cam_b", "gan_a", "gan_b", "sd"} - {held_out}  # every other source


def test_calibration_is_fitted_on_validation_and_measured_on_test(tmp_path):
    bank = RecordingBank()
    trained = protocols.TrainedHead(protocols.Recipe("r"), None, 0.5, 0.9, 0.0)
    summary, _ = calibration.calibration_table(trained, bank)
    assert summary["temperature"] == pytest.approx(3.0, rel=0.1)  # the validation scores' distortion
    assert summary["ece_raw"] < 0.03  # test scores were calibrated to begin with
    assert set(bank.scored) == {"val", "test"}


def test_a_recipe_learns_a_learnable_problem_deterministically(tmp_path):
    """A toy problem the detector must solve: fakes carry noise texture (as generators leave traces).

    Frozen ImageNet MobileNetV2 features at 64 px and a trained head must reach a test AUC of
    0.95 or more, and the same seed must give the same AUC twice.
    """
    from conftest import smooth_image, write_jpeg
    from sklearn.metrics import roc_auc_score

    root, seed = tmp_path / "toy", 0
    for label, sources in (("real", ("cam_a", "cam_b")), ("fake", ("gan_a", "gan_b"))):
        for source in sources:
            for k in range(50):
                seed += 1
                image = smooth_image(seed, 64)
                if label == "fake":
                    image = np.clip(image + np.random.default_rng(seed).normal(0, 40, image.shape), 0, 255)
                write_jpeg(root / label / source / f"{k:03d}.jpg", image.astype(np.uint8), quality=98)
    split = splits.split_manifest(data.usable(data.scan_folder(root, progress=False)), (0.5, 0.25, 0.25), seed=0)
    toy = protocols.build_bank(split, root, 64, perturbations=(), cache_dir=tmp_path / "features")
    y = (toy.frames["test"].label == "fake").to_numpy()
    recipe = protocols.Recipe("learn", None, balanced=True, epochs=20, learning_rate=3e-3)
    aucs = [roc_auc_score(y, protocols.score(protocols.train_recipe(recipe, toy, tmp_path, seed=7), toy, "test"))
            for _ in range(2)]
    assert aucs[0] >= 0.95 and len(y) >= 40, aucs
    assert aucs[0] == pytest.approx(aucs[1], abs=1e-6)


def _ece_oracle(y, p, bins=10):
    """Expected calibration error written out plainly: bins [0, .1), ..., [.9, 1]."""
    total = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        members = (p >= lo) & ((p < hi) if b < bins - 1 else (p <= hi))
        if members.any():
            total += members.mean() * abs(y[members].mean() - p[members].mean())
    return total


def test_ece_and_the_reliability_bins_match_a_plain_oracle():
    rng = np.random.default_rng(5)
    p = np.r_[0.0, 1.0, 0.1, 0.9, rng.uniform(size=500)]  # the edges of the first and last bin included
    y = (rng.uniform(size=p.size) < p ** 2).astype(int)   # over-confident on the fake side
    assert calibration.expected_calibration_error(y, p) == pytest.approx(_ece_oracle(y, p))
    assert calibration.expected_calibration_error(y, p, bins=4) == pytest.approx(_ece_oracle(y, p, 4))
    calibrated = rng.uniform(0.01, 0.99, 20000)
    y_cal = (rng.uniform(size=calibrated.size) < calibrated).astype(int)
    under = 1 / (1 + np.exp(-0.5 * np.log(calibrated / (1 - calibrated))))  # under-confident: logits halved
    assert calibration.fit_temperature(y_cal, under) == pytest.approx(0.5, rel=0.1)


def test_calibration_summary_and_bins_are_computed_on_test_with_the_validation_temperature():
    bank = RecordingBank()
    trained = protocols.TrainedHead(protocols.Recipe("r"), None, 0.5, 0.9, 0.0)
    summary, bins = calibration.calibration_table(trained, bank, bins=5)
    y = (bank.frames["test"].label == "fake").to_numpy().astype(int)
    p = bank.p["test"]
    scaled = 1 / (1 + np.exp(-np.log(p / (1 - p)) / summary["temperature"]))
    assert summary["ece_raw"] == pytest.approx(_ece_oracle(y, p, 5))
    assert summary["ece_scaled"] == pytest.approx(_ece_oracle(y, scaled, 5))
    assert summary["ece_scaled"] > summary["ece_raw"]  # a temperature from over-confident val scores hurts here
    raw = bins[bins.scores == "raw"].reset_index(drop=True)
    assert raw.bin_centre.tolist() == pytest.approx([0.1, 0.3, 0.5, 0.7, 0.9]) and raw.n.sum() == len(p)
    first = p < 0.2
    assert raw.n[0] == first.sum() and raw.confidence[0] == pytest.approx(p[first].mean())
    assert raw.fraction_fake[0] == pytest.approx(y[first].mean())
    assert set(bins.recipe) == {"r"} and bins[bins.scores == "temperature-scaled"].n.sum() == len(p)
    assert summary["recipe"] == "r"
    _, default_bins = calibration.calibration_table(trained, bank)
    assert default_bins[default_bins.scores == "raw"].bin_centre.tolist() == pytest.approx(np.arange(0.05, 1, 0.1))


def test_pair_auc_and_leave_one_out_numbers_match_scikit_learn(tmp_path):
    from sklearn.metrics import roc_auc_score

    bank = RecordingBank()
    trained = protocols.TrainedHead(protocols.Recipe("r"), None, 0.5, 0.9, 0.0)
    test, p = bank.frames["test"], bank.p["test"]
    keep = test.source.isin(["cam_a", "gan_b"]).to_numpy()
    result = protocols.pair_auc(trained, bank, ["cam_a"], "gan_b", n_boot=50)
    assert result["auc"] == pytest.approx(roc_auc_score(test.label[keep] == "fake", p[keep]))
    assert result["n"] == keep.sum() and result["auc_lo"] < result["auc"] < result["auc_hi"]
    logo = protocols.leave_one_generator_out(protocols.Recipe("r"), bank, tmp_path, n_boot=20).set_index("held_out")
    reals = test.label.eq("real").to_numpy()

    def auc_against_reals(fake):
        rows = reals | test.source.eq(fake).to_numpy()
        return roc_auc_score(test.label[rows] == "fake", p[rows])

    assert logo.at["sd", "auc"] == pytest.approx(auc_against_reals("sd"))
    seen = np.mean([auc_against_reals(g) for g in ("gan_a", "gan_b")])
    assert logo.at["sd", "seen_generators_mean_auc"] == pytest.approx(seen)
    assert logo.at["sd", "n"] == (reals | test.source.eq("sd").to_numpy()).sum()


def test_targets_table_reports_goals_and_measurements_exactly():
    matrix = pd.DataFrame({"recipe": ["imp", "imp", "other"], "trained_on": ["narrow"] * 3,
                           "test_pair": ["a vs b", "c vs d", "c vs d"], "auc": [0.99, 0.97, 0.5]})
    logo = pd.DataFrame({"recipe": ["imp", "other"], "held_out": ["g1", "g1"], "auc": [0.90, 0.1]})
    improved = {"all check": 0.99, "jpeg50_drop": 0.03, "scale0.5_drop": 0.05, "worst_real_fpr": 0.05,
                "format_change": -0.02}  # every value exactly on its bound: met
    table = protocols.targets_table(improved, matrix, logo, "imp", "narrow", "a vs b", "c vs d", ["g1"],
                                    ["all check"])
    assert table.columns.tolist() == ["target", "goal", "measured", "met"]
    assert table.target.tolist() == [
        "trained on narrow: c vs d AUC", "trained on narrow: in distribution (a vs b) AUC",
        "leave-one-generator-out: g1 AUC", "trained on all sources: all check AUC", "JPEG quality 50: AUC drop",
        "downscale 0.5: AUC drop", "worst real-source false-positive rate", "format-shortcut check: |AUC change|"]
    assert table.goal.tolist() == [">= 0.97", ">= 0.99", ">= 0.90", ">= 0.99", "<= 0.03", "<= 0.05", "<= 0.05", "<= 0.02"]
    assert table.measured.tolist() == pytest.approx([0.97, 0.99, 0.90, 0.99, 0.03, 0.05, 0.05, 0.02])
    assert table.met.tolist() == [True] * 8
    worse = {k: v + (0.001 if k != "all check" else -0.001) for k, v in improved.items()}
    worse["format_change"] = 0.021
    missed = protocols.targets_table(worse, matrix.assign(auc=matrix.auc - 0.001), logo.assign(auc=logo.auc - 0.001),
                                     "imp", "narrow", "a vs b", "c vs d", ["g1"], ["all check"])
    assert missed.met.tolist() == [False] * 8  # just past every bound: missed


def test_leave_one_real_source_out_never_trains_on_or_thresholds_with_the_held_out_source(tmp_path):
    from sklearn.metrics import roc_auc_score

    bank = RecordingBank()
    lorso = protocols.leave_one_real_source_out(protocols.Recipe("r"), bank, tmp_path, n_boot=20).set_index("held_out")
    assert lorso.index.tolist() == ["cam_a", "cam_b"]
    for held_out, trained_on in zip(lorso.index, bank.trained_on):
        assert set(trained_on) == {"cam_a", "cam_b", "gan_a", "gan_b", "sd"} - {held_out}
    val, test = bank.frames["val"], bank.frames["test"]
    val_scores = bank.score(object(), "val")
    p = bank.p["test"]
    fakes = test.label.eq("fake").to_numpy()
    for held_out, seen in (("cam_a", "cam_b"), ("cam_b", "cam_a")):
        row = lorso.loc[held_out]
        t = row.threshold
        # the operating point comes from the seen real source's validation rows only: at most 5% of
        # them at or above it, and the next lower score would let more than 5% through
        seen_val = np.sort(val_scores[val.source.eq(seen).to_numpy()])
        assert (seen_val >= t).mean() <= 0.05 < (seen_val >= seen_val[seen_val < t].max()).mean()
        own = test.source.eq(held_out).to_numpy()
        assert row.fpr == pytest.approx((p[own] >= t).mean())
        assert row.detection == pytest.approx((p[fakes] >= t).mean())
        assert row.n_real == own.sum() and row.n_fake == fakes.sum()
        from helpers.stats import wilson_ci

        assert (row.fpr_lo, row.fpr_hi) == pytest.approx(wilson_ci(int((p[own] >= t).sum()), int(own.sum())))
        assert (row.detection_lo, row.detection_hi) == pytest.approx(wilson_ci(int((p[fakes] >= t).sum()),
                                                                               int(fakes.sum())))
        assert row.fpr_lo <= row.fpr < row.fpr_hi and row.detection_lo < row.detection < row.detection_hi
        assert row.auc == pytest.approx(roc_auc_score(fakes[own | fakes], p[own | fakes]))
        assert row.fpr_at_youden == pytest.approx((p[own] >= 0.5).mean())  # the stand-in's trained threshold


def test_operating_point_bounds_each_source_on_validation_and_leaves_a_band_between():
    from helpers import served

    rng = np.random.default_rng(3)
    sources = np.repeat(["cam_a", "cam_b", "gan_a", "gan_b"], 200)
    scores = np.concatenate([rng.beta(2, 6, 200), rng.beta(2, 3, 200), rng.beta(6, 2, 200), rng.beta(3, 2, 200)])
    frame = pd.DataFrame({"source": sources, "label": np.where(np.char.startswith(sources, "cam"), "real", "fake")})
    point = served.choose_operating_point(frame, scores, max_real_fpr=0.05, max_fake_miss=0.05, rule="rates")
    for source in ("cam_a", "cam_b"):
        assert (scores[sources == source] >= point.fake_threshold).mean() <= 0.05
    for source in ("gan_a", "gan_b"):
        assert (scores[sources == source] < point.real_threshold).mean() <= 0.05
    # the binding source sits on its bound: the next score inward would break it
    def let_through(source, threshold):
        return (scores[sources == source] >= threshold).mean()

    assert max(let_through(s, scores[(sources == s) & (scores < point.fake_threshold)].max())
               for s in ("cam_a", "cam_b")) > 0.05
    assert max((scores[sources == s] < scores[(sources == s) & (scores > point.real_threshold)].min()).mean()
               for s in ("gan_a", "gan_b")) > 0.05
    assert point.real_threshold < point.fake_threshold  # overlapping classes: an unsure band
    verdicts = point.verdicts(np.array([point.fake_threshold, point.real_threshold, point.real_threshold - 1e-6]))
    assert verdicts.tolist() == ["fake", "unsure", "real"]
    # classes that do not overlap: no band, one threshold
    for rule in served.ANSWER_RULES:
        separated = served.choose_operating_point(frame, np.where(frame.label == "fake", 0.9, 0.1), rule=rule)
        assert separated.verdicts(np.array([0.1, 0.9])).tolist() == ["real", "fake"], rule


def test_a_reused_compiled_head_trains_exactly_like_a_fresh_one(tmp_path):
    """The bank reuses one compiled head per architecture (no rebuild, no re-trace): a recipe trained after
    others, with other learning rates and sources, must give the same head as on a fresh bank."""
    from conftest import noise_feature_bank as bank

    target = protocols.Recipe(name="target", epochs=3, augment_copies=1, tta_flip=True)
    shared = bank()
    for other in (protocols.Recipe(name="o1", epochs=2, learning_rate=3e-2, balanced=True),
                  protocols.Recipe(name="o2", epochs=1, train_sources=["ffhq", "sd21"])):
        shared.train(other, tmp_path / "a", seed=3)
    reused = shared.train(target, tmp_path / "a", seed=3)
    fresh_bank = bank()
    fresh = fresh_bank.train(target, tmp_path / "b", seed=3)
    assert len(shared.trainers) == 1
    assert np.allclose(shared.score(reused, "test"), fresh_bank.score(fresh, "test"), atol=1e-6)
    assert reused.threshold == pytest.approx(fresh.threshold) and reused.val_auc == pytest.approx(fresh.val_auc)
    for a, b in zip(reused.head.get_weights(), fresh.head.get_weights()):
        assert np.allclose(a, b, atol=1e-6)


class TiedBank(RecordingBank):
    """RecordingBank with every score on a 0.01 grid, so that test scores fall exactly on the trained
    threshold 0.5; it records what each training was given and which variant was scored."""

    def __init__(self):
        super().__init__()
        self.p = {split: np.round(p, 2) for split, p in self.p.items()}
        self.train_settings, self.variants = [], []

    def train(self, recipe, out_dir, seed=42):
        self.train_settings.append((recipe.name, out_dir, seed))
        return super().train(recipe, out_dir, seed)

    def score(self, trained, split, variant="clean"):
        self.variants.append(variant)
        return np.round(super().score(trained, split, variant), 2)


def test_leave_one_out_rows_carry_every_column_and_pass_each_training_its_settings(tmp_path):
    from helpers import stats

    bank = TiedBank()
    val, test, p = bank.frames["val"], bank.frames["test"], bank.p["test"]
    fakes = test.label.eq("fake").to_numpy()
    lorso = protocols.leave_one_real_source_out(protocols.Recipe("r"), bank, tmp_path, n_boot=30, seed=5,
                                                max_real_fpr=0.3)
    assert lorso.columns.tolist() == ["recipe", "held_out", "threshold", "fpr", "fpr_lo", "fpr_hi", "n_real", "detection",
                                      "detection_lo", "detection_hi", "n_fake", "auc", "auc_lo", "auc_hi",
                                      "youden_threshold", "fpr_at_youden"]
    assert bank.train_settings == [("r_without_cam_a", tmp_path, 5), ("r_without_cam_b", tmp_path, 5)]
    assert set(bank.variants) == {"clean"}
    val_scores = bank.score(object(), "val")
    for row in lorso.itertuples():
        seen = val.source.ne(row.held_out).to_numpy()
        assert row.recipe == "r" and row.threshold == stats.fpr_controlled_threshold(val[seen], val_scores[seen], 0.3)
        own = test.source.eq(row.held_out).to_numpy()
        assert row.fpr == pytest.approx((p[own] >= row.threshold).mean()) and row.fpr > 0.1
        assert row.detection == pytest.approx((p[fakes] >= row.threshold).mean())
        keep = own | fakes
        assert (row.auc, row.auc_lo, row.auc_hi) == pytest.approx(stats.auc_ci(fakes[keep].astype(int), p[keep], 30, 5))
        assert row.youden_threshold == 0.5 and (p[own] == 0.5).any()
        assert row.fpr_at_youden == pytest.approx((p[own] >= 0.5).mean())
    defaults = protocols.leave_one_real_source_out(protocols.Recipe("r"), bank, tmp_path, held_outs=["cam_b"]).iloc[0]
    seen = val.source.ne("cam_b").to_numpy()
    assert defaults.threshold == stats.fpr_controlled_threshold(val[seen], val_scores[seen], 0.05)
    keep = test.source.eq("cam_b").to_numpy() | fakes
    assert (defaults.auc_lo, defaults.auc_hi) == pytest.approx(stats.auc_ci(fakes[keep].astype(int), p[keep], 1000, 42)[1:])
    assert bank.train_settings[-1] == ("r_without_cam_b", tmp_path, 42)

    logo = protocols.leave_one_generator_out(protocols.Recipe("g"), bank, tmp_path, n_boot=30, seed=6, held_outs=["sd"])
    assert logo.columns.tolist() == ["recipe", "held_out", "auc", "auc_lo", "auc_hi", "n", "seen_generators_mean_auc"]
    assert logo.recipe.tolist() == ["g"] and bank.train_settings[-1] == ("g_without_sd", tmp_path, 6)
    keep = test.label.eq("real").to_numpy() | test.source.eq("sd").to_numpy()
    assert tuple(logo.iloc[0][["auc", "auc_lo", "auc_hi"]]) == pytest.approx(
        stats.auc_ci(fakes[keep].astype(int), p[keep], 30, 6))
    pair = protocols.pair_auc(protocols.TrainedHead(protocols.Recipe("r"), None, 0.5, 0.9, 0.0), bank, ["cam_a"], "sd")
    keep = test.source.isin(["cam_a", "sd"]).to_numpy()
    assert (pair["auc_lo"], pair["auc_hi"]) == pytest.approx(stats.auc_ci(fakes[keep].astype(int), p[keep], 1000, 0)[1:])
    assert bank.variants[-1] == "clean"
    protocols.pair_auc(protocols.TrainedHead(protocols.Recipe("r"), None, 0.5, 0.9, 0.0), bank, ["cam_a"], "sd",
                       variant="jpeg:50", n_boot=0)
    assert bank.variants[-1] == "jpeg:50"


def test_feature_bank_scores_average_each_variant_with_its_own_mirror():
    import keras

    rng = np.random.default_rng(4)
    names = ("clean", "flipped", "jpeg:50", "jpeg:50|flipped")
    arrays = {name: rng.normal(size=(7, 4)).astype(np.float32) for name in names}
    inputs = keras.Input((4,))
    head = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(keras.layers.Dropout(0.5)(inputs)))
    w, b = head.layers[-1].get_weights()
    frames = {"val": pd.DataFrame({"source": ["s"] * 7, "label": ["real"] * 7})}
    bank = protocols.FeatureBank(image_size=8, frames=frames, arrays={"val": arrays})

    def oracle(name):  # the head in inference mode: dropout off
        return (1 / (1 + np.exp(-(arrays[name] @ w + b)))).reshape(-1)

    flip = protocols.TrainedHead(protocols.Recipe("r", tta_flip=True), head, 0.5, 0.9, 0.0)
    plain = protocols.TrainedHead(protocols.Recipe("r"), head, 0.5, 0.9, 0.0)
    assert np.allclose(bank.score(flip, "val"), (oracle("clean") + oracle("flipped")) / 2, atol=1e-6)
    assert np.allclose(bank.score(flip, "val", "jpeg:50"), (oracle("jpeg:50") + oracle("jpeg:50|flipped")) / 2, atol=1e-6)
    assert np.allclose(bank.score(plain, "val", "jpeg:50"), oracle("jpeg:50"), atol=1e-6)
    assert np.allclose(protocols._head_scores(head, arrays["clean"], batch_size=3), oracle("clean"), atol=1e-6)
    empty = protocols._head_scores(head, np.zeros((0, 4), np.float32))
    assert empty.shape == (0,) and empty.dtype == np.float32


def test_checkpoint_names_keep_letters_digits_dots_and_dashes():
    recipe = protocols.Recipe("+ blur/JPEG, fine-tuned 100% v1.5")
    assert protocols.checkpoint_name("head", recipe) == "head_blur_JPEG_fine-tuned_100_v1.5"
    assert protocols.checkpoint_name("head", protocols.Recipe("Xception +")) == "head_Xception"


def test_epoch_positions_repeat_with_the_seed():
    frame = pd.DataFrame({"source": ["a"] * 30 + ["b"] * 10})
    rows = np.arange(40)
    for balanced in (False, True):
        first, again = ([int(i) for i in protocols.epoch_positions(frame, rows, balanced, seed=3)] for _ in range(2))
        assert first == again and len(first) == 40, balanced
        assert first != [int(i) for i in protocols.epoch_positions(frame, rows, balanced, seed=4)], balanced


def test_targets_table_says_not_measured_where_a_protocol_did_not_run():
    matrix = pd.DataFrame({"recipe": ["imp"], "trained_on": ["narrow"], "test_pair": ["a vs b"], "auc": [0.995]})
    logo = pd.DataFrame({"recipe": ["other"], "held_out": ["g1"], "auc": [0.99]})  # not the improved recipe's
    improved = {"jpeg50_drop": 0.01, "scale0.5_drop": 0.2, "worst_real_fpr": 0.01, "format_change": 0.0}
    table = protocols.targets_table(improved, matrix, logo, "imp", "narrow", "a vs b", "c vs d", ["g1"],
                                    ["missing check"]).set_index("target")
    for target in ("trained on narrow: c vs d AUC", "leave-one-generator-out: g1 AUC",
                   "trained on all sources: missing check AUC"):
        assert np.isnan(table.at[target, "measured"]) and table.at[target, "met"] == "not measured", target
    assert table.at["trained on narrow: in distribution (a vs b) AUC", "met"] is True
    assert table.at["downscale 0.5: AUC drop", "met"] is False


def test_feature_bank_trains_with_the_seed_it_is_given(monkeypatch, tmp_path):
    monkeypatch.setattr(protocols, "train_recipe", lambda recipe, bank, out_dir, seed=0: (recipe.name, out_dir, seed))
    bank = protocols.FeatureBank(image_size=8, frames={})
    assert bank.train(protocols.Recipe("r"), tmp_path, seed=7) == ("r", tmp_path, 7)
    assert bank.train(protocols.Recipe("r"), tmp_path)[2] == 42  # the lab's default seed


def test_a_recipe_trains_on_the_copies_of_its_own_kind():
    """Training batches hold the clean rows, their mirrors and the recipe's copy kind only: with every
    version of each row a distinct constant, the values seen say which arrays the batches came from."""
    n, rows = 6, np.arange(6)
    frames = {"train": pd.DataFrame({"source": ["a", "b"] * 3, "label": ["real", "fake"] * 3})}
    values = {"clean": 1.0, "flipped": 2.0, "augment:0": 3.0, "augment:1": 4.0, "scaled:0": 5.0, "scaled:1": 6.0}
    arrays = {name: np.full((n, 4), value, np.float32) for name, value in values.items()}
    bank = protocols.FeatureBank(image_size=8, frames=frames, arrays={"train": arrays})
    for kind, expected in (("augment", {1.0, 2.0, 3.0, 4.0}), ("scaled", {1.0, 2.0, 5.0, 6.0})):
        recipe = protocols.Recipe("r", augment_copies=2, copy_kind=kind)
        seen = set()
        for seed in range(20):  # 120 draws of one of four versions: each appears
            for features, _labels in protocols._training_dataset(bank, recipe, rows, 3, seed=seed):
                seen |= set(np.unique(features.numpy()).tolist())
        assert seen == expected, kind
    with pytest.raises(KeyError):
        list(protocols._training_dataset(bank, protocols.Recipe("r", augment_copies=3, copy_kind="scaled"), rows, 3, 0))


def test_the_bank_holds_each_split_and_copy_from_its_own_extraction(monkeypatch, tmp_path):
    """Every array of the bank is the extraction made for it: the clean splits with their mirrors, each
    copy of each kind on the training rows without a mirror pass, each perturbation of the test rows
    with its mirror. The extractor is replaced by one whose call number is its features' value."""
    calls, roots = [], []

    def extract(model, frame, root, image_size, batch_size, flips, preprocessing, cache_dir, perturbation):
        roots.append(root)
        calls.append((model, len(frame), image_size, batch_size, flips, preprocessing, cache_dir, perturbation))
        k = len(calls)
        return {"features": np.full((len(frame), 2), k, np.float32),
                "flipped": np.full((len(frame), 2), -k, np.float32) if flips else None, "seconds": 0.25}

    built = []
    monkeypatch.setattr(protocols.features, "extract_features", extract)
    monkeypatch.setattr(protocols.models, "build_mobilenetv2", lambda **kw: (built.append(kw) or "probe", None))
    split = pd.DataFrame({"path": [f"{i}.jpg" for i in range(6)], "split": ["train"] * 3 + ["val"] * 2 + ["test"]})
    bank = protocols.build_bank(split, tmp_path, 32, augment_copies=2, perturbations=("jpeg:50", "blur:1"),
                                batch_size=5, cache_dir=tmp_path / "c", seed=3, copy_kinds=("augment", "scaled"))
    assert built == [{"image_size": 32, "augment": "flip", "seed": 3}]
    expected = [(3, True, None), (2, True, None), (1, True, None), (3, False, "augment:0"), (3, False, "augment:1"),
                (3, False, "scaled:0"), (3, False, "scaled:1"), (1, True, "jpeg:50"), (1, True, "blur:1")]
    assert [(n, flips, p) for _m, n, _s, _b, flips, _pre, _c, p in calls] == expected
    assert {(m, s, b, pre, c) for m, _n, s, b, _f, pre, c, _p in calls} == {("probe", 32, 5, "none", tmp_path / "c")}
    value = {split: {name: float(array[0, 0]) for name, array in arrays.items()} for split, arrays in bank.arrays.items()}
    assert value == {"train": {"clean": 1, "flipped": -1, "augment:0": 4, "augment:1": 5, "scaled:0": 6, "scaled:1": 7},
                     "val": {"clean": 2, "flipped": -2},
                     "test": {"clean": 3, "flipped": -3, "jpeg:50": 8, "jpeg:50|flipped": -8, "blur:1": 9,
                              "blur:1|flipped": -9}}
    assert bank.image_size == 32 and bank.seconds == 9 * 0.25 and len(bank.arrays["train"]["scaled:1"]) == 3
    assert [len(bank.frames[s]) for s in ("train", "val", "test")] == [3, 2, 1]
    assert set(roots) == {tmp_path}  # every extraction reads the images under the root it was given
    for name in ("train", "val", "test"):  # each split's rows as they were, numbered from 0, no column added
        assert bank.frames[name].equals(split[split.split == name].reset_index(drop=True)), name
    # the defaults: no copies, the robustness grid and the JPEG round trip at 256 px; copies of one kind
    calls.clear()
    protocols.build_bank(split, tmp_path, 32)
    assert [p for *_rest, p in calls][3:] == list(protocols.ROBUSTNESS_GRID) + ["recode:256"]
    calls.clear()
    protocols.build_bank(split, tmp_path, 32, augment_copies=1, perturbations=())
    assert [p for *_rest, p in calls] == [None, None, None, "augment:0"]
    assert {(b, c) for _m, _n, _s, b, _f, _pre, c, _p in calls} == {(64, None)} and built[-1]["seed"] == 42
