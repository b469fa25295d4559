"""Heatmaps, feature maps and the UMAP + HDBSCAN embedding."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import embed, explain, models


@pytest.fixture(scope="module")
def small_model():
    model, _ = models.build_mobilenetv2(image_size=64, weights=None)
    return model


def test_gradcam_shape_and_range(small_model):
    images = np.random.default_rng(0).uniform(0, 255, (3, 64, 64, 3)).astype("float32")
    heatmaps, scores = explain.gradcam(small_model, images)
    assert heatmaps.shape == (3, 64, 64) and scores.shape == (3,)
    assert heatmaps.min() >= 0.0 and heatmaps.max() <= 1.0
    np.testing.assert_allclose(scores, small_model.predict(images, verbose=0).reshape(-1), atol=1e-5)
    fake_maps, _ = explain.gradcam(small_model, images, target="fake")
    real_maps, _ = explain.gradcam(small_model, images, target="real")
    assert fake_maps.shape == real_maps.shape
    with pytest.raises(ValueError):
        explain.gradcam(small_model, images, target="other")
    blended = explain.overlay(images[0], heatmaps[0])
    assert blended.shape == (64, 64, 3) and blended.dtype == np.uint8


def test_gradcam_points_at_the_evidence():
    """A model whose score depends only on the top-left quadrant gets its heatmap there."""
    import keras

    model, _ = models.build_mobilenetv2(image_size=64, weights=None, augment=False)
    head = model.get_layer("prediction")
    # Replace the GAP head's view with a fixed rule: weight only the first feature channel.
    base = models.backbone_of(model)
    images = np.full((1, 64, 64, 3), 127.5, np.float32)
    images[0, :32, :32] = 255.0
    feats = base(images / 127.5 - 1.0, training=False).numpy()[0]
    channel = int(np.argmax(feats[0, 0] - feats[1:, 1:].mean(axis=(0, 1))))
    for layer in model.layers:
        if isinstance(layer, keras.layers.Dense) and layer is not head:
            units = layer.kernel.shape[1]
            kernel = np.zeros(layer.kernel.shape, np.float32)
            kernel[channel if layer.name == "dense_1" else 0, 0] = 1.0
            layer.kernel.assign(kernel)
            layer.bias.assign(np.zeros(units, np.float32))
    head.kernel.assign(np.ones(head.kernel.shape, np.float32))
    heatmaps, _ = explain.gradcam(model, images, target="fake")
    assert heatmaps[0, :32, :32].mean() > heatmaps[0, 32:, 32:].mean()


def test_feature_maps_for_chosen_layers(small_model):
    base = models.backbone_of(small_model)
    names = models.last_conv_layer_names(base, 2)
    image = np.random.default_rng(1).uniform(0, 255, (64, 64, 3)).astype("float32")
    maps = explain.feature_maps(small_model, image, names)
    assert list(maps) == names and all(m.ndim == 3 for m in maps.values())
    assert explain.plot_feature_maps(maps, image, channels=2) is not None


def test_umap_hdbscan_recovers_separated_groups():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 10, (3, 16))
    features = np.concatenate([c + rng.normal(0, 0.5, (60, 16)) for c in centres])
    truth = np.repeat(["a", "b", "c"], 60)
    embedding, clusters = embed.umap_hdbscan(features, n_neighbors=10, min_cluster_size=10, seed=0)
    assert embedding.shape == (180, 2)
    frame = pd.DataFrame({"label": np.where(truth == "a", "real", "fake"), "source": truth})
    table = embed.cluster_purity(frame, clusters)
    summary = table[table["cluster"] == "all"].iloc[0]
    assert summary["ARI_source"] > 0.9 and summary["source_purity"] > 0.95
    assert len(set(clusters) - {-1}) == 3
    # UMAP's kernels were read from (or written to) numba's on-disk cache, not compiled for this process only
    assert embed._cache_umap_kernels() == [f"{m}.{n}" for m, n in embed._UMAP_KERNELS]
    import importlib

    for module_name, name in embed._UMAP_KERNELS:
        kernel = getattr(importlib.import_module(module_name), name)
        assert sum(kernel.stats.cache_hits.values()) + sum(kernel.stats.cache_misses.values()) >= 1, name
        assert list(Path(kernel._cache.cache_path).glob(f"*{name}*.nbi")), name


def test_embedding_model_and_scatter(small_model, tmp_path):
    features_model = embed.embedding_model(small_model)
    assert features_model.output_shape == (None, 64)
    frame = pd.DataFrame({"label": ["real", "fake"] * 10, "source": ["x", "y"] * 10})
    emb = np.random.default_rng(2).normal(size=(20, 2))
    clusters = np.array([0, 1] * 9 + [-1, -1])
    thumbs = np.random.default_rng(3).integers(0, 255, (20, 16, 16, 3)).astype(np.uint8)
    embed.thumbnail_scatter(emb, clusters, frame, thumbs, path=tmp_path / "u.png")
    assert (tmp_path / "u.png").stat().st_size > 1000


def _brightness_detector(size: int = 32):
    """A hand-built detector whose logit is the mean brightness: backbone = 1x1 grey conv + 8x8 average pooling
    (a map of block brightness), head = global average pooling and a Dense unit with a positive weight."""
    import keras

    from helpers.models import BACKBONE_NAME

    inputs = keras.Input((size, size, 3))
    grey = keras.layers.Conv2D(1, 1, use_bias=False, name="grey")
    backbone = keras.Sequential([keras.Input((size, size, 3)), grey, keras.layers.AveragePooling2D(8)],
                                name=BACKBONE_NAME)
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = backbone(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    dense = keras.layers.Dense(1, activation="sigmoid", name="prediction")
    model = keras.Model(inputs, dense(x))
    grey.kernel.assign(np.full((1, 1, 3, 1), 1 / 3, np.float32))
    dense.kernel.assign(np.array([[4.0]], np.float32))
    dense.bias.assign(np.array([-1.0], np.float32))
    return model


def test_gradcam_peaks_where_each_image_of_a_batch_is_bright():
    """Per image of a batch: the map peaks in that image's bright quadrant and is scaled to 1 there, whatever the
    other images hold (a map normalised over the batch, or over one axis, fails the dim image)."""
    model = _brightness_detector()
    corners = [(slice(0, 16), slice(0, 16)), (slice(0, 16), slice(16, 32)), (slice(16, 32), slice(0, 16)),
               (slice(16, 32), slice(16, 32))]
    brightness = [250.0, 120.0, 200.0, 60.0]  # one dim image among bright ones
    images = np.full((4, 32, 32, 3), 20.0, np.float32)
    for image, (rows, cols), level in zip(images, corners, brightness):
        image[rows, cols] = level
    heatmaps, scores = explain.gradcam(model, images, target="fake")
    assert heatmaps.shape == (4, 32, 32)
    for heatmap, (rows, cols), level, score, image in zip(heatmaps, corners, brightness, scores, images):
        assert heatmap.max() == pytest.approx(1.0, abs=1e-5)
        y, x = np.unravel_index(np.argmax(heatmap), heatmap.shape)
        assert rows.start <= y < rows.stop and cols.start <= x < cols.stop
        # far from the bright quadrant the map is the background's share of the peak (a 4x4 map, resized)
        far_rows, far_cols = (slice(20, 28) if r.start == 0 else slice(4, 12) for r in (rows, cols))
        assert heatmap[far_rows, far_cols].mean() == pytest.approx(20.0 / level, abs=0.02)
        assert score == pytest.approx(1 / (1 + np.exp(-(4 * image.mean() / 255 - 1))), abs=1e-5)
