"""Scoring new images with a trained detector: finding models, loading them with their threshold.

A trained model lives at ``runs/<run>/models/<key>.keras``; notebook 05 writes its
validation-chosen threshold and test metrics to ``runs/<run>/metrics/<key>_metrics.json``.
The served detector (``runs/<run>/models/served.keras``, notebook 08) carries its own record
(:mod:`helpers.served`): an operating point with an "unsure" band and a check for images unlike
its training images; it is the default wherever one exists. :class:`Predictor` carries either,
and scores files through the validated loader, reporting unreadable files with their reason
instead of failing.
"""

from __future__ import annotations

import json
import os
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from helpers import config
from helpers.data import DEFAULT_DECODE_BUDGET, DecodeBudget, LoadedImage, load_image, path_text, resize_square
from helpers.inputs import (  # noqa: F401 - the listing and cell rules, also reached as helpers.predict.*
    EMPTY_FOLDER,
    HIDDEN,
    LINKED_FOLDER,
    SPREADSHEET_TRIGGERS,
    has_odd_name,
    image_files,
    input_entries,
    needs_escape,
    shown_message,
    shown_path,
    spreadsheet_safe,
    spreadsheet_text,
)

MIN_VAL_IMAGES = 50  # a validation AUC on fewer images (e.g. the smoke profile) is too noisy to rank by
MIN_SIDE_FOR_VERDICT = 32  # smaller images get a reason, not a verdict
MAX_DECODE_THREADS = 4
RESULT_COLUMNS = ["path", "score", "label", "threshold", "unsure_reason", "error"]
FACE_COLUMNS = ["path", "face", "box", "face_confidence", "score", "label", "threshold", "unsure_reason", "error"]


class NoModelError(FileNotFoundError):
    """No trained model was found; the message says how to train one."""


class ModelUnusable(NoModelError):
    """A model path was given but is not a usable detector (not a Keras file, corrupt, outside the runs folder)."""


def metrics_for(model_path: str | Path) -> dict:
    """The metrics JSON written by notebook 05 for a model file (for the served detector, the same
    fields from its record), or ``{}``."""
    from helpers import served

    model_path = Path(model_path)
    record = served.read_record(model_path)
    if record:
        return dict(model=f"served: {record.recipe.get('name', '')}", served=True,
                    val=dict(auc=record.validation["auc"], n=record.validation["n"]),
                    test=dict(auc=record.test_auc),
                    threshold=record.operating_point.fake_threshold, image_size=record.image_size,
                    weights=record.weights)
    candidate = model_path.parent.parent / "metrics" / f"{model_path.stem}_metrics.json"
    return json.loads(candidate.read_text()) if candidate.exists() else {}


def find_models(root: str | Path | None = None) -> pd.DataFrame:
    """Evaluated models under the runs folder: served detectors first, then best validation AUC first.

    Columns: ``path``, ``run``, ``key``, ``model``, ``served``, ``val_auc``, ``val_n``, ``test_auc``,
    ``threshold``, ``image_size``, ``weights``. Models validated on fewer than
    ``MIN_VAL_IMAGES`` images come after the others; models without metrics come last.
    """
    rows = []
    for path in sorted(Path(root or config.default_runs_root()).glob("*/models/*.keras")):
        metrics = metrics_for(path)
        rows.append(dict(path=str(path), run=path.parent.parent.name, key=path.stem,
                         model=metrics.get("model", path.stem), served=bool(metrics.get("served")),
                         val_auc=(metrics.get("val") or {}).get("auc"),
                         val_n=(metrics.get("val") or {}).get("n", 0),
                         test_auc=(metrics.get("test") or {}).get("auc"),
                         threshold=metrics.get("threshold"), image_size=metrics.get("image_size"),
                         weights=(metrics.get("weights") or {}).get("source", "")))
    table = pd.DataFrame(rows, columns=["path", "run", "key", "model", "served", "val_auc", "val_n", "test_auc",
                                        "threshold", "image_size", "weights"])
    table["_enough"] = table["val_n"].fillna(0) >= MIN_VAL_IMAGES
    table = table.sort_values(["_enough", "served", "val_auc"], ascending=False, na_position="last")
    return table.drop(columns="_enough").reset_index(drop=True)


def default_model(root: str | Path | None = None) -> Path:
    """The first model of :func:`find_models` that was evaluated (a served detector validated on enough
    images before any other); :class:`NoModelError` if none was."""
    models = find_models(root).dropna(subset=["val_auc"])
    if models.empty:
        raise NoModelError(f"no evaluated model under {root or config.default_runs_root()}: train one with `make smoke` "
                           "(minutes) or `make reproduce`, or pass --model PATH")
    return Path(models.iloc[0]["path"])


def allowed_model_path(text: str, root: str | Path | None = None) -> Path:
    """The model a person typed, accepted only as a ``.keras`` file inside the runs folder.

    The app's path box goes through this, so it cannot be used to probe the server's files:
    anything outside ``root`` (after resolving links and ``..``) gets the same answer whether
    it exists or not. Raises :class:`ModelUnusable` with a one-line reason.
    """
    root = Path(root or config.default_runs_root()).resolve()
    refusal = "only .keras models inside the runs folder can be loaded; pick one from the list"
    try:
        candidate = Path(text.strip()).expanduser()
        candidate = (candidate if candidate.is_absolute() else root / candidate).resolve()
        if not candidate.is_relative_to(root) or candidate.suffix != ".keras":
            raise ModelUnusable(refusal)
        found = candidate.is_file()
    except (ValueError, OSError, RuntimeError):  # a NUL byte, a name too long for the system, a link loop
        raise ModelUnusable(refusal) from None
    if not found:
        raise ModelUnusable(f"no model file {path_text(candidate.relative_to(root))} in the runs folder")
    return candidate


MAX_MODEL_UNPACKED_BYTES = 1 << 30  # a detector's archive may unpack to 1 GiB (ResNet50 with Adam's moments: ~300 MB)
MAX_MODEL_RATIO = 100  # weights compress ~1.1:1; a member that unpacks to 100x its size is a decompression bomb


def archive_problem(path: str | Path) -> str | None:
    """Why a ``.keras`` archive must not be unpacked, read from its directory alone (nothing extracted):
    more than :data:`MAX_MODEL_UNPACKED_BYTES` declared in all, or a member compressed more than
    :data:`MAX_MODEL_RATIO` to one. None for an archive that is safe to open."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (OSError, zipfile.BadZipFile, ValueError) as exc:
        return f"unreadable archive ({type(exc).__name__})"
    declared = sum(member.file_size for member in members)
    if declared > MAX_MODEL_UNPACKED_BYTES:
        return (f"its archive unpacks to {declared / 2**20:,.0f} MiB (limit {MAX_MODEL_UNPACKED_BYTES / 2**20:,.0f} "
                "MiB)")
    for member in members:
        if member.file_size > MAX_MODEL_RATIO * max(member.compress_size, 1) and member.file_size > 1 << 20:
            return (f"its member {member.filename[:80]!r} unpacks to {member.file_size / max(member.compress_size, 1):,.0f}"
                    f" times its size (a decompression bomb; limit {MAX_MODEL_RATIO})")
    return None


@dataclass
class Predictor:
    """A loaded detector with its threshold (validation-chosen when notebook 05 ran).

    A served detector also has an operating point with an "unsure" band (``point``), a feature
    distance for images unlike its training images (``distance``) and test-time mirroring
    (``tta_flip``) and may re-encode every picture before its resize (``reencode``, its recipe's
    ``score_reencode``); any other model answers fake/real at its single threshold.
    """

    model: object
    threshold: float
    image_size: int
    name: str
    path: Path
    metrics: dict = field(default_factory=dict)
    point: object = None       # helpers.served.OperatingPoint
    distance: object = None    # helpers.served.FeatureDistance
    tta_flip: bool = False
    reencode: str = ""         # e.g. "jpeg:95" (helpers.perturb), at the picture's own resolution
    _scorer: object = field(default=None, repr=False)

    @classmethod
    def load(cls, model_path: str | Path) -> Predictor:
        """Load a ``.keras`` detector and its metrics; :class:`NoModelError` / :class:`ModelUnusable` say why not."""
        model_path = Path(model_path)
        if not model_path.exists():
            raise NoModelError(f"model file {path_text(model_path)} not found")
        if not model_path.is_file() or model_path.suffix != ".keras":
            raise ModelUnusable(f"{path_text(model_path)} is not a .keras model file")
        if not zipfile.is_zipfile(model_path):  # a Keras 3 model file is a zip archive: say so before importing TensorFlow
            raise ModelUnusable(f"{path_text(model_path)} cannot be loaded as a detector: not a Keras archive "
                                "(a .keras file is a zip)")
        problem = archive_problem(model_path)
        if problem:
            raise ModelUnusable(f"{path_text(model_path)} cannot be loaded as a detector: {problem}")
        from helpers import served  # TensorFlow: only once there is a model file to load (a wrong path answers at once)
        from helpers.models import load_detector

        try:
            model = load_detector(model_path)
            metrics = metrics_for(model_path)
            record = served.read_record(model_path)
            extra = dict(point=record.operating_point, distance=served.load_distance(model_path, record),
                         tta_flip=record.tta_flip, reencode=record.recipe.get("score_reencode", "")) if record else {}
        except Exception as exc:  # noqa: BLE001 - any failure to load means one thing to the user
            reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise ModelUnusable(f"{path_text(model_path)} cannot be loaded as a detector: {reason}") from exc
        return cls(model=model, threshold=float(metrics.get("threshold", 0.5)),
                   image_size=int(metrics.get("image_size") or model.input_shape[1]),
                   name=metrics.get("model", model_path.stem), path=model_path, metrics=metrics, **extra)

    @property
    def warnings(self) -> list[str]:
        """What a user must know before trusting this model's verdicts (shown by the CLI and the app)."""
        notes = []
        val_n = int((self.metrics.get("val") or {}).get("n", 0) or 0)
        if not self.metrics:
            notes.append("this model was never evaluated: its threshold is the default 0.5, not validation-chosen")
        elif val_n < MIN_VAL_IMAGES:
            notes.append(f"this model was validated on only {val_n} images (fewer than {MIN_VAL_IMAGES}): "
                         "its threshold and scores are unreliable")
        weights_warning = (self.metrics.get("weights") or {}).get("warning")
        if weights_warning:
            notes.append(weights_warning)
        return notes

    @property
    def input_kind(self) -> str:
        """The framing the model was trained and measured on: ``image`` (whole pictures) or ``face`` (crops)."""
        return str(self.metrics.get("input_kind") or "image")

    @property
    def operating_point(self):
        """The served operating point, or a single threshold (no unsure band) for other models."""
        from helpers.served import OperatingPoint

        return self.point or OperatingPoint(self.threshold, self.threshold)

    def single_pass_scores(self, images: np.ndarray) -> np.ndarray:
        """P(fake) from one pass of the model, without the mirror: what an exported model computes."""
        return np.asarray(self.model.predict(images.astype(np.float32), verbose=0)).reshape(-1)

    def _scores_and_features(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        images = images.astype(np.float32)
        if self.distance is None:
            scores = self.single_pass_scores(images)
            pooled = None
        else:
            if self._scorer is None:
                from helpers.features import scores_and_features

                self._scorer = scores_and_features(self.model)
            scores, pooled = self._scorer.predict(images, verbose=0)
            scores = np.asarray(scores).reshape(-1)
        if self.tta_flip:
            scores = (scores + self.single_pass_scores(images[:, :, ::-1])) / 2
        return scores, pooled

    def score_arrays(self, images: np.ndarray) -> np.ndarray:
        """P(fake) for ``(n, size, size, 3)`` 0..255 images (averaged with the mirror when the model says so)."""
        return self._scores_and_features(images)[0]

    def assess(self, images: np.ndarray):
        """Scores and :class:`helpers.served.ServedAnswers` (verdict and, for unsure, the reason) for images."""
        from helpers.served import answer

        scores, pooled = self._scores_and_features(images)
        if pooled is None:
            return scores, answer(self.operating_point, scores)
        return scores, answer(self.operating_point, scores, self.distance.distances(pooled), self.distance.max_distance)

    def model_input(self, image: np.ndarray, key: str = "") -> np.ndarray:
        """A decoded picture (8-bit RGB, any size) as the model takes it: the detector's re-encoding, if
        any, at the picture's own resolution, then the square resize (what notebook 08 scored)."""
        if self.reencode:
            from helpers.perturb import apply

            image = apply(image, self.reencode, key)
        return resize_square(image, self.image_size)

    def face_crops(self, image: np.ndarray, detector, margin: float = 0.4,
                   max_faces: int = 5) -> tuple[list, np.ndarray]:
        """Detected faces (most confident first) and their crops resized to the model's input."""
        from helpers.faces import crop_face

        faces = detector.detect(image)[:max_faces]
        crops = [self.model_input(crop_face(image, face, margin)) for face in faces]
        shape = (0, self.image_size, self.image_size, 3)
        return faces, (np.stack(crops) if crops else np.zeros(shape, np.uint8))

    def predict_faces(self, paths: list[Path], detector, progress: bool = True,
                      reasons: dict[Path, str] | None = None) -> pd.DataFrame:
        """One row per detected face (MTCNN crop, scored); a file without a face, or that cannot be read,
        gets one row saying so (``reasons``: entries answered without opening them, :func:`input_entries`)."""
        from tqdm.auto import tqdm

        rows = []
        reasons = reasons or {}
        for path in tqdm(paths, desc="faces", unit="img", disable=not progress):
            base = dict(path=path_text(path), face=-1, box="", face_confidence=np.nan, score=np.nan, label="",
                        threshold=self.threshold, unsure_reason="")
            if path in reasons:
                rows.append(dict(base, error=reasons[path]))
                continue
            loaded = load_image(path, min_side=MIN_SIDE_FOR_VERDICT)
            if not loaded.ok:
                rows.append(dict(base, error=loaded.error))
                continue
            try:
                faces, crops = self.face_crops(loaded.image, detector)
            except Exception as exc:  # noqa: BLE001 - one picture the face finder cannot take is that row's reason
                rows.append(dict(base, error=f"face detection failed: {type(exc).__name__}: {exc}"[:300]))
                continue
            if not faces:
                rows.append(dict(base, error="no face detected"))
                continue
            scores, answers = self.assess(crops)
            for index, (face, score) in enumerate(zip(faces, scores)):
                rows.append(dict(base, face=index, box=" ".join(map(str, face.box)),
                                 face_confidence=round(face.confidence, 4), score=round(float(score), 6),
                                 label=answers.labels[index], unsure_reason=answers.reasons[index], error=""))
        return pd.DataFrame(rows, columns=FACE_COLUMNS)

    def predict_files(self, paths: list[Path], batch_size: int = 32, progress: bool = True,
                      decode_budget: int = DEFAULT_DECODE_BUDGET,
                      reasons: dict[Path, str] | None = None) -> pd.DataFrame:
        """One row per file: score, verdict (``unsure`` with its reason for a served detector), or the
        loader's reason it failed.

        Files are decoded on a few threads whose decodes share one memory budget, so a folder
        of very large images is read a few at a time; file names that are not valid UTF-8 are
        written with escapes (:func:`path_text`). ``reasons`` answers entries without opening them
        (hidden files, empty folders: :func:`input_entries`).
        """
        from tqdm.auto import tqdm

        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        rows = []
        budget = DecodeBudget(decode_budget)

        reasons = reasons or {}

        def load(path: Path) -> LoadedImage:
            if path in reasons:
                return LoadedImage(path=path, error=reasons[path])
            try:
                if not self.reencode:
                    return load_image(path, size=self.image_size, min_side=MIN_SIDE_FOR_VERDICT, budget=budget)
                # at its own size, re-encoded and resized inside the decode's memory reservation and time limit
                return load_image(path, min_side=MIN_SIDE_FOR_VERDICT, budget=budget,
                                  prepare=lambda image: self.model_input(image, key=str(path)))
            except Exception as exc:  # noqa: BLE001 - a per-file failure is that file's row, never the batch's end
                return LoadedImage(path=path, error=f"could not be prepared: {type(exc).__name__}: {exc}"[:300])

        with ThreadPoolExecutor(max_workers=min(MAX_DECODE_THREADS, os.cpu_count() or 2)) as pool, \
                tqdm(total=len(paths), desc="scoring", unit="img", disable=not progress) as bar:
            for start in range(0, len(paths), batch_size):
                chunk = paths[start:start + batch_size]
                loaded = list(pool.map(load, chunk))
                good = [item for item in loaded if item.ok]
                scores, answers = self.assess(np.stack([item.image for item in good])) if good else ([], None)
                position = 0
                for item in loaded:
                    if item.ok:
                        rows.append(dict(path=path_text(item.path), score=round(float(scores[position]), 6),
                                         label=answers.labels[position], threshold=self.threshold,
                                         unsure_reason=answers.reasons[position], error=""))
                        position += 1
                    else:
                        rows.append(dict(path=path_text(item.path), score=np.nan, label="", threshold=self.threshold,
                                         unsure_reason="", error=item.error))
                bar.update(len(chunk))
        return pd.DataFrame(rows, columns=RESULT_COLUMNS)
