"""Does scoring every picture through one fixed re-encoding help on unseen sources? Both protocols, no training.

`held_out_perturbed.py` found that a held-out real source's AUC against the fakes rises a little when
its test images are blurred, rescaled or re-encoded before scoring — but there the operating point was
fixed on clean validation images, so a lower false-positive rate could be the scores moving, not the
ranking. This script treats the re-encoding as part of the detector: every picture, validation and
test alike, goes through it before the model's resize; the thresholds are chosen again on those
validation scores, and both leave-one-out protocols (:mod:`helpers.protocols`) and the in-distribution
numbers are computed exactly as for the plain detector. Nothing is trained: the folds are the kept
checkpoints of notebook 08 (``runs/<run>/protocols``) or of an ablation (``--checkpoints``).
``--also DIR ...`` adds the same folds kept by other trainings (e.g. other seeds' ablation runs): each
fold is then scored as the mean of its models' P(fake), a seed ensemble, its threshold chosen again.

    .venv/bin/python benchmarks/test_time_variant.py --run sample --variants clean blur:1 scale:0.5
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
from served_answers_held_out import CheckpointBank
from served_recipe_ablation import CHECKS, FINETUNED, add_fold_arguments, load_fold
from sklearn.metrics import roc_auc_score

from helpers import config, evaluate, finetuned, perturb, protocols, served, splits


class MeanOfModels:
    """Several trained detectors scored as one: the mean of their P(fake) (a seed ensemble)."""

    def __init__(self, members: list):
        self.members = members

    def predict(self, data, verbose: int = 0) -> np.ndarray:
        return np.mean([member.predict(data, verbose=verbose) for member in self.members], axis=0)


class VariantBank(CheckpointBank):
    """A :class:`CheckpointBank` whose "clean" pictures all go through ``variant`` first (``clean``: none);
    with ``also`` (more checkpoint folders), each fold is the mean of its model in every folder."""

    def __init__(self, *args, variant: str = "clean", also: list[Path] = (), **kwargs):
        super().__init__(*args, **kwargs)
        self.variant, self.also = variant, list(also)

    def load(self, recipe: finetuned.FinetuneRecipe) -> finetuned.TrainedDetector:
        if not self.also:
            return super().load(recipe)
        folders = [self.checkpoints, *self.also]
        members = [load_fold(folder, recipe).model for folder in folders]
        return finetuned.TrainedDetector(recipe, MeanOfModels(members), 0.5, float("nan"), 0.0,
                                         {"checkpoints": [str(folder) for folder in folders]})

    def score(self, trained: finetuned.TrainedDetector, split: str, variant: str = "clean") -> np.ndarray:
        return super().score(trained, split, self.variant if variant == "clean" else variant)

    def images_of(self, split: str, variant: str = "clean") -> np.ndarray:
        """``after:<perturbation>``: the clean images at the model's size, then the perturbation (e.g.
        ``after:jpeg:95`` re-encodes the resized picture, not the file)."""
        if variant.startswith("after:") and variant not in self.images[split]:
            step = variant.removeprefix("after:")
            self.images[split][variant] = np.stack([perturb.apply(image, step) for image in self.images_of(split)])
        return super().images_of(split, variant)


def in_distribution(bank: VariantBank, recipe: finetuned.FinetuneRecipe, n_boot: int, seed: int) -> dict:
    """The detector trained on every source: each fake source vs all real test images (AUC), the worst
    real source's test FPR and the fewest fakes detected at the served operating point (chosen on validation)."""
    trained = bank.train(recipe)
    test, s = bank.frames["test"], bank.score(trained, "test")
    row = {}
    for name, fake in CHECKS.items():
        rows = (test.label == "real") | (test.source == fake)
        row[name] = roc_auc_score(test.label[rows] == "fake", s[rows.to_numpy()])
    point = served.choose_operating_point(bank.frames["val"], bank.score(trained, "val"))
    per_source = evaluate.per_source_metrics(test, s, point.fake_threshold, n_boot, seed)
    row.update(test_auc=roc_auc_score(test.label == "fake", s),
               worst_real_fpr=float(per_source.query("label == 'real'").rate.max()),
               fewest_detected=float(per_source.query("label == 'fake'").rate.min()))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_fold_arguments(parser, n_boot=True)
    parser.add_argument("--variants", nargs="*", default=["clean", "blur:1", "scale:0.5", "jpeg:95"])
    parser.add_argument("--generator-held-outs", nargs="*", default=None, help="default: every generator")
    parser.add_argument("--also", type=Path, nargs="*", default=[],
                        help="more folders of fold checkpoints (other seeds): each fold scores the mean of its models")
    parser.add_argument("--out", type=Path, default=config.REPO_ROOT / "runs/experiments/test_time_variant")
    args = parser.parse_args()
    cfg = config.load_run_config(args.run)
    checkpoints = args.checkpoints or cfg.folder("protocols")
    split = splits.load_split(cfg.path("split.csv"))
    recipe = finetuned.FinetuneRecipe(**FINETUNED[args.candidate])
    args.out.mkdir(parents=True, exist_ok=True)
    lorso, logo, summary = [], [], []
    for variant in args.variants:
        start = time.perf_counter()
        bank = VariantBank(split, cfg.data_root, args.size, checkpoints=checkpoints, variant=variant,
                           also=args.also)
        lorso.append(protocols.leave_one_real_source_out(recipe, bank, None, n_boot=args.n_boot, seed=cfg.seed,
                                                       held_outs=args.real_held_outs).assign(variant=variant))
        logo.append(protocols.leave_one_generator_out(recipe, bank, None, n_boot=args.n_boot, seed=cfg.seed,
                                                      held_outs=args.generator_held_outs).assign(variant=variant))
        summary.append({"variant": variant, **in_distribution(bank, recipe, args.n_boot, cfg.seed),
                        "seconds": round(time.perf_counter() - start, 1)})
        for name, parts in (("lorso", lorso), ("logo", logo)):
            pd.concat(parts).to_csv(args.out / f"{name}.csv", index=False)
        pd.DataFrame(summary).to_csv(args.out / "summary.csv", index=False)
        print(f"{variant}: {summary[-1]['seconds']:.0f}s", flush=True)
    with pd.option_context("display.width", 220):
        print(pd.concat(lorso)[["variant", "held_out", "fpr", "fpr_lo", "fpr_hi", "detection", "auc"]]
              .round(3).to_string(index=False))
        print(pd.concat(logo)[["variant", "held_out", "auc", "auc_lo", "auc_hi", "seen_generators_mean_auc"]]
              .round(3).to_string(index=False))
        print(pd.DataFrame(summary).round(3).to_string(index=False))


if __name__ == "__main__":
    main()
