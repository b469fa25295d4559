"""A fine-tuned detector and a frozen-block probe, averaged: do they know different things?

The frozen MobileNetV2's intermediate blocks rank an unseen SD 2.1 higher than the fine-tuned served
recipe does, and an unseen SD 1.5 lower (``intermediate_features_screen.py``); a fine-tuned detector
has moved its backbone away from those blocks. If their errors differ, the mean of their P(fake) should
beat both. This loads the fine-tuned folds ``served_recipe_ablation.py`` kept for a candidate (nothing is
trained but the probes, seconds each), trains the "six blocks + std" probe on the same sources, and runs
notebook 08's protocol functions on three detectors: the fine-tuned one, the probe, and their mean.

    .venv/bin/python benchmarks/probe_ensemble.py --candidate 8 \\
        --checkpoints runs/experiments/block_taps/checkpoints runs/experiments/block_taps_folds/checkpoints \\
        --generator-held-outs sd15 sd21 --real-held-outs ffhq

Writes ``logo.csv``, ``lorso.csv``, ``in_distribution.csv`` under ``--out`` (default
``runs/experiments/probe_ensemble``); results and their date go to ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from intermediate_features_screen import FEATURE_SETS, ProbeBank, block_extractor, extract, in_distribution
from run_options import add_run_arguments
from served_recipe_ablation import FINETUNED, load_fold

from helpers import config, faces, finetuned, protocols, splits
from helpers.pipeline import labels_of
from helpers.stats import auc_ci, choose_threshold

MODES = ("fine-tuned", "probe", "mean")


@dataclass
class Pair:
    """A fold's fine-tuned detector and probe, scored as ``mode`` says."""

    recipe: finetuned.FinetuneRecipe
    detector: finetuned.TrainedDetector
    probe: object
    mode: str
    threshold: float = 0.5
    val_auc: float = float("nan")
    seconds: float = 0.0
    scores: dict = field(default_factory=dict)


class PairBank:
    """A :class:`helpers.protocols.Bank` whose ``train`` loads the kept fine-tuned fold of the recipe's name and
    trains the probe on the same sources; ``score`` gives the detector's, the probe's or their mean P(fake)."""

    def __init__(self, images: finetuned.ImageBank, probes: ProbeBank, checkpoints: list[Path], mode: str,
                 loaded: dict[str, finetuned.TrainedDetector] | None = None):
        """``loaded``: folds already loaded, shared between banks of different modes (each fold loads once)."""
        self.images, self.probes, self.checkpoints, self.mode = images, probes, checkpoints, mode
        self.frames, self.image_size = images.frames, images.image_size
        self.loaded = {} if loaded is None else loaded

    def _detector(self, recipe: finetuned.FinetuneRecipe) -> finetuned.TrainedDetector:
        if recipe.name not in self.loaded:
            for folder in self.checkpoints:
                try:
                    self.loaded[recipe.name] = load_fold(folder, recipe)
                    break
                except FileNotFoundError:
                    continue
            else:
                raise FileNotFoundError(f"no kept fold for {recipe.name!r} in {self.checkpoints}")
        return self.loaded[recipe.name]

    def train(self, recipe: finetuned.FinetuneRecipe, out_dir: str | Path, seed: int = 42) -> Pair:
        start = time.perf_counter()
        probe = self.probes.train(protocols.Recipe(name=recipe.name, train_sources=recipe.train_sources,
                                                   balanced=True, tta_flip=True), out_dir, seed)
        pair = Pair(recipe, self._detector(recipe), probe, self.mode)
        val_rows = protocols.rows_of_sources(self.frames["val"], recipe.train_sources)
        val_y, val_s = labels_of(self.frames["val"].iloc[val_rows]), self.score(pair, "val")[val_rows]
        pair.threshold, pair.val_auc = choose_threshold(val_y, val_s), auc_ci(val_y, val_s, 0)[0]
        pair.seconds = time.perf_counter() - start
        return pair

    def score(self, pair: Pair, split: str, variant: str = "clean") -> np.ndarray:
        parts = {"fine-tuned": lambda: self.images.score(pair.detector, split, variant),
                 "probe": lambda: self.probes.score(pair.probe, split, variant)}
        if pair.mode in parts:
            return parts[pair.mode]()
        return (parts["fine-tuned"]() + parts["probe"]()) / 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_arguments(parser)
    parser.add_argument("--candidate", type=int, default=8, help="position in served_recipe_ablation.FINETUNED")
    parser.add_argument("--checkpoints", type=Path, nargs="+", required=True)
    parser.add_argument("--blocks", type=Path, default=None,
                        help="where intermediate_features_screen.py keeps its features (default: its --out)")
    parser.add_argument("--generator-held-outs", nargs="*", default=None)
    parser.add_argument("--real-held-outs", nargs="*", default=None)
    parser.add_argument("--regularisation", type=float, default=0.003, help="the probe's C (the screen's choice)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    cfg = config.load_run_config(args.run)
    out = Path(args.out or config.REPO_ROOT / "runs" / "experiments" / "probe_ensemble")
    out.mkdir(parents=True, exist_ok=True)
    blocks_dir = args.blocks or config.REPO_ROOT / "runs" / "experiments" / "intermediate_features"
    split, root = faces.input_view(splits.load_split(cfg.path("split.csv")), cfg.data_root, cfg.run_dir, "image")
    recipe = finetuned.FinetuneRecipe(**FINETUNED[args.candidate])
    images = finetuned.ImageBank(split, root, args.size)
    frames = images.frames
    extractor = block_extractor(args.size, cfg.seed)
    blocks = {s: extract(extractor, f, Path(root), args.size, blocks_dir / f"blocks_{args.size}_{s}.npz")
              for s, f in frames.items()}
    probes = ProbeBank(frames, blocks, FEATURE_SETS["six blocks + std"], args.size, args.regularisation, cfg.seed)
    tables: dict[str, list] = {"logo": [], "lorso": [], "in_distribution": []}
    loaded: dict = {}
    for mode in MODES:
        bank = PairBank(images, probes, args.checkpoints, mode, loaded)  # one load per fold for the three modes
        everything = bank.train(recipe, out, cfg.seed)
        tables["in_distribution"].append(in_distribution(bank, everything, args.n_boot, cfg.seed).assign(mode=mode))
        tables["logo"].append(protocols.leave_one_generator_out(recipe, bank, out, args.n_boot, cfg.seed,
                                                                held_outs=args.generator_held_outs).assign(mode=mode))
        tables["lorso"].append(protocols.leave_one_real_source_out(recipe, bank, out, args.n_boot, cfg.seed,
                                                                   held_outs=args.real_held_outs).assign(mode=mode))
        for table, parts in tables.items():
            pd.concat(parts).to_csv(out / f"{table}.csv", index=False)
        print(mode, "done", flush=True)


if __name__ == "__main__":
    main()
