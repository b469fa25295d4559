"""What would separate StyleGAN from FFHQ? Spectra and a learning curve on the pair that keeps answers unsure.

In distribution the served detector ranks every generator against every real source at AUC 0.97, yet it
calls only 36-54% of the StyleGAN1 and StyleGAN2 test images fake and is unsure of half of FFHQ: FFHQ is
the real source the two GANs were trained to imitate, and StyleGAN1's files come from the same "140k"
set as FFHQ's (256 px JPEG, quality ~75). Every recipe measured so far (resolution 128-224 px, longer
schedules, intermediate blocks, texture statistics, residual branches) left that pair at AUC 0.83-0.86.
This screen asks two questions of each generator against the real source of its own set (StyleGAN1 /
FFHQ, StyleGAN2 / Unsplash), on the run's own split (train rows to fit, validation
rows to choose the regularisation, test rows to report):

1. **Is a pixel-level trace left?** Generators leave periodic up-sampling traces in the spectrum
   (Frank et al. 2020, Durall et al. 2020). Three hand-made spectral features at the files' own 256 px:
   the azimuthal power spectrum, block-DCT statistics (both as notebook 09's baselines) and a 64×64
   log-spectrum of the high-pass residual (image minus its 3×3 mean).
2. **Does more data move it, and how fast?** The frozen ImageNet MobileNetV2's six blocks (channel means
   and spreads, as ``intermediate_features_screen.py``; every picture through JPEG 95 first, as the
   served detector scores) at 128 px and at 256 px (StyleGAN1's and FFHQ's own size), with a probe
   trained on 96, 192, 384 and every training image of each source (three seeded draws each below
   "every"). A probe on frozen features ranked every unseen generator within ~0.06 of the fine-tuned
   detector, so its curve is a cheap stand-in for the detector's.

    .venv/bin/python benchmarks/gan_pair_learning_curve.py --run sample

Writes ``learning_curve.csv`` and ``timings.json`` under ``--out`` (default
``runs/experiments/gan_pair_learning_curve``); results and their date go to ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
from intermediate_features_screen import SIX_BLOCKS_STD, block_extractor, extract
from run_options import add_run_arguments
from scipy.ndimage import uniform_filter
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from helpers import baselines, config, faces, splits
from helpers.pipeline import labels_of
from helpers.stats import auc_ci

# each generator with the real source of its own set, file format and size (the sample's SOURCES.md): a pair that
# differs in size would be told apart by the resize itself (StyleGAN2's 300-px files against FFHQ's 256 px
# reach AUC 1.000 at 256 px that way, even from 96 images a source)
PAIRS = (("ffhq", "stylegan1"), ("unsplash", "stylegan2"))
SIZES = (96, 192, 384)          # training images per source; "every" is added
DRAWS = 3                       # seeded draws of each smaller size
REGULARISATION = (0.0003, 0.003, 0.03, 0.3, 3.0)   # logistic regression's C, chosen on the pair's validation AUC


def residual_spectrum(images: np.ndarray, side: int = 64) -> np.ndarray:
    """Log magnitude spectrum of the high-pass residual (luminance minus its 3×3 mean), pooled to ``side``²."""
    gray = baselines.grayscale(images).astype(np.float64)
    residual = gray - uniform_filter(gray, size=(1, 3, 3))
    spectrum = np.log(np.abs(np.fft.fftshift(np.fft.fft2(residual), axes=(1, 2))) + 1e-3)
    n, height, width = spectrum.shape
    return spectrum.reshape(n, side, height // side, side, width // side).mean(axis=(2, 4)).reshape(n, -1).astype(
        np.float32)


SPECTRA = {"azimuthal spectrum": baselines.azimuthal_spectrum, "block DCT": baselines.block_dct_features,
           "residual spectrum": residual_spectrum}


def spectral_features(frames: dict[str, pd.DataFrame], root: Path) -> dict[str, dict[str, np.ndarray]]:
    """``{feature set: {split: array}}`` of :data:`SPECTRA` on 256-px centre crops at the files' own scale."""
    crops = {split: baselines.load_center_crops(frame, root, 256) for split, frame in frames.items()}
    return {name: {split: function(images) for split, images in crops.items()} for name, function in SPECTRA.items()}


def block_features(frames: dict[str, pd.DataFrame], root: Path, size: int, cache: Path,
                   seed: int) -> dict[str, np.ndarray]:
    """``{split: array}``: the six blocks' means and spreads, mean of the picture and its mirror."""
    rows = hashlib.sha1("|".join(pd.concat(frames.values())["path"].astype(str)).encode()).hexdigest()[:12]
    files = {split: cache / f"pair_blocks_{size}_{rows}_{split}.npz" for split in frames}  # these rows only
    extractor = None if all(path.exists() for path in files.values()) else block_extractor(size, seed)
    out = {}
    for split, frame in frames.items():
        part = extract(extractor, frame, root, size, files[split])
        out[split] = np.mean([np.concatenate([part[v][k] for k in SIX_BLOCKS_STD], axis=1)
                              for v in ("clean", "flipped")], axis=0)
    return out


def draw_rows(frame: pd.DataFrame, per_source: int | None, seed: int) -> np.ndarray:
    """Positions of ``per_source`` rows of each source of ``frame`` (every row for ``None``), drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    parts = []
    for source in sorted(frame["source"].unique()):
        rows = np.flatnonzero(frame["source"].to_numpy() == source)
        parts.append(rows if per_source is None or per_source >= len(rows) else rng.choice(rows, per_source, False))
    return np.sort(np.concatenate(parts))


def probe_auc(arrays: dict[str, np.ndarray], frames: dict[str, pd.DataFrame], rows: np.ndarray, n_boot: int,
              seed: int) -> dict:
    """Fit a probe on the ``rows`` of the training split for each C, keep the best on validation, report test."""
    scaler = StandardScaler().fit(arrays["train"][rows])
    labels = {split: labels_of(frame) for split, frame in frames.items()}
    best = None
    for c in REGULARISATION:
        model = LogisticRegression(C=c, max_iter=3000, random_state=seed)
        model.fit(scaler.transform(arrays["train"][rows]), labels["train"][rows])
        val_auc = auc_ci(labels["val"], model.predict_proba(scaler.transform(arrays["val"]))[:, 1], 0)[0]
        if best is None or val_auc > best[0]:
            best = (val_auc, c, model)
    val_auc, c, model = best
    test_auc, low, high = auc_ci(labels["test"], model.predict_proba(scaler.transform(arrays["test"]))[:, 1],
                                 n_boot, seed)
    return dict(C=c, val_auc=val_auc, test_auc=test_auc, test_low=low, test_high=high)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_arguments(parser, size=False)
    default = config.REPO_ROOT / "runs" / "experiments" / "gan_pair_learning_curve"
    parser.add_argument("--out", type=Path, default=default)
    parser.add_argument("--cache", type=Path, default=default, help="where the extracted features are kept")
    parser.add_argument("--block-sizes", type=int, nargs="*", default=[128, 256])
    args = parser.parse_args()
    cfg = config.load_run_config(args.run)
    args.out.mkdir(parents=True, exist_ok=True)
    split, root = faces.input_view(splits.load_split(cfg.path("split.csv")), cfg.data_root, cfg.run_dir, "image")
    pair_sources = sorted({s for pair in PAIRS for s in pair})
    split = split[split["source"].isin(pair_sources)]
    frames = {s: split[split["split"] == s].reset_index(drop=True) for s in ("train", "val", "test")}
    timings: dict = {}
    start = time.perf_counter()
    feature_sets = spectral_features(frames, Path(root))
    timings["spectra_s"] = round(time.perf_counter() - start, 1)
    for size in args.block_sizes:
        start = time.perf_counter()
        feature_sets[f"six blocks + std, {size} px"] = block_features(frames, Path(root), size, args.cache, cfg.seed)
        timings[f"blocks_{size}_s"] = round(time.perf_counter() - start, 1)
    rows = []
    for real, fake in PAIRS:
        pair = {s: np.flatnonzero(frame["source"].isin([real, fake]).to_numpy()) for s, frame in frames.items()}
        pair_frames = {s: frames[s].iloc[pair[s]].reset_index(drop=True) for s in frames}
        for name, arrays in feature_sets.items():
            pair_arrays = {s: arrays[s][pair[s]] for s in frames}
            sizes = [*SIZES, None] if name.startswith("six blocks") else [None]   # spectra: every image only
            for per_source in sizes:
                for draw in range(DRAWS if per_source is not None else 1):
                    chosen = draw_rows(pair_frames["train"], per_source, cfg.seed + draw)
                    result = probe_auc(pair_arrays, pair_frames, chosen, args.n_boot, cfg.seed)
                    rows.append(dict(pair=f"{fake} vs {real}", features=name, per_source=per_source or "every",
                                     n_train=len(chosen), draw=draw, n_test=len(pair_frames["test"]), **result))
                    print(json.dumps(rows[-1]), flush=True)
        pd.DataFrame(rows).to_csv(args.out / "learning_curve.csv", index=False)
    (args.out / "timings.json").write_text(json.dumps(timings, indent=2))
    print(json.dumps(timings))


if __name__ == "__main__":
    main()
