"""The tf.data pipeline built on the validated loader."""

import numpy as np
import pytest
import tensorflow as tf

from helpers import data, pipeline, splits


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
