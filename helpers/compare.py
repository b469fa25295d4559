"""Notebook 09's comparison: every detector and preprocessing on one split, one table, one ROC figure.

Pretrained backbones are used frozen, with their head trained on the frozen-feature cache
(:mod:`helpers.features`): the cost of a candidate is one feature pass per image (and flip),
then seconds of head training. The custom CNN has nothing to freeze and trains end to end on
images. Frequency baselines (:mod:`helpers.baselines`) fit a logistic regression. All are
scored on the same validation and test rows, thresholded on validation, and summarised with
:func:`helpers.evaluate.evaluate_scores` (bootstrap CIs), plus training time and model size.
"""

from __future__ import annotations

import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from helpers import atomic, baselines, features, models, train, training_cache
from helpers.evaluate import evaluate_scores
from helpers.pipeline import datasets_key, labels_of, make_dataset


def _model_size_mb(model: keras.Model, path: Path) -> float:
    """Save the detector to ``path``; return the size of its weights in MB — what a shipped model weighs,
    whether or not the model in memory also carries the optimizer's state (it does when trained in this
    run, not when read back from the trained-model cache; until 2026-11-24 the file's size was reported,
    which counted Adam's two moments per weight for the custom CNN: 12.71 MB for 4.2 MB of weights)."""
    with atomic.atomic_path(path) as staged:
        model.save(staged)
    return round(sum(np.asarray(weight).nbytes for weight in model.weights) / 1e6, 2)


def train_cnn(arch: str, frames: dict[str, pd.DataFrame], root: str | Path, image_size: int,
              preprocessing: str = "none", epochs: int = 5, learning_rate: float = 1e-3, batch_size: int = 32,
              out_dir: str | Path = "runs/compare", cache_dir: str | Path | None = None, seed: int = 42,
              verbose: int = 0, skip_without_weights: bool = True, trained_cache: str | Path | None = None) -> dict:
    """Train one CNN candidate; return its scores on val/test, timing, size and the trained model.

    A pretrained backbone whose ImageNet weights are not here (offline) would be a random frozen
    feature extractor, which measures nothing about the architecture: with ``skip_without_weights``
    it is not trained, and the result says why (``skipped``; :func:`comparison_table` shows it).
    ``trained_cache`` (e.g. ``runs/cache/trained``): the custom CNN, trained end to end, is read back
    from there when the same training was done before (:mod:`helpers.training_cache`); its time is
    then the original training's plus this run's scoring."""
    out_dir = Path(out_dir)
    name = f"{arch}_{preprocessing}"
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)  # each candidate from the same seeded start, whichever trained before it
    model, weights = models.build_detector(arch, image_size=image_size, augment="flip", seed=seed)
    if skip_without_weights and arch != "custom_cnn" and weights.source == "none":
        return dict(key=name, arch=arch, preprocessing=preprocessing, weights="none",
                    skipped="no ImageNet weights here: a random frozen backbone measures nothing")
    start = time.perf_counter()
    if arch == "custom_cnn":
        data = {s: make_dataset(f, root, image_size, batch_size, shuffle=(s == "train"), seed=seed,
                                preprocessing=preprocessing) for s, f in frames.items()}
        cache = None
        if trained_cache is not None:  # these datasets are split_datasets' (one frame per split)
            data_key = datasets_key(pd.concat([frames["train"], frames["val"]]), root, image_size, batch_size, seed,
                                    preprocessing)
            cache = training_cache.CacheSpec(Path(trained_cache), data_key, code=("helpers.compare",))
        result = train.train_two_stage(model, data["train"], data["val"], out_dir, name, head_epochs=epochs,
                                       head_lr=learning_rate, finetune_epochs=0, finetune_lr=0.0, patience=epochs,
                                       verbose=verbose, cache=cache)["head"]
        scores = {s: model.predict(data[s], verbose=0).reshape(-1) for s in ("val", "test")}
        extract_seconds = 0.0
        if "from_cache" in result.notes:
            start -= result.seconds  # report the training's own time, as for a training done now
    else:
        caches = {s: features.extract_features(model, f, root, image_size, batch_size, flips=(s == "train"),
                                               preprocessing=preprocessing, cache_dir=cache_dir)
                  for s, f in frames.items()}
        extract_seconds = float(sum(c["seconds"] for c in caches.values()))
        head = features.head_model(model)
        data = {s: features.cached_dataset(c, batch_size, shuffle=(s == "train"), seed=seed) for s, c in caches.items()}
        result = train.fit_detector(head, data["train"], data["val"], epochs, learning_rate, out_dir, name,
                                    patience=epochs, verbose=verbose)
        scores = {s: head.predict(caches[s]["features"], verbose=0).reshape(-1) for s in ("val", "test")}
    seconds = time.perf_counter() - start
    return dict(key=name, arch=arch, preprocessing=preprocessing, model=model, weights=weights.source,
                weights_warning=weights.warning, scores=scores, train_seconds=seconds,
                feature_seconds=extract_seconds, params=int(model.count_params()),
                size_mb=_model_size_mb(model, out_dir / f"{name}.keras"), best_val_auc=result.best_val_auc)


def train_baseline(kind: str, frames: dict[str, pd.DataFrame], root: str | Path, crop_size: int = 256) -> dict:
    """Fit a frequency baseline on native-resolution centre crops; scores on val/test."""
    images = {s: baselines.load_center_crops(f, root, crop_size) for s, f in frames.items()}
    start = time.perf_counter()
    fitted = baselines.fit_baseline(kind, images["train"], labels_of(frames["train"]), images["val"],
                                    labels_of(frames["val"]))
    seconds = time.perf_counter() - start
    scores = {s: baselines.score_baseline(fitted, images[s]) for s in ("val", "test")}
    coefficients = fitted["model"][-1].coef_.size + 1
    return dict(key=kind, arch=kind, preprocessing=f"native {crop_size}px crop", model=None, weights="—",
                weights_warning="", scores=scores, train_seconds=seconds, feature_seconds=0.0,
                params=int(coefficients), size_mb=round(coefficients * 8 / 1e6, 4),
                best_val_auc=max(fitted["val_auc"].values()))


def comparison_table(candidates: list[dict], frames: dict[str, pd.DataFrame], n_boot: int = 1000,
                     seed: int = 0, skipped: list[dict] = ()) -> tuple[pd.DataFrame, list[dict]]:
    """One row per candidate: test AUC and accuracy [95% CI] at the validation threshold, FPR on
    reals, training and feature time, parameters and size; and the full evaluation results.
    ``skipped`` candidates (see :func:`train_cnn`) get a row that says why, without numbers."""
    rows, results = [], []
    for c in candidates:
        title = baselines.TITLES.get(c["arch"], models.MODEL_TITLES.get(c["arch"], c["arch"]))
        result = evaluate_scores(f"{title} · {c['preprocessing']}", frames["val"], c["scores"]["val"],
                                 frames["test"], c["scores"]["test"], n_boot=n_boot, seed=seed,
                                 extra=dict(key=c["key"]))
        results.append(result)
        test = result["test"]
        y = labels_of(frames["test"])
        fpr = float((c["scores"]["test"][y == 0] >= result["threshold"]).mean())
        rows.append({"detector": title, "preprocessing": c["preprocessing"],
                     "weights": c["weights"] + (" (random init)" if c["weights_warning"] else ""),
                     "test AUC": test["auc"], "AUC 95% CI": f"[{test['auc_ci'][0]:.3f}, {test['auc_ci'][1]:.3f}]",
                     "test accuracy": test["accuracy"], "FPR on reals": fpr, "threshold (val)": result["threshold"],
                     "train s": round(c["train_seconds"], 1), "of which features s": round(c["feature_seconds"], 1),
                     "parameters": c["params"], "size MB": c["size_mb"], "note": ""})
    for c in skipped:
        rows.append({"detector": models.MODEL_TITLES.get(c["arch"], c["arch"]), "preprocessing": c["preprocessing"],
                     "weights": c["weights"], "note": f"skipped: {c['skipped']}"})
    return pd.DataFrame(rows), results
