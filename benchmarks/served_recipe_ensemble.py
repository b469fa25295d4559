"""Whole image, face crop, or both? The served recipe's two framings combined, under both protocols.

`served_recipe_ablation.py` trains the served recipe on whole images (``--input image``) and on
notebook 02's MTCNN face crops (``--input face``), each fold of both leave-one-out protocols plus
the model trained on every source, and keeps every checkpoint. This script trains nothing: it
loads the two runs' checkpoints fold by fold and scores **every** image of the split (not only the
ones with a face) three ways, then runs the same protocol functions as notebook 08 on each:

- ``whole image``: the whole-image model alone (re-scores the ablation's own numbers);
- ``face crop, whole image without a face``: the crop model, and the whole-image model where
  MTCNN found no face (how a face-crop detector would have to be served);
- ``mean of both``: the average of the two models' P(fake) (the whole-image score alone where
  there is no face) — a two-member ensemble of different framings.

Perturbed variants (JPEG 50, half size, format change) are applied to the crop itself for the crop
model (the served pipeline would crop the perturbed photo; close, not identical).

    .venv/bin/python benchmarks/served_recipe_ensemble.py --run sample \\
        --whole runs/experiments/served_recipe --face runs/experiments/served_recipe_face

``--second-whole DIR --second-candidate K`` makes the second member another whole-image training
(candidate ``K`` of the ablation script, kept in ``DIR``) instead of the face crop: a two-member
ensemble of trainings (the columns are then the first training, the second, and their mean).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
from run_options import add_run_arguments
from served_recipe_ablation import FINETUNED, in_distribution, load_fold

from helpers import config, faces, finetuned, protocols, splits
from helpers.pipeline import labels_of
from helpers.stats import auc_ci, choose_threshold

COMBINATIONS = ("whole image", "face crop, whole image without a face", "mean of both")
TRAININGS = ("first training", "second training", "mean of both")


class FramingBank:
    """A :class:`helpers.protocols.Bank` whose ``train`` loads a fold's two members — the whole-image
    checkpoint and a second one (the face-crop framing, or another whole-image training) — and whose
    ``score`` combines them for every row of the whole-image split (``combination``)."""

    def __init__(self, whole: finetuned.ImageBank, second: finetuned.ImageBank, whole_dir: Path, second_dir: Path,
                 second_spec: dict | None = None):
        self.whole, self.second, self.dirs = whole, second, {"whole": whole_dir, "second": second_dir}
        self.image_size, self.frames = whole.image_size, whole.frames
        self.combination = COMBINATIONS[0]
        self.second_spec = second_spec  # the second member's recipe when it is not the first's (another training)
        self.members: dict[str, dict[str, finetuned.TrainedDetector]] = {}
        # position in the second member's split of each whole-image row (-1: no face found)
        self.second_rows = {}
        for split, frame in self.frames.items():
            if second is whole:  # a second whole-image member: row for row
                self.second_rows[split] = np.arange(len(frame))
                continue
            where = pd.Series(np.arange(len(second.frames[split])), index=second.frames[split]["image_path"])
            self.second_rows[split] = where.reindex(frame["path"]).fillna(-1).astype(int).to_numpy()

    def second_recipe(self, recipe: finetuned.FinetuneRecipe) -> finetuned.FinetuneRecipe:
        """The second member's recipe for ``recipe``'s fold (the same, or ``second_spec`` with the fold's sources)."""
        if self.second_spec is None:
            return recipe
        fold = recipe.name[len(FINETUNED[0]["name"]):]  # "" or "_without_<source>"
        return finetuned.FinetuneRecipe(**{**self.second_spec, "name": self.second_spec["name"] + fold,
                                           "train_sources": recipe.train_sources})

    def train(self, recipe: finetuned.FinetuneRecipe, out_dir=None, seed: int = 42):
        """The fold's two trained members (loaded, not trained), with this combination's Youden threshold on
        the validation rows of the fold's training sources (as :func:`helpers.finetuned.train_finetuned`)."""
        if recipe.name not in self.members:
            self.members[recipe.name] = {"whole": load_fold(self.dirs["whole"] / "checkpoints", recipe),
                                         "second": load_fold(self.dirs["second"] / "checkpoints",
                                                             self.second_recipe(recipe))}
        trained = finetuned.TrainedDetector(recipe, None, 0.5, float("nan"), 0.0,
                                            {"members": self.members[recipe.name]})
        val_rows = protocols.rows_of_sources(self.frames["val"], recipe.train_sources)
        labels = labels_of(self.frames["val"].iloc[val_rows])
        val_scores = self.score(trained, "val")[val_rows]
        trained.threshold = choose_threshold(labels, val_scores)
        trained.val_auc = auc_ci(labels, val_scores, n_boot=0)[0]
        return trained

    def score(self, trained: finetuned.TrainedDetector, split: str, variant: str = "clean") -> np.ndarray:
        key = (split, variant, self.combination)
        if key not in trained.scores:
            members = trained.notes["members"]
            whole = self.whole.score(members["whole"], split, variant)
            if self.combination == COMBINATIONS[0]:
                trained.scores[key] = whole
            else:
                rows = self.second_rows[split]
                second = np.where(rows >= 0,
                                  self.second.score(members["second"], split, variant)[np.maximum(rows, 0)], whole)
                trained.scores[key] = second if self.combination == COMBINATIONS[1] else (whole + second) / 2
        return trained.scores[key]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_arguments(parser)
    parser.add_argument("--whole", type=Path, default=config.REPO_ROOT / "runs/experiments/served_recipe")
    parser.add_argument("--face", type=Path, default=config.REPO_ROOT / "runs/experiments/served_recipe_face")
    parser.add_argument("--out", type=Path, default=config.REPO_ROOT / "runs/experiments/served_recipe_framings")
    parser.add_argument("--second-whole", type=Path, default=None,
                        help="a second whole-image training's ablation folder, instead of the face crops")
    parser.add_argument("--second-candidate", type=int, default=0, help="its candidate index in FINETUNED")
    parser.add_argument("--real-held-outs", nargs="*", default=None,
                        help="leave only these real sources out (default: each in turn)")
    args = parser.parse_args()
    cfg = config.load_run_config(args.run)
    args.out.mkdir(parents=True, exist_ok=True)
    split = splits.load_split(cfg.path("split.csv"))
    whole = finetuned.ImageBank(split, cfg.data_root, args.size)
    if args.second_whole is not None:
        bank = FramingBank(whole, whole, args.whole, args.second_whole, FINETUNED[args.second_candidate])
    else:
        face_split, face_root = faces.input_view(split, cfg.data_root, cfg.run_dir, "face")
        bank = FramingBank(whole, finetuned.ImageBank(face_split, face_root, args.size), args.whole, args.face)
    labels = dict(zip(COMBINATIONS, TRAININGS if args.second_whole is not None else COMBINATIONS))
    recipe = finetuned.FinetuneRecipe(**FINETUNED[0])
    tables: dict[str, list] = {"lorso": [], "logo": [], "summary": [], "per_source": []}
    start = time.perf_counter()
    for combination in COMBINATIONS:
        bank.combination = combination
        trained = bank.train(recipe, seed=cfg.seed)
        row, per_source = in_distribution(trained, bank, args.n_boot, cfg.seed)
        label = labels[combination]
        tables["summary"].append(pd.DataFrame([{**row, "framing": label}]))
        tables["per_source"].append(per_source.assign(framing=label))
        tables["logo"].append(protocols.leave_one_generator_out(recipe, bank, None, n_boot=args.n_boot,
                                                                seed=cfg.seed).assign(framing=label))
        tables["lorso"].append(protocols.leave_one_real_source_out(recipe, bank, None, n_boot=args.n_boot,
                                                                   seed=cfg.seed, held_outs=args.real_held_outs)
                               .assign(framing=label))
        for name, parts in tables.items():
            pd.concat(parts).to_csv(args.out / f"{name}.csv", index=False)
        print(f"{label}: {time.perf_counter() - start:.0f}s", flush=True)
    (args.out / "timings.json").write_text(json.dumps({"seconds": round(time.perf_counter() - start, 1)}))
    lorso = pd.concat(tables["lorso"]).pivot(index="held_out", columns="framing", values=["fpr", "detection", "auc"])
    print(lorso.round(3).to_string(), pd.concat(tables["logo"]).round(3).to_string(),
          pd.concat(tables["summary"]).round(3).T.to_string(), sep="\n\n")


if __name__ == "__main__":
    main()
