"""The tf.data pipeline built on the validated loader."""

import re

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from PIL import Image

from helpers import baselines, data, pipeline, splits


def test_batches_have_the_right_shape_order_and_labels(face_tree):
    manifest = data.scan_folder(face_tree, progress=False)
    dataset = pipeline.make_dataset(manifest, face_tree, image_size=48, batch_size=16)
    images, labels = next(iter(dataset))
    assert images.shape == (16, 48, 48, 3) and images.dtype == tf.float32
    assert float(tf.reduce_max(images)) <= 255.0 and float(tf.reduce_max(images)) > 1.0
    all_labels = np.concatenate([y.numpy() for _, y in dataset])
    assert np.array_equal(all_labels, pipeline.labels_of(manifest))
    array = pipeline.load_array(manifest.head(5), face_tree, 32)
    assert array.shape == (5, 32, 32, 3) and array.dtype == np.uint8


def test_shuffled_training_split_is_seeded(face_tree):
    split = splits.split_manifest(data.scan_folder(face_tree, progress=False), seed=0)
    first = pipeline.split_datasets(split, face_tree, 32, batch_size=64, seed=5)["train"]
    again = pipeline.split_datasets(split, face_tree, 32, batch_size=64, seed=5)["train"]
    a = next(iter(first))[0].numpy()
    b = next(iter(again))[0].numpy()
    assert np.array_equal(a, b)


def test_a_file_that_changed_after_the_scan_fails_with_its_name(face_tree):
    manifest = data.scan_folder(face_tree, progress=False)
    victim = face_tree / manifest.iloc[0]["path"]
    victim.write_text("overwritten")
    dataset = pipeline.make_dataset(manifest.head(4), face_tree, 32, batch_size=4)
    with pytest.raises(Exception, match="re-run the scan"):
        next(iter(dataset))
    # every other reader of scanned files says the same, naming the file and why
    name = manifest.iloc[0]["path"]
    for read in (lambda: pipeline.load_patch_array(manifest.head(4), face_tree, 32),
                 lambda: baselines.load_center_crops(manifest.head(4), face_tree, 32)):
        with pytest.raises(data.ImageLoadError, match=re.escape(name) + r": .+ \(re-run the scan in notebook 01\)"):
            read()


def _coordinate_image(height: int, width: int) -> np.ndarray:
    """Each pixel encodes its own position: R = row % 256, G = column % 256, B = row // 256 * 16 + column // 256."""
    rows, cols = np.mgrid[0:height, 0:width]
    return np.stack([rows % 256, cols % 256, rows // 256 * 16 + cols // 256], -1).astype(np.uint8)


def test_a_native_patch_is_the_files_own_pixels_not_resized(tmp_path):
    image = _coordinate_image(300, 500)
    (tmp_path / "real" / "cam").mkdir(parents=True)
    Image.fromarray(image).save(tmp_path / "real" / "cam" / "wide.png")
    frame = pd.DataFrame({"path": ["real/cam/wide.png"], "label": ["real"]})
    centre = pipeline.load_patch_array(frame, tmp_path, 64)[0]
    assert np.array_equal(centre, image[118:182, 218:282])  # (300 - 64) // 2, (500 - 64) // 2
    copies = [pipeline.load_patch_array(frame, tmp_path, 64, perturbation=f"augment:{k}")[0] for k in range(6)]
    again = pipeline.load_patch_array(frame, tmp_path, 64, perturbation="augment:0")[0]
    assert np.array_equal(copies[0], again)  # seeded by the file and the copy number
    assert len({c.tobytes() for c in copies}) == 6
    assert set(np.unique(np.diff(centre[..., 1].astype(int), axis=1))) == {1, -255}  # scale 1: one column a step


def test_a_native_patch_enlarges_only_an_image_smaller_than_the_patch():
    small = _coordinate_image(40, 80)
    patch = pipeline.native_patch(small, 64)
    assert patch.shape == (64, 64, 3)
    enlarged = np.asarray(Image.fromarray(small).resize((128, 64), Image.Resampling.BILINEAR))
    assert np.array_equal(patch, enlarged[:, 32:96])  # shorter side 40 -> 64 (x1.6), then the centre
    big = _coordinate_image(64, 64)
    assert np.array_equal(pipeline.native_patch(big, 64), big)
    positions = {pipeline.native_patch(_coordinate_image(200, 200), 64, seed=s)[0, 0, :2].tobytes() for s in range(20)}
    assert len(positions) > 10  # random positions, not always one


def test_native_patch_framing_reaches_the_image_bank(face_tree):
    from helpers import finetuned

    split = splits.split_manifest(data.scan_folder(face_tree, progress=False), seed=0)
    resized = finetuned.ImageBank(split, face_tree, 32).images_of("test")
    patches = finetuned.ImageBank(split, face_tree, 32, framing="native_patch").images_of("test")
    assert patches.shape == resized.shape and not np.array_equal(patches, resized)
    with pytest.raises(ValueError, match="framing"):
        finetuned.ImageBank(split, face_tree, 32, framing="zoom")


def test_stable_seed_is_the_same_in_another_process_and_differs_between_texts():
    import subprocess
    import sys

    from helpers.perturb import stable_seed

    texts = ["patch|real/ffhq/a.png|augment:1", "patch|real/ffhq/a.png|augment:2", "x|0"]
    here = [stable_seed(t) for t in texts]
    code = f"from helpers.perturb import stable_seed; print([stable_seed(t) for t in {texts!r}])"
    # a different hash seed: Python's own hash() would change, the stable seed must not
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": "123", "PATH": ""}).stdout.strip()
    assert there == str(here)
    assert len(set(here)) == 3 and all(0 <= seed < 2**32 for seed in here)
