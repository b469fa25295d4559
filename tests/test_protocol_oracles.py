"""Notebook 08's cross-source matrix, robustness grid, format-shortcut check and ablation row against
independent oracles: scikit-learn's AUC on exactly the rows each number is about, the documented stratified
bootstrap written out with scikit-learn, and rates counted by hand. A stand-in bank gives every training and
every perturbation its own scores (no TensorFlow training), with test scores lying exactly on the threshold.

Each test names the plausible bugs it exists to catch; none compares a function with itself.
"""

import zlib

import numpy as np
import pandas as pd
import pytest
from oracles import bootstrap_auc_interval
from sklearn.metrics import roc_auc_score

from helpers import protocols
from helpers.perturb import ROBUSTNESS_GRID

THRESHOLD = 0.4375  # 7/16: exact in binary, as every score on the 1/16 grid is
VARIANTS = ("clean", "jpeg:50", "scale:0.5", "recode:256", "blur:1.0")


class VariantBank:
    """Test and validation frames of three real and three fake sources; each (training, variant) pair scores
    the test split with its own noise around one latent score, every score on a 1/16 grid so that many lie
    exactly on the trained threshold 7/16. Records what each training was given."""

    image_size = 32

    def __init__(self):
        rng = np.random.default_rng(1)
        self.frames, self.latent = {}, {}
        for split, n in (("val", 300), ("test", 300)):
            sources = rng.choice(["cam_a", "cam_b", "cam_c", "gan_a", "gan_b", "sd"], n)
            fake = np.isin(sources, ["gan_a", "gan_b", "sd"])
            self.frames[split] = pd.DataFrame({"source": sources, "label": np.where(fake, "fake", "real")})
            self.latent[split] = np.clip(rng.normal(np.where(fake, 0.6, 0.4), 0.2), 0, 1)
        self.trainings = []

    def train(self, recipe, out_dir, seed=42):
        self.trainings.append(dict(recipe=recipe, out_dir=out_dir, seed=seed))
        return protocols.TrainedHead(recipe, None, THRESHOLD, 0.91, 12.34)

    def score(self, trained, split, variant="clean"):
        noise = np.random.default_rng(zlib.crc32(f"{trained.recipe.name}|{split}|{variant}".encode()))
        return np.round(np.clip(self.latent[split] + noise.normal(0, 0.15, len(self.latent[split])), 0, 1) * 16) / 16


def _y(frame: pd.DataFrame) -> np.ndarray:
    return (frame.label == "fake").to_numpy().astype(int)



def test_the_stand_in_bank_puts_scores_on_the_threshold_and_tells_variants_apart():
    bank = VariantBank()
    trained = bank.train(protocols.Recipe("r"), "out")
    scores = {v: bank.score(trained, "test", v) for v in VARIANTS}
    assert all((s == THRESHOLD).sum() >= 10 for s in scores.values())  # exactly on it, not a hair above
    y = _y(bank.frames["test"])
    assert len({round(roc_auc_score(y, s), 6) for s in scores.values()}) == len(VARIANTS)


def test_cross_source_matrix_trains_each_set_and_scores_each_pair_on_its_own_rows(tmp_path):
    """Bugs caught: a training set's sources or the recipe's other settings not passed on; the seed or the
    output folder dropped; one training's model used for another's rows; a pair's AUC over every test row or
    only one of its real sources; the interval without the seed or resample count; rows out of order; a pair
    named without all its real sources."""
    bank = VariantBank()
    recipe = protocols.Recipe("base", ["ignored"], augment_copies=2, balanced=True, tta_flip=True, epochs=7,
                              learning_rate=3e-4, dropout=0.1, label_smoothing=0.05)
    sets = {"narrow": ["cam_a", "gan_a"], "all": None}
    pairs = [(["cam_a"], "gan_a"), (["cam_a", "cam_b"], "sd")]
    matrix = protocols.cross_source_matrix(recipe, sets, pairs, bank, tmp_path, n_boot=60, seed=5)
    assert matrix.columns.tolist() == ["recipe", "trained_on", "test_pair", "auc", "auc_lo", "auc_hi", "n"]
    assert matrix.trained_on.tolist() == ["narrow", "narrow", "all", "all"]
    assert matrix.test_pair.tolist() == ["cam_a vs gan_a", "cam_a+cam_b vs sd"] * 2
    assert (matrix.recipe == "base").all()
    assert [t["recipe"].name for t in bank.trainings] == ["base_narrow", "base_all"]
    for training, sources in zip(bank.trainings, sets.values()):
        assert training["recipe"].train_sources == sources
        assert (training["out_dir"], training["seed"]) == (tmp_path, 5)
        settings = training["recipe"].to_dict()
        assert {k: settings[k] for k in ("augment_copies", "balanced", "tta_flip", "epochs", "learning_rate",
                                         "dropout", "label_smoothing")} == \
            dict(augment_copies=2, balanced=True, tta_flip=True, epochs=7, learning_rate=3e-4, dropout=0.1,
                 label_smoothing=0.05)
    test = bank.frames["test"]
    for row, (training, (reals, fake)) in zip(matrix.itertuples(), [(t, p) for t in bank.trainings for p in pairs]):
        rows = test.source.isin([*reals, fake]).to_numpy()
        scores = bank.score(protocols.TrainedHead(training["recipe"], None, THRESHOLD, 0, 0), "test")[rows]
        y = _y(test)[rows]
        assert row.n == rows.sum()
        assert row.auc == pytest.approx(roc_auc_score(y, scores))
        assert (row.auc_lo, row.auc_hi) == pytest.approx(bootstrap_auc_interval(y, scores, 60, 5), abs=1e-12)


def test_robustness_grid_scores_each_variant_at_the_validation_threshold():
    """Bugs caught: a variant scored clean (or the clean scores under a variant); a score on the threshold
    called real; a false-positive rate over every row instead of the reals; the drop's sign or reference
    row; the default grid not the documented one; the interval without its seed or resample count."""
    bank = VariantBank()
    trained = bank.train(protocols.Recipe("grid recipe"), "out")
    grid = protocols.robustness_grid(trained, bank, ("jpeg:50", "scale:0.5"), n_boot=40, seed=3)
    assert grid.columns.tolist() == ["recipe", "perturbation", "auc", "auc_lo", "auc_hi", "accuracy", "fpr",
                                     "auc_drop"]
    assert grid.perturbation.tolist() == ["clean", "jpeg:50", "scale:0.5"] and (grid.recipe == "grid recipe").all()
    y = _y(bank.frames["test"])
    clean_auc = roc_auc_score(y, bank.score(trained, "test", "clean"))
    for row in grid.itertuples():
        s = bank.score(trained, "test", row.perturbation)
        assert row.auc == pytest.approx(roc_auc_score(y, s))
        assert (row.auc_lo, row.auc_hi) == pytest.approx(bootstrap_auc_interval(y, s, 40, 3), abs=1e-12)
        called_fake = s >= THRESHOLD  # ten or more scores lie exactly on it: they count as fake
        assert row.accuracy == pytest.approx(np.mean(called_fake == y.astype(bool)))
        assert row.fpr == pytest.approx(called_fake[y == 0].mean())
        assert row.auc_drop == pytest.approx(clean_auc - row.auc)
    assert grid.auc_drop[0] == 0.0
    default = protocols.robustness_grid(trained, bank, n_boot=0)
    assert default.perturbation.tolist() == ["clean", *ROBUSTNESS_GRID]
    assert default.auc_lo.isna().all()  # n_boot 0: point estimates only


def test_format_shortcut_compares_the_recoded_scores_with_the_clean_ones():
    """Bugs caught: the re-encoding not the one asked for (or not 256 px by default); the change's sign;
    the interval from the clean scores or without its settings."""
    bank = VariantBank()
    trained = bank.train(protocols.Recipe("fmt"), "out")
    y = _y(bank.frames["test"])
    clean, recoded = (bank.score(trained, "test", v) for v in ("clean", "recode:256"))
    result = protocols.format_shortcut(trained, bank, n_boot=50, seed=9)
    assert sorted(result) == ["change", "clean_auc", "recipe", "recoded_auc", "recoded_ci"]
    assert result["recipe"] == "fmt"
    assert result["clean_auc"] == pytest.approx(roc_auc_score(y, clean))
    assert result["recoded_auc"] == pytest.approx(roc_auc_score(y, recoded))
    assert result["change"] == pytest.approx(roc_auc_score(y, recoded) - roc_auc_score(y, clean))
    assert result["recoded_ci"] == pytest.approx(bootstrap_auc_interval(y, recoded, 50, 9), abs=1e-12)
    blurred = protocols.format_shortcut(trained, bank, "blur:1.0", n_boot=50, seed=9)
    assert blurred["recoded_auc"] == pytest.approx(roc_auc_score(y, bank.score(trained, "test", "blur:1.0")))


@pytest.mark.parametrize("train_sources", [["cam_a", "gan_a", "sd"], None])
def test_recipe_summary_row_against_hand_counts_and_scikit_learn(train_sources):
    """Bugs caught: the in-distribution AUC over every test row for a recipe trained on a few sources (or
    the reverse); a check pair over the wrong rows; the drops against the wrong reference or with the sign
    turned; the worst real source's rate at another threshold, over every real or without the scores on the
    threshold; the format change not the 256-px re-encoding; the training time unrounded."""
    bank = VariantBank()
    trained = bank.train(protocols.Recipe("row", train_sources), "out")
    checks = {"sd vs cam_b": (["cam_b"], "sd"), "gans vs both": (["cam_a", "cam_b"], "gan_b")}
    row = protocols.recipe_summary(trained, bank, checks)
    test = bank.frames["test"]
    y, s = _y(test), bank.score(trained, "test")
    own = test.source.isin(train_sources).to_numpy() if train_sources else np.ones(len(test), bool)
    assert row["recipe"] == "row" and row["val_auc"] == 0.91 and row["train_seconds"] == 12.3
    assert row["trained_on"] == ("cam_a+gan_a+sd" if train_sources else "all sources")
    assert row["in_distribution_auc"] == pytest.approx(roc_auc_score(y[own], s[own]))
    for name, (reals, fake) in checks.items():
        rows = test.source.isin([*reals, fake]).to_numpy()
        assert row[name] == pytest.approx(roc_auc_score(y[rows], s[rows])), name
    clean = roc_auc_score(y, s)
    for key, variant in (("jpeg50_drop", "jpeg:50"), ("scale0.5_drop", "scale:0.5")):
        assert row[key] == pytest.approx(clean - roc_auc_score(y, bank.score(trained, "test", variant))), key
    assert row["format_change"] == pytest.approx(roc_auc_score(y, bank.score(trained, "test", "recode:256")) - clean)
    called_fake = s >= THRESHOLD
    by_hand = {src: called_fake[(test.source == src).to_numpy()].mean() for src in ("cam_a", "cam_b", "cam_c")}
    assert len({round(rate, 9) for rate in by_hand.values()}) == 3  # the worst of three different rates
    assert row["worst_real_fpr"] == pytest.approx(max(by_hand.values()))
    assert list(row)[:4] == ["recipe", "trained_on", "val_auc", "in_distribution_auc"]


def test_the_documented_defaults_reach_the_bootstrap_and_the_training():
    """Bugs caught: defaults other than the documented ones — 1,000 resamples everywhere, the lab's seed 42
    for a cross-source training and its intervals, seed 0 for a trained model's grid and shortcut check."""
    bank = VariantBank()
    test = bank.frames["test"]
    matrix = protocols.cross_source_matrix(protocols.Recipe("d"), {"all": None}, [(["cam_a"], "sd")], bank, "out")
    assert bank.trainings[0]["seed"] == 42
    rows = test.source.isin(["cam_a", "sd"]).to_numpy()
    trained = protocols.TrainedHead(bank.trainings[0]["recipe"], None, THRESHOLD, 0, 0)
    scores = bank.score(trained, "test")
    assert (matrix.auc_lo[0], matrix.auc_hi[0]) == pytest.approx(
        bootstrap_auc_interval(_y(test)[rows], scores[rows], 1000, 42), abs=1e-12)
    y = _y(test)
    grid = protocols.robustness_grid(trained, bank, ())
    assert (grid.auc_lo[0], grid.auc_hi[0]) == pytest.approx(bootstrap_auc_interval(y, scores, 1000, 0), abs=1e-12)
    shortcut = protocols.format_shortcut(trained, bank)
    assert shortcut["recoded_ci"] == pytest.approx(
        bootstrap_auc_interval(y, bank.score(trained, "test", "recode:256"), 1000, 0), abs=1e-12)


def test_recipe_summary_without_real_test_images_reports_no_worst_rate():
    """Bug caught: the worst real source's rate taken over no source at all (an error, or a number)."""
    bank = VariantBank()
    bank.frames["test"] = bank.frames["test"].assign(label="fake")  # every test image a fake
    trained = bank.train(protocols.Recipe("fakes only"), "out")
    with np.errstate(invalid="ignore"), pytest.warns(RuntimeWarning):  # no reals: NumPy warns of empty means
        row = protocols.recipe_summary(trained, bank, {})
    assert np.isnan(row["worst_real_fpr"]) and np.isnan(row["in_distribution_auc"])
