"""Image perturbations for robustness tests and training augmentation, named by short strings.

A perturbation is ``"<kind>:<level>"`` and runs on the decoded image at its own resolution,
before the model's resize (as an upload site would re-encode or rescale the file):

- ``jpeg:Q`` — re-encode as JPEG at quality Q;
- ``scale:F`` — resize by factor F (0.5 = half size, 1.5 = upscale), bilinear;
- ``blur:S`` — Gaussian blur with sigma S pixels;
- ``recode:N`` — the format-shortcut check: every image to N×N and JPEG quality 90, so size and
  compression no longer differ between sources;
- ``augment:K`` — training augmentation copy K (Wang et al. 2020 style): with probability 0.5
  each, a mirror image, Gaussian blur (sigma 0–2) and JPEG (quality 30–95), then a random crop of 80–100% of the
  side; seeded by the file path and K, so a copy is the same every time it is computed;
- ``scaled:K`` — copy K with random down-scaling: the image is first shrunk by a factor drawn from
  0.5–1 (seeded like ``augment``), then made into ``augment:K``, so the copy's JPEG runs at the new
  scale; real and fake images alike, so native scale is no cue.

Steps joined by ``+`` run in order: ``"jpeg:50+jpeg:95"`` is a JPEG 50 upload that a detector then
re-encodes at quality 95 (:func:`then`).
"""

from __future__ import annotations

import hashlib
import io

import numpy as np
from PIL import Image, ImageFilter

KINDS = ("jpeg", "scale", "blur", "recode", "augment", "scaled")
SCALED_RANGE = (0.5, 1.0)       # the down-scaling factors of a scaled copy


def then(first: str | None, second: str | None) -> str:
    """The perturbation ``first`` followed by ``second`` (either may be empty, ``None`` or ``"clean"``:
    no step); ``"clean"`` when neither is a step."""
    steps = [step for step in (first, second) if step and step != "clean"]
    return "+".join(steps) or "clean"


def parse(perturbation: str) -> tuple[str, float]:
    """``"jpeg:50"`` → ``("jpeg", 50.0)``; raises ``ValueError`` for an unknown kind (one step: see :func:`apply`
    for ``+`` chains)."""
    kind, _, level = perturbation.partition(":")
    if kind not in KINDS or not level:
        raise ValueError(f"perturbation must be '<kind>:<level>' with kind in {KINDS}, not {perturbation!r}")
    return kind, float(level)


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=int(quality))
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def scale(image: np.ndarray, factor: float) -> np.ndarray:
    height, width = image.shape[:2]
    size = (max(8, round(width * factor)), max(8, round(height * factor)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))


def blur(image: np.ndarray, sigma: float) -> np.ndarray:
    return np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(sigma))) if sigma > 0 else image


def augment(image: np.ndarray, seed: int) -> np.ndarray:
    """One random blur + JPEG + crop copy (see the module docstring)."""
    rng = np.random.default_rng(seed)
    if rng.random() < 0.5:
        image = image[:, ::-1]
    if rng.random() < 0.5:
        image = blur(np.ascontiguousarray(image), float(rng.uniform(0.0, 2.0)))
    if rng.random() < 0.5:
        image = jpeg(image, int(rng.integers(30, 96)))
    height, width = image.shape[:2]
    side = int(min(height, width) * rng.uniform(0.8, 1.0))
    top, left = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
    return np.ascontiguousarray(image[top:top + side, left:left + side])


def apply(image: np.ndarray, perturbation: str, key: str = "") -> np.ndarray:
    """Apply a perturbation (or a ``+`` chain of them, in order) to an RGB uint8 image; ``key`` (the file
    path) seeds ``augment``."""
    if "+" in perturbation:
        steps = perturbation.split("+")
        for step in steps:
            parse(step)  # every step checked before any runs
        for step in steps:
            image = apply(image, step, key)
        return image
    kind, level = parse(perturbation)
    if kind == "jpeg":
        return jpeg(image, int(level))
    if kind == "scale":
        return scale(image, level)
    if kind == "blur":
        return blur(image, level)
    if kind == "recode":
        square = np.asarray(Image.fromarray(image).resize((int(level), int(level)), Image.Resampling.BILINEAR))
        return jpeg(square, 90)
    seed = stable_seed(f"{key}|{int(level)}")
    if kind == "scaled":
        image = scale(image, scaled_factor(key, int(level)))
    return augment(image, seed)


def scaled_factor(key: str, copy: int) -> float:
    """The down-scaling factor of ``scaled:copy`` for the file ``key``: uniform in ``SCALED_RANGE``, seeded."""
    return float(np.random.default_rng(stable_seed(f"scaled|{key}|{copy}")).uniform(*SCALED_RANGE))


def stable_seed(text: str) -> int:
    """A 32-bit seed from ``text``, the same in every process and on every machine (unlike ``hash``)."""
    return int.from_bytes(hashlib.sha1(text.encode()).digest()[:4], "little")


ROBUSTNESS_GRID = ("jpeg:95", "jpeg:75", "jpeg:50", "jpeg:30", "scale:0.5", "scale:0.75", "scale:1.5",
                   "blur:0.5", "blur:1", "blur:2")
