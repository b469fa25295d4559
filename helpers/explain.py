"""What the detector looks at: feature maps, Grad-CAM heatmaps and captioned prediction grids.

Grad-CAM here uses the backbone's last convolutional block (the feature maps that global
average pooling reads): each channel is weighted by the mean gradient of the chosen class
score, summed, passed through ReLU and scaled to [0, 1] per image.
"""

from __future__ import annotations

from pathlib import Path

import keras
import matplotlib.pyplot as plt
import numpy as np
import tensorflow as tf

from helpers.models import backbone_of, model_parts
from helpers.plots import recipe_name, save_figure, source_name, styled


def backbone_inputs(model: keras.Model, images: np.ndarray) -> tf.Tensor:
    """0..255 RGB images as the detector's backbone receives them (its preprocessing layers applied)."""
    before, _, _ = model_parts(model)
    x = tf.convert_to_tensor(np.asarray(images, dtype=np.float32))
    for layer in before:
        x = layer(x, training=False)
    return x


def feature_maps(model: keras.Model, image: np.ndarray, layer_names: list[str]) -> dict[str, np.ndarray]:
    """Activations ``(h, w, channels)`` of the named backbone layers for one image (0..255 RGB)."""
    base = backbone_of(model)
    probe = keras.Model(base.inputs, [base.get_layer(name).output for name in layer_names])
    outputs = probe(backbone_inputs(model, image[None]), training=False)
    if not isinstance(outputs, (list, tuple)):
        outputs = [outputs]
    return {name: np.asarray(out[0]) for name, out in zip(layer_names, outputs)}


@styled
def plot_feature_maps(maps: dict[str, np.ndarray], image: np.ndarray, channels: int = 8,
                      path: str | Path | None = None) -> plt.Figure:
    """The input image and the first ``channels`` channels of each layer's activation."""
    fig, axes = plt.subplots(len(maps), channels + 1, figsize=(1.7 * (channels + 1), 1.9 * len(maps)),
                             squeeze=False)
    for row, (name, activation) in enumerate(maps.items()):
        axes[row, 0].imshow(image.astype(np.uint8))
        axes[row, 0].set_title("input" if row == 0 else "", fontsize=8)
        axes[row, 0].set_ylabel(f"{name}\n{activation.shape[0]}x{activation.shape[1]}x{activation.shape[2]}",
                                fontsize=7)
        strongest = np.argsort(activation.mean(axis=(0, 1)))[::-1][:channels]
        for col, channel in enumerate(strongest, start=1):
            axes[row, col].imshow(activation[..., channel], cmap="viridis")
            axes[row, col].set_title(f"ch {channel}", fontsize=7)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("Feature maps (most active channels per layer)")
    fig.tight_layout()
    return save_figure(fig, path)


def gradcam(model: keras.Model, images: np.ndarray,
            target: str = "predicted") -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM heatmaps for a batch of 0..255 RGB images.

    Args:
        model: a detector from :mod:`helpers.models`.
        images: ``(n, size, size, 3)`` array.
        target: ``fake``, ``real`` or ``predicted`` (each image's predicted class).

    Returns:
        ``(heatmaps, scores)``: heatmaps ``(n, size, size)`` in [0, 1] and P(fake) ``(n,)``.
    """
    _, base, head = model_parts(model)
    x = backbone_inputs(model, images)
    with tf.GradientTape() as tape:
        conv = base(x, training=False)
        tape.watch(conv)
        y = conv
        for layer in head:
            y = layer(y, training=False)
        scores = y[:, 0]
    grads = tape.gradient(scores, conv)
    scores_np = scores.numpy()
    if target == "predicted":
        sign = np.where(scores_np >= 0.5, 1.0, -1.0)
    elif target in ("fake", "real"):
        sign = np.full(len(scores_np), 1.0 if target == "fake" else -1.0)
    else:
        raise ValueError(f"unknown target {target!r}")
    weights = tf.reduce_mean(grads, axis=(1, 2)) * sign[:, None]
    cam = tf.nn.relu(tf.einsum("nhwc,nc->nhw", conv, tf.cast(weights, conv.dtype)))
    peak = tf.reduce_max(cam, axis=(1, 2), keepdims=True)
    cam = tf.math.divide_no_nan(cam, peak)
    size = images.shape[1:3]
    heatmaps = tf.image.resize(cam[..., None], size, method="bilinear")[..., 0]
    return np.clip(heatmaps.numpy(), 0.0, 1.0), scores_np


def overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Blend a [0, 1] heatmap (jet colour map) over a 0..255 RGB image; returns uint8."""
    colored = plt.get_cmap("jet")(heatmap)[..., :3] * 255.0
    return np.clip((1 - alpha) * image + alpha * colored, 0, 255).astype(np.uint8)


@styled
def plot_heatmaps(images: np.ndarray, heatmaps: np.ndarray, scores: np.ndarray, labels: np.ndarray,
                  threshold: float, path: str | Path | None = None, title: str = "Grad-CAM") -> plt.Figure:
    """Rows of (image, heatmap overlay) pairs, captioned with truth and P(fake)."""
    n = len(images)
    cols = min(n, 4)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, 2 * cols, figsize=(3.2 * cols, 2.1 * rows), squeeze=False)
    for k in range(rows * cols):
        a, b = axes[k // cols, 2 * (k % cols)], axes[k // cols, 2 * (k % cols) + 1]
        a.axis("off")
        b.axis("off")
        if k >= n:
            continue
        a.imshow(images[k].astype(np.uint8))
        b.imshow(overlay(images[k], heatmaps[k]))
        truth = "fake" if labels[k] else "real"
        predicted = "fake" if scores[k] >= threshold else "real"
        a.set_title(f"true {truth}", fontsize=8)
        b.set_title(f"P(fake)={scores[k]:.2f} -> {predicted}", fontsize=8,
                    color="green" if truth == predicted else "red")
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)


@styled
def prediction_grid(images: np.ndarray, labels: np.ndarray, scores: np.ndarray, threshold: float,
                    sources: list[str] | None = None, cols: int = 6,
                    path: str | Path | None = None) -> plt.Figure:
    """Test images captioned with the predicted class: green when right, red when wrong."""
    n = len(images)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.1 * cols, 2.5 * rows), squeeze=False)
    for k, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if k >= n:
            continue
        ax.imshow(images[k].astype(np.uint8))
        predicted = "fake" if scores[k] >= threshold else "real"
        correct = predicted == ("fake" if labels[k] else "real")
        where = f"\n{source_name(sources[k])}" if sources is not None else ""
        ax.set_title(f"{predicted} ({scores[k]:.2f}){where}", fontsize=8,
                     color="green" if correct else "red")
    fig.suptitle(f"Test predictions at threshold {threshold:.3f} (green: correct, red: wrong)")
    fig.tight_layout()
    return save_figure(fig, path)


@styled
def gradcam_rows(rows: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]], labels: np.ndarray,
                 path: str | Path | None = None) -> plt.Figure:
    """One row per model: its (preprocessed) input with the Grad-CAM overlay, captioned with P(fake)."""
    n = len(labels)
    fig, axes = plt.subplots(max(len(rows), 1), n, figsize=(2.2 * n, 2.4 * max(len(rows), 1)), squeeze=False)
    for row, (name, images, heatmaps, scores) in enumerate(rows):
        for col in range(n):
            ax = axes[row, col]
            ax.imshow(overlay(images[col], heatmaps[col]))
            ax.set_xticks([])
            ax.set_yticks([])
            truth = "fake" if labels[col] else "real"
            ax.set_title(f"{truth}, P(fake)={scores[col]:.2f}", fontsize=7)
            if col == 0:
                ax.set_ylabel(recipe_name(name), fontsize=7)
    fig.suptitle("09 · Grad-CAM per CNN (evidence for the predicted class)")
    fig.tight_layout()
    return save_figure(fig, path)
