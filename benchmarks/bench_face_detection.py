"""How much of notebook 02's face-detection time does MTCNN's detection size decide, and at what cost?

Notebook 02 runs MTCNN (:class:`helpers.faces.FaceDetector`) over every image of the run; with the
eight-source sample that is its longest cell (687 s of 918 s cold on the 2-core VM, 2026-11-24).
MTCNN's cost grows with the pixels it scans (an image pyramid down to 12 px faces), so the
detector shrinks images whose longest side exceeds ``max_side`` and maps the boxes back. This
script takes the first ``--per-source`` images of every source (decoded once, in memory), detects
faces with each ``max_side`` in turn (two rounds in alternating order, the faster kept, so that
other load on the machine hits every setting alike) and compares each with the largest setting:
same face / no-face answer, and the overlap (IoU) of the chosen face's box.

With ``--run NAME`` it instead detects every image of that run's split (notebook 02's
``detect_manifest``, through the shared ``runs/cache/faces`` cache, so the reference setting
already run by notebook 02 is read back, and the other settings' entries warm the cache for the
next run) and compares the answers per source.

Usage:  .venv/bin/python benchmarks/bench_face_detection.py [--per-source 24] [--sides 1024 512 384]
        .venv/bin/python benchmarks/bench_face_detection.py --run sample --sides 1024 384
Not a test: times depend on the machine and on what else runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import date
from pathlib import Path

import numpy as np

from helpers import config, faces, splits
from helpers.data import load_image
from helpers.faces import Face, FaceDetector


def iou(a: Face | None, b: Face | None) -> float:
    """Intersection over union of two face boxes (NaN unless both exist)."""
    if a is None or b is None:
        return float("nan")
    ax, ay, aw, ah = a.box
    bx, by, bw, bh = b.box
    width = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    height = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = width * height
    return inter / float(aw * ah + bw * bh - inter)


def compare(chosen: dict[int, list[Face | None]], sources: np.ndarray, reference: int) -> list[dict]:
    """Per setting: faces found, the same face / no-face answer as ``reference`` and the chosen boxes'
    overlap with it (IoU), overall and per source."""
    rows = []
    for side, faces_found in chosen.items():
        expected = chosen[reference]
        same = np.array([(a is None) == (b is None) for a, b in zip(faces_found, expected)])
        overlaps = np.array([iou(a, b) for a, b in zip(faces_found, expected)])
        found = np.array([a is not None for a in faces_found])
        per_source = {}
        for source in sorted(set(sources)):
            index = np.flatnonzero(sources == source)
            both = overlaps[index][~np.isnan(overlaps[index])]
            per_source[source] = dict(found=round(float(found[index].mean()), 4),
                                      same_answer=round(float(same[index].mean()), 4),
                                      median_iou=round(float(np.median(both)), 3) if len(both) else None)
        measured = overlaps[~np.isnan(overlaps)]
        rows.append(dict(max_side=side, same_answer=round(float(same.mean()), 4),
                         iou_below_0_5=int(np.sum(measured < 0.5)), median_iou=round(float(np.median(measured)), 3),
                         iou_5th_percentile=round(float(np.percentile(measured, 5)), 3), per_source=per_source))
    return rows


def compare_run(run: str, sides: list[int]) -> dict:
    """Every image of a run's split at each setting (cached per file hash), compared with the first."""
    cfg = config.load_run_config(run)
    split = splits.load_split(cfg.path("split.csv"))
    chosen, seconds, cached = {}, {}, {}
    for side in sides:
        start = time.perf_counter()
        table = faces.detect_manifest(split, cfg.data_root, FaceDetector(max_side=side),
                                      cache_dir=cfg.cache_dir("faces"), progress=False)
        seconds[side] = round(time.perf_counter() - start, 1)
        chosen[side] = [faces.chosen_face(record) for record in table.itertuples(index=False)]
        cached[side] = int(table.cached.sum())
    sources = (split["label"] + "/" + split["source"]).to_numpy()
    rows = [dict(row, seconds=seconds[row["max_side"]], read_from_cache=cached[row["max_side"]])
            for row in compare(chosen, sources, sides[0])]
    for row in rows:
        print({k: v for k, v in row.items() if k != "per_source"}, flush=True)
    return dict(run=run, images=len(split), reference=sides[0], runs=rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="face data root (default: the usual search)")
    parser.add_argument("--per-source", type=int, default=24)
    parser.add_argument("--sides", nargs="+", type=int, default=[1024, 512, 384])
    parser.add_argument("--out", default=str(Path(__file__).with_name("results_face_detection.json")))
    parser.add_argument("--run", default=None, help="compare on every image of this run's split instead")
    args = parser.parse_args()
    if args.run:
        result = dict(date=str(date.today()), **compare_run(args.run, args.sides))
        Path(args.out).with_name(f"results_face_detection_{args.run}.json").write_text(json.dumps(result, indent=2) + "\n")
        return
    root = config.resolve_data_root(args.data)
    images, sources = [], []
    for folder in sorted(p for p in root.glob("*/*") if p.is_dir()):
        for path in sorted(folder.iterdir())[:args.per_source]:
            loaded = load_image(path)
            if loaded.ok:
                images.append(loaded.image)
                sources.append(f"{folder.parent.name}/{folder.name}")
    sources = np.array(sources)
    detectors = {side: FaceDetector(max_side=side) for side in args.sides}
    detectors[args.sides[0]].detect(np.zeros((64, 64, 3), np.uint8))  # load MTCNN once, outside the timing
    seconds: dict[int, float] = {}
    found: dict[int, list] = {}
    for round_index in range(2):
        order = args.sides if round_index == 0 else list(reversed(args.sides))
        for side in order:
            start = time.perf_counter()
            found[side] = detectors[side].detect_batch(images)
            seconds[side] = min(seconds.get(side, np.inf), time.perf_counter() - start)
    chosen = {side: [found_faces[0] if found_faces else None for found_faces in found[side]] for side in args.sides}
    rows = [dict(row, seconds=round(seconds[row["max_side"]], 1),
                 ms_per_image=round(1000 * seconds[row["max_side"]] / len(images), 1),
                 speedup=round(seconds[args.sides[0]] / seconds[row["max_side"]], 2))
            for row in compare(chosen, sources, args.sides[0])]
    for row in rows:
        print(f"max_side {row['max_side']}: {row['ms_per_image']} ms/img, x{row['speedup']}, same answer "
              f"{row['same_answer']:.3f}, median IoU {row['median_iou']}, IoU<0.5: {row['iou_below_0_5']}", flush=True)
    result = dict(date=str(date.today()), machine=f"{platform.machine()}, {os.cpu_count()} CPU cores",
                  images=len(images), per_source=args.per_source, reference=args.sides[0], runs=rows)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
