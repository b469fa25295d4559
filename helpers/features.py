"""The frozen-feature cache: run a frozen backbone once per image (and per flip), train heads on the cache.

While the backbone is frozen, every epoch of head training recomputes the same backbone
features: that is nearly all the cost of the report's grids (Tables 3 and 4). Here the pooled
features of each image and of its mirror image are computed once and stored on disk; heads are
then trained on the cached vectors, drawing the original or the mirrored vector at random each
epoch — exactly what the detector's ``RandomFlip`` augmentation does. A detector built with
``augment="flip"`` trained the naive way is the like-for-like reference (the benchmark checks
both select the same grid point).

The head model shares its layers with the detector (:func:`head_model`), so training it trains
the detector's head in place: the detector can then be evaluated, explained and fine-tuned.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from helpers import atomic
from helpers.models import inference_trunk, model_parts
from helpers.pipeline import labels_of, make_dataset


def pooled_extractor(model: keras.Model) -> keras.Model:
    """Image → pooled backbone features, in inference mode (no augmentation, no dropout)."""
    inputs, x, head = inference_trunk(model)
    if not head or head[0].name != "gap":
        raise ValueError(f"{model.name} has no global-average-pooling layer after its backbone: not cacheable")
    return keras.Model(inputs, head[0](x), name=f"{model.name}_features")


def scores_and_features(model: keras.Model) -> keras.Model:
    """Image → (P(fake), pooled backbone features) in one pass, inference mode (the served detector's
    "unlike the training images" check needs both)."""
    inputs, x, head = inference_trunk(model)
    if not head or head[0].name != "gap":
        raise ValueError(f"{model.name} has no global-average-pooling layer after its backbone")
    pooled = head[0](x)
    y = pooled
    for layer in head[1:]:
        y = layer(y, training=False)
    return keras.Model(inputs, [y, pooled], name=f"{model.name}_scores_features")


def head_model(model: keras.Model) -> keras.Model:
    """Pooled features → P(fake), reusing the detector's own head layers (weights are shared)."""
    _, _, head = model_parts(model)
    inputs = keras.Input(head[0].output.shape[1:], name="features")
    x = inputs
    for layer in head[1:]:
        x = layer(x)
    return keras.Model(inputs, x, name=f"{model.name}_head")


def cache_key(model: keras.Model, frame: pd.DataFrame, root: str | Path, image_size: int, preprocessing: str,
              extra: str = "") -> str:
    """Identifies a feature set by everything that decides its arrays: the layers before the backbone and the
    backbone (architecture and every weight), the rows (paths and labels, in order) and each file's size and
    modification time under ``root`` (:func:`helpers.training_cache.data_fingerprint`), the input size,
    preprocessing and ``extra`` (flips, perturbation)."""
    from helpers.training_cache import architecture, data_fingerprint

    before, base, _ = model_parts(model)
    digest = hashlib.sha1(architecture(base).encode())
    for layer in before:
        digest.update(json.dumps(layer.get_config(), sort_keys=True, default=str).encode())
    for weight in base.weights:
        digest.update(np.ascontiguousarray(np.asarray(weight)).tobytes())
    rows = frame.assign(label=frame["label"].astype(str)) if "label" in frame else frame
    digest.update(json.dumps([image_size, preprocessing, extra, data_fingerprint(rows, root)]).encode())
    return digest.hexdigest()[:16]


def extract_features(model: keras.Model, frame: pd.DataFrame, root: str | Path, image_size: int,
                     batch_size: int = 64, flips: bool = True, preprocessing: str = "none",
                     cache_dir: str | Path | None = None, perturbation: str | None = None) -> dict[str, np.ndarray]:
    """Pooled features of every row (``features``) and of its mirror image (``flipped``), plus labels.

    With ``cache_dir``, the arrays are stored as ``<key>.npz`` and read back on the next call with
    the same model weights, images, size and preprocessing. ``seconds`` reports the extraction time
    (0 when read from the cache). ``perturbation`` (e.g. ``"jpeg:50"``, ``"augment:0"``) is applied
    to each image first (see :mod:`helpers.perturb`).
    """
    key = cache_key(model, frame, root, image_size, preprocessing, f"{flips}|{perturbation}")
    target = Path(cache_dir) / f"{key}.npz" if cache_dir else None
    def read(path: Path) -> dict[str, np.ndarray]:
        with np.load(path) as stored:
            return {k: stored[k] for k in stored.files}

    kept = atomic.read_kept(target, read, "feature cache") if target is not None else None
    if kept is not None:
        return {**kept, "seconds": np.float64(0.0)}
    extractor = pooled_extractor(model)
    start = time.perf_counter()
    dataset = make_dataset(frame, root, image_size, batch_size, cache=False, preprocessing=preprocessing,
                           perturbation=perturbation)
    plain, mirrored = [], []
    for images, _ in dataset:
        plain.append(extractor(images, training=False).numpy())
        if flips:
            mirrored.append(extractor(tf.image.flip_left_right(images), training=False).numpy())
    width = extractor.output_shape[-1]
    result = {"features": np.concatenate(plain) if plain else np.zeros((0, width), np.float32),
              "labels": labels_of(frame).astype(np.float32)}
    if flips:
        result["flipped"] = np.concatenate(mirrored) if mirrored else np.zeros((0, width), np.float32)
    if target is not None:
        with atomic.atomic_path(target) as partial:  # this process's own: notebooks run at once
            np.savez(partial, **result)
    return {**result, "seconds": np.float64(time.perf_counter() - start)}


def cached_dataset(cache: dict[str, np.ndarray], batch_size: int = 32, shuffle: bool = False,
                   seed: int = 42) -> tf.data.Dataset:
    """Batches of ``(features, labels)``; in training (``shuffle``) each example is its original or
    mirrored vector at random, redrawn every epoch (the cached form of ``RandomFlip``)."""
    features = cache["features"].astype(np.float32)
    labels = cache["labels"].astype(np.float32)
    flipped = cache.get("flipped")
    dataset = tf.data.Dataset.from_tensor_slices((features, flipped if flipped is not None else features, labels))
    if shuffle:
        dataset = dataset.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
        generator = tf.random.Generator.from_seed(seed)

        def pick(plain, mirrored, label):
            use_mirror = generator.uniform(()) < 0.5
            return tf.where(use_mirror, mirrored, plain), label
    else:
        def pick(plain, mirrored, label):
            return plain, label
    return dataset.map(pick).batch(batch_size).prefetch(tf.data.AUTOTUNE)
