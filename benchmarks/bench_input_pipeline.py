"""Input pipeline vs model throughput on the face sample (images per second).

Measures, on the machine it runs on:
  1. the validated loader alone (decode + resize), one thread and a thread pool;
  2. the tf.data pipeline, first pass (decoding) and second pass (in-memory cache);
  3. model forward passes of MobileNetV2 and ResNet50 on in-memory tensors;
  4. one training epoch of the frozen-head MobileNetV2 fed from in-memory tensors (the
     model-only bound) vs by the pipeline (first epoch decoding, later epochs cached).

Usage:  .venv/bin/python benchmarks/bench_input_pipeline.py [--images 600] [--size 180]
Writes a JSON next to the printout when --out is given. Not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from concurrent.futures import ThreadPoolExecutor

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from helpers import config, data, models, pipeline  # noqa: E402


def _rate(count: int, seconds: float) -> float:
    return round(count / seconds, 1)


def _median_rate(count: int, run, repeats: int = 3) -> float:
    """Median images/s over ``repeats`` timed calls of ``run`` (this 2-core VM is noisy)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return _rate(count, float(np.median(times)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=600, help="images from the sample (balanced by source)")
    parser.add_argument("--size", type=int, default=180)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    root = config.resolve_data_root()
    per_source = max(1, args.images // 5)
    frame = data.usable(data.scan_folder(root, limit_per_source=per_source, progress=False))
    n = len(frame)
    paths = [root / p for p in frame["path"]]
    results: dict[str, float | str | int] = dict(images=n, size=args.size, cpus=os.cpu_count() or 0,
                                                 machine=platform.processor() or platform.machine())

    start = time.perf_counter()
    for p in paths:
        data.load_image(p, size=args.size)
    results["loader_1_thread_img_s"] = _rate(n, time.perf_counter() - start)
    start = time.perf_counter()
    with ThreadPoolExecutor(os.cpu_count()) as pool:
        list(pool.map(lambda p: data.load_image(p, size=args.size), paths))
    results["loader_thread_pool_img_s"] = _rate(n, time.perf_counter() - start)

    dataset = pipeline.make_dataset(frame, root, args.size, args.batch)
    for label in ("tfdata_first_pass_img_s", "tfdata_cached_pass_img_s"):
        start = time.perf_counter()
        for _ in dataset:
            pass
        results[label] = _rate(n, time.perf_counter() - start)

    tensors = np.concatenate([x.numpy() for x, _ in dataset])
    labels = pipeline.labels_of(frame).astype("float32")
    for arch in ("mobilenetv2", "resnet50"):
        weights = None if arch == "resnet50" else "imagenet"  # no offline ResNet50 weights
        model, _ = models.build_detector(arch, image_size=args.size, weights=weights)
        model.predict(tensors, batch_size=args.batch, verbose=0)
        results[f"{arch}_forward_img_s"] = _median_rate(
            n, lambda m=model: m.predict(tensors, batch_size=args.batch, verbose=0))

    # Training throughput: the same frozen-head epoch fed from in-memory tensors (model-only
    # bound) and from the pipeline, first epoch (decoding) and later epochs (cache).
    model, _ = models.build_mobilenetv2(image_size=args.size)
    model.compile(optimizer="adam", loss="binary_crossentropy")
    in_memory = tf.data.Dataset.from_tensor_slices((tensors, labels)).batch(args.batch).prefetch(2)
    model.fit(in_memory, epochs=1, verbose=0)  # trace for the full and the last partial batch
    results["mobilenetv2_head_epoch_model_only_img_s"] = _median_rate(
        n, lambda: model.fit(in_memory, epochs=1, verbose=0))
    train = pipeline.make_dataset(frame, root, args.size, args.batch, shuffle=True)
    start = time.perf_counter()
    model.fit(train, epochs=1, verbose=0)
    results["mobilenetv2_head_epoch_pipeline_first_img_s"] = _rate(n, time.perf_counter() - start)
    results["mobilenetv2_head_epoch_pipeline_cached_img_s"] = _median_rate(
        n, lambda: model.fit(train, epochs=1, verbose=0))
    for stage in ("first", "cached"):
        results[f"pipeline_{stage}_vs_model_only"] = round(
            results[f"mobilenetv2_head_epoch_pipeline_{stage}_img_s"]
            / results["mobilenetv2_head_epoch_model_only_img_s"], 3)

    width = max(len(k) for k in results)
    for key, value in results.items():
        print(f"{key:<{width}}  {value}")
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(results, handle, indent=2)
    tf.keras.backend.clear_session()


if __name__ == "__main__":
    main()
