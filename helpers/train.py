"""Training: Adam + binary cross-entropy, best-validation-AUC checkpoints, and the report's grids.

:func:`fit_detector` trains one stage; :func:`train_two_stage` runs the frozen-head stage and
then fine-tuning (BatchNormalization frozen); :func:`grid_search` runs Table 3 / Table 4
style grids at whatever scale the notebook parameters give.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import keras
import pandas as pd
import tensorflow as tf

from helpers.models import prepare_finetune


@dataclass
class TrainResult:
    """Outcome of one training stage (or two, concatenated)."""

    model_path: Path
    history: pd.DataFrame
    best_val_auc: float
    best_epoch: int
    seconds: float
    notes: dict = field(default_factory=dict)

    def summary(self) -> dict:
        return dict(model_path=str(self.model_path), best_val_auc=round(self.best_val_auc, 4),
                    best_epoch=self.best_epoch, seconds=round(self.seconds, 1), **self.notes)


def compile_detector(model: keras.Model, learning_rate: float, label_smoothing: float = 0.0) -> None:
    """Compile with Adam, binary cross-entropy (optionally label-smoothed), ROC AUC and accuracy."""
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss=keras.losses.BinaryCrossentropy(label_smoothing=label_smoothing),
                  metrics=[keras.metrics.AUC(name="auc"), keras.metrics.BinaryAccuracy(name="accuracy")])


def fit_detector(model: keras.Model, train_ds: tf.data.Dataset, val_ds: tf.data.Dataset, epochs: int,
                 learning_rate: float, out_dir: str | Path, name: str, patience: int = 3,
                 verbose: int = 2, label_smoothing: float = 0.0) -> TrainResult:
    """Train one stage; keep the weights of the best validation-AUC epoch.

    Writes ``<name>.keras`` (best checkpoint) and ``<name>_log.csv`` (per-epoch metrics) into
    ``out_dir``; the model in memory ends with the best weights.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = out_dir / f"{name}.keras"
    compile_detector(model, learning_rate, label_smoothing)
    callbacks = [
        keras.callbacks.ModelCheckpoint(checkpoint, monitor="val_auc", mode="max", save_best_only=True),
        keras.callbacks.EarlyStopping(monitor="val_auc", mode="max", patience=patience),
        keras.callbacks.CSVLogger(str(out_dir / f"{name}_log.csv")),
    ]
    start = time.perf_counter()
    history = model.fit(train_ds, validation_data=val_ds, epochs=epochs, callbacks=callbacks,
                        verbose=verbose)
    seconds = time.perf_counter() - start
    frame = pd.DataFrame(history.history)
    frame.insert(0, "epoch", range(1, len(frame) + 1))
    best = int(frame["val_auc"].idxmax())
    if checkpoint.exists():
        model.load_weights(checkpoint)
    return TrainResult(checkpoint, frame, float(frame.at[best, "val_auc"]), best + 1, seconds)


def train_two_stage(model: keras.Model, train_ds: tf.data.Dataset, val_ds: tf.data.Dataset,
                    out_dir: str | Path, name: str, head_epochs: int, head_lr: float,
                    finetune_epochs: int, finetune_lr: float, trainable_fraction: float = 0.3,
                    patience: int = 3, verbose: int = 2,
                    freeze_batchnorm: bool = True, label_smoothing: float = 0.0) -> dict[str, TrainResult]:
    """Frozen-backbone head training, then fine-tuning of the backbone's top with BN frozen.

    Returns ``{"head": ..., "finetune": ...}``; checkpoints are ``<name>_head.keras`` and
    ``<name>_finetune.keras``. With ``finetune_epochs=0`` only the head stage runs.
    ``freeze_batchnorm=False`` is for a randomly initialised backbone only (see
    :func:`helpers.models.prepare_finetune`).
    """
    results = {"head": fit_detector(model, train_ds, val_ds, head_epochs, head_lr, out_dir,
                                    f"{name}_head", patience, verbose, label_smoothing)}
    if finetune_epochs > 0:
        unfrozen = prepare_finetune(model, trainable_fraction, freeze_batchnorm)
        result = fit_detector(model, train_ds, val_ds, finetune_epochs, finetune_lr, out_dir,
                              f"{name}_finetune", patience, verbose, label_smoothing)
        result.notes.update(unfrozen)
        results["finetune"] = result
    return results


def combined_history(results: dict[str, TrainResult]) -> pd.DataFrame:
    """One history frame over stages, with a ``stage`` column and a running epoch number."""
    frames, offset = [], 0
    for stage, result in results.items():
        frame = result.history.copy()
        frame["stage"] = stage
        frame["epoch"] = frame["epoch"] + offset
        offset = int(frame["epoch"].max())
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def grid_search(build_model: Callable[[dict], keras.Model], grid: dict[str, list],
                train_ds: tf.data.Dataset, val_ds: tf.data.Dataset, out_dir: str | Path, name: str,
                default_epochs: int = 3, patience: int = 100, verbose: int = 0, seed: int = 42) -> pd.DataFrame:
    """Train one frozen-backbone model per grid point and tabulate validation results.

    ``grid`` maps ``learning_rate``, ``dropout``, ``epochs`` (any subset) to value lists;
    ``build_model(point)`` returns a fresh uncompiled model. Every point starts from the same
    random state (``seed``), so points differ only by their settings. Writes ``<name>.csv`` and
    ``<name>.json`` into ``out_dir`` and returns the table, best row first flagged ``selected``.
    """
    out_dir = Path(out_dir)
    keys = list(grid)
    rows = []
    for values in itertools.product(*(grid[k] for k in keys)):
        point = dict(zip(keys, values))
        keras.backend.clear_session()
        keras.utils.set_random_seed(seed)
        model = build_model(point)
        epochs = int(point.get("epochs", default_epochs))
        result = fit_detector(model, train_ds, val_ds, epochs, float(point["learning_rate"]),
                              out_dir / "grid_models", f"{name}_{len(rows)}", patience, verbose)
        last = result.history.iloc[-1]
        rows.append({**point, "epochs_run": len(result.history), "best_val_auc": result.best_val_auc,
                     "best_epoch": result.best_epoch, "final_val_accuracy": float(last["val_accuracy"]),
                     "final_train_loss": float(last["loss"]), "seconds": round(result.seconds, 1)})
        result.model_path.unlink(missing_ok=True)
        print(f"{name} {point}: best val AUC {result.best_val_auc:.4f} ({result.seconds:.0f}s)")
    table = pd.DataFrame(rows)
    table["selected"] = table.index == table["best_val_auc"].idxmax()
    table.to_csv(out_dir / f"{name}.csv", index=False)
    (out_dir / f"{name}.json").write_text(json.dumps(table.to_dict("records"), indent=2))
    return table


def save_training_record(path: str | Path, arch: str, image_size: int, weights: dict,
                         results: dict[str, TrainResult], parameters: dict) -> dict:
    """Write what a training notebook did: weights source (and any warning), stages, parameters."""
    record = dict(arch=arch, image_size=image_size, weights=weights, parameters=parameters,
                  stages={stage: result.summary() for stage, result in results.items()})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, default=str))
    return record


def grid_table(method: str, build_model: Callable[[dict], keras.Model], grid: dict[str, list],
               train_frame: pd.DataFrame, val_frame: pd.DataFrame, root: str | Path, image_size: int,
               out_dir: str | Path, name: str, batch_size: int = 32, default_epochs: int = 3,
               cache_dir: str | Path | None = None, seed: int = 42,
               build_head: Callable[[dict], keras.Model] | None = None) -> pd.DataFrame:
    """The report's grids (Tables 3 and 4) the ``naive`` way (a full model per point, on images) or
    ``cached`` (heads on frozen features computed once: :func:`helpers.features.cached_grid_search`).

    Both train the same heads from the same random state on the same features in the same order
    (grids run without augmentation, so nothing random differs), so they agree up to float
    round-off; ``benchmarks/bench_grid_cache.py`` measures that they pick the same point and how
    much faster the cache is.
    """
    keras.utils.set_random_seed(seed)  # the shuffle order of both paths depends on the global seed too
    if method == "cached":
        from helpers.features import cached_grid_search

        return cached_grid_search(build_model, grid, train_frame, val_frame, root, image_size, out_dir, name,
                                  batch_size, default_epochs, cache_dir, seed, build_head=build_head)
    if method != "naive":
        raise ValueError(f"grid method must be 'cached' or 'naive', not {method!r}")
    from helpers.pipeline import make_dataset

    train_ds = make_dataset(train_frame, root, image_size, batch_size, shuffle=True, seed=seed)
    val_ds = make_dataset(val_frame, root, image_size, batch_size)
    return grid_search(build_model, grid, train_ds, val_ds, out_dir, name, default_epochs=default_epochs, seed=seed)
