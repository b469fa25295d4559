"""The ``fakeface`` command line: score images and folders, export a detector, list models.

Exit codes scripts can rely on:
  0  every file was scored;
  1  some files could not be read, or (with --faces) had no face; each is reported with its reason;
  2  usage error (bad arguments);
  3  no trained model found, or the model file is missing;
  4  export failed its parity check (exported scores differ from the Keras model's).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, EXIT_NO_MODEL, EXIT_EXPORT_MISMATCH = 0, 1, 2, 3, 4


def _predict(args: argparse.Namespace) -> int:
    from helpers.predict import NoModelError, Predictor, default_model, image_files

    try:
        predictor = Predictor.load(args.model or default_model())
    except NoModelError as exc:
        print(f"fakeface: {exc}", file=sys.stderr)
        return EXIT_NO_MODEL
    files = image_files(args.paths)
    missing = [p for p in files if not p.exists()]
    if args.faces:
        from helpers.faces import FaceDetector

        results = predictor.predict_faces(files, FaceDetector(), progress=not args.quiet)
    else:
        results = predictor.predict_files(files, batch_size=args.batch_size, progress=not args.quiet)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.suffix == ".json":
            results.to_json(out, orient="records", indent=2)
        else:
            results.to_csv(out, index=False)
    else:
        print(results.to_csv(index=False), end="")
    failed = int((results["error"] != "").sum())
    no_face = int((results["error"] == "no face detected").sum())
    counts = results["label"].value_counts()
    print(f"{predictor.name} (threshold {predictor.threshold:.3f}): {len(files)} files, "
          + (f"{len(results) - failed} faces, " if args.faces else "")
          + f"{counts.get('fake', 0)} fake, {counts.get('real', 0)} real, {failed - no_face} unreadable"
          + (f", {no_face} without a face" if args.faces else "")
          + (f" ({len(missing)} not found)" if missing else ""), file=sys.stderr)
    return EXIT_SOME_FAILED if failed else EXIT_OK


def _export(args: argparse.Namespace) -> int:
    import numpy as np

    from helpers.export import ExportMismatch, export_detector, push_to_hub
    from helpers.predict import NoModelError, Predictor, default_model, image_files

    try:
        predictor = Predictor.load(Path(args.model) if args.model else default_model())
        size = predictor.image_size
    except NoModelError as exc:
        print(f"fakeface: {exc}", file=sys.stderr)
        return EXIT_NO_MODEL
    if args.samples:
        from helpers.data import load_image

        loaded = [load_image(p, size=size) for p in image_files(args.samples)[: args.n_samples]]
        samples = np.stack([item.image for item in loaded if item.ok]).astype(np.float32)
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
    from helpers.predict import find_models

    table = find_models(args.runs)
    print(table.to_string(index=False) if not table.empty else "no trained models yet: run `make smoke`")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fakeface", description="Tell AI-generated faces from real photos.",
                                     epilog=__doc__.split("\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    predict = commands.add_parser("predict", help="score image files and folders")
    predict.add_argument("paths", nargs="+", help="image files or folders (searched recursively)")
    predict.add_argument("--model", help="a .keras model (default: best validation AUC under runs/)")
    predict.add_argument("--out", help="write results to this .csv or .json (default: CSV on stdout)")
    predict.add_argument("--faces", action="store_true",
                         help="find faces with MTCNN and score each face crop (one row per face)")
    predict.add_argument("--batch-size", type=int, default=32)
    predict.add_argument("--quiet", action="store_true", help="no progress bar")
    predict.set_defaults(run=_predict)
    export = commands.add_parser("export", help="export a model as TFLite or SavedModel, checked, with a card")
    export.add_argument("--format", choices=["tflite", "saved_model"], required=True)
    export.add_argument("--model", help="a .keras model (default: best validation AUC under runs/)")
    export.add_argument("--out", default="exports", help="output folder (default: exports/)")
    export.add_argument("--samples", nargs="*", help="images for the parity check (default: random arrays)")
    export.add_argument("--n-samples", type=int, default=8)
    export.add_argument("--tolerance", type=float, default=1e-3)
    export.add_argument("--push-to-hub", metavar="REPO_ID", help="also upload to the Hugging Face Hub (HF_TOKEN)")
    export.set_defaults(run=_export)
    listing = commands.add_parser("models", help="list trained models and their metrics")
    listing.add_argument("--runs", default=None, help="runs folder (default: runs/ or $FAKEFACE_RUNS)")
    listing.set_defaults(run=_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
