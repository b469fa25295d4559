"""What `fakeface models` lists and picks, and which files `fakeface predict` reads: no Keras model is
loaded (empty model files with hand-written metrics and served records), so these run in seconds."""

import json
import os

import numpy as np
import pytest

from helpers import predict, served


def _metrics(root, run, key, auc=None, n=0, test_auc=None, threshold=0.5, weights="local", image_size=128):
    """A model file (empty) and, when ``auc`` is given, notebook 05's metrics file for it."""
    models = root / run / "models"
    models.mkdir(parents=True, exist_ok=True)
    (models / f"{key}.keras").write_bytes(b"")
    if auc is not None:
        (root / run / "metrics").mkdir(exist_ok=True)
        (root / run / "metrics" / f"{key}_metrics.json").write_text(json.dumps(
            {"model": f"{run} {key}", "val": {"auc": auc, "n": n}, "test": {"auc": test_auc}, "threshold": threshold,
             "image_size": image_size, "weights": {"source": weights}}))
    return models / f"{key}.keras"


def _served(root, run, val_auc, val_n, test_auc=0.91, recipe=None):
    """A served detector's record (what notebook 08 writes next to ``served.keras``)."""
    path = _metrics(root, run, "served")
    record = served.ServedRecord(
        recipe={"name": "demo recipe"} if recipe is None else recipe, image_size=96,
        operating_point=served.OperatingPoint(0.6, 0.2),
        distance_k=5, distance_quantile=0.99, max_distance=0.3, tta_flip=True, weights={"source": "local"},
        validation={"auc": val_auc, "n": val_n}, test_auc=test_auc, test_rates=[])
    served.record_path(path).write_text(record.to_json())
    return path


def test_models_are_listed_served_first_then_by_validation_auc_with_every_field(tmp_path):
    low = _metrics(tmp_path, "a", "low", auc=0.80, n=400, test_auc=0.78, threshold=0.41, weights="none")
    high = _metrics(tmp_path, "b", "high", auc=0.95, n=400, test_auc=0.93, threshold=0.37, image_size=180)
    few = _metrics(tmp_path, "c", "few", auc=0.99, n=predict.MIN_VAL_IMAGES - 1)
    unevaluated = _metrics(tmp_path, "d", "raw")
    best_served = _served(tmp_path, "e", val_auc=0.90, val_n=500)
    table = predict.find_models(tmp_path)
    assert list(table.columns) == ["path", "run", "key", "model", "served", "val_auc", "val_n", "test_auc",
                                   "threshold", "image_size", "weights"]
    # enough validation images first; among those the served detector before a higher AUC; then by AUC;
    # too few validation images after them, models without metrics last
    assert list(table["path"]) == [str(p) for p in (best_served, high, low, few, unevaluated)]
    row = table.iloc[1]
    assert (row.run, row.key, row.model, bool(row.served)) == ("b", "high", "b high", False)
    assert (row.val_auc, row.val_n, row.test_auc, row.threshold, row.image_size, row.weights) == (
        0.95, 400, 0.93, 0.37, 180, "local")
    assert table.iloc[2].weights == "none"
    first = table.iloc[0]  # the served record's fields
    assert (first.model, bool(first.served), first.val_auc, first.val_n, first.test_auc, first.threshold,
            first.image_size, first.weights) == ("served: demo recipe", True, 0.90, 500, 0.91, 0.6, 96, "local")
    last = table.iloc[4]
    assert (last.model, bool(last.served), last.val_n, last.weights) == ("raw", False, 0, "")
    assert np.isnan(last.val_auc) and np.isnan(last.test_auc)
    assert predict.default_model(tmp_path) == best_served


def test_metrics_for_reads_the_served_record_before_any_metrics_file(tmp_path):
    path = _served(tmp_path, "run", val_auc=0.88, val_n=321, test_auc=0.87)
    (tmp_path / "run" / "metrics").mkdir()
    (tmp_path / "run" / "metrics" / "served_metrics.json").write_text(json.dumps({"model": "stale", "val": {"auc": 0.1}}))
    metrics = predict.metrics_for(path)
    assert metrics == dict(model="served: demo recipe", served=True, val=dict(auc=0.88, n=321),
                           test=dict(auc=0.87), threshold=0.6, image_size=96, weights={"source": "local"})
    assert predict.metrics_for(tmp_path / "run" / "models" / "other.keras") == {}
    unnamed = _served(tmp_path, "old", val_auc=0.8, val_n=300, recipe={})  # a record from before recipes had names
    assert predict.metrics_for(unnamed)["model"] == "served: "


def test_default_model_skips_unevaluated_models_and_says_how_to_get_one(tmp_path):
    _metrics(tmp_path, "a", "raw")
    with pytest.raises(predict.NoModelError) as error:
        predict.default_model(tmp_path)
    assert str(tmp_path) in str(error.value) and "make smoke" in str(error.value)
    assert "(minutes) or `make reproduce`, or pass --model PATH" in str(error.value)
    evaluated = _metrics(tmp_path, "b", "m", auc=0.6, n=10)  # too few validation images, but the only one
    assert predict.default_model(tmp_path) == evaluated


def test_image_files_lists_folders_sorted_without_hidden_entries_and_keeps_named_files(tmp_path):
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    (folder / ".hidden").mkdir()
    for name in ("b.jpg", "a.png", "sub/c.webp", ".dot.jpg", ".hidden/d.jpg", "notes.txt"):
        (folder / name).write_bytes(b"x")
    os.symlink(folder / "missing.jpg", folder / "broken.jpg")  # reported by the loader, not dropped
    named = tmp_path / "elsewhere.jpg"  # a file named directly is kept even if it does not exist
    found = predict.image_files([str(folder), named])
    assert found == [folder / "a.png", folder / "b.jpg", folder / "broken.jpg", folder / "notes.txt",
                     folder / "sub" / "c.webp", named]
    assert not any(predict.has_odd_name(p) for p in found)
    odd = os.fsdecode(os.fsencode(str(tmp_path)) + b"/caf\xe9.jpg")  # Latin-1 bytes: not valid UTF-8
    assert predict.has_odd_name(odd) and not predict.has_odd_name(tmp_path / "café.jpg")


def test_an_empty_runs_folder_lists_no_models_and_has_no_default(tmp_path):
    table = predict.find_models(tmp_path)
    assert table.empty and list(table.columns) == ["path", "run", "key", "model", "served", "val_auc", "val_n",
                                                   "test_auc", "threshold", "image_size", "weights"]
    with pytest.raises(predict.NoModelError):
        predict.default_model(tmp_path)


def test_enough_validation_images_starts_at_the_minimum_and_an_unknown_count_is_not_enough(tmp_path):
    at_minimum = _metrics(tmp_path, "a", "m", auc=0.7, n=predict.MIN_VAL_IMAGES)
    unknown = _metrics(tmp_path, "b", "m", auc=0.9, n=None)  # "n": null in the metrics file
    assert list(predict.find_models(tmp_path)["path"]) == [str(at_minimum), str(unknown)]
