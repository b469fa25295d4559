"""Screen: format-blind training copies and native-resolution crops, on frozen features, against today's framing.

Three framings of the same pictures (``helpers.format_blind``), each through the frozen ImageNet MobileNetV2's
six blocks (``helpers.aligned.block_features``: JPEG 95 first, mirror averaged) and a linear probe (C on
validation), on the sample run's split:

- ``resize``: the whole picture resized to ``--size`` px (the served detector's framing), clean copies;
- ``native crop``: a ``--size`` px centre crop at the picture's own resolution, clean;
- ``format-blind``: ``--copies`` format-blind copies of each training picture (rescale 0.5-1 with a random
  interpolation, random crop, blur at p 0.1, JPEG 65-100 or none), scored as the mean of five fixed crops at the
  picture's own resolution (``format-blind, 1 crop``: the centre crop only);
- ``whole picture + format-blind crops``: both feature sets side by side in one probe (trained on the resized
  picture beside each format-blind copy, scored on the resized picture beside the five crops' mean), and the
  ``resize`` and ``format-blind`` probes' logits summed: the two views in one detector.

Probes: every source, and each diffusion generator held out. Each row: the real test pictures against one
generator's, AUC [95% CI], clean and after JPEG 50, half size and the format-shortcut re-encoding (every test
picture to 256 px, JPEG 90). The shortcut check: a logistic regression on width, height and JPEG quality
(cross-validated AUC on the training pictures as each framing feeds them to the network).

    .venv/bin/python benchmarks/format_blind_screen.py --run sample --train-per-source 250

Writes ``format_blind_screen.csv``, ``shortcut.csv`` and ``timings.json`` under ``--out`` (features cached
there); copy the tables to ``benchmarks/results_format_blind_*.csv`` to keep them with the scripts.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from run_options import add_run_arguments

from helpers import aligned, atomic, config, format_blind, perturb, splits
from helpers.stats import auc_ci

PERTURBATIONS = ("clean", "jpeg:50", "scale:0.5", "recode:256")
GENERATORS = ("sd15", "sd21", "stylegan1", "stylegan2")


def pictures(frame: pd.DataFrame, root: Path) -> tuple[pd.DataFrame, list[np.ndarray], list[int]]:
    """Each readable row's picture at its own resolution and its JPEG quality (100 for a file that is not a JPEG)."""
    kept, images, qualities = [], [], []
    for position, image, quality in aligned.readable_pictures(frame, root, 100):
        kept.append(position)
        images.append(image)
        qualities.append(quality)
    return frame.iloc[kept].reset_index(drop=True), images, qualities


def framed(images: list[np.ndarray], framing: str, side: int, keys: list[str] | None = None,
           copy: int = 0) -> np.ndarray:
    """The pictures as one framing feeds them to the network: ``resize``, ``centre`` or ``blind`` (a
    format-blind copy), one ``side`` px square each; ``crops`` gives five crops each, flattened."""
    if framing == "resize":
        return np.stack([np.asarray(Image.fromarray(i).resize((side, side), Image.Resampling.BILINEAR)) for i in images])
    if framing == "centre":
        return np.stack([format_blind.scoring_crops(i, side, 1)[0] for i in images])
    if framing == "crops":
        return np.concatenate([format_blind.scoring_crops(i, side, 5) for i in images])
    settings = format_blind.FormatBlind(side=side)
    return np.stack([format_blind.format_blind_copy(i, k, copy, settings) for i, k in zip(images, keys)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_arguments(parser)
    parser.add_argument("--train-per-source", type=int, default=250)
    parser.add_argument("--val-per-source", type=int, default=100)
    parser.add_argument("--test-per-source", type=int, default=0, help="0: every test picture")
    parser.add_argument("--copies", type=int, default=2, help="format-blind copies per training picture")
    parser.add_argument("--out", type=Path, default=config.REPO_ROOT / "runs" / "experiments" / "format_blind")
    args = parser.parse_args()
    cfg = config.load_run_config(args.run)
    args.out.mkdir(parents=True, exist_ok=True)
    split = splits.load_split(cfg.path("split.csv"))
    started = time.perf_counter()
    frames, images, qualities = {}, {}, {}
    for part, n in (("train", args.train_per_source), ("val", args.val_per_source), ("test", args.test_per_source)):
        frames[part], images[part], qualities[part] = pictures(
            aligned.per_source(split[split["split"] == part], n, cfg.seed), Path(cfg.data_root))
    extractor = aligned.block_extractor(args.size)
    tag = f"{args.run}_{args.train_per_source}_{args.val_per_source}_{args.test_per_source}_{args.size}"

    def features(part: str, framing: str, perturbation: str = "clean", copy: int = 0) -> np.ndarray:
        def make():
            shown = [perturb.apply(i, perturbation) if perturbation != "clean" else i for i in images[part]]
            batch = framed(shown, framing, args.size, list(frames[part]["path"]), copy)
            found = aligned.block_features(batch, extractor)
            return found.reshape(len(shown), 5, -1).mean(1) if framing == "crops" else found
        name = f"{tag}_{part}_{framing}_{perturbation.replace(':', '')}_{copy}"
        return atomic.kept_array(args.out / f"{name}.npy", make, "kept features")

    # the shortcut check: what the network's input says about the label through size and JPEG quality alone
    train = frames["train"]
    shortcut = [dict(framing="resize / native crop (original files)", auc=format_blind.shortcut_auc(
        train.assign(quality=qualities["train"])))]
    blind_meta = []
    settings = format_blind.FormatBlind(side=args.size)
    for copy in range(args.copies):
        for key, q in zip(train["path"], qualities["train"]):
            blind_meta.append(format_blind.copy_quality(key, copy, settings, q))
    shortcut.append(dict(framing="format-blind copies", auc=format_blind.shortcut_auc(pd.DataFrame(dict(
        width=args.size, height=args.size, quality=blind_meta,
        label=np.tile(train["label"].to_numpy(), args.copies))))))

    y = {p: (f["label"] == "fake").astype(int).to_numpy() for p, f in frames.items()}
    s = {p: f["source"].to_numpy() for p, f in frames.items()}
    # each framing: the training features and the scoring features, side by side when there are two
    framings = {"resize": (("resize",), ("resize",)), "native crop": (("centre",), ("centre",)),
                "format-blind": (("blind",), ("crops",)), "format-blind, 1 crop": (("blind",), ("centre",)),
                "whole picture + format-blind crops": (("resize", "blind"), ("resize", "crops"))}
    folds = {"every source": GENERATORS,
             **{f"held out {g}": tuple(x for x in GENERATORS if x != g) for g in ("sd15", "sd21")}}
    table, kept_scores = [], {}
    test = frames["test"]
    real = (test["label"] == "real").to_numpy()

    def side_by_side(part: str, names: tuple[str, ...], perturbation: str = "clean", copy: int = 0) -> np.ndarray:
        return np.concatenate([features(part, n, perturbation, copy if n == "blind" else 0) for n in names], axis=1)

    def rows(name: str, fold: str, generators: tuple, perturbation: str, scores: np.ndarray, c) -> None:
        for generator in GENERATORS:
            fake = (test["source"] == generator).to_numpy()
            labels = np.r_[np.zeros(real.sum()), np.ones(fake.sum())]
            auc, low, high = auc_ci(labels, np.r_[scores[real], scores[fake]], n_boot=args.n_boot, seed=cfg.seed)
            table.append(dict(framing=name, fold=fold, perturbation=perturbation, generator=generator,
                              seen=generator in generators, auc=round(auc, 3), low=round(low, 3),
                              high=round(high, 3), C=c))

    for name, (train_framing, score_framing) in framings.items():
        copies = range(args.copies) if "blind" in train_framing else range(1)
        x_train = np.concatenate([side_by_side("train", train_framing, copy=c) for c in copies])
        y_train, s_train = np.tile(y["train"], len(copies)), np.tile(s["train"], len(copies))
        x_val = side_by_side("val", score_framing)
        tests = {p: side_by_side("test", score_framing, p) for p in PERTURBATIONS}
        for fold, generators in folds.items():
            keep = (y_train == 0) | np.isin(s_train, generators)
            keep_val = (y["val"] == 0) | np.isin(s["val"], generators)
            score, c = aligned.train_probe(x_train[keep], y_train[keep], s_train[keep],
                                           (x_val[keep_val], y["val"][keep_val]), cfg.seed)
            for perturbation, x_test in tests.items():
                kept_scores[name, fold, perturbation] = score(x_test)
                rows(name, fold, generators, perturbation, kept_scores[name, fold, perturbation], c)
        print(f"{name}: done at {time.perf_counter() - started:.0f} s", flush=True)
    # the two probes together: their logits summed (each a logistic regression's log-odds)
    for fold, generators in folds.items():
        for perturbation in PERTURBATIONS:
            summed = kept_scores["resize", fold, perturbation] + kept_scores["format-blind", fold, perturbation]
            rows("resize probe + format-blind probe (logits summed)", fold, generators, perturbation, summed, "")
    table = pd.DataFrame(table)
    atomic.write_csv(args.out / "format_blind_screen.csv", table)
    atomic.write_csv(args.out / "shortcut.csv", pd.DataFrame(shortcut).round(3))
    atomic.write_json(args.out / "timings.json", dict(seconds=round(time.perf_counter() - started, 1),
                                                      pictures={p: len(f) for p, f in frames.items()},
                                                      copies=args.copies, size=args.size), indent=2)
    clean = table[table.perturbation == "clean"]
    print(clean.pivot_table(index=["framing", "fold"], columns="generator", values="auc").round(3).to_string())
    print(pd.DataFrame(shortcut).round(3).to_string())


if __name__ == "__main__":
    main()
