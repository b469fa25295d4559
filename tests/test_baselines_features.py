"""Issue 5: the other detectors, ELA / denoising, frequency baselines and the frozen-feature cache."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from helpers import baselines, data, explain, features, grid, models, pipeline, preprocess, splits


@pytest.fixture(autouse=True)
def offline_weights(tmp_path, monkeypatch):
    """No ImageNet weights: the builders must fall back to random init (and say so) fast."""
    from keras.src.utils import file_utils

    monkeypatch.setattr(models, "weights_search_dirs", lambda: [tmp_path / "nothing"])

    def refuse(*args, **kwargs):
        raise Exception("URL fetch failure: simulated offline machine")

    monkeypatch.setattr(file_utils, "get_file", refuse)


@pytest.mark.parametrize("arch", ["mobilenet", "inceptionresnetv2", "custom_cnn"])
def test_every_new_detector_builds_scores_and_explains(arch):
    size = 80  # InceptionResNetV2 needs at least 75 px
    model, weights = models.build_detector(arch, image_size=size)
    assert weights.source in ("none", "scratch")
    assert (weights.warning != "") == (arch != "custom_cnn")  # only a missing pretrained model warns
    images = np.random.default_rng(0).integers(0, 255, (2, size, size, 3)).astype("float32")
    scores = models.inference_model(model)(images).numpy().ravel()
    assert scores.shape == (2,) and ((scores >= 0) & (scores <= 1)).all()
    heatmaps, _ = explain.gradcam(model, images)
    assert heatmaps.shape == (2, size, size)


def test_custom_cnn_is_the_seed_architecture():
    model, _ = models.build_custom_cnn(image_size=64)
    convs = [layer for layer in models.backbone_of(model).layers if layer.name.startswith("conv")]
    assert [c.filters for c in convs] == [32, 16]
    assert model.get_layer("dropout_1").rate == 0.25
    with pytest.raises(ValueError, match="unknown architecture"):
        models.build_detector("inceptionresnetv1")


def test_ela_highlights_a_region_pasted_after_compression(tmp_path):
    rng = np.random.default_rng(0)
    smooth = np.asarray(Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).resize((128, 128)))
    Image.fromarray(smooth).save(tmp_path / "a.jpg", quality=90)
    image = np.asarray(Image.open(tmp_path / "a.jpg")).copy()
    image[32:64, 32:64] = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)  # never compressed
    raw = preprocess.error_level_analysis(image, quality=90)
    assert raw.dtype == np.uint8 and raw.max() == 255
    ela = raw.astype(float)
    assert ela[32:64, 32:64].mean() > 4 * ela[80:, 80:].mean()


def test_denoise_brings_a_noisy_image_closer_to_the_clean_one():
    rng = np.random.default_rng(1)
    clean = np.asarray(Image.fromarray(rng.integers(0, 255, (6, 6, 3), dtype=np.uint8)).resize((96, 96)))
    noisy = np.clip(clean + rng.normal(0, 12, clean.shape), 0, 255).astype(np.uint8)
    denoised = preprocess.denoise(noisy, strength=10)
    assert np.abs(denoised.astype(float) - clean).mean() < 0.6 * np.abs(noisy.astype(float) - clean).mean()


def test_preprocessing_is_a_pipeline_parameter(face_tree):
    frame = data.usable(data.scan_folder(face_tree, progress=False)).head(4)
    plain = pipeline.load_array(frame, face_tree, 32)
    ela = pipeline.load_array(frame, face_tree, 32, preprocessing="ela")
    assert plain.shape == ela.shape and not np.array_equal(plain, ela)
    with pytest.raises(ValueError, match="preprocessing"):
        preprocess.load_for_model(face_tree / frame.path.iloc[0], 32, "kalman")


def _checkered(n: int, seed: int, artifact: bool) -> np.ndarray:
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(n):
        base = np.asarray(Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).resize((64, 64)), float)
        if artifact:  # the period-2 pattern transposed-convolution up-sampling leaves
            base += 6 * (np.indices((64, 64)).sum(axis=0) % 2)[..., None]
        images.append(np.clip(base + rng.normal(0, 2, base.shape), 0, 255).astype(np.uint8))
    return np.stack(images)


@pytest.mark.parametrize("kind", ["fft_azimuthal", "dct_blocks"])
def test_frequency_baselines_find_an_upsampling_artifact(kind):
    x_train = np.concatenate([_checkered(40, 0, False), _checkered(40, 1, True)])
    x_val = np.concatenate([_checkered(20, 2, False), _checkered(20, 3, True)])
    y_train, y_val = np.repeat([0, 1], 40), np.repeat([0, 1], 20)
    fitted = baselines.fit_baseline(kind, x_train, y_train, x_val, y_val)
    scores = baselines.score_baseline(fitted, x_val)
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(y_val, scores) > 0.95
    assert fitted["C"] in (0.01, 0.1, 1.0, 10.0)


def test_azimuthal_profile_shape_and_normalisation():
    profile = baselines.azimuthal_spectrum(_checkered(3, 0, False))
    assert profile.shape == (3, 45)  # radius 1 .. the corner of a 64x64 spectrum
    assert np.allclose(profile.mean(axis=1), 0, atol=1e-4) and np.allclose(profile.std(axis=1), 1, atol=1e-3)


def test_azimuthal_profile_ignores_brightness_and_rounding():
    """Radius 0 (the mean) is left out: a brighter copy of an image has the same profile (with the DC
    ring kept, float32 rounding of the subtracted mean moved every value of a row)."""
    images = _checkered(3, 0, False).astype(np.float32)
    assert np.allclose(baselines.azimuthal_spectrum(images), baselines.azimuthal_spectrum(images + 17.3), atol=1e-3)


def test_head_on_cached_features_equals_the_full_model_and_the_cache_is_reused(face_tree, tmp_path):
    frame = data.usable(data.scan_folder(face_tree, progress=False)).reset_index(drop=True)
    model, _ = models.build_mobilenetv2(image_size=32, augment="flip")
    first = features.extract_features(model, frame, face_tree, 32, 16, cache_dir=tmp_path)
    assert first["features"].shape == (40, 1280) and first["flipped"].shape == (40, 1280)
    assert not np.allclose(first["features"], first["flipped"], atol=0)  # random-init base: tiny values
    second = features.extract_features(model, frame, face_tree, 32, 16, cache_dir=tmp_path)
    assert float(second["seconds"]) == 0.0 and np.array_equal(first["features"], second["features"])
    images = pipeline.load_array(frame, face_tree, 32).astype("float32")
    full = models.inference_model(model)(images).numpy().ravel()
    via_head = features.head_model(model)(first["features"]).numpy().ravel()
    assert np.allclose(full, via_head, atol=1e-5)
    assert features.cache_key(model, frame, face_tree, 32, "none") != features.cache_key(model, frame, face_tree, 32, "ela")
    assert features.cache_key(model, frame, face_tree, 32, "none") != \
        features.cache_key(model, frame.head(39), face_tree, 32, "none")


def test_cached_training_draws_both_mirror_images():
    cache = {"features": np.zeros((4, 2), np.float32), "flipped": np.ones((4, 2), np.float32),
             "labels": np.array([0, 1, 0, 1], np.float32)}
    seen = np.concatenate([x.numpy() for _ in range(5) for x, _ in features.cached_dataset(cache, 4, shuffle=True)])
    assert set(np.unique(seen)) == {0.0, 1.0}
    plain = np.concatenate([x.numpy() for x, _ in features.cached_dataset(cache, 4)])
    assert (plain == 0).all()


def test_cached_grid_selects_the_same_point_as_the_naive_grid(face_tree, tmp_path, eager_steps):
    frame = data.usable(data.scan_folder(face_tree, progress=False))
    split = splits.split_manifest(frame, fractions=(0.6, 0.4, 0.0), seed=0)
    train_frame, val_frame = split[split.split == "train"], split[split.split == "val"]
    # epoch budgets share one run in the cached path (each reads its prefix of the history)
    points = {"learning_rate": [3e-2, 1e-3], "dropout": [0.5], "epochs": [1, 3]}

    def build(point):
        return models.build_mobilenetv2(image_size=32, dropout=point["dropout"], augment=False, seed=0)[0]

    tables = {method: grid.grid_table(method, build, points, train_frame, val_frame, face_tree, 32, tmp_path / method,
                                       "t3", 8, default_epochs=3, cache_dir=tmp_path / "features", seed=0,
                                       build_head=lambda p: models.build_head("mobilenetv2", dropout=p["dropout"],
                                                                              seed=0))
              for method in ("cached", "naive")}
    # same random state, same features, same batch order: the two paths train the same heads
    assert np.allclose(tables["cached"].final_train_loss, tables["naive"].final_train_loss, rtol=1e-3)
    assert np.allclose(tables["cached"].best_val_auc, tables["naive"].best_val_auc, atol=1e-3)
    assert (tables["cached"].epochs_run == tables["cached"].epochs).all()
    picks = {m: t.loc[t.selected, ["learning_rate", "dropout", "epochs"]].to_dict("records") for m, t in tables.items()}
    assert picks["cached"] == picks["naive"]
    # each row of the table against the per-epoch log Keras wrote for that point (the oracle on disk)
    for k, row in tables["naive"].iterrows():
        log = pd.read_csv(tmp_path / "naive" / "grid_models" / f"t3_{k}_log.csv")
        assert row["epochs_run"] == len(log) == row["epochs"]
        assert row["best_val_auc"] == pytest.approx(log["val_auc"].max(), abs=1e-6)
        assert row["best_epoch"] == int(log.loc[log["val_auc"].idxmax(), "epoch"]) + 1  # Keras counts from 0
        assert row["final_train_loss"] == pytest.approx(log["loss"].iloc[-1], rel=1e-6)
        assert row["final_val_accuracy"] == pytest.approx(log["val_accuracy"].iloc[-1], abs=1e-6)
        assert tables["cached"].loc[k, "best_epoch"] == row["best_epoch"]
    assert tables["naive"]["selected"].sum() == 1
    assert tables["naive"].loc[tables["naive"].selected, "best_val_auc"].item() == tables["naive"]["best_val_auc"].max()
    assert "feature_seconds" in tables["cached"] and len(tables["naive"]) == 4
    with pytest.raises(ValueError):
        grid.grid_table("fast", build, points, train_frame, val_frame, face_tree, 32, tmp_path, "x")
    assert isinstance(tables["cached"], pd.DataFrame)


def test_a_backbone_without_weights_is_skipped_and_the_table_says_why(face_tree, tmp_path):
    """Offline (this module's fixture), MobileNet V1 would be a random frozen feature extractor: notebook 09
    skips it, says why in the table, and still trains the custom CNN (it has no weights to miss)."""
    from helpers import compare

    frame = data.usable(data.scan_folder(face_tree, progress=False))
    split = splits.split_manifest(frame, fractions=(0.5, 0.25, 0.25), seed=0)
    frames = {s: split[split.split == s].reset_index(drop=True) for s in ("train", "val", "test")}
    skipped = compare.train_cnn("mobilenet", frames, face_tree, 32, epochs=1, out_dir=tmp_path, seed=0)
    assert skipped["skipped"].startswith("no ImageNet weights") and "scores" not in skipped
    kept = compare.train_cnn("custom_cnn", frames, face_tree, 32, epochs=1, out_dir=tmp_path, seed=0)
    forced = compare.train_cnn("mobilenet", frames, face_tree, 32, epochs=1, out_dir=tmp_path, seed=0,
                               skip_without_weights=False)
    assert forced["weights"] == "none" and len(forced["scores"]["test"]) == len(frames["test"])
    table, results = compare.comparison_table([kept], frames, n_boot=20, skipped=[skipped])
    assert len(results) == 1 and table.detector.iloc[1] == "MobileNet V1"
    assert table.note.tolist()[0] == "" and table.note.tolist()[1].startswith("skipped: no ImageNet weights")
    assert np.isnan(table["test AUC"].iloc[1]) and np.isfinite(table["test AUC"].iloc[0])
    # through the trained-model cache (notebook 09): the same scores as trained above, the second time read back
    cached = [compare.train_cnn("custom_cnn", frames, face_tree, 32, epochs=1, out_dir=tmp_path / "c", seed=0,
                                trained_cache=tmp_path / "trained") for _ in range(2)]
    assert len(list((tmp_path / "trained").iterdir())) == 1
    for result in cached:
        for part in ("val", "test"):
            np.testing.assert_array_equal(result["scores"][part], kept["scores"][part])
        assert result["train_seconds"] >= cached[0]["train_seconds"] - 1.0   # the training's own time, not 0
        assert result["size_mb"] == kept["size_mb"]                         # weights only, trained or read back
    assert kept["size_mb"] == round(kept["params"] * 4 / 1e6, 2)             # float32 weights, no Adam moments


def test_every_input_of_the_features_is_in_their_cache_key(face_tree, tmp_path):
    """Kept features are read back only for the same inputs: every argument of ``extract_features`` that
    changes its arrays (read from its signature) changes the key — another weight anywhere in the backbone, a
    flipped label, a file's bytes replaced under the same name, the size, preprocessing, flips, perturbation —
    and the batch size, which changes nothing, does not."""
    import inspect
    import os

    import keras

    model, _ = models.build_mobilenetv2(32, weights=None, augment=False)
    frame = data.scan_folder(face_tree, progress=False).head(6)
    arguments = dict(model=model, frame=frame, root=face_tree, image_size=32, batch_size=16, flips=True,
                     preprocessing="none", cache_dir=tmp_path, perturbation=None)
    assert set(arguments) == set(inspect.signature(features.extract_features).parameters)

    def key(**changes):
        a = arguments | changes
        return features.cache_key(a["model"], a["frame"], a["root"], a["image_size"], a["preprocessing"],
                                  f"{a['flips']}|{a['perturbation']}")

    base = key()
    assert key(batch_size=3) == base
    last = models.backbone_of(model).weights[-1]
    other_model = keras.models.clone_model(model)
    other_model.set_weights(model.get_weights())
    other_weight = [w for w in other_model.weights if w.path == last.path][0]
    other_weight.assign(other_weight.numpy() + 1.0)
    flipped = frame.assign(label=frame["label"].map({"real": "fake", "fake": "real"}))
    for name, value in dict(model=other_model, frame=flipped, image_size=33, preprocessing="ela", flips=False,
                            perturbation="jpeg:50").items():
        assert key(**{name: value}) != base, name
    target = face_tree / frame["path"].iloc[0]
    saved, stat = target.read_bytes(), target.stat()
    try:
        target.write_bytes(saved + b"\0")  # other bytes under the same name
        assert key() != base
    finally:
        target.write_bytes(saved)
        os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert key() == base
