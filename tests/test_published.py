"""One run, one truth: the documents and figures a reader meets are the published run's.

The snapshot (``docs/results.json``) is written by ``make publish`` from one run; these tests hold
README, docs/, the course kit and the notebooks' markdown to it, and ``figures/`` to its stamp.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from pathlib import Path

import pandas as pd
import pytest

from helpers import publish
from helpers.config import REPO_ROOT

# what a reader takes for a result: a number between 0 and 1 with two or more decimals, or a percentage
RESULT_NUMBER = re.compile(r"(?<![\w.])(?:[01]\.\d{2,4}|\d{1,3}(?:\.\d+)?\s?%)(?![\w.])")
QUOTING = ["README.md", "course/README.md", *[f"docs/{p.name}" for p in sorted((REPO_ROOT / "docs").glob("*.md"))
                                              if p.name != "results.md"]]


def _snapshot() -> dict:
    return json.loads((REPO_ROOT / "docs" / "results.json").read_text())


def _texts() -> dict[str, str]:
    """Every text that may quote a result: documents, and the notebooks' markdown cells."""
    texts = {name: (REPO_ROOT / name).read_text(encoding="utf-8") for name in QUOTING}
    for path in sorted((REPO_ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        texts[f"notebooks/{path.name}"] = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    return texts


def unquoted_numbers(text: str, quotable: set[str]) -> list[str]:
    """The result-like numbers of ``text`` that are not among the snapshot's (code spans left out: commands
    and settings are not results)."""
    prose = re.sub(r"`[^`\n]*`", "", text)
    return [m.group(0).replace(" ", "") for m in RESULT_NUMBER.finditer(prose)
            if m.group(0).replace(" ", "") not in quotable]


def test_every_quoted_number_is_the_published_run_s():
    quotable = publish.quotable_numbers(_snapshot())
    found = {name: unquoted_numbers(text, quotable) for name, text in _texts().items()}
    assert not {k: v for k, v in found.items() if v}, found


def test_the_number_check_catches_a_number_from_another_run():
    quotable = publish.quotable_numbers({"auc": 0.831, "unsure": 0.125})
    assert unquoted_numbers("held out, SD 2.1 ranks at 0.831 and 12% / 12.5% are unsure", quotable) == []
    assert unquoted_numbers("held out, SD 2.1 ranks at 0.4583 and 37.5% are unsure", quotable) == ["0.4583", "37.5%"]
    assert unquoted_numbers("the command `--quality 0.55` is a setting", quotable) == []


def test_generated_blocks_are_the_snapshot_s():
    snap = _snapshot()
    for name in publish.DOCUMENTS:
        text = (REPO_ROOT / name).read_text(encoding="utf-8")
        assert publish.fill_blocks(text, snap) == text, f"{name}: run `make publish`"
    assert (REPO_ROOT / "docs" / "results.md").read_text(encoding="utf-8") == publish.results_markdown(snap)


def test_every_figure_is_the_published_run_s():
    """Each report figure is listed in figures/README.md with its hash, the stamp names the snapshot's run
    and sample, and nothing listed is missing."""
    snap = _snapshot()
    stamp = (REPO_ROOT / "figures" / "README.md").read_text()
    assert f"`{snap['run']}`" in stamp and snap["sample"]["fingerprint"] in stamp and snap["finished"] in stamp
    listed = dict(re.findall(r"\| \[([^\]]+\.png)\]\([^)]+\) \| `([0-9a-f]{16})` \|", stamp))
    on_disk = {p.name for p in (REPO_ROOT / "figures").glob("*.png") if publish.FIGURE_NAME.match(p.name)}
    assert set(listed) == on_disk
    for name, digest in listed.items():
        assert hashlib.sha256((REPO_ROOT / "figures" / name).read_bytes()).hexdigest()[:16] == digest, name


def test_the_snapshot_is_of_the_face_sample():
    """The published run scanned the sample the registry pins: as many images, every source."""
    from helpers import sources

    snap = _snapshot()
    registry = sources.load_registry()
    pinned = {name: len(registry[name].pins()) for name in sources.default_sample()}
    assert snap["sample"]["images"] == sum(pinned.values())
    assert len(snap["sample"]["sources"]) == len(pinned)


@pytest.mark.parametrize(("path", "limit"), [("README.md", 100), ("CHANGELOG.md", 300)])
def test_line_budgets(path, limit):
    assert len((REPO_ROOT / path).read_text().splitlines()) <= limit


def test_docs_and_benchmarks_line_budget_and_no_dated_logs():
    files = [*sorted((REPO_ROOT / "docs").glob("*.md")), REPO_ROOT / "benchmarks" / "README.md"]
    assert sum(len(p.read_text().splitlines()) for p in files) <= 1200
    for path in files:
        assert not re.search(r"^#+ Test suite on", path.read_text(), re.M), path


# --- publish itself, on a run made here -------------------------------------------------------------------

def _fake_run(root: Path) -> Path:
    run = root / "runs" / "sample"
    (run / "metrics").mkdir(parents=True)
    (run / "tables").mkdir()
    (run / "models").mkdir()
    finished = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(time.time() + 60))
    (run / "summary.json").write_text(json.dumps(dict(run="sample", profile="sample", finished=finished,
                                                      total_seconds=600, notebooks={"01_data_collection": 30.0},
                                                      environment={"cpu_count": 2, "keras": "3"})))
    pd.DataFrame(dict(path=["real/a/1.jpg", "fake/b/2.jpg"], label=["real", "fake"], source=["a", "b"],
                      sha256=["00", "11"], status=["ok", "ok"])).to_csv(run / "manifest.csv", index=False)
    pd.DataFrame(dict(path=["real/a/1.jpg", "fake/b/2.jpg"], split=["train", "test"])).to_csv(run / "split.csv",
                                                                                              index=False)
    (run / "metrics" / "m_metrics.json").write_text(json.dumps(dict(model="MobileNetV2 fine-tuned",
                                                                    key="mobilenetv2_finetune",
                                                                    threshold=0.5,
                                                                    test=dict(auc=0.9134, auc_ci=[0.88, 0.94],
                                                                              accuracy=0.8, n=2))))
    pd.DataFrame([dict(recipe="improved", held_out="sd21", auc=0.8312, auc_lo=0.78, auc_hi=0.87, n=9)]).to_csv(
        run / "tables" / "leave_one_generator_out.csv", index=False)
    return run


def test_publish_writes_snapshot_stamp_and_blocks(tmp_path):
    run = _fake_run(tmp_path)
    (tmp_path / "figures").mkdir()
    (tmp_path / "docs").mkdir()
    (tmp_path / "figures" / "05_roc_pr.png").write_bytes(b"png")
    (tmp_path / "README.md").write_text("x\n<!-- results:headline -->\nold 0.1234\n<!-- /results:headline -->\ny\n")
    snap = publish.publish(run, root=tmp_path)
    readme = (tmp_path / "README.md").read_text()
    assert "0.913 [0.880, 0.940]" in readme and "0.1234" not in readme and readme.startswith("x\n")
    assert "SD 2.1 never seen in training (balanced + augmented (frozen)): AUC | 0.831 [0.780, 0.870]" in readme
    assert json.loads((tmp_path / "docs" / "results.json").read_text()) == snap
    stamp = (tmp_path / "figures" / "README.md").read_text()
    assert hashlib.sha256(b"png").hexdigest()[:16] in stamp
    assert snap["sample"]["fingerprint"] == publish.sample_fingerprint(pd.read_csv(run / "manifest.csv"))
    assert {"0.913", "0.91", "91%", "0.831"} <= publish.quotable_numbers(snap)


def test_publish_refuses_a_figure_of_another_run(tmp_path):
    run = _fake_run(tmp_path)
    (tmp_path / "figures").mkdir()
    old = tmp_path / "figures" / "01_data_card.png"
    old.write_bytes(b"old")
    os.utime(old, (time.time() - 86400, time.time() - 86400))
    with pytest.raises(ValueError, match="01_data_card.png"):
        publish.publish(run, root=tmp_path)
    assert not (tmp_path / "docs" / "results.json").exists()  # nothing written


def test_the_fingerprint_ignores_order_and_sees_a_changed_file():
    frame = pd.DataFrame(dict(path=["a", "b"], sha256=["1", "2"]))
    assert publish.sample_fingerprint(frame) == publish.sample_fingerprint(frame.iloc[::-1])
    assert publish.sample_fingerprint(frame) != publish.sample_fingerprint(frame.assign(sha256=["1", "3"]))
