"""Embeddings: the detector's last hidden layer -> UMAP (2-D) -> HDBSCAN clusters.

The plot places image thumbnails at their UMAP coordinates, each bordered by its cluster's
colour, drawn from a blue colour map for real images and a red one for fakes; the purity
table tells whether clusters follow the label or only the source.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib import patheffects
from matplotlib.offsetbox import AnnotationBbox, OffsetImage
from sklearn.metrics import adjusted_rand_score

from helpers.plots import save_figure, styled

if TYPE_CHECKING:  # Keras is imported where a model is used: clustering alone (notebook 07's exercise) needs none
    import keras


def embedding_model(model: keras.Model) -> keras.Model:
    """A model that outputs the detector's last hidden Dense layer (the input of its prediction)."""
    import keras

    dense = [layer for layer in model.layers
             if isinstance(layer, keras.layers.Dense) and layer.name != "prediction"]
    if not dense:
        raise ValueError("the model has no hidden Dense layer before its prediction")
    return keras.Model(model.inputs, dense[-1].output, name="embedding")


def hidden_embeddings(model: keras.Model, dataset) -> np.ndarray:
    """The detector's last hidden Dense layer for every image of a (non-shuffled) dataset (what UMAP
    projects). Not :func:`helpers.features.extract_features`, which pools the backbone's output."""
    return np.asarray(embedding_model(model).predict(dataset, verbose=0))


# UMAP's numba kernels for exact neighbours (fewer than 4,096 points) and the fuzzy graph are compiled in
# every new process, not cached: a fit of 160 points took 18 s on 2 CPU cores, 2 s once they were cached
# (benchmarks/README.md, "UMAP's compiled kernels"). numba's own on-disk cache (next to the module, or in
# the user's cache folder) keeps them for the next process; the kernels, and so the results, are the same.
_UMAP_KERNELS = (("umap.utils", "fast_knn_indices"), ("umap.umap_", "smooth_knn_dist"),
                 ("umap.umap_", "compute_membership_strengths"))


def _cache_umap_kernels() -> list[str]:
    """Turn on numba's on-disk cache for UMAP's kernels; returns the names of those cached (none where
    the installed UMAP has other names or numba finds no writable cache folder: they compile as before)."""
    import importlib

    from numba.core.caching import NullCache

    cached = []
    for module_name, name in _UMAP_KERNELS:
        kernel = getattr(importlib.import_module(module_name), name, None)
        try:
            if isinstance(kernel._cache, NullCache):
                kernel.enable_caching()
        except (AttributeError, RuntimeError):  # not a numba dispatcher, or no cache folder to write
            continue
        cached.append(f"{module_name}.{name}")
    return cached


def umap_hdbscan(features: np.ndarray, n_neighbors: int = 15, min_dist: float = 0.1,
                 min_cluster_size: int = 15, seed: int = 42) -> tuple[np.ndarray, np.ndarray]:
    """Project features to 2-D with UMAP and cluster the projection with HDBSCAN.

    Returns ``(embedding (n, 2), cluster labels (n,))``; label -1 is HDBSCAN's noise.
    """
    import hdbscan
    import umap

    _cache_umap_kernels()
    n_neighbors = max(2, min(n_neighbors, len(features) - 1))
    reducer = umap.UMAP(n_components=2, n_neighbors=n_neighbors, min_dist=min_dist, random_state=seed)
    embedding = reducer.fit_transform(np.asarray(features, dtype=np.float32))
    clusterer = hdbscan.HDBSCAN(min_cluster_size=max(2, min(min_cluster_size, len(features) // 2)))
    return embedding, clusterer.fit_predict(embedding)


def cluster_purity(frame: pd.DataFrame, clusters: np.ndarray) -> pd.DataFrame:
    """Per cluster: size, counts by label and source, majority label and its purity.

    A final ``all`` row gives the adjusted Rand index of the clusters against the labels and
    against the sources (noise points included as their own cluster).
    """
    data = frame[["label", "source"]].reset_index(drop=True).assign(cluster=np.asarray(clusters))
    by_label = pd.crosstab(data["cluster"], data["label"]).reindex(columns=["real", "fake"], fill_value=0)
    by_source = pd.crosstab(data["cluster"], data["source"])
    table = pd.concat([by_label, by_source.add_prefix("src:")], axis=1)
    table.insert(0, "size", by_label.sum(axis=1))
    table["majority"] = by_label.idxmax(axis=1)
    table["label_purity"] = (by_label.max(axis=1) / table["size"]).round(3)
    table["source_purity"] = (by_source.max(axis=1) / table["size"]).round(3)
    table = table.reset_index().rename(columns={"cluster": "cluster"})
    table["cluster"] = table["cluster"].map(lambda c: "noise" if c == -1 else str(c))
    summary = {"cluster": "all", "size": len(data),
               "label_purity": round(float((by_label.max(axis=1)).sum() / len(data)), 3),
               "source_purity": round(float(by_source.max(axis=1).sum() / len(data)), 3),
               "ARI_label": round(adjusted_rand_score(data["label"], data["cluster"]), 3),
               "ARI_source": round(adjusted_rand_score(data["source"], data["cluster"]), 3)}
    return pd.concat([table, pd.DataFrame([summary])], ignore_index=True)


def _cluster_colors(clusters: np.ndarray, labels: np.ndarray) -> list:
    """A colour per point: its cluster's shade in Blues (real) or Reds (fake); grey for noise."""
    ids = sorted(set(int(c) for c in clusters if c >= 0))
    shade = {c: 0.45 + 0.5 * (k / max(len(ids) - 1, 1)) for k, c in enumerate(ids)}
    colors = []
    for cluster, label in zip(clusters, labels):
        if cluster < 0:
            colors.append((0.6, 0.6, 0.6, 1.0))
        else:
            colors.append(plt.get_cmap("Reds" if label == "fake" else "Blues")(shade[int(cluster)]))
    return colors


@styled
def thumbnail_scatter(embedding: np.ndarray, clusters: np.ndarray, frame: pd.DataFrame,
                      thumbnails: np.ndarray | None = None, max_thumbnails: int = 250, seed: int = 0,
                      path: str | Path | None = None) -> plt.Figure:
    """UMAP scatter: points (left) and image thumbnails bordered by cluster colour (right)."""
    labels = frame["label"].to_numpy()
    colors = _cluster_colors(clusters, labels)
    fig, (ax_points, ax_thumbs) = plt.subplots(1, 2, figsize=(16, 7.5))
    for label, marker in (("real", "o"), ("fake", "^")):
        keep = labels == label
        ax_points.scatter(embedding[keep, 0], embedding[keep, 1], c=np.array(colors)[keep], s=14,
                          marker=marker, label=f"{label} ({int(keep.sum())})", edgecolors="none")
    placed: list[np.ndarray] = []
    spread = np.ptp(embedding, axis=0) + 1e-9
    for cluster in sorted(set(clusters) - {-1}):  # at the member nearest the centre, beside its points
        members = embedding[clusters == cluster]
        centre = members[np.argmin(((members - members.mean(axis=0)) ** 2).sum(axis=1))]
        nudge = sum(1 for p in placed if (np.abs((p - centre) / spread) < 0.04).all())  # labels apart
        placed.append(centre)
        ax_points.annotate(str(cluster), centre, xytext=(6, 6 + 10 * nudge), textcoords="offset points",
                           fontsize=9, weight="bold",
                           path_effects=[patheffects.withStroke(linewidth=3, foreground="white")])
    ax_points.legend(loc="best")
    ax_points.set_title(f"UMAP of final-layer features: {len(set(clusters) - {-1})} HDBSCAN clusters\n"
                        "(blues: real, reds: fake, grey: noise)")
    ax_thumbs.scatter(embedding[:, 0], embedding[:, 1], s=2, c="lightgrey")
    if thumbnails is not None and len(thumbnails):
        rng = np.random.default_rng(seed)
        chosen = rng.choice(len(thumbnails), min(max_thumbnails, len(thumbnails)), replace=False)
        zoom = 24.0 / thumbnails.shape[1]
        for k in chosen:
            box = OffsetImage(thumbnails[k].astype(np.uint8), zoom=zoom)
            ax_thumbs.add_artist(AnnotationBbox(box, embedding[k], frameon=True, pad=0.15,
                                                bboxprops=dict(edgecolor=colors[k], lw=2)))
    ax_thumbs.set_title("Thumbnails bordered by cluster colour")
    for ax in (ax_points, ax_thumbs):
        ax.set_xlabel("UMAP 1")
        ax.set_ylabel("UMAP 2")
    fig.tight_layout()
    return save_figure(fig, path)
