"""Four one-line bugs the tests once missed, each applied alone to a copy of the package: its test file must fail.

    python benchmarks/four_breaks.py            # prints one line per break; exit 1 if one survives

The copy is a git worktree of HEAD in a temporary folder with this checkout's ``helpers/`` copied in
(uncommitted work included); the tests run there with this checkout's interpreter, so the copy's
``helpers`` is the one imported (it comes first on ``sys.path``). A control run of the same test
files on the unbroken copy must pass.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# (what the issue calls it, file, text, broken text, the test file that must catch it)
BREAKS = [
    ('choose_threshold(method="accuracy") uses Youden\'s rule', "helpers/stats.py",
     'if method == "youden":', 'if method in ("youden", "accuracy"):', "tests/test_evaluate.py"),
    ("split_manifest stratifies by label only", "helpers/splits.py",
     'group_info.groupby(["label", "source"], sort=True)', 'group_info.groupby(["label"], sort=True)',
     "tests/test_splits.py"),
    ("prepare_finetune unfreezes 70% instead of 30%", "helpers/models.py",
     "(1.0 - trainable_fraction)))", "(trainable_fraction)))", "tests/test_models.py"),
    ("load_image does not rescale 16-bit images", "helpers/decoding.py",
     "np.rint(band * (255.0 / full_scale))", "np.rint(band)", "tests/test_data.py"),
]


def run_tests(copy: Path, test_file: str | list[str]) -> int:
    files = [test_file] if isinstance(test_file, str) else test_file
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:randomly", "-p", "no:cacheprovider",
                           *files], cwd=copy, capture_output=True).returncode


def main() -> int:
    with tempfile.TemporaryDirectory() as temp:
        copy = Path(temp) / "copy"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "-q", "--detach", str(copy), "HEAD"], check=True)
        try:
            shutil.copytree(REPO / "helpers", copy / "helpers", dirs_exist_ok=True)
            control = run_tests(copy, sorted({b[4] for b in BREAKS}))
            print(f"control (no break): {'passes' if control == 0 else 'FAILS'}")
            survived = control != 0
            for title, file, text, broken, tests in BREAKS:
                path = copy / file
                original = path.read_text()
                if original.count(text) != 1:
                    print(f"{title}: the text to break is not in {file} once — update this script")
                    survived = True
                    continue
                path.write_text(original.replace(text, broken))
                caught = run_tests(copy, tests) != 0
                path.write_text(original)
                print(f"{title}: {'caught' if caught else 'SURVIVED'} by {tests}")
                survived |= not caught
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(copy)], check=False)
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
