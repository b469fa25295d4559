"""Model builders, weight resolution, and BatchNormalization staying frozen while fine-tuning."""

import h5py
import keras
import numpy as np
import pytest
from conftest import SHARED_FACES
from keras.src.legacy.saving import legacy_h5_format

from helpers import models

SHARED_WEIGHTS = SHARED_FACES.parents[1] / "weights"


@pytest.fixture(autouse=True)
def no_local_weights(tmp_path, monkeypatch):
    """Point every weight search folder at empty places unless a test says otherwise."""
    monkeypatch.setattr(models, "weights_search_dirs", lambda: [tmp_path / "nothing"])


def _offline(monkeypatch):
    from keras.src.utils import file_utils

    def refuse(*args, **kwargs):
        raise Exception("URL fetch failure: simulated offline machine")

    monkeypatch.setattr(file_utils, "get_file", refuse)


def test_mobilenetv2_architecture():
    model, info = models.build_mobilenetv2(image_size=96, weights=None, dropout=0.15, l2=1e-3)
    assert model.input_shape == (None, 96, 96, 3) and model.output_shape == (None, 1)
    assert info.source == "none"
    assert not models.backbone_of(model).trainable
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    assert [d.units for d in dense] == [256, 128, 64, 1]
    assert all(d.activation.__name__ == "relu" and d.kernel_regularizer is not None for d in dense[:3])
    assert dense[-1].activation.__name__ == "sigmoid"
    dropouts = [layer for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
    assert len(dropouts) == 3 and all(d.rate == 0.15 for d in dropouts)
    assert model.get_layer("augmentation") is not None
    assert model.get_layer("gap") is not None


def test_resnet50_architecture():
    model, _ = models.build_resnet50(image_size=64, weights=None)
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    assert [d.units for d in dense] == [512, 1] and not models.backbone_of(model).trainable
    assert model.output_shape == (None, 1)


def test_local_weights_are_found_offline(tmp_path, monkeypatch):
    folder = tmp_path / "weights"
    folder.mkdir()
    reference, _ = models.build_backbone("mobilenetv2", 96, weights=None)
    name = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
    with h5py.File(folder / name, "w") as handle:  # the Keras-2 layout of the official files
        legacy_h5_format.save_weights_to_hdf5_group(handle, reference)
    monkeypatch.setattr(models, "weights_search_dirs", lambda: [tmp_path / "empty", folder])
    _offline(monkeypatch)
    assert models.find_local_weights("mobilenetv2", 180) == folder / name
    model, info = models.build_mobilenetv2(image_size=96)
    assert info.source == "local" and info.path == str(folder / name) and not info.warning
    np.testing.assert_allclose(models.backbone_of(model).weights[0].numpy(), reference.weights[0].numpy())


def test_no_weights_offline_falls_back_loudly(monkeypatch, capsys):
    _offline(monkeypatch)
    with pytest.warns(RuntimeWarning, match="RANDOMLY INITIALISED"):
        model, info = models.build_resnet50(image_size=64)
    assert info.source == "none" and "simulated offline" in info.warning
    assert "NO IMAGENET WEIGHTS for resnet50" in capsys.readouterr().out
    assert info.to_dict()["warning"] == info.warning


def test_prepare_finetune_unfreezes_the_top_but_never_batchnorm():
    model, _ = models.build_mobilenetv2(image_size=96, weights=None)
    report = models.prepare_finetune(model, trainable_fraction=0.3)
    base = models.backbone_of(model)
    assert report["batchnorm_frozen"] and all(not bn.trainable for bn in models.batchnorm_layers(model))
    cut = report["unfrozen_from"]
    assert all(not layer.trainable for layer in base.layers[:cut])
    convs = [layer for layer in base.layers[cut:] if isinstance(layer, keras.layers.Conv2D)]
    assert convs and all(layer.trainable for layer in convs)
    assert report["trainable_params"] > 100_000


def _batchnorm_state(model):
    return [w.numpy().copy() for bn in models.batchnorm_layers(model)
            for w in (bn.moving_mean, bn.moving_variance)]


def test_batchnorm_statistics_do_not_move_during_finetuning(monkeypatch, eager_steps):
    """The Keras 3 pitfall: only trainable=False on BN layers keeps their statistics fixed.

    Uses the offline ImageNet weights when present: with random weights and BN statistics
    of mean 0 / variance 1 the activations vanish and no layer can learn, BN frozen or not.
    """
    if SHARED_WEIGHTS.is_dir():
        monkeypatch.setattr(models, "weights_search_dirs", lambda: [SHARED_WEIGHTS])
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (16, 64, 64, 3)).astype("float32") * 0.3 + 150  # a shifted distribution
    y = (rng.uniform(size=16) > 0.5).astype("float32")

    model, info = models.build_mobilenetv2(image_size=64, augment=False, weights="imagenet")
    models.prepare_finetune(model, trainable_fraction=0.5)
    before = _batchnorm_state(model)
    bn_ids = {id(w) for bn in models.batchnorm_layers(model) for w in bn.weights}
    assert not bn_ids & {id(w) for w in model.trainable_weights}
    kernel = models.backbone_of(model).get_layer("block_16_project").kernel
    assert id(kernel) in {id(w) for w in model.trainable_weights}
    kernel_before = kernel.numpy().copy()
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy")
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    assert all(np.array_equal(a, b) for a, b in zip(before, _batchnorm_state(model)))
    if info.source == "local":
        assert not np.array_equal(kernel_before, kernel.numpy()), "unfrozen layers must still learn"

    # Control: unfreezing the backbone without freezing BN lets the statistics drift.
    control, _ = models.build_mobilenetv2(image_size=64, weights=None, augment=False)
    models.backbone_of(control).trainable = True
    before = _batchnorm_state(control)
    control.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy")
    control.fit(x, y, epochs=1, batch_size=8, verbose=0)
    assert not all(np.array_equal(a, b) for a, b in zip(before, _batchnorm_state(control)))


def test_finetune_from_scratch_can_train_batchnorm():
    model, _ = models.build_resnet50(image_size=64, weights=None)
    report = models.prepare_finetune(model, trainable_fraction=1.0, freeze_batchnorm=False)
    assert not report["batchnorm_frozen"]
    assert all(bn.trainable for bn in models.batchnorm_layers(model))


def test_preprocessing_matches_keras_applications():
    x = np.random.default_rng(1).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    tf_mode = models.ImagenetPreprocess("tf")(x)
    caffe = models.ImagenetPreprocess("caffe")(x)
    np.testing.assert_allclose(tf_mode, keras.applications.mobilenet_v2.preprocess_input(x.copy()), atol=1e-5)
    np.testing.assert_allclose(caffe, keras.applications.resnet50.preprocess_input(x.copy()), atol=1e-4)


def test_save_and_load_round_trip(tmp_path):
    model, _ = models.build_mobilenetv2(image_size=64, weights=None)
    x = np.random.default_rng(2).uniform(0, 255, (3, 64, 64, 3)).astype("float32")
    model.save(tmp_path / "m.keras")
    loaded = models.load_detector(tmp_path / "m.keras")
    np.testing.assert_allclose(model.predict(x, verbose=0), loaded.predict(x, verbose=0), atol=1e-5)
    before, base, head = models.model_parts(loaded)
    assert [layer.name for layer in before] == ["preprocess"] and base.name == "backbone"
    assert head[-1].name == "prediction"


def test_unknown_architecture_is_rejected():
    with pytest.raises(ValueError, match="unknown architecture"):
        models.build_detector("vgg16")


@pytest.mark.parametrize("fraction", [0.3, 0.5])
def test_finetune_unfreezes_exactly_the_top_fraction(fraction):
    """Layer counts from Keras's own MobileNetV2, not from the report of the function under test."""
    reference = keras.applications.MobileNetV2(input_shape=(96, 96, 3), include_top=False, weights=None)
    n_layers = len(reference.layers)
    n_top = round(fraction * n_layers)
    model, _ = models.build_mobilenetv2(image_size=96, weights=None)
    report = models.prepare_finetune(model, trainable_fraction=fraction)
    base = models.backbone_of(model)
    assert len(base.layers) == n_layers == report["backbone_layers"]
    trainable = [i for i, layer in enumerate(base.layers) if layer.trainable]
    expected = [i for i in range(n_layers - n_top, n_layers)
                if not isinstance(base.layers[i], keras.layers.BatchNormalization)]
    assert trainable == expected
    top_names = {layer.name for layer in reference.layers[n_layers - n_top:]
                 if layer.weights and not isinstance(layer, keras.layers.BatchNormalization)}
    assert {layer.name for layer in base.layers if layer.trainable and layer.weights} == top_names
    assert report["unfrozen_layers_with_weights"] == len(top_names) and report["unfrozen_from"] == n_layers - n_top


def test_finetune_fraction_bounds():
    model, _ = models.build_mobilenetv2(image_size=64, weights=None)
    report = models.prepare_finetune(model, trainable_fraction=0.0)  # allowed: nothing of the base unfrozen
    assert report["unfrozen_layers_with_weights"] == 0 and not any(layer.trainable for layer in
                                                                     models.backbone_of(model).layers)
    for bad in (-0.1, 1.01, 1.5):
        with pytest.raises(ValueError, match=r"trainable_fraction must be in \[0, 1\]"):
            models.prepare_finetune(model, trainable_fraction=bad)
    layers = models.backbone_of(model).layers
    default = models.prepare_finetune(model)  # the default: the top 30% of the backbone's layers
    assert default["unfrozen_from"] == round(len(layers) * 0.7)
    assert [layer.trainable for layer in layers][:default["unfrozen_from"]] == [False] * default["unfrozen_from"]


def _tiny_detector(size: int = 32) -> keras.Model:
    """A detector with the real ones' layout (a nested "backbone" with BatchNormalization, a head), tiny."""
    base = keras.Sequential([keras.Input((size, size, 3)), keras.layers.Conv2D(4, 3), keras.layers.BatchNormalization(),
                             keras.layers.ReLU(), keras.layers.Conv2D(4, 3), keras.layers.BatchNormalization()],
                            name=models.BACKBONE_NAME)
    inputs = keras.Input((size, size, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(base(inputs))
    base.trainable = False
    return keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid", name="prediction")(pooled))


@pytest.mark.parametrize("source", ["none", "local"])
def test_the_training_step_of_notebooks_03_04_records_what_it_did(tmp_path, face_tree, source):
    """Without pretrained weights the whole backbone trains, BN included; with them the top fraction, BN frozen.
    ``head_epochs=0`` skips the head stage."""
    import json

    import pandas as pd

    from helpers import config, data, pipeline, splits, train

    cfg = config.RunConfig(run_name="r", data_root=face_tree, runs_root=tmp_path, image_size=32)
    split = splits.split_manifest(data.scan_folder(face_tree, progress=False), seed=0)
    datasets = pipeline.split_datasets(split, face_tree, 32, 8, seed=0)
    model, weights = _tiny_detector(), models.WeightsInfo("tiny", source)
    head_epochs = 0 if source == "none" else 1
    results, record = train.train_backbone_detector(
        model, weights, datasets, cfg, "tiny", batch_size=8, head_epochs=head_epochs, head_lr=1e-3,
        finetune_epochs=1, finetune_lr=1e-4, trainable_fraction=0.5, patience=1, input_kind="image", verbose=0)
    stages = ["finetune"] if source == "none" else ["head", "finetune"]
    assert list(results) == stages and list(record["stages"]) == stages
    assert json.loads(cfg.path("training", "tiny.json").read_text())["weights"]["source"] == source
    history = pd.read_csv(cfg.path("training", "tiny_history.csv"))
    assert history.stage.tolist() == stages and (tmp_path / "r" / "models" / "tiny_finetune.keras").exists()
    layers = models.backbone_of(model).layers
    if source == "none":  # nothing pretrained to keep
        assert record["parameters"]["from_scratch"] and record["parameters"]["trainable_fraction"] == 1.0
        assert all(layer.trainable for layer in layers)
    else:
        assert not record["parameters"]["from_scratch"] and record["parameters"]["trainable_fraction"] == 0.5
        # conv, BN, ReLU | conv, BN: the top half (round(2.5) = 2 layers frozen) trains, its BN stays frozen
        assert [layer.trainable for layer in layers] == [False, False, True, True, False]
    with pytest.raises(ValueError, match="nothing to train"):
        train.train_two_stage(model, datasets["train"], datasets["val"], tmp_path, "none", head_epochs=0,
                              head_lr=1e-3, finetune_epochs=0, finetune_lr=1e-4)


@pytest.mark.parametrize("source", ["none", "local"])
def test_fine_tuning_without_weights_can_be_cut_to_the_head_stage(tmp_path, face_tree, source):
    """``finetune_epochs_without_weights=0`` (the sample profile's offline ResNet50) trains only the head when the
    backbone has no pretrained weights, removes a fine-tuned checkpoint an earlier run left (notebook 05 would
    evaluate it as this run's), and changes nothing when the weights are there."""
    from helpers import config, data, pipeline, splits, train

    cfg = config.RunConfig(run_name="r", data_root=face_tree, runs_root=tmp_path, image_size=32)
    split = splits.split_manifest(data.scan_folder(face_tree, progress=False), seed=0)
    datasets = pipeline.split_datasets(split, face_tree, 32, 8, seed=0)
    stale = cfg.path("models", "tiny_finetune.keras")
    stale.write_bytes(b"an earlier run's checkpoint")
    model = _tiny_detector()
    results, record = train.train_backbone_detector(
        model, models.WeightsInfo("tiny", source), datasets, cfg, "tiny", batch_size=8, head_epochs=1, head_lr=1e-3,
        finetune_epochs=1, finetune_lr=1e-4, trainable_fraction=0.5, patience=1, input_kind="image",
        finetune_epochs_without_weights=0, verbose=0)
    if source == "none":
        assert list(results) == ["head"] and record["parameters"]["finetune_epochs"] == 0
        assert not stale.exists() and (tmp_path / "r" / "models" / "tiny_head.keras").exists()
        assert not any(layer.trainable for layer in models.backbone_of(model).layers)  # the random base stays frozen
    else:
        assert list(results) == ["head", "finetune"] and record["parameters"]["finetune_epochs"] == 1
        assert stale.stat().st_size > 100  # overwritten by this run's fine-tuned model


def test_the_residual_branch_sits_inside_the_backbone_and_trains_from_the_head_stage(tmp_path):
    """The noise-residual candidate (issue 14) keeps the detectors' layout (one nested ``backbone``, ``gap``, the
    head), so fine-tuning, serving and saving work unchanged. Its high-pass filter removes content; its convolutions
    train in the head stage while MobileNetV2 stays frozen; fine-tuning keeps every BatchNormalization frozen."""
    model, _ = models.build_mobilenetv2(image_size=64, weights=None, augment=False, residual=True)
    base = models.backbone_of(model)
    mobilenet = base.get_layer("mobilenetv2")
    assert tuple(base.output.shape[1:]) == (2, 2, 1280 + 128) and model.get_layer("gap").output.shape[-1] == 1408
    branch = [base.get_layer(f"residual_conv_{i}") for i in range(1, 6)]
    trainable = {id(w) for w in model.trainable_weights}
    assert not any(id(w) in trainable for w in mobilenet.weights)
    assert all(id(w) in trainable for layer in branch for w in layer.weights)
    residual = keras.Model(base.input, base.get_layer("noise_residual").output)
    flat = np.full((1, 64, 64, 3), 0.3, np.float32)                      # no content edge: nothing left
    checker = np.indices((64, 64)).sum(axis=0) % 2 * 2.0 - 1.0           # pixel-level pattern: kept
    checker = np.repeat(checker[None, ..., None], 3, axis=-1).astype(np.float32)
    assert np.abs(residual.predict(flat, verbose=0)).max() < 1e-6
    assert np.abs(residual.predict(checker, verbose=0)[0, 8:-8, 8:-8]).min() == pytest.approx(8 / 9, abs=1e-5)
    models.prepare_finetune(model, 1.0)
    assert mobilenet.trainable and all(layer.trainable for layer in branch)
    assert models.batchnorm_layers(model) and not any(bn.trainable for bn in models.batchnorm_layers(model))
    inference = models.inference_model(model)
    images = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3)).astype(np.float32)
    inference.save(tmp_path / "residual.keras")
    np.testing.assert_allclose(models.load_detector(tmp_path / "residual.keras").predict(images, verbose=0),
                               inference.predict(images, verbose=0), atol=1e-5)


def test_block_taps_pool_each_block_and_its_spread_beside_the_last_map(tmp_path, monkeypatch):
    """The intermediate-blocks candidate keeps the detectors' layout (one nested ``backbone``, ``gap``, the head):
    ``gap`` of its output is, block by block, the channel means of the activations and of their squares / 6 —
    computed here from the blocks themselves — and fine-tuning, BatchNormalization and saving work unchanged.
    ImageNet weights (the shared offline copy): a random base's activations are ~1e-4, too small to tell apart."""
    from helpers import block_taps

    monkeypatch.setattr(models, "weights_search_dirs", lambda: [SHARED_WEIGHTS])
    model, info = models.build_mobilenetv2(image_size=64, augment=False, block_taps=True)
    assert info.source == "local"
    base = models.backbone_of(model)
    names = ("out_relu", *block_taps.TAPPED_BLOCKS)
    widths = [int(base.get_layer(n).output.shape[-1]) for n in names]
    assert tuple(base.output.shape[1:]) == (2, 2, 2 * sum(widths))
    images = np.random.default_rng(1).integers(0, 256, (2, 64, 64, 3)).astype(np.float32)
    preprocessed = model.get_layer("preprocess")(images)
    pooled = np.asarray(keras.Model(base.input, model.get_layer("gap")(base.output))(preprocessed))
    maps = keras.Model(base.input, [base.get_layer(n).output for n in names])(preprocessed)
    start = 0
    for width, activations in zip(widths, maps):
        activations = np.asarray(activations, np.float64)
        assert activations.mean() > 0.05 and activations.std(axis=(1, 2)).mean() > 0.05  # a check that can fail
        np.testing.assert_allclose(pooled[:, start:start + width], activations.mean(axis=(1, 2)), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(pooled[:, start + width:start + 2 * width],
                                   (activations ** 2).mean(axis=(1, 2)) / 6, rtol=1e-4, atol=1e-6)
        start += 2 * width
    trainable = {id(w) for w in model.trainable_weights}
    assert base.weights and not any(id(w) in trainable for w in base.weights)  # the base starts frozen
    models.prepare_finetune(model, 1.0)
    assert models.batchnorm_layers(model) and not any(bn.trainable for bn in models.batchnorm_layers(model))
    trainable = {id(w) for w in model.trainable_weights}
    assert base.get_layer("Conv1").kernel.path and id(base.get_layer("Conv1").kernel) in trainable
    inference = models.inference_model(model)
    inference.save(tmp_path / "taps.keras")
    np.testing.assert_allclose(models.load_detector(tmp_path / "taps.keras").predict(images, verbose=0),
                               inference.predict(images, verbose=0), atol=1e-5)


def test_block_taps_refuse_a_size_whose_grids_do_not_nest_and_a_residual_branch_beside_them():
    """At 72 px MobileNetV2's 5-px ninth block is not a whole multiple of its last 3-px map: said, not mis-pooled; the
    two candidates are not stacked into one backbone silently."""
    with pytest.raises(ValueError, match="block_9_expand_relu.s 5-pixel grid is not a multiple of the last map.s 3"):
        models.build_mobilenetv2(image_size=72, weights=None, augment=False, block_taps=True)
    with pytest.raises(ValueError, match="choose one"):
        models.build_mobilenetv2(image_size=64, weights=None, augment=False, block_taps=True, residual=True)
