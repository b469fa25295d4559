"""Shared fixtures: small images the tests make, and the real face sample beside the checkout."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Hypothesis draws new examples on every run; CI uses a fixed sequence and keeps no example database,
# so a CI result can be reproduced (locally the random search goes on finding new cases).
from hypothesis import settings  # noqa: E402

settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")

# The face sample beside the checkout; FAKEFACE_TEST_FACES points elsewhere (e.g. from mutmut's copy of the repo).
SHARED_FACES = Path(os.environ.get("FAKEFACE_TEST_FACES")
                    or Path(__file__).resolve().parents[1].parent / "shared" / "data" / "faces")


def smooth_image(seed: int, size: int = 64) -> np.ndarray:
    """A random but smooth RGB image (distinct perceptual hash per seed)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC))


def write_jpeg(path: Path, array: np.ndarray, quality: int = 90) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, quality=quality)
    return path


@pytest.fixture
def face_tree(tmp_path: Path) -> Path:
    """A tiny ``<label>/<source>/<file>`` tree: 2 real and 2 fake sources, 10 images each."""
    return make_face_tree(tmp_path)


def make_face_tree(tmp_path: Path) -> Path:
    """Write the :func:`face_tree` images under ``tmp_path/faces`` (for module-scoped fixtures too)."""
    root = tmp_path / "faces"
    seed = 0
    for label, sources in (("real", ("cam_a", "cam_b")), ("fake", ("gan_a", "gan_b"))):
        for source in sources:
            for k in range(10):
                seed += 1
                image = smooth_image(seed)
                if label == "fake":  # a learnable difference: fakes are brighter
                    image = np.clip(image.astype(int) + 60, 0, 255).astype(np.uint8)
                write_jpeg(root / label / source / f"{source}_{k:02d}.jpg", image)
    return root


def noise_feature_bank(shift: float = 0.0):
    """A :class:`helpers.protocols.FeatureBank` of seeded noise vectors (64/32/32 rows over four sources,
    fakes shifted by 0.3) with clean, mirrored and one augmentation copy; ``shift`` changes one number."""
    from helpers import protocols

    def frame(n):
        return pd.DataFrame({"label": ["real", "fake"] * (n // 2), "path": [f"p{i}" for i in range(n)],
                             "source": ["ffhq", "sd21", "unsplash", "stylegan2"] * (n // 4)})

    frames = {"train": frame(64), "val": frame(32), "test": frame(32)}
    arrays = {}
    for split, f in frames.items():
        y = (f.label == "fake").to_numpy()[:, None]
        local = np.random.default_rng(len(f))
        arrays[split] = {k: (local.normal(size=(len(f), 1280)) + 0.3 * y).astype(np.float32)
                         for k in ("clean", "flipped", "augment:0")}
    arrays["train"]["clean"][0, 0] += shift
    return protocols.FeatureBank(32, frames, arrays)


@pytest.fixture
def eager_steps():
    """Keras train/test/predict steps run eagerly for one test, as the smoke profile's kernels do: on a
    test's few tiny batches tracing a step costs more than graph execution saves (benchmarks/README.md,
    "Smoke profile and eager unit tests"). Graph execution stays covered by every training test that
    does not ask for this one (protocols, train, models' training step, served, export)."""
    import tensorflow as tf

    tf.config.run_functions_eagerly(True)
    yield
    tf.config.run_functions_eagerly(False)


@pytest.fixture(scope="session")
def shared_faces() -> Path:
    """The real face sample; CI must have it, a developer machine without it skips."""
    if not SHARED_FACES.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"CI needs the face sample at {SHARED_FACES}")
        pytest.skip(f"face sample not found at {SHARED_FACES}")
    return SHARED_FACES


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, shared_faces):
    """A runs folder with one small MobileNetV2 detector and its notebook-05 style metrics.

    The model is built at 64 px with the offline ImageNet backbone and an untrained head:
    the app, CLI and export tests check plumbing and parity, not accuracy.
    """
    import pandas as pd

    from helpers import evaluate, models

    runs = tmp_path_factory.mktemp("runs")
    model, weights = models.build_mobilenetv2(image_size=64)
    (runs / "demo" / "models").mkdir(parents=True)
    model.save(runs / "demo" / "models" / "mobilenetv2_finetune.keras")
    frame = pd.DataFrame({"label": ["real", "fake"] * 10, "source": ["ffhq", "sd21"] * 10})
    scores = np.linspace(0.1, 0.9, 20)
    result = evaluate.evaluate_scores("MobileNetV2 demo", frame, scores, frame, scores[::-1], n_boot=50,
                                      extra=dict(key="mobilenetv2_finetune", image_size=64,
                                                 weights=weights.to_dict()))
    evaluate.save_json(result, runs / "demo" / "metrics" / "mobilenetv2_finetune_metrics.json")
    return runs


@pytest.fixture(scope="session")
def served_run(tmp_path_factory, shared_faces):
    """A runs folder holding a served detector (64 px ImageNet MobileNetV2, untrained head, mirrored scoring)
    beside a notebook-05 model with a better validation AUC, and the images it is asked about.

    The operating point and the unfamiliarity limit are set from the model's own scores and features
    so that each answer occurs; the test's oracle recomputes every answer independently.
    """
    import shutil

    import pandas as pd
    from PIL import Image

    from helpers import evaluate, features, models, served
    from helpers.data import load_image

    runs = tmp_path_factory.mktemp("runs")
    inbox = tmp_path_factory.mktemp("inbox")
    for source in ("real/ffhq", "real/utkface", "fake/sd21", "fake/stylegan2"):
        for path in sorted((shared_faces / source).iterdir())[:3]:
            shutil.copy(path, inbox / f"{source.replace('/', '_')}_{path.name}")
    noise = np.random.default_rng(0).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    Image.fromarray(noise).save(inbox / "noise.png")
    model, weights = models.build_mobilenetv2(image_size=64, seed=7)
    model = models.inference_model(model)
    (runs / "lab" / "models").mkdir(parents=True)
    other = runs / "lab" / "models" / "mobilenetv2_finetune.keras"
    model.save(other)
    frame = pd.DataFrame({"label": ["real", "fake"] * 40, "source": ["ffhq", "sd21"] * 40})
    perfect = np.where(frame.label == "fake", 0.9, 0.1)
    evaluate.save_json(evaluate.evaluate_scores("better val AUC", frame, perfect, frame, perfect, n_boot=20,
                                                extra=dict(image_size=64, weights=weights.to_dict())),
                       runs / "lab" / "metrics" / "mobilenetv2_finetune_metrics.json")
    paths = sorted(inbox.iterdir())
    images = np.stack([load_image(p, size=64).image for p in paths]).astype(np.float32)
    scores = (model.predict(images, verbose=0).reshape(-1) + model.predict(images[:, :, ::-1], verbose=0).reshape(-1)) / 2
    ordered = np.sort(scores)
    point = served.OperatingPoint(fake_threshold=float(ordered[-4]), real_threshold=float(ordered[4]))
    pooled = features.pooled_extractor(model).predict(images, verbose=0)
    references = pooled[[p.name != "noise.png" for p in paths]]  # every image but the noise one
    distance = served.FeatureDistance(served._unit(references), k=2)
    own = distance.distances(references)
    distance.max_distance = float(np.max(own)) + 1e-4  # every training-like image familiar
    record = served.ServedRecord(recipe={"name": "demo served", "tta_flip": True}, image_size=64, operating_point=point,
                                 distance_k=2, distance_quantile=1.0, max_distance=distance.max_distance, tta_flip=True,
                                 weights=weights.to_dict(), validation=dict(n=400, auc=0.6, rates=[]),
                                 test_auc=0.6, test_rates=[])
    path = served.save_served(model, runs / "lab" / "models" / "served.keras", record, distance)
    return dict(runs=runs, inbox=inbox, path=path, point=point, references=references, model=model)


# The longest tests start first (measured with --durations: the smoke run alone is a third of the
# suite's work). `make test` runs two pytest-xdist workers with `--dist loadfile --no-loadscope-reorder`:
# whole test files, handed out in collection order, so the first worker begins with the smoke run's file
# while the other works through the rest; a serial run only changes order. Each name is a test function
# (every parametrisation of it moves).
LONGEST_FIRST = (
    "test_integration.py::test_smoke_profile_runs_every_notebook",
    "test_colab.py::test_notebook_05_opened_alone_clones_installs_and_prepares_what_it_needs",
    "test_course.py::test_autograde_full_marks_for_the_solutions_zero_for_the_blank_release",
)


def pytest_collection_modifyitems(config, items):
    """Move the :data:`LONGEST_FIRST` tests to the front, in that order; the rest keep pytest's order."""
    def rank(item) -> int:
        name = f"{item.path.name}::{item.originalname}"
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)
    items.sort(key=rank)  # stable: equal ranks keep their collected order
