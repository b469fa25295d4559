"""Format-blind training copies and native-resolution crops: teach the generator's traces, not the file's history.

Every source of the sample has its own size and JPEG history, so "how it was resized and compressed" can
separate the classes as well as "what made it" (Grommelt et al., "Fake or JPEG?", 2024). A format-blind copy
applies one random preparation to real and fake pictures alike (Wang et al., CVPR 2020; B-Free, CVPR 2025):

1. rescale by a factor drawn from ``scale`` (of the native size; never below the crop), with an interpolation
   drawn from ``INTERPOLATIONS``;
2. a random ``side`` px crop at that resolution (no resize to a fixed size: a resize is a low-pass filter
   that erases a generator's high-frequency trace and teaches the classes' size ratio);
3. with probability ``blur_p`` a mild Gaussian blur;
4. JPEG at a quality drawn from ``quality`` — or, with probability ``keep_p``, no re-encoding.

Each copy is seeded by the file and the copy's number, so it is the same in every process. At scoring,
:func:`scoring_crops` takes fixed crops of the picture at its own resolution (centre and corners) whose
scores the detector averages (with the mirror's). :func:`shortcut_auc` is the check that size and JPEG
quality alone no longer predict the label: a logistic regression on width, height and estimated quality.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from PIL import Image

from helpers import perturb

INTERPOLATIONS = (Image.Resampling.BILINEAR, Image.Resampling.BICUBIC, Image.Resampling.LANCZOS,
                  Image.Resampling.BOX)


@dataclass(frozen=True)
class FormatBlind:
    """The random preparation of a training copy (see the module docstring)."""

    side: int = 128
    scale: tuple[float, float] = (0.5, 1.0)
    quality: tuple[int, int] = (65, 100)
    keep_p: float = 0.2
    blur_p: float = 0.1
    blur_sigma: tuple[float, float] = (0.2, 1.0)


def rescaled(image: np.ndarray, factor: float, side: int, interpolation=Image.Resampling.BILINEAR) -> np.ndarray:
    """``image`` resized by ``factor``, but never so small that its shorter side is under ``side``."""
    height, width = image.shape[:2]
    factor = max(factor, side / min(height, width))
    if abs(factor - 1.0) < 1e-9:
        return image
    size = (max(side, round(width * factor)), max(side, round(height * factor)))
    return np.asarray(Image.fromarray(image).resize(size, interpolation))


@dataclass(frozen=True)
class CopyPlan:
    """The draws of one format-blind copy: interpolation, factor, crop position (shares of the free room),
    blur sigma (0: none) and JPEG quality (``None``: not re-encoded)."""

    interpolation: Image.Resampling
    factor: float
    top: float
    left: float
    sigma: float
    quality: int | None


def plan_copy(key: str, copy: int, settings: FormatBlind = FormatBlind()) -> CopyPlan:
    """The draws of copy ``copy`` of the picture ``key`` (its path), the same in every process."""
    rng = np.random.default_rng(perturb.stable_seed(f"format-blind|{key}|{copy}"))
    interpolation = INTERPOLATIONS[int(rng.integers(len(INTERPOLATIONS)))]
    factor, top, left = float(rng.uniform(*settings.scale)), float(rng.random()), float(rng.random())
    sigma = float(rng.uniform(*settings.blur_sigma)) if rng.random() < settings.blur_p else 0.0
    quality = int(rng.integers(settings.quality[0], settings.quality[1] + 1)) if rng.random() >= settings.keep_p \
        else None
    return CopyPlan(interpolation, factor, top, left, sigma, quality)


def format_blind_copy(image: np.ndarray, key: str, copy: int, settings: FormatBlind = FormatBlind()) -> np.ndarray:
    """Copy ``copy`` of the picture ``key`` (its path): a ``side`` px square, prepared as the module says."""
    plan = plan_copy(key, copy, settings)
    image = rescaled(image, plan.factor, settings.side, plan.interpolation)
    height, width = image.shape[:2]
    top = round(plan.top * (height - settings.side))
    left = round(plan.left * (width - settings.side))
    crop = np.ascontiguousarray(image[top:top + settings.side, left:left + settings.side])
    if plan.sigma > 0:
        crop = perturb.blur(crop, plan.sigma)
    return perturb.jpeg(crop, plan.quality) if plan.quality is not None else crop


def copy_quality(key: str, copy: int, settings: FormatBlind, original: int) -> int:
    """The JPEG quality a copy shows: the one it was re-encoded at, else its original file's."""
    drawn = plan_copy(key, copy, settings).quality
    return original if drawn is None else drawn


def scoring_crops(image: np.ndarray, side: int = 128, count: int = 5) -> np.ndarray:
    """``count`` fixed ``side`` px crops of the picture at its own resolution (enlarged just enough when it is
    smaller): the centre, then the four corners (``count`` 1: the centre only)."""
    image = rescaled(image, 1.0, side)
    height, width = image.shape[:2]
    places = [((height - side) // 2, (width - side) // 2), (0, 0), (0, width - side), (height - side, 0),
              (height - side, width - side)]
    return np.stack([image[top:top + side, left:left + side] for top, left in places[:count]])


def shortcut_auc(frame: pd.DataFrame, folds: int = 5, seed: int = 42) -> float:
    """Cross-validated AUC of a logistic regression that predicts the label from ``width``, ``height`` and
    ``quality`` alone (standardised): near 0.5 when size and JPEG quality say nothing about the label."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from helpers.stats import auc_ci

    x = frame[["width", "height", "quality"]].to_numpy(float)
    y = (frame["label"] == "fake").astype(int).to_numpy()
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    scores = cross_val_predict(model, x, y, cv=StratifiedKFold(folds, shuffle=True, random_state=seed),
                               method="decision_function")
    return auc_ci(y, scores, n_boot=0)[0]
