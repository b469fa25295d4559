"""Frequency-domain baselines: the field's cheapest detectors, through the same evaluation.

- **FFT azimuthal spectrum** (Durall et al. 2020): the 2-D power spectrum of the grayscale
  image, averaged over rings of equal frequency, gives a 1-D profile; GAN up-sampling leaves
  bumps at high frequencies. Features: the log profile, normalised per image.
- **Block DCT** (Frank et al. 2020): the 8×8 DCT of every block (as JPEG does); per frequency,
  the mean log magnitude over blocks. 64 features that see grid artifacts and compression.

Each is a scikit-learn pipeline (standardise → logistic regression, C chosen on validation) whose
``predict_proba`` gives P(fake) for :func:`helpers.evaluate.evaluate_scores`.
"""

from __future__ import annotations

import time

import numpy as np
from scipy.fft import dctn
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def grayscale(images: np.ndarray) -> np.ndarray:
    """``(n, h, w, 3)`` uint8/float RGB → ``(n, h, w)`` float32 luminance."""
    return images[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)


def azimuthal_spectrum(images: np.ndarray, bins: int | None = None) -> np.ndarray:
    """Log power spectrum averaged over rings of equal radius: ``(n, bins - 1)``, each row standardised.

    Rings run from radius 1 (radius 0 is the mean, subtracted: only rounding error is left
    there, and its logarithm would swing the standardisation) and by default reach the
    spectrum's corners, where the period-2 checkerboard of transposed-convolution up-sampling
    puts its energy. Computed in float64.
    """
    gray = grayscale(images).astype(np.float64)
    n, height, width = gray.shape
    power = np.abs(np.fft.fftshift(np.fft.fft2(gray - gray.mean(axis=(1, 2), keepdims=True)), axes=(1, 2))) ** 2
    yy, xx = np.indices((height, width))
    radius = np.hypot(yy - height // 2, xx - width // 2).astype(int)
    bins = bins or int(np.hypot(height // 2, width // 2)) + 1  # out to the corners (diagonal artifacts)
    keep = radius < bins
    counts = np.bincount(radius[keep], minlength=bins)
    profile = np.stack([np.bincount(radius[keep], weights=p[keep], minlength=bins) for p in power])[:, 1:] / counts[1:]
    log_profile = np.log(profile + 1e-8)
    return ((log_profile - log_profile.mean(axis=1, keepdims=True))
            / (log_profile.std(axis=1, keepdims=True) + 1e-8)).astype(np.float32)


def block_dct_features(images: np.ndarray, block: int = 8) -> np.ndarray:
    """Mean log |DCT| per frequency over all ``block``×``block`` blocks: ``(n, block*block)``."""
    gray = grayscale(images)
    n, height, width = gray.shape
    h, w = height // block * block, width // block * block
    blocks = gray[:, :h, :w].reshape(n, h // block, block, w // block, block).transpose(0, 1, 3, 2, 4)
    coefficients = dctn(blocks - 128.0, axes=(3, 4), norm="ortho")
    return np.log(np.abs(coefficients) + 1e-3).mean(axis=(1, 2)).reshape(n, block * block).astype(np.float32)


FEATURES = {"fft_azimuthal": azimuthal_spectrum, "dct_blocks": block_dct_features}
TITLES = {"fft_azimuthal": "FFT azimuthal spectrum + LR", "dct_blocks": "Block DCT + LR"}


def fit_baseline(kind: str, train_images: np.ndarray, train_labels: np.ndarray, val_images: np.ndarray,
                 val_labels: np.ndarray, c_grid: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0)) -> dict:
    """Fit a baseline, choosing the regularisation ``C`` by validation AUC.

    Returns ``model`` (a fitted pipeline), ``C``, ``val_auc`` per C, ``seconds`` and ``features``
    (the feature function), so ``score_baseline`` can score new images.
    """
    if kind not in FEATURES:
        raise ValueError(f"unknown baseline {kind!r}; choose from {sorted(FEATURES)}")
    start = time.perf_counter()
    extract = FEATURES[kind]
    x_train, x_val = extract(train_images), extract(val_images)
    tried = {}
    best = None
    for c in c_grid:
        model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))
        model.fit(x_train, train_labels)
        auc = roc_auc_score(val_labels, model.predict_proba(x_val)[:, 1]) if len(set(val_labels)) > 1 else np.nan
        tried[c] = float(auc)
        if best is None or auc > tried[best[0]]:
            best = (c, model)
    return dict(kind=kind, model=best[1], C=best[0], val_auc=tried, seconds=time.perf_counter() - start)


def score_baseline(fitted: dict, images: np.ndarray) -> np.ndarray:
    """P(fake) of each image under a fitted baseline."""
    return fitted["model"].predict_proba(FEATURES[fitted["kind"]](images))[:, 1]


def load_center_crops(frame, root, size: int = 256) -> np.ndarray:
    """Native-resolution ``size``×``size`` centre crops (upscaled only if an image is smaller).

    Frequency baselines look at pixel-level traces that resizing would blur away, so they read
    the file's own pixels rather than the models' resized input.
    """
    from pathlib import Path

    from helpers.data import load_image, resize_square

    crops = []
    for path in frame["path"].astype(str):
        image = load_image(Path(root) / path).required(path)
        height, width = image.shape[:2]
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        square = image[top:top + side, left:left + side]
        if side > size:
            offset = (side - size) // 2
            square = square[offset:offset + size, offset:offset + size]
        crops.append(square if square.shape[0] == size else resize_square(square, size))
    return np.stack(crops) if crops else np.zeros((0, size, size, 3), np.uint8)
