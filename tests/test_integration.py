"""Integration on the real face sample: a scan of a slice, and the smoke profile end to end."""

import json

import pandas as pd
import pytest

from helpers import data, reproduce, splits

pytestmark = pytest.mark.integration

FIGURES = ["01_data_card.png", "01_examples.png", "03_mobilenetv2_history.png", "03_table3_grid.png",
           "04_resnet50_history.png", "04_table4_grid.png", "05_roc_pr.png", "05_confusion_matrices.png",
           "05_per_source.png", "06_feature_maps.png", "06_gradcam.png", "06_prediction_grid.png",
           "07_umap_hdbscan.png"]


def test_scan_and_split_a_slice_of_the_sample(shared_faces):
    manifest = data.scan_folder(shared_faces, limit_per_source=30, seed=0, progress=False)
    assert len(manifest) == 150 and (manifest["status"] == "ok").all()
    assert set(manifest["source"]) == {"ffhq", "unsplash", "stylegan1", "stylegan2", "sd21"}
    reference = pd.read_csv(shared_faces / "manifest.csv").set_index("path")
    for row in manifest.itertuples():
        assert (row.width, row.height) == tuple(reference.loc[row.path, ["width", "height"]])
    split = splits.split_manifest(manifest, seed=0)
    assert splits.leakage_report(split).empty


def test_smoke_profile_runs_every_notebook(shared_faces, tmp_path):
    summary = reproduce.reproduce("smoke", run_name="smoke", runs_root=tmp_path)
    run_dir = tmp_path / "smoke"
    assert list(summary["notebooks"]) == [nb.stem for nb in sorted(reproduce.NOTEBOOKS_DIR.glob("*.ipynb"))]
    for name in FIGURES:
        assert (run_dir / "figures" / name).stat().st_size > 5_000, name
    metrics = {p.stem: json.loads(p.read_text()) for p in (run_dir / "metrics").glob("*.json")}
    keys = ("mobilenetv2_head", "mobilenetv2_finetune", "resnet50_head", "resnet50_finetune")
    assert set(metrics) == {f"{key}_metrics" for key in keys}
    assert metrics["mobilenetv2_head_metrics"]["weights"]["source"] == "local"
    resnet_weights = metrics["resnet50_head_metrics"]["weights"]
    if resnet_weights["source"] == "none":  # offline: the warning travels into the metrics
        assert "RANDOMLY INITIALISED" in resnet_weights["warning"]
    for m in metrics.values():
        assert 0.0 <= m["test"]["auc"] <= 1.0 and len(m["per_source"]) == 5
    for table in ("table5_model_comparison", "table7_class_report", "table8_per_source"):
        assert (run_dir / "tables" / f"{table}.md").is_file()
    assert (run_dir / "split.csv").is_file() and (run_dir / "summary.json").is_file()
    assert summary["headline"]["MobileNetV2 fine-tuned"]["weights"] == "local"
