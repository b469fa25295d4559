"""Publish one run: what a reader meets is made by the run it describes.

``python -m helpers.publish --run sample`` (``make publish``; ``make reproduce`` calls it after the
sample profile) reads ``runs/<run>/`` and writes, each atomically:

- ``docs/results.json``: the snapshot — run, sample fingerprint, date, machine, versions, and every
  headline number with its 95% interval (per-model test AUC, the served detector per source, both
  leave-one-out protocols, robustness, the targets with met/missed);
- ``docs/results.md``: the same snapshot as tables;
- ``figures/README.md``: the stamp of ``figures/`` — each PNG with its SHA-256 and the run that made
  it; a PNG older than the run is refused (it was made by another run);
- the generated blocks (``<!-- results:NAME -->`` ... ``<!-- /results:NAME -->``) of README.md,
  docs/model_card.md and docs/findings.md.

``tests/test_published.py`` holds the documents to the snapshot: every result-like number they
quote must be one of the snapshot's, every block must equal what :func:`render_block` makes of it,
and every figure must match its stamp.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from helpers import atomic
from helpers.config import REPO_ROOT
from helpers.plots import recipe_name, source_name

DOCS_DIR = REPO_ROOT / "docs"
FIGURES_DIR = REPO_ROOT / "figures"
SNAPSHOT = DOCS_DIR / "results.json"
BLOCK = re.compile(r"(<!-- results:(?P<name>[a-z_]+) -->\n)(?P<body>.*?)(<!-- /results:(?P=name) -->)", re.S)
DOCUMENTS = ("README.md", "docs/model_card.md", "docs/findings.md", "docs/guide.md")
# the figures of the run: notebook 01 to 09 write them (app screenshots and the like are not published here)
FIGURE_NAME = re.compile(r"^\d\d_[a-z0-9_]+\.png$")
HEADLINE_MODELS = ("mobilenetv2_head", "mobilenetv2_finetune", "resnet50_head", "resnet50_finetune")  # 03/04's
FROZEN_SERVED = "improved"  # the frozen recipe the served one fine-tunes (notebook 08's improved_name)


def settings() -> dict:
    """The lab's conventions that documents quote beside the results, read from the functions that own them."""
    import inspect

    from helpers import faces, splits, stats

    def default(function, name):
        return inspect.signature(function).parameters[name].default

    return {"confidence_level": default(stats.auc_ci, "level"), "face_margin": default(faces.face_crop, "margin"),
            "split": dict(zip(("train", "val", "test"), default(splits.split_manifest, "fractions")))}


def sample_fingerprint(manifest: pd.DataFrame) -> str:
    """SHA-256 (16 hex digits) of the run manifest's (path, sha256) pairs, sorted: the same files give the same
    print, whatever order they were scanned in."""
    pairs = sorted(zip(manifest["path"].astype(str), manifest["sha256"].astype(str)))
    return hashlib.sha256("\n".join(f"{p}\t{m}" for p, m in pairs).encode()).hexdigest()[:16]


def _cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or the empty string where it cannot be read."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def _r(value, digits: int = 3):
    """A number as the documents show it (rounded), ``None`` for a missing one."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return round(float(value), digits)


def _table(run_dir: Path, name: str) -> pd.DataFrame:
    path = run_dir / "tables" / f"{name}.csv"
    return pd.read_csv(path) if path.is_file() else pd.DataFrame()


def _rows(frame: pd.DataFrame, columns: Iterable[str]) -> list[dict]:
    """Records of ``frame`` with the ``columns`` it has, numbers rounded as shown."""
    keep = [c for c in columns if c in frame]
    return [{c: (_r(v) if isinstance(v, float) else v) for c, v in row.items()}
            for row in frame[keep].to_dict("records")]


def snapshot(run_dir: Path) -> dict:
    """The headline numbers of a finished run, from its own files (``summary.json``, ``metrics/``, ``tables/``,
    the served detector's record)."""
    run_dir = Path(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    manifest = pd.read_csv(run_dir / "manifest.csv", keep_default_na=False)
    split = pd.read_csv(run_dir / "split.csv", keep_default_na=False)
    ok = manifest[manifest["status"] != "rejected"] if "status" in manifest else manifest
    sources = {f"{label}/{source}": int(n) for (label, source), n in ok.groupby(["label", "source"]).size().items()}
    models = []
    for path in sorted((run_dir / "metrics").glob("*_metrics.json")):
        data = json.loads(path.read_text())
        test = data.get("test", {})
        models.append(dict(model=data.get("model", path.stem), key=data.get("key", path.stem),
                           auc=_r(test.get("auc")), auc_lo=_r((test.get("auc_ci") or [None])[0]),
                           auc_hi=_r((test.get("auc_ci") or [None, None])[1]), accuracy=_r(test.get("accuracy")),
                           threshold=_r(data.get("threshold")), n=test.get("n"),
                           weights=data.get("weights", {}).get("source")))
    served = {}
    record_file = run_dir / "models" / "served.json"
    if record_file.is_file():
        record = json.loads(record_file.read_text())
        point = record.get("operating_point", {})
        served = dict(recipe=record.get("recipe", {}), image_size=record.get("image_size"),
                      max_real_fpr=point.get("max_real_fpr"), max_fake_miss=point.get("max_fake_miss"),
                      distance_quantile=record.get("distance_quantile"),
                      fake_threshold=_r(point.get("fake_threshold"), 4), real_threshold=_r(point.get("real_threshold"), 4),
                      test_auc=_r(record.get("test_auc")), validation_auc=_r(record.get("validation", {}).get("auc")),
                      train_minutes=_r(record.get("train_seconds", 0) / 60, 1), created=record.get("created"))
    environment = summary.get("environment", {})
    started = _parse_time(summary["finished"]) - summary.get("total_seconds", 0)
    return {
        "run": summary["run"], "profile": summary.get("profile"), "finished": summary["finished"],
        "started": datetime.fromtimestamp(started, UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "minutes": _r(summary.get("total_seconds", 0) / 60, 1),
        "notebook_minutes": {k: _r(v / 60, 1) for k, v in summary.get("notebooks", {}).items()},
        "machine": dict(cpu=_cpu_model(), cores=environment.get("cpu_count"), platform=environment.get("platform")),
        "versions": {k: v for k, v in environment.items() if k not in ("platform", "cpu_count")},
        "sample": dict(images=int(len(manifest)), usable=int(len(ok)), fingerprint=sample_fingerprint(manifest),
                       sources=sources, split={s: int(n) for s, n in split["split"].value_counts().sort_index().items()}),
        "models": models,
        "served": served,
        "served_per_source": _rows(_table(run_dir, "served_per_source"),
                                   ("label", "source", "n", "rate_name", "rate", "rate_lo", "rate_hi", "called_fake",
                                    "called_real", "unsure")),
        "served_targets": _rows(_table(run_dir, "served_targets"), ("target", "goal", "measured", "met")),
        "leave_one_generator_out": _rows(_table(run_dir, "leave_one_generator_out"),
                                         ("recipe", "held_out", "auc", "auc_lo", "auc_hi", "n")),
        "leave_one_real_source_out": _rows(_table(run_dir, "leave_one_real_source_out"),
                                           ("recipe", "held_out", "fpr", "fpr_lo", "fpr_hi", "detection", "auc")),
        "robustness": _rows(_table(run_dir, "robustness_grid"),
                            ("recipe", "perturbation", "auc", "auc_lo", "auc_hi", "auc_drop")),
        "faces": _rows(_table(run_dir, "face_detection_rate"),
                       ("label", "source", "images", "face", "several_faces", "no_face", "detection_rate")),
        "glasses_check": _rows(_table(run_dir, "glasses_check"),
                               ("half", "n", "with_glasses", "accuracy", "accuracy_lo", "accuracy_hi", "recall",
                                "recall_lo", "recall_hi", "specificity", "specificity_lo", "specificity_hi")),
        "settings": settings(),
    }


def _parse_time(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%d %H:%M UTC").replace(tzinfo=UTC).timestamp()


def quotable_numbers(snap: dict) -> set[str]:
    """Every way the documents may write one of the snapshot's numbers: as stored, to 2 and 3 decimals, and
    a share as a whole percentage (0.463 -> ``46%``, ``46.3%``)."""
    found: set[str] = set()

    def walk(value):
        if isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list | tuple):
            for v in value:
                walk(v)
        elif isinstance(value, bool) or value is None:
            return
        elif isinstance(value, int | float):
            found.update({f"{value}", f"{value:.2f}", f"{value:.3f}", f"{value:,}", f"{value:.1f}"})
            if 0 <= value <= 1:
                found.update({f"{100 * value:.0f}%", f"{100 * value:.1f}%"})
        elif isinstance(value, str):
            found.update(re.findall(r"\d[\d,]*(?:\.\d+)?%?", value))

    walk(snap)
    return found


def _ci(row: dict, key: str) -> str:
    value, low, high = row.get(key), row.get(f"{key}_lo"), row.get(f"{key}_hi")
    if value is None:
        return "—"
    return f"{value:.3f} [{low:.3f}, {high:.3f}]" if low is not None and high is not None else f"{value:.3f}"


def _markdown(header: str, separator: str, rows: list[str]) -> str:
    """A Markdown table: its header, separator and rows, one line each."""
    return "\n".join([header, separator, *rows]) + "\n"


def render_block(name: str, snap: dict) -> str:
    """The generated text of the block ``name`` (``headline``, ``served``, ``protocols``, ``run``)."""
    if name == "run":
        return (f"Run `{snap['run']}` (profile `{snap['profile']}`), finished {snap['finished']} after "
                f"{snap['minutes']} min on {snap['machine']['cores']} CPU cores ({snap['machine']['cpu'] or 'CPU'}); "
                f"sample of {snap['sample']['usable']:,} images from {len(snap['sample']['sources'])} sources "
                f"(fingerprint `{snap['sample']['fingerprint']}`).\n")
    if name == "headline":
        served = snap["served"]
        lines = [f"| {m['model']}: AUC | {_ci(m, 'auc')} |" for m in snap["models"] if m["key"] in HEADLINE_MODELS]
        recipe = _served_recipe(snap)
        for r in (r for r in snap["leave_one_generator_out"] if r["recipe"] == recipe):
            lines.append(f"| {source_name(r['held_out'])} never seen in training ({recipe_name(recipe)}): AUC | "
                         f"{_ci(r, 'auc')} |")
        if served:
            clean = [r for r in snap["robustness"]
                     if r["recipe"] == served["recipe"].get("name") and r["perturbation"] == "clean"]
            shown = _ci(clean[0], "auc") if clean else f"{served['test_auc']:.3f}"
            lines.append(f"| the served detector (fake / real / unsure): AUC | {shown} |")
        return _markdown("| what (test split, 95% CI) | result |", "|---|---|", lines)
    if name == "detectors":
        return _markdown("| detector (notebooks 05 and 09) | test AUC [95% CI] | accuracy | threshold (validation) | "
                         "weights |", "|---|---|---:|---:|---|",
                         [f"| {m['model']} | {_ci(m, 'auc')} | {m['accuracy']:.3f} | {m['threshold']:.3f} | "
                          f"{m['weights'] or '—'} |" for m in snap["models"]])
    if name == "operating_point":
        served = snap["served"]
        if not served:
            return "The published run saved no served detector.\n"
        return (f"In the published run: **fake** at P(fake) ≥ {served['fake_threshold']}, **real** below "
                f"{served['real_threshold']}, unsure in between; validation AUC {served['validation_auc']:.3f}, "
                f"test AUC {served['test_auc']:.3f}; {served['image_size']} px; trained in "
                f"{served['train_minutes']} min.\n")
    if name == "served":
        return _markdown("| source | n | rate [95% CI] | called fake | called real | unsure |",
                         "|---|---:|---|---:|---:|---:|",
                         [f"| {source_name(r['source'])} ({r['label']}) | {r['n']} | {r['rate_name']} {_ci(r, 'rate')} | "
                          f"{r['called_fake']:.3f} | {r['called_real']:.3f} | {r['unsure']:.3f} |"
                          for r in snap["served_per_source"]])
    if name == "protocols":
        generators = _markdown("| recipe | held out | AUC [95% CI] |", "|---|---|---|",
                               [f"| {recipe_name(r['recipe'])} | {source_name(r['held_out'])} | {_ci(r, 'auc')} |"
                                for r in snap["leave_one_generator_out"]])
        return generators + "\n" + _markdown(
            "| recipe | held-out real source | false-positive rate [95% CI] | fakes detected |", "|---|---|---|---|",
            [f"| {recipe_name(r['recipe'])} | {source_name(r['held_out'])} | {_ci(r, 'fpr')} | {r['detection']:.3f} |"
             for r in snap["leave_one_real_source_out"]])
    if name == "targets":
        return _markdown("| target | goal | measured | met |", "|---|---|---:|---|",
                         [f"| {r['target']} | {r['goal']} | {r['measured']} | {'yes' if r['met'] else 'no'} |"
                          for r in snap["served_targets"]])
    if name == "faces":
        return _markdown("| source | images | face found | several faces | no face |", "|---|---:|---:|---:|---:|",
                         [f"| {source_name(r['source'])} ({r['label']}) | {r['images']:,} | {r['detection_rate']:.1%} | "
                          f"{r['several_faces']} | {r['no_face']} |" for r in snap["faces"]])
    if name == "glasses":
        return _markdown("| half | faces | with glasses | accuracy [95% CI] | recall [95% CI] | specificity [95% CI] |",
                         "|---|---:|---:|---|---|---|",
                         [f"| {r['half']} | {r['n']} | {r['with_glasses']} | {_ci(r, 'accuracy')} | {_ci(r, 'recall')} | "
                          f"{_ci(r, 'specificity')} |" for r in snap["glasses_check"]])
    if name == "robustness":
        return _markdown("| recipe | perturbation | AUC [95% CI] | drop |", "|---|---|---|---:|",
                         [f"| {recipe_name(r['recipe'])} | {r['perturbation']} | {_ci(r, 'auc')} | {r['auc_drop']:+.3f} |"
                          for r in snap["robustness"]])
    raise KeyError(f"no generated block {name!r}")


def _served_recipe(snap: dict) -> str:
    """The recipe whose leave-one-generator-out rows the headline shows: the served detector's when the run
    measured it, else the frozen recipe it was built from (``improved``), else the last one measured."""
    name = snap.get("served", {}).get("recipe", {}).get("name")
    names = [r["recipe"] for r in snap["leave_one_generator_out"]]
    for candidate in (name, FROZEN_SERVED):
        if candidate in names:
            return candidate
    return names[-1] if names else ""


def results_markdown(snap: dict) -> str:
    """``docs/results.md``: the snapshot as tables (generated; do not edit)."""
    parts = ["# Results of the published run", "",
             "Generated by `make publish` from the run's own files; every number the documents quote is "
             "one of these (`docs/results.json` holds them for tests and tools). Do not edit by hand.", "",
             render_block("run", snap), "## Headline", "", render_block("headline", snap),
             "## Every detector", "", render_block("detectors", snap),
             "## Served detector on the test split, per source", "", render_block("operating_point", snap), "",
             render_block("served", snap),
             "## Leave one generator out, leave one real source out", "", render_block("protocols", snap),
             "## Robustness (test split)", "", render_block("robustness", snap),
             "## Targets", "", render_block("targets", snap),
             "## Minutes per notebook", "", "| notebook | minutes |", "|---|---:|",
             *[f"| {k} | {v} |" for k, v in snap["notebook_minutes"].items()], "",
             "## Versions", "", ", ".join(f"{k} {v}" for k, v in snap["versions"].items()), ""]
    return "\n".join(parts)


def figure_stamp(figures_dir: Path, snap: dict) -> str:
    """``figures/README.md``: each figure of the run with its SHA-256; refuses a figure older than the run."""
    started = _parse_time(snap["started"])
    lines = ["# Figures", "", f"Made by run `{snap['run']}` (sample fingerprint `{snap['sample']['fingerprint']}`), "
             f"started {snap['started']}, finished {snap['finished']}. Generated by `make publish`; "
             "`tests/test_published.py` checks each file against its hash.", "",
             "| figure | sha256 |", "|---|---|"]
    stale = []
    for path in sorted(figures_dir.glob("*.png")):
        if not FIGURE_NAME.match(path.name):
            continue
        if path.stat().st_mtime < started - 60:
            stale.append(path.name)
        lines.append(f"| [{path.name}]({path.name}) | `{hashlib.sha256(path.read_bytes()).hexdigest()[:16]}` |")
    if stale:
        raise ValueError(f"figures older than run {snap['run']!r} (made by another run): {', '.join(stale)}")
    return "\n".join(lines) + "\n"


def fill_blocks(text: str, snap: dict) -> str:
    """``text`` with every generated block re-rendered from ``snap``."""
    return BLOCK.sub(lambda m: m.group(1) + render_block(m.group("name"), snap) + m.group(4), text)


def publish(run_dir: Path, root: Path = REPO_ROOT) -> dict:
    """Write the snapshot, its tables, the figures' stamp and the documents' generated blocks; return the snapshot."""
    snap = snapshot(run_dir)
    stamp = figure_stamp(root / "figures", snap)  # first: a stale figure stops the publication before any write
    atomic.write_text(root / "docs" / "results.json", json.dumps(snap, indent=2) + "\n")
    atomic.write_text(root / "docs" / "results.md", results_markdown(snap))
    atomic.write_text(root / "figures" / "README.md", stamp)
    for name in DOCUMENTS:
        path = root / name
        if path.is_file():
            text = path.read_text(encoding="utf-8")
            filled = fill_blocks(text, snap)
            if filled != text:
                atomic.write_text(path, filled)
    return snap


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.publish", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", default="sample", help="run name under runs/ (default: sample)")
    parser.add_argument("--runs-root", default=str(REPO_ROOT / "runs"))
    args = parser.parse_args(argv)
    try:
        snap = publish(Path(args.runs_root) / args.run)
    except (FileNotFoundError, ValueError) as error:
        print(f"cannot publish run {args.run!r}: {error}")
        return 1
    print(f"published run {snap['run']} (finished {snap['finished']}): docs/results.md, docs/results.json, "
          "figures/README.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
