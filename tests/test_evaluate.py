"""Metrics against scikit-learn, validation thresholds, bootstrap intervals and per-source numbers."""

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from helpers import evaluate, preprocess, stats


def _scores(n=400, seed=0, separation=1.5):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    s = 1 / (1 + np.exp(-(rng.normal(size=n) + separation * (2 * y - 1))))
    return y, s


def test_binary_metrics_match_scikit_learn():
    y, s = _scores()
    m = stats.binary_metrics(y, s, threshold=0.6)
    pred = (s >= 0.6).astype(int)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["auc"] == pytest.approx(skm.roc_auc_score(y, s))
    assert m["precision"] == pytest.approx(skm.precision_score(y, pred))
    assert m["recall"] == pytest.approx(skm.recall_score(y, pred))
    assert m["f1"] == pytest.approx(skm.f1_score(y, pred))
    assert m["average_precision"] == pytest.approx(skm.average_precision_score(y, s))
    assert [m["tn"], m["fp"], m["fn"], m["tp"]] == skm.confusion_matrix(y, pred).ravel().tolist()
    assert np.isnan(stats.binary_metrics(np.ones(5), np.linspace(0, 1, 5))["auc"])


def test_threshold_is_chosen_on_validation_data():
    y = np.array([0, 0, 0, 1, 1, 1])
    s = np.array([0.05, 0.1, 0.2, 0.3, 0.35, 0.9])  # perfectly separable below 0.5
    t = stats.choose_threshold(y, s, "youden")
    assert 0.2 < t <= 0.3
    assert stats.binary_metrics(y, s, t)["accuracy"] == 1.0
    assert stats.binary_metrics(y, s, 0.5)["accuracy"] < 1.0
    assert stats.choose_threshold(y, s, "accuracy") == pytest.approx(0.3)
    assert stats.choose_threshold(np.zeros(4), np.linspace(0, 1, 4)) == 0.5
    with pytest.raises(ValueError, match="unknown threshold method 'magic'"):
        stats.choose_threshold(y, s, "magic")
    # a detector that ranks every fake below every real: Youden's J is 0 at best, at roc_curve's first
    # threshold (infinity): nothing is called fake, and the threshold is the largest probability, 1.0
    assert stats.choose_threshold(np.array([0, 0, 1, 1]), np.array([0.8, 0.9, 0.1, 0.2])) == 1.0


def test_fpr_controlled_threshold_bounds_every_real_source():
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"label": ["real"] * 300 + ["fake"] * 100,
                          "source": ["easy"] * 200 + ["hard"] * 100 + ["gan"] * 100})
    scores = np.concatenate([rng.beta(1, 6, 200), rng.beta(3, 3, 100), rng.beta(6, 1, 100)])
    scores[:20] = scores[19]  # ties at the cut may not push a source over its budget
    for max_fpr in (0.0, 0.05, 0.2):
        t = stats.fpr_controlled_threshold(frame, scores, max_fpr)
        rates = {src: float((scores[(frame.source == src).to_numpy()] >= t).mean()) for src in ("easy", "hard")}
        assert max(rates.values()) <= max_fpr
        assert rates["hard"] > max_fpr - 0.02  # the hard source sets it: not stricter than needed
    youden = stats.choose_threshold((frame.label == "fake").astype(int), scores)
    assert stats.fpr_controlled_threshold(frame, scores, 0.05) > youden  # stricter than the default here
    assert stats.fpr_controlled_threshold(frame, scores) == stats.fpr_controlled_threshold(frame, scores, 0.05)


def test_bootstrap_interval_covers_the_estimate_and_narrows_with_data():
    y, s = _scores(200, seed=1)
    lo, hi = stats.bootstrap_ci(y, s, "auc", n_boot=300, seed=0)
    assert lo < skm.roc_auc_score(y, s) < hi
    y_big, s_big = _scores(3000, seed=1)
    lo_big, hi_big = stats.bootstrap_ci(y_big, s_big, "auc", n_boot=300, seed=0)
    assert hi_big - lo_big < hi - lo
    acc_lo, acc_hi = stats.bootstrap_ci(y, s, "accuracy", threshold=0.5, n_boot=300)
    assert acc_lo <= np.mean((s >= 0.5) == y) <= acc_hi


def test_per_source_metrics():
    frame = pd.DataFrame({
        "label": ["real"] * 10 + ["fake"] * 10 + ["fake"] * 10,
        "source": ["cam"] * 10 + ["easy_gan"] * 10 + ["hard_gan"] * 10,
    })
    scores = np.concatenate([np.linspace(0.1, 0.4, 10),       # reals: low
                             np.linspace(0.6, 0.9, 10),       # easy fakes: high
                             np.linspace(0.0, 0.05, 10)])     # hard fakes: lower than every real
    table = evaluate.per_source_metrics(frame, scores, threshold=0.5, n_boot=100).set_index("source")
    assert table.at["easy_gan", "auc"] == 1.0 and table.at["easy_gan", "rate"] == 1.0
    assert table.at["hard_gan", "auc"] == 0.0 and table.at["hard_gan", "accuracy"] == 0.0
    assert table.at["cam", "rate"] == 0.0 and table.at["cam", "rate_name"] == "false-positive rate"
    assert table.at["cam", "auc"] == pytest.approx(0.5)  # reals vs all fakes
    assert (table["n"] == 10).all()


def test_evaluate_scores_applies_the_validation_threshold_to_test(tmp_path):
    y_val, s_val = _scores(200, seed=2)
    y_test, s_test = _scores(200, seed=3)
    as_frame = lambda y: pd.DataFrame({"label": np.where(y == 1, "fake", "real"),  # noqa: E731
                                       "source": np.where(y == 1, "gan", "cam")})
    result = evaluate.evaluate_scores("m", as_frame(y_val), s_val, as_frame(y_test), s_test, n_boot=50)
    expected = stats.choose_threshold(y_val, s_val)
    assert result["threshold"] == pytest.approx(expected)
    assert result["test"]["threshold"] == pytest.approx(expected)
    assert result["test"]["accuracy"] == pytest.approx(np.mean((s_test >= expected) == y_test))
    path = evaluate.save_json(result, tmp_path / "m.json")
    assert '"threshold"' in path.read_text()
    odd = {"ci": (np.float32(0.1234567), float("nan")), "n": np.int64(3), "rows": [{"auc": np.float64(0.5)}]}
    import json

    assert json.loads(evaluate.save_json(odd, tmp_path / "a" / "odd.json").read_text()) == \
        {"ci": [0.123457, None], "n": 3, "rows": [{"auc": 0.5}]}  # NaN as null: valid JSON
    table5 = evaluate.table5_model_comparison([result])
    assert table5.loc[0, "Test images"] == 200 and "[" in table5.loc[0, "ROC AUC"]
    table8 = evaluate.table8_per_source([result])
    assert set(table8["Source"]) == {"cam", "gan"}
    table7 = evaluate.table7_class_report(result, as_frame(y_test), s_test)
    assert {"real", "fake", "macro avg"} <= set(table7["Class"])
    evaluate.save_table(table5, tmp_path / "t5")
    assert (tmp_path / "t5.md").read_text().startswith("| Model")


def test_pairwise_auc_table():
    predictions = pd.DataFrame({
        "model": "m", "label": ["real"] * 8 + ["fake"] * 8,
        "source": ["a"] * 4 + ["b"] * 4 + ["g"] * 4 + ["h"] * 4,
        "score": [0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9, 0.5, 0.55, 0.95, 0.99, 0.0, 0.05, 0.01, 0.02],
    })
    table = evaluate.pairwise_auc_table(predictions, n_boot=50).set_index("real source")
    assert list(table.columns) == ["model", "g", "h"]
    assert table.at["a", "g"].startswith("1.000")   # every g fake above every a real
    assert table.at["a", "h"].startswith("0.000")
    assert table.at["b", "g"].startswith("0.500")


def test_vectorised_bootstrap_auc_equals_scikit_learn_per_replicate():
    """The rank-sum AUC of each replicate must equal roc_auc_score on the same resample (ties too)."""
    from scipy.stats import rankdata

    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 60)
    s = np.round(rng.random(60), 1)  # many ties
    neg, pos = np.flatnonzero(y == 0), np.flatnonzero(y == 1)
    idx = np.concatenate([rng.choice(neg, (20, len(neg))), rng.choice(pos, (20, len(pos)))], axis=1)
    ranks = rankdata(s[idx], axis=1)
    fast = (ranks[:, len(neg):].sum(axis=1) - len(pos) * (len(pos) + 1) / 2) / (len(neg) * len(pos))
    slow = [skm.roc_auc_score(y[row], s[row]) for row in idx]
    np.testing.assert_allclose(fast, slow)
    lo, hi = stats.bootstrap_ci(y, s, "auc", n_boot=2000, seed=1)
    assert lo < skm.roc_auc_score(y, s) < hi


def _brute_force_threshold(y, s, rule):
    """Independent oracle: try every score as the threshold, keep the first best under ``rule``."""
    best, best_value = None, -np.inf
    for t in np.unique(s):
        pred = s >= t
        tpr, fpr = pred[y == 1].mean(), pred[y == 0].mean()
        value = (pred == y).mean() if rule == "accuracy" else tpr - fpr
        if value > best_value + 1e-12:
            best, best_value = t, value
    return best


def test_accuracy_and_youden_rules_differ_where_they_should():
    # 90 reals and 10 fakes: calling the overlap "real" wins accuracy, catching every fake wins Youden's J.
    y = np.array([0] * 90 + [1] * 10)
    s = np.concatenate([np.linspace(0.0, 0.6, 90), np.linspace(0.5, 0.9, 10)])
    youden, accuracy = stats.choose_threshold(y, s, "youden"), stats.choose_threshold(y, s, "accuracy")
    assert youden == pytest.approx(_brute_force_threshold(y, s, "youden"))
    assert accuracy == pytest.approx(_brute_force_threshold(y, s, "accuracy"))
    assert accuracy > youden + 0.05  # the data makes the two rules disagree


def _colour_mean_detector(input_shape: tuple, weights: list[float], bias: float):
    """A detector whose score is a fixed function of the image's mean colour: sigmoid(weights . mean + bias)."""
    import keras

    inputs = keras.Input(input_shape)
    score = keras.layers.Dense(1, activation="sigmoid", name="prediction")(keras.layers.GlobalAveragePooling2D()(inputs))
    model = keras.Model(inputs, score)
    model.get_layer("prediction").set_weights([np.array(weights, np.float32).reshape(3, 1),
                                               np.array([bias], np.float32)])
    return model


def test_evaluate_run_models_takes_the_threshold_from_validation_only(tmp_path, face_tree):
    """Notebook 05's path, on a detector whose scores are a fixed function of brightness."""

    from helpers import config, data, splits

    manifest = data.usable(data.scan_folder(face_tree, progress=False))
    split = splits.split_manifest(manifest, fractions=(0.4, 0.3, 0.3), seed=0)
    model = _colour_mean_detector((32, 32, 3), [0.02, 0.02, 0.02], -6.0)
    import json

    cfg = config.RunConfig(run_name="r", data_root=face_tree, runs_root=tmp_path, image_size=48)  # not the model's
    model.save(cfg.path("models", "mobilenetv2_finetune.keras"))
    weights = {"source": "local", "warning": ""}
    cfg.path("training", "mobilenetv2.json").write_text(json.dumps(
        {"image_size": 32, "weights": weights, "parameters": {"input_kind": "image", "preprocessing": "none"}}))
    results, predictions = evaluate.evaluate_run_models(cfg, split, ["resnet50_finetune", "mobilenetv2_finetune"],
                                                        n_boot=20)  # the first was never trained: skipped
    assert len(results) == 1
    result = results[0]
    assert (result["key"], result["image_size"], result["input_kind"], result["weights"]) == \
        ("mobilenetv2_finetune", 32, "image", weights)
    assert result["model"] == "MobileNetV2 fine-tuned"
    written = json.loads(cfg.path("metrics", "mobilenetv2_finetune_metrics.json").read_text())
    assert written["threshold"] == pytest.approx(result["threshold"], abs=1e-6) and written["image_size"] == 32
    saved = pd.read_csv(cfg.path("predictions", "mobilenetv2_finetune.csv"))
    assert saved.columns.tolist() == ["path", "label", "source", "model", "score"] and len(saved) == len(predictions)

    def scores_of(name):  # the oracle scores the same function directly
        rows = split[split.split == name]
        images = np.stack([data.load_image(face_tree / p, size=32).image for p in rows.path]).astype(np.float32)
        return (rows.label == "fake").astype(int).to_numpy(), model.predict(images, verbose=0).reshape(-1)

    (y_val, s_val), (y_test, s_test) = scores_of("val"), scores_of("test")
    assert result["threshold"] == pytest.approx(stats.choose_threshold(y_val, s_val), abs=1e-5)
    assert stats.choose_threshold(y_val, s_val) != pytest.approx(stats.choose_threshold(y_test, s_test))
    assert result["val"]["n"] == len(y_val) and result["test"]["n"] == len(y_test)
    assert result["test"]["auc"] == pytest.approx(skm.roc_auc_score(y_test, s_test), abs=1e-4)
    assert set(predictions["path"]) == set(split.loc[split.split == "test", "path"])


def test_evaluate_run_models_reads_each_model_as_its_training_record_says(tmp_path, face_tree, capsys):
    """Face crops and ELA from the record, the image size of the config without one, the threshold rule,
    bootstrap settings and seed passed on, names, printed lines and the files, each against an oracle."""
    import json

    from PIL import Image

    from helpers import config, data, splits

    manifest = data.usable(data.scan_folder(face_tree, progress=False))
    split = splits.split_manifest(manifest, fractions=(0.4, 0.3, 0.3), seed=0)
    # any input size (each model is read at its record's size); colour weights whose scores overlap across
    # the labels, so that the accuracy and Youden rules pick different validation thresholds on both inputs
    # (found by a search over random weights)
    model = _colour_mean_detector((None, None, 3), [0.016, -0.028, -0.055], -2.9)
    cfg = config.RunConfig(run_name="r", data_root=face_tree, runs_root=tmp_path, image_size=40, seed=3)
    crops_root = cfg.run_dir / "faces" / "crops"
    crops, no_face = {}, split[split.split == "test"].path.iloc[0]  # one test image has no face: left out
    for path in split.path:
        if path != no_face:
            crops[path] = f"{Path(path).stem}.png"
            image = data.load_image(face_tree / path).image
            crops_root.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image[8:56, 4:60]).save(crops_root / crops[path])
    pd.DataFrame({"path": list(crops) + [no_face], "crop_path": list(crops.values()) + [""]}).to_csv(
        cfg.path("annotations.csv"), index=False)
    faces_weights = {"source": "none", "warning": "RANDOMLY INITIALISED"}
    cfg.path("training", "mobilenetv2.json").write_text(json.dumps(
        {"image_size": 24, "weights": faces_weights, "parameters": {"input_kind": "face", "preprocessing": "ela"}}))
    for key in ("mobilenetv2_extra", "resnet50_head"):  # resnet50: no training record, read as the config says
        model.save(cfg.path("models", f"{key}.keras"))
    results, predictions = evaluate.evaluate_run_models(cfg, split, ["mobilenetv2_finetune", "mobilenetv2_extra",
                                                                     "resnet50_head"], n_boot=30,
                                                        threshold_method="accuracy")
    printed = capsys.readouterr().out
    assert "skipping mobilenetv2_finetune" in printed
    faces_result, image_result = results

    def oracle(split_name, face: bool):
        rows = split[split.split == split_name]
        if face:
            rows = rows[rows.path != no_face]
        images = [preprocess.load_for_model(crops_root / crops[p], 24, "ela").image if face else
                  data.load_image(face_tree / p, size=40).image for p in rows.path]
        scores = model.predict(np.stack(images).astype(np.float32), verbose=0).reshape(-1)
        return rows.reset_index(drop=True), scores

    for result, face, name, weights in ((faces_result, True, "mobilenetv2_extra", faces_weights),
                                         (image_result, False, "ResNet50 frozen head", {})):
        (val, s_val), (test, s_test) = oracle("val", face), oracle("test", face)
        expected = evaluate.evaluate_scores(name, val, s_val, test, s_test, n_boot=30, threshold_method="accuracy",
                                            seed=3)
        assert result["model"] == name and result["weights"] == weights
        youden = stats.choose_threshold((val.label == "fake").to_numpy().astype(int), s_val, "youden")
        assert expected["threshold"] != pytest.approx(youden)  # the data tells the rules apart
        assert result["threshold"] == pytest.approx(expected["threshold"], abs=1e-5)
        assert result["test"]["auc"] == pytest.approx(expected["test"]["auc"], abs=1e-5)
        assert np.allclose(result["test"]["auc_ci"], expected["test"]["auc_ci"], atol=1e-5)  # same draws: seed, n_boot
        assert result["test"]["n"] == len(test) and result["image_size"] == (24 if face else 40)
        assert result["input_kind"] == ("face" if face else "image")
        written = pd.read_csv(cfg.path("predictions", f"{result['key']}.csv"))
        part = predictions[predictions.model == result["key"]]
        for table in (written, part):  # the original image's path, this model's key, the oracle's scores
            assert table.path.tolist() == test.path.tolist() and (table.model == result["key"]).all()
            assert np.allclose(table.score, s_test, atol=1e-5)
    assert predictions.index.equals(pd.RangeIndex(len(predictions)))
    lines = [line for line in printed.splitlines() if "test AUC" in line]
    assert len(lines) == 2 and lines[0].endswith(f"{faces_result['threshold']:.3f} [RANDOM-INIT BACKBONE]")
    assert lines[1].endswith(f"at val threshold {image_result['threshold']:.3f}")
    none = evaluate.evaluate_run_models(cfg, split, ["mobilenetv2_finetune"])  # nothing trained: nothing to show
    assert none[0] == [] and none[1].empty


def test_report_tables_carry_the_numbers_they_are_given(tmp_path):
    frame = pd.DataFrame({"label": ["real"] * 6 + ["fake"] * 6, "source": ["cam"] * 6 + ["gan"] * 3 + ["sd"] * 3})
    val_scores = np.array([0.1, 0.2, 0.3, 0.35, 0.5, 0.6, 0.4, 0.7, 0.8, 0.9, 0.55, 0.65])
    test_scores = np.array([0.05, 0.25, 0.45, 0.6, 0.15, 0.3, 0.5, 0.9, 0.7, 0.2, 0.8, 0.95])
    result = evaluate.evaluate_scores("M", frame, val_scores, frame, test_scores, n_boot=50)
    t, y = result["test"], (frame.label == "fake").to_numpy().astype(int)
    pred = (test_scores >= result["threshold"]).astype(int)
    row = evaluate.table5_model_comparison([result]).iloc[0]
    assert row["Model"] == "M" and row["Test images"] == 12
    assert row["Threshold (val)"] == round(result["threshold"], 3)
    assert row["Precision"] == round(skm.precision_score(y, pred), 3)
    assert row["Recall"] == round(skm.recall_score(y, pred), 3)
    assert row["F1"] == round(skm.f1_score(y, pred), 3)
    assert row["ROC AUC"] == f"{t['auc']:.3f} [{t['auc_ci'][0]:.3f}, {t['auc_ci'][1]:.3f}]"
    assert row["Accuracy"].startswith(f"{skm.accuracy_score(y, pred):.3f} [")
    report = evaluate.table7_class_report(result, frame, test_scores).set_index("Class")
    assert report.at["fake", "recall"] == round(skm.recall_score(y, pred), 3)
    assert report.at["real", "recall"] == round(skm.recall_score(1 - y, 1 - pred), 3)
    assert report.at["fake", "support"] == 6 and set(report["Model"]) == {"M"}
    per_source = evaluate.table8_per_source([result, dict(result, model="N")]).set_index("Source")
    assert per_source.at["gan", "n"] == 3 and per_source.at["cam", "Label"] == "real"
    assert {"M AUC", "M accuracy", "N AUC", "N accuracy"} <= set(per_source.columns)
    gan = next(s for s in result["per_source"] if s["source"] == "gan")
    expected = f"{gan['accuracy']:.3f} [{gan['accuracy_lo']:.3f}, {gan['accuracy_hi']:.3f}]"
    assert per_source.at["gan", "M accuracy"] == expected
    evaluate.save_table(per_source.reset_index(), tmp_path / "deep" / "t8")
    assert pd.read_csv(tmp_path / "deep" / "t8.csv").columns[0] == "Source"  # no index column
    assert (tmp_path / "deep" / "t8.md").read_text().startswith("| Source")


def test_report_tables_on_unround_numbers_a_score_on_the_threshold_and_a_one_class_test_set(tmp_path):
    """Values with more than three decimals (each table's rounding), a test score exactly at the validation
    threshold (called fake), a model that calls nothing fake, and a one-class test set (AUC "n/a")."""
    rng = np.random.default_rng(11)
    frame = pd.DataFrame({"label": ["real"] * 20 + ["fake"] * 20, "source": ["cam"] * 20 + ["gan"] * 20})
    val_scores = np.round(rng.uniform(0, 1, 40) * 0.6 + np.r_[np.zeros(20), np.full(20, 0.3)], 6)
    result = evaluate.evaluate_scores("M", frame, val_scores, frame, val_scores[::-1].copy(), n_boot=40, seed=2)
    test_scores = val_scores[::-1].copy()
    test_scores[25] = result["threshold"]  # exactly on it: >= calls it fake
    result = evaluate.evaluate_scores("M", frame, val_scores, frame, test_scores, n_boot=40, seed=2)
    assert result["threshold"] != round(result["threshold"], 3)
    y, pred = (frame.label == "fake").to_numpy().astype(int), (test_scores >= result["threshold"]).astype(int)
    row = evaluate.table5_model_comparison([result]).iloc[0]
    for column, value in (("Precision", skm.precision_score(y, pred)), ("Recall", skm.recall_score(y, pred)),
                          ("F1", skm.f1_score(y, pred)), ("Threshold (val)", result["threshold"])):
        assert row[column] == round(value, 3), column
    report = evaluate.table7_class_report(result, frame, test_scores)
    assert report.columns.tolist() == ["Class", "Model", "precision", "recall", "f1", "support"]
    report = report.set_index("Class")
    assert report.at["fake", "recall"] == round(skm.recall_score(y, pred), 3)
    assert report.at["fake", "f1"] == round(skm.f1_score(y, pred), 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an undefined precision is reported as 0, without a warning
        nothing_fake = evaluate.table7_class_report(dict(result, threshold=2.0), frame, test_scores).set_index("Class")
    assert nothing_fake.at["fake", "precision"] == 0 and nothing_fake.at["fake", "recall"] == 0
    # only real images, all called real: both classes still get a row
    only_real = evaluate.table7_class_report(dict(result, threshold=2.0), frame[:20], test_scores[:20]).set_index("Class")
    assert only_real.at["fake", "support"] == 0 and only_real.at["real", "support"] == 20
    table8 = evaluate.table8_per_source([result]).set_index("Source")
    gan = next(s for s in result["per_source"] if s["source"] == "gan")  # against every real image
    assert table8.at["gan", "M AUC"] == f"{gan['auc']:.3f} [{gan['auc_lo']:.3f}, {gan['auc_hi']:.3f}]"
    only_fakes = evaluate.evaluate_scores("F", frame[20:], val_scores[20:], frame[20:], test_scores[20:], n_boot=10)
    assert evaluate.table8_per_source([only_fakes]).at[0, "F AUC"] == "n/a"  # one class: no AUC
    assert table8.at["gan", "M accuracy"] == f"{gan['accuracy']:.3f} [{gan['accuracy_lo']:.3f}, {gan['accuracy_hi']:.3f}]"
    predictions = pd.concat([frame.assign(model=m, score=test_scores + shift) for m, shift in (("z", 0.0), ("a", 0.1))])
    pairwise = evaluate.pairwise_auc_table(predictions, n_boot=60, seed=4)
    assert pairwise.model.tolist() == ["z", "a"]  # the order the models come in, not sorted
    auc, low, high = stats.auc_ci(y, test_scores, 60, 4)
    assert pairwise.iloc[0]["gan"] == f"{auc:.3f} [{low:.3f}, {high:.3f}]"
    evaluate.save_table(table8.reset_index(), tmp_path / "a" / "b" / "t8")
    assert (tmp_path / "a" / "b" / "t8.md").read_text().endswith("|\n")


def test_auc_ci_is_the_auc_with_its_bootstrap_interval_and_nan_for_one_class():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 60)
    s = rng.normal(y * 0.8, 1.0)
    auc, low, high = stats.auc_ci(y, s, n_boot=200, seed=5)
    assert auc == pytest.approx(roc_auc_score(y, s))
    assert (low, high) == stats.bootstrap_ci(y, s, "auc", n_boot=200, seed=5)
    assert low < auc < high
    assert all(np.isnan(stats.auc_ci(np.zeros(5), np.arange(5.0))))


def _score_test_interval(hits: int, total: int, level: float) -> tuple[float, float]:
    """Wilson's interval by its definition, not its formula: every p0 the score test does not reject,
    |hits/total - p0| <= z * sqrt(p0 (1 - p0) / total), found by bisection on each side of hits/total."""
    from statistics import NormalDist

    z, p = NormalDist().inv_cdf(0.5 + level / 2), hits / total

    def accepted(p0):
        return abs(p - p0) <= z * (p0 * (1 - p0) / total) ** 0.5 + 1e-15

    def edge(inside, outside):
        for _ in range(100):
            middle = (inside + outside) / 2
            inside, outside = (middle, outside) if accepted(middle) else (inside, middle)
        return inside

    return edge(p, 0.0) if hits else 0.0, edge(p, 1.0) if hits < total else 1.0


@pytest.mark.parametrize("hits, total, level", [(0, 10, 0.95), (1, 10, 0.95), (5, 10, 0.95), (10, 10, 0.95),
                                                (113, 117, 0.95), (30, 400, 0.9), (7, 20, 0.99)])
def test_wilson_interval_inverts_the_score_test(hits, total, level):
    low, high = stats.wilson_ci(hits, total, level)
    expected = _score_test_interval(hits, total, level)
    assert (low, high) == pytest.approx(expected, abs=1e-9)
    assert low <= hits / total <= high
    if level == 0.95:
        assert stats.wilson_ci(hits, total) == (low, high)  # 95% is the default
    assert all(np.isnan(stats.wilson_ci(0, 0, level)))


def test_miss_controlled_threshold_bounds_every_fake_source():
    rng = np.random.default_rng(2)
    frame = pd.DataFrame({"label": ["fake"] * 400 + ["real"] * 100,
                          "source": ["easy_gan"] * 200 + ["hard_gan"] * 100 + ["mid_gan"] * 100 + ["cam"] * 100})
    scores = np.concatenate([rng.beta(6, 1, 200), rng.beta(3, 3, 100), rng.beta(4, 2, 100), rng.beta(1, 6, 100)])
    gans = ("easy_gan", "hard_gan", "mid_gan")
    for max_miss in (0.0, 0.05, 0.2):
        t = stats.miss_controlled_threshold(frame, scores, max_miss)
        missed = {src: float((scores[(frame.source == src).to_numpy()] < t).mean()) for src in gans}
        assert max(missed.values()) <= max_miss
        assert missed["hard_gan"] > max_miss - 0.02  # the hard generator sets it
    assert stats.miss_controlled_threshold(frame, scores) == stats.miss_controlled_threshold(frame, scores, 0.05)
    no_fakes = frame[frame.label == "real"]
    assert stats.miss_controlled_threshold(no_fakes, scores[300:]) == 1.0  # nothing to bound: calls nothing real


def test_fpr_controlled_threshold_default_and_bounds():
    frame = pd.DataFrame({"label": ["real"] * 4 + ["fake"] * 2, "source": ["cam"] * 4 + ["gan"] * 2})
    scores = np.array([0.1, 0.2, 0.3, 1.0, 0.9, 1.0])
    # a real photo at 1.0 (a saturated sigmoid) with no false positive allowed: just above 1, so it is not called fake
    assert stats.fpr_controlled_threshold(frame, scores, 0.0) == np.nextafter(1.0, 2.0)
    assert stats.fpr_controlled_threshold(frame, scores) == stats.fpr_controlled_threshold(frame, scores, 0.05)
    assert stats.fpr_controlled_threshold(frame, scores, 0.25) == pytest.approx(np.nextafter(0.3, 1))
    assert stats.fpr_controlled_threshold(frame[frame.label == "fake"], scores[4:]) == 0.0  # no real source


def test_auc_interval_options_and_single_class_answers():
    y, s = _scores(150, seed=4)
    auc = skm.roc_auc_score(y, s)
    assert stats.auc_ci(y, s) == stats.auc_ci(y, s, 1000, 0, 0.95)  # the defaults
    point, low, high = stats.auc_ci(y, s, n_boot=0)
    assert point == pytest.approx(auc) and np.isnan(low) and np.isnan(high)  # no bootstrap asked
    one = stats.auc_ci(y, s, n_boot=1, seed=3)  # one replicate: an interval of width 0 at that replicate
    assert one[1] == one[2] and not np.isnan(one[1])
    _, low50, high50 = stats.auc_ci(y, s, 400, 0, level=0.5)
    _, low95, high95 = stats.auc_ci(y, s, 400, 0, level=0.95)
    assert low95 < low50 <= auc <= high50 < high95  # the level is used
    single = stats.auc_ci(np.ones(6), np.linspace(0, 1, 6))
    assert len(single) == 3 and all(np.isnan(single))
    assert stats.bootstrap_ci(y, s, "auc") == stats.bootstrap_ci(y, s, "auc", 0.5, 1000, 0.95, 0)
    for y_one in (np.ones(6), np.zeros(6)):  # one class: no AUC, but an accuracy interval still exists
        assert all(np.isnan(stats.bootstrap_ci(y_one, np.linspace(0, 1, 6), "auc", n_boot=20)))
        low_acc, high_acc = stats.bootstrap_ci(y_one, np.linspace(0, 1, 6), "accuracy", 0.5, n_boot=20)
        assert 0 <= low_acc <= high_acc <= 1
    with pytest.raises(ValueError, match="unknown statistic 'median'"):
        stats.bootstrap_ci(y, s, "median")


def test_binary_metrics_when_nothing_is_called_fake_or_one_class_is_missing():
    y = np.array([0, 0, 1, 1])
    none_called = stats.binary_metrics(y, np.array([0.1, 0.2, 0.3, 0.4]), threshold=0.9)
    assert (none_called["precision"], none_called["recall"], none_called["f1"]) == (0.0, 0.0, 0.0)
    assert (none_called["tn"], none_called["fp"], none_called["fn"], none_called["tp"]) == (2, 0, 2, 0)
    reals_only = stats.binary_metrics(np.zeros(3), np.array([0.1, 0.2, 0.3]), threshold=0.5)
    assert (reals_only["tn"], reals_only["fp"], reals_only["fn"], reals_only["tp"]) == (3, 0, 0, 0)
    assert (reals_only["precision"], reals_only["recall"], reals_only["f1"]) == (0.0, 0.0, 0.0)  # nothing to find
    assert reals_only["accuracy"] == 1.0
    y, s = _scores(100, seed=6)
    assert stats.binary_metrics(y, s) == stats.binary_metrics(y, s, 0.5)  # the default threshold
    assert stats.bootstrap_ci(y, s, "accuracy", n_boot=50) == stats.bootstrap_ci(y, s, "accuracy", 0.5, 50)
