"""``tf.data`` input pipelines built on the validated loader.

Decoding and resizing run in parallel through :func:`helpers.data.load_image` (Pillow
releases the GIL while it decodes), decoded images are cached in memory after the first
pass (as uint8), and batches are prefetched. Models receive uint8-range float images of shape
``(size, size, 3)``; each model does its own preprocessing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf

from helpers.data import LABEL_TO_INT, labels_of, load_for_model  # noqa: F401 (labels_of: re-exported)


class ImageLoadError(RuntimeError):
    """An image that passed the scan failed to load later (file changed on disk)."""


def _decode_fn(root: Path, size: int, preprocessing: str = "none", perturbation: str | None = None):
    def decode(path_bytes: bytes) -> np.ndarray:
        rel = path_bytes.decode() if isinstance(path_bytes, bytes) else str(path_bytes)
        loaded = load_for_model(root / rel, size, preprocessing, perturbation)
        if not loaded.ok:
            raise ImageLoadError(f"{rel}: {loaded.error} (re-run the scan in notebook 01)")
        return loaded.image

    return decode


def make_dataset(frame: pd.DataFrame, root: str | Path, image_size: int, batch_size: int = 32,
                 shuffle: bool = False, seed: int = 42, cache: bool = True,
                 preprocessing: str = "none", perturbation: str | None = None) -> tf.data.Dataset:
    """Batches of ``(images, labels)`` for the rows of a manifest/split frame.

    Args:
        frame: rows with ``path`` (relative to ``root``) and ``label`` (``real``/``fake``).
        root: the face data root.
        image_size: square size images are resized to.
        batch_size: batch size.
        shuffle: reshuffle every epoch (seeded), for training.
        seed: shuffle seed.
        cache: keep decoded images in memory after the first epoch.
        preprocessing: ``none``, ``ela`` or ``denoise`` (see :func:`helpers.data.load_for_model`).
        perturbation: e.g. ``"jpeg:50"`` (see :mod:`helpers.perturb`), applied before resizing.
    """
    root = Path(root)
    paths = frame["path"].astype(str).to_numpy()
    labels = frame["label"].map(LABEL_TO_INT).astype("float32").to_numpy()
    decode = _decode_fn(root, image_size, preprocessing, perturbation)

    def load(path: tf.Tensor, label: tf.Tensor):
        image = tf.numpy_function(decode, [path], tf.uint8, stateful=False)
        image.set_shape((image_size, image_size, 3))
        return image, label

    dataset = tf.data.Dataset.from_tensor_slices((paths, labels))
    dataset = dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if cache:
        dataset = dataset.cache()  # uint8: a quarter of the memory of cached float32 images
    if shuffle:
        dataset = dataset.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size).map(lambda x, y: (tf.cast(x, tf.float32), y),
                                            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.prefetch(tf.data.AUTOTUNE)


def split_datasets(split_frame: pd.DataFrame, root: str | Path, image_size: int,
                   batch_size: int = 32, seed: int = 42, preprocessing: str = "none") -> dict[str, tf.data.Dataset]:
    """Train (shuffled), val and test datasets from a split frame."""
    return {
        split: make_dataset(split_frame[split_frame["split"] == split], root, image_size,
                            batch_size=batch_size, shuffle=(split == "train"), seed=seed,
                            preprocessing=preprocessing)
        for split in ("train", "val", "test")
    }


def load_array(frame: pd.DataFrame, root: str | Path, image_size: int,
               batch_size: int = 64, preprocessing: str = "none", perturbation: str | None = None) -> np.ndarray:
    """All images of ``frame`` as one uint8 array ``(n, size, size, 3)`` (plots, heatmaps, in-memory training)."""
    dataset = make_dataset(frame, root, image_size, batch_size=batch_size, cache=False,
                           preprocessing=preprocessing, perturbation=perturbation)
    batches = [images.numpy().astype(np.uint8) for images, _ in dataset]
    if not batches:
        return np.zeros((0, image_size, image_size, 3), np.uint8)
    return np.concatenate(batches)


