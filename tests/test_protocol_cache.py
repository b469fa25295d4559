"""Notebook 08's protocol cache (helpers.protocol_cache): frozen heads and fine-tuned scores read back
only where they are what training and scoring would give."""

import os
import shutil

import numpy as np
import pandas as pd
import pytest
from settings import another_value

from helpers import data, finetuned, protocol_cache, protocols, splits

# copy_kind takes one of two names: "scaled" is the other
COPY_KIND = {"copy_kind": "scaled"}


def _feature_bank(shift: float = 0.0) -> protocols.FeatureBank:
    from conftest import noise_feature_bank

    return noise_feature_bank(shift)


RECIPE = protocols.Recipe(name="cached head", epochs=2, augment_copies=1, tta_flip=True, balanced=True)


def test_a_head_read_back_is_the_head_training_gives(tmp_path, monkeypatch):
    plain_bank = _feature_bank()
    plain = plain_bank.train(RECIPE, tmp_path / "plain", seed=3)
    first_bank = protocol_cache.CachedBank(_feature_bank(), tmp_path / "cache")
    first = first_bank.train(RECIPE, tmp_path / "first", seed=3)
    assert first_bank.misses["head"] == 1 and first_bank.hits["head"] == 0

    def no_training(*args, **kwargs):
        raise AssertionError("a cached head was trained again")

    monkeypatch.setattr(protocols, "train_recipe", no_training)
    again_bank = protocol_cache.CachedBank(_feature_bank(), tmp_path / "cache")  # a new run: a new bank
    again = again_bank.train(RECIPE, tmp_path / "again", seed=3)
    assert again_bank.hits["head"] == 1 and again_bank.misses["head"] == 0
    for mine, theirs in zip(plain.head.get_weights(), again.head.get_weights()):
        np.testing.assert_array_equal(mine, theirs)
    for split in ("val", "test"):
        np.testing.assert_array_equal(plain_bank.score(plain, split), again_bank.score(again, split))
    assert (plain.threshold, plain.val_auc, first.seconds) == (again.threshold, again.val_auc, again.seconds)
    log_name = f"{protocols.checkpoint_name('head', RECIPE)}_log.csv"
    assert (tmp_path / "again" / log_name).read_bytes() == (tmp_path / "first" / log_name).read_bytes()


@pytest.fixture(scope="module")
def kept_head(tmp_path_factory):
    """A cache holding RECIPE's head (seed 3) on the standard bank."""
    cache = tmp_path_factory.mktemp("kept") / "cache"
    protocol_cache.CachedBank(_feature_bank(), cache).train(RECIPE, cache.parent / "out", seed=3)
    return cache


@pytest.mark.parametrize("change", ["features", "learning rate", "sources", "seed", "retrain"])
def test_anything_that_decides_a_head_trains_it_again(kept_head, tmp_path, monkeypatch, change):
    shutil.copytree(kept_head, tmp_path / "cache")
    recipe, seed, bank = RECIPE, 3, protocol_cache.CachedBank(_feature_bank(), tmp_path / "cache")
    if change == "features":  # one number of one training vector
        bank = protocol_cache.CachedBank(_feature_bank(shift=1e-3), tmp_path / "cache")
    elif change == "learning rate":
        recipe = protocols.Recipe(**{**RECIPE.to_dict(), "learning_rate": 2e-3})
    elif change == "sources":
        recipe = protocols.Recipe(**{**RECIPE.to_dict(), "train_sources": ["ffhq", "sd21"]})
    elif change == "seed":
        seed = 4
    else:
        monkeypatch.setenv("FAKEFACE_RETRAIN", "1")
    bank.train(recipe, tmp_path / "b", seed=seed)
    assert bank.misses["head"] == 1 and bank.hits["head"] == 0


def test_a_protocol_through_the_cache_gives_the_plain_banks_table(tmp_path):
    """Leave one real source out, on a plain bank, then twice through the cache (trained, read back)."""
    settings = dict(n_boot=50, seed=3, max_real_fpr=0.1)
    plain = protocols.leave_one_real_source_out(RECIPE, _feature_bank(), tmp_path / "p", **settings)
    cold = protocol_cache.CachedBank(_feature_bank(), tmp_path / "cache")
    warm = protocol_cache.CachedBank(_feature_bank(), tmp_path / "cache")
    first = protocols.leave_one_real_source_out(RECIPE, cold, tmp_path / "c", **settings)
    again = protocols.leave_one_real_source_out(RECIPE, warm, tmp_path / "w", **settings)
    pd.testing.assert_frame_equal(plain, first)
    pd.testing.assert_frame_equal(plain, again)
    assert (cold.misses["head"], warm.hits["head"], warm.misses["head"]) == (2, 2, 0)


@pytest.fixture(scope="module")
def split_and_root(tmp_path_factory):
    from conftest import make_face_tree

    root = make_face_tree(tmp_path_factory.mktemp("images"))
    manifest = data.usable(data.scan_folder(root, progress=False))
    return splits.split_manifest(manifest, fractions=(0.5, 0.25, 0.25), seed=0), root


def _image_bank(split, root, cache: os.PathLike) -> protocol_cache.CachedBank:
    bank = finetuned.ImageBank(split, root, 32, batch_size=8, trained_cache=cache / "trained")
    return protocol_cache.CachedBank(bank, cache / "protocols")


def test_fine_tuned_scores_are_kept_and_read_back_for_the_same_weights_only(split_and_root, tmp_path, monkeypatch,
                                                                          eager_steps):
    split, root = split_and_root
    recipe = finetuned.FinetuneRecipe("kept", None, epochs=1, finetune_epochs=1, tta_flip=True)
    cold = _image_bank(split, root, tmp_path)
    trained = cold.train(recipe, tmp_path / "cold")
    computed = {(s, v): cold.score(trained, s, v) for s in ("val", "test") for v in ("clean", "jpeg:50")}
    assert cold.misses["scores"] == 4 and cold.hits["scores"] == 0   # val clean while training, then the rest
    oracle = finetuned.ImageBank(split, root, 32, batch_size=8)
    np.testing.assert_array_equal(oracle.score(trained, "test", "jpeg:50"), computed[("test", "jpeg:50")])

    def no_scoring(*args, **kwargs):
        raise AssertionError("kept scores were computed again")

    monkeypatch.setattr(finetuned, "predict_images", no_scoring)
    warm = _image_bank(split, root, tmp_path)
    again = warm.train(finetuned.FinetuneRecipe(**{**recipe.to_dict(), "name": "renamed"}), tmp_path / "warm")
    assert "from_cache" in again.notes and again.threshold == trained.threshold
    for key, scores in computed.items():
        np.testing.assert_array_equal(warm.score(again, *key), scores)
    assert warm.hits["scores"] == 4 and warm.misses["scores"] == 0

    # one weight changed, or a file touched since: computed, not read back
    monkeypatch.undo()
    path = root / warm.frames["test"].path.iloc[0]
    stat = path.stat()
    try:
        again.scores.clear()  # held in memory by the detector: the disk is what is tested
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
        touched = _image_bank(split, root, tmp_path)
        touched.score(again, "test")
        assert touched.misses["scores"] == 1 and touched.hits["scores"] == 0
    finally:
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    again.scores.clear()
    kernel = again.model.weights[-2]
    kernel.assign(kernel.numpy() + 1e-3)
    changed = _image_bank(split, root, tmp_path)
    assert not np.array_equal(changed.score(again, "test"), computed[("test", "clean")])
    assert changed.misses["scores"] == 1 and changed.hits["scores"] == 0


def test_every_field_of_a_recipe_is_in_the_head_key():
    """Each field of protocols.Recipe, changed alone, gives a head another key (its name too: a renamed recipe
    trains once more, which costs seconds and can never serve a wrong head); the same recipe, the same key."""
    import dataclasses

    bank = protocol_cache.CachedBank(_feature_bank(), "unused")
    base = protocols.Recipe(name="base")  # no copies: the bank holds one kind of copy, "augment:0"
    key = bank.head_key(base, seed=3)
    assert bank.head_key(protocols.Recipe(**base.to_dict()), seed=3) == key
    fields = [f.name for f in dataclasses.fields(protocols.Recipe)]
    assert len(fields) >= 10
    for name in fields:
        changed = dataclasses.replace(base, **{name: another_value(getattr(base, name), COPY_KIND, name)})
        assert bank.head_key(changed, seed=3) != key, name
    assert bank.head_key(base, seed=4) != key


def _any_size_detector():
    """A tiny detector for pictures of any size whose score changes with the mirror image (an asymmetric
    convolution, then the global maximum)."""
    import keras

    model = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Rescaling(1 / 255),
                              keras.layers.Conv2D(1, 3, use_bias=False), keras.layers.GlobalMaxPooling2D(),
                              keras.layers.Dense(1, activation="sigmoid")])
    kernel = np.zeros((3, 3, 3, 1), np.float32)
    kernel[:, 0] = 1.0   # left column up, right column down: a mirror image scores otherwise
    kernel[:, 2] = -1.0
    model.layers[1].kernel.assign(kernel)
    model.layers[3].kernel.assign(np.array([[3.0]], np.float32))
    return model


def test_every_input_of_a_fine_tuned_score_is_in_its_key(split_and_root, tmp_path):
    """Scores are kept under their key: whenever a field of the recipe, a setting of the bank (read from the
    dataclass and the constructor's signature), the split or the variant changes the scores, it must change the
    key too (a key that missed one would read back another detector's scores)."""
    import dataclasses
    import inspect

    split, root = split_and_root
    model = _any_size_detector()
    base_recipe = finetuned.FinetuneRecipe("kept", None)

    def scores_and_key(recipe, split_name="test", variant="clean", **bank_settings):
        bank = finetuned.ImageBank(split, root, **({"image_size": 32, "batch_size": 8} | bank_settings))
        trained = finetuned.TrainedDetector(recipe, model, threshold=0.5, val_auc=0.5, seconds=0.0)
        cached = protocol_cache.CachedBank(bank, tmp_path / "protocols")
        return bank.score(trained, split_name, variant), cached.scores_key(trained, split_name, variant)

    base_scores, base_key = scores_and_key(base_recipe)
    assert scores_and_key(base_recipe)[1] == base_key
    moved = []
    for field in dataclasses.fields(finetuned.FinetuneRecipe):
        value = getattr(base_recipe, field.name)
        other = another_value(value, {"score_reencode": "jpeg:50", **COPY_KIND}, field.name)
        scores, key = scores_and_key(dataclasses.replace(base_recipe, **{field.name: other}))
        if not np.allclose(scores, base_scores):
            moved.append(field.name)
            assert key != base_key, f"recipe field {field.name} changes the scores but not their key"
    assert {"tta_flip", "score_reencode"} <= set(moved)  # the test exercised the fields that score differently
    constructor = inspect.signature(finetuned.ImageBank).parameters
    for name, other in (("image_size", 40), ("framing", "native_patch"), ("batch_size", 3)):
        assert name in constructor
        scores, key = scores_and_key(base_recipe, **{name: other})
        if len(scores) != len(base_scores) or not np.allclose(scores, base_scores):
            assert key != base_key, name
    for split_name, variant in (("val", "clean"), ("test", "jpeg:50")):
        scores, key = scores_and_key(base_recipe, split_name, variant)
        assert key != base_key, (split_name, variant)
