"""Does the served recipe's input pipeline keep the model fed? (target: within 90% of the model-bound rate)

The served recipe (notebook 08, ``helpers.finetuned``) trains from images decoded once and held in
memory: each epoch draws, per position of a source-balanced order, one stored version of the image
(clean or a blur/JPEG/crop copy) through ``tf.numpy_function``. This script times, for both of the
recipe's stages (head on the frozen base; whole base with BatchNormalization frozen), one epoch fed
by that pipeline (:func:`helpers.finetuned.training_dataset`) against one epoch of the same model
on a float32 tensor already in memory and already batched (the model-bound rate), after a first
epoch that traces the step. The images are the first ``--per-source`` of every source of the face
sample, decoded at ``--size`` with ``--copies`` augmentation copies (decoding is not timed).

Usage:  .venv/bin/python benchmarks/bench_served_pipeline.py [--per-source 60] [--size 128] [--block-taps] [--out F]
Not a test: numbers depend on the machine and on what else runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from helpers import config, data, finetuned, models, train  # noqa: E402


def timed_epoch(model: keras.Model, dataset: tf.data.Dataset, repeats: int) -> float:
    """Fastest of ``repeats`` epochs (seconds), after one untimed epoch that traces the step."""
    model.fit(dataset, epochs=1, verbose=0, shuffle=False)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.fit(dataset, epochs=1, verbose=0, shuffle=False)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-source", type=int, default=60)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--copies", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--block-taps", action="store_true",
                        help="the detector whose head also reads intermediate blocks (FinetuneRecipe.block_taps)")
    parser.add_argument("--skip-pipeline", action="store_true", help="time the model-bound rate only")
    parser.add_argument("--out", default="benchmarks/results_served_pipeline.json")
    args = parser.parse_args()

    frame = data.usable(data.scan_folder(config.resolve_data_root(), limit_per_source=args.per_source, progress=False))
    frame = frame.assign(split="train")
    bank = finetuned.ImageBank(frame, config.resolve_data_root(), args.size, batch_size=args.batch)
    recipe = finetuned.FinetuneRecipe(name="served", balanced=True, augment_copies=args.copies, tta_flip=True,
                                      trainable_fraction=1.0)
    rows = np.arange(len(frame))
    # the pipeline decodes every version once; the model-bound rate alone needs only the clean images
    pipeline_ds = None if args.skip_pipeline else finetuned.training_dataset(bank, recipe, rows, args.batch, seed=42)
    copies = 0 if args.skip_pipeline else args.copies
    bank.images_of("train")
    print(f"{len(rows)} images, {copies} copies decoded in {bank.seconds:.0f} s", flush=True)
    labels = (frame["label"] == "fake").to_numpy(np.float32)
    in_memory = tf.data.Dataset.from_tensor_slices((bank.images_of("train").astype(np.float32), labels)) \
        .batch(args.batch).cache()

    results = dict(date=time.strftime("%Y-%m-%d"), machine=f"{platform.machine()}, {os.cpu_count()} CPU cores",
                   images=len(rows), image_size=args.size, batch=args.batch, copies=copies,
                   block_taps=args.block_taps, stages=[])
    keras.utils.set_random_seed(0)
    detector, _ = models.build_mobilenetv2(image_size=args.size, augment="flip", seed=0, block_taps=args.block_taps)
    for stage, fraction in (("head (frozen base)", 0.0), ("whole base, BN frozen", 1.0)):
        if fraction:
            models.prepare_finetune(detector, trainable_fraction=fraction)
        train.compile_detector(detector, 1e-4)
        model_bound = timed_epoch(detector, in_memory, args.repeats)
        row = dict(stage=stage, model_bound_images_per_s=round(len(rows) / model_bound, 1))
        if pipeline_ds is not None:
            fed = timed_epoch(detector, pipeline_ds, args.repeats)
            row.update(pipeline_images_per_s=round(len(rows) / fed, 1), share_of_model_bound=round(model_bound / fed, 3))
        results["stages"].append(row)
        print(row, flush=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
