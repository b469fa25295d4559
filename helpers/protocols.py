"""Generalization and robustness protocols (notebook 08), run on the frozen-feature cache.

A frozen ImageNet backbone's features do not depend on the head, so every image — clean, mirrored,
in K random blur/JPEG/crop copies, and under every test perturbation — is passed through the
backbone once (:class:`FeatureBank`, cached on disk); each protocol then trains only heads, in
seconds. A :class:`Recipe` says what a head is trained on and how (sources, augmentation copies,
source-balanced batches, test-time flip, image size). Each protocol is one function returning one
table (AUC with 95% bootstrap CIs; thresholds always from validation):

- :func:`cross_source_matrix` — train on one set of sources, test on every real/fake pair;
- :func:`leave_one_generator_out` — train on all fakes but one generator, test on that one;
- :func:`leave_one_real_source_out` — train on all reals but one source, its false-positive rate;
- :func:`robustness_grid` — JPEG, rescaling and blur at the fixed validation threshold;
- :func:`format_shortcut` — every image re-encoded to one size and JPEG quality;
- :func:`helpers.calibration.calibration_table` — reliability, calibration error, temperature fitted on validation;
- :func:`helpers.evaluate.per_attribute_metrics` and :func:`helpers.splits.leakage_report` complete it.

The protocols only train through ``bank.train(recipe, ...)`` and score through ``bank.score(...)``
(:class:`Bank`), so the same functions evaluate fine-tuned detectors on images
(:class:`helpers.finetuned.ImageBank`).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from helpers import features, models, train
from helpers.perturb import ROBUSTNESS_GRID
from helpers.pipeline import labels_of
from helpers.stats import auc_ci, choose_threshold, fpr_controlled_threshold, wilson_ci


@dataclass
class Recipe:
    """How a head is trained: on which sources, with which augmentation, balance and test-time flip."""

    name: str
    train_sources: list[str] | None = None   # None: every source of the split
    augment_copies: int = 0                  # cached blur+JPEG+crop copies per training image
    copy_kind: str = "augment"               # "scaled": each copy down-scaled 0.5-1x first (helpers.perturb)
    balanced: bool = False                   # every source equally often in each epoch
    tta_flip: bool = False                   # average the scores of the image and its mirror
    epochs: int = 15
    learning_rate: float = 1e-3
    dropout: float = 0.2
    label_smoothing: float = 0.0             # targets 0/1 pulled towards 0.5 by this much

    def to_dict(self) -> dict:
        return asdict(self)


class Bank(Protocol):
    """What a protocol needs: the split's frames, a way to train a recipe and a way to score.

    ``train`` returns a trained model object with ``recipe``, ``threshold`` (chosen on validation),
    ``val_auc`` and ``seconds``; ``score`` takes that object back.
    """

    image_size: int
    frames: dict[str, pd.DataFrame]

    def train(self, recipe: Recipe, out_dir: str | Path, seed: int = 42): ...

    def score(self, trained, split: str, variant: str = "clean") -> np.ndarray: ...


def _head_scores(head: keras.Model, features: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """P(fake) from a head on feature vectors, called directly (no ``predict`` function to trace)."""
    parts = [np.asarray(head(features[i:i + batch_size], training=False)).reshape(-1)
             for i in range(0, len(features), batch_size)]
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


@dataclass
class FeatureBank:
    """Backbone features of one split at one size: ``arrays[split][variant]`` aligned with ``frames[split]``."""

    image_size: int
    frames: dict[str, pd.DataFrame]
    arrays: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    seconds: float = 0.0
    trainers: dict = field(default_factory=dict, repr=False, compare=False)  # compiled heads, reused

    def train(self, recipe: Recipe, out_dir: str | Path, seed: int = 42) -> TrainedHead:
        """A head trained with ``recipe`` on these features (:func:`train_recipe`)."""
        return train_recipe(recipe, self, out_dir, seed=seed)

    def score(self, trained: TrainedHead, split: str, variant: str = "clean") -> np.ndarray:
        """P(fake) of every row of ``split`` under ``variant``, averaged with the mirror when the recipe says so."""
        arrays = self.arrays[split]
        scores = _head_scores(trained.head, arrays[variant])
        if trained.recipe.tta_flip:
            mirror = arrays["flipped"] if variant == "clean" else arrays[f"{variant}|flipped"]
            scores = (scores + _head_scores(trained.head, mirror)) / 2
        return scores


def build_bank(split_frame: pd.DataFrame, root: str | Path, image_size: int, augment_copies: int = 0,
               perturbations: tuple[str, ...] = ROBUSTNESS_GRID + ("recode:256",), batch_size: int = 64,
               cache_dir: str | Path | None = None, seed: int = 42,
               copy_kinds: tuple[str, ...] = ("augment",)) -> FeatureBank:
    """Extract (or read back) every feature the protocols need with a frozen ImageNet MobileNetV2
    (``augment_copies`` training copies of each of ``copy_kinds``)."""
    keras.backend.clear_session()
    probe, _ = models.build_mobilenetv2(image_size=image_size, augment="flip", seed=seed)
    frames = {s: split_frame[split_frame["split"] == s].reset_index(drop=True) for s in ("train", "val", "test")}
    bank = FeatureBank(image_size, frames)

    def get(frame, perturbation=None, flips=True):
        result = features.extract_features(probe, frame, root, image_size, batch_size, flips, "none", cache_dir,
                                           perturbation)
        bank.seconds += float(result["seconds"])
        return result

    for split, frame in frames.items():
        clean = get(frame)
        bank.arrays[split] = {"clean": clean["features"], "flipped": clean["flipped"]}
    for kind, copy in ((kind, copy) for kind in copy_kinds for copy in range(augment_copies)):
        # each copy already mirrors at random: no separate flipped pass
        bank.arrays["train"][f"{kind}:{copy}"] = get(frames["train"], f"{kind}:{copy}", flips=False)["features"]
    for perturbation in perturbations:
        result = get(frames["test"], perturbation)
        bank.arrays["test"][perturbation] = result["features"]
        bank.arrays["test"][f"{perturbation}|flipped"] = result["flipped"]
    return bank


@dataclass
class TrainedHead:
    recipe: Recipe
    head: keras.Model
    threshold: float
    val_auc: float
    seconds: float


def checkpoint_name(prefix: str, recipe: Recipe) -> str:
    """A file name for a recipe's checkpoint: "+ blur/JPEG" is a fine title but not a file name."""
    return f"{prefix}_" + re.sub(r"[^A-Za-z0-9_.-]+", "_", recipe.name).strip("_")


def rows_of_sources(frame: pd.DataFrame, sources: list[str] | None) -> np.ndarray:
    """Positions of the rows of ``frame`` from ``sources`` (every row for ``None``)."""
    return np.flatnonzero(frame["source"].isin(sources).to_numpy()) if sources else np.arange(len(frame))


def epoch_positions(frame: pd.DataFrame, rows: np.ndarray, balanced: bool, seed: int) -> tf.data.Dataset:
    """``len(rows)`` positions from ``rows`` per epoch, in a new order each epoch; with ``balanced``,
    every source of ``frame`` is drawn equally often (small sources repeat, large ones are sampled)."""
    if not balanced:
        return tf.data.Dataset.from_tensor_slices(rows.astype(np.int64)).shuffle(len(rows), seed=seed)
    sources = frame["source"].to_numpy()[rows]
    parts = [tf.data.Dataset.from_tensor_slices(rows[sources == s].astype(np.int64))
             .shuffle(int((sources == s).sum()), seed=seed).repeat() for s in np.unique(sources)]
    # equal weights: balanced sources; a new draw of sources every epoch, not the same sequence again
    mixed = tf.data.Dataset.sample_from_datasets(parts, seed=seed, rerandomize_each_iteration=True)
    return mixed.take(len(rows))


def _training_dataset(bank: FeatureBank, recipe: Recipe, rows: np.ndarray, batch_size: int, seed: int) -> tf.data.Dataset:
    arrays = bank.arrays["train"]
    copies = [arrays[f"{recipe.copy_kind}:{k}"] for k in range(recipe.augment_copies)]
    variants = [arrays["clean"], arrays["flipped"]] + copies
    stacked = tf.constant(np.stack(variants, axis=1).astype(np.float32))  # (n, variants, d)
    labels = tf.constant(labels_of(bank.frames["train"]).astype(np.float32))
    generator = tf.random.Generator.from_seed(seed)

    def pick(position):  # one stored version of the row at random: clean, mirrored or a copy
        return stacked[position][generator.uniform((), 0, len(variants), dtype=tf.int32)], labels[position]

    positions = epoch_positions(bank.frames["train"], rows, recipe.balanced, seed)
    return positions.map(pick).batch(batch_size).prefetch(tf.data.AUTOTUNE)


def score(trained, bank: Bank, split: str, variant: str = "clean") -> np.ndarray:
    """P(fake) for every row of ``split`` under ``variant`` (``clean`` or a perturbation).

    ``bank`` is a :class:`FeatureBank` (frozen features, ``trained`` a :class:`TrainedHead`) or a
    :class:`helpers.finetuned.ImageBank` (images, a fine-tuned detector): every protocol below
    works with either, because it only trains through ``bank.train`` and scores through here.
    """
    return bank.score(trained, split, variant)


def _head_trainer(bank: FeatureBank, recipe: Recipe, seed: int) -> train.ReusableFit:
    """The bank's compiled head for ``recipe``'s architecture and loss (built once, reset per training)."""
    key = (recipe.dropout, recipe.label_smoothing, seed)
    if key not in bank.trainers:
        head = models.build_head("mobilenetv2", dropout=recipe.dropout, seed=seed)
        bank.trainers[key] = train.ReusableFit(head, recipe.label_smoothing)
    return bank.trainers[key]


def train_recipe(recipe: Recipe, bank: FeatureBank, out_dir: str | Path, batch_size: int = 32,
                 seed: int = 42) -> TrainedHead:
    """Train a head with ``recipe`` from its seeded initial weights; the threshold comes from the
    validation rows of its sources.

    Seeded as a whole (Keras, NumPy, TensorFlow), so the same recipe gives the same head whatever ran
    before; the head is the report's MobileNetV2 head (:func:`helpers.models.build_head`, the same
    initial weights as the detector's), trained by the bank's :class:`helpers.train.ReusableFit`.
    """
    trainer = _head_trainer(bank, recipe, seed)
    rows = rows_of_sources(bank.frames["train"], recipe.train_sources)
    val_rows = rows_of_sources(bank.frames["val"], recipe.train_sources)
    val_ds = tf.data.Dataset.from_tensor_slices(
        (bank.arrays["val"]["clean"][val_rows], labels_of(bank.frames["val"].iloc[val_rows]).astype(np.float32))
    ).batch(256)
    keras.utils.set_random_seed(seed)  # the training dataset's draws depend on the global seed too
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = trainer.fit(_training_dataset(bank, recipe, rows, batch_size, seed), val_ds, recipe.epochs,
                         recipe.learning_rate, patience=recipe.epochs,
                         log_path=out_dir / f"{checkpoint_name('head', recipe)}_log.csv")
    head = models.build_head("mobilenetv2", dropout=recipe.dropout, seed=seed)
    head.set_weights(trainer.model.get_weights())
    trained = TrainedHead(recipe, head, 0.5, result.best_val_auc, result.seconds)
    val_scores = score(trained, bank, "val")[val_rows]
    trained.threshold = choose_threshold(labels_of(bank.frames["val"].iloc[val_rows]), val_scores)
    return trained


def pair_auc(trained, bank: Bank, real_sources: list[str], fake_source: str,
             variant: str = "clean", n_boot: int = 1000, seed: int = 0) -> dict:
    """AUC [CI] of one fake source against the given real sources on the test split."""
    test = bank.frames["test"]
    keep = test["source"].isin([*real_sources, fake_source]).to_numpy()
    y, s = labels_of(test)[keep], score(trained, bank, "test", variant)[keep]
    auc, low, high = auc_ci(y, s, n_boot, seed)
    return dict(auc=auc, auc_lo=low, auc_hi=high, n=int(keep.sum()))


def _pair_name(real_sources: list[str], fake_source: str) -> str:
    return f"{'+'.join(real_sources)} vs {fake_source}"


def cross_source_matrix(recipe: Recipe, training_sets: dict[str, list[str] | None], test_pairs: list[tuple],
                        bank: Bank, out_dir: str | Path, n_boot: int = 1000, seed: int = 42) -> pd.DataFrame:
    """Rows: training set; columns: test pair (real sources vs fake source); AUC with 95% CI."""
    rows = []
    for name, sources in training_sets.items():
        trained = bank.train(type(recipe)(**{**recipe.to_dict(), "name": f"{recipe.name}_{name}",
                                             "train_sources": sources}), out_dir, seed=seed)
        for real_sources, fake_source in test_pairs:
            rows.append(dict(recipe=recipe.name, trained_on=name, test_pair=_pair_name(real_sources, fake_source),
                             **pair_auc(trained, bank, real_sources, fake_source, n_boot=n_boot, seed=seed)))
    return pd.DataFrame(rows)


def leave_one_generator_out(recipe: Recipe, bank: Bank, out_dir: str | Path, n_boot: int = 1000,
                            seed: int = 42, held_outs: list[str] | None = None) -> pd.DataFrame:
    """Train on every real source and all fake sources but one; AUC on the held-out one vs all reals.

    ``held_outs`` limits which generators are left out in turn (default: each one).
    """
    frame = bank.frames["train"]
    reals = sorted(frame.loc[frame.label == "real", "source"].unique())
    fakes = sorted(frame.loc[frame.label == "fake", "source"].unique())
    rows = []
    for held_out in held_outs or fakes:
        sources = reals + [f for f in fakes if f != held_out]
        trained = bank.train(type(recipe)(**{**recipe.to_dict(), "name": f"{recipe.name}_without_{held_out}",
                                             "train_sources": sources}), out_dir, seed=seed)
        seen = [pair_auc(trained, bank, reals, f, n_boot=n_boot, seed=seed)["auc"] for f in fakes if f != held_out]
        rows.append(dict(recipe=recipe.name, held_out=held_out,
                         **pair_auc(trained, bank, reals, held_out, n_boot=n_boot, seed=seed),
                         seen_generators_mean_auc=float(np.mean(seen))))
    return pd.DataFrame(rows)


def leave_one_real_source_out(recipe: Recipe, bank: Bank, out_dir: str | Path, n_boot: int = 1000,
                              seed: int = 42, held_outs: list[str] | None = None,
                              max_real_fpr: float = 0.05, served_answers: bool = False) -> pd.DataFrame:
    """The failure users meet first: real photos unlike any the detector was trained on.

    For each real source X (or each of ``held_outs``): train on every source but X; fix the
    operating point on validation rows of the training sources only (the lowest threshold keeping
    each of their real sources' false-positive rate at or below ``max_real_fpr``,
    :func:`helpers.stats.fpr_controlled_threshold`); then report, on test, X's false-positive
    rate and the fakes' detection rate at that threshold (Wilson 95% CIs), X's AUC against all
    fake test images (bootstrap CI), and X's false-positive rate at the Youden threshold for
    comparison. ``served_answers`` (fine-tuned detectors, :class:`helpers.finetuned.ImageBank`): also
    the served detector's three answers fitted without X (:func:`helpers.served.fit_answers`) — how
    much of X, and of the fakes, is called fake, real or unsure, and unsure for being unfamiliar.
    """
    frame = bank.frames["train"]
    reals = sorted(frame.loc[frame.label == "real", "source"].unique())
    fakes = sorted(frame.loc[frame.label == "fake", "source"].unique())
    val, test = bank.frames["val"], bank.frames["test"]
    is_fake = test["label"].to_numpy() == "fake"
    rows = []
    for held_out in held_outs or reals:
        sources = [r for r in reals if r != held_out] + fakes
        trained = bank.train(type(recipe)(**{**recipe.to_dict(), "name": f"{recipe.name}_without_{held_out}",
                                             "train_sources": sources}), out_dir, seed=seed)
        val_rows = rows_of_sources(val, sources)
        threshold = fpr_controlled_threshold(val.iloc[val_rows], score(trained, bank, "val")[val_rows], max_real_fpr)
        s = score(trained, bank, "test")
        own = test["source"].to_numpy() == held_out
        n_real, n_fake = int(own.sum()), int(is_fake.sum())
        false_positives, detected = int((s[own] >= threshold).sum()), int((s[is_fake] >= threshold).sum())
        fpr_ci, detection_ci = wilson_ci(false_positives, n_real), wilson_ci(detected, n_fake)
        keep = own | is_fake
        auc, low, high = auc_ci(is_fake[keep].astype(int), s[keep], n_boot, seed)
        rows.append(dict(recipe=recipe.name, held_out=held_out, threshold=threshold,
                         fpr=false_positives / max(n_real, 1), fpr_lo=fpr_ci[0], fpr_hi=fpr_ci[1], n_real=n_real,
                         detection=detected / max(n_fake, 1), detection_lo=detection_ci[0],
                         detection_hi=detection_ci[1], n_fake=n_fake,
                         auc=auc, auc_lo=low, auc_hi=high, youden_threshold=trained.threshold,
                         fpr_at_youden=float((s[own] >= trained.threshold).mean())))
        if served_answers:
            from helpers import served

            fitted = served.fit_answers(trained, bank, sources, seed=seed, max_real_fpr=max_real_fpr)
            rows[-1].update(served.held_out_answers(fitted, test, held_out))
    return pd.DataFrame(rows)


def robustness_grid(trained, bank: Bank, perturbations: tuple[str, ...] = ROBUSTNESS_GRID,
                    n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """AUC [CI] and accuracy at the fixed validation threshold, clean and under each perturbation."""
    y = labels_of(bank.frames["test"])
    rows = []
    for variant in ("clean", *perturbations):
        s = score(trained, bank, "test", variant)
        auc, low, high = auc_ci(y, s, n_boot, seed)
        rows.append(dict(recipe=trained.recipe.name, perturbation=variant, auc=auc, auc_lo=low, auc_hi=high,
                         accuracy=float(((s >= trained.threshold) == y).mean()),
                         fpr=float((s[y == 0] >= trained.threshold).mean())))
    table = pd.DataFrame(rows)
    table["auc_drop"] = table.loc[0, "auc"] - table["auc"]
    return table


def format_shortcut(trained, bank: Bank, recode: str = "recode:256", n_boot: int = 1000,
                    seed: int = 0) -> dict:
    """Test AUC before and after re-encoding every image to one size and JPEG quality 90."""
    grid = robustness_grid(trained, bank, (recode,), n_boot, seed)
    return dict(recipe=trained.recipe.name, clean_auc=float(grid.auc[0]), recoded_auc=float(grid.auc[1]),
                change=float(grid.auc[1] - grid.auc[0]), recoded_ci=(float(grid.auc_lo[1]), float(grid.auc_hi[1])))


def recipe_summary(trained, bank: Bank, checks: dict[str, tuple]) -> dict:
    """One ablation-table row: in-distribution and named pair AUCs, JPEG/rescale drops, worst real FPR,
    format-shortcut change (point estimates: the row shows no intervals, the protocol tables do).
    ``checks`` maps a column name to ``(real_sources, fake_source)``."""
    test = bank.frames["test"]
    y, s = labels_of(test), score(trained, bank, "test")
    own = rows_of_sources(test, trained.recipe.train_sources)
    row = dict(recipe=trained.recipe.name, trained_on="+".join(trained.recipe.train_sources or ["all sources"]),
               val_auc=trained.val_auc, in_distribution_auc=auc_ci(y[own], s[own], n_boot=0)[0])
    for name, (reals, fake) in checks.items():
        row[name] = pair_auc(trained, bank, reals, fake, n_boot=0)["auc"]
    grid = robustness_grid(trained, bank, ("jpeg:50", "scale:0.5"), n_boot=0).set_index("perturbation")
    row["jpeg50_drop"] = float(grid.loc["jpeg:50", "auc_drop"])
    row["scale0.5_drop"] = float(grid.loc["scale:0.5", "auc_drop"])
    reals = test["label"].to_numpy() == "real"
    fprs = {src: float((s[reals & (test.source.to_numpy() == src)] >= trained.threshold).mean())
            for src in test.loc[reals, "source"].unique()}
    row["worst_real_fpr"] = max(fprs.values()) if fprs else float("nan")
    row["format_change"] = format_shortcut(trained, bank, n_boot=0)["change"]
    row["train_seconds"] = round(trained.seconds, 1)
    return row


def targets_table(improved: dict, matrix: pd.DataFrame, logo: pd.DataFrame, improved_name: str,
                  narrow_set: str, in_distribution_pair: str, transfer_pair: str, gan_generators: list[str],
                  all_sources_checks: list[str]) -> pd.DataFrame:
    """The issue's targets next to what the improved recipe measured, and whether each is met."""
    def cell(trained_on: str, pair: str) -> float:
        hit = matrix[(matrix.recipe == improved_name) & (matrix.trained_on == trained_on) & (matrix.test_pair == pair)]
        return float(hit.auc.iloc[0]) if len(hit) else float("nan")

    rows = [(f"trained on {narrow_set}: {transfer_pair} AUC", ">= 0.97", cell(narrow_set, transfer_pair), 0.97, 1),
            (f"trained on {narrow_set}: in distribution ({in_distribution_pair}) AUC", ">= 0.99",
             cell(narrow_set, in_distribution_pair), 0.99, 1)]
    for generator in gan_generators:
        hit = logo[(logo.recipe == improved_name) & (logo.held_out == generator)]
        rows.append((f"leave-one-generator-out: {generator} AUC", ">= 0.90",
                     float(hit.auc.iloc[0]) if len(hit) else float("nan"), 0.90, 1))
    for check in all_sources_checks:
        rows.append((f"trained on all sources: {check} AUC", ">= 0.99", float(improved.get(check, np.nan)), 0.99, 1))
    rows += [("JPEG quality 50: AUC drop", "<= 0.03", improved["jpeg50_drop"], 0.03, -1),
             ("downscale 0.5: AUC drop", "<= 0.05", improved["scale0.5_drop"], 0.05, -1),
             ("worst real-source false-positive rate", "<= 0.05", improved["worst_real_fpr"], 0.05, -1),
             ("format-shortcut check: |AUC change|", "<= 0.02", abs(improved["format_change"]), 0.02, -1)]
    table = pd.DataFrame(rows, columns=["target", "goal", "measured", "bound", "direction"])
    met = np.where(table.direction > 0, table.measured >= table.bound, table.measured <= table.bound)
    table["met"] = pd.Series(met, dtype=object).where(table.measured.notna(), "not measured")
    return table.drop(columns=["bound", "direction"])
