"""Evaluation: a run's models scored on validation and test, per source and attribute, and its tables.

The decision threshold is chosen on the validation split (:func:`helpers.stats.choose_threshold`)
and then applied unchanged to the test split; every statistic comes from :mod:`helpers.stats`.
Per-source numbers answer "how does the detector do on this source": for a fake source, AUC
against all real test images and the detection rate; for a real source, AUC against all fake
test images and the false-positive rate.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from helpers import atomic
from helpers.data import labels_of
from helpers.stats import auc_ci, binary_metrics, bootstrap_ci, choose_threshold, wilson_ci


def predict_scores(model, dataset) -> np.ndarray:
    """P(fake) for every image of a (non-shuffled) dataset, in order."""
    return np.asarray(model.predict(dataset, verbose=0)).reshape(-1)


def per_attribute_metrics(predictions: pd.DataFrame, annotations: pd.DataFrame, attributes: list[str],
                          threshold: float, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Tables 6 and 9: accuracy per attribute value (e.g. glasses / no glasses) on the test split.

    ``predictions`` has ``path, label, score`` (one model); ``annotations`` has ``path`` and the
    attribute columns from notebook 02. Per attribute value: images, real and fake counts,
    accuracy at the validation ``threshold`` with a Wilson 95% CI, false-positive rate on its
    reals, and AUC with a bootstrap CI where both classes are present. ``unknown`` (no face,
    or annotator not run) is reported as its own row, never dropped.
    """
    merged = predictions.merge(annotations[["path", *[a for a in attributes if a in annotations]]],
                               on="path", how="left")
    rows = []
    for attribute in attributes:
        if attribute not in merged:
            continue
        values = merged[attribute].fillna("unknown").astype(str)
        for value, part in merged.groupby(values):
            y = labels_of(part)
            scores = part["score"].to_numpy(float)
            correct = int(((scores >= threshold) == y).sum())
            low, high = wilson_ci(correct, len(part))
            reals = y == 0
            auc, auc_lo, auc_hi = auc_ci(y, scores, n_boot, seed)
            rows.append(dict(attribute=attribute, value=value, n=len(part), real=int(reals.sum()),
                             fake=int((~reals).sum()), accuracy=correct / len(part), accuracy_lo=low,
                             accuracy_hi=high,
                             false_positive_rate=float((scores[reals] >= threshold).mean()) if reals.any() else np.nan,
                             auc=auc, auc_lo=auc_lo, auc_hi=auc_hi))
    return pd.DataFrame(rows)


def per_source_metrics(frame: pd.DataFrame, scores: np.ndarray, threshold: float,
                       n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """One row per source: count, accuracy at the threshold, AUC against the other class, 95% CIs.

    ``rate`` is the detection rate (fakes called fake) for a fake source and the
    false-positive rate (reals called fake) for a real source.
    """
    y = labels_of(frame)
    scores = np.asarray(scores, dtype=float)
    rows = []
    for (label, source), members in frame.reset_index(drop=True).groupby(["label", "source"]):
        own = members.index.to_numpy()
        other = np.flatnonzero(y != y[own[0]])
        idx = np.concatenate([own, other])
        acc = float(np.mean((scores[own] >= threshold) == y[own]))
        called_fake = float(np.mean(scores[own] >= threshold))
        auc, auc_lo, auc_hi = auc_ci(y[idx], scores[idx], n_boot, seed)
        acc_lo, acc_hi = bootstrap_ci(y[own], scores[own], "accuracy", threshold, n_boot, seed=seed)
        rows.append(dict(label=label, source=source, n=len(own), accuracy=acc, accuracy_lo=acc_lo,
                         accuracy_hi=acc_hi, auc=auc, auc_lo=auc_lo, auc_hi=auc_hi,
                         rate_name="detection rate" if label == "fake" else "false-positive rate",
                         rate=called_fake))
    return pd.DataFrame(rows)


def evaluate_scores(name: str, val_frame: pd.DataFrame, val_scores: np.ndarray,
                    test_frame: pd.DataFrame, test_scores: np.ndarray, n_boot: int = 1000,
                    threshold_method: str = "youden", seed: int = 0, extra: dict | None = None) -> dict:
    """Full evaluation of one model: threshold from validation, test metrics, CIs, per source."""
    threshold = choose_threshold(labels_of(val_frame), val_scores, threshold_method)
    y_test = labels_of(test_frame)
    overall = binary_metrics(y_test, test_scores, threshold)
    overall["auc_ci"] = bootstrap_ci(y_test, test_scores, "auc", n_boot=n_boot, seed=seed)
    overall["accuracy_ci"] = bootstrap_ci(y_test, test_scores, "accuracy", threshold, n_boot, seed=seed)
    overall["at_0.5"] = binary_metrics(y_test, test_scores, 0.5)
    return dict(model=name, threshold=threshold, threshold_method=threshold_method,
                val=binary_metrics(labels_of(val_frame), val_scores, threshold), test=overall,
                per_source=per_source_metrics(test_frame, test_scores, threshold, n_boot, seed)
                .to_dict("records"), **(extra or {}))


def save_json(data: dict, path: str | Path) -> Path:
    """Write a metrics dict as indented JSON (NaN written as null)."""
    def clean(value):
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        if isinstance(value, (float, np.floating)):
            return None if np.isnan(value) else round(float(value), 6)
        if isinstance(value, np.integer):
            return int(value)
        return value

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_json(path, clean(data), indent=2)
    return path


def _fmt_ci(value: float, ci: tuple[float, float] | list) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "n/a"
    return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def table5_model_comparison(results: list[dict]) -> pd.DataFrame:
    """Table 5 layout: one row per model, test accuracy/precision/recall/F1/AUC at the val threshold."""
    rows = []
    for r in results:
        t = r["test"]
        rows.append({"Model": r["model"], "Accuracy": _fmt_ci(t["accuracy"], t["accuracy_ci"]),
                     "Precision": round(t["precision"], 3), "Recall": round(t["recall"], 3),
                     "F1": round(t["f1"], 3), "ROC AUC": _fmt_ci(t["auc"], t["auc_ci"]),
                     "Threshold (val)": round(r["threshold"], 3), "Test images": t["n"]})
    return pd.DataFrame(rows)


def table7_class_report(result: dict, frame: pd.DataFrame, scores: np.ndarray) -> pd.DataFrame:
    """Table 7 layout: precision, recall, F1 and support per class (real, fake) plus averages."""
    y = labels_of(frame)
    y_pred = (np.asarray(scores) >= result["threshold"]).astype(int)
    report = skm.classification_report(y, y_pred, labels=[0, 1], target_names=["real", "fake"],
                                       output_dict=True, zero_division=0)
    table = pd.DataFrame(report).T.rename(columns={"f1-score": "f1"})
    table.insert(0, "Model", result["model"])
    return table.reset_index(names="Class").round(3)


def table8_per_source(results: list[dict]) -> pd.DataFrame:
    """Table 8 layout: rows are sources, columns per model: AUC [CI] and accuracy/FPR at threshold."""
    rows: dict[tuple[str, str], dict] = {}
    for r in results:
        for s in r["per_source"]:
            row = rows.setdefault((s["label"], s["source"]), {"Label": s["label"], "Source": s["source"],
                                                              "n": s["n"]})
            row[f"{r['model']} AUC"] = _fmt_ci(s["auc"], (s["auc_lo"], s["auc_hi"]))
            row[f"{r['model']} accuracy"] = _fmt_ci(s["accuracy"], (s["accuracy_lo"], s["accuracy_hi"]))
    return pd.DataFrame(list(rows.values()))


def save_table(table: pd.DataFrame, path_without_suffix: str | Path) -> None:
    """Write a table as CSV and as a Markdown file (for the README and the report)."""
    path = Path(path_without_suffix)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_csv(path.with_suffix(".csv"), table)
    atomic.write_text(path.with_suffix(".md"), table.to_markdown(index=False) + "\n")


def evaluate_run_models(cfg, split_frame: pd.DataFrame, model_keys: list[str], batch_size: int = 64,
                        n_boot: int = 1000,
                        threshold_method: str = "youden") -> tuple[list[dict], pd.DataFrame]:
    """Evaluate every trained model of a run on its val and test splits.

    Looks for ``models/<key>.keras`` and ``training/<arch>.json`` in the run folder (models not
    trained in this run are skipped with a message), writes ``metrics/<key>_metrics.json`` and
    ``predictions/<key>.csv``, and returns the results and all test predictions (long format).
    """
    from helpers.faces import input_view
    from helpers.models import MODEL_TITLES, load_detector
    from helpers.pipeline import make_dataset

    results, predictions = [], []
    frames = {s: split_frame[split_frame["split"] == s].reset_index(drop=True) for s in ("val", "test")}
    for key in model_keys:
        model_path = cfg.run_dir / "models" / f"{key}.keras"
        if not model_path.exists():
            print(f"skipping {key}: {model_path} not found (train it in notebook 03/04)")
            continue
        arch = key.split("_")[0]
        record_path = cfg.run_dir / "training" / f"{arch}.json"
        record = json.loads(record_path.read_text()) if record_path.exists() else {}
        size = int(record.get("image_size", cfg.image_size))
        input_kind = record.get("parameters", {}).get("input_kind", "image")
        model = load_detector(model_path)
        views = {s: input_view(f, cfg.data_root, cfg.run_dir, input_kind) for s, f in frames.items()}
        preprocessing = record.get("parameters", {}).get("preprocessing", "none")
        scores = {s: predict_scores(model, make_dataset(f, root, size, batch_size, cache=False,
                                                        preprocessing=preprocessing))
                  for s, (f, root) in views.items()}
        frames_seen = {s: (f.assign(path=f["image_path"]) if "image_path" in f else f) for s, (f, _) in views.items()}
        result = evaluate_scores(MODEL_TITLES.get(key, key), frames_seen["val"], scores["val"], frames_seen["test"],
                                 scores["test"], n_boot=n_boot, threshold_method=threshold_method,
                                 seed=cfg.seed, extra=dict(key=key, image_size=size, input_kind=input_kind,
                                                           weights=record.get("weights", {})))
        save_json(result, cfg.path("metrics", f"{key}_metrics.json"))
        test_pred = frames_seen["test"][["path", "label", "source"]].assign(model=key, score=scores["test"])
        atomic.write_csv(cfg.path("predictions", f"{key}.csv"), test_pred)
        predictions.append(test_pred)
        results.append(result)
        warning = record.get("weights", {}).get("warning")
        print(f"{result['model']}: test AUC {result['test']['auc']:.3f} accuracy "
              f"{result['test']['accuracy']:.3f} at val threshold {result['threshold']:.3f}"
              + (" [RANDOM-INIT BACKBONE]" if warning else ""))
    return results, (pd.concat(predictions, ignore_index=True) if predictions else pd.DataFrame())


def pairwise_auc_table(predictions: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """AUC [95% CI] of each real source against each fake source, per model.

    ``predictions`` is long format (``model``, ``label``, ``source``, ``score``), as returned by
    :func:`evaluate_run_models`. Rows: model and real source; columns: fake sources. This is
    the in-distribution vs cross-source view (e.g. FFHQ vs StyleGAN1 is the pair with the
    same size and JPEG settings).
    """
    rows = []
    for model, frame in predictions.groupby("model", sort=False):
        fakes = sorted(frame.loc[frame["label"] == "fake", "source"].unique())
        for real in sorted(frame.loc[frame["label"] == "real", "source"].unique()):
            row = {"model": model, "real source": real}
            for fake in fakes:
                pair = frame[((frame["label"] == "real") & (frame["source"] == real))
                             | ((frame["label"] == "fake") & (frame["source"] == fake))]
                y = labels_of(pair)
                s = pair["score"].to_numpy()
                auc, low, high = auc_ci(y, s, n_boot, seed)
                row[fake] = _fmt_ci(auc, (low, high))
            rows.append(row)
    return pd.DataFrame(rows)


def attribute_tables(results: list[dict], predictions: pd.DataFrame, annotations: pd.DataFrame,
                     attributes: list[str], n_boot: int = 1000, seed: int = 0) -> dict[str, pd.DataFrame]:
    """Tables 6 (MobileNetV2 models) and 9 (ResNet50 models): :func:`per_attribute_metrics` per model
    at its validation threshold, with a ``model`` column."""
    tables: dict[str, list[pd.DataFrame]] = {"table6_mobilenetv2_attributes": [], "table9_resnet50_attributes": []}
    for result in results:
        table = per_attribute_metrics(predictions[predictions["model"] == result["key"]], annotations, attributes,
                                      result["threshold"], n_boot, seed)
        name = "table9_resnet50_attributes" if result["key"].startswith("resnet50") else "table6_mobilenetv2_attributes"
        tables[name].append(table.assign(model=result["model"])[["model", *table.columns]])
    return {name: pd.concat(parts, ignore_index=True) for name, parts in tables.items() if parts}
