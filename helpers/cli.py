"""The ``fakeface`` command line: score images and folders, export a detector, list models.

Exit codes scripts can rely on:
  0  every file was scored;
  1  some files were not scored (unreadable, hidden, not a regular file, an empty folder, or with
     --faces no face); each has its row with the reason;
  2  usage error (bad arguments);
  3  no trained model found, or the model file is missing or unusable;
  4  export failed its parity check (exported scores differ from the Keras model's);
  5  internal error: a fault of fakeface itself, not of the input (one line on stderr; set
     FAKEFACE_DEBUG=1 for the traceback). Please report it.
  6  the results could not be written (a full disk, no permission); a file already at --out is
     left exactly as it was.

--out is written whole or not at all: to a temporary file beside it, renamed over it at the end,
so a crash or a full disk never leaves a torn file, and of two runs writing the same --out the
one that finishes last leaves its whole output.

CSV output follows RFC 4180: lines end in CRLF and every field holding a comma, a quote, a
carriage return or a line feed is quoted, so a file name with a line break stays one cell of one
row. Output cells that a spreadsheet would run as a formula (starting with = + - @, a tab or a
carriage return, or holding a line break anywhere) get a leading ' ; so does a cell that already
starts with ' . To get a path back, remove one leading ' from any cell that starts with one.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, EXIT_NO_MODEL, EXIT_EXPORT_MISMATCH, EXIT_INTERNAL, EXIT_CANNOT_WRITE = range(7)


class UsageError(ValueError):
    """A bad argument found after parsing (e.g. --out names a folder); exit code 2 with one line."""


def _positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _output_file(out: str | None) -> Path | None:
    """The --out file, checked before any work: not a folder, its folder creatable."""
    if not out:
        return None
    path = Path(out)
    if path.is_dir():
        raise UsageError(f"--out {out} is a folder; name a .csv or .json file")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--out {out}: cannot create its folder ({exc.strerror or exc})") from None
    return path


def _load_predictor(model: str | None):
    """The predictor for --model (or the default model); NoModelError says why there is none."""
    from helpers.predict import Predictor, default_model

    predictor = Predictor.load(Path(model) if model else default_model())
    for warning in predictor.warnings:
        print(f"fakeface: warning: {warning}", file=sys.stderr)
    return predictor


def _write_results(out: Path | None, written) -> None:
    """The results as JSON or CSV (RFC 4180: CRLF, every field with a separator, quote or line break
    quoted) to ``out``, replaced whole or not at all, or as CSV on stdout."""
    from helpers import atomic

    if out is None:
        print(written.to_csv(index=False, lineterminator="\r\n"), end="")
    elif out.suffix == ".json":
        atomic.write_text(out, written.to_json(orient="records", indent=2))
    else:
        atomic.write_csv(out, written, lineterminator="\r\n")


def _predict(args: argparse.Namespace) -> int:
    from helpers.inputs import has_odd_name, input_entries, spreadsheet_safe
    from helpers.predict import NoModelError

    out = _output_file(args.out)
    try:
        predictor = _load_predictor(args.model)
    except NoModelError as exc:
        print(f"fakeface: {exc}", file=sys.stderr)
        return EXIT_NO_MODEL
    files, reasons = input_entries(args.paths)
    missing = [p for p in files if not p.exists() and not p.is_symlink()]
    odd_names = sum(map(has_odd_name, files))
    if args.faces:
        from helpers.faces import FaceDetector

        if predictor.input_kind != "face":
            print("fakeface: warning: this model was trained and measured on whole pictures; --faces scores face "
                  "crops, a framing it was not measured on", file=sys.stderr)

        results = predictor.predict_faces(files, FaceDetector(), progress=not args.quiet, reasons=reasons)
    else:
        results = predictor.predict_files(files, batch_size=args.batch_size, progress=not args.quiet,
                                          reasons=reasons)
    try:
        _write_results(out, spreadsheet_safe(results))
    except OSError as exc:
        print(f"fakeface: cannot write {out}: {exc.strerror or exc}; a file already there is left as it was",
              file=sys.stderr)
        return EXIT_CANNOT_WRITE
    failed = int((results["error"] != "").sum())
    no_face = int((results["error"] == "no face detected").sum())
    counts = results["label"].value_counts()
    print(f"{predictor.name} (threshold {predictor.threshold:.3f}): {len(files)} files, "
          + (f"{len(results) - failed} faces, " if args.faces else "")
          + f"{counts.get('fake', 0)} fake, {counts.get('real', 0)} real, "
          + (f"{counts.get('unsure', 0)} unsure (see unsure_reason), " if predictor.point else "")
          + f"{failed - no_face} not scored (see error)"
          + (f", {no_face} without a face" if args.faces else "")
          + (f" ({len(missing)} not found)" if missing else ""), file=sys.stderr)
    if odd_names:
        print(f"fakeface: {odd_names} file name(s) are not valid UTF-8; they are written with \\x escapes",
              file=sys.stderr)
    return EXIT_SOME_FAILED if failed else EXIT_OK


def _export(args: argparse.Namespace) -> int:
    import numpy as np

    from helpers.atomic import check_writable
    from helpers.export import ExportMismatch, export_detector, push_to_hub
    from helpers.inputs import image_files
    from helpers.predict import NoModelError

    try:
        check_writable(args.out)
    except OSError as exc:
        raise UsageError(f"--out {args.out}: cannot write there ({exc.strerror or exc})") from None
    try:
        predictor = _load_predictor(args.model)
        size = predictor.image_size
    except NoModelError as exc:
        print(f"fakeface: {exc}", file=sys.stderr)
        return EXIT_NO_MODEL
    if args.samples:
        from helpers.data import load_image

        loaded = [load_image(p, size=size) for p in image_files(args.samples)[: args.n_samples]]
        good = [item.image for item in loaded if item.ok]
        if not good:
            raise UsageError("--samples: none of those files is a readable image")
        samples = np.stack(good).astype(np.float32)
    else:
        samples = np.random.default_rng(0).uniform(0, 255, (args.n_samples, size, size, 3)).astype(np.float32)
    try:
        report = export_detector(predictor, args.out, args.format, samples, tolerance=args.tolerance)
    except ExportMismatch as exc:
        print(f"fakeface: {exc}", file=sys.stderr)
        return EXIT_EXPORT_MISMATCH
    print(f"exported {report['export']} (max score difference {report['max_difference']:.2e} on "
          f"{report['checked']} images); model card {report['model_card']}")
    if args.push_to_hub:
        print("pushed:", push_to_hub(args.out, args.push_to_hub))
    return EXIT_OK


def _models(args: argparse.Namespace) -> int:
    from helpers.predict import MIN_VAL_IMAGES, find_models

    table = find_models(args.runs)
    if table.empty:
        print("no trained models yet: run `make smoke`")
        return EXIT_OK
    table["note"] = [f"validated on {int(n or 0)} < {MIN_VAL_IMAGES} images" if (n or 0) < MIN_VAL_IMAGES else ""
                     for n in table["val_n"]]
    print(table.to_string(index=False))
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fakeface", description="Tell AI-generated faces from real photos.",
                                     epilog=__doc__.split("\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    predict = commands.add_parser("predict", help="score image files and folders")
    predict.add_argument("paths", nargs="+", help="image files or folders (searched recursively)")
    predict.add_argument("--model", help="a .keras model (default: the served detector, else the best "
                                         "validation AUC under runs/)")
    predict.add_argument("--out", help="write results to this .csv or .json (default: CSV on stdout)")
    predict.add_argument("--faces", action="store_true",
                         help="find faces with MTCNN and score each face crop (one row per face)")
    predict.add_argument("--batch-size", type=_positive_int, default=32)
    predict.add_argument("--quiet", action="store_true", help="no progress bar")
    predict.set_defaults(run=_predict)
    export = commands.add_parser("export", help="export a model as TFLite or SavedModel, checked, with a card")
    export.add_argument("--format", choices=["tflite", "saved_model"], required=True)
    export.add_argument("--model", help="a .keras model (default: as for predict)")
    export.add_argument("--out", default="exports", help="output folder (default: exports/)")
    export.add_argument("--samples", nargs="*", help="images for the parity check (default: random arrays)")
    export.add_argument("--n-samples", type=_positive_int, default=8)
    export.add_argument("--tolerance", type=float, default=1e-3)
    export.add_argument("--push-to-hub", metavar="REPO_ID", help="also upload to the Hugging Face Hub (HF_TOKEN)")
    export.set_defaults(run=_export)
    listing = commands.add_parser("models", help="list trained models and their metrics")
    listing.add_argument("--runs", default=None, help="runs folder (default: runs/ or $FAKEFACE_RUNS)")
    listing.set_defaults(run=_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except UsageError as exc:
        parser.exit(EXIT_USAGE, f"fakeface: error: {exc}\n")
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - a fault of the program: its own exit code, one line, no traceback
        if os.environ.get("FAKEFACE_DEBUG"):
            traceback.print_exc()
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        print(f"fakeface: internal error: {type(exc).__name__}: {first} (FAKEFACE_DEBUG=1 shows the "
              "traceback)", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
