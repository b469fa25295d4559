"""fakeface-lab web app: upload pictures, get real/fake with a confidence and a Grad-CAM overlay.

Start it with `make app` (or `cd app && streamlit run streamlit_app.py`, which reads
app/.streamlit/config.toml: it listens on 127.0.0.1 only). Models come from runs/ (or
$FAKEFACE_RUNS); train one first with `make smoke` if the picker is empty. The path box only
accepts .keras files inside that folder, and errors are shown as one line, never a traceback.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import streamlit as st

from helpers import config, explain
from helpers.data import DEFAULT_DECODE_BUDGET, DecodeBudget, load_image
from helpers.data import resize_square as resize
from helpers.faces import FaceDetector, crop_face
from helpers.inputs import shown_message
from helpers.predict import MIN_SIDE_FOR_VERDICT, NoModelError, Predictor, allowed_model_path, find_models

DISPLAY_SIZE = 320  # images are shown at this size; the model sees its own input size

st.set_page_config(page_title="fakeface-lab", layout="wide")
st.title("fakeface-lab: real photo or AI-generated face?")


@st.cache_resource(show_spinner="Loading the face detector...")
def load_detector() -> FaceDetector:
    return FaceDetector()


@st.cache_resource
def decode_budget() -> DecodeBudget:
    """One decode budget for the whole server: every session's uploads are decoded within it together."""
    return DecodeBudget(DEFAULT_DECODE_BUDGET)


@st.cache_resource(show_spinner="Loading the model...")
def load_predictor(path: str) -> Predictor:
    return Predictor.load(path)


models = find_models()
with st.sidebar:
    st.header("Model")
    if models.empty:
        typed = st.text_input("Path to a .keras model (inside the runs folder)", "")
    else:
        labels = [f"{r.model} · run {r.run}" + (f" · val AUC {r.val_auc:.3f}" if r.val_auc == r.val_auc else "")
                  for r in models.itertuples()]
        picked = st.selectbox("Trained models (the served detector first)", range(len(labels)),
                              format_func=labels.__getitem__)
        typed = st.text_input("...or a path to a .keras model inside the runs folder", "")

if models.empty and not typed:
    st.warning(f"No trained model yet (looked in {config.default_runs_root()}). Train one with `make smoke` (a few "
               "minutes) or `make reproduce`, then reload this page.")
    st.stop()
choice = ""
try:
    choice = str(allowed_model_path(typed)) if typed else models.iloc[picked]["path"]
    predictor = load_predictor(choice)
except NoModelError as exc:  # one line, with paths relative to the runs folder
    st.error(f"Model not loaded: {shown_message(str(exc), choice) if choice else exc}")
    st.stop()
with st.sidebar:
    st.write(f"**{predictor.name}** — threshold {predictor.threshold:.3f}"
             + (" (validation-chosen)" if predictor.metrics else " (default; model not evaluated)"))
    if predictor.point is not None:
        st.caption(f"Served detector: fake at P(fake) ≥ {predictor.point.fake_threshold:.3f}, real below "
                   f"{predictor.point.real_threshold:.3f}, unsure in between or when a picture is unlike "
                   "its training images.")
    for warning in predictor.warnings:
        st.warning(warning)
    st.caption(("Faces are found with MTCNN and each face crop is scored: the framing this model was trained on."
                if predictor.input_kind == "face" else
                "Whole pictures are scored: the framing this model was trained on (tick the face-finding box to "
                "score each face crop instead).")
               + " Scores are not calibrated probabilities; results on sources the model never saw can be wrong.")


def check_upload(upload, find_faces: bool) -> None:
    """Check one uploaded picture and show the answer; any failure is that picture's message."""
    with tempfile.NamedTemporaryFile(suffix=Path(upload.name).suffix) as handle:
        handle.write(upload.getbuffer())
        handle.flush()
        loaded = load_image(handle.name, min_side=MIN_SIDE_FOR_VERDICT, budget=decode_budget())
    if not loaded.ok:
        st.error(f"{upload.name}: cannot be checked: {loaded.error}")
        return
    if find_faces:
        faces, crops = predictor.face_crops(loaded.image, load_detector())
        if not faces:
            st.error(f"{upload.name}: No face detected. Untick 'Find faces first' to score the whole image.")
            return
        if len(faces) > 1:
            st.info(f"{upload.name}: {len(faces)} faces found; each is checked, most confident first.")
        names = [f"{upload.name} · face {k + 1}" if len(faces) > 1 else upload.name for k in range(len(faces))]
        displays = [resize(crop_face(loaded.image, face), DISPLAY_SIZE) for face in faces]
    else:
        crops = predictor.model_input(loaded.image)[None]
        names, displays = [upload.name], [resize(loaded.image, DISPLAY_SIZE)]
    heatmaps, _ = explain.gradcam(predictor.model, crops.astype("float32"))
    scores, answers = predictor.assess(crops)  # the served answer: fake, real or unsure (with why)
    for name, shown, heatmap, score, verdict, reason in zip(names, displays, heatmaps, scores, answers.labels,
                                                           answers.reasons):
        left, right, text = st.columns([1, 1, 2])
        left.image(shown, caption=name, width="stretch")
        right.image(explain.overlay(shown, np.clip(resize(heatmap, DISPLAY_SIZE), 0, 1)),
                    caption="Grad-CAM (evidence for the verdict)", width="stretch")
        text.markdown(f"### {name}: **{verdict.upper()}**\n\nP(fake) = {score:.3f} "
                      f"(threshold {predictor.threshold:.3f})" + (f"\n\nUnsure: {reason}." if reason else ""))
    if loaded.conversions:
        st.caption(f"{upload.name} converted: " + "; ".join(loaded.conversions))


detect_tab, generate_tab = st.tabs(["Check images", "Generate a variation"])
with detect_tab:
    trained_on_faces = predictor.input_kind == "face"  # serve the framing the model was trained and measured on
    find_faces = st.checkbox("Find faces first (MTCNN) and check each face", value=trained_on_faces)
    if find_faces and not trained_on_faces:
        st.caption("This model was trained and measured on whole pictures: face crops are a framing it was not "
                   "measured on, and its answers on them are less reliable.")
    uploads = st.file_uploader("Upload one or more pictures", accept_multiple_files=True)
    for upload in uploads or []:
        try:
            check_upload(upload, find_faces)
        except Exception as exc:  # noqa: BLE001 - one picture that cannot be checked never ends the batch
            st.error(f"{upload.name}: cannot be checked: {type(exc).__name__}: {str(exc)[:200]}")

with generate_tab:
    if not os.environ.get("OPENAI_API_KEY"):
        st.info("Set OPENAI_API_KEY in the environment before starting the app to make a DALL-E 2 "
                "variation of a picture (the key is never typed into this page or logged).")
    else:
        source = st.file_uploader("Picture to vary", key="vary")
        if source is not None and st.button("Generate (paid request)"):
            from helpers.generate import OpenAIVariations, square_png

            with tempfile.NamedTemporaryFile(suffix=Path(source.name).suffix) as handle:
                handle.write(source.getbuffer())
                handle.flush()
                generator = OpenAIVariations()
                st.caption(f"Estimated cost: US$ {generator.cost_per_image:.3f}")
                st.image(generator.variation(square_png(handle.name)), caption="Variation")
