"""What would the served detector say about a real source it never saw? Leave one real source out, answered.

`served_recipe_ablation.py` keeps the checkpoint of every leave-one-real-source-out fold. This script
trains nothing: it loads each fold's detector and runs :func:`helpers.protocols.leave_one_real_source_out`
with ``served_answers=True`` — the served detector's three answers (:mod:`helpers.served`: operating
point, "too close to call" band, "unlike the training images" distance) fitted without the held-out
source — so the table says how much of an unseen real collection is called fake, real or unsure, and
how much is caught as unfamiliar, next to the false-positive rate at the fake threshold.

    .venv/bin/python benchmarks/served_answers_held_out.py --run sample \\
        --checkpoints runs/experiments/served_recipe --candidate 0
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
from run_options import add_run_arguments
from served_recipe_ablation import FINETUNED, load_fold

from helpers import config, finetuned, protocols, splits
from helpers.pipeline import labels_of
from helpers.stats import choose_threshold


class CheckpointBank(finetuned.ImageBank):
    """An :class:`helpers.finetuned.ImageBank` whose ``train`` loads the fold's kept checkpoint."""

    def __init__(self, *args, checkpoints: Path, **kwargs):
        super().__init__(*args, **kwargs)
        self.checkpoints = checkpoints

    def load(self, recipe: finetuned.FinetuneRecipe) -> finetuned.TrainedDetector:
        """The fold's kept detector, its threshold not yet chosen."""
        return load_fold(self.checkpoints, recipe)

    def train(self, recipe: finetuned.FinetuneRecipe, out_dir=None, seed: int = 42) -> finetuned.TrainedDetector:
        trained = self.load(recipe)
        val_rows = protocols.rows_of_sources(self.frames["val"], recipe.train_sources)
        trained.threshold = choose_threshold(labels_of(self.frames["val"].iloc[val_rows]),
                                             self.score(trained, "val")[val_rows])
        return trained


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_arguments(parser)
    parser.add_argument("--checkpoints", type=Path, default=config.REPO_ROOT / "runs/experiments/served_recipe",
                        help="an ablation output folder (its checkpoints/ subfolder holds the folds)")
    parser.add_argument("--candidate", type=int, default=0, help="position in served_recipe_ablation.FINETUNED")
    parser.add_argument("--real-held-outs", nargs="*", default=None)
    args = parser.parse_args()
    cfg = config.load_run_config(args.run)
    bank = CheckpointBank(splits.load_split(cfg.path("split.csv")), cfg.data_root, args.size,
                          checkpoints=args.checkpoints / "checkpoints")
    recipe = finetuned.FinetuneRecipe(**FINETUNED[args.candidate])
    start = time.perf_counter()
    train = bank.frames["train"]
    parts = []
    for held_out in args.real_held_outs or sorted(train.loc[train.label == "real", "source"].unique()):
        parts.append(protocols.leave_one_real_source_out(recipe, bank, None, n_boot=args.n_boot, seed=cfg.seed,
                                                         held_outs=[held_out], served_answers=True))
        table = pd.concat(parts, ignore_index=True)
        table.to_csv(args.checkpoints / "lorso_served_answers.csv", index=False)  # after each fold
        print(f"{held_out}: {time.perf_counter() - start:.0f}s", flush=True)
    columns = ["held_out", "fpr", "held_out_called_fake", "held_out_unsure", "held_out_unfamiliar",
               "held_out_called_real", "detection", "fakes_called_fake", "fakes_unsure", "fakes_called_real"]
    with pd.option_context("display.width", 200):
        print(table[columns].round(3).to_string(index=False))
    print(f"{time.perf_counter() - start:.0f}s")


if __name__ == "__main__":
    main()
