"""The report's Table 3 grid, naive (a full model per point, on images) vs cached (heads on frozen
features computed once), and feature-extraction throughput per backbone and size.

Measures, on the machine it runs on, for MobileNetV2 (offline ImageNet weights) on the face sample:
  1. the naive grid: every (learning rate, dropout) point trains a full frozen-backbone model on
     images (decode cached in memory, as in notebook 03) — wall time and the selected point;
  2. the cached grid: one feature pass over the training images and their mirror images and over
     validation, then one head per point — wall time with and without the one-off extraction,
     and the selected point (must be the same);
  3. feature extraction images/s for each backbone at a few sizes (random weights where ImageNet
     weights cannot be had offline: the speed is the same).

Usage:  .venv/bin/python benchmarks/bench_grid_cache.py [--per-source 150] [--size 180] [--out F] [--skip-extraction]
Not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from helpers import config, data, features, grid, models, splits  # noqa: E402


def _split(per_source: int, seed: int):
    root = config.resolve_data_root()
    manifest = data.usable(data.scan_folder(root, progress=False))
    split = splits.split_manifest(manifest, seed=seed)
    return root, splits.subsample(split, "train", per_source, seed), split[split.split == "val"]


def grid_benchmark(root, train_frame, val_frame, size: int, epochs: int, seed: int) -> dict:
    points = {"learning_rate": [1e-4, 5e-4, 1e-3], "dropout": [0.05, 0.1, 0.2]}

    def build(point):
        return models.build_mobilenetv2(image_size=size, dropout=point["dropout"], augment=False, seed=seed)[0]

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for method in ("cached", "naive"):
            start = time.perf_counter()
            table = grid.grid_table(method, build, points, train_frame, val_frame, root, size, f"{tmp}/{method}",
                                     f"table3_{method}", 32, epochs, cache_dir=f"{tmp}/features", seed=seed,
                                     build_head=lambda p: models.build_head("mobilenetv2", dropout=p["dropout"],
                                                                            seed=seed))
            seconds = time.perf_counter() - start
            best = table[table.selected].iloc[0]
            out[method] = dict(seconds=round(seconds, 1), selected=dict(learning_rate=float(best.learning_rate),
                                                                         dropout=float(best.dropout)),
                               best_val_auc=round(float(best.best_val_auc), 4),
                               val_auc=[round(float(v), 4) for v in table.best_val_auc],
                               feature_seconds=float(table.get("feature_seconds", [0.0])[0]))
    cached = out["cached"]
    out["speedup_including_extraction"] = round(out["naive"]["seconds"] / cached["seconds"], 1)
    out["speedup_grid_only"] = round(out["naive"]["seconds"] / max(cached["seconds"] - cached["feature_seconds"], 1e-6), 1)
    out["same_selection"] = cached["selected"] == out["naive"]["selected"]
    out["rank_correlation"] = round(float(np.corrcoef(np.argsort(np.argsort(cached["val_auc"])),
                                                      np.argsort(np.argsort(out["naive"]["val_auc"])))[0, 1]), 3)
    return out


def extraction_benchmark(root, frame, sizes=(128, 180, 224)) -> list[dict]:
    rows = []
    for arch in ("mobilenetv2", "mobilenet", "resnet50", "inceptionresnetv2"):
        for size in sizes:
            weights = "imagenet" if arch == "mobilenetv2" else None
            model, _ = models.build_detector(arch, image_size=size, weights=weights)
            features.extract_features(model, frame.head(32), root, size, 32, flips=False)  # warm-up
            cache = features.extract_features(model, frame, root, size, 32, flips=False)
            rows.append(dict(backbone=arch, size=size, images=len(frame),
                             images_per_s=round(len(frame) / float(cache["seconds"]), 1)))
            print(rows[-1])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-source", type=int, default=150)
    parser.add_argument("--size", type=int, default=180)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--extraction-images", type=int, default=256)
    parser.add_argument("--out", default="benchmarks/results_grid_cache.json")
    parser.add_argument("--skip-extraction", action="store_true",
                        help="grid only; keep the extraction rows (and their date) of the --out file")
    args = parser.parse_args()
    root, train_frame, val_frame = _split(args.per_source, args.seed)
    result = dict(date=time.strftime("%Y-%m-%d"), machine=f"{platform.machine()}, {os.cpu_count()} CPU cores",
                  train_images=len(train_frame), val_images=len(val_frame), image_size=args.size,
                  epochs=args.epochs)
    result["grid"] = grid_benchmark(root, train_frame, val_frame, args.size, args.epochs, args.seed)
    print(json.dumps(result["grid"], indent=2))
    if args.skip_extraction and os.path.exists(args.out):
        with open(args.out) as handle:
            previous = json.load(handle)
        result["extraction"] = previous["extraction"]
        result["extraction_date"] = previous.get("extraction_date", previous["date"])
    else:
        result["extraction"] = extraction_benchmark(root, val_frame.head(args.extraction_images))
    with open(args.out, "w") as handle:
        json.dump(result, handle, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
