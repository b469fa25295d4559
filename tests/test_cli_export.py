"""The fakeface command line and the checked TFLite / SavedModel export."""

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import cli, config, export, models, predict
from helpers.data import load_image


@pytest.fixture
def mixed_folder(tmp_path, shared_faces):
    folder = tmp_path / "inbox"
    for source in ("real/ffhq", "fake/sd21", "fake/stylegan2"):
        for path in sorted((shared_faces / source).iterdir())[:2]:
            target = folder / source.replace("/", "_") / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, target)
    (folder / "notes.txt").write_text("not a picture")
    good = sorted((shared_faces / "real" / "unsplash").iterdir())[0].read_bytes()
    (folder / "cut.jpg").write_bytes(good[: len(good) // 3])
    (folder / ".hidden.jpg").write_bytes(good)
    return folder


def test_predict_folder_counts_errors_and_exit_codes(trained_run, mixed_folder, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv(config.RUNS_ENV, str(trained_run))
    out = tmp_path / "results.csv"
    code = cli.main(["predict", str(mixed_folder), "--out", str(out), "--quiet"])
    results = pd.read_csv(out, keep_default_na=False)
    assert code == cli.EXIT_SOME_FAILED
    assert len(results) == 9  # 6 faces + 2 bad files + the hidden file, answered without being opened
    assert (results["error"] != "").sum() == 3 and set(results.loc[results["error"] == "", "label"]) <= {"real", "fake"}
    assert results.loc[results["path"].str.endswith(".hidden.jpg"), "error"].iloc[0] == predict.HIDDEN
    assert "not an image" in results.loc[results["path"].str.endswith("notes.txt"), "error"].iloc[0]
    assert "truncated" in results.loc[results["path"].str.endswith("cut.jpg"), "error"].iloc[0]
    assert (results["threshold"] == results["threshold"].iloc[0]).all()
    assert "9 files" in capsys.readouterr().err

    good_only = mixed_folder / "real_ffhq"
    json_out = tmp_path / "r.json"
    assert cli.main(["predict", str(good_only), "--out", str(json_out), "--quiet"]) == cli.EXIT_OK
    rows = json.loads(json_out.read_text())
    assert len(rows) == 2 and all(0.0 <= r["score"] <= 1.0 for r in rows)


def test_no_model_gives_its_own_exit_code(tmp_path, monkeypatch, mixed_folder, capsys):
    monkeypatch.setenv(config.RUNS_ENV, str(tmp_path / "empty"))
    assert cli.main(["predict", str(mixed_folder), "--quiet"]) == cli.EXIT_NO_MODEL
    assert "make smoke" in capsys.readouterr().err
    assert cli.main(["predict", str(mixed_folder), "--model", str(tmp_path / "nope.keras")]) == cli.EXIT_NO_MODEL
    with pytest.raises(SystemExit) as usage:
        cli.main(["predict"])
    assert usage.value.code == cli.EXIT_USAGE


def test_inference_model_is_deterministic_and_matches_the_keras_model():
    model, _ = models.build_mobilenetv2(image_size=64, weights=None)
    x = np.random.default_rng(0).uniform(0, 255, (3, 64, 64, 3)).astype("float32")
    serving = models.inference_model(model)
    assert "augmentation" not in [layer.name for layer in serving.layers]
    np.testing.assert_allclose(serving(x), serving(x))
    np.testing.assert_allclose(serving(x), model(x, training=False), atol=1e-6)


@pytest.mark.parametrize("fmt", ["tflite", "saved_model"])
def test_export_matches_keras_scores_and_writes_a_card(trained_run, shared_faces, tmp_path, fmt):
    model_path = trained_run / "demo" / "models" / "mobilenetv2_finetune.keras"
    paths = [sorted((shared_faces / s).iterdir())[0] for s in ("real/ffhq", "real/unsplash", "fake/sd21",
                                                                "fake/stylegan1", "fake/stylegan2")]
    samples = np.stack([load_image(p, size=64).image for p in paths]).astype("float32")
    predictor = predict.Predictor.load(model_path)
    report = export.export_detector(predictor, tmp_path / fmt, fmt, samples)
    keras_scores = predictor.score_arrays(samples)
    exported = export.exported_scores(tmp_path / fmt / (f"{model_path.stem}.tflite" if fmt == "tflite"
                                                        else "saved_model"), fmt, samples)
    np.testing.assert_allclose(exported, keras_scores, atol=1e-4)
    assert report["max_difference"] <= 1e-3 and report["checked"] == 5
    card = (tmp_path / fmt / "MODEL_CARD.md").read_text()
    assert "Decision threshold" in card and "| fake | sd21 |" in card and "validation split" in card


def test_cli_export_and_models_listing(trained_run, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv(config.RUNS_ENV, str(trained_run))
    assert cli.main(["models"]) == cli.EXIT_OK
    assert "MobileNetV2 demo" in capsys.readouterr().out
    assert cli.main(["export", "--format", "tflite", "--out", str(tmp_path / "e"), "--n-samples", "2"]) == 0
    assert (tmp_path / "e" / "mobilenetv2_finetune.tflite").stat().st_size > 100_000
    assert json.loads((tmp_path / "e" / "threshold.json").read_text())["image_size"] == 64


def test_predict_faces_one_row_per_face_and_no_face_reported(trained_run, mixed_folder, monkeypatch, tmp_path):
    from PIL import Image

    monkeypatch.setenv(config.RUNS_ENV, str(trained_run))
    Image.fromarray(np.full((120, 160, 3), 90, np.uint8)).save(mixed_folder / "wall.png")
    out = tmp_path / "faces.csv"
    assert cli.main(["predict", str(mixed_folder), "--faces", "--out", str(out), "--quiet"]) == cli.EXIT_SOME_FAILED
    rows = pd.read_csv(out, keep_default_na=False)
    faces = rows[rows["error"] == ""]
    assert len(faces) == 6 and (faces["face"].astype(int) == 0).all()
    assert (pd.to_numeric(faces["face_confidence"]) > 0.9).all()
    assert rows.loc[rows["path"].str.endswith("wall.png"), "error"].iloc[0] == "no face detected"
    assert "truncated" in rows.loc[rows["path"].str.endswith("cut.jpg"), "error"].iloc[0]


def test_models_validated_on_few_images_are_not_preferred(tmp_path):
    import shutil as sh

    for run, n, auc in (("smoke", 10, 1.0), ("sample", 569, 0.93)):
        (tmp_path / run / "models").mkdir(parents=True)
        (tmp_path / run / "models" / "m.keras").write_bytes(b"")
        (tmp_path / run / "metrics").mkdir()
        (tmp_path / run / "metrics" / "m_metrics.json").write_text(json.dumps(
            {"model": run, "val": {"auc": auc, "n": n}, "test": {"auc": 0.9}, "threshold": 0.5}))
    table = predict.find_models(tmp_path)
    assert list(table["run"]) == ["sample", "smoke"]
    assert predict.default_model(tmp_path) == tmp_path / "sample" / "models" / "m.keras"
    sh.rmtree(tmp_path / "sample")
    assert predict.default_model(tmp_path) == tmp_path / "smoke" / "models" / "m.keras"


def _odd_named_folder(tmp_path, shared_faces):
    """A folder with a Latin-1 file name (not valid UTF-8 on Linux), a good face, and a 1x1 image."""
    import os

    from PIL import Image

    folder = tmp_path / "odd"
    folder.mkdir()
    face = sorted((shared_faces / "real" / "ffhq").iterdir())[0]
    shutil.copy(face, folder / "plain.jpg")
    with open(os.path.join(os.fsencode(folder), b"\xe9t\xe9.jpg"), "wb") as handle:
        handle.write(face.read_bytes())
    Image.new("RGB", (1, 1), (200, 30, 30)).save(folder / "dot.png")
    return folder


@pytest.mark.parametrize("output", ["csv", "json", "stdout"])
def test_a_name_that_is_not_utf8_never_sinks_the_batch(trained_run, shared_faces, tmp_path, monkeypatch, capsys,
                                                        output):
    monkeypatch.setenv(config.RUNS_ENV, str(trained_run))
    folder = _odd_named_folder(tmp_path, shared_faces)
    args = ["predict", str(folder), "--quiet"] + ([] if output == "stdout" else ["--out", str(tmp_path / f"r.{output}")])
    code = cli.main(args)
    captured = capsys.readouterr()
    if output == "json":
        rows = pd.DataFrame(json.loads((tmp_path / "r.json").read_text()))
    else:
        text = captured.out if output == "stdout" else (tmp_path / "r.csv").read_text()
        rows = pd.read_csv(io.StringIO(text), keep_default_na=False)
    assert code == cli.EXIT_SOME_FAILED  # the 1x1 image is not scored
    by_name = {Path(p).name: r for p, r in zip(rows["path"], rows.to_dict("records"))}
    assert set(by_name) == {"plain.jpg", "\\xe9t\\xe9.jpg", "dot.png"}
    assert by_name["\\xe9t\\xe9.jpg"]["error"] == "" and by_name["\\xe9t\\xe9.jpg"]["score"] == by_name["plain.jpg"]["score"]
    assert "too small to judge: 1x1" in by_name["dot.png"]["error"] and by_name["dot.png"]["label"] == ""
    assert "1 file name(s) are not valid UTF-8" in captured.err


def test_labels_are_the_score_against_the_threshold_row_by_row(trained_run, mixed_folder, monkeypatch, tmp_path):
    monkeypatch.setenv(config.RUNS_ENV, str(trained_run))
    out = tmp_path / "r.csv"
    cli.main(["predict", str(mixed_folder), "--out", str(out), "--quiet"])
    scored = pd.read_csv(out, keep_default_na=False).query("error == ''")
    threshold = float(scored["threshold"].iloc[0])
    assert 0.0 < threshold < 1.0  # notebook 05's threshold from the metrics file, not the 0.5 default
    expected = np.where(scored["score"].astype(float) >= threshold, "fake", "real")
    assert scored["label"].tolist() == expected.tolist()


def _run_fakeface(*args, env=None):
    """The installed ``fakeface`` console script as a separate process."""
    import os
    import subprocess
    import sys

    script = Path(sys.executable).with_name("fakeface")
    return subprocess.run([str(script), *map(str, args)], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, **(env or {})))


def test_the_fakeface_process_exit_codes(trained_run, mixed_folder, tmp_path):
    env = {"FAKEFACE_RUNS": str(trained_run), "TF_CPP_MIN_LOG_LEVEL": "2"}
    good = _run_fakeface("predict", mixed_folder / "real_ffhq", "--quiet", env=env)
    assert good.returncode == 0 and good.stdout.startswith("path,score,label,threshold,unsure_reason,error")
    assert len(good.stdout.strip().splitlines()) == 3
    assert _run_fakeface("predict", mixed_folder, "--quiet", env=env).returncode == 1
    for bad in (["--batch-size", "-1"], ["--batch-size", "0"], ["--batch-size", "x"], ["--out", str(tmp_path)]):
        done = _run_fakeface("predict", mixed_folder, "--quiet", *bad, env=env)
        assert done.returncode == 2 and "Traceback" not in done.stderr, (bad, done.stderr)
        assert done.stderr.strip().splitlines()[-1].startswith("fakeface") and done.stdout == ""
    not_a_model = tmp_path / "notes.keras"
    not_a_model.write_text("not a model")
    for model in (not_a_model, mixed_folder / "notes.txt", tmp_path / "missing.keras"):
        done = _run_fakeface("predict", mixed_folder, "--model", model, env=env)
        assert done.returncode == 3 and "Traceback" not in done.stderr, done.stderr
        own = [line for line in done.stderr.splitlines() if line.startswith("fakeface")]  # TF logs lines of its own
        assert len(own) == 1 and str(model.name) in own[0], done.stderr
    empty = _run_fakeface("predict", mixed_folder, env={"FAKEFACE_RUNS": str(tmp_path / "none")})
    assert empty.returncode == 3 and "make smoke" in empty.stderr


def test_a_tampered_export_fails_its_parity_check_with_exit_4(trained_run, monkeypatch, tmp_path, capsys):
    import keras

    original_load = predict.Predictor.load

    def load_then_tamper(path):  # what gets exported is no longer the model whose scores it is checked against
        loaded = original_load(path)
        reference = keras.models.clone_model(loaded.model)
        reference.set_weights(loaded.model.get_weights())
        last = [layer for layer in loaded.model.layers if layer.get_weights()][-1]
        last.set_weights([w + 0.5 for w in last.get_weights()])
        loaded.single_pass_scores = lambda images: np.asarray(
            reference.predict(images.astype("float32"), verbose=0)).reshape(-1)
        return loaded

    monkeypatch.setattr(predict.Predictor, "load", staticmethod(load_then_tamper))
    monkeypatch.setenv(config.RUNS_ENV, str(trained_run))
    code = cli.main(["export", "--format", "tflite", "--out", str(tmp_path / "e"), "--n-samples", "2"])
    assert code == 4 and "differs from the Keras model" in capsys.readouterr().err
    assert not (tmp_path / "e" / "mobilenetv2_finetune.tflite").exists()  # a failed export is removed


def test_models_validated_on_few_images_are_flagged_where_used(trained_run, monkeypatch, mixed_folder, capsys):
    monkeypatch.setenv(config.RUNS_ENV, str(trained_run))
    loaded = predict.Predictor.load(trained_run / "demo" / "models" / "mobilenetv2_finetune.keras")
    assert any("validated on only 20 images" in w for w in loaded.warnings)
    cli.main(["predict", str(mixed_folder / "real_ffhq"), "--quiet"])
    assert "warning: this model was validated on only 20 images" in capsys.readouterr().err
    cli.main(["models"])
    assert "validated on 20 < 50 images" in capsys.readouterr().out


def test_app_model_paths_stay_inside_the_runs_folder(trained_run, tmp_path):
    model = trained_run / "demo" / "models" / "mobilenetv2_finetune.keras"
    assert predict.allowed_model_path(str(model), trained_run) == model.resolve()
    assert predict.allowed_model_path("demo/models/mobilenetv2_finetune.keras", trained_run) == model.resolve()
    outside = tmp_path / "elsewhere.keras"
    outside.write_bytes(b"")
    (trained_run / "link.keras").symlink_to(outside)
    answers = set()
    for typed in ("/etc/passwd", "/", "../../etc/passwd", str(outside), "link.keras", "/nonexistent/x.keras"):
        with pytest.raises(predict.ModelUnusable) as refused:
            predict.allowed_model_path(typed, trained_run)
        answers.add(str(refused.value))
    assert len(answers) == 1 and "inside the runs folder" in answers.pop()  # existence is never revealed
    with pytest.raises(predict.ModelUnusable, match="no model file demo/x.keras"):
        predict.allowed_model_path("demo/x.keras", trained_run)
    for typed in ("demo/\x00.keras", "a" * 6000 + ".keras", "/" + "b/" * 3000 + "x.keras"):  # NUL, too long
        with pytest.raises(predict.ModelUnusable) as refused:
            predict.allowed_model_path(typed, trained_run)
        assert str(refused.value) == "only .keras models inside the runs folder can be loaded; pick one from the list"


def test_messages_shown_to_a_remote_user_name_paths_relative_to_the_runs_folder(tmp_path):
    runs = tmp_path / "runs"
    model = runs / "sample" / "models" / "bad.keras"
    message = f"{model} cannot be loaded as a detector: not a Keras archive (a .keras file is a zip)\nmore"
    shown = predict.shown_message(message, model, runs)
    assert shown == ("runs/sample/models/bad.keras cannot be loaded as a detector: not a Keras archive "
                     "(a .keras file is a zip)")
    assert str(tmp_path) not in shown
    assert predict.shown_path(tmp_path / "elsewhere" / "m.keras", runs) == "m.keras"  # outside: the name alone
    assert predict.shown_path("relative/m.keras", runs) == "relative/m.keras"


_PEAK = """import resource, subprocess, sys
done = subprocess.run(sys.argv[1:], capture_output=True, text=True, timeout=600)
sys.stdout.write(done.stdout)
sys.stderr.write(done.stderr)
print(f"PEAK_KB={resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}", file=sys.stderr)
sys.exit(done.returncode)
"""


@pytest.mark.parametrize("faces", [False, True], ids=["plain", "faces"])
def test_a_hostile_corpus_through_the_fakeface_process(served_run, shared_faces, tmp_path, faces):
    """At least 60 hostile entries (broken, mutated, oversized, odd formats and names, pipes, sockets,
    links, hidden files) through the served detector: every entry answered (one row plain, at least
    one with --faces), exit 1, no traceback, peak memory of the process (TensorFlow loaded) under 1.5 GB."""
    import subprocess
    import sys

    from hostile import make_corpus

    face = sorted((shared_faces / "real" / "ffhq").iterdir())[0].read_bytes()
    entries = make_corpus(tmp_path / "corpus", face)
    assert len(entries) >= 60
    out = tmp_path / "rows.csv"
    script = Path(sys.executable).with_name("fakeface")
    done = subprocess.run([sys.executable, "-c", _PEAK, str(script), "predict", str(tmp_path / "corpus"), "--quiet",
                           "--out", str(out)] + (["--faces"] if faces else []), capture_output=True, text=True,
                          timeout=900, env={**__import__("os").environ, "FAKEFACE_RUNS": str(served_run["runs"]),
                                            "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert done.returncode == cli.EXIT_SOME_FAILED, done.stderr[-2000:]
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    rows = pd.read_csv(out, keep_default_na=False)
    answered = rows["path"].map(predict.spreadsheet_text)
    expected = {predict.path_text(p) for p in entries}
    assert set(answered) == expected
    counts = answered.value_counts()
    assert (counts == 1).all() if not faces else (counts >= 1).all()
    errors = rows.set_index(answered)["error"]
    assert errors[str(tmp_path / "corpus" / "pipe.jpg")].startswith("not a regular file")
    assert errors[str(tmp_path / "corpus" / ".hidden.jpg")] == predict.HIDDEN
    assert "Missing dimensions" in errors[str(tmp_path / "corpus" / "tiff_no_width.tif")]
    # the hostile files (not the faces, nor the well-formed pictures with formula-like names) are reported; the
    # pattern reads each entry's name in the corpus, never the temporary folder's (pytest-2 would match "-2")
    names = answered.str.slice(len(str(tmp_path / "corpus")) + 1)
    assert (rows.loc[~names.str.contains("face|=|\\+|@|-2", regex=True), "error"] != "").sum() > 30
    peak_kb = int(done.stderr.rsplit("PEAK_KB=", 1)[1].split()[0])
    print(f"corpus of {len(entries)} entries, faces={faces}: {len(rows)} rows, peak {peak_kb / 1024:.0f} MiB")
    assert peak_kb < 1.5 * 1024 * 1024, peak_kb


def test_output_cells_a_spreadsheet_would_run_are_neutralised_and_reversible(trained_run, shared_faces, monkeypatch,
                                                                            tmp_path):
    monkeypatch.setenv(config.RUNS_ENV, str(trained_run))
    face = sorted((shared_faces / "real" / "ffhq").iterdir())[0].read_bytes()
    names = ['=HYPERLINK("http-x","y").jpg', "+1.jpg", "-1.jpg", "@a.jpg", "\tt.jpg", "'q.jpg", "plain.jpg"]
    for name in names:
        (tmp_path / name).write_bytes(face)
    monkeypatch.chdir(tmp_path)  # named as relative paths, so each cell starts with the name itself
    for fmt in ("csv", "json"):
        out = tmp_path / "out" / f"r.{fmt}"
        assert cli.main(["predict", "--out", str(out), "--quiet", "--", *names]) == cli.EXIT_OK
        rows = pd.read_csv(out, keep_default_na=False) if fmt == "csv" else pd.DataFrame(json.loads(out.read_text()))
        written = dict(zip(map(predict.spreadsheet_text, rows["path"]), rows["path"]))
        assert set(written) == set(names)  # reversible: one leading ' removed gives every name back
        for name, cell in written.items():
            assert cell == (name if name == "plain.jpg" else "'" + name), (name, cell)
    frame = pd.DataFrame({"a": ["=1+1", "ok", "-x", None], "n": [-1.0, 2.0, 3.0, 4.0]})
    safe = predict.spreadsheet_safe(frame)
    assert safe["a"].tolist()[:3] == ["'=1+1", "ok", "'-x"] and safe["n"].tolist() == [-1.0, 2.0, 3.0, 4.0]


def test_an_internal_error_has_its_own_exit_code_and_one_line(trained_run, mixed_folder, monkeypatch, capsys):
    monkeypatch.setenv(config.RUNS_ENV, str(trained_run))

    def broken(*args, **kwargs):
        raise RuntimeError("a fault of the program\nsecond line")

    monkeypatch.setattr(predict.Predictor, "predict_files", broken)
    assert cli.main(["predict", str(mixed_folder), "--quiet"]) == cli.EXIT_INTERNAL == 5
    err = capsys.readouterr().err
    assert "fakeface: internal error: RuntimeError: a fault of the program" in err and "Traceback" not in err
    assert "second line" not in err
    assert "5  internal error" in cli.build_parser().format_help()


def test_an_empty_folder_and_a_pipe_named_directly_get_rows(trained_run, tmp_path, monkeypatch):
    import os

    monkeypatch.setenv(config.RUNS_ENV, str(trained_run))
    (tmp_path / "empty").mkdir()
    os.mkfifo(tmp_path / "pipe")
    out = tmp_path / "r.csv"
    assert cli.main(["predict", str(tmp_path / "empty"), str(tmp_path / "pipe"), "--out", str(out), "--quiet"]) == 1
    rows = pd.read_csv(out, keep_default_na=False).set_index("path")
    assert rows.loc[str(tmp_path / "empty"), "error"] == predict.EMPTY_FOLDER
    assert rows.loc[str(tmp_path / "pipe"), "error"].startswith("not a regular file")


def test_line_breaks_in_file_names_stay_one_quoted_cell_of_one_row(trained_run, shared_faces, monkeypatch, tmp_path):
    """A carriage return or line feed in a name: the CSV (RFC 4180) quotes the cell, so a reader finds one row
    per file, the cell is neutralised (what follows a line break cannot start a formula line) and reversible."""
    import csv

    monkeypatch.setenv(config.RUNS_ENV, str(trained_run))
    face = sorted((shared_faces / "real" / "ffhq").iterdir())[0].read_bytes()
    names = ["photo\r=1+2.jpg", "two\nlines.jpg", 'quote".jpg', "comma,name.jpg", "plain.jpg"]
    for name in names:
        (tmp_path / "in" / name).parent.mkdir(exist_ok=True)
        (tmp_path / "in" / name).write_bytes(face)
    out = tmp_path / "r.csv"
    assert cli.main(["predict", str(tmp_path / "in"), "--out", str(out), "--quiet"]) == cli.EXIT_OK
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(names)
    cells = {Path(predict.spreadsheet_text(r["path"])).name: r["path"] for r in rows}
    assert set(cells) == set(names)
    for name in names[:2]:
        assert cells[name].startswith("'"), cells[name]  # a line break anywhere: neutralised
    assert not cells["plain.jpg"].startswith("'")
    raw = out.read_bytes()
    assert raw.count(b"\r\n") == len(names) + 1  # the header and one line end per file, none inside a cell
    assert pd.read_csv(out, keep_default_na=False)["path"].map(predict.spreadsheet_text).map(
        lambda p: Path(p).name).tolist() == sorted(names)


def test_a_full_disk_or_an_unwritable_out_keeps_the_previous_results(trained_run, shared_faces, monkeypatch,
                                                                      tmp_path, capsys):
    import subprocess

    monkeypatch.setenv(config.RUNS_ENV, str(trained_run))
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for k in range(1500):  # rows with a reason each: far more than the 64 KiB disk holds
        (inbox / f"not_an_image_with_a_long_name_{k:05d}.jpg").write_bytes(b"")
    mount = tmp_path / "tiny"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)]).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root, as in CI)")
    try:
        out = mount / "results.csv"
        previous = b"path,score,label,threshold,unsure_reason,error\r\na.jpg,0.1,real,0.5,,\r\n"
        out.write_bytes(previous)
        code = cli.main(["predict", str(inbox), "--out", str(out), "--quiet"])
        assert code == cli.EXIT_CANNOT_WRITE == 6
        assert "cannot write" in capsys.readouterr().err
        assert out.read_bytes() == previous and [p.name for p in mount.iterdir()] == ["results.csv"]
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_empty_subfolders_inside_a_named_folder_get_a_row(trained_run, shared_faces, monkeypatch, tmp_path):
    monkeypatch.setenv(config.RUNS_ENV, str(trained_run))
    face = sorted((shared_faces / "real" / "ffhq").iterdir())[0]
    (tmp_path / "in" / "empty" / "deeper").mkdir(parents=True)  # only "deeper" is empty
    (tmp_path / "in" / "other").mkdir()
    (tmp_path / "in" / ".hidden_empty").mkdir()
    shutil.copy(face, tmp_path / "in" / "face.jpg")
    out = tmp_path / "r.csv"
    assert cli.main(["predict", str(tmp_path / "in"), "--out", str(out), "--quiet"]) == cli.EXIT_SOME_FAILED
    rows = pd.read_csv(out, keep_default_na=False).set_index("path")["error"]
    assert rows.to_dict() == {str(tmp_path / "in" / ".hidden_empty"): predict.HIDDEN,
                              str(tmp_path / "in" / "empty" / "deeper"): predict.EMPTY_FOLDER,
                              str(tmp_path / "in" / "face.jpg"): "",
                              str(tmp_path / "in" / "other"): predict.EMPTY_FOLDER}


def test_export_to_a_folder_it_cannot_write_fails_before_converting(trained_run, monkeypatch, tmp_path, capsys):
    import time

    monkeypatch.setenv(config.RUNS_ENV, str(trained_run))
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    started = time.perf_counter()
    with pytest.raises(SystemExit) as stopped:
        cli.main(["export", "--format", "tflite", "--out", str(blocker / "exports")])
    assert stopped.value.code == cli.EXIT_USAGE and time.perf_counter() - started < 5
    assert "cannot write there" in capsys.readouterr().err


_ZIP_BOMB_PEAK = """import resource, subprocess, sys
done = subprocess.run(sys.argv[1:], capture_output=True, text=True, timeout=300)
sys.stderr.write(done.stderr)
print(f"PEAK_KB={resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}", file=sys.stderr)
sys.exit(done.returncode)
"""


def test_a_keras_archive_that_unpacks_far_beyond_its_size_is_refused_unopened(tmp_path, shared_faces):
    import subprocess
    import sys
    import zipfile

    bomb = tmp_path / "bomb.keras"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("config.json", "{}")
        with archive.open("model.weights.h5", "w", force_zip64=True) as member:
            zeros = bytes(1 << 20)
            for _ in range(256):  # 256 MiB of zeros in ~250 KB
                member.write(zeros)
    assert bomb.stat().st_size < 2 << 20
    assert "decompression bomb" in predict.archive_problem(bomb)
    face = sorted((shared_faces / "real" / "ffhq").iterdir())[0]
    script = Path(sys.executable).with_name("fakeface")
    done = subprocess.run([sys.executable, "-c", _ZIP_BOMB_PEAK, str(script), "predict", "--model", str(bomb),
                           str(face), "--quiet"], capture_output=True, text=True, timeout=300)
    assert done.returncode == cli.EXIT_NO_MODEL and "decompression bomb" in done.stderr, done.stderr[-1000:]
    assert int(done.stderr.rsplit("PEAK_KB=", 1)[1].split()[0]) < 400 * 1024  # refused before anything unpacks
    big = tmp_path / "big.keras"
    with zipfile.ZipFile(big, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("config.json", "{}")
    with zipfile.ZipFile(big) as archive:
        assert predict.archive_problem(big) is None and archive.infolist()[0].file_size == 2


@pytest.fixture(scope="module")
def worst_files(tmp_path_factory):
    """The files that cost most to decode, at the sizes that once took ``fakeface predict`` to 2.3 GB and
    minutes: a 7000² WebP, a 6000² JPEG 2000, an 8000² progressive 4:4:4 JPEG, a 7000² RGBA PNG, and a
    progressive JPEG of 8000² whose scans repeat 9,000 times (19 s to decode before scans were counted)."""
    from PIL import Image
    from test_decode_limits import _gradient, many_scan_jpeg

    folder = tmp_path_factory.mktemp("worst")
    picture = _gradient(8000, 8000)
    picture.save(folder / "progressive444.jpg", progressive=True, subsampling=0, quality=90)
    picture = picture.crop((0, 0, 7000, 7000))
    picture.save(folder / "big.webp", quality=10, method=0)
    rgba = picture.copy()
    rgba.putalpha(200)
    rgba.save(folder / "alpha.png", compress_level=1)
    picture.crop((0, 0, 6000, 6000)).save(folder / "big.jp2")
    (folder / "scans.jpg").write_bytes(many_scan_jpeg(8000, 9000))
    del picture, rgba
    Image.new("RGB", (8, 8)).save(folder / "tiny.png")
    return folder


@pytest.mark.parametrize("reencode", [False, True], ids=["resized", "re-encoded at its own size"])
def test_the_worst_files_four_at_once_stay_within_the_memory_and_time_bounds(served_run, worst_files, tmp_path,
                                                                             reencode):
    """Four decode threads on the costliest files, with TensorFlow and the served detector loaded: every file
    answered (scored, or refused with the reason), peak memory of the process under 1.5 GB, no file past the
    per-file limit. The re-encoding detector (the sample's served recipe: ``score_reencode``) decodes every
    picture at its own size, the costliest path."""
    import json
    import subprocess
    import sys
    import time

    runs = tmp_path / "runs"
    shutil.copytree(served_run["runs"], runs)
    record = runs / "lab" / "models" / "served.json"
    raw = json.loads(record.read_text())
    raw["recipe"]["score_reencode"] = "jpeg:95" if reencode else ""
    record.write_text(json.dumps(raw))
    out = tmp_path / "rows.csv"
    script = Path(sys.executable).with_name("fakeface")
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _PEAK, str(script), "predict", str(worst_files), "--quiet",
                           "--batch-size", "4", "--out", str(out)], capture_output=True, text=True, timeout=600,
                          env={**__import__("os").environ, "FAKEFACE_RUNS": str(runs), "TF_CPP_MIN_LOG_LEVEL": "2"})
    seconds = time.perf_counter() - started
    assert done.returncode == cli.EXIT_SOME_FAILED and "Traceback" not in done.stderr, done.stderr[-2000:]
    rows = pd.read_csv(out, keep_default_na=False).set_index("path")
    errors = {Path(p).name: e for p, e in rows["error"].items()}
    assert len(rows) == 6 and errors["tiny.png"].startswith("image too small to judge")
    assert errors["big.webp"].startswith("image too large to decode: 7000x7000 WEBP")
    assert errors["scans.jpg"].startswith("progressive JPEG with 9,010 scans (limit 100)")
    assert errors["big.jp2"] == "" and errors["progressive444.jpg"] == ("" if not reencode else errors[
        "progressive444.jpg"])  # scored, or (at its own size) refused with the reason
    if reencode:
        assert errors["alpha.png"] == "" or errors["alpha.png"].startswith("image too large to decode")
    peak_kb = int(done.stderr.rsplit("PEAK_KB=", 1)[1].split()[0])
    print(f"worst files, re-encoded={reencode}: peak {peak_kb / 1024:.0f} MiB, {seconds:.1f} s in all; {errors}")
    assert peak_kb < 1.5 * 1024 * 1024, peak_kb
    assert seconds < 20 + 60  # within the per-file limit, plus loading TensorFlow and the model


@pytest.mark.parametrize(("shift", "passes"), [(0.4e-3, True), (0.99e-3, True), (1.01e-3, False), (0.25, False)])
def test_the_parity_check_holds_its_documented_tolerance(trained_run, monkeypatch, tmp_path, shift, passes):
    """An export whose scores differ from Keras' by more than 1e-3 on any sample fails; within it, it passes
    (a perturbed export, the conversion itself stood in for: the check is what is tested)."""
    predictor = predict.Predictor.load(trained_run / "demo" / "models" / "mobilenetv2_finetune.keras")
    samples = np.random.default_rng(0).uniform(0, 255, (4, predictor.image_size, predictor.image_size, 3))
    expected = predictor.single_pass_scores(samples.astype("float32"))
    monkeypatch.setattr(export, "_tflite", lambda model, path: Path(path).write_bytes(b"stand-in export"))
    offsets = np.zeros(len(samples))
    offsets[2] = shift  # one sample off: the largest difference decides
    monkeypatch.setattr(export, "exported_scores", lambda path, fmt, images: expected + offsets)
    out = tmp_path / "e"
    if passes:
        report = export.export_detector(predictor, out, "tflite", samples)
        assert report["max_difference"] == pytest.approx(shift) and (out / "mobilenetv2_finetune.tflite").exists()
    else:
        with pytest.raises(export.ExportMismatch, match="differs from the Keras model"):
            export.export_detector(predictor, out, "tflite", samples)
        assert not (out / "mobilenetv2_finetune.tflite").exists()
