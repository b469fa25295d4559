"""Figures of the generalization protocols (notebook 08): the cross-source matrix, both leave-one-out
protocols, robustness and calibration; the style and the names are :mod:`helpers.plots`'.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from helpers.plots import recipe_name, save_figure, source_name, styled


@styled
def cross_source_heatmaps(matrix: pd.DataFrame, path: str | Path | None = None) -> plt.Figure:
    """One heatmap per recipe: rows = training set, columns = test pair, cells = AUC [95% CI]."""
    recipes = matrix["recipe"].unique().tolist()
    fig, axes = plt.subplots(1, len(recipes), figsize=(7 * len(recipes), 3.4), squeeze=False)
    for ax, recipe in zip(axes[0], recipes):
        part = matrix[matrix.recipe == recipe]
        part = part.assign(trained_on=part["trained_on"].map(source_name),
                           test_pair=part["test_pair"].map(lambda p: source_name(p).replace(" vs ", "\nvs ")))
        values = part.pivot(index="trained_on", columns="test_pair", values="auc")
        text = part.assign(cell=[f"{a:.2f}\n[{lo:.2f}, {hi:.2f}]" for a, lo, hi in zip(part.auc, part.auc_lo, part.auc_hi)])
        labels = text.pivot(index="trained_on", columns="test_pair", values="cell").loc[values.index, values.columns]
        sns.heatmap(values, annot=labels, fmt="", vmin=0.3, vmax=1.0, cmap="RdYlGn", cbar=False, ax=ax,
                    annot_kws={"fontsize": 8})
        ax.set_title(f"{recipe_name(recipe)}: test AUC")
        ax.tick_params(axis="x", labelrotation=0)
        ax.tick_params(axis="y", labelrotation=0)
        ax.grid(False)
        ax.set_xlabel("test pair (real vs fake)")
        ax.set_ylabel("trained on")
    fig.suptitle("08 · Cross-source generalization")
    fig.tight_layout()
    return save_figure(fig, path)


def _by_recipe(table: pd.DataFrame):
    """For a leave-one-out table: held-out names, the bar width, and per recipe (index, name, its rows in
    held-out order, bar positions)."""
    recipes = table["recipe"].unique().tolist()
    held = table["held_out"].unique().tolist()
    width = 0.8 / len(recipes)
    parts = [(i, recipe, table[table.recipe == recipe].set_index("held_out").reindex(held),
              np.arange(len(held)) + i * width) for i, recipe in enumerate(recipes)]
    return held, width, parts


@styled
def leave_one_out_bars(table: pd.DataFrame, path: str | Path | None = None) -> plt.Figure:
    """Held-out generator AUC (95% CI) per recipe, next to the mean AUC on the generators it saw."""
    fig, ax = plt.subplots(figsize=(7, 4))
    held, width, parts = _by_recipe(table)
    for i, recipe, part, x in parts:
        ax.bar(x, part.auc, width, label=f"{recipe_name(recipe)}: held-out generator")
        ax.errorbar(x, part.auc, yerr=[part.auc - part.auc_lo, part.auc_hi - part.auc], fmt="none", ecolor="k",
                    capsize=3, lw=0.8)
        ax.scatter(x, part.seen_generators_mean_auc, marker="_", s=300, color="k", zorder=3,
                   label="mean AUC on seen generators" if i == 0 else None)
    ax.axhline(0.5, ls=":", color="grey")
    ax.set_xticks(np.arange(len(held)) + width * (len(parts) - 1) / 2)
    ax.set_xticklabels([source_name(h) for h in held])
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("test AUC vs all real images")
    ax.set_title("08 · Leave one generator out")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2)
    return save_figure(fig, path)


@styled
def leave_one_real_source_out_plot(table: pd.DataFrame, max_fpr: float = 0.05,
                                   path: str | Path | None = None) -> plt.Figure:
    """Per held-out real source and recipe: its false-positive rate and the fakes' detection rate at the
    operating point chosen without it (Wilson 95% CIs), with the false-positive target as a line."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4), sharey=True)
    held, height, parts = _by_recipe(table)
    for _, recipe, part, y in parts:
        for ax, column in zip(axes, ("fpr", "detection")):
            spread = [np.clip(part[column] - part[f"{column}_lo"], 0, None),
                      np.clip(part[f"{column}_hi"] - part[column], 0, None)]
            ax.errorbar(part[column], y, xerr=spread, fmt="o", capsize=3, label=recipe_name(recipe))
    axes[0].axvline(max_fpr, ls="--", color="crimson", label=f"target {max_fpr:.0%}")
    axes[1].axvline(0.9, ls="--", color="crimson", label="target 90%")
    axes[0].set_yticks(np.arange(len(held)) + height * (len(parts) - 1) / 2)
    axes[0].set_yticklabels([source_name(h) for h in held])
    axes[0].set_xlabel("held-out real source: false-positive rate")
    axes[1].set_xlabel("all fake test images: detection rate")
    for ax in axes:
        ax.set_xlim(-0.02, 1.02)
    axes[0].legend(loc="upper center", bbox_to_anchor=(1.0, -0.15), ncol=4)
    fig.suptitle("08 · Leave one real source out (operating point chosen on validation without it)")
    return save_figure(fig, path)


@styled
def robustness_lines(grid: pd.DataFrame, path: str | Path | None = None) -> plt.Figure:
    """AUC (with CI) and accuracy at the validation threshold under each perturbation, per recipe."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 4))
    for recipe, part in grid.groupby("recipe", sort=False):
        x = np.arange(len(part))
        axes[0].errorbar(x, part.auc, yerr=[part.auc - part.auc_lo, part.auc_hi - part.auc], marker="o",
                         capsize=3, label=recipe_name(recipe))
        axes[1].plot(x, part.accuracy, marker="o", label=recipe_name(recipe))
    for ax, name in zip(axes, ("test AUC", "accuracy at the validation threshold")):
        labels = grid["perturbation"].unique().tolist()
        ax.set_xticks(np.arange(len(labels)))
        ax.set_xticklabels(labels, rotation=45, ha="right", fontsize=8)
        ax.set_ylabel(name)
        ax.set_ylim(0.3, 1.01)
    axes[0].legend(loc="lower left")
    fig.suptitle("08 · Robustness: JPEG quality, rescaling, blur")
    return save_figure(fig, path)


@styled
def reliability_diagram(bins: pd.DataFrame, summaries: list[dict], path: str | Path | None = None) -> plt.Figure:
    """Reliability diagrams (fraction fake vs mean P(fake)) before and after temperature scaling."""
    recipes = bins["recipe"].unique().tolist()
    fig, axes = plt.subplots(1, len(recipes), figsize=(5 * len(recipes), 4.5), squeeze=False)
    by_recipe = {s["recipe"]: s for s in summaries}
    for ax, recipe in zip(axes[0], recipes):
        ax.plot([0, 1], [0, 1], ls=":", color="grey")
        for name, part in bins[bins.recipe == recipe].groupby("scores"):
            ax.plot(part.confidence, part.fraction_fake, marker="o", label=name)
        s = by_recipe[recipe]
        ax.set_title(f"{recipe_name(recipe)}\nECE {s['ece_raw']:.3f} → {s['ece_scaled']:.3f} "
                     f"(T = {s['temperature']:.2f})")
        ax.set_xlabel("mean predicted P(fake)")
        ax.set_ylabel("fraction fake")
        ax.legend(loc="upper left")
    fig.suptitle("08 · Calibration on the test split (temperature fitted on validation)")
    fig.tight_layout()
    return save_figure(fig, path)
