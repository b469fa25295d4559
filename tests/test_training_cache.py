"""Issue 16: the trained-model cache reads back an unchanged training, and only that (helpers.training_cache)."""

import os
import shutil
from pathlib import Path

import keras
import numpy as np
import pandas as pd
from settings import another_value

from helpers import config, data, models, pipeline, splits, train, training_cache


def test_the_code_fingerprint_follows_helpers_imports(monkeypatch):
    sources = {"helpers.a": "from helpers import b\nfrom helpers.c import thing\n",
               "helpers.b": "def f():\n    from helpers import d\n",     # a function's own import counts too
               "helpers.c": "thing = 1\n", "helpers.d": "x = 1\n", "helpers.e": "y = 1\n"}
    monkeypatch.setattr(training_cache, "_module_source", lambda name: sources.get(name))
    assert training_cache.module_closure("helpers.a") == ["helpers.a", "helpers.b", "helpers.c", "helpers.d"]
    before = training_cache.code_fingerprint("helpers.a")
    sources["helpers.e"] = "y = 2\n"                                   # not imported: the same training
    assert training_cache.code_fingerprint("helpers.a") == before
    sources["helpers.d"] = "x = 2\n"                                   # imported two steps away: a new one
    assert training_cache.code_fingerprint("helpers.a") != before


def test_the_closure_of_the_fine_tuned_protocols_covers_their_data_and_training_code():
    closure = training_cache.module_closure("helpers.train", "helpers.finetuned")
    assert {"helpers.train", "helpers.models", "helpers.protocols", "helpers.pipeline", "helpers.data",
            "helpers.decoding", "helpers.perturb", "helpers.served"} <= set(closure)
    assert "helpers.plots" not in closure and "helpers.cli" not in closure


def test_the_data_fingerprint_changes_with_rows_labels_and_file_contents(tmp_path, face_tree):
    split = splits.split_manifest(data.scan_folder(face_tree, progress=False), seed=0)
    before = training_cache.data_fingerprint(split, face_tree)
    assert training_cache.data_fingerprint(split.copy(), face_tree) == before
    assert training_cache.data_fingerprint(split.iloc[1:], face_tree) != before
    relabelled = split.copy()
    relabelled.loc[0, "label"] = "fake" if split.loc[0, "label"] == "real" else "real"
    assert training_cache.data_fingerprint(relabelled, face_tree) != before
    first = face_tree / split.loc[0, "path"]
    first.write_bytes(first.read_bytes() + b"\0")                      # the same name, other bytes
    assert training_cache.data_fingerprint(split, face_tree) != before


def test_an_entry_without_its_record_is_not_read_back(tmp_path):
    (tmp_path / "abc").mkdir()                                         # e.g. a copy that was interrupted
    assert training_cache.lookup(tmp_path, "abc") is None
    training_cache.store(tmp_path, "abc", {"missing.keras": tmp_path / "nothing"}, {"stages": {}})
    folder, entry = training_cache.lookup(tmp_path, "abc")
    assert folder == tmp_path / "abc" and entry["files"] == {} and not list(tmp_path.glob(".*tmp"))


def _tiny_detector(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)   # the same initial weights for the same seed
    base = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Conv2D(4, 3), keras.layers.BatchNormalization(),
                             keras.layers.ReLU(), keras.layers.Conv2D(4, 3), keras.layers.BatchNormalization()],
                            name=models.BACKBONE_NAME)
    inputs = keras.Input((32, 32, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(base(inputs))
    base.trainable = False
    return keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid", name="prediction")(pooled))


def test_a_model_built_again_is_the_same_training_and_another_layer_setting_is_not():
    first, again = _tiny_detector(), _tiny_detector()    # Keras numbers the second build's layers anew
    assert first.layers[0].name != again.layers[0].name or first.name != again.name
    assert training_cache.architecture(first) == training_cache.architecture(again)
    assert training_cache.weights_checksum(first) == training_cache.weights_checksum(again)
    other = _tiny_detector()
    other.get_layer("prediction").activation = keras.activations.linear
    changed = keras.Model.from_config(other.get_config())
    assert training_cache.architecture(changed) != training_cache.architecture(first)
    reseeded = _tiny_detector(seed=1)                                  # same layers, other initial weights
    assert training_cache.architecture(reseeded) == training_cache.architecture(first)
    assert training_cache.weights_checksum(reseeded) != training_cache.weights_checksum(first)


def test_a_repeated_training_is_read_back_exactly_and_a_changed_one_trains(tmp_path, face_tree, monkeypatch,
                                                                           eager_steps):
    cfg = config.RunConfig(run_name="r", data_root=face_tree, runs_root=tmp_path, image_size=32)
    split = splits.split_manifest(data.scan_folder(face_tree, progress=False), seed=0)
    datasets = pipeline.split_datasets(split, face_tree, 32, 8, seed=0)
    data_key = pipeline.datasets_key(split, face_tree, 32, 8, seed=0)
    stages_run = []
    real_fit = train.fit_detector

    def counting_fit(*args, **kwargs):
        stages_run.append(args[6])  # the stage's name
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(train, "fit_detector", counting_fit)

    def run(**changes):
        model = _tiny_detector()
        settings = dict(batch_size=8, head_epochs=1, head_lr=1e-2, finetune_epochs=1, finetune_lr=1e-3,
                        trainable_fraction=0.5, patience=1, input_kind="image", verbose=0) | changes
        results, _ = train.train_backbone_detector(model, models.WeightsInfo("tiny", "local"), datasets, cfg,
                                                   "tiny", data_key=data_key, **settings)
        return model, results

    initial = _tiny_detector().get_weights()
    trained, first = run()
    assert stages_run == ["tiny_head", "tiny_finetune"] and not any("from_cache" in r.notes for r in first.values())
    assert any(not np.array_equal(a, b) for a, b in zip(initial, trained.get_weights()))   # it did train
    shutil.rmtree(cfg.path("models"))                                  # the second run must put them back

    again, second = run()
    assert stages_run == ["tiny_head", "tiny_finetune"]                 # nothing trained
    (entry,) = os.listdir(cfg.cache_dir("trained"))
    for stage in ("head", "finetune"):
        a, b = first[stage], second[stage]
        pd.testing.assert_frame_equal(a.history, b.history)
        assert (a.best_val_auc, a.best_epoch, a.seconds) == (b.best_val_auc, b.best_epoch, b.seconds)
        assert b.notes == {**a.notes, "from_cache": entry} and b.model_path.exists()
        assert (cfg.path("models", f"tiny_{stage}_log.csv")).exists()
    for a, b in zip(trained.get_weights(), again.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert [layer.trainable for layer in models.backbone_of(again).layers] == \
        [layer.trainable for layer in models.backbone_of(trained).layers]   # as fine-tuning left it
    images = next(iter(datasets["val"]))[0]
    np.testing.assert_array_equal(trained.predict(images, verbose=0), again.predict(images, verbose=0))

    run(finetune_lr=2e-3)                                              # another setting: another training
    assert stages_run[2:] == ["tiny_head", "tiny_finetune"]
    monkeypatch.setenv(training_cache.RETRAIN_ENV, "1")                # asked to retrain: trains
    run()
    assert stages_run[4:] == ["tiny_head", "tiny_finetune"]


# --- the keys, by property: every input that reaches the computation is in the key ---------------------------

class _Captured(Exception):
    """Raised by a stand-in lookup: the key was computed, nothing trains."""


def _key_of_training(monkeypatch, model, **changes) -> str:
    """The trained-model cache key ``train.train_two_stage`` computes for ``model`` with ``changes``."""
    seen = {}

    def capture(cache_dir, key):
        seen["key"] = key
        raise _Captured

    monkeypatch.setattr(training_cache, "lookup", capture)
    spec = training_cache.CacheSpec(Path("unused"), data={"train": "t", "val": "v"})
    arguments = dict(head_epochs=1, head_lr=1e-3, finetune_epochs=1, finetune_lr=1e-4) | changes
    try:
        train.train_two_stage(model, None, None, "unused", "m", cache=spec, **arguments)
    except _Captured:
        return seen["key"]
    raise AssertionError("train_two_stage did not consult the cache")


def test_every_setting_of_a_training_is_in_its_cache_key(monkeypatch):
    """Each parameter of ``train_two_stage`` that decides what training gives (read from its signature: all but
    the datasets, where outputs go, the name, the verbosity and the cache itself), changed alone, is another key;
    the same settings are the same key."""
    import inspect

    model = _tiny_detector()
    base = _key_of_training(monkeypatch, model)
    assert _key_of_training(monkeypatch, model) == base
    not_deciding = {"model", "train_ds", "val_ds", "out_dir", "name", "verbose", "cache"}
    signature = inspect.signature(train.train_two_stage)
    deciding = [p for p in signature.parameters.values() if p.name not in not_deciding]
    assert len(deciding) >= 9
    defaults = dict(head_epochs=1, head_lr=1e-3, finetune_epochs=1, finetune_lr=1e-4)
    for parameter in deciding:
        value = defaults.get(parameter.name, parameter.default)
        assert _key_of_training(monkeypatch, model, **{parameter.name: another_value(value)}) != base, parameter.name


def test_the_model_and_its_data_are_in_the_key(monkeypatch):
    """Another initial weight, another layer setting or other data: another key."""
    model = _tiny_detector()
    base = _key_of_training(monkeypatch, model)
    other = _tiny_detector(seed=1)
    assert _key_of_training(monkeypatch, other) != base
    kernel = model.weights[-2]
    kernel.assign(kernel.numpy() + 1e-6)
    assert _key_of_training(monkeypatch, model) != base


def test_every_argument_of_the_datasets_is_in_their_key(tmp_path, face_tree):
    """``pipeline.datasets_key`` takes every argument ``pipeline.split_datasets`` takes (the signatures agree),
    and each one, changed alone, changes the key."""
    import inspect

    made = inspect.signature(pipeline.split_datasets).parameters
    keyed = inspect.signature(pipeline.datasets_key).parameters
    assert list(made) == list(keyed)
    assert [p.default for p in made.values()] == [p.default for p in keyed.values()]
    split = splits.split_manifest(data.scan_folder(face_tree, progress=False), seed=0)
    arguments = dict(split_frame=split, root=face_tree, image_size=32, batch_size=8, seed=0, preprocessing="none")
    base = training_cache.training_key(pipeline.datasets_key(**arguments))
    first = split.index[split["split"] == "train"][0]  # a training row's label flipped
    flipped = split.assign(label=split["label"].where(split.index != first,
                                                      "fake" if split.loc[first, "label"] == "real" else "real"))
    other = dict(split_frame=flipped,
                 root=tmp_path, image_size=33, batch_size=9, seed=1, preprocessing="ela")
    assert set(other) == set(made)
    for name, value in other.items():
        assert training_cache.training_key(pipeline.datasets_key(**(arguments | {name: value}))) != base, name
