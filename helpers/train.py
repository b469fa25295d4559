"""Training: Adam + binary cross-entropy, best-validation-AUC checkpoints, reusable compiled heads.

:func:`fit_detector` trains one stage; :func:`train_two_stage` runs the frozen-head stage and
then fine-tuning (BatchNormalization frozen); :func:`train_backbone_detector` is notebooks 03/04's step
(with the from-scratch rule and the run's record); :class:`ReusableFit` trains one compiled model again and
again from the same start (protocol folds, grid points). The grids live in :mod:`helpers.grid`.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import keras
import pandas as pd
import tensorflow as tf

from helpers import atomic, training_cache
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


def compile_detector(model: keras.Model, learning_rate: float, label_smoothing: float = 0.0,
                     ema_momentum: float = 0.0) -> None:
    """Compile with Adam, binary cross-entropy (optionally label-smoothed), ROC AUC and accuracy.

    ``ema_momentum`` > 0 keeps an exponential moving average of the weights (Polyak averaging:
    ``average = m * average + (1 - m) * weights`` after each step, the first step's weights to start).
    """
    optimizer = (keras.optimizers.Adam(learning_rate, use_ema=True, ema_momentum=ema_momentum) if ema_momentum > 0
                 else keras.optimizers.Adam(learning_rate))
    model.compile(optimizer=optimizer,
                  loss=keras.losses.BinaryCrossentropy(label_smoothing=label_smoothing),
                  metrics=[keras.metrics.AUC(name="auc"), keras.metrics.BinaryAccuracy(name="accuracy")])


def fit_detector(model: keras.Model, train_ds: tf.data.Dataset, val_ds: tf.data.Dataset, epochs: int,
                 learning_rate: float, out_dir: str | Path, name: str, patience: int = 3,
                 verbose: int = 2, label_smoothing: float = 0.0, ema_momentum: float = 0.0) -> TrainResult:
    """Train one stage; keep the weights of the best validation-AUC epoch.

    Writes ``<name>.keras`` (best checkpoint) and ``<name>_log.csv`` (per-epoch metrics) into
    ``out_dir``; the model in memory ends with the best weights. With ``ema_momentum`` > 0 the
    weights validated, checkpointed and kept are the moving average (:func:`compile_detector`).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = out_dir / f"{name}.keras"
    compile_detector(model, learning_rate, label_smoothing, ema_momentum)
    # The average goes into the model before validation and before the checkpoint callback (Keras's own order).
    callbacks = [keras.callbacks.SwapEMAWeights(swap_on_epoch=True)] if ema_momentum > 0 else []
    callbacks += [
        keras.callbacks.ModelCheckpoint(checkpoint, monitor="val_auc", mode="max", save_best_only=True),
        keras.callbacks.EarlyStopping(monitor="val_auc", mode="max", patience=patience),
        keras.callbacks.CSVLogger(str(out_dir / f"{name}_log.csv")),
    ]
    start = time.perf_counter()
    # shuffle=False: the datasets shuffle themselves (seeded); Keras ignores the flag for a tf.data.Dataset
    # but warns once per fit when it is left at its default (True), which cluttered every notebook
    history = model.fit(train_ds, validation_data=val_ds, epochs=epochs, callbacks=callbacks,
                        verbose=verbose, shuffle=False)
    result = _result(checkpoint, history, time.perf_counter() - start)
    if checkpoint.exists():
        model.load_weights(checkpoint)
    return result


def _result(path: Path, history: keras.callbacks.History, seconds: float) -> TrainResult:
    """A stage's outcome from Keras' history: per-epoch frame, best validation-AUC epoch (1-based)."""
    frame = pd.DataFrame(history.history)
    frame.insert(0, "epoch", range(1, len(frame) + 1))
    best = int(frame["val_auc"].idxmax())
    return TrainResult(path, frame, float(frame.at[best, "val_auc"]), best + 1, seconds)


class _KeepBestWeights(keras.callbacks.Callback):
    """Keep the weights of the best validation-AUC epoch in memory and restore them at the end."""

    def __init__(self) -> None:
        super().__init__()
        self.best, self.weights = -float("inf"), None

    def on_epoch_end(self, epoch, logs=None) -> None:
        value = (logs or {}).get("val_auc", float("nan"))
        if value > self.best:
            self.best, self.weights = value, self.model.get_weights()

    def on_train_end(self, logs=None) -> None:
        if self.weights is not None:
            self.model.set_weights(self.weights)


class ReusableFit:
    """One compiled model, trained again and again from the same starting point.

    Building and tracing a Keras model costs about 2 s on 2 cores, more than training a head on
    a few thousand feature vectors; many protocol folds and grid points train the same head
    architecture. Each :meth:`fit` puts the model back where it started (weights, dropout
    random-generator states, optimizer state), sets the learning rate and trains with the same
    rules as :func:`fit_detector` (best validation-AUC epoch kept, early stopping): the same
    numbers as a freshly built and seeded model, without the rebuild and re-trace.
    """

    def __init__(self, model: keras.Model, label_smoothing: float = 0.0) -> None:
        self.model = model
        self.initial = [v.numpy() for v in model.variables]
        self.label_smoothing = label_smoothing
        self.compiled = False

    def fit(self, train_ds: tf.data.Dataset, val_ds: tf.data.Dataset, epochs: int, learning_rate: float,
            patience: int, log_path: str | Path | None = None) -> TrainResult:
        """Train from the starting point; the model ends with its best weights (no checkpoint file).

        Seed the global random state (``keras.utils.set_random_seed``) before making ``train_ds``,
        as for a fresh model: the dataset's shuffles draw their seeds from it.
        """
        for variable, value in zip(self.model.variables, self.initial):
            variable.assign(value)
        if self.compiled:
            for variable in self.model.optimizer.variables:
                variable.assign(tf.zeros_like(variable))
            self.model.optimizer.learning_rate = learning_rate
        else:
            compile_detector(self.model, learning_rate, self.label_smoothing)
            self.compiled = True
        keep = _KeepBestWeights()
        callbacks = [keep, keras.callbacks.EarlyStopping(monitor="val_auc", mode="max", patience=patience)]
        if log_path:
            callbacks.append(keras.callbacks.CSVLogger(str(log_path)))
        start = time.perf_counter()
        history = self.model.fit(train_ds, validation_data=val_ds, epochs=epochs, callbacks=callbacks, verbose=0,
                                 shuffle=False)  # the dataset shuffles itself (see fit_detector)
        return _result(Path(log_path or ""), history, time.perf_counter() - start)


def train_two_stage(model: keras.Model, train_ds: tf.data.Dataset | Callable[[], tf.data.Dataset],
                    val_ds: tf.data.Dataset,
                    out_dir: str | Path, name: str, head_epochs: int, head_lr: float,
                    finetune_epochs: int, finetune_lr: float, trainable_fraction: float = 0.3,
                    patience: int = 3, verbose: int = 2,
                    freeze_batchnorm: bool = True, label_smoothing: float = 0.0,
                    ema_momentum: float = 0.0,
                    cache: training_cache.CacheSpec | None = None) -> dict[str, TrainResult]:
    """Frozen-backbone head training, then fine-tuning of the backbone's top with BN frozen.

    Returns ``{"head": ..., "finetune": ...}``; checkpoints are ``<name>_head.keras`` and
    ``<name>_finetune.keras``. With ``finetune_epochs=0`` only the head stage runs, with
    ``head_epochs=0`` only fine-tuning. ``freeze_batchnorm=False`` is for a randomly initialised
    backbone only (see :func:`helpers.models.prepare_finetune`). ``ema_momentum`` > 0: each stage
    keeps the moving average of its weights (:func:`fit_detector`). ``train_ds`` may be a function that
    makes the dataset, called only when training runs. ``cache``: keep this training in
    the trained-model cache, or read it back from there when it was done before with the same code,
    model, initial weights, data and settings (:mod:`helpers.training_cache`): the checkpoints, logs,
    results and the model's final weights are then what the training would give.
    """
    if head_epochs <= 0 and finetune_epochs <= 0:
        raise ValueError("nothing to train: head_epochs and finetune_epochs are both 0")
    settings = dict(head_epochs=head_epochs, head_lr=head_lr, finetune_epochs=finetune_epochs, finetune_lr=finetune_lr,
                    trainable_fraction=trainable_fraction, patience=patience, freeze_batchnorm=freeze_batchnorm,
                    label_smoothing=label_smoothing, ema_momentum=ema_momentum)
    key = cache.key(model, settings) if cache is not None else None
    found = training_cache.lookup(cache.cache_dir, key) if key else None
    if found:
        return _restore_training(model, *found, Path(out_dir), name, key, settings)
    if callable(train_ds):
        train_ds = train_ds()
    results = {}
    if head_epochs > 0:
        results["head"] = fit_detector(model, train_ds, val_ds, head_epochs, head_lr, out_dir, f"{name}_head",
                                       patience, verbose, label_smoothing, ema_momentum)
    if finetune_epochs > 0:
        unfrozen = prepare_finetune(model, trainable_fraction, freeze_batchnorm)
        result = fit_detector(model, train_ds, val_ds, finetune_epochs, finetune_lr, out_dir,
                              f"{name}_finetune", patience, verbose, label_smoothing, ema_momentum)
        result.notes.update(unfrozen)
        results["finetune"] = result
    if key:
        files = {f"{stage}{suffix}": Path(out_dir) / f"{name}_{stage}{suffix}"
                 for stage in results for suffix in (".keras", "_log.csv")}
        stages = {stage: dict(best_val_auc=r.best_val_auc, best_epoch=r.best_epoch, seconds=r.seconds, notes=r.notes,
                              history=r.history.to_dict(orient="list")) for stage, r in results.items()}
        training_cache.store(cache.cache_dir, key, files, dict(stages=stages, settings=settings))
    return results


def _restore_training(model: keras.Model, folder: Path, entry: dict, out_dir: Path, name: str, key: str,
                      settings: dict) -> dict[str, TrainResult]:
    """A cached training put back as :func:`train_two_stage` would leave it: checkpoints and logs in
    ``out_dir``, the model trainable as after fine-tuning, compiled, with the final stage's best weights."""
    out_dir.mkdir(parents=True, exist_ok=True)
    results = {}
    for stage, info in entry["stages"].items():
        for suffix in (".keras", "_log.csv"):
            if f"{stage}{suffix}" in entry["files"]:
                shutil.copyfile(folder / entry["files"][f"{stage}{suffix}"], out_dir / f"{name}_{stage}{suffix}")
        results[stage] = TrainResult(out_dir / f"{name}_{stage}.keras", pd.DataFrame(info["history"]),
                                     float(info["best_val_auc"]), int(info["best_epoch"]), float(info["seconds"]),
                                     {**info["notes"], "from_cache": key})
    if "finetune" in results:
        prepare_finetune(model, settings["trainable_fraction"], settings["freeze_batchnorm"])
    last = list(results)[-1]
    if results[last].model_path.exists():
        model.load_weights(results[last].model_path)
    compile_detector(model, settings["finetune_lr" if last == "finetune" else "head_lr"],
                     settings["label_smoothing"], settings["ema_momentum"])
    seconds = sum(r.seconds for r in results.values())
    print(f"{name}: read back from the trained-model cache ({key}; trained in {seconds:.0f} s, stored "
          f"{entry.get('stored', '?')}); FAKEFACE_RETRAIN=1 trains it again")
    return results


def train_backbone_detector(model: keras.Model, weights, datasets: dict, cfg, arch: str, *, batch_size: int,
                            head_epochs: int, head_lr: float, finetune_epochs: int, finetune_lr: float,
                            trainable_fraction: float, patience: int, input_kind: str,
                            finetune_epochs_without_weights: int | None = None,
                            data_key: dict | None = None, verbose: int = 2) -> tuple[dict[str, TrainResult], dict]:
    """Notebooks 03/04's training step: two stages, then the run's record and history of them.

    ``weights`` is the :class:`helpers.models.WeightsInfo` the detector was built with. Without
    pretrained weights (ResNet50 offline) there is nothing to keep: fine-tuning then trains the
    whole backbone from scratch, BatchNormalization included (``trainable_fraction`` becomes 1),
    for ``finetune_epochs_without_weights`` epochs when given (0: the head stage only), else
    ``finetune_epochs``. Writes ``models/<arch>_{head,finetune}.keras`` (a ``_finetune`` checkpoint
    left by an earlier run is removed when this one does not fine-tune), ``training/<arch>.json``
    and ``training/<arch>_history.csv``; returns the stages' results and the record. ``data_key``
    (:func:`helpers.pipeline.datasets_key` of the split the datasets were made from): the training
    goes through the run's trained-model cache (``runs/cache/trained``, :mod:`helpers.training_cache`).
    """
    from_scratch = weights.source == "none"
    if from_scratch:
        trainable_fraction = 1.0
        if finetune_epochs_without_weights is not None:
            finetune_epochs = finetune_epochs_without_weights
        print("No pretrained weights: " + (f"fine-tuning trains the whole backbone from scratch, BN included, "
                                           f"for {finetune_epochs} epochs." if finetune_epochs > 0 else
                                           "the head trains on the random frozen backbone; no fine-tuning."))
    if finetune_epochs <= 0:
        cfg.path("models", f"{arch}_finetune.keras").unlink(missing_ok=True)
    results = train_two_stage(model, datasets["train"], datasets["val"], cfg.folder("models"), arch,
                              head_epochs=head_epochs, head_lr=head_lr, finetune_epochs=finetune_epochs,
                              finetune_lr=finetune_lr, trainable_fraction=trainable_fraction, patience=patience,
                              verbose=verbose, freeze_batchnorm=not from_scratch,
                              cache=training_cache.CacheSpec(cfg.cache_dir("trained"), data_key, ("helpers.pipeline",))
                              if data_key is not None else None)
    parameters = dict(batch_size=batch_size, head_epochs=head_epochs, head_lr=head_lr,
                      finetune_epochs=finetune_epochs, finetune_lr=finetune_lr,
                      trainable_fraction=trainable_fraction, input_kind=input_kind, from_scratch=from_scratch)
    record = save_training_record(cfg.path("training", f"{arch}.json"), arch, cfg.image_size, weights.to_dict(),
                                  results, parameters)
    atomic.write_csv(cfg.path("training", f"{arch}_history.csv"), combined_history(results))
    return results, record


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


def save_training_record(path: str | Path, arch: str, image_size: int, weights: dict,
                         results: dict[str, TrainResult], parameters: dict) -> dict:
    """Write what a training notebook did: weights source (and any warning), stages, parameters."""
    record = dict(arch=arch, image_size=image_size, weights=weights, parameters=parameters,
                  stages={stage: result.summary() for stage, result in results.items()})
    path = Path(path)
    atomic.write_json(path, record, indent=2, default=str)
    return record
