"""Face detection with MTCNN (the ``mtcnn`` package ships its weights, so it works offline).

:class:`FaceDetector` returns every face with its box, confidence and five landmarks, one image
or a batch at a time (MTCNN runs ~5x faster on a stack of same-size images). :func:`crop_face`
cuts a square around a box with a margin, kept inside the image; :func:`align_face` first
rotates the image so the eyes are level. :func:`detect_manifest` runs the detector over a whole
manifest with a progress bar and a per-image cache keyed by the file's SHA-256, so re-runs are
instant; :func:`write_crops` saves the chosen face of every image for training on crops.

Policy: no face → status ``no_face`` with the reason; several faces → the most confident
(then largest) is used, and every face is kept in the ``faces`` column of the record.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from helpers import atomic

KEYPOINTS = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")


@dataclass
class Face:
    """One detected face: box ``(x, y, width, height)`` in pixels, confidence, landmarks."""

    box: tuple[int, int, int, int]
    confidence: float
    keypoints: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def area(self) -> int:
        return int(self.box[2] * self.box[3])

    def to_dict(self) -> dict:
        return {"box": list(self.box), "confidence": round(self.confidence, 5),
                "keypoints": {k: list(v) for k, v in self.keypoints.items()}}

    @classmethod
    def from_dict(cls, data: dict) -> Face:
        return cls(tuple(int(v) for v in data["box"]), float(data["confidence"]),
                   {k: (int(v[0]), int(v[1])) for k, v in data.get("keypoints", {}).items()})

    def scaled(self, factor: float) -> Face:
        """The same face in an image ``factor`` times larger."""
        return Face(tuple(int(round(v * factor)) for v in self.box), self.confidence,
                    {k: (int(round(x * factor)), int(round(y * factor))) for k, (x, y) in self.keypoints.items()})


class FaceDetector:
    """MTCNN, loaded on first use; faces below ``min_confidence`` or ``min_size`` pixels are ignored.

    Images larger than ``max_side`` are downscaled for detection (boxes are mapped back), which
    bounds the time and memory a huge photo costs without changing what is found.
    """

    def __init__(self, min_confidence: float = 0.9, min_size: int = 20, max_side: int = 1024) -> None:
        self.min_confidence, self.min_size, self.max_side = min_confidence, min_size, max_side
        self._mtcnn = None

    @property
    def settings_key(self) -> str:
        """Identifies the settings in cache entries (changing a setting invalidates the cache)."""
        return f"mtcnn-c{self.min_confidence}-s{self.min_size}-m{self.max_side}"

    def _model(self):
        if self._mtcnn is None:
            from mtcnn import MTCNN

            self._mtcnn = MTCNN()
        return self._mtcnn

    def _convert(self, items: list[dict], factor: float) -> list[Face]:
        found = []
        for item in items:
            x, y, w, h = (int(v) for v in item["box"])
            if item["confidence"] >= self.min_confidence and min(w, h) * factor >= self.min_size:
                keypoints = {k: (int(v[0]), int(v[1])) for k, v in item.get("keypoints", {}).items()}
                found.append(Face((max(x, 0), max(y, 0), w, h), float(item["confidence"]), keypoints).scaled(factor))
        return sorted(found, key=lambda f: (round(f.confidence, 2), f.area), reverse=True)

    def _shrink(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        side = max(image.shape[:2])
        if side <= self.max_side:
            return np.ascontiguousarray(image), 1.0
        scale = self.max_side / side
        size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
        return np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR)), 1 / scale

    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces in an RGB uint8 image, most confident and largest first."""
        return self.detect_batch([image])[0]

    def detect_batch(self, images: list[np.ndarray], batch_size: int = 16) -> list[list[Face]]:
        """Faces for each image; same-size images are stacked and run as one MTCNN batch."""
        results: list[list[Face]] = [[] for _ in images]
        by_shape: dict[tuple, list[tuple[int, np.ndarray, float]]] = defaultdict(list)
        for index, image in enumerate(images):
            if image.shape[0] < self.min_size or image.shape[1] < self.min_size:
                continue
            small, factor = self._shrink(image)
            by_shape[small.shape].append((index, small, factor))
        for group in by_shape.values():
            for start in range(0, len(group), batch_size):
                chunk = group[start:start + batch_size]
                stack = [item[1] for item in chunk]
                found = self._model().detect_faces(stack if len(stack) > 1 else stack[0])
                found = found if len(stack) > 1 else [found]
                for (index, _, factor), items in zip(chunk, found):
                    results[index] = self._convert(items, factor)
        return results


def crop_face(image: np.ndarray, face: Face, margin: float = 0.4) -> np.ndarray:
    """A square crop around the face box with ``margin`` of the box size added on each side.

    The square is shifted (and, if needed, shrunk) to stay inside the image, so no made-up
    pixels enter the crop; a face at the border is simply off-centre.
    """
    x, y, w, h = face.box
    height, width = image.shape[:2]
    side = min(int(round(max(w, h) * (1 + 2 * margin))), height, width)
    left = int(np.clip(round(x + w / 2 - side / 2), 0, width - side))
    top = int(np.clip(round(y + h / 2 - side / 2), 0, height - side))
    return image[top:top + side, left:left + side].copy()


def eye_angle(face: Face) -> float:
    """Angle in degrees of the line from the left to the right eye (0 when level)."""
    (lx, ly), (rx, ry) = face.keypoints["left_eye"], face.keypoints["right_eye"]
    return math.degrees(math.atan2(ry - ly, rx - lx))


def align_face(image: np.ndarray, face: Face) -> tuple[np.ndarray, Face]:
    """The image rotated about the eyes' midpoint so the eyes are level, and the face moved with it.

    Without eye landmarks the inputs are returned unchanged. Corners the rotation uncovers are
    black; crop with a margin that keeps them out, or use unaligned crops.
    """
    if not {"left_eye", "right_eye"} <= set(face.keypoints):
        return image, face
    angle = eye_angle(face)
    (lx, ly), (rx, ry) = face.keypoints["left_eye"], face.keypoints["right_eye"]
    cx, cy = (lx + rx) / 2, (ly + ry) / 2
    rotated = np.asarray(Image.fromarray(image).rotate(angle, resample=Image.BILINEAR, center=(cx, cy)))
    theta = math.radians(angle)
    cos, sin = math.cos(theta), math.sin(theta)

    def move(px: float, py: float) -> tuple[int, int]:  # PIL rotates counter-clockwise on screen
        dx, dy = px - cx, py - cy
        return int(round(cx + dx * cos + dy * sin)), int(round(cy - dx * sin + dy * cos))

    x, y, w, h = face.box
    bx, by = move(x + w / 2, y + h / 2)
    moved = Face((bx - w // 2, by - h // 2, w, h), face.confidence, {k: move(*p) for k, p in face.keypoints.items()})
    return rotated, moved


def face_crop(image: np.ndarray, face: Face, margin: float = 0.4, align: bool = False) -> np.ndarray:
    """Crop one face, aligned (eyes level) when ``align`` is true."""
    if align:
        image, face = align_face(image, face)
    return crop_face(image, face, margin)


def _read_cached(path: Path) -> dict | None:
    """A kept detection record, or None: absent, or unreadable (removed with a warning, detected again)."""
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        warnings.warn(f"face cache entry {path.name} is unreadable ({type(exc).__name__}): detecting again",
                      stacklevel=3)
        path.unlink(missing_ok=True)
        return None


def _cache_file(cache_dir: Path, sha256: str) -> Path:
    return cache_dir / sha256[:2] / f"{sha256}.json"


def detect_manifest(manifest: pd.DataFrame, root: str | os.PathLike, detector: FaceDetector | None = None,
                    cache_dir: str | os.PathLike | None = None, batch_size: int = 16,
                    progress: bool = True) -> pd.DataFrame:
    """Detect faces in every manifest row; one record per image.

    Columns: ``path, sha256, label, source, face_status`` (``face``/``no_face``/``unreadable``),
    ``face_reason``, ``n_faces``, ``face_confidence``, ``face_box`` and ``face_keypoints`` (JSON,
    of the chosen face), ``faces`` (JSON list of all faces) and ``cached``. Results are cached
    per SHA-256 under ``cache_dir/<settings>/``: a second run loads no image and runs no model.
    """
    from tqdm.auto import tqdm

    from helpers.data import load_image

    detector = detector or FaceDetector()
    root = Path(root)
    cache = Path(cache_dir) / detector.settings_key if cache_dir else None
    records: dict[int, dict] = {}
    todo = []
    for index, row in enumerate(manifest.itertuples(index=False)):
        sha = getattr(row, "sha256", None) or hashlib.sha256(str(row.path).encode()).hexdigest()
        cached = _read_cached(_cache_file(cache, sha)) if cache else None
        if cached is not None:
            records[index] = {**cached, "cached": True}
        else:
            todo.append((index, row, sha))
    with tqdm(total=len(todo), desc="faces", unit="img", disable=not progress or not todo) as bar:
        for start in range(0, len(todo), batch_size * 4):
            chunk = todo[start:start + batch_size * 4]
            loaded = [load_image(root / str(row.path)) for _, row, _ in chunk]
            found = detector.detect_batch([item.image for item in loaded if item.ok], batch_size)
            found_iter = iter(found)
            for (index, _, sha), item in zip(chunk, loaded):
                record = _record(item, next(found_iter) if item.ok else None, detector.min_size)
                if cache is not None:
                    atomic.write_json(_cache_file(cache, sha), record)
                records[index] = {**record, "cached": False}
            bar.update(len(chunk))
    table = pd.DataFrame([records[i] for i in range(len(manifest))], index=manifest.index)
    keep = [c for c in ("path", "sha256", "label", "source") if c in manifest.columns]
    return pd.concat([manifest[keep], table], axis=1).reset_index(drop=True)


def _record(loaded, faces: list[Face] | None, min_size: int) -> dict:
    """The cacheable detection record of one image."""
    if faces is None:
        return dict(face_status="unreadable", face_reason=str(loaded.error), n_faces=0, face_confidence=np.nan,
                    face_box="", face_keypoints="", faces="[]")
    if not faces:
        height, width = loaded.image.shape[:2]
        reason = (f"image too small ({width}x{height}) for faces of {min_size}+ px"
                  if min(height, width) < min_size else "no face detected")
        return dict(face_status="no_face", face_reason=reason, n_faces=0, face_confidence=np.nan,
                    face_box="", face_keypoints="", faces="[]")
    best = faces[0]
    return dict(face_status="face", face_reason="" if len(faces) == 1 else f"{len(faces)} faces; most confident kept",
                n_faces=len(faces), face_confidence=best.confidence, face_box=json.dumps(list(best.box)),
                face_keypoints=json.dumps({k: list(v) for k, v in best.keypoints.items()}),
                faces=json.dumps([f.to_dict() for f in faces]))


def chosen_face(record) -> Face | None:
    """The chosen :class:`Face` of a :func:`detect_manifest` row (``None`` without a face)."""
    if getattr(record, "face_status", None) != "face":
        return None
    return Face(tuple(json.loads(record.face_box)), float(record.face_confidence),
                {k: tuple(v) for k, v in json.loads(record.face_keypoints).items()})


def detection_summary(faces_table: pd.DataFrame) -> pd.DataFrame:
    """Face-detection rate per source: images, with a face, with several, none, unreadable."""
    grouped = faces_table.groupby(["label", "source"])
    summary = pd.DataFrame({
        "images": grouped.size(),
        "face": grouped["face_status"].apply(lambda s: int((s == "face").sum())),
        "several_faces": grouped["n_faces"].apply(lambda s: int((s > 1).sum())),
        "no_face": grouped["face_status"].apply(lambda s: int((s == "no_face").sum())),
        "unreadable": grouped["face_status"].apply(lambda s: int((s == "unreadable").sum())),
    }).reset_index()
    summary["detection_rate"] = (summary["face"] / summary["images"]).round(4)
    return summary


def write_crops(faces_table: pd.DataFrame, root: str | os.PathLike, crops_root: str | os.PathLike,
                size: int = 256, margin: float = 0.4, align: bool = False, progress: bool = True) -> pd.DataFrame:
    """Save the chosen face of every image as ``crops_root/<path>.png`` (square, ``size`` px).

    Returns the table with ``crop_path`` (relative to ``crops_root``; empty without a face).
    Existing crops are kept, so a re-run only writes what is missing.
    """
    from tqdm.auto import tqdm

    from helpers.data import load_image, resize_square

    root, crops_root = Path(root), Path(crops_root)

    def write(record) -> str:
        face = chosen_face(record)
        if face is None:
            return ""
        relative = f"{record.path}.png"  # keeps a.jpg and a.png apart
        target = crops_root / relative
        if not target.exists():
            loaded = load_image(root / str(record.path))
            if not loaded.ok:
                return ""
            crop = resize_square(face_crop(loaded.image, face, margin, align), size)
            with atomic.atomic_path(target) as partial:  # each thread its own temporary
                Image.fromarray(crop).save(partial, format="PNG", compress_level=1)  # fast, lossless
        return relative

    records = list(faces_table.itertuples(index=False))
    # Decoding, resizing and PNG encoding release the GIL: two threads (the lab's 2 cores) write the crops,
    # 1.8x faster than one (benchmarks/README.md, "Notebook 02's passes over the images"); each image its own file.
    with ThreadPoolExecutor(max_workers=2) as pool:
        crop_paths = list(tqdm(pool.map(write, records), total=len(records), desc="crops", unit="img",
                               disable=not progress))
    return faces_table.assign(crop_path=crop_paths)


def input_view(split_frame: pd.DataFrame, data_root: str | os.PathLike, run_dir: str | os.PathLike,
               input_kind: str = "image") -> tuple[pd.DataFrame, Path]:
    """The split and root the models read: whole images (``image``) or face crops (``face``).

    For ``face``, rows come from ``run_dir/annotations.csv`` written by notebook 02: ``path``
    becomes the crop (relative to the returned root) and ``image_path`` keeps the original;
    images with no face are left out and counted in the printed message (never silently).
    """
    if input_kind == "image":
        return split_frame, Path(data_root)
    if input_kind != "face":
        raise ValueError(f"input_kind must be 'image' or 'face', not {input_kind!r}")
    table_path = Path(run_dir) / "annotations.csv"
    if not table_path.exists():
        raise FileNotFoundError(f"{table_path} not found: run notebook 02 (annotation) to make face crops")
    crops = pd.read_csv(table_path, usecols=["path", "crop_path"], keep_default_na=False)
    merged = split_frame.merge(crops, on="path", how="left")
    has_crop = merged["crop_path"].fillna("").astype(str) != ""
    dropped = merged[~has_crop]
    if len(dropped):
        counts = dropped.groupby(["split", "source"]).size().to_dict()
        print(f"input_kind='face': {len(dropped)} images without a detected face are left out: {counts}")
    view = merged[has_crop].assign(image_path=merged.loc[has_crop, "path"], path=merged.loc[has_crop, "crop_path"])
    view = view.drop(columns="crop_path")
    return view.reset_index(drop=True), Path(run_dir) / "faces" / "crops"

