"""Hand-written one-line bugs in the modules that decide published numbers, each applied alone to a
copy of the package: the tests named with it must fail.

    python benchmarks/hand_mutants.py                 # one line per mutant; exit 1 if one survives
    python benchmarks/hand_mutants.py --only resize   # the mutants whose title contains a word

The copy is a git worktree of HEAD in a temporary folder with this checkout's ``helpers/`` and
``tests/`` copied in (uncommitted work included); the tests run there with this checkout's
interpreter, so the copy's ``helpers`` is imported. A control run of every named test file on the
unbroken copy must pass. Results and dates: benchmarks/README.md ("Hand-written mutants").
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ORACLES = "tests/test_oracles.py"

# (title, file, text, broken text, test files that must catch it)
MUTANTS = [
    # the four breaks of the first round
    ('choose_threshold(method="accuracy") uses Youden\'s rule', "helpers/stats.py",
     'if method == "youden":', 'if method in ("youden", "accuracy"):', ["tests/test_evaluate.py"]),
    ("split_manifest stratifies by label only", "helpers/splits.py",
     'group_info.groupby(["label", "source"], sort=True)', 'group_info.groupby(["label"], sort=True)',
     ["tests/test_splits.py"]),
    ("prepare_finetune unfreezes 70% instead of 30%", "helpers/models.py",
     "(1.0 - trainable_fraction)))", "(trainable_fraction)))", ["tests/test_models.py"]),
    ("load_image does not rescale 16-bit images", "helpers/decoding.py",
     "np.rint(band * (255.0 / full_scale))", "np.rint(band)", ["tests/test_data.py"]),
    # the eight that survived the suite before the oracle tests
    ("a per-source accuracy interval on this source plus the other class", "helpers/evaluate.py",
     'bootstrap_ci(y[own], scores[own], "accuracy"', 'bootstrap_ci(y[idx], scores[idx], "accuracy"', [ORACLES]),
    ("a per-source rate drops scores on the threshold", "helpers/evaluate.py",
     "called_fake = float(np.mean(scores[own] >= threshold))", "called_fake = float(np.mean(scores[own] > threshold))",
     [ORACLES]),
    ("near-duplicates indexed by position among hashed rows", "helpers/splits.py",
     "pairs.add((int(index[a]), int(index[b])))", "pairs.add((int(a), int(b)))", [ORACLES, "tests/test_splits.py"]),
    ("a frozen head's threshold chosen on test", "helpers/protocols.py",
     'val_scores = score(trained, bank, "val")[val_rows]\n'
     '    trained.threshold = choose_threshold(labels_of(bank.frames["val"].iloc[val_rows]), val_scores)',
     'trained.threshold = choose_threshold(labels_of(bank.frames["test"]), score(trained, bank, "test"))',
     ["tests/test_protocols.py"]),
    ("served per-source rates at the real threshold", "helpers/served.py",
     "hits = int((scores[own] >= point.fake_threshold).sum())", "hits = int((scores[own] >= point.real_threshold).sum())",
     [ORACLES]),
    ("the resize returns BGR", "helpers/data.py",
     "return np.asarray(Image.fromarray(array).resize((size, size), Image.Resampling.BILINEAR))",
     "return np.asarray(Image.fromarray(array).resize((size, size), Image.Resampling.BILINEAR))[..., ::-1]",
     [ORACLES]),
    ("a subsample's seed ignored", "helpers/splits.py",
     'order = rows["path"].map(lambda p: _seeded_key(p, seed))', 'order = rows["path"].map(lambda p: _seeded_key(p, 0))',
     [ORACLES]),
    ("augmentation flips upside down", "helpers/perturb.py",
     "image = image[:, ::-1]", "image = image[::-1]", [ORACLES]),
    # more, one or more per module that decides a number
    ("the listing's seed ignored", "helpers/data.py",
     'hashlib.sha256(f"{seed}:{p}".encode())', 'hashlib.sha256(f"0:{p}".encode())', [ORACLES]),
    ("the Wilson interval at the wrong quantile", "helpers/stats.py",
     "z = float(norm.ppf(0.5 + level / 2))", "z = float(norm.ppf(level))", [ORACLES]),
    ("the FPR-controlled threshold rounds the allowance up", "helpers/stats.py",
     "allowed = int(np.floor(max_fpr * len(own)))       # at most this many",
     "allowed = int(np.ceil(max_fpr * len(own)))       # at most this many", [ORACLES]),
    ("the miss-controlled threshold takes the loosest source", "helpers/stats.py",
     "threshold = min(threshold, float(own[allowed]))", "threshold = max(threshold, float(own[allowed]))",
     ["tests/test_protocols.py"]),
    ("the coverage rule's accuracy test inverted", "helpers/stats.py",
     "allowed &= wrong * min_accuracy <= right * (1 - min_accuracy) + 1e-9",
     "allowed &= wrong * (1 - min_accuracy) <= right * min_accuracy + 1e-9", ["tests/test_served.py"]),
    # Not listed: the coverage rule's sort keys swapped (mean share first, worst second). On 3,000
    # random validation sets (four sources of 2-11 images, accuracies 0.7-0.95) both orders picked
    # bands with the same worst-source share: equivalent in practice, so no test can tell them apart.
    ("evaluation's threshold chosen on test", "helpers/evaluate.py",
     "threshold = choose_threshold(labels_of(val_frame), val_scores, threshold_method)",
     "threshold = choose_threshold(labels_of(test_frame), test_scores, threshold_method)", [ORACLES]),
    ("definite-answer accuracy counts the other label", "helpers/served.py",
     "right = int((verdicts[definite] == label).sum())", 'right = int((verdicts[definite] == "fake").sum())',
     [ORACLES]),
    ("JPEG perturbation ignores its quality", "helpers/perturb.py",
     'Image.fromarray(image).save(buffer, "JPEG", quality=int(quality))',
     'Image.fromarray(image).save(buffer, "JPEG", quality=95)', ["tests/test_perturb_oracles.py"]),
    ("a balanced sample's seed ignored", "helpers/balance.py",
     "rng = np.random.default_rng(seed)", "rng = np.random.default_rng(0)", [ORACLES]),
    ("the loader keeps an EXIF rotation's old size", "helpers/data.py",
     "result.width, result.height = height, width", "result.width, result.height = width, height",
     ["tests/test_data.py"]),
    ("a decoder exception escapes the loader", "helpers/data.py",
     "except Exception as exc:  # noqa: BLE001 - any decoder failure",
     "except (OSError, ValueError) as exc:  # noqa: BLE001 - any decoder failure", ["tests/test_data.py"]),
    ("a remote name is not resolved through links on disk", "helpers/download.py",
     "return target if target.is_relative_to(folder) and target != folder else None",
     "return target if target != folder else None", ["tests/test_download.py"]),
    ("the loader decodes every JPEG at full size: its draft scale dropped", "helpers/data.py",
     'img.draft("RGB", (width // scale, height // scale))', 'img.draft("RGB", (width, height))',
     ["tests/test_loader_oracles.py"]),
    ("large images reduced to three times the asked size before the resize", "helpers/data.py",
     "shrink_to(img, 2 * size if size else max_side)", "shrink_to(img, 3 * size if size else max_side)",
     ["tests/test_loader_oracles.py"]),
    ("the bootstrap AUC's rank offset off by one", "helpers/stats.py",
     "- n1 * (n1 + 1) / 2) / (n0 * n1)", "- n1 * (n1 - 1) / 2) / (n0 * n1)", [ORACLES]),
    ("the feature bank's training copies extracted clean", "helpers/protocols.py",
     'get(frames["train"], f"{kind}:{copy}", flips=False)', 'get(frames["train"], None, flips=False)',
     ["tests/test_protocols.py"]),
    # the classes of bugs that once survived outside the statistics: cache keys, geometry, derived rates,
    # verification, explanations, tables and listings (one of each, written for the class)
    ("the trained-model cache key leaves out the weight averaging", "helpers/train.py",
     "label_smoothing=label_smoothing, ema_momentum=ema_momentum)\n", "label_smoothing=label_smoothing)\n",
     ["tests/test_training_cache.py"]),
    ("a fine-tuned detector's kept scores ignore the mirror averaging", "helpers/protocol_cache.py",
     "variant=variant, tta_flip=trained.recipe.tta_flip,", "variant=variant,", ["tests/test_protocol_cache.py"]),
    ("the feature cache key reads a few weights of the first layers", "helpers/features.py",
     "    for weight in base.weights:\n", "    for weight in base.weights[:4]:\n", ["tests/test_baselines_features.py"]),
    ("a face crop clipped by the width on both axes", "helpers/faces.py",
     "0, height - side))", "0, width - side))", ["tests/test_faces.py"]),
    ("a per-source accuracy interval at the default threshold", "helpers/evaluate.py",
     'bootstrap_ci(y[own], scores[own], "accuracy", threshold, n_boot, seed=seed)',
     'bootstrap_ci(y[own], scores[own], "accuracy", n_boot=n_boot, seed=seed)', ["tests/test_derived_rates.py"]),
    ("the S3 download skips a changed object of the same size", "helpers/storage.py",
     "target.stat().st_size == size and local_etag(target, check_part_size) == etag:", "target.stat().st_size == size:",
     ["tests/test_storage.py"]),
    ("Grad-CAM scaled over the whole batch", "helpers/explain.py",
     "peak = tf.reduce_max(cam, axis=(1, 2), keepdims=True)", "peak = tf.reduce_max(cam, axis=(0, 1, 2), keepdims=True)",
     ["tests/test_explain_embed.py"]),
    ("a grid table's best epoch counted from 0", "helpers/grid.py",
     '"best_epoch": best + 1,', '"best_epoch": best,', ["tests/test_baselines_features.py"]),
    ("a link to a folder listed without its reason", "helpers/inputs.py",
     "elif path.is_symlink() and path.is_dir():", "elif False:", ["tests/test_inputs.py"]),
    ("the glasses check's specificity over the wrong margin", "helpers/annotate.py",
     '("specificity", (~pred & ~truth).sum(), (~truth).sum())', '("specificity", (~pred & ~truth).sum(), (~pred).sum())',
     ["tests/test_annotate.py"]),
    ("a download's checksum skipped when its size is known", "helpers/download.py",
     "    if sha256:\n        actual = file_sha256(path)",
     "    if sha256 and size is None:\n        actual = file_sha256(path)",
     ["tests/test_download.py"]),
    ("the annotation cache key leaves out a labels file", "helpers/annotation_cache.py",
     '{k: setting_identity(v) for k, v in sorted(vars(a).items()) if not k.startswith("_")}',
     '{k: v for k, v in sorted(vars(a).items()) if isinstance(v, (bool, int, float, str))}', ["tests/test_annotate.py"]),
    ("the export parity check compares with a looser tolerance", "helpers/export.py",
     "if difference > tolerance:", "if difference > 10 * tolerance:", ["tests/test_cli_export.py"]),
]


def run_tests(copy: Path, files: list[str]) -> tuple[int, float]:
    """Exit code and seconds of pytest on ``files`` in the copy; the face sample and the weights are this
    checkout's ``../shared`` (the copy has none beside it)."""
    environment = {**os.environ, "FAKEFACE_TEST_FACES": str(REPO.parent / "shared" / "data" / "faces"),
                   "FAKEFACE_WEIGHTS": str(REPO.parent / "shared" / "weights"), "TF_CPP_MIN_LOG_LEVEL": "2"}
    start = time.perf_counter()
    code = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:randomly", "-p", "no:cacheprovider",
                           *files], cwd=copy, capture_output=True, env=environment).returncode
    return code, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="", help="run the mutants whose title contains this")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTANTS if args.only in m[0]]
    with tempfile.TemporaryDirectory() as temp:
        copy = Path(temp) / "copy"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "-q", "--detach", str(copy), "HEAD"], check=True)
        try:
            for folder in ("helpers", "tests"):
                shutil.copytree(REPO / folder, copy / folder, dirs_exist_ok=True)
            control, seconds = run_tests(copy, sorted({f for m in chosen for f in m[4]}))
            print(f"control (no mutant): {'passes' if control == 0 else 'FAILS'} ({seconds:.0f} s)", flush=True)
            survived = int(control != 0)
            for title, file, text, broken, tests in chosen:
                path = copy / file
                original = path.read_text()
                if original.count(text) != 1:
                    print(f"{title}: the text to break is not in {file} once — update this script", flush=True)
                    survived += 1
                    continue
                path.write_text(original.replace(text, broken))
                code, seconds = run_tests(copy, tests)
                path.write_text(original)
                print(f"{title}: {'caught' if code else 'SURVIVED'} by {' '.join(tests)} ({seconds:.0f} s)", flush=True)
                survived += code == 0
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(copy)], check=False)
    print(f"{len(chosen) - survived} of {len(chosen)} caught")
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
