"""The figures a reader meets: human names everywhere, and every legend off the data.

Each figure is drawn from small frames built here; the checks read what Matplotlib laid out (every text
artist, every legend's and axes' extent on the canvas), not the code that placed them.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from helpers import plots  # noqa: E402

SOURCES = [("ffhq", "real"), ("wildfaces", "real"), ("sd15", "fake"), ("stylegan2", "fake")]
MODELS = ["MobileNetV2 frozen head", "improved, fine-tuned 100%"]


def test_names_for_a_reader():
    assert plots.source_name("sd21") == "SD 2.1"
    assert plots.source_name("ffhq vs sd15") == "FFHQ vs SD 1.5"
    assert plots.source_name("ffhq+wildfaces") == "FFHQ+wild faces"
    assert plots.source_name("newsource") == "newsource"  # not listed: shown as it is
    assert plots.recipe_name("improved, fine-tuned 100%") == "served detector (fine-tuned)"
    assert plots.recipe_name("MobileNetV2 · ela") == "MobileNetV2 · ELA input"
    assert plots.recipe_name("Custom CNN (2 conv) · none") == "Custom CNN (2 conv) · plain input"
    assert plots.recipe_name("A · B · denoise") == "A · B · denoised input"  # only the last part is a preprocessing
    assert plots.value_name("no_glasses") == "no glasses"


def _annotations() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for source, label in SOURCES:
        for _ in range(20):
            rows.append(dict(source=source, label=label, glasses=rng.choice(["glasses", "no_glasses", "unknown"]),
                             expression=rng.choice(["negative", "neutral", "positive", "unknown"])))
    return pd.DataFrame(rows)


def _per_attribute() -> pd.DataFrame:
    rows = []
    for model in MODELS:
        for attribute, values in (("glasses", ["glasses", "no_glasses"]), ("gender", ["female", "male"])):
            for value in values:
                rows.append(dict(model=model, attribute=attribute, value=value, n=50, accuracy=0.95,
                                 accuracy_lo=0.9, accuracy_hi=0.99))
    return pd.DataFrame(rows)


def _balance() -> pd.DataFrame:
    return pd.DataFrame([dict(attribute="glasses", value=v, available_share=a, target_share=0.5, sampled_share=s)
                         for v, a, s in (("glasses", 0.06, 0.2), ("no_glasses", 0.94, 0.8))])


def _results() -> list[dict]:
    per_source = [dict(source=s, label=label, auc=0.97, auc_lo=0.95, auc_hi=0.99, accuracy=0.96, accuracy_lo=0.93,
                       accuracy_hi=0.98) for s, label in SOURCES]
    return [dict(model=m, per_source=per_source) for m in MODELS]


def _curves() -> dict:
    rng = np.random.default_rng(1)
    y = np.r_[np.zeros(200), np.ones(200)]
    # near-perfect curves hug the top-left corner and the top edge: a legend inside the axes would cover them
    return {f"MobileNetV2 · {p}": (y, y * 3 + rng.normal(size=400)) for p in ("none", "ela", "denoise")}


FIGURES = {
    "attributes": lambda: plots.attribute_distribution(_annotations(), ["glasses", "expression"]),
    "balance": lambda: plots.balance_chart(_balance()),
    "per_attribute": lambda: plots.per_attribute_bars(_per_attribute()),
    "per_source": lambda: plots.per_source_bars(_results()),
    "roc_pr": lambda: plots.roc_pr_curves(_curves()),
}


def _texts(fig: plt.Figure) -> list[str]:
    return [t.get_text() for t in fig.findobj(matplotlib.text.Text) if t.get_text()]


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_figure_speaks_human_names(name):
    fig = FIGURES[name]()
    texts = " | ".join(_texts(fig))
    for raw in ("sd15", "stylegan2", "wildfaces", "ffhq", "no_glasses", "_share", "· none", "· ela", "100%"):
        assert raw not in texts, (name, raw, texts)
    plt.close(fig)


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_every_legend_is_off_the_data(name):
    fig = FIGURES[name]()
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legends = [a.get_legend() for a in fig.axes if a.get_legend() is not None] + list(fig.legends)
    assert legends, name
    for legend in legends:
        box = legend.get_window_extent(renderer)
        for ax in fig.axes:
            assert not box.overlaps(ax.get_window_extent(renderer)), (name, ax.get_title())
            # nor over an axis label: the legend sits below the tick labels and the x label
            label = ax.xaxis.label
            if label.get_text():
                assert not box.overlaps(label.get_window_extent(renderer)), (name, label.get_text())
    plt.close(fig)


def test_one_y_label_for_panels_that_share_it():
    fig = plots.attribute_distribution(_annotations(), ["glasses", "expression"])
    shown = [ax.get_ylabel() for ax in fig.axes]
    assert shown.count("source") <= 1
    plt.close(fig)


def test_history_counts_whole_epochs():
    history = pd.DataFrame(dict(epoch=[1, 2, 3], loss=[1.0, 0.7, 0.6], val_loss=[0.9, 0.8, 0.85],
                                auc=[0.6, 0.7, 0.75], val_auc=[0.7, 0.72, 0.71]))
    fig = plots.training_history(history, "history")
    fig.canvas.draw()
    for ax in fig.axes:
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
    assert [ax.get_title() for ax in fig.axes] == ["loss", "AUC"]
    plt.close(fig)


def test_panel_titles_do_not_run_into_each_other():
    """Long recipe names with their ECE and temperature: each panel's title stays clear of its neighbours'."""
    from helpers import protocol_plots

    recipes = ["report", "improved", "improved, fine-tuned 100%"]
    bins = pd.DataFrame([dict(recipe=r, scores=s, confidence=c, fraction_fake=c) for r in recipes
                         for s in ("raw", "temperature-scaled") for c in (0.1, 0.5, 0.9)])
    summaries = [dict(recipe=r, ece_raw=0.103, ece_scaled=0.04, temperature=2.13) for r in recipes]
    fig = protocol_plots.reliability_diagram(bins, summaries)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    titles = [ax.title.get_window_extent(renderer) for ax in fig.axes]
    for left, right in zip(titles, titles[1:]):
        assert left.x1 < right.x0, (left, right)
    plt.close(fig)
