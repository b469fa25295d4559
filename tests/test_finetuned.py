"""Issue 7: fine-tuned recipes through the same generalization protocols (helpers.finetuned)."""

import numpy as np
import pandas as pd
import pytest

from helpers import calibration, data, finetuned, models, protocols, splits, stats
from helpers.pipeline import labels_of


@pytest.fixture(scope="module")
def image_bank(tmp_path_factory):
    from conftest import make_face_tree

    root = make_face_tree(tmp_path_factory.mktemp("images"))
    manifest = data.usable(data.scan_folder(root, progress=False))
    split = splits.split_manifest(manifest, fractions=(0.5, 0.25, 0.25), seed=0)
    return finetuned.ImageBank(split, root, 32, batch_size=8)


def test_images_are_decoded_once_per_split_and_variant(image_bank):
    clean = image_bank.images_of("test")
    assert clean.dtype == np.uint8 and clean.shape == (len(image_bank.frames["test"]), 32, 32, 3)
    assert image_bank.images_of("test") is clean                     # held in memory, not decoded again
    assert not np.array_equal(image_bank.images_of("test", "blur:2"), clean)


def _versions_of(images, versions: list[np.ndarray]) -> set[int]:
    """The position in ``versions`` of the first stored array holding each image of a batch."""
    return {next(v for v, stored in enumerate(versions) if any(np.array_equal(image, s) for s in stored))
            for image in images.numpy().astype(np.uint8)}


def test_training_batches_mix_versions_and_balance_sources(image_bank):
    train = image_bank.frames["train"]
    rows = np.concatenate([np.flatnonzero(train.source == "cam_a"), np.flatnonzero(train.source == "gan_a")[:1]])
    recipe = finetuned.FinetuneRecipe("mix", None, augment_copies=2, balanced=True)
    dataset = finetuned.training_dataset(image_bank, recipe, rows, 4, seed=0)
    versions = [image_bank.images_of("train")] + [image_bank.images_of("train", f"augment:{k}") for k in range(2)]
    seen, fake_share = set(), []
    for images, y in (batch for _ in range(30) for batch in dataset):
        fake_share.append(y.numpy())
        seen |= _versions_of(images, versions)
    assert seen == {0, 1, 2}                                         # clean and both augmentation copies
    assert abs(np.concatenate(fake_share).mean() - 0.5) < 0.1        # 1 fake row, half of the draws
    # a recipe of down-scaled copies trains on those, never on the plain ones
    scaled = finetuned.FinetuneRecipe("scaled", None, augment_copies=2, copy_kind="scaled")
    kinds = [image_bank.images_of("train")] + [image_bank.images_of("train", f"{kind}:{k}")
                                               for kind in ("scaled", "augment") for k in range(2)]
    seen = set()
    for images, _ in (batch for _ in range(10) for batch in finetuned.training_dataset(image_bank, scaled, rows, 4, 0)):
        seen |= _versions_of(images, kinds)
    assert seen == {0, 1, 2}


def test_finetuned_recipes_run_every_protocol(image_bank, tmp_path, eager_steps):
    recipe = finetuned.FinetuneRecipe("improved ft", None, augment_copies=1, balanced=True, tta_flip=True,
                                      epochs=4, learning_rate=3e-3, finetune_epochs=2, trainable_fraction=0.3)
    trained = image_bank.train(recipe, tmp_path)
    assert trained.notes["batchnorm_frozen"] and trained.notes["unfrozen_layers_with_weights"] > 0
    reference, _ = models.build_mobilenetv2(image_size=32, augment="flip")  # the same ImageNet start
    before = {w.path: np.asarray(w) for w in models.backbone_of(reference).weights}
    after = {w.path: np.asarray(w) for w in trained.model.get_layer(models.BACKBONE_NAME).weights}
    changed = {path for path in before if not np.allclose(before[path], after[path])}
    assert any("Conv_1" in path for path in changed)                 # the top of the base was fine-tuned
    assert not any("bn" in path.lower() for path in changed)         # no BatchNormalization weight or statistic
    assert not any(path.startswith(("Conv1", "expanded_conv_")) for path in changed)  # nor the bottom of the base
    # (whether 20 tiny images are learned depends on the random state left by earlier tests: the
    # wiring is checked here; learning is measured on the face sample in notebook 08)
    val_labels = labels_of(image_bank.frames["val"])
    expected = stats.choose_threshold(val_labels, image_bank.score(trained, "val"))
    assert trained.threshold == pytest.approx(expected)              # chosen on validation, with the flip
    log = pd.read_csv(tmp_path / "finetuned_improved_ft_finetune_log.csv")
    assert len(log) == 2 and trained.val_auc == pytest.approx(log.val_auc.max())  # best fine-tuning epoch kept
    assert (tmp_path / "finetuned_improved_ft_finetune.keras").exists()
    assert not any(layer.name == "augmentation" for layer in trained.model.layers)  # scored without it

    images = image_bank.images_of("test")
    plain = finetuned.predict_images(trained.model, images)
    mirrored = finetuned.predict_images(trained.model, images[:, :, ::-1].copy())
    np.testing.assert_allclose(image_bank.score(trained, "test"), (plain + mirrored) / 2, atol=1e-5)

    grid = protocols.robustness_grid(trained, image_bank, ("jpeg:50",))
    assert grid.perturbation.tolist() == ["clean", "jpeg:50"] and grid.auc.between(0, 1).all()
    summary, _ = calibration.calibration_table(trained, image_bank)
    assert summary["temperature"] > 0
    row = protocols.recipe_summary(trained, image_bank, {"gan_b vs cams": (["cam_a", "cam_b"], "gan_b")})
    assert 0 <= row["gan_b vs cams"] <= 1 and row["train_seconds"] > 0

    head_only = finetuned.FinetuneRecipe("frozen", ["cam_a", "gan_a"], epochs=1, trainable_fraction=0.0)
    matrix = protocols.cross_source_matrix(head_only, {"a": ["cam_a", "gan_a"]}, [(["cam_b"], "gan_b")],
                                           image_bank, tmp_path)
    assert matrix.trained_on.tolist() == ["a"] and matrix.auc.between(0, 1).all()
    logo = protocols.leave_one_generator_out(head_only, image_bank, tmp_path, n_boot=20, held_outs=["gan_b"])
    assert logo.held_out.tolist() == ["gan_b"] and not (tmp_path / "finetuned_frozen_a_finetune.keras").exists()
    # no head stage (epochs 0, the smoke profile's setting): the fine-tuning stage alone trains and is kept
    no_head = finetuned.FinetuneRecipe("no head", ["cam_a", "gan_a"], epochs=0, finetune_epochs=1, trainable_fraction=0.3)
    trained = image_bank.train(no_head, tmp_path)
    assert set(trained.notes) >= {"finetune_best_val_auc"} and "head_best_val_auc" not in trained.notes
    assert 0 <= trained.threshold <= 1 and trained.seconds > 0


def test_a_recipe_with_a_residual_branch_or_block_taps_trains_a_model_with_them(monkeypatch, tmp_path):
    """``FinetuneRecipe.residual_branch`` and ``block_taps`` reach the builder (the branch and the taps
    themselves: tests/test_models.py)."""
    from types import SimpleNamespace

    built = []

    def builder(**kwargs):
        built.append(kwargs)
        raise RuntimeError("built")

    monkeypatch.setattr(finetuned.models, "build_mobilenetv2", builder)
    for residual, taps in ((True, False), (False, False), (False, True)):
        with pytest.raises(RuntimeError, match="built"):
            finetuned.train_finetuned(finetuned.FinetuneRecipe(name="r", residual_branch=residual, block_taps=taps),
                                      SimpleNamespace(image_size=32), tmp_path)
    assert [(kwargs["residual"], kwargs["block_taps"]) for kwargs in built] == [(True, False), (False, False),
                                                                               (False, True)]


def test_a_detector_read_back_from_the_trained_cache_scores_as_trained(image_bank, tmp_path, eager_steps):
    """Notebook 08's folds go through the trained-model cache: the first training of a recipe gives what an
    uncached one gives, and its repeat (renamed: the name is not part of the training) is read back, not
    trained, with the same scores and validation threshold (helpers.training_cache)."""
    recipe = finetuned.FinetuneRecipe("cached", None, augment_copies=1, balanced=True, epochs=1, finetune_epochs=1)
    plain = image_bank.train(recipe, tmp_path / "plain")
    split = pd.concat(image_bank.frames.values(), ignore_index=True)
    bank = finetuned.ImageBank(split, image_bank.root, 32, batch_size=8, trained_cache=tmp_path / "trained")
    first = bank.train(recipe, tmp_path / "first")
    again = bank.train(finetuned.FinetuneRecipe(**{**recipe.to_dict(), "name": "renamed"}), tmp_path / "again")
    assert "from_cache" not in first.notes and again.notes["from_cache"] == next((tmp_path / "trained").iterdir()).name
    for part in ("val", "test"):
        np.testing.assert_array_equal(image_bank.score(plain, part), bank.score(first, part))
        np.testing.assert_array_equal(bank.score(first, part), bank.score(again, part))
    assert plain.threshold == first.threshold == again.threshold and first.seconds == again.seconds
    assert (tmp_path / "again" / "finetuned_renamed_finetune.keras").exists()


def test_a_recipe_that_reencodes_scores_every_picture_through_it_and_shares_the_training(image_bank, tmp_path,
                                                                                          eager_steps):
    """``score_reencode`` (issue 14): validation and test pictures, and any protocol perturbation, are
    re-encoded at their own resolution before the resize; the training is the plain recipe's (read back
    from the trained cache, same weights)."""
    from helpers import perturb

    plain = finetuned.FinetuneRecipe("plain", None, epochs=1, finetune_epochs=1)
    split = pd.concat(image_bank.frames.values(), ignore_index=True)
    bank = finetuned.ImageBank(split, image_bank.root, 32, batch_size=8, trained_cache=tmp_path / "trained")
    first = bank.train(plain, tmp_path / "plain")
    reencoded = bank.train(finetuned.FinetuneRecipe(**{**plain.to_dict(), "name": "jpeg",
                                                       "score_reencode": "jpeg:20"}), tmp_path / "jpeg")
    assert "from_cache" not in first.notes and "from_cache" in reencoded.notes
    for mine, theirs in zip(first.model.get_weights(), reencoded.model.get_weights()):
        np.testing.assert_array_equal(mine, theirs)
    np.testing.assert_array_equal(bank.scored_images(reencoded, "test"), bank.images_of("test", "jpeg:20"))
    np.testing.assert_array_equal(bank.scored_images(reencoded, "test", "blur:1"),
                                  bank.images_of("test", "blur:1+jpeg:20"))
    oracle = finetuned.predict_images(reencoded.model, bank.images_of("test", "jpeg:20"))
    np.testing.assert_allclose(bank.score(reencoded, "test"), oracle, atol=1e-6)
    assert not np.allclose(bank.score(reencoded, "test"), bank.score(first, "test"), atol=1e-4)
    # the chain is the two steps in order, each at the file's own resolution, before the resize
    path = image_bank.root / bank.frames["test"].path.iloc[0]
    native = data.load_image(path).image
    by_hand = data.resize_square(perturb.jpeg(perturb.blur(native, 1.0), 20), 32)
    np.testing.assert_array_equal(bank.images_of("test", "blur:1+jpeg:20")[0], by_hand)
