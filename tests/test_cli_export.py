"""The fakeface command line and the checked TFLite / SavedModel export."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from helpers import cli, export, models, predict
from helpers.data import load_image


@pytest.fixture
def mixed_folder(tmp_path, shared_faces):
    folder = tmp_path / "inbox"
    for source in ("real/ffhq", "fake/sd21", "fake/stylegan2"):
        for path in sorted((shared_faces / source).iterdir())[:2]:
            target = folder / source.replace("/", "_") / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, target)
    (folder / "notes.txt").write_text("not a picture")
    good = sorted((shared_faces / "real" / "unsplash").iterdir())[0].read_bytes()
    (folder / "cut.jpg").write_bytes(good[: len(good) // 3])
    (folder / ".hidden.jpg").write_bytes(good)
    return folder


def test_predict_folder_counts_errors_and_exit_codes(trained_run, mixed_folder, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv(predict.RUNS_ENV, str(trained_run))
    out = tmp_path / "results.csv"
    code = cli.main(["predict", str(mixed_folder), "--out", str(out), "--quiet"])
    results = pd.read_csv(out, keep_default_na=False)
    assert code == cli.EXIT_SOME_FAILED
    assert len(results) == 8  # 6 faces + 2 bad files; the hidden file is skipped
    assert (results["error"] != "").sum() == 2 and set(results.loc[results["error"] == "", "label"]) <= {"real", "fake"}
    assert "not an image" in results.loc[results["path"].str.endswith("notes.txt"), "error"].iloc[0]
    assert "truncated" in results.loc[results["path"].str.endswith("cut.jpg"), "error"].iloc[0]
    assert (results["threshold"] == results["threshold"].iloc[0]).all()
    assert "8 files" in capsys.readouterr().err

    good_only = mixed_folder / "real_ffhq"
    json_out = tmp_path / "r.json"
    assert cli.main(["predict", str(good_only), "--out", str(json_out), "--quiet"]) == cli.EXIT_OK
    rows = json.loads(json_out.read_text())
    assert len(rows) == 2 and all(0.0 <= r["score"] <= 1.0 for r in rows)


def test_no_model_gives_its_own_exit_code(tmp_path, monkeypatch, mixed_folder, capsys):
    monkeypatch.setenv(predict.RUNS_ENV, str(tmp_path / "empty"))
    assert cli.main(["predict", str(mixed_folder), "--quiet"]) == cli.EXIT_NO_MODEL
    assert "make smoke" in capsys.readouterr().err
    assert cli.main(["predict", str(mixed_folder), "--model", str(tmp_path / "nope.keras")]) == cli.EXIT_NO_MODEL
    with pytest.raises(SystemExit) as usage:
        cli.main(["predict"])
    assert usage.value.code == cli.EXIT_USAGE


def test_inference_model_is_deterministic_and_matches_the_keras_model():
    model, _ = models.build_mobilenetv2(image_size=64, weights=None)
    x = np.random.default_rng(0).uniform(0, 255, (3, 64, 64, 3)).astype("float32")
    serving = models.inference_model(model)
    assert "augmentation" not in [layer.name for layer in serving.layers]
    np.testing.assert_allclose(serving(x), serving(x))
    np.testing.assert_allclose(serving(x), model(x, training=False), atol=1e-6)


@pytest.mark.parametrize("fmt", ["tflite", "saved_model"])
def test_export_matches_keras_scores_and_writes_a_card(trained_run, shared_faces, tmp_path, fmt):
    model_path = trained_run / "demo" / "models" / "mobilenetv2_finetune.keras"
    paths = [sorted((shared_faces / s).iterdir())[0] for s in ("real/ffhq", "real/unsplash", "fake/sd21",
                                                                "fake/stylegan1", "fake/stylegan2")]
    samples = np.stack([load_image(p, size=64).image for p in paths]).astype("float32")
    predictor = predict.Predictor.load(model_path)
    report = export.export_detector(predictor, tmp_path / fmt, fmt, samples)
    keras_scores = predictor.score_arrays(samples)
    exported = export.exported_scores(tmp_path / fmt / (f"{model_path.stem}.tflite" if fmt == "tflite"
                                                        else "saved_model"), fmt, samples)
    np.testing.assert_allclose(exported, keras_scores, atol=1e-4)
    assert report["max_difference"] <= 1e-3 and report["checked"] == 5
    card = (tmp_path / fmt / "MODEL_CARD.md").read_text()
    assert "Decision threshold" in card and "| fake | sd21 |" in card and "validation split" in card


def test_cli_export_and_models_listing(trained_run, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv(predict.RUNS_ENV, str(trained_run))
    assert cli.main(["models"]) == cli.EXIT_OK
    assert "MobileNetV2 demo" in capsys.readouterr().out
    assert cli.main(["export", "--format", "tflite", "--out", str(tmp_path / "e"), "--n-samples", "2"]) == 0
    assert (tmp_path / "e" / "mobilenetv2_finetune.tflite").stat().st_size > 100_000
    assert json.loads((tmp_path / "e" / "threshold.json").read_text())["image_size"] == 64


def test_predict_faces_one_row_per_face_and_no_face_reported(trained_run, mixed_folder, monkeypatch, tmp_path):
    from PIL import Image

    monkeypatch.setenv(predict.RUNS_ENV, str(trained_run))
    Image.fromarray(np.full((120, 160, 3), 90, np.uint8)).save(mixed_folder / "wall.png")
    out = tmp_path / "faces.csv"
    assert cli.main(["predict", str(mixed_folder), "--faces", "--out", str(out), "--quiet"]) == cli.EXIT_SOME_FAILED
    rows = pd.read_csv(out, keep_default_na=False)
    faces = rows[rows["error"] == ""]
    assert len(faces) == 6 and (faces["face"].astype(int) == 0).all()
    assert (pd.to_numeric(faces["face_confidence"]) > 0.9).all()
    assert rows.loc[rows["path"].str.endswith("wall.png"), "error"].iloc[0] == "no face detected"
    assert "truncated" in rows.loc[rows["path"].str.endswith("cut.jpg"), "error"].iloc[0]


def test_models_validated_on_few_images_are_not_preferred(tmp_path):
    import shutil as sh

    for run, n, auc in (("smoke", 10, 1.0), ("sample", 569, 0.93)):
        (tmp_path / run / "models").mkdir(parents=True)
        (tmp_path / run / "models" / "m.keras").write_bytes(b"")
        (tmp_path / run / "metrics").mkdir()
        (tmp_path / run / "metrics" / "m_metrics.json").write_text(json.dumps(
            {"model": run, "val": {"auc": auc, "n": n}, "test": {"auc": 0.9}, "threshold": 0.5}))
    table = predict.find_models(tmp_path)
    assert list(table["run"]) == ["sample", "smoke"]
    assert predict.default_model(tmp_path) == tmp_path / "sample" / "models" / "m.keras"
    sh.rmtree(tmp_path / "sample")
    assert predict.default_model(tmp_path) == tmp_path / "smoke" / "models" / "m.keras"
