"""The served answers of a candidate trained on every source, from the scores it saved.

``served_recipe_ablation.py`` saves, for each candidate trained on every source, its validation and
test scores (``scores_<kind>_<recipe>.npz``, P(fake) as the candidate scores: re-encoding and flip
included). This reads them back with the run's split and gives, on test, what the served detector
would answer under both rules (thresholds from validation, :func:`helpers.served.choose_operating_point`):
per source, the shares called fake / unsure / real, how often a definite answer is right [95% CI],
and each generator's AUC against every real test image [95% CI]. The "unfamiliar" check (feature
distance) is not applied: it needs the model's features, and it can only turn definite answers into
"unsure", so the unsure shares here are lower bounds.

    .venv/bin/python benchmarks/served_answers_from_scores.py runs/experiments/block_taps/scores_*.npz
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from run_options import add_run_arguments

from helpers import config, served, splits
from helpers.pipeline import labels_of
from helpers.stats import auc_ci


def answers_table(frames: dict[str, pd.DataFrame], scores: dict[str, np.ndarray], n_boot: int = 1000,
                  seed: int = 42) -> pd.DataFrame:
    """Per rule and test source: shares called fake / unsure / real, definite answers right, AUC vs reals."""
    test = frames["test"]
    y = labels_of(test)
    reals = (test["label"] == "real").to_numpy()
    aucs = {}  # the same for both rules
    for fake in sorted(test.loc[~reals, "source"].unique()):
        keep = reals | (test["source"] == fake).to_numpy()
        aucs[fake] = auc_ci(y[keep], scores["test"][keep], n_boot, seed)
    parts = []
    for rule in served.ANSWER_RULES:
        point = served.choose_operating_point(frames["val"], scores["val"], rule=rule)
        rates = served.answer_rates(test, served.answer(point, scores["test"]), scores["test"], point)
        rates["auc_vs_reals"] = [aucs.get(s, (np.nan,) * 3)[0] for s in rates["source"]]
        rates["auc_vs_reals_lo"] = [aucs.get(s, (np.nan,) * 3)[1] for s in rates["source"]]
        rates["auc_vs_reals_hi"] = [aucs.get(s, (np.nan,) * 3)[2] for s in rates["source"]]
        parts.append(rates.assign(rule=rule, fake_threshold=point.fake_threshold, real_threshold=point.real_threshold,
                                  test_auc=auc_ci(y, scores["test"], 0)[0]))
    return pd.concat(parts, ignore_index=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scores", type=Path, help="scores_*.npz written by served_recipe_ablation.py")
    add_run_arguments(parser, size=False)
    args = parser.parse_args()
    cfg = config.load_run_config(args.run)
    split = splits.load_split(cfg.path("split.csv"))
    frames = {s: split[split["split"] == s].reset_index(drop=True) for s in ("val", "test")}
    with np.load(args.scores) as stored:
        scores = {s: stored[s] for s in ("val", "test")}
    table = answers_table(frames, scores, args.n_boot, cfg.seed)
    out = args.scores.with_name(args.scores.stem.replace("scores_", "answers_") + ".csv")
    table.to_csv(out, index=False)
    columns = ["rule", "source", "n", "called_fake", "unsure", "called_real", "definite_accuracy",
               "definite_accuracy_lo", "definite_accuracy_hi", "auc_vs_reals", "auc_vs_reals_lo", "auc_vs_reals_hi"]
    print(table[columns].round(3).to_string(index=False))
    print(table.groupby("rule")[["fake_threshold", "real_threshold", "test_auc"]].first().round(3).to_string())
    print(f"written: {out}")


if __name__ == "__main__":
    main()
