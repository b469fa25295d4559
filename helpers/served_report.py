"""What the served detector tells its users: the model card next to the model, and its targets table.

:func:`model_card` is written beside ``served.keras`` (:func:`helpers.served.save_served`);
:func:`targets_table` sets the served recipe's measurements on both leave-one-out protocols and
on test against the lab's targets for it.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from helpers.served import ServedRecord


def model_card(record: ServedRecord) -> str:
    """A short model card: recipe, operating point, per-source numbers on test, protocol results, limits."""
    lines = ["# Served detector — model card", "",
             f"Trained {record.created}; MobileNetV2 ({record.weights.get('source')} ImageNet weights), "
             f"{record.image_size} px, {record.train_seconds / 60:.1f} min of training.", "",
             "## Recipe", "", "```json", json.dumps(record.recipe, indent=2), "```", "",
             *([f"Every picture is re-encoded ({record.recipe['score_reencode']}) at its own resolution before the "
                "resize, as the numbers below were measured; an exported model expects that input.", ""]
               if record.recipe.get("score_reencode") else []),
             "## Operating point (chosen on validation)", "",
             *_rule_lines(record),
             f"- unsure in between, and when the image's features are farther from the training images than "
             f"{record.max_distance:.4f} (the {record.distance_quantile:.0%} quantile of validation images, "
             f"mean cosine distance to the {record.distance_k} nearest). An unsure answer says which of the two.", "",
             "Every answer comes with P(fake), the verdict and, for unsure, why.", "",
             f"Validation AUC {record.validation['auc']:.4f} (n = {record.validation['n']}); "
             f"test AUC {record.test_auc:.4f}.", "",
             "## Test split, per source", "",
             "| source | n | rate at the fake threshold [95% CI] | called fake | called real | unsure (unfamiliar) "
             "| definite answers right [95% CI] |",
             "|---|---:|---|---:|---:|---:|---|"]
    for r in record.test_rates:
        right = (f"{r['definite_accuracy']:.3f} [{r['definite_accuracy_lo']:.3f}, {r['definite_accuracy_hi']:.3f}]"
                 if "definite_accuracy" in r and r["definite_accuracy"] == r["definite_accuracy"] else "—")
        lines.append(f"| {r['label']}/{r['source']} | {r['n']} | {r['rate_name']} {r['rate']:.3f} "
                     f"[{r['rate_lo']:.3f}, {r['rate_hi']:.3f}] | {r['called_fake']:.3f} | {r['called_real']:.3f} | "
                     f"{r['unsure']:.3f} ({r['unsure_unfamiliar']:.3f}) | {right} |")
    for name, rows in record.protocols.items():
        if rows:
            table = pd.DataFrame(rows)
            lines += ["", f"## {name}", "", table.round(3).to_markdown(index=False)]
    lines += ["", "## Limits", "",
              f"- Trained on the face sample's sources ({_trained_on(record)}): other generators and other kinds "
              "of real photos are outside what was measured; the leave-one-out tables above are the best "
              "estimate of how it meets them.",
              "- Whole images are resized to a square; crops framed unlike the training faces score differently.",
              "- A score is not a probability of fakeness for a population with another fake share.",
              "- Exported TFLite/SavedModel files score one pass; the served answer averages the image and its "
              "mirror when the recipe says so." if record.tta_flip else
              "- Exported TFLite/SavedModel files give the same scores as the Keras model."]
    return "\n".join(lines) + "\n"


def _rule_lines(record: ServedRecord) -> list[str]:
    """How the operating point was chosen, in the card's words."""
    point = record.operating_point
    if getattr(point, "rule", "rates") == "coverage":
        return [f"- fake at P(fake) >= {point.fake_threshold:.4f}, real below {point.real_threshold:.4f}: the pair "
                f"whose definite answers are at least {point.min_definite_accuracy:.0%} right on every source's "
                "validation images with the fewest unsure answers for the worst-served source (so a real "
                f"source's false-positive rate is at most {1 - point.min_definite_accuracy:.0%} too);"]
    return [f"- fake at P(fake) >= {point.fake_threshold:.4f}: every real source's validation false-positive rate "
            f"<= {point.max_real_fpr:.0%};",
            f"- real below {point.real_threshold:.4f}: at most {point.max_fake_miss:.0%} of each fake source's "
            "validation images fall below it;"]


def _trained_on(record: ServedRecord) -> str:
    """The sources of the served detector's test split, by label."""
    rates = record.test_rates
    reals = sorted(r["source"] for r in rates if r["label"] == "real")
    fakes = sorted(r["source"] for r in rates if r["label"] == "fake")
    return f"real {', '.join(reals)}; fake {', '.join(fakes)}"


def targets_table(trained, bank, lorso: pd.DataFrame, logo: pd.DataFrame, rates: pd.DataFrame,
                  seed: int = 0) -> pd.DataFrame:
    """The served detector's targets next to what was measured on test, and whether each is met.

    ``lorso`` and ``logo`` are the leave-one-out tables of the served recipe; ``rates`` its per-source
    answers (:func:`helpers.served.serve_trained`). Where a protocol did not run, the row says
    "not measured". The targets: an unseen generator ranked at AUC >= 0.95 against the reals; an
    unseen real source's false-positive rate <= 5% with >= 80% of the fakes detected; in
    distribution >= 90% of each generator's images called fake, each real source's false-positive
    rate <= 5%, unsure <= 15% of every source, definite answers >= 95% right on every source;
    JPEG 50, half size and the format-shortcut re-encoding each within 0.02 AUC.
    """
    from helpers import protocols

    rows = []
    for r in lorso.itertuples():
        rows.append((f"leave out real {r.held_out}: its false-positive rate", "<= 0.05", r.fpr, 0.05, -1))
        rows.append((f"leave out real {r.held_out}: fakes detected", ">= 0.80", r.detection, 0.80, 1))
    for r in logo.itertuples():
        rows.append((f"leave out generator {r.held_out}: AUC", ">= 0.95", r.auc, 0.95, 1))
    for r in rates.itertuples():
        if r.label == "fake":
            rows.append((f"all sources: fake {r.source} called fake", ">= 0.90", r.called_fake, 0.90, 1))
        else:
            rows.append((f"all sources: real {r.source} false-positive rate", "<= 0.05", r.rate, 0.05, -1))
        rows.append((f"all sources: {r.label} {r.source} unsure", "<= 0.15", r.unsure, 0.15, -1))
        rows.append((f"all sources: {r.label} {r.source} definite answers right", ">= 0.95",
                     getattr(r, "definite_accuracy", np.nan), 0.95, 1))
    grid = protocols.robustness_grid(trained, bank, ("jpeg:50", "scale:0.5", "recode:256"), n_boot=50,
                                     seed=seed).set_index("perturbation")
    for variant, name in (("jpeg:50", "JPEG quality 50"), ("scale:0.5", "half size"), ("recode:256", "format shortcut")):
        rows.append((f"{name}: |AUC change|", "<= 0.02", abs(float(grid.loc[variant, "auc_drop"])), 0.02, -1))
    table = pd.DataFrame(rows, columns=["target", "goal", "measured", "bound", "direction"])
    met = np.where(table.direction > 0, table.measured >= table.bound, table.measured <= table.bound)
    table["met"] = pd.Series(met, dtype=object).where(table.measured.notna(), "not measured")
    return table.drop(columns=["bound", "direction"])
