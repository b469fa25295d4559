"""Report figures: data card, training curves, grids, ROC/PR, confusion matrices, per-source bars.

Every function returns a Matplotlib figure and, given ``path``, saves it (PNG, 120 dpi).
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np
import pandas as pd
import seaborn as sns
from sklearn import metrics as skm

from helpers import atomic

LABEL_COLORS = {"real": "#2a9d8f", "fake": "#e76f51"}
OUTSIDE = "outside the layout"  # the data card's label for entries beside real/ and fake/

# The one style of every figure the lab publishes: readable ticks and titles, legends without a box over
# the data, light grids. Applied by save_figure (and by ``styled`` to the figures built in a notebook).
STYLE = {"font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "xtick.labelsize": 9,
         "ytick.labelsize": 9, "legend.fontsize": 8, "legend.frameon": False, "axes.spines.top": False,
         "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.25, "figure.titlesize": 13,
         "savefig.dpi": 120}

# Human names for the sample's sources and the profiles' recipes (a name not listed is shown as it is)
SOURCE_NAMES = {"ffhq": "FFHQ", "unsplash": "Unsplash", "utkface": "UTKFace", "mebeauty": "MEBeauty",
                "wildfaces": "wild faces", "fairface": "FairFace", "stylegan1": "StyleGAN1",
                "stylegan2": "StyleGAN2", "sd15": "SD 1.5", "sd21": "SD 2.1", "reconstructed": "TAEF2 reconstr."}
RECIPE_NAMES = {"report": "as reported (frozen)", "all sources": "all sources (frozen)",
                "improved": "balanced + augmented (frozen)",
                "improved, fine-tuned 100%": "served detector (fine-tuned)",
                "improved, fine-tuned": "fine-tuned detector"}


def source_name(source: str) -> str:
    """A source's (or a ``a+b`` / ``a vs b`` combination's) name for a reader: ``sd21`` -> ``SD 2.1``."""
    return re.sub(r"[A-Za-z0-9_]+", lambda m: SOURCE_NAMES.get(m.group(0), m.group(0)), str(source))


PREPROCESSING_NAMES = {"none": "plain input", "ela": "ELA input", "denoise": "denoised input"}
METRIC_NAMES = {"auc": "AUC", "loss": "loss", "accuracy": "accuracy"}


def recipe_name(recipe: str) -> str:
    """A recipe's or a detector's name for a reader (``improved, fine-tuned 100%`` -> ``served detector
    (fine-tuned)``; ``MobileNetV2 · ela`` -> ``MobileNetV2 · ELA input``)."""
    recipe = str(recipe)
    if " · " in recipe:
        detector, _, preprocessing = recipe.rpartition(" · ")
        return f"{detector} · {PREPROCESSING_NAMES.get(preprocessing, preprocessing)}"
    return RECIPE_NAMES.get(recipe, recipe)


def value_name(value: object) -> str:
    """An attribute value or a column for a reader: ``no_glasses`` -> ``no glasses``."""
    return str(value).replace("_", " ")


def styled(function):
    """Run a figure-building function under :data:`STYLE`."""
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with plt.rc_context(STYLE):
            return function(*args, **kwargs)
    return wrapper


def legend_below(fig: plt.Figure, ax: plt.Axes, room: float = 0.06) -> None:
    """One legend for the whole figure, in a row under its panels (off the data), with ``ax``'s entries; the
    panels are laid out in what is left above ``room`` (a share of the figure's height)."""
    handles, names = ax.get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=len(names), bbox_to_anchor=(0.5, -0.02))
    fig.tight_layout(rect=(0, room, 1, 1))


def save_figure(fig: plt.Figure, path: str | Path | None) -> plt.Figure:
    """Save ``fig`` to ``path`` (if given) with a tight layout; return it."""
    if path is not None:
        with atomic.atomic_path(path) as staged, plt.rc_context(STYLE):
            fig.savefig(staged, dpi=120, bbox_inches="tight")
    return fig


@styled
def data_card(manifest: pd.DataFrame, split_frame: pd.DataFrame | None = None,
              path: str | Path | None = None) -> plt.Figure:
    """Counts by label and source (and split), image sizes, formats and load status."""
    outside = ~manifest["label"].isin(list(LABEL_COLORS))  # entries outside <label>/<source>/<file>
    manifest = manifest.assign(label=manifest["label"].where(~outside, OUTSIDE),
                               source=manifest["source"].where(manifest["source"] != "", "(no source)"))
    manifest = manifest.assign(shown=manifest["source"].map(source_name))
    order = (manifest.drop_duplicates("source").sort_values(["label", "source"], ascending=[False, True])["shown"]
             .tolist())
    fig, axes = plt.subplots(1, 4, figsize=(20, 4.8))
    counts = manifest.groupby(["shown", "label"]).size().reset_index(name="images")
    sns.barplot(counts, x="shown", y="images", hue="label", ax=axes[0], order=order, dodge=False,
                palette={**LABEL_COLORS, OUTSIDE: "#999999"}, hue_order=sorted(set(counts["label"])))
    axes[0].set(title="Images per source", xlabel="")
    for container in axes[0].containers:
        axes[0].bar_label(container, fontsize=8, labels=[f"{v:.0f}" if v > 0 else "" for v in container.datavalues])
    if split_frame is not None:
        per_split = split_frame.assign(shown=split_frame["source"].map(source_name))
        per_split = per_split.groupby(["shown", "split"]).size().unstack(fill_value=0)
        per_split = per_split.reindex(index=[o for o in order if o in per_split.index],
                                      columns=[c for c in ("train", "val", "test") if c in per_split])
        per_split.plot.bar(stacked=True, ax=axes[1], colormap="viridis", rot=0)
        axes[1].set(title="Split by source (groups kept together)", xlabel="")
    else:
        axes[1].axis("off")
    ok = manifest[manifest["width"] > 0]
    if len(ok):  # the longer side of each image, per source, on a log axis: no labels to pile up
        sns.stripplot(ok.assign(side=ok[["width", "height"]].max(axis=1)), x="shown", y="side", hue="label",
                      order=[o for o in order if o in set(ok["shown"])], palette={**LABEL_COLORS, OUTSIDE: "#999999"},
                      size=3, alpha=0.4, jitter=0.3, ax=axes[2], legend=False)
        axes[2].set_yscale("log")
    axes[2].set(title="Image size: longer side (px)", xlabel="", ylabel="pixels (log scale)")
    status = manifest.groupby(["shown", "status"]).size().unstack(fill_value=0)
    status = status.reindex(index=[o for o in order if o in status.index])
    status.plot.bar(stacked=True, ax=axes[3], rot=0,
                    color={"ok": "#8ab17d", "converted": "#e9c46a", "rejected": "#e63946"})
    formats = ", ".join(f"{f}: {n}" for f, n in manifest["format"].replace("", "unreadable")
                        .value_counts().items())
    axes[3].set(title=f"Load status ({formats})", xlabel="")
    for ax in axes[[0, 1, 3]]:  # headroom for a one-row legend above the bars
        if ax.get_legend() is not None:
            ax.set_ylim(0, ax.get_ylim()[1] * 1.2)
            ax.legend(loc="upper center", ncol=3, title=None)
    for ax in axes:
        ax.tick_params(axis="x", labelrotation=40)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")
    fig.suptitle(f"Data card: {len(manifest)} files, "
                 f"{int((manifest['status'] == 'rejected').sum())} rejected")
    if outside.any():  # what lies beside real/ and fake/ is named, not only counted
        listed = manifest[outside.to_numpy()].head(4)
        more = f" (+{int(outside.sum()) - len(listed)} more)" if outside.sum() > len(listed) else ""
        fig.text(0.01, 0.005, "Left out: " + "; ".join(f"{r.path}: {r.reason}" for r in listed.itertuples())[:300]
                 + more, fontsize=7, color="#7a0000")
    fig.tight_layout()
    return save_figure(fig, path)


@styled
def training_history(history: pd.DataFrame, title: str, path: str | Path | None = None) -> plt.Figure:
    """Loss and AUC per epoch for train and validation, with stage boundaries marked."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, metric in zip(axes, ("loss", "auc")):
        shown = METRIC_NAMES.get(metric, metric)
        ax.plot(history["epoch"], history[metric], "o-", label=f"training {shown}")
        ax.plot(history["epoch"], history[f"val_{metric}"], "s--", label=f"validation {shown}")
        if "stage" in history:
            for _, rows in list(history.groupby("stage", sort=False))[1:]:
                ax.axvline(rows["epoch"].min() - 0.5, color="grey", ls=":")
                ax.text(rows["epoch"].min() - 0.4, ax.get_ylim()[1], "fine-tune", va="top", fontsize=8)
        ax.set(xlabel="epoch", title=shown)
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)


@styled
def grid_heatmap(table: pd.DataFrame, rows: str, cols: str, title: str,
                 path: str | Path | None = None) -> plt.Figure:
    """Validation AUC over a two-parameter grid; the selected point is boxed."""
    pivot = table.pivot_table(index=rows, columns=cols, values="best_val_auc")
    fig, ax = plt.subplots(figsize=(1.6 * len(pivot.columns) + 2.5, 1.1 * len(pivot) + 1.5))
    sns.heatmap(pivot, annot=True, fmt=".3f", cmap="viridis", ax=ax, cbar_kws={"label": "best validation AUC"})
    ax.grid(False)
    best = table.loc[table["selected"]].iloc[0]
    r, c = list(pivot.index).index(best[rows]), list(pivot.columns).index(best[cols])
    ax.add_patch(plt.Rectangle((c, r), 1, 1, fill=False, edgecolor="red", lw=3))
    ax.set(title=title, xlabel=value_name(cols), ylabel=value_name(rows))
    fig.tight_layout()
    return save_figure(fig, path)


@styled
def roc_pr_curves(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: str | Path | None = None,
                  title: str = "Test split") -> plt.Figure:
    """ROC and precision-recall curves for several models: ``{name: (y_true, scores)}``."""
    fig, (roc_ax, pr_ax) = plt.subplots(1, 2, figsize=(11, 4.5))
    for name, (y, s) in curves.items():
        name = re.sub(r"\s*\(AUC [0-9.]+\)", "", recipe_name(name))  # the legend gives each number once
        fpr, tpr, _ = skm.roc_curve(y, s)
        roc_ax.plot(fpr, tpr, label=f"{name} (AUC {skm.roc_auc_score(y, s):.3f})")
        precision, recall, _ = skm.precision_recall_curve(y, s)
        pr_ax.plot(recall, precision, label=f"{name} (AP {skm.average_precision_score(y, s):.3f})")
    roc_ax.plot([0, 1], [0, 1], color="grey", ls=":")
    roc_ax.set(xlabel="false-positive rate", ylabel="true-positive rate", title="ROC")
    pr_ax.set(xlabel="recall (fake)", ylabel="precision (fake)", title="Precision-recall")
    for ax in (roc_ax, pr_ax):  # below the axes and their labels, off the curves
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=1)
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)


@styled
def confusion_matrices(results: list[dict], path: str | Path | None = None) -> plt.Figure:
    """Test confusion matrices at each model's validation threshold."""
    fig, axes = plt.subplots(1, len(results), figsize=(4.2 * len(results), 3.8), squeeze=False)
    for ax, r in zip(axes[0], results):
        t = r["test"]
        matrix = np.array([[t["tn"], t["fp"]], [t["fn"], t["tp"]]])
        sns.heatmap(matrix, annot=True, fmt="d", cmap="Blues", cbar=False, ax=ax,
                    xticklabels=["real", "fake"], yticklabels=["real", "fake"])
        ax.set(xlabel="predicted", ylabel="true", title=f"{recipe_name(r['model'])}\nthreshold {r['threshold']:.3f}")
        ax.grid(False)
    fig.tight_layout()
    return save_figure(fig, path)


@styled
def per_source_bars(results: list[dict], path: str | Path | None = None) -> plt.Figure:
    """Per-source AUC and accuracy with 95% CIs, one bar per model."""
    rows = [dict(model=r["model"], **s) for r in results for s in r["per_source"]]
    frame = pd.DataFrame(rows)
    frame["where"] = frame["source"].map(source_name) + " (" + frame["label"] + ")"
    frame["model"] = frame["model"].map(recipe_name)
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
        ax.set_xticks(np.arange(len(places)) + width * (len(models) - 1) / 2, places, rotation=35, ha="right")
        ax.axhline(0.5, color="grey", ls=":")
        ax.set(ylim=(0, 1.05), title=f"Per-source {METRIC_NAMES[metric]} (95% CI)")
    legend_below(fig, axes[0], room=0.05)
    return save_figure(fig, path)


@styled
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


@styled
def face_detections(faces_table: pd.DataFrame, root: str | Path, n: int = 12, seed: int = 0,
                    path: str | Path | None = None) -> plt.Figure:
    """Detected boxes and landmarks on examples from every source, and images with no face."""
    from helpers.data import load_image
    from helpers.faces import Face

    found = faces_table[faces_table["face_status"] == "face"]
    per_source = max(1, n // max(found["source"].nunique(), 1))
    picked = pd.concat([g.sample(min(len(g), per_source), random_state=seed) for _, g in found.groupby("source")]
                       or [found])
    missing = faces_table[faces_table["face_status"] != "face"]
    missing = missing.sample(min(len(missing), 6), random_state=seed) if len(missing) else missing
    picked = pd.concat([picked, missing])
    cols = 6
    rows = max(1, -(-len(picked) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 2.6, rows * 2.9), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, record in zip(axes.ravel(), picked.itertuples(index=False)):
        loaded = load_image(Path(root) / str(record.path))
        if not loaded.ok:
            ax.set_title(f"{source_name(record.source)}: unreadable", fontsize=8)
            continue
        ax.imshow(loaded.image)
        for item in json.loads(record.faces or "[]"):
            face = Face.from_dict(item)
            x, y, w, h = face.box
            ax.add_patch(plt.Rectangle((x, y), w, h, fill=False, color="#e9c46a", lw=1.5))
            for px, py in face.keypoints.values():
                ax.plot(px, py, "o", ms=2.5, color="#e76f51")
        faces = f"{record.n_faces} face" + ("" if record.n_faces == 1 else "s")
        title = f"{source_name(record.source)}: " + (faces if record.face_status == "face" else record.face_reason)
        ax.set_title(title, fontsize=8)
    fig.suptitle("02 · MTCNN detections (box + 5 landmarks); no-face images at the end")
    fig.tight_layout()
    return save_figure(fig, path)


@styled
def attribute_distribution(annotations: pd.DataFrame, attributes: list[str],
                           path: str | Path | None = None) -> plt.Figure:
    """Share of each attribute value per source (one panel per attribute)."""
    present = [a for a in attributes if a in annotations]
    fig, axes = plt.subplots(1, max(len(present), 1), figsize=(5 * max(len(present), 1), 4.4), squeeze=False,
                             sharey=True)
    for ax, attribute in zip(axes[0], present):
        shares = pd.crosstab(annotations["source"].map(source_name),
                             annotations[attribute].astype(str).map(value_name), normalize="index")
        shares.plot.barh(stacked=True, ax=ax, colormap="Set2", width=0.8)
        ax.set(title=attribute, xlabel="share of images", ylabel="", xlim=(0, 1))
        # one row of values under the panel, off the bars
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=len(shares.columns))
    fig.suptitle("02 · Attribute labels per source")
    fig.tight_layout()
    return save_figure(fig, path)


@styled
def balance_chart(report: pd.DataFrame, path: str | Path | None = None) -> plt.Figure:
    """Table 2 as a figure: available, target and sampled share of each attribute value."""
    attributes = report["attribute"].unique().tolist()
    fig, axes = plt.subplots(1, max(len(attributes), 1), figsize=(5 * max(len(attributes), 1), 4), squeeze=False)
    for ax, attribute in zip(axes[0], attributes):
        part = report[report["attribute"] == attribute].set_index("value")
        part.index = part.index.map(value_name)
        shares = part[["available_share", "target_share", "sampled_share"]].rename(
            columns={"available_share": "available", "target_share": "target", "sampled_share": "sampled"})
        shares.plot.bar(ax=ax, rot=0, color=["#adb5bd", "#264653", "#e9c46a"], legend=False)
        ax.set(title=attribute, ylim=(0, 1), ylabel="share", xlabel="")
    fig.suptitle("02 · Table 2: balanced sample, achieved vs target")
    legend_below(fig, axes[0][0])
    return save_figure(fig, path)


@styled
def per_attribute_bars(table: pd.DataFrame, path: str | Path | None = None) -> plt.Figure:
    """Tables 6/9 as a figure: accuracy (Wilson 95% CI) per attribute value, one panel per attribute."""
    attributes = table["attribute"].unique().tolist()
    fig, axes = plt.subplots(1, max(len(attributes), 1), figsize=(5 * max(len(attributes), 1), 4), squeeze=False)
    for ax, attribute in zip(axes[0], attributes):
        part = table[table["attribute"] == attribute]
        models = part["model"].unique().tolist()
        values = part["value"].unique().tolist()
        width = 0.8 / max(len(models), 1)
        for i, model in enumerate(models):
            rows = part[part["model"] == model].set_index("value").reindex(values)
            x = np.arange(len(values)) + i * width
            ax.bar(x, rows["accuracy"], width, label=recipe_name(model))
            ax.errorbar(x, rows["accuracy"], yerr=[rows["accuracy"] - rows["accuracy_lo"],
                                                   rows["accuracy_hi"] - rows["accuracy"]],
                        fmt="none", ecolor="black", capsize=2, lw=0.8)
        ax.set_xticks(np.arange(len(values)) + width * (len(models) - 1) / 2)
        ax.set_xticklabels([f"{value_name(v)}\n(n={int(part[part.value == v]['n'].iloc[0])})" for v in values],
                           fontsize=8)
        ax.set_ylim(0, 1.05)
        ax.set_title(attribute)
        ax.set_ylabel("test accuracy")
    fig.suptitle("05 · Tables 6 and 9: accuracy per attribute (95% CI)")
    legend_below(fig, axes[0][0])
    return save_figure(fig, path)
