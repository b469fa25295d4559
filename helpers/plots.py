"""Report figures: data card, training curves, grids, ROC/PR, confusion matrices, per-source bars.

Every function returns a Matplotlib figure and, given ``path``, saves it (PNG, 120 dpi).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from sklearn import metrics as skm

LABEL_COLORS = {"real": "#2a9d8f", "fake": "#e76f51"}


def save_figure(fig: plt.Figure, path: str | Path | None) -> plt.Figure:
    """Save ``fig`` to ``path`` (if given) with a tight layout; return it."""
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120, bbox_inches="tight")
    return fig


def data_card(manifest: pd.DataFrame, split_frame: pd.DataFrame | None = None,
              path: str | Path | None = None) -> plt.Figure:
    """Counts by label and source (and split), image sizes, formats and load status."""
    fig, axes = plt.subplots(1, 4, figsize=(20, 4.5))
    counts = manifest.groupby(["source", "label"]).size().reset_index(name="images")
    sns.barplot(counts, x="source", y="images", hue="label", palette=LABEL_COLORS, ax=axes[0])
    axes[0].set_title("Images per source")
    for container in axes[0].containers:
        axes[0].bar_label(container, fontsize=8)
    if split_frame is not None:
        per_split = split_frame.groupby(["source", "split"]).size().unstack(fill_value=0)
        per_split = per_split.reindex(columns=[c for c in ("train", "val", "test") if c in per_split])
        per_split.plot.bar(stacked=True, ax=axes[1], colormap="viridis", rot=0)
        axes[1].set_title("Split by source (groups kept together)")
    else:
        axes[1].axis("off")
    ok = manifest[manifest["width"] > 0]
    sizes = ok.groupby(["width", "height"]).agg(n=("path", "size"),
                                                 sources=("source", lambda s: ", ".join(sorted(set(s)))))
    sizes = sizes.reset_index()
    axes[2].scatter(sizes["width"], sizes["height"], s=30 + 300 * sizes["n"] / sizes["n"].max(), alpha=0.6)
    for row in sizes.nlargest(8, "n").itertuples():
        axes[2].annotate(f"{row.sources} ({row.n})", (row.width, row.height), fontsize=7,
                         xytext=(4, 4), textcoords="offset points")
    axes[2].set(title="Image sizes (px), labelled by source", xlabel="width", ylabel="height")
    axes[2].margins(0.25)
    status = manifest.groupby(["source", "status"]).size().unstack(fill_value=0)
    status.plot.bar(stacked=True, ax=axes[3], rot=0,
                    color={"ok": "#8ab17d", "converted": "#e9c46a", "rejected": "#e63946"})
    formats = ", ".join(f"{f}: {n}" for f, n in manifest["format"].replace("", "unreadable")
                        .value_counts().items())
    axes[3].set_title(f"Load status ({formats})", fontsize=9)
    fig.suptitle(f"Data card: {len(manifest)} files, "
                 f"{int((manifest['status'] == 'rejected').sum())} rejected")
    fig.tight_layout()
    return save_figure(fig, path)


def training_history(history: pd.DataFrame, title: str, path: str | Path | None = None) -> plt.Figure:
    """Loss and AUC per epoch for train and validation, with stage boundaries marked."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, metric in zip(axes, ("loss", "auc")):
        ax.plot(history["epoch"], history[metric], "o-", label=f"train {metric}")
        ax.plot(history["epoch"], history[f"val_{metric}"], "s--", label=f"val {metric}")
        if "stage" in history:
            for _, rows in list(history.groupby("stage", sort=False))[1:]:
                ax.axvline(rows["epoch"].min() - 0.5, color="grey", ls=":")
                ax.text(rows["epoch"].min() - 0.4, ax.get_ylim()[1], "fine-tune", va="top", fontsize=8)
        ax.set(xlabel="epoch", title=metric)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)


def grid_heatmap(table: pd.DataFrame, rows: str, cols: str, title: str,
                 path: str | Path | None = None) -> plt.Figure:
    """Validation AUC over a two-parameter grid; the selected point is boxed."""
    pivot = table.pivot_table(index=rows, columns=cols, values="best_val_auc")
    fig, ax = plt.subplots(figsize=(1.6 * len(pivot.columns) + 2.5, 1.1 * len(pivot) + 1.5))
    sns.heatmap(pivot, annot=True, fmt=".3f", cmap="viridis", ax=ax, cbar_kws={"label": "best val AUC"})
    best = table.loc[table["selected"]].iloc[0]
    r, c = list(pivot.index).index(best[rows]), list(pivot.columns).index(best[cols])
    ax.add_patch(plt.Rectangle((c, r), 1, 1, fill=False, edgecolor="red", lw=3))
    ax.set_title(title)
    fig.tight_layout()
    return save_figure(fig, path)


def roc_pr_curves(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: str | Path | None = None,
                  title: str = "Test split") -> plt.Figure:
    """ROC and precision-recall curves for several models: ``{name: (y_true, scores)}``."""
    fig, (roc_ax, pr_ax) = plt.subplots(1, 2, figsize=(11, 4.5))
    for name, (y, s) in curves.items():
        fpr, tpr, _ = skm.roc_curve(y, s)
        roc_ax.plot(fpr, tpr, label=f"{name} (AUC {skm.roc_auc_score(y, s):.3f})")
        precision, recall, _ = skm.precision_recall_curve(y, s)
        pr_ax.plot(recall, precision, label=f"{name} (AP {skm.average_precision_score(y, s):.3f})")
    roc_ax.plot([0, 1], [0, 1], color="grey", ls=":")
    roc_ax.set(xlabel="false-positive rate", ylabel="true-positive rate", title="ROC")
    pr_ax.set(xlabel="recall (fake)", ylabel="precision (fake)", title="Precision-recall")
    for ax in (roc_ax, pr_ax):
        ax.legend(fontsize=8, loc="lower right" if ax is roc_ax else "lower left")
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)


def confusion_matrices(results: list[dict], path: str | Path | None = None) -> plt.Figure:
    """Test confusion matrices at each model's validation threshold."""
    fig, axes = plt.subplots(1, len(results), figsize=(4.2 * len(results), 3.8), squeeze=False)
    for ax, r in zip(axes[0], results):
        t = r["test"]
        matrix = np.array([[t["tn"], t["fp"]], [t["fn"], t["tp"]]])
        sns.heatmap(matrix, annot=True, fmt="d", cmap="Blues", cbar=False, ax=ax,
                    xticklabels=["real", "fake"], yticklabels=["real", "fake"])
        ax.set(xlabel="predicted", ylabel="true", title=f"{r['model']}\nthreshold {r['threshold']:.3f}")
    fig.tight_layout()
    return save_figure(fig, path)


def per_source_bars(results: list[dict], path: str | Path | None = None) -> plt.Figure:
    """Per-source AUC and accuracy with 95% CIs, one bar per model."""
    rows = [dict(model=r["model"], **s) for r in results for s in r["per_source"]]
    frame = pd.DataFrame(rows)
    frame["where"] = frame["label"] + "/" + frame["source"]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    models = list(dict.fromkeys(frame["model"]))
    width = 0.8 / max(len(models), 1)
    places = list(dict.fromkeys(frame["where"]))
    for ax, metric in zip(axes, ("auc", "accuracy")):
        for k, model in enumerate(models):
            sub = frame[frame["model"] == model].set_index("where").reindex(places)
            x = np.arange(len(places)) + k * width
            err = np.vstack([sub[metric] - sub[f"{metric}_lo"], sub[f"{metric}_hi"] - sub[metric]])
            ax.bar(x, sub[metric], width, yerr=np.nan_to_num(err), capsize=3, label=model)
        ax.set_xticks(np.arange(len(places)) + width * (len(models) - 1) / 2, places, rotation=20)
        ax.axhline(0.5, color="grey", ls=":")
        ax.set(ylim=(0, 1.05), title=f"Per-source {metric} (95% CI)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def image_samples(frame: pd.DataFrame, root: str | Path, per_source: int = 6, size: int = 128,
                  seed: int = 0, path: str | Path | None = None) -> plt.Figure:
    """A row of example images per label/source, loaded through the validated loader."""
    from helpers.data import load_image

    groups = list(frame.groupby(["label", "source"]))
    fig, axes = plt.subplots(len(groups), per_source, figsize=(1.8 * per_source, 1.9 * len(groups)),
                             squeeze=False)
    for row, ((label, source), members) in enumerate(groups):
        picked = members.sample(min(per_source, len(members)), random_state=seed)
        for col, ax in enumerate(axes[row]):
            ax.set_xticks([])
            ax.set_yticks([])
            if col < len(picked):
                loaded = load_image(Path(root) / picked.iloc[col]["path"], size=size)
                if loaded.ok:
                    ax.imshow(loaded.image)
        axes[row, 0].set_ylabel(f"{label}\n{source}", color=LABEL_COLORS.get(label, "black"))
    fig.suptitle("Examples per source")
    fig.tight_layout()
    return save_figure(fig, path)
