"""How much of an unseen real source's false-positive rate is its file format? Held-out folds, re-encoded.

Leave one real source out flags most of an unseen FFHQ as fake. FFHQ shares its file format with
StyleGAN1 (both 256x256 JPEG q~75, from one "140k" set), so a fold that never saw FFHQ may read
"this format means fake". This script trains nothing: it loads each kept leave-one-real-source-out
fold (notebook 08's, ``runs/<run>/protocols``, or an ablation's ``checkpoints/``), fixes the
operating point on validation without the held-out source as the protocol does
(:func:`helpers.stats.fpr_controlled_threshold`, 5%), and scores the test images again under each
perturbation (:mod:`helpers.perturb`: the format-shortcut re-encoding ``recode:256``, JPEG,
rescaling, blur) — the held-out source's false-positive rate [Wilson 95% CI], the fakes' detection
rate and the held-out source's AUC against every fake test image, per variant. If the rate falls
when every file is re-encoded alike, that part of it was the format; what stays is the content.

    .venv/bin/python benchmarks/held_out_perturbed.py --run sample
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
from served_recipe_ablation import FINETUNED, add_fold_arguments, load_fold
from sklearn.metrics import roc_auc_score

from helpers import config, finetuned, protocols, splits
from helpers.stats import fpr_controlled_threshold, wilson_ci

VARIANTS = ("clean", "recode:256", "jpeg:95", "jpeg:50", "scale:0.5", "blur:1")


def held_out_rows(bank: finetuned.ImageBank, trained: finetuned.TrainedDetector, held_out: str,
                  variants: tuple[str, ...]) -> list[dict]:
    """One row per variant: the held-out source's FPR and the fakes' detection at the fold's 5% point."""
    val, test = bank.frames["val"], bank.frames["test"]
    sources = sorted(set(val.source) - {held_out})
    val_rows = protocols.rows_of_sources(val, sources)
    threshold = fpr_controlled_threshold(val.iloc[val_rows], bank.score(trained, "val")[val_rows], 0.05)
    own, is_fake = test.source.to_numpy() == held_out, test.label.to_numpy() == "fake"
    rows = []
    for variant in variants:
        s = bank.score(trained, "test", variant)
        false_positives = int((s[own] >= threshold).sum())
        low, high = wilson_ci(false_positives, int(own.sum()))
        auc = roc_auc_score(np.r_[np.zeros(own.sum()), np.ones(is_fake.sum())], np.r_[s[own], s[is_fake]])
        rows.append(dict(held_out=held_out, variant=variant, threshold=threshold, n=int(own.sum()),
                         fpr=false_positives / own.sum(), fpr_lo=low, fpr_hi=high,
                         detection=float((s[is_fake] >= threshold).mean()), auc=float(auc),
                         **{f"{fake} detected": float((s[test.source.to_numpy() == fake] >= threshold).mean())
                            for fake in sorted(set(test.source[is_fake]))}))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_fold_arguments(parser)
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS))
    parser.add_argument("--out", type=Path, default=config.REPO_ROOT / "runs/experiments/held_out_perturbed.csv")
    args = parser.parse_args()
    cfg = config.load_run_config(args.run)
    checkpoints = args.checkpoints or cfg.folder("protocols")
    bank = finetuned.ImageBank(splits.load_split(cfg.path("split.csv")), cfg.data_root, args.size)
    recipe = finetuned.FinetuneRecipe(**FINETUNED[args.candidate])
    start, rows = time.perf_counter(), []
    train = bank.frames["train"]
    for held_out in args.real_held_outs or sorted(train.loc[train.label == "real", "source"].unique()):
        fold = finetuned.FinetuneRecipe(**{**recipe.to_dict(), "name": f"{recipe.name}_without_{held_out}"})
        rows += held_out_rows(bank, load_fold(checkpoints, fold), held_out, tuple(args.variants))
        table = pd.DataFrame(rows)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.out, index=False)  # after each fold
        print(f"{held_out}: {time.perf_counter() - start:.0f}s", flush=True)
    with pd.option_context("display.width", 220):
        print(table.drop(columns=["threshold"]).round(3).to_string(index=False))


if __name__ == "__main__":
    main()
