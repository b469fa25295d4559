"""Which recipe should the served detector use? Both leave-one-out protocols for each candidate.

Runs the protocol functions of notebook 08 (:mod:`helpers.protocols`) on a run's split:
frozen-feature candidates first (seconds per head), then the fine-tuned candidates (minutes per
training run on a CPU). For each candidate: leave one real source out (held-out source's
false-positive rate at the served operating point, fakes' detection rate), leave one generator
out, and the in-distribution numbers of the recipe trained on every source. Writes tables and
raw scores to ``--out`` (default ``runs/experiments/served_recipe``); results and their date go
to ``benchmarks/README.md``.

    .venv/bin/python benchmarks/served_recipe_ablation.py --run sample
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
from run_options import add_run_arguments
from source_classes import SourceClassesBank

from helpers import config, evaluate, faces, finetuned, models, protocols, served, splits
from helpers.perturb import then

FROZEN = [
    {"name": "all sources", "train_sources": None},
    {"name": "+ balanced", "train_sources": None, "balanced": True},
    {"name": "+ blur/JPEG/crop", "train_sources": None, "balanced": True, "augment_copies": 3},
    {"name": "improved", "train_sources": None, "balanced": True, "augment_copies": 3, "tta_flip": True},
    {"name": "improved + label smoothing", "train_sources": None, "balanced": True, "augment_copies": 3,
     "tta_flip": True, "label_smoothing": 0.1},
    # each blur/JPEG/crop copy made from the picture down-scaled 0.5-1x first (helpers.perturb, "scaled:K")
    {"name": "improved, down-scaled copies", "train_sources": None, "balanced": True, "augment_copies": 3,
     "tta_flip": True, "copy_kind": "scaled"},
]
# The fine-tuned recipe of 2026-11-23 (candidate 0); every other candidate changes one or two of its settings
FINETUNED_BASE = {"train_sources": None, "balanced": True, "augment_copies": 3, "tta_flip": True,
                  "trainable_fraction": 1.0, "epochs": 2, "learning_rate": 1e-3, "finetune_epochs": 4,
                  "finetune_learning_rate": 1e-4}
# the served recipe of the sample profile (candidate 6): candidate 0 scoring every picture through JPEG 95
SERVED_RECIPE = {**FINETUNED_BASE, "score_reencode": "jpeg:95"}
FINETUNED = [
    {"name": "improved, fine-tuned 100%", **FINETUNED_BASE},
    {"name": "improved, fine-tuned 100%, 8 epochs", **FINETUNED_BASE, "finetune_epochs": 8},
    # the fine-tuned recipe keeping a moving average of its weights (~200 steps, 1.4 epochs of the sample)
    {"name": "improved, fine-tuned 100%, weight averaging", **FINETUNED_BASE, "weight_averaging": 0.995},
    # the fine-tuned recipe with a noise-residual branch beside MobileNetV2 (helpers.models.with_residual_branch)
    {"name": "improved, fine-tuned 100%, residual branch", **FINETUNED_BASE, "residual_branch": True},
    # the fine-tuned recipe without its blur/JPEG/crop copies (does the augmentation cost in-distribution AUC?)
    {"name": "balanced, fine-tuned 100%, no copies", **FINETUNED_BASE, "augment_copies": 0},
    # the fine-tuned recipe at three times its learning rate (it is still improving at its last epoch)
    {"name": "improved, fine-tuned 100%, lr 3e-4", **FINETUNED_BASE, "finetune_learning_rate": 3e-4},
    # the served recipe: every picture scored through JPEG 95 at its own resolution (candidate 0's training)
    {"name": "improved, fine-tuned 100%, JPEG 95 before scoring", **SERVED_RECIPE},
    # the served recipe trained with label smoothing 0.1
    {"name": "improved, fine-tuned 100%, JPEG 95 before scoring, label smoothing", **SERVED_RECIPE,
     "label_smoothing": 0.1},
    # the served recipe whose head reads six intermediate blocks too
    # (helpers.block_taps; screened on frozen features by benchmarks/intermediate_features_screen.py)
    {"name": "improved, fine-tuned 100%, JPEG 95 before scoring, block taps", **SERVED_RECIPE, "block_taps": True},
    # the served recipe fine-tuned twice as long (2 + 8 epochs): the longer schedule re-measured now that the
    # sample is larger (it was measured on eight sources, 2026-11-23)
    {"name": "improved, fine-tuned 100%, JPEG 95 before scoring, 8 epochs", **SERVED_RECIPE, "finetune_epochs": 8},
]
CHECKS = {f"{fake} vs reals": fake for fake in ("sd15", "sd21", "stylegan1", "stylegan2")}


class ReencodedBank(finetuned.ImageBank):
    """An :class:`helpers.finetuned.ImageBank` whose every picture — training images and their augmentation
    copies, validation and test alike — goes through ``step`` at its own resolution before the resize: the
    detector trains on what ``score_reencode`` would make it score (run it with a recipe whose
    ``score_reencode`` is empty; no trained-model cache: the cache key does not know ``step``)."""

    def __init__(self, *args, step: str, **kwargs):
        super().__init__(*args, **kwargs)
        if self.trained_cache is not None:
            raise ValueError("a ReencodedBank trains without the trained-model cache")
        self.step = step

    def images_of(self, split: str, variant: str = "clean") -> np.ndarray:
        return super().images_of(split, then(variant, self.step))


def limit_training(split: pd.DataFrame, per_source: int, seed: int) -> pd.DataFrame:
    """``split`` with at most ``per_source`` training rows of each source (a seeded draw); the other training
    rows are marked ``unused``, validation and test rows are kept as they are (so the protocols' numbers
    compare with the full run's on the same pictures)."""
    train = split[split["split"] == "train"]
    keep = pd.concat([rows.sample(min(len(rows), per_source), random_state=seed)
                      for _, rows in train.groupby("source")]).index
    limited = split.copy()
    limited.loc[train.index.difference(keep), "split"] = "unused"
    return limited


def load_fold(checkpoints: Path, recipe: finetuned.FinetuneRecipe) -> finetuned.TrainedDetector:
    """The fine-tuned detector this script kept for ``recipe``'s fold (``<out>/checkpoints``), loaded for
    inference; its threshold is left at 0.5 for the caller to choose on validation."""
    path = checkpoints / f"{protocols.checkpoint_name('finetuned', recipe)}_finetune.keras"
    if not path.exists():
        raise FileNotFoundError(f"{path}: run served_recipe_ablation.py for this recipe first")
    model = models.inference_model(models.load_detector(path))
    return finetuned.TrainedDetector(recipe, model, 0.5, float("nan"), 0.0, {"checkpoint": str(path)})


def add_fold_arguments(parser: argparse.ArgumentParser, *, n_boot: bool = False) -> None:
    """The options of the scripts that score kept folds without training (`held_out_perturbed.py`,
    `test_time_variant.py`): run, size, where the folds are, which candidate, which real sources."""
    add_run_arguments(parser, n_boot=n_boot)
    parser.add_argument("--checkpoints", type=Path, default=None,
                        help="folder holding the folds' <name>_finetune.keras (default: runs/<run>/protocols)")
    parser.add_argument("--candidate", type=int, default=0, help="position in served_recipe_ablation.FINETUNED")
    parser.add_argument("--real-held-outs", nargs="*", default=None, help="default: every real source")


def in_distribution(trained, bank, n_boot: int, seed: int) -> tuple[dict, pd.DataFrame]:
    """Trained on every source: each fake source vs all real test images, and per-source rates at the
    served operating point (chosen on validation)."""
    reals = sorted(bank.frames["test"].query("label == 'real'").source.unique())
    row = protocols.recipe_summary(trained, bank, {k: (reals, v) for k, v in CHECKS.items()})
    point = served.choose_operating_point(bank.frames["val"], protocols.score(trained, bank, "val"))
    per_source = evaluate.per_source_metrics(bank.frames["test"], protocols.score(trained, bank, "test"),
                                             point.fake_threshold, n_boot, seed)
    row.update(served_threshold=point.fake_threshold, real_threshold=point.real_threshold,
               worst_real_fpr_served=float(per_source.query("label == 'real'").rate.max()),
               min_detection_served=float(per_source.query("label == 'fake'").rate.min()))
    return row, per_source.assign(recipe=trained.recipe.name)


def serve_candidate(cfg, split: pd.DataFrame, data_root: Path, out: Path, size: int) -> None:
    """Save the kept all-sources fine-tuned candidate as ``runs/<run>/models/served.keras``."""
    from helpers import models

    recipe = finetuned.FinetuneRecipe(**FINETUNED[0])
    model = models.load_detector(out / f"{protocols.checkpoint_name('served_candidate', recipe)}.keras")
    summary = pd.read_csv(out / "summary.csv").set_index("recipe").loc[recipe.name]
    bank = finetuned.ImageBank(split, data_root, size)
    notes = dict(weights="local" if models.find_local_weights("mobilenetv2", size) else "download", weights_warning=None)
    trained = finetuned.TrainedDetector(recipe, model, 0.5, float(summary.val_auc), float(summary.train_seconds), notes)
    tables = {}
    for name, key in (("Leave one real source out", "lorso"), ("Leave one generator out", "logo")):
        table = pd.read_csv(out / f"{key}.csv")
        tables[name] = table[(table.recipe == recipe.name) & (table.kind == "finetuned")].reset_index(drop=True)
    record, rates = served.serve_trained(trained, bank, cfg.folder("models"), seed=cfg.seed, protocol_tables=tables)
    targets = served.targets_table(trained, bank, *tables.values(), rates, seed=cfg.seed)
    rates.to_csv(out / "served_per_source.csv", index=False)
    targets.to_csv(out / "served_targets.csv", index=False)
    print(rates.round(3).to_string(), targets.round(3).to_string(), sep="\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_arguments(parser)
    parser.add_argument("--out", default=None)
    parser.add_argument("--input", choices=("image", "face"), default="image",
                        help="train and test on whole images, or on notebook 02's MTCNN face crops (one margin; "
                             "images without a face are left out and counted)")
    parser.add_argument("--framing", choices=finetuned.FRAMINGS, default="resize",
                        help="fine-tuned candidates: whole image resized, or a native-resolution patch of --size px")
    parser.add_argument("--train-reencode", default="",
                        help="fine-tuned candidates: every picture, training images included, through this perturbation "
                             "(e.g. jpeg:95) before the resize (ReencodedBank); use a candidate without score_reencode")
    parser.add_argument("--train-limit-per-source", type=int, default=None,
                        help="train on at most this many training images of each source (a seeded draw; validation "
                             "and test unchanged): what a per-source cap of the run would cost")
    parser.add_argument("--seed", type=int, default=None,
                        help="training seed (default: the run's); another seed retrains the same recipe on the same "
                             "split: weight initialisation, batch order and augmentation draws change")
    parser.add_argument("--skip-frozen", action="store_true")
    parser.add_argument("--frozen-candidates", nargs="*", type=int, default=None,
                        help="which frozen candidates to run (positions in FROZEN; default: all)")
    parser.add_argument("--skip-finetuned", action="store_true")
    parser.add_argument("--candidates", nargs="*", type=int, default=[0],
                        help="which fine-tuned candidates to run (positions in FINETUNED; default: 0, the served "
                             "recipe's training; 6 is the served recipe, 0 scored through JPEG 95)")
    parser.add_argument("--real-held-outs", nargs="*", default=None,
                        help="leave only these real sources out (default: each in turn; none when given without names)")
    parser.add_argument("--skip-logo", action="store_true", help="no leave-one-generator-out runs")
    parser.add_argument("--generator-held-outs", nargs="*", default=None,
                        help="leave only these generators out (default: each in turn)")
    parser.add_argument("--protocols-only", action="store_true",
                        help="only the protocol folds, not the recipe trained on every source (measured earlier)")
    parser.add_argument("--source-classes", action="store_true",
                        help="fine-tuned candidates with a softmax over the training sources, P(fake) the fake "
                             "sources' sum, instead of one sigmoid unit (source_classes.py); ', source classes' is "
                             "added to each recipe's name")
    parser.add_argument("--serve", action="store_true",
                        help="only save the fine-tuned candidate trained on every source (kept from an earlier run) "
                             "as the run's served detector, with the protocol tables of that run")
    args = parser.parse_args()
    if args.serve and args.input == "face":
        parser.error("--serve saves a whole-image detector: the served model does not record a face-crop input yet")
    if args.source_classes and (args.train_reencode or args.serve):
        parser.error("--source-classes trains on the plain image bank and is not served")
    if args.train_reencode and any(FINETUNED[k].get("score_reencode") for k in args.candidates):
        parser.error("--train-reencode re-encodes every picture already: pick candidates without score_reencode")
    cfg = config.load_run_config(args.run)
    seed = cfg.seed if args.seed is None else args.seed
    out = Path(args.out or config.REPO_ROOT / "runs" / "experiments" / "served_recipe")
    out.mkdir(parents=True, exist_ok=True)
    split, data_root = faces.input_view(splits.load_split(cfg.path("split.csv")), cfg.data_root, cfg.run_dir,
                                        args.input)
    if args.train_limit_per_source is not None:
        split = limit_training(split, args.train_limit_per_source, seed)
    tables: dict[str, list] = {"lorso": [], "logo": [], "summary": [], "per_source": []}
    timings = {}

    def save() -> None:
        for name, parts in tables.items():
            if parts:
                pd.concat(parts).to_csv(out / f"{name}.csv", index=False)
        (out / "timings.json").write_text(json.dumps(timings, indent=2))

    def run(recipe, bank, kind: str) -> None:
        start = time.perf_counter()
        if not args.protocols_only:
            trained = bank.train(recipe, out / "checkpoints", seed=seed)
            row, per_source = in_distribution(trained, bank, args.n_boot, seed)
            tables["summary"].append(pd.DataFrame([{**row, "kind": kind}]))
            tables["per_source"].append(per_source)
            np.savez(out / f"scores_{protocols.checkpoint_name(kind, recipe)}.npz",
                     val=protocols.score(trained, bank, "val"), test=protocols.score(trained, bank, "test"))
            if kind == "finetuned":
                trained.model.save(out / f"{protocols.checkpoint_name('served_candidate', recipe)}.keras")
        if not args.skip_logo:
            tables["logo"].append(protocols.leave_one_generator_out(recipe, bank, out / "checkpoints",
                                                                    n_boot=args.n_boot, seed=seed,
                                                                    held_outs=args.generator_held_outs)
                                  .assign(kind=kind))
            save()
        if args.real_held_outs != []:
            tables["lorso"].append(protocols.leave_one_real_source_out(recipe, bank, out / "checkpoints",
                                                                      n_boot=args.n_boot, seed=seed,
                                                                      held_outs=args.real_held_outs).assign(kind=kind))
        timings[recipe.name] = round(time.perf_counter() - start, 1)
        save()
        print(f"{recipe.name}: {timings[recipe.name]:.0f}s", flush=True)

    if args.serve:
        serve_candidate(cfg, split, data_root, out, args.size)
        return
    if not args.skip_frozen:
        start = time.perf_counter()
        chosen = [FROZEN[k] for k in (range(len(FROZEN)) if args.frozen_candidates is None else args.frozen_candidates)]
        kinds = tuple(sorted({spec.get("copy_kind", "augment") for spec in chosen}))
        bank = protocols.build_bank(split, data_root, args.size, 3, ("jpeg:50", "scale:0.5", "recode:256"),
                                    cache_dir=cfg.cache_dir("features"), seed=seed, copy_kinds=kinds)
        timings["feature bank"] = round(time.perf_counter() - start, 1)
        for spec in chosen:
            run(protocols.Recipe(**spec), bank, "frozen")
        del bank
    if not args.skip_finetuned:
        bank_class = SourceClassesBank if args.source_classes else finetuned.ImageBank
        image_bank = (ReencodedBank(split, data_root, args.size, framing=args.framing, step=args.train_reencode)
                      if args.train_reencode else bank_class(split, data_root, args.size, framing=args.framing))
        for position in args.candidates:
            spec = dict(FINETUNED[position])
            if args.source_classes:
                spec["name"] += ", source classes"
            run(finetuned.FinetuneRecipe(**spec), image_bank, "finetuned")
    save()


if __name__ == "__main__":
    main()
