"""Time notebook 02's three passes over the images (faces, crops, annotators) on a slice of a run's split.

Each pass decodes every image again; the annotators' pass decodes the next images in a background thread
(`helpers.decoding.read_ahead`) and the crops are written by two threads. This script times the
passes with empty caches in a temporary folder and prints a digest of what they produced (the detection
records, every crop's bytes, the annotation table), so that two checkouts can be compared on the same
images: the digests must be equal, only the seconds may differ.

    .venv/bin/python benchmarks/bench_annotation_passes.py --run sample --per-source 40 --out results.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from run_options import add_run_arguments

from helpers import annotate, config, faces, splits


def digest_of_crops(folder: Path) -> str:
    """SHA-256 over every crop's relative path and bytes, in path order."""
    total = hashlib.sha256()
    for path in sorted(folder.rglob("*.png")):
        total.update(str(path.relative_to(folder)).encode())
        total.update(path.read_bytes())
    return total.hexdigest()


def digest_of_table(frame) -> str:
    """SHA-256 of a pass's table as CSV, without its ``cached`` column (which says where a row came from)."""
    return hashlib.sha256(frame.drop(columns=["cached"]).to_csv(index=False).encode()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_arguments(parser, size=False, n_boot=False)
    parser.add_argument("--per-source", type=int, default=40, help="the first N images of each source (by path)")
    parser.add_argument("--detect-max-side", type=int, default=384, help="the sample profile's setting")
    parser.add_argument("--out", type=Path, default=None, help="write the timings and digests as JSON here")
    args = parser.parse_args()
    cfg = config.load_run_config(args.run)
    split = splits.load_split(cfg.path("split.csv"))
    chosen = split.sort_values("path").groupby("source").head(args.per_source).reset_index(drop=True)
    detector = faces.FaceDetector(min_confidence=0.9, max_side=args.detect_max_side)
    detector.detect_batch([np.zeros((64, 64, 3), np.uint8)])  # load MTCNN outside the timing
    annotators = annotate.make_annotators(["glasses", "gender", "expression", "race"])
    seconds = {}
    with tempfile.TemporaryDirectory() as scratch:
        start = time.perf_counter()
        detections = faces.detect_manifest(chosen, cfg.data_root, detector, cache_dir=Path(scratch, "cache"),
                                           progress=False)
        seconds["faces"] = time.perf_counter() - start
        start = time.perf_counter()
        detections = faces.write_crops(detections, cfg.data_root, Path(scratch, "crops"), progress=False)
        seconds["crops"] = time.perf_counter() - start
        start = time.perf_counter()
        annotations, _ = annotate.annotate_faces(detections, cfg.data_root, annotators, progress=False)
        seconds["annotate"] = time.perf_counter() - start
        digests = {"detections": digest_of_table(detections), "crops": digest_of_crops(Path(scratch, "crops")),
                   "annotations": digest_of_table(annotations)}
    result = {"images": len(chosen), "seconds": {k: round(v, 1) for k, v in seconds.items()},
              "ms_per_image": {k: round(1000 * v / len(chosen), 1) for k, v in seconds.items()}, "digests": digests}
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
