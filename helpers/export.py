"""Exporting a detector (TensorFlow SavedModel or TFLite) with a parity check and a model card.

Every export is checked: the exported model must give the Keras model's scores, within a
tolerance, on sample images, or the export fails. A ``MODEL_CARD.md`` beside the export
states the data, the per-source metrics, the threshold and the known limits. An optional
push to the Hugging Face Hub runs only when ``HF_TOKEN`` is set.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from pathlib import Path

import numpy as np

from helpers import atomic
from helpers.predict import Predictor


class ExportMismatch(RuntimeError):
    """The exported model's scores differ from the Keras model's beyond the tolerance."""


def _saved_model(model, directory: Path) -> Path:
    from helpers.models import inference_model

    inference_model(model).export(str(directory), format="tf_saved_model", verbose=False)
    return directory


def _tflite(model, path: Path) -> Path:
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as staging:
        _saved_model(model, Path(staging) / "saved_model")
        converter = tf.lite.TFLiteConverter.from_saved_model(str(Path(staging) / "saved_model"))
        path.write_bytes(converter.convert())  # path: the caller's temporary (export_detector)
    return path


def exported_scores(path: Path, fmt: str, images: np.ndarray) -> np.ndarray:
    """P(fake) from an exported model (SavedModel folder or ``.tflite`` file)."""
    import tensorflow as tf

    images = images.astype(np.float32)
    if fmt == "saved_model":
        loaded = tf.saved_model.load(str(path))
        return np.asarray(loaded.serve(tf.constant(images))).reshape(-1)
    interpreter = tf.lite.Interpreter(model_path=str(path))
    input_detail = interpreter.get_input_details()[0]
    output_detail = interpreter.get_output_details()[0]
    scores = []
    for image in images:  # the converted graph has batch size 1
        interpreter.resize_tensor_input(input_detail["index"], [1, *image.shape])
        interpreter.allocate_tensors()
        interpreter.set_tensor(input_detail["index"], image[None])
        interpreter.invoke()
        scores.append(float(interpreter.get_tensor(output_detail["index"]).reshape(-1)[0]))
    return np.asarray(scores)


def model_card(predictor: Predictor, fmt: str, max_difference: float, n_checked: int) -> str:
    """Markdown model card from the model's metrics (written by notebook 05)."""
    m = predictor.metrics
    lines = [f"# {predictor.name} — real vs AI-generated face detector", "",
             f"Exported {dt.date.today().isoformat()} as `{fmt}` by fakeface-lab. Input: RGB "
             f"{predictor.image_size}×{predictor.image_size}, values 0–255 (resize the whole image). "
             "Output: P(fake).", "",
             f"**Decision threshold: {predictor.threshold:.4f}** "
             + ("(chosen on the validation split)." if m else "(default 0.5: this model was never evaluated)."),
             "", f"Export check: max |score difference| vs Keras {max_difference:.2e} on {n_checked} sample images.", ""]
    if m.get("served"):
        point = predictor.operating_point
        lines += ["## Served answer", "",
                  f"fakeface-lab's CLI and app answer fake at P(fake) >= {point.fake_threshold:.4f}, real below "
                  f"{point.real_threshold:.4f}, unsure in between or for images unlike the training images"
                  + (", averaging each image with its mirror" if predictor.tta_flip else "")
                  + "; this export gives the single-pass score. The served detector's own card follows.", ""]
        card = predictor.path.with_name(f"{predictor.path.stem}_card.md")
        lines += [card.read_text() if card.is_file() else "(no served card found)", ""]
    elif m:
        test = m["test"]
        lines += ["## Test metrics", "", f"ROC AUC {test['auc']:.3f} (95% CI {test['auc_ci'][0]:.3f}–"
                  f"{test['auc_ci'][1]:.3f}), accuracy {test['accuracy']:.3f}, precision {test['precision']:.3f}, "
                  f"recall {test['recall']:.3f}, on {test['n']} test images.", "",
                  "| label | source | n | AUC [95% CI] | accuracy |", "|---|---|---:|---|---:|"]
        for s in m["per_source"]:
            auc = "n/a" if s["auc"] is None else f"{s['auc']:.3f} [{s['auc_lo']:.3f}, {s['auc_hi']:.3f}]"
            lines.append(f"| {s['label']} | {s['source']} | {s['n']} | {auc} | {s['accuracy']:.3f} |")
        lines.append("")
    weights = m.get("weights", {})
    lines += ["## Data and limits", "",
              "- Trained on the sources in the table above only (see the repository's data card and "
              "`SOURCES.md`); generators and cameras it never saw can fool it, and re-encoding or "
              "resizing uploads changes scores. Check per-source numbers before trusting it elsewhere.",
              "- Scores are not calibrated probabilities; use the threshold above.",
              "- Research and teaching use; the training images keep their own licences."]
    if weights.get("warning"):
        lines.append(f"- **Backbone without ImageNet weights**: {weights['warning']}")
    return "\n".join(lines) + "\n"


def export_detector(predictor: Predictor, out_dir: str | Path, fmt: str, samples: np.ndarray,
                    tolerance: float = 1e-3) -> dict:
    """Export a loaded detector to ``out_dir`` as ``saved_model`` or ``tflite``, check it, write the card.

    Returns a report (paths, max score difference); raises :class:`ExportMismatch` when scores differ
    by more than ``tolerance`` on ``samples`` (the failed export is removed; an earlier export in
    ``out_dir`` is left whole), and ``OSError`` before converting when ``out_dir`` cannot be written.
    """
    if fmt not in ("saved_model", "tflite"):
        raise ValueError(f"unknown export format {fmt!r}: use saved_model or tflite")
    out_dir = Path(out_dir)
    atomic.check_writable(out_dir)  # before minutes of conversion
    target = out_dir / ("saved_model" if fmt == "saved_model" else f"{predictor.path.stem}.tflite")
    expected = predictor.single_pass_scores(samples)  # one pass, as the exported model scores
    with atomic.atomic_path(target) as staged:  # checked before it replaces an earlier export
        if fmt == "saved_model":
            _saved_model(predictor.model, staged)
        else:
            _tflite(predictor.model, staged)
        difference = float(np.max(np.abs(exported_scores(staged, fmt, samples) - expected)))
        if difference > tolerance:
            raise ExportMismatch(f"{fmt} export differs from the Keras model by {difference:.2e} > {tolerance}")
    card = atomic.write_text(out_dir / "MODEL_CARD.md", model_card(predictor, fmt, difference, len(samples)))
    atomic.write_json(out_dir / "threshold.json", {"threshold": predictor.threshold,
                                                   "image_size": predictor.image_size})
    return dict(export=str(target), model_card=str(card), max_difference=difference, checked=len(samples),
                threshold=predictor.threshold)


def push_to_hub(folder: str | Path, repo_id: str) -> str:
    """Upload an export folder to the Hugging Face Hub; needs ``HF_TOKEN`` and ``huggingface_hub``."""
    token = os.environ.get("HF_TOKEN")
    if not token:
        raise RuntimeError("set HF_TOKEN in the environment to push to the Hugging Face Hub")
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, exist_ok=True)
    return api.upload_folder(folder_path=str(folder), repo_id=repo_id).commit_url
