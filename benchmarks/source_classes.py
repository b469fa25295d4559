"""The fine-tuned detector with a head that tells the training sources apart (``served_recipe_ablation.py
--source-classes``).

Every detector of the lab ends in one sigmoid unit, fake against real. Here the served recipe's detector
ends in a softmax over the sources it trains on (six real, four fake on every source; one fewer in a
leave-one-out fold), trained with the source of each picture as its label, and its P(fake) is the summed
probability of the fake sources' classes — a fixed sum after the softmax, so the model served, exported
and scored is a one-output detector like every other. The frozen-feature screen
(``intermediate_features_screen.py --head multiclass``) found this lifts the in-distribution AUC and most
unseen rankings on the same features; this measures it where the served recipe is chosen, fine-tuned.

Everything else is the served recipe's training (:func:`helpers.finetuned.train_finetuned`): the same
MobileNetV2 and head layers, the head stage on the frozen base and then the whole base with every
BatchNormalization layer frozen (:func:`helpers.models.prepare_finetune`), source-balanced batches over
the same stored blur/JPEG/crop copies, the best validation-AUC epoch of each stage kept (the AUC of the
summed P(fake) against fake/real), the threshold chosen on validation. No trained-model cache: the key
would not know the head.
"""

from __future__ import annotations

import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from helpers import finetuned, models
from helpers.pipeline import labels_of
from helpers.protocols import checkpoint_name, rows_of_sources
from helpers.stats import choose_threshold


class FakeAUC(keras.metrics.AUC):
    """ROC AUC of the summed fake-class probability against fake/real, from source labels."""

    def __init__(self, fake_classes: list[bool], name: str = "auc", **kwargs):
        super().__init__(name=name, **kwargs)
        self.fake_classes = [bool(v) for v in fake_classes]
        self._mask = tf.constant(self.fake_classes, tf.float32)

    def update_state(self, y_true, y_pred, sample_weight=None):
        is_fake = tf.gather(self._mask, tf.cast(tf.reshape(y_true, (-1,)), tf.int32))
        return super().update_state(is_fake, tf.reduce_sum(y_pred * self._mask, axis=-1), sample_weight)

    def get_config(self) -> dict:
        return {**super().get_config(), "fake_classes": self.fake_classes}


def source_model(detector: keras.Model, n_classes: int, seed: int) -> keras.Model:
    """``detector`` with its sigmoid unit replaced by a softmax over ``n_classes`` sources (seeded)."""
    hidden = detector.get_layer("prediction").input
    probabilities = layers.Dense(n_classes, activation="softmax", dtype="float32",
                                 kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
                                 name="sources")(hidden)
    return keras.Model(detector.inputs, probabilities, name="mobilenetv2_source_detector")


def fake_detector(model: keras.Model, fake_classes: np.ndarray) -> keras.Model:
    """The inference form of a source model (no augmentation, dropout off) whose one output is P(fake):
    the fake classes' probabilities summed by a fixed, untrained unit."""
    inference = models.inference_model(model)
    summed = layers.Dense(1, use_bias=False, trainable=False, dtype="float32", name="fake_sum")
    output = summed(inference.output)
    summed.set_weights([np.asarray(fake_classes, np.float32).reshape(-1, 1)])
    return keras.Model(inference.inputs, output, name="mobilenetv2_source_detector_inference")


def fit_stage(model: keras.Model, train_ds, val_ds, epochs: int, learning_rate: float, fake_classes: np.ndarray,
              path: Path) -> dict:
    """One stage: Adam, source cross-entropy, the best validation-AUC epoch's weights kept."""
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(), metrics=[FakeAUC(list(fake_classes))])
    checkpoint = path.with_name(path.name + ".weights.h5")
    callbacks = [keras.callbacks.ModelCheckpoint(checkpoint, monitor="val_auc", mode="max", save_best_only=True,
                                                 save_weights_only=True),
                 keras.callbacks.CSVLogger(str(path.with_name(path.name + "_log.csv")))]
    start = time.perf_counter()
    history = model.fit(train_ds, validation_data=val_ds, epochs=epochs, callbacks=callbacks, verbose=0,
                        shuffle=False)
    model.load_weights(checkpoint)
    aucs = history.history["val_auc"]
    return dict(best_val_auc=float(max(aucs)), best_epoch=int(np.argmax(aucs)) + 1,
                seconds=time.perf_counter() - start)


def train_source_classes(recipe: finetuned.FinetuneRecipe, bank: finetuned.ImageBank, out_dir: str | Path,
                         seed: int = 42) -> finetuned.TrainedDetector:
    """Train the served recipe's detector with a softmax over its training sources (see the module)."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    detector, weights = models.build_mobilenetv2(image_size=bank.image_size, dropout=recipe.dropout,
                                                 augment="flip", seed=seed)
    train_frame, val_frame = bank.frames["train"], bank.frames["val"]
    rows = rows_of_sources(train_frame, recipe.train_sources)
    val_rows = rows_of_sources(val_frame, recipe.train_sources)
    classes = sorted(train_frame["source"].iloc[rows].unique())
    fake_sources = set(train_frame["source"].iloc[rows][labels_of(train_frame.iloc[rows]) == 1])
    fake_classes = np.array([c in fake_sources for c in classes])
    index = {source: i for i, source in enumerate(classes)}
    source_index = train_frame["source"].map(index).fillna(-1).to_numpy(np.int32)  # -1: not trained on
    val_index = val_frame["source"].iloc[val_rows].map(index).to_numpy(np.int32)
    val_ds = tf.data.Dataset.from_tensor_slices((bank.images_of("val")[val_rows], val_index)).batch(
        bank.batch_size).map(lambda x, y: (tf.cast(x, tf.float32), y))
    model = source_model(detector, len(classes), seed)
    train_ds = finetuned.training_dataset(bank, recipe, rows, bank.batch_size, seed, labels=source_index)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = checkpoint_name("source_classes", recipe)
    stages = {"head": fit_stage(model, train_ds, val_ds, recipe.epochs, recipe.learning_rate, fake_classes,
                                out_dir / f"{name}_head")}
    unfrozen = models.prepare_finetune(model, recipe.trainable_fraction, freeze_batchnorm=True)
    stages["finetune"] = fit_stage(model, train_ds, val_ds, recipe.finetune_epochs, recipe.finetune_learning_rate,
                                   fake_classes, out_dir / f"{name}_finetune")
    notes = dict(weights=weights.source, classes=classes, fake_classes=fake_classes.tolist(), **unfrozen,
                 **{f"{stage}_best_val_auc": round(r["best_val_auc"], 4) for stage, r in stages.items()})
    trained = finetuned.TrainedDetector(recipe, fake_detector(model, fake_classes), 0.5,
                                        stages["finetune"]["best_val_auc"],
                                        sum(r["seconds"] for r in stages.values()), notes)
    val_labels = labels_of(val_frame.iloc[val_rows])
    trained.threshold = choose_threshold(val_labels, bank.score(trained, "val")[val_rows])
    return trained


class SourceClassesBank(finetuned.ImageBank):
    """An :class:`helpers.finetuned.ImageBank` that trains every recipe with the ten-source head; scoring,
    and so every protocol, is the image bank's own."""

    def train(self, recipe: finetuned.FinetuneRecipe, out_dir: str | Path, seed: int = 42) -> finetuned.TrainedDetector:
        return train_source_classes(recipe, self, out_dir, seed=seed)
