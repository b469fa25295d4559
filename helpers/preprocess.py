"""Preprocessing before a detector: Error Level Analysis, denoising, and loading with either.

Notebook 09 compares detectors on plain, ELA and denoised inputs; every image still enters
through :func:`helpers.data.load_image`.
"""

from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image

from helpers.data import LoadedImage, load_image, resize_square

PREPROCESSING = ("none", "ela", "denoise")


def error_level_analysis(image: np.ndarray, quality: int = 90) -> np.ndarray:
    """Error Level Analysis: re-save as JPEG at ``quality`` and amplify the absolute difference.

    Regions that were edited or synthesised differently re-compress differently. The difference
    is scaled so its maximum is 255 (per image, as ELA tools do) and returned as uint8 RGB.
    """
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=quality)
    resaved = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"), np.int16)
    difference = np.abs(image.astype(np.int16) - resaved)
    peak = max(int(difference.max()), 1)
    return np.round(difference * (255.0 / peak)).clip(0, 255).astype(np.uint8)


def denoise(image: np.ndarray, strength: float = 5.0) -> np.ndarray:
    """Non-local-means colour denoising (OpenCV), ``strength`` = filter h for luminance and colour.

    The seed project called its step "Kalman filtering"; a Kalman filter is meant for time
    series, so we use a standard image denoiser and measure whether it helps (notebook 09).
    """
    import cv2

    return cv2.fastNlMeansDenoisingColored(np.ascontiguousarray(image), None, strength, strength, 7, 21)


def load_for_model(path: str | os.PathLike, size: int, preprocessing: str = "none",
                   perturbation: str | None = None) -> LoadedImage:
    """:func:`load_image` at ``size`` with an optional perturbation and preprocessing step.

    A ``perturbation`` (:mod:`helpers.perturb`, e.g. ``"jpeg:50"``) runs first, at the file's
    own resolution, as an upload site would. ``ela`` also runs at full resolution (JPEG blocks
    are 8x8 there) and then resizes; ``denoise`` runs on the resized image.
    """
    if preprocessing not in PREPROCESSING:
        raise ValueError(f"preprocessing must be one of {PREPROCESSING}, not {preprocessing!r}")
    if preprocessing != "ela" and not perturbation:
        loaded = load_image(path, size=size)
        if loaded.ok and preprocessing == "denoise":
            loaded.image = denoise(loaded.image)
        return loaded
    loaded = load_image(path)
    if loaded.ok:
        image = loaded.image
        if perturbation:
            from helpers.perturb import apply

            image = apply(image, perturbation, key=str(path))
        if preprocessing == "ela":
            image = error_level_analysis(image)
        image = resize_square(image, size)
        loaded.image = denoise(image) if preprocessing == "denoise" else image
    return loaded
