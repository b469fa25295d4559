"""Do a frozen MobileNetV2's intermediate blocks tell unseen generators and unseen real photos apart
better than its last layer? A cheap screen on both leave-one-out protocols.

The detectors of this lab read only the last feature map of the backbone (``out_relu``, global-average
pooled). Work on AI-generated image detection finds that a frozen network's *intermediate* blocks carry
more of a generator's low-level trace and generalise better to unseen generators (Koutlis & Papadopoulos
2024, "Leveraging representations from intermediate encoder-blocks"; Ojha et al. 2023 for linear probes
on frozen features). This screen extracts, in one pass per image, the pooled activations of six blocks of
the ImageNet MobileNetV2 (from 32×32 to 4×4 at 128 px) — each block's channel means, and optionally their
standard deviations (a texture statistic) — and trains the same linear probe on three feature sets:

- ``last layer``: ``out_relu`` means, what every detector of the lab reads (the baseline);
- ``six blocks``: the channel means of the six blocks;
- ``six blocks + std``: the means and standard deviations of the six blocks;
- ``gram``: the Gram matrices (channel-by-channel mean products, upper triangle) of four bottleneck outputs
  (:data:`GRAM_BLOCKS`, 24 to 96 channels, 32×32 to 8×8) — the global texture statistics of Gram-Net
  (Liu, Qi & Torr, "Global Texture Enhancement for Fake Face Detection in the Wild", CVPR 2020), read
  from a frozen network instead of trained into one;
- ``gram + six blocks + std``: both.

Each probe (``--head logistic``) is a logistic regression on standardised features, sources weighted
equally (the lab's "balanced" batches), trained on every image and its mirror, scored as the mean of both
(test-time flip); its regularisation is chosen on the validation AUC of the every-source training.
``--head multiclass``: the same logistic regression trained to tell the sources apart (one class a source,
sources weighted alike), P(fake) the summed probability of the fake sources' classes — a detector that must
learn each generator against each real source rather than one fake/real boundary.
``--head mlp``: a one-hidden-layer network (256 ReLU units, L2 0.01, at most 40 epochs with early stopping
on a tenth of the training rows) instead, the same weights and flip. ``--robustness``: the every-source
probe's test AUC after JPEG 50, half size and the format-shortcut re-encoding (each before the JPEG 95).
Every picture goes through JPEG 95 at its own resolution before the resize, as the served detector scores
it. The protocol functions are notebook 08's (:mod:`helpers.protocols`), so the tables read like its
frozen columns.

    .venv/bin/python benchmarks/intermediate_features_screen.py --run sample

Writes ``logo.csv``, ``lorso.csv``, ``in_distribution.csv`` (both answer rules), ``pairwise.csv`` (the
every-source probe's test AUC of each real source against each generator), ``robustness.csv`` (with
``--robustness``) and ``timings.json`` under ``--out``
(default ``runs/experiments/intermediate_features``); results and their date go to ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from run_options import add_run_arguments
from served_answers_from_scores import answers_table
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.preprocessing import StandardScaler

from helpers import config, evaluate, faces, models, perturb, protocols, splits
from helpers.aligned import BLOCKS  # the six blocks the aligned-fakes screen reads too
from helpers.pipeline import labels_of, make_dataset
from helpers.stats import auc_ci, choose_threshold

GRAM_BLOCKS = ("block_2_project_BN", "block_5_project_BN", "block_9_project_BN", "block_12_project_BN")
SIX_BLOCKS_STD = tuple(f"{b}:{stat}" for b in BLOCKS for stat in ("mean", "std"))
GRAM = tuple(f"{b}:gram" for b in GRAM_BLOCKS)
FEATURE_SETS = {"last layer": ("out_relu:mean",),
                "six blocks": tuple(f"{b}:mean" for b in BLOCKS),
                "six blocks + std": SIX_BLOCKS_STD,
                "gram": GRAM,
                "gram + six blocks + std": GRAM + SIX_BLOCKS_STD}
REGULARISATION = (0.0003, 0.001, 0.003, 0.03, 0.3)  # logistic regression's C, chosen on validation
SCORE_REENCODE = "jpeg:95"
ROBUSTNESS = ("jpeg:50", "scale:0.5", "recode:256")  # the served detector's robustness targets


def head_model(head: str, regularisation: float, seed: int):
    """The probe: ``logistic`` or ``multiclass`` (regularisation = C) or ``mlp`` (256 ReLU units; regularisation
    unused)."""
    if head in ("logistic", "multiclass"):
        return LogisticRegression(C=regularisation, max_iter=2000, random_state=seed)
    if head == "mlp":
        return MLPClassifier((256,), alpha=1e-2, early_stopping=True, max_iter=40, random_state=seed)
    raise ValueError(f"head must be logistic, multiclass or mlp, not {head!r}")


def block_maps(image_size: int, seed: int, names: tuple[str, ...]) -> tuple:
    """An image input (0-255) and the frozen ImageNet MobileNetV2's activations of the layers ``names`` for it,
    preprocessed as the detectors preprocess."""
    detector, _ = models.build_mobilenetv2(image_size=image_size, augment="flip", seed=seed)
    backbone = detector.get_layer("backbone")
    inner = keras.Model(backbone.inputs, [backbone.get_layer(name).output for name in names])
    inputs = keras.Input((image_size, image_size, 3))
    return inputs, inner(detector.get_layer("preprocess")(inputs), training=False)


def block_extractor(image_size: int, seed: int) -> keras.Model:
    """Image (0-255) → for each of :data:`BLOCKS`, the channel means and standard deviations of its activations."""
    inputs, maps = block_maps(image_size, seed, BLOCKS)
    outputs = {}
    for name, activations in zip(BLOCKS, maps):
        mean = keras.ops.mean(activations, axis=(1, 2))
        outputs[f"{name}:mean"] = mean
        outputs[f"{name}:std"] = keras.ops.sqrt(keras.ops.maximum(
            keras.ops.mean(keras.ops.square(activations), axis=(1, 2)) - keras.ops.square(mean), 0.0))
    return keras.Model(inputs, outputs)


def gram_extractor(image_size: int, seed: int) -> keras.Model:
    """Image (0-255) → for each of :data:`GRAM_BLOCKS`, the upper triangle of its Gram matrix: the mean over
    positions of every product of two channels (``C (C + 1) / 2`` numbers for ``C`` channels)."""
    inputs, maps = block_maps(image_size, seed, GRAM_BLOCKS)
    outputs = {}
    for name, activations in zip(GRAM_BLOCKS, maps):
        channels, positions = int(activations.shape[-1]), int(activations.shape[1]) * int(activations.shape[2])
        flat = keras.ops.reshape(activations, (-1, positions, channels))
        gram = keras.ops.reshape(keras.ops.einsum("bnc,bnd->bcd", flat, flat) / positions, (-1, channels * channels))
        rows, columns = np.triu_indices(channels)
        outputs[f"{name}:gram"] = keras.ops.take(gram, rows * channels + columns, axis=1)
    return keras.Model(inputs, outputs)


def extract(extractor: keras.Model | None, frame: pd.DataFrame, root: Path, image_size: int, cache: Path,
            perturbation: str = SCORE_REENCODE) -> dict:
    """``{"clean": {key: array}, "flipped": {...}}`` for every row of ``frame`` after ``perturbation``
    (read back from ``cache``; ``extractor`` may be ``None`` when it exists)."""
    if cache.exists():
        with np.load(cache) as stored:
            out: dict = {"clean": {}, "flipped": {}}
            for key in stored.files:
                variant, name = key.split("|", 1)
                out[variant][name] = stored[key]
            return out
    parts: dict = {"clean": {}, "flipped": {}}
    for images, _ in make_dataset(frame, root, image_size, 64, cache=False, perturbation=perturbation):
        for variant, batch in (("clean", images), ("flipped", tf.image.flip_left_right(images))):
            for key, value in extractor(batch, training=False).items():
                parts[variant].setdefault(key, []).append(np.asarray(value, np.float32))
    out = {v: {k: np.concatenate(chunks) for k, chunks in d.items()} for v, d in parts.items()}
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache.with_suffix(".tmp.npz"), **{f"{v}|{k}": a for v, d in out.items() for k, a in d.items()})
    cache.with_suffix(".tmp.npz").replace(cache)
    return out


@dataclass
class Probe:
    recipe: protocols.Recipe
    scaler: StandardScaler
    model: LogisticRegression | MLPClassifier
    threshold: float
    val_auc: float
    seconds: float
    scores: dict = field(default_factory=dict)   # (split, variant) -> P(fake), filled by ProbeBank.score
    fake_classes: np.ndarray | None = None        # multiclass: which of the model's classes are fake sources

    def p_fake(self, x: np.ndarray) -> np.ndarray:
        """P(fake) of standardised features ``x``: the fake class's probability, or the fake sources' sum."""
        probabilities = self.model.predict_proba(x)
        return probabilities[:, 1] if self.fake_classes is None else probabilities[:, self.fake_classes].sum(axis=1)


class ProbeBank:
    """A :class:`helpers.protocols.Bank` of probes on one feature set: the protocols train and score
    through it exactly as through notebook 08's frozen-feature bank.

    ``blocks[split][variant][key]``: the extracted arrays; variants are ``clean``, ``flipped`` and, for the
    test split, any perturbation ``p`` with its mirror ``p|flipped``."""

    def __init__(self, frames: dict[str, pd.DataFrame], blocks: dict, keys: tuple[str, ...], image_size: int,
                 regularisation: float, seed: int, head: str = "logistic"):
        self.frames, self.image_size, self.regularisation, self.seed = frames, image_size, regularisation, seed
        self.head = head
        self.arrays = {s: {v: np.concatenate([blocks[s][v][k] for k in keys], axis=1) for v in blocks[s]}
                       for s in frames}

    def train(self, recipe: protocols.Recipe, out_dir: str | Path, seed: int = 42) -> Probe:
        start = time.perf_counter()
        frame = self.frames["train"]
        rows = protocols.rows_of_sources(frame, recipe.train_sources)
        x = np.concatenate([self.arrays["train"]["clean"][rows], self.arrays["train"]["flipped"][rows]])
        y = np.tile(labels_of(frame.iloc[rows]), 2)
        sources = np.tile(frame["source"].to_numpy()[rows], 2)
        counts = pd.Series(sources).value_counts()
        weights = np.array([len(sources) / (len(counts) * counts[s]) for s in sources])  # every source alike
        scaler = StandardScaler().fit(x)
        model = head_model(self.head, self.regularisation, self.seed)
        fake_sources = np.unique(sources[y == 1])
        if self.head == "multiclass":  # one class a source; P(fake) sums the fake sources' classes
            y = sources
        model.fit(scaler.transform(x), y, sample_weight=weights)
        fake_classes = np.isin(model.classes_, fake_sources) if self.head == "multiclass" else None
        probe = Probe(recipe, scaler, model, 0.5, float("nan"), 0.0, fake_classes=fake_classes)
        val_rows = protocols.rows_of_sources(self.frames["val"], recipe.train_sources)
        val_y, val_s = labels_of(self.frames["val"].iloc[val_rows]), self.score(probe, "val")[val_rows]
        probe.threshold = choose_threshold(val_y, val_s)
        probe.val_auc = auc_ci(val_y, val_s, 0)[0]
        probe.seconds = time.perf_counter() - start
        return probe

    def score(self, probe: Probe, split: str, variant: str = "clean") -> np.ndarray:
        if variant not in self.arrays[split]:
            raise ValueError(f"no {variant!r} features of the {split} split were extracted")
        key = (split, variant)
        if key not in probe.scores:  # a fitted probe's scores never change: the protocols ask for them often
            arrays = self.arrays[split]
            mirror = "flipped" if variant == "clean" else f"{variant}|flipped"
            probe.scores[key] = np.mean([probe.p_fake(probe.scaler.transform(arrays[v])) for v in (variant, mirror)],
                                        axis=0)
            probe.scores[key].setflags(write=False)  # shared by every caller: nobody may change it
        return probe.scores[key]


def in_distribution(bank: ProbeBank, probe: Probe, n_boot: int, seed: int) -> pd.DataFrame:
    """Trained on every source: each generator's test AUC against every real test image, and the served
    answers per source under both rules (thresholds from validation; no familiarity check)."""
    scores = {split: bank.score(probe, split) for split in ("val", "test")}
    return answers_table(bank.frames, scores, n_boot, seed)


def feature_arrays(keys: set[str], frames: dict[str, pd.DataFrame], root: Path, size: int, cache: Path, seed: int,
                   robustness: bool) -> dict:
    """``blocks[split][variant][key]`` for the extractors ``keys`` need (the six blocks, the Gram matrices);
    with ``robustness``, the test split under each of :data:`ROBUSTNESS` too."""
    kinds = {"blocks": block_extractor, "gram": gram_extractor}
    needed = {"gram" if key.endswith(":gram") else "blocks" for key in keys}
    arrays: dict = {s: {"clean": {}, "flipped": {}} for s in frames}
    for kind in sorted(needed):
        files = {split: cache / f"{kind}_{size}_{split}.npz" for split in frames}
        files.update({p: cache / f"{kind}_{size}_test_{p.replace(':', '')}.npz" for p in (ROBUSTNESS if robustness else ())})
        # a MobileNetV2 is built only when some of its features are not cached yet
        extractor = None if all(path.exists() for path in files.values()) else kinds[kind](size, seed)
        for split, frame in frames.items():
            part = extract(extractor, frame, root, size, files[split])
            for variant in ("clean", "flipped"):
                arrays[split][variant].update(part[variant])
        for perturbation in ROBUSTNESS if robustness else ():
            part = extract(extractor, frames["test"], root, size, files[perturbation],
                           perturbation=perturb.then(perturbation, SCORE_REENCODE))
            for variant, mirror in ((perturbation, "clean"), (f"{perturbation}|flipped", "flipped")):
                arrays["test"].setdefault(variant, {}).update(part[mirror])
    return arrays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_arguments(parser)
    default = config.REPO_ROOT / "runs" / "experiments" / "intermediate_features"
    parser.add_argument("--out", type=Path, default=default)
    parser.add_argument("--cache", type=Path, default=default, help="where the extracted features are kept")
    parser.add_argument("--feature-sets", nargs="*", default=list(FEATURE_SETS))
    parser.add_argument("--head", choices=("logistic", "multiclass", "mlp"), default="logistic")
    parser.add_argument("--robustness", action="store_true", help="test AUC after JPEG 50, half size, re-encoding")
    args = parser.parse_args()
    cfg = config.load_run_config(args.run)
    args.out.mkdir(parents=True, exist_ok=True)
    split, root = faces.input_view(splits.load_split(cfg.path("split.csv")), cfg.data_root, cfg.run_dir, "image")
    frames = {s: split[split["split"] == s].reset_index(drop=True) for s in ("train", "val", "test")}
    timings: dict = {}
    start = time.perf_counter()
    keys = {key for name in args.feature_sets for key in FEATURE_SETS[name]}
    blocks = feature_arrays(keys, frames, Path(root), args.size, args.cache, cfg.seed, args.robustness)
    timings["features_s"] = round(time.perf_counter() - start, 1)
    tables: dict[str, list] = {"logo": [], "lorso": [], "in_distribution": [], "robustness": [], "pairwise": []}
    choices = (float("nan"),) if args.head == "mlp" else REGULARISATION  # the MLP's L2 is fixed
    for name in args.feature_sets:
        recipe = protocols.Recipe(name=name, balanced=True, tta_flip=True)
        start = time.perf_counter()
        bank = ProbeBank(frames, blocks, FEATURE_SETS[name], args.size, choices[0], cfg.seed, args.head)
        trained = {}
        for c in choices:  # chosen on the every-source training's validation AUC
            bank.regularisation = c
            trained[c] = bank.train(recipe, args.out)
        val_aucs = {c: probe.val_auc for c, probe in trained.items()}
        best = max(val_aucs, key=val_aucs.get)
        bank.regularisation, everything = best, trained[best]
        tag = dict(head=args.head, C=best)
        tables["in_distribution"].append(in_distribution(bank, everything, args.n_boot, cfg.seed)
                                         .assign(feature_set=name, val_auc=everything.val_auc, **tag))
        test = frames["test"].assign(model=f"{name}, {args.head}", score=bank.score(everything, "test"))
        tables["pairwise"].append(evaluate.pairwise_auc_table(test, args.n_boot, cfg.seed))
        if args.robustness:
            tables["robustness"].append(protocols.robustness_grid(everything, bank, ROBUSTNESS, args.n_boot, cfg.seed)
                                        .assign(**tag))
        tables["logo"].append(protocols.leave_one_generator_out(recipe, bank, args.out, args.n_boot, cfg.seed)
                              .assign(**tag))
        tables["lorso"].append(protocols.leave_one_real_source_out(recipe, bank, args.out, args.n_boot, cfg.seed)
                               .assign(**tag))
        timings[name] = dict(seconds=round(time.perf_counter() - start, 1), head=args.head,  # no NaN in JSON
                             val_auc_by_C={str(c): v for c, v in val_aucs.items()}, C=None if np.isnan(best) else best)
        for table, parts in tables.items():
            if parts:
                pd.concat(parts).to_csv(args.out / f"{table}.csv", index=False)
        (args.out / "timings.json").write_text(json.dumps(timings, indent=2))
        print(name, json.dumps(timings[name]), flush=True)


if __name__ == "__main__":
    main()
