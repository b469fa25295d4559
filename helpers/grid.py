"""The report's hyper-parameter grids (Tables 3 and 4), naive or on cached features.

:func:`grid_table` runs a grid the ``naive`` way (a full model per point, trained on images) or
``cached`` (:func:`cached_grid_search`: the frozen backbone's features are computed once, then
only heads are trained). Both seed every point identically and train on the same batches, so
they agree up to float round-off (``benchmarks/bench_grid_cache.py`` measures it).

The cached path also avoids Keras's fixed cost per point (building and tracing a model, about
2 s on 2 cores, more than training a head on a few thousand feature vectors): points that differ
only in learning rate or epoch budget share one compiled head, reset to its initial weights,
optimizer state and random-generator state before each point; points that differ only in their
epoch budget share one run, each reading its prefix of the per-epoch history.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import keras
import pandas as pd
import tensorflow as tf

from helpers import atomic
from helpers.features import cached_dataset, extract_features, head_model
from helpers.train import ReusableFit, fit_detector

SHARED_KEYS = ("learning_rate", "epochs")  # settings that do not change a model's layers


def _row(point: dict, history: pd.DataFrame, seconds: float) -> dict:
    best = int(history["val_auc"].idxmax())
    last = history.iloc[-1]
    return {**point, "epochs_run": len(history), "best_val_auc": float(history.at[best, "val_auc"]),
            "best_epoch": best + 1, "final_val_accuracy": float(last["val_accuracy"]),
            "final_train_loss": float(last["loss"]), "seconds": round(seconds, 1)}


def _finish(rows: list[dict], out_dir: Path, name: str) -> pd.DataFrame:
    out_dir.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame(rows)
    table["selected"] = table.index == table["best_val_auc"].idxmax()
    atomic.write_csv(out_dir / f"{name}.csv", table)
    atomic.write_json(out_dir / f"{name}.json", table.to_dict("records"), indent=2)
    return table


def grid_points(grid: dict[str, list]) -> list[dict]:
    """Every combination of the grid's values, in the order of its keys."""
    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def grid_search(build_model: Callable[[dict], keras.Model], grid: dict[str, list],
                train_data: Callable[[], tf.data.Dataset], val_ds: tf.data.Dataset, out_dir: str | Path, name: str,
                default_epochs: int = 3, patience: int = 100, verbose: int = 0, seed: int = 42) -> pd.DataFrame:
    """Train one fresh model per grid point (the naive path) and tabulate validation results.

    ``grid`` maps ``learning_rate``, ``dropout``, ``epochs`` (any subset) to value lists;
    ``build_model(point)`` returns a fresh uncompiled model; ``train_data()`` a fresh training
    dataset. Every point starts from the same random state (``seed``) and a new dataset, so it
    sees the same batches whatever points ran before it. Writes ``<name>.csv`` and ``<name>.json``
    into ``out_dir`` and returns the table, the best row flagged ``selected``.
    """
    out_dir = Path(out_dir)
    rows = []
    for point in grid_points(grid):
        keras.backend.clear_session()
        keras.utils.set_random_seed(seed)
        model = build_model(point)
        epochs = int(point.get("epochs", default_epochs))
        keras.utils.set_random_seed(seed)  # the dataset's shuffle seeds, as in the shared path
        train_ds = train_data()
        result = fit_detector(model, train_ds, val_ds, epochs, float(point["learning_rate"]),
                              out_dir / "grid_models", f"{name}_{len(rows)}", patience, verbose)
        rows.append(_row(point, result.history, result.seconds))
        result.model_path.unlink(missing_ok=True)
        print(f"{name} {point}: best val AUC {result.best_val_auc:.4f} ({result.seconds:.0f}s)")
    return _finish(rows, out_dir, name)


def shared_grid_search(build_model: Callable[[dict], keras.Model], grid: dict[str, list],
                       train_data: Callable[[], tf.data.Dataset], val_ds: tf.data.Dataset, out_dir: str | Path, name: str,
                       default_epochs: int = 3, patience: int = 100, verbose: int = 0,
                       seed: int = 42) -> pd.DataFrame:
    """:func:`grid_search` with one compiled model per architecture (see the module's docstring):
    the same table, without rebuilding and re-tracing a model at every point."""
    out_dir = Path(out_dir)
    points = grid_points(grid)
    rows: dict[int, dict] = {}
    groups: dict[tuple, list[int]] = {}
    for i, point in enumerate(points):
        groups.setdefault(tuple((k, v) for k, v in point.items() if k not in SHARED_KEYS), []).append(i)
    for members in groups.values():
        keras.backend.clear_session()
        keras.utils.set_random_seed(seed)
        trainer = ReusableFit(build_model(points[members[0]]))
        runs: dict[float, list[int]] = {}
        for i in members:
            runs.setdefault(float(points[i]["learning_rate"]), []).append(i)
        for learning_rate, budget_members in runs.items():
            budgets = {i: int(points[i].get("epochs", default_epochs)) for i in budget_members}
            keras.utils.set_random_seed(seed)
            result = trainer.fit(train_data(), val_ds, max(budgets.values()), learning_rate, patience)
            for i, budget in budgets.items():
                prefix = result.history.iloc[:budget]
                rows[i] = _row(points[i], prefix, result.seconds * len(prefix) / len(result.history))
                print(f"{name} {points[i]}: best val AUC {rows[i]['best_val_auc']:.4f} ({rows[i]['seconds']:.1f}s)")
    return _finish([rows[i] for i in range(len(points))], out_dir, name)


def cached_grid_search(build_model, grid: dict[str, list], train_frame: pd.DataFrame, val_frame: pd.DataFrame,
                       root: str | Path, image_size: int, out_dir: str | Path, name: str, batch_size: int = 32,
                       default_epochs: int = 3, cache_dir: str | Path | None = None, seed: int = 42,
                       preprocessing: str = "none", build_head=None) -> pd.DataFrame:
    """:func:`grid_search` on cached features: same table, same selection rule.

    ``build_model(point)`` returns a fresh detector whose backbone is frozen (its weights must not
    depend on the point) and, for a like-for-like grid, no augmentation. Features of the training
    and validation rows are extracted once; each grid point then trains only its head, from the
    same random state and in the same batch order as the naive path (:func:`shared_grid_search`).
    The table gains ``feature_seconds`` (the one-off extraction, 0 when read from ``cache_dir``).
    With ``build_head(point)`` (e.g. :func:`helpers.models.build_head`), points skip building the
    backbone: heads are seeded per layer, so they start from the same weights either way.
    """
    keras.backend.clear_session()
    probe = build_model({k: v[0] for k, v in grid.items()})
    keras.utils.set_random_seed(seed)  # as the naive path does before making its datasets
    train_cache = extract_features(probe, train_frame, root, image_size, batch_size, False, preprocessing, cache_dir)
    val_cache = extract_features(probe, val_frame, root, image_size, batch_size, False, preprocessing, cache_dir)
    val_ds = cached_dataset(val_cache, batch_size)
    make_head = build_head or (lambda point: head_model(build_model(point)))
    table = shared_grid_search(make_head, grid, lambda: cached_dataset(train_cache, batch_size, shuffle=True, seed=seed),
                               val_ds, out_dir, name, default_epochs=default_epochs,
                               seed=seed)
    table["feature_seconds"] = round(float(train_cache["seconds"] + val_cache["seconds"]), 1)
    atomic.write_csv(Path(out_dir) / f"{name}.csv", table)
    return table


def grid_table(method: str, build_model: Callable[[dict], keras.Model], grid: dict[str, list],
               train_frame: pd.DataFrame, val_frame: pd.DataFrame, root: str | Path, image_size: int,
               out_dir: str | Path, name: str, batch_size: int = 32, default_epochs: int = 3,
               cache_dir: str | Path | None = None, seed: int = 42,
               build_head: Callable[[dict], keras.Model] | None = None) -> pd.DataFrame:
    """The report's grids (Tables 3 and 4) the ``naive`` way (a full model per point, on images) or
    ``cached`` (heads on frozen features computed once: :func:`cached_grid_search`)."""
    from helpers.pipeline import labels_of, load_array, make_dataset

    keras.utils.set_random_seed(seed)  # the shuffle order of both paths depends on the global seed too
    if method == "cached":
        return cached_grid_search(build_model, grid, train_frame, val_frame, root, image_size, out_dir, name,
                                  batch_size, default_epochs, cache_dir, seed, build_head=build_head)
    if method != "naive":
        raise ValueError(f"grid method must be 'cached' or 'naive', not {method!r}")
    images = load_array(train_frame, root, image_size)  # decoded once, as uint8
    labels = labels_of(train_frame).astype("float32")

    def train_data() -> tf.data.Dataset:  # a new dataset per point: the same batches whatever ran before
        return (tf.data.Dataset.from_tensor_slices((images, labels))
                .shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
                .batch(batch_size).map(lambda x, y: (tf.cast(x, tf.float32), y)))

    val_ds = make_dataset(val_frame, root, image_size, batch_size)
    return grid_search(build_model, grid, train_data, val_ds, out_dir, name, default_epochs=default_epochs, seed=seed)
