"""Fine-tuned recipes under the same generalization protocols as the frozen-feature heads (notebook 08).

:class:`helpers.protocols.FeatureBank` trains heads on cached frozen features; that cannot answer
"how much of the base to fine-tune". :class:`ImageBank` answers it with the same protocol functions
(:func:`helpers.protocols.cross_source_matrix`, ``leave_one_generator_out``, ``robustness_grid``,
``format_shortcut``, ``calibration``, ``recipe_summary``): it decodes each split once at the
model's size and keeps it in memory — the training images with ``augment_copies`` blur/JPEG/crop
copies (:mod:`helpers.perturb`), the test images under each perturbation as a protocol first asks
for it — and trains a whole MobileNetV2 detector per :class:`FinetuneRecipe`: the head on the
frozen base, then the top ``trainable_fraction`` of the base with every BatchNormalization layer
frozen (:func:`helpers.models.prepare_finetune`), keeping the best validation-AUC epoch of each
stage. Each epoch draws, per training image, one of its stored versions at random (and the
detector mirrors at random), with source-balanced batches when the recipe says so.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from helpers import models, train, training_cache
from helpers.perturb import then
from helpers.pipeline import labels_of, load_array, load_patch_array
from helpers.protocols import Recipe, checkpoint_name, epoch_positions, rows_of_sources
from helpers.stats import choose_threshold


@dataclass
class FinetuneRecipe(Recipe):
    """A :class:`helpers.protocols.Recipe` trained end to end on images.

    ``epochs`` and ``learning_rate`` are the head stage (frozen base); then ``finetune_epochs`` at
    ``finetune_learning_rate`` with the top ``trainable_fraction`` of the base unfrozen
    (0: the head stage only, i.e. the frozen recipe trained on images). ``weight_averaging`` > 0:
    each stage validates, keeps and serves the exponential moving average of its weights with that
    momentum (:func:`helpers.train.compile_detector`); 0 serves the weights as trained.
    ``residual_branch``: a noise-residual branch beside MobileNetV2 (:func:`helpers.models.with_residual_branch`).
    ``block_taps``: the head reads six blocks' pooled activations and spreads, not the last map's alone
    (:func:`helpers.block_taps.with_block_taps`).
    ``score_reencode``: a perturbation (:mod:`helpers.perturb`, e.g. ``"jpeg:95"``) every picture the
    detector scores goes through at its own resolution, before the resize — validation, test and served
    pictures alike (after any perturbation a protocol applies first); training images are unchanged, so
    it is not part of a training's cache key. Empty: pictures are scored as they come.
    """

    epochs: int = 2
    trainable_fraction: float = 0.3
    finetune_epochs: int = 5
    finetune_learning_rate: float = 1e-4
    weight_averaging: float = 0.0
    residual_branch: bool = False
    block_taps: bool = False
    score_reencode: str = ""


SCORING_ONLY = ("name", "score_reencode")  # recipe fields that do not change a training


@dataclass
class TrainedDetector:
    """A fine-tuned detector with its validation threshold; scores are cached per (split, variant)."""

    recipe: FinetuneRecipe
    model: keras.Model            # inference form: no augmentation, dropout off
    threshold: float
    val_auc: float
    seconds: float
    notes: dict = field(default_factory=dict)
    scores: dict[tuple[str, str], np.ndarray] = field(default_factory=dict, repr=False)


FRAMINGS = ("resize", "native_patch")


class ImageBank:
    """The split's images at one size, decoded once and held in memory; trains and scores detectors.

    ``framing``: ``resize`` (the whole image resized to ``image_size``) or ``native_patch`` (a patch of
    ``image_size`` pixels at the file's own resolution — centred for scoring, at a seeded random
    position in each augmentation copy; :func:`helpers.pipeline.load_patch_array`). ``trained_cache``
    (e.g. ``runs/cache/trained``): a detector trained before with the same recipe, data, seed and
    code is read back from there instead of trained again (:mod:`helpers.training_cache`).
    """

    def __init__(self, split_frame: pd.DataFrame, root: str | Path, image_size: int, batch_size: int = 32,
                 framing: str = "resize", trained_cache: str | Path | None = None):
        if framing not in FRAMINGS:
            raise ValueError(f"framing must be one of {FRAMINGS}, not {framing!r}")
        self.root, self.image_size, self.batch_size, self.framing = Path(root), image_size, batch_size, framing
        self.trained_cache = Path(trained_cache) if trained_cache is not None else None
        self.frames = {s: split_frame[split_frame["split"] == s].reset_index(drop=True)
                       for s in ("train", "val", "test")}
        self.images: dict[str, dict[str, np.ndarray]] = {s: {} for s in self.frames}
        self.seconds = 0.0  # decoding time so far

    def images_of(self, split: str, variant: str = "clean") -> np.ndarray:
        """uint8 ``(n, size, size, 3)`` images of ``split``, ``clean`` or under a perturbation."""
        if variant not in self.images[split]:
            start = time.perf_counter()
            load = load_patch_array if self.framing == "native_patch" else load_array
            self.images[split][variant] = load(self.frames[split], self.root, self.image_size,
                                               perturbation=None if variant == "clean" else variant)
            self.seconds += time.perf_counter() - start
        return self.images[split][variant]

    def train(self, recipe: FinetuneRecipe, out_dir: str | Path, seed: int = 42) -> TrainedDetector:
        """A detector trained with ``recipe`` (:func:`train_finetuned`)."""
        return train_finetuned(recipe, self, out_dir, seed=seed)

    def scored_images(self, trained: TrainedDetector, split: str, variant: str = "clean") -> np.ndarray:
        """The images of ``split`` under ``variant`` as ``trained`` scores them (then its ``score_reencode``)."""
        return self.images_of(split, then(variant, getattr(trained.recipe, "score_reencode", "")))

    def score(self, trained: TrainedDetector, split: str, variant: str = "clean") -> np.ndarray:
        """P(fake) of every row of ``split`` under ``variant`` (then the recipe's ``score_reencode``),
        averaged with the mirror when the recipe says so."""
        key = (split, variant)
        if key not in trained.scores:
            images = self.scored_images(trained, split, variant)
            scores = predict_images(trained.model, images, self.batch_size)
            if trained.recipe.tta_flip:
                scores = (scores + predict_images(trained.model, images, self.batch_size, mirror=True)) / 2
            trained.scores[key] = scores
        return trained.scores[key]


def predict_images(model: keras.Model, images: np.ndarray, batch_size: int = 32, mirror: bool = False) -> np.ndarray:
    """P(fake) for uint8 images (optionally mirrored left-right), batch by batch."""
    dataset = tf.data.Dataset.from_tensor_slices(images).batch(batch_size)
    dataset = dataset.map(lambda x: tf.image.flip_left_right(tf.cast(x, tf.float32)) if mirror
                          else tf.cast(x, tf.float32)).prefetch(tf.data.AUTOTUNE)
    return model.predict(dataset, verbose=0).reshape(-1)


def training_dataset(bank: ImageBank, recipe: FinetuneRecipe, rows: np.ndarray, batch_size: int,
                     seed: int, labels: np.ndarray | None = None) -> tf.data.Dataset:
    """Batches of (images, labels) over ``rows`` of the training split: each epoch, each image in one of
    its stored versions (clean or an augmentation copy) at random; source-balanced if the recipe says so.
    ``labels``: one per training row, in place of fake = 1.0 / real = 0.0 (e.g. a class index per source)."""
    versions = [bank.images_of("train")] + [bank.images_of("train", f"{recipe.copy_kind}:{k}")
                                            for k in range(recipe.augment_copies)]
    labels = labels_of(bank.frames["train"]).astype(np.float32) if labels is None else np.asarray(labels)
    label_dtype = tf.as_dtype(labels.dtype)
    positions = epoch_positions(bank.frames["train"], rows, recipe.balanced, seed)
    generator = tf.random.Generator.from_seed(seed)
    with_version = positions.map(lambda i: (i, generator.uniform((), 0, len(versions), dtype=tf.int64)))

    def gather(index: np.ndarray, version: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        images = np.stack([versions[v][i] for i, v in zip(index, version)])
        return images, labels[index]

    def load(index, version):
        images, y = tf.numpy_function(gather, [index, version], [tf.uint8, label_dtype], stateful=False)
        images.set_shape((None, bank.image_size, bank.image_size, 3))
        y.set_shape((None,))
        return tf.cast(images, tf.float32), y

    return with_version.batch(batch_size).map(load, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def train_finetuned(recipe: FinetuneRecipe, bank: ImageBank, out_dir: str | Path, seed: int = 42,
                    verbose: int = 0) -> TrainedDetector:
    """Train a fresh ImageNet MobileNetV2 detector with ``recipe``; the threshold comes from the
    validation rows of its training sources (scored as it will be tested, with the flip if any)."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    detector, weights = models.build_mobilenetv2(image_size=bank.image_size, dropout=recipe.dropout,
                                                 augment="flip", seed=seed, residual=recipe.residual_branch,
                                                 block_taps=recipe.block_taps)
    rows = rows_of_sources(bank.frames["train"], recipe.train_sources)
    val_rows = rows_of_sources(bank.frames["val"], recipe.train_sources)
    val_labels = labels_of(bank.frames["val"].iloc[val_rows]).astype(np.float32)
    val_ds = tf.data.Dataset.from_tensor_slices((bank.images_of("val")[val_rows], val_labels)).batch(
        bank.batch_size).map(lambda x, y: (tf.cast(x, tf.float32), y))
    name = checkpoint_name("finetuned", recipe)
    finetune_epochs = recipe.finetune_epochs if recipe.trainable_fraction > 0 else 0
    cache = None
    if bank.trained_cache is not None:
        data = dict(train=training_cache.data_fingerprint(bank.frames["train"], bank.root),
                    val=training_cache.data_fingerprint(bank.frames["val"], bank.root), seed=seed,
                    recipe={k: v for k, v in recipe.to_dict().items() if k not in SCORING_ONLY},
                    image_size=bank.image_size, batch_size=bank.batch_size, framing=bank.framing)
        cache = training_cache.CacheSpec(bank.trained_cache, data, code=("helpers.finetuned",))
    results = train.train_two_stage(detector, lambda: training_dataset(bank, recipe, rows, bank.batch_size, seed), val_ds,
                                    out_dir, name, recipe.epochs, recipe.learning_rate, finetune_epochs,
                                    recipe.finetune_learning_rate, recipe.trainable_fraction,
                                    patience=max(recipe.epochs, finetune_epochs), verbose=verbose,
                                    label_smoothing=recipe.label_smoothing, ema_momentum=recipe.weight_averaging,
                                    cache=cache)
    last = results["finetune"] if "finetune" in results else results["head"]
    notes = dict(weights=weights.source, weights_warning=weights.warning,
                 **{f"{stage}_best_val_auc": round(r.best_val_auc, 4) for stage, r in results.items()},
                 **last.notes)
    trained = TrainedDetector(recipe, models.inference_model(detector), 0.5, last.best_val_auc,
                              sum(r.seconds for r in results.values()), notes)
    val_scores = bank.score(trained, "val")[val_rows]
    trained.threshold = choose_threshold(val_labels.astype(int), val_scores)
    return trained
