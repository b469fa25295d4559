"""``tf.data`` input pipelines built on the validated loader.

Decoding and resizing run in parallel through :func:`helpers.data.load_image` (Pillow
releases the GIL while it decodes), decoded images are cached in memory after the first
pass (as uint8), and batches are prefetched. Models receive uint8-range float images of shape
``(size, size, 3)``; each model does its own preprocessing.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf
from PIL import Image

from helpers.data import LABEL_TO_INT, ImageLoadError, labels_of, load_image  # noqa: F401 (re-exported)
from helpers.preprocess import load_for_model


def _decode_fn(root: Path, size: int, preprocessing: str = "none", perturbation: str | None = None):
    def decode(path_bytes: bytes) -> np.ndarray:
        rel = path_bytes.decode() if isinstance(path_bytes, bytes) else str(path_bytes)
        return load_for_model(root / rel, size, preprocessing, perturbation).required(rel)

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
        preprocessing: ``none``, ``ela`` or ``denoise`` (see :func:`helpers.preprocess.load_for_model`).
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


def datasets_key(split_frame: pd.DataFrame, root: str | Path, image_size: int, batch_size: int = 32,
                 seed: int = 42, preprocessing: str = "none") -> dict:
    """What identifies the training and validation data of :func:`split_datasets` with these arguments
    (for the trained-model cache, :mod:`helpers.training_cache`): the rows and files, and the settings."""
    from helpers.training_cache import data_fingerprint

    return dict(**{s: data_fingerprint(split_frame[split_frame["split"] == s], root) for s in ("train", "val")},
                image_size=image_size, batch_size=batch_size, seed=seed, preprocessing=preprocessing)


def load_array(frame: pd.DataFrame, root: str | Path, image_size: int,
               batch_size: int = 64, preprocessing: str = "none", perturbation: str | None = None) -> np.ndarray:
    """All images of ``frame`` as one uint8 array ``(n, size, size, 3)`` (plots, heatmaps, in-memory training)."""
    dataset = make_dataset(frame, root, image_size, batch_size=batch_size, cache=False,
                           preprocessing=preprocessing, perturbation=perturbation)
    batches = [images.numpy().astype(np.uint8) for images, _ in dataset]
    if not batches:
        return np.zeros((0, image_size, image_size, 3), np.uint8)
    return np.concatenate(batches)


def native_patch(image: np.ndarray, size: int, seed: int | None = None) -> np.ndarray:
    """A ``size x size`` patch of ``image`` at its own resolution, not resized: centred, or at a random
    position drawn from ``seed``. An image whose shorter side is below ``size`` is first enlarged
    (bilinear) just enough for that side to equal ``size``."""
    height, width = image.shape[:2]
    if min(height, width) < size:
        factor = size / min(height, width)
        new_width, new_height = max(size, round(width * factor)), max(size, round(height * factor))
        image = np.asarray(Image.fromarray(image).resize((new_width, new_height), Image.Resampling.BILINEAR))
        height, width = image.shape[:2]
    if seed is None:
        top, left = (height - size) // 2, (width - size) // 2
    else:
        rng = np.random.default_rng(seed)
        top, left = int(rng.integers(0, height - size + 1)), int(rng.integers(0, width - size + 1))
    return np.ascontiguousarray(image[top:top + size, left:left + size])


def load_patch_array(frame: pd.DataFrame, root: str | Path, size: int, perturbation: str | None = None,
                     workers: int = 4) -> np.ndarray:
    """Like :func:`load_array`, framed as a native-resolution patch (:func:`native_patch`) instead of a
    whole-image resize: the file is decoded at its own size, perturbed there (e.g. ``"jpeg:50"``), and
    cut to its centre patch; an ``augment:K`` (or ``scaled:K``) copy takes its patch at a position seeded by the file
    and ``K`` (the same every time it is computed)."""
    root = Path(root)
    paths = frame["path"].astype(str).tolist()
    out = np.zeros((len(paths), size, size, 3), np.uint8)

    def one(position: int) -> None:
        rel = paths[position]
        image, seed = load_image(root / rel).required(rel), None
        if perturbation:
            from helpers.perturb import apply, stable_seed

            image = apply(image, perturbation, key=rel)
            if perturbation.startswith(("augment:", "scaled:")):
                seed = stable_seed(f"patch|{rel}|{perturbation}")
        out[position] = native_patch(image, size, seed)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(one, range(len(paths))))
    return out
