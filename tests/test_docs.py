"""User-facing text speaks about the lab, not about how it was built; its figures agree."""

import json
import re

import pytest

from helpers.config import REPO_ROOT

ORDINALS = r"first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth|eleventh|twelfth|[0-9]+(?:st|nd|rd|th)"
PROCESS_WORDS = re.compile(
    rf"\bissues? #?\d+|\b(?:{ORDINALS}) sessions?\b|\b(?:this|last|next|that|earlier|previous) sessions?'?s?\b"
    r"|\bVMs?\b|(?<![0-9A-Za-z/])(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{7,40}(?![0-9A-Za-z])", re.IGNORECASE)


def user_facing_texts() -> dict[str, str]:
    """README, CHANGELOG, docs/, course/ (its Markdown), benchmarks/README.md and the notebooks' cells."""
    texts = {}
    for pattern in ("README.md", "CHANGELOG.md", "docs/*.md", "course/*.md", "benchmarks/README.md"):
        for path in sorted(REPO_ROOT.glob(pattern)):
            texts[str(path.relative_to(REPO_ROOT))] = path.read_text()
    for path in sorted((REPO_ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        texts[str(path.relative_to(REPO_ROOT))] = "\n".join("".join(cell["source"]) for cell in cells)
    return texts


def test_user_facing_text_has_no_process_words():
    """No issue numbers, ordinals of the work done ("the ninth session"), "VM" or commit hashes: dates and
    machines instead. A course's class session is a session of the course, not of the work."""
    found = []
    snapshot = REPO_ROOT / "docs" / "results.json"  # the published sample's fingerprint is hex, not a commit
    fingerprint = json.loads(snapshot.read_text())["sample"]["fingerprint"] if snapshot.is_file() else None
    for name, text in user_facing_texts().items():
        if fingerprint:
            text = text.replace(fingerprint, "")
        for line_number, line in enumerate(text.splitlines(), 1):
            for match in PROCESS_WORDS.finditer(line):
                found.append(f"{name}:{line_number}: {match.group(0)!r} in {line.strip()[:100]!r}")
    assert not found, "\n".join(found)


@pytest.mark.parametrize("text", ["as issue 14 asks", "the ninth session", "on the 2-core VM", "commit 6a2b9f0c",
                                  "this session's machine", "(2026-11-25, tenth session)"])
def test_the_process_word_check_catches_each_kind(text):
    assert PROCESS_WORDS.search(text)


@pytest.mark.parametrize("text", ["a 3-hour class session", "session plans for 2 and 3 hours", "2026-11-25",
                                  "sha256 of each file", "2 CPU cores, 2026-11-25", "the Keras session"])
def test_the_process_word_check_leaves_the_lab_s_own_words(text):
    assert not PROCESS_WORDS.search(text)


def test_the_sample_is_described_with_one_count():
    """The face sample's size, wherever the docs give it, is the registry's: its pinned files."""
    from helpers import sources

    registry = sources.load_registry()
    total = sum(len(registry[name].pins()) for name in sources.default_sample())
    written = f"{total:,}"
    for name in ("README.md", "docs/guide.md"):
        text = (REPO_ROOT / name).read_text()
        assert written in text, name
    for name, text in user_facing_texts().items():
        for match in re.finditer(r"the (?:lab's )?face sample[^.]{0,40}?\(([0-9,]+) images", text):
            assert match.group(1) == written, (name, match.group(0))
