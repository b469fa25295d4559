"""Aligned fakes in practice: reconstructions of real crops, frozen features, probes, and the fingerprint figure.

Used by notebook 08's "aligned fakes" section and by ``benchmarks/aligned_screen.py``. Every picture is framed
as a centre crop at its own resolution (no resize: a resize is a low-pass filter that erases the decoder's
trace), re-encoded as JPEG 95 like everything the served detector scores. Reconstructions
(:mod:`helpers.reconstruct`) are made from the crops of real photos and re-encoded at the JPEG quality of their
original, so that "sharper" or "never compressed" cannot be what separates them. Features are a frozen
ImageNet MobileNetV2's six blocks (channel means and standard deviations); the probes are linear:
a logistic regression, or a *stay-positive* one whose weights are all non-negative over these non-negative
features (Rajan & Lee, ICML 2025: only evidence of "fake" can raise the score, so real-looking cues such as a
camera's JPEG cannot cancel a generator's).
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pandas as pd
from PIL import Image
from scipy.optimize import minimize
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from helpers import atomic, format_blind, models, perturb, reconstruct
from helpers.data import load_image
from helpers.stats import auc_ci

BLOCKS = ("block_2_expand_relu", "block_5_expand_relu", "block_9_expand_relu", "block_12_expand_relu",
          "block_15_expand_relu", "out_relu")
REGULARISATION = (0.001, 0.01, 0.1, 1.0)
SCORE_REENCODE = "jpeg:95"


def centre_crop(image: np.ndarray, side: int) -> np.ndarray | None:
    """The ``side`` px centre crop of a picture at its own resolution, or None when it is smaller."""
    if min(image.shape[:2]) < side:
        return None
    return format_blind.scoring_crops(image, side, count=1)[0]


def readable_pictures(frame: pd.DataFrame, root: str | Path, quality_when_not_jpeg: int):
    """Each readable row's position, picture at its own resolution and JPEG quality (``quality_when_not_jpeg``
    for a file that is not a JPEG), one at a time; an unreadable picture is skipped (counted by the caller)."""
    for position, path in enumerate(frame["path"]):
        loaded = load_image(Path(root) / path)
        if not loaded.ok:
            continue
        with Image.open(Path(root) / path) as img:
            quality = reconstruct.jpeg_quality(img) or quality_when_not_jpeg
        yield position, loaded.image, quality


def crops_of(frame: pd.DataFrame, root: str | Path, side: int) -> tuple[pd.DataFrame, np.ndarray, list[int]]:
    """The rows whose picture has a ``side`` px crop (the others are left out: counted by the caller), their
    crops, and each original's JPEG quality (95 for a file that is not a JPEG)."""
    kept, crops, qualities = [], [], []
    for position, image, quality in readable_pictures(frame, root, 95):
        crop = centre_crop(image, side)
        if crop is None:
            continue
        kept.append(position)
        crops.append(crop)
        qualities.append(quality)
    shape = (0, side, side, 3)
    return frame.iloc[kept].reset_index(drop=True), (np.stack(crops) if crops else np.zeros(shape, np.uint8)), qualities


def reconstructions(crops: np.ndarray, qualities: list[int], cache: str | Path | None = None,
                    key: str = "", autoencoder: tuple | None = None) -> np.ndarray:
    """TAEF2 reconstructions of ``crops``, each re-encoded at its original's JPEG quality; kept under
    ``cache/reconstructed_<key>_<checksum>.npy`` and read back for the same crops and qualities.
    ``autoencoder``: the ``(encoder, decoder)`` pair to use (loaded here when not given)."""
    import hashlib

    digest = hashlib.sha1(crops.tobytes() + str(qualities).encode()).hexdigest()[:16]
    target = Path(cache) / f"reconstructed_{key}_{digest}.npy" if cache else None

    def rebuild() -> np.ndarray:
        encoder, decoder = autoencoder or reconstruct.load_taef2()
        rebuilt = reconstruct.reconstruct(crops, encoder, decoder)
        return np.stack([perturb.jpeg(image, q) for image, q in zip(rebuilt, qualities)]) if len(rebuilt) else rebuilt

    return atomic.kept_array(target, rebuild, "kept reconstructions")


def block_extractor(side: int) -> keras.Model:
    """The ImageNet MobileNetV2's six block outputs for ``side`` px inputs (weights offline-first)."""
    backbone, _ = models.build_backbone("mobilenetv2", side, "imagenet")
    return keras.Model(backbone.input, [backbone.get_layer(name).output for name in BLOCKS])


def block_features(images: np.ndarray, extractor: keras.Model, batch: int = 32) -> np.ndarray:
    """Six blocks' channel means and standard deviations of each JPEG-95 re-encoded picture, averaged with
    its mirror's (the test-time flip). All values are non-negative (post-ReLU means, standard deviations)."""
    prepared = np.stack([perturb.apply(image, SCORE_REENCODE) for image in images]).astype(np.float32)
    views = []
    for mirrored in (False, True):
        rows = []
        for start in range(0, len(prepared), batch):
            chunk = prepared[start:start + batch]
            chunk = np.ascontiguousarray(chunk[:, :, ::-1]) if mirrored else chunk
            maps = extractor(keras.applications.mobilenet_v2.preprocess_input(chunk.copy()), training=False)
            rows.append(np.concatenate([np.concatenate([np.asarray(m).mean((1, 2)), np.asarray(m).std((1, 2))], 1)
                                        for m in maps], 1))
        views.append(np.concatenate(rows))
    return (views[0] + views[1]) / 2


def _source_weights(sources: np.ndarray) -> np.ndarray:
    counts = pd.Series(sources).value_counts()
    return pd.Series(sources).map(lambda s: 1.0 / counts[s]).to_numpy() * len(sources) / len(counts)


class StayPositive:
    """Logistic regression with non-negative weights (and a free bias), so that a feature that is non-negative
    (a post-ReLU mean, a standard deviation) can only add evidence of "fake". L-BFGS-B with bounds."""

    def __init__(self, C: float = 1.0) -> None:
        self.C = C

    def fit(self, x: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None) -> StayPositive:
        weight = np.ones(len(y)) if sample_weight is None else sample_weight
        sign = 2.0 * y - 1.0

        def loss(params):
            margin = sign * (x @ params[:-1] + params[-1])
            value = np.sum(weight * np.logaddexp(0, -margin)) + 0.5 / self.C * params[:-1] @ params[:-1]
            grad_margin = -weight * sign / (1 + np.exp(np.clip(margin, -50, 50)))
            return value, np.r_[x.T @ grad_margin + params[:-1] / self.C, grad_margin.sum()]

        bounds = [(0, None)] * x.shape[1] + [(None, None)]
        found = minimize(loss, np.zeros(x.shape[1] + 1), jac=True, method="L-BFGS-B", bounds=bounds,
                         options={"maxiter": 2000})
        self.coef_, self.intercept_ = found.x[:-1], found.x[-1]
        return self

    def decision_function(self, x: np.ndarray) -> np.ndarray:
        return x @ self.coef_ + self.intercept_


def train_probe(features: np.ndarray, labels: np.ndarray, sources: np.ndarray,
                val: tuple[np.ndarray, np.ndarray], seed: int = 42, positive: bool = False):
    """A linear probe (sources weighted alike, C chosen on the validation AUC): logistic regression on
    standardised features, or with ``positive`` the :class:`StayPositive` one. Returns ``(score, C)``."""
    weights = _source_weights(sources)
    # Standardising keeps the stay-positive meaning: dividing by a positive spread keeps each weight's sign, and
    # centring only moves the intercept (w.(x - m) + b = w.x + (b - w.m)); it makes the bounded fit converge fast.
    transform = StandardScaler().fit(features).transform
    best = None
    for c in REGULARISATION:
        probe = StayPositive(c) if positive else LogisticRegression(C=c, max_iter=3000, random_state=seed)
        probe.fit(transform(features), labels, sample_weight=weights)
        auc = auc_ci(val[1], probe.decision_function(transform(val[0])), n_boot=0)[0]
        if best is None or auc > best[0]:
            best = (auc, c, probe)
    probe = best[2]
    return (lambda x: probe.decision_function(transform(x))), best[1]


def mean_difference_spectrum(originals: np.ndarray, rebuilt: np.ndarray) -> np.ndarray:
    """The mean log-amplitude spectrum (centred, grey) of the differences reconstruction - original, less its
    median at each radius: what is left depends on direction, and a decoder's periodic upsampling trace
    shows as a lattice of peaks at multiples of 1/8 of the sampling rate."""
    grey = lambda a: a.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)  # noqa: E731
    spectra = [np.log1p(np.abs(np.fft.fftshift(np.fft.fft2(grey(b) - grey(a))))) for a, b in zip(originals, rebuilt)]
    mean = np.mean(spectra, axis=0)
    y, x = np.indices(mean.shape)
    radius = np.hypot(y - mean.shape[0] // 2, x - mean.shape[1] // 2).astype(int)
    profile = np.array([np.median(mean[radius == r]) for r in range(radius.max() + 1)])
    return mean - profile[radius]


def plot_fingerprint(original: np.ndarray, rebuilt: np.ndarray, spectrum: np.ndarray, path: str | Path | None = None):
    """A real crop, its reconstruction, their difference (amplified 8x around grey) and the mean spectrum
    of many such differences: a generator's fingerprint made without a generator."""
    import matplotlib.pyplot as plt

    from helpers.plots import save_figure

    difference = np.clip(128 + 8 * (rebuilt.astype(np.int16) - original.astype(np.int16)), 0, 255).astype(np.uint8)
    fig, axes = plt.subplots(1, 4, figsize=(13, 3.6))
    for ax, image, title in zip(axes, (original, rebuilt, difference),
                                ("real photo (crop at its own size)", f"TAEF2 reconstruction, "
                                 f"{reconstruct.psnr(original, rebuilt):.1f} dB", "difference x 8")):
        ax.imshow(image)
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    axes[3].imshow(np.clip(spectrum, np.percentile(spectrum, 1), np.percentile(spectrum, 99.7)), cmap="magma")
    axes[3].set_title("mean spectrum of the differences\n(less its radial median)", fontsize=10)
    axes[3].axis("off")
    fig.tight_layout()
    return save_figure(fig, path)


GENERATORS = ("sd15", "sd21", "stylegan1", "stylegan2")


def probe_plan(generators: tuple[str, ...] = GENERATORS, held_outs: tuple[str, ...] = ("sd15", "sd21")) -> dict:
    """The probes of the screen: ``name -> (generators trained on, reconstructions as a fake source)``."""
    plan = {"aligned only": ((), True), "every source": (generators, False),
            "every source + aligned": (generators, True)}
    for held in held_outs:
        rest = tuple(g for g in generators if g != held)
        plan[f"held out {held}"] = (rest, False)
        plan[f"held out {held} + aligned"] = (rest, True)
    return plan


def screen(frames: dict[str, pd.DataFrame], root: str | Path, side: int = 128, cache: str | Path | None = None,
           seed: int = 42, n_boot: int = 1000, positive: bool = False, key: str = "",
           plan: dict | None = None) -> tuple[pd.DataFrame, dict]:
    """Each probe of ``plan`` (:func:`probe_plan`) trained on ``frames["train"]`` (its real rows, the generators
    it names, and with reconstructions of its real crops), C chosen on ``frames["val"]``, and scored on the test
    crops: one row per probe and generator (the real test crops against that generator's, AUC with its 95%
    CI), plus ``reconstructed`` (the real test crops against their own reconstructions). Also returns the
    crops, reconstructions and features it made (``parts``), for figures."""
    plan = plan or probe_plan()
    parts: dict = {"frames": {}, "crops": {}, "rebuilt": {}, "features": {}, "rebuilt_features": {}}
    extractor, autoencoder = block_extractor(side), None
    for part, frame in frames.items():
        kept, crops, qualities = crops_of(frame, root, side)
        real = (kept["label"] == "real").to_numpy()
        if autoencoder is None:  # built once for the three parts
            autoencoder = reconstruct.load_taef2()
        rebuilt = reconstructions(crops[real], [q for q, r in zip(qualities, real) if r], cache, f"{key}{part}_{side}",
                                  autoencoder)
        parts["frames"][part], parts["crops"][part], parts["rebuilt"][part] = kept, crops, rebuilt
        parts["features"][part] = block_features(crops, extractor)
        parts["rebuilt_features"][part] = block_features(rebuilt, extractor)

    def training(part: str, generators: tuple[str, ...], aligned: bool):
        frame = parts["frames"][part]
        keep = ((frame["label"] == "real") | frame["source"].isin(generators)).to_numpy()
        x = parts["features"][part][keep]
        y = (frame["label"][keep] == "fake").astype(int).to_numpy()
        s = frame["source"][keep].to_numpy()
        if aligned:
            extra = parts["rebuilt_features"][part]
            x, y = np.concatenate([x, extra]), np.r_[y, np.ones(len(extra), int)]
            s = np.r_[s, np.full(len(extra), "reconstructed")]
        return x, y, s

    test = parts["frames"]["test"]
    real_test = (test["label"] == "real").to_numpy()
    rows = []
    for name, (generators, aligned) in plan.items():
        x, y, s = training("train", generators, aligned)
        vx, vy, _ = training("val", generators, aligned)
        score, c = train_probe(x, y, s, (vx, vy), seed, positive)
        test_scores = score(parts["features"]["test"])
        for generator in (*GENERATORS, "reconstructed"):
            fakes = (score(parts["rebuilt_features"]["test"]) if generator == "reconstructed"
                     else test_scores[(test["source"] == generator).to_numpy()])
            labels = np.r_[np.zeros(real_test.sum()), np.ones(len(fakes))]
            auc, low, high = auc_ci(labels, np.r_[test_scores[real_test], fakes], n_boot=n_boot, seed=seed)
            rows.append(dict(probe=name + (" (stay-positive)" if positive else ""), generator=generator,
                             seen=generator in generators or (generator == "reconstructed" and aligned),
                             auc=round(auc, 3), low=round(low, 3), high=round(high, 3), n_real=int(real_test.sum()),
                             n_fake=len(fakes), C=c, train_images=len(y)))
    return pd.DataFrame(rows), parts


def per_source(frame: pd.DataFrame, n: int, seed: int = 42) -> pd.DataFrame:
    """At most ``n`` rows of each source, drawn reproducibly (``n`` 0: every row)."""
    if not n:
        return frame.reset_index(drop=True)
    return frame.sample(frac=1.0, random_state=seed).groupby("source").head(n).sort_index().reset_index(drop=True)
