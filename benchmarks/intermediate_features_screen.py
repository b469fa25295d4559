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
- ``six blocks + std``: the means and standard deviations of the six blocks.

Each probe is a logistic regression on standardised features, sources weighted equally (the lab's
"balanced" batches), trained on every image and its mirror, scored as the mean of both (test-time flip);
its regularisation is chosen on the validation AUC of the every-source training. Every picture goes
through JPEG 95 at its own resolution before the resize, as the served detector scores it. The protocol
functions are notebook 08's (:mod:`helpers.protocols`), so the tables read like its frozen columns.

    .venv/bin/python benchmarks/intermediate_features_screen.py --run sample

Writes ``logo.csv``, ``lorso.csv``, ``in_distribution.csv`` (both answer rules) and ``timings.json`` under ``--out``
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
from served_answers_from_scores import answers_table
from served_recipe_ablation import add_run_arguments
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from helpers import config, faces, models, protocols, splits
from helpers.pipeline import labels_of, make_dataset
from helpers.stats import auc_ci, choose_threshold

BLOCKS = ("block_2_expand_relu", "block_5_expand_relu", "block_9_expand_relu", "block_12_expand_relu",
          "block_15_expand_relu", "out_relu")
FEATURE_SETS = {"last layer": ("out_relu:mean",),
                "six blocks": tuple(f"{b}:mean" for b in BLOCKS),
                "six blocks + std": tuple(f"{b}:{stat}" for b in BLOCKS for stat in ("mean", "std"))}
REGULARISATION = (0.0003, 0.001, 0.003, 0.03, 0.3)  # logistic regression's C, chosen on validation
SCORE_REENCODE = "jpeg:95"


def block_extractor(image_size: int, seed: int) -> keras.Model:
    """Image (0-255) → for each of :data:`BLOCKS`, the channel means and standard deviations of its activations."""
    detector, _ = models.build_mobilenetv2(image_size=image_size, augment="flip", seed=seed)
    backbone = detector.get_layer("backbone")
    inner = keras.Model(backbone.inputs, [backbone.get_layer(name).output for name in BLOCKS])
    inputs = keras.Input((image_size, image_size, 3))
    maps = inner(detector.get_layer("preprocess")(inputs), training=False)
    outputs = {}
    for name, activations in zip(BLOCKS, maps):
        mean = keras.ops.mean(activations, axis=(1, 2))
        outputs[f"{name}:mean"] = mean
        outputs[f"{name}:std"] = keras.ops.sqrt(keras.ops.maximum(
            keras.ops.mean(keras.ops.square(activations), axis=(1, 2)) - keras.ops.square(mean), 0.0))
    return keras.Model(inputs, outputs)


def extract(extractor: keras.Model, frame: pd.DataFrame, root: Path, image_size: int, cache: Path) -> dict:
    """``{"clean": {key: array}, "flipped": {...}}`` for every row of ``frame`` (read back from ``cache``)."""
    if cache.exists():
        with np.load(cache) as stored:
            out: dict = {"clean": {}, "flipped": {}}
            for key in stored.files:
                variant, name = key.split("|", 1)
                out[variant][name] = stored[key]
            return out
    parts: dict = {"clean": {}, "flipped": {}}
    for images, _ in make_dataset(frame, root, image_size, 64, cache=False, perturbation=SCORE_REENCODE):
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
    model: LogisticRegression
    threshold: float
    val_auc: float
    seconds: float
    scores: dict = field(default_factory=dict)   # split -> P(fake), filled by ProbeBank.score


class ProbeBank:
    """A :class:`helpers.protocols.Bank` of linear probes on one feature set: the protocols train and score
    through it exactly as through notebook 08's frozen-feature bank."""

    def __init__(self, frames: dict[str, pd.DataFrame], blocks: dict, keys: tuple[str, ...], image_size: int,
                 regularisation: float, seed: int):
        self.frames, self.image_size, self.regularisation, self.seed = frames, image_size, regularisation, seed
        self.arrays = {s: {v: np.concatenate([blocks[s][v][k] for k in keys], axis=1) for v in ("clean", "flipped")}
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
        model = LogisticRegression(C=self.regularisation, max_iter=2000, random_state=self.seed)
        model.fit(scaler.transform(x), y, sample_weight=weights)
        probe = Probe(recipe, scaler, model, 0.5, float("nan"), 0.0)
        val_rows = protocols.rows_of_sources(self.frames["val"], recipe.train_sources)
        val_y, val_s = labels_of(self.frames["val"].iloc[val_rows]), self.score(probe, "val")[val_rows]
        probe.threshold = choose_threshold(val_y, val_s)
        probe.val_auc = auc_ci(val_y, val_s, 0)[0]
        probe.seconds = time.perf_counter() - start
        return probe

    def score(self, probe: Probe, split: str, variant: str = "clean") -> np.ndarray:
        if variant != "clean":
            raise ValueError("the screen extracts clean pictures and their mirrors only")
        if split not in probe.scores:  # a fitted probe's scores never change: the protocols ask for them often
            arrays = self.arrays[split]
            probe.scores[split] = np.mean([probe.model.predict_proba(probe.scaler.transform(arrays[v]))[:, 1]
                                           for v in ("clean", "flipped")], axis=0)
            probe.scores[split].setflags(write=False)  # shared by every caller: nobody may change it
        return probe.scores[split]


def in_distribution(bank: ProbeBank, probe: Probe, n_boot: int, seed: int) -> pd.DataFrame:
    """Trained on every source: each generator's test AUC against every real test image, and the served
    answers per source under both rules (thresholds from validation; no familiarity check)."""
    scores = {split: bank.score(probe, split) for split in ("val", "test")}
    return answers_table(bank.frames, scores, n_boot, seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_arguments(parser)
    parser.add_argument("--out", default=None)
    parser.add_argument("--feature-sets", nargs="*", default=list(FEATURE_SETS))
    args = parser.parse_args()
    cfg = config.load_run_config(args.run)
    out = Path(args.out or config.REPO_ROOT / "runs" / "experiments" / "intermediate_features")
    out.mkdir(parents=True, exist_ok=True)
    split, root = faces.input_view(splits.load_split(cfg.path("split.csv")), cfg.data_root, cfg.run_dir, "image")
    frames = {s: split[split["split"] == s].reset_index(drop=True) for s in ("train", "val", "test")}
    timings: dict = {}
    start = time.perf_counter()
    extractor = block_extractor(args.size, cfg.seed)
    blocks = {s: extract(extractor, f, Path(root), args.size, out / f"blocks_{args.size}_{s}.npz")
              for s, f in frames.items()}
    timings["features_s"] = round(time.perf_counter() - start, 1)
    tables: dict[str, list] = {"logo": [], "lorso": [], "in_distribution": []}
    for name in args.feature_sets:
        keys = FEATURE_SETS[name]
        recipe = protocols.Recipe(name=name, balanced=True, tta_flip=True)
        start = time.perf_counter()
        bank = ProbeBank(frames, blocks, keys, args.size, REGULARISATION[0], cfg.seed)  # features joined once
        trained = {}
        for c in REGULARISATION:  # chosen on the every-source training's validation AUC
            bank.regularisation = c
            trained[c] = bank.train(recipe, out)
        val_aucs = {c: probe.val_auc for c, probe in trained.items()}
        best = max(val_aucs, key=val_aucs.get)
        bank.regularisation, everything = best, trained[best]
        tables["in_distribution"].append(in_distribution(bank, everything, args.n_boot, cfg.seed)
                                         .assign(feature_set=name, C=best, val_auc=everything.val_auc))
        tables["logo"].append(protocols.leave_one_generator_out(recipe, bank, out, args.n_boot, cfg.seed)
                              .assign(C=best))
        tables["lorso"].append(protocols.leave_one_real_source_out(recipe, bank, out, args.n_boot, cfg.seed)
                               .assign(C=best))
        timings[name] = dict(seconds=round(time.perf_counter() - start, 1), val_auc_by_C=val_aucs, C=best)
        for table, parts in tables.items():
            pd.concat(parts).to_csv(out / f"{table}.csv", index=False)
        (out / "timings.json").write_text(json.dumps(timings, indent=2))
        print(name, json.dumps(timings[name]), flush=True)


if __name__ == "__main__":
    main()
