"""Every file the lab writes is whole: kill -9 mid-write, a full disk and two writers at once never tear
one (helpers.atomic), markers and provenance heal on a rerun, and unreadable cache entries are recomputed."""

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import atomic

REPO = Path(__file__).resolve().parents[1]


def _temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if atomic.is_temporary(p)]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "results.csv"
    atomic.write_text(target, "old,whole\n")
    with pytest.raises(RuntimeError, match="mid-write"), atomic.atomic_open(target, "w") as handle:
        handle.write("new,partial")
        raise RuntimeError("mid-write")
    assert target.read_text() == "old,whole\n" and _temporaries(tmp_path) == []
    atomic.write_csv(target, pd.DataFrame({"a": [1, 2]}))
    assert target.read_text() == "a\n1\n2\n"
    atomic.write_json(tmp_path / "sub" / "m.json", {"k": 1})  # its folder is made
    assert json.loads((tmp_path / "sub" / "m.json").read_text()) == {"k": 1}
    with pytest.raises(ValueError), atomic.atomic_open(target, "a"):
        pass


def test_a_folder_target_is_replaced_whole(tmp_path):
    target = tmp_path / "saved_model"
    for version in ("one", "two"):
        with atomic.atomic_path(target) as staged:
            staged.mkdir()
            (staged / "v.txt").write_text(version)
    assert [p.name for p in target.iterdir()] == ["v.txt"] and (target / "v.txt").read_text() == "two"
    with pytest.raises(OSError), atomic.atomic_path(target) as staged:
        staged.mkdir()
        raise OSError("conversion failed")
    assert (target / "v.txt").read_text() == "two" and _temporaries(tmp_path) == []


_SLOW_WRITER = """
import sys, time
from helpers import atomic
with atomic.atomic_open(sys.argv[1], "wb") as handle:
    handle.write(b"x" * 100_000)
    handle.flush()
    open(sys.argv[2], "w").close()  # tell the test the write is under way
    time.sleep(60)
"""


def test_kill_9_in_the_middle_of_a_write_leaves_the_previous_file_and_the_sweep_removes_the_rest(tmp_path):
    target, started = tmp_path / "results.csv", tmp_path / "started"
    atomic.write_text(target, "path,score\na.jpg,0.1\n")
    before = target.read_bytes()
    writer = subprocess.Popen([sys.executable, "-c", _SLOW_WRITER, str(target), str(started)], cwd=REPO)
    deadline = time.monotonic() + 60
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert started.exists()
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait(30)
    assert target.read_bytes() == before
    left = _temporaries(tmp_path)
    assert len(left) == 1 and left[0].stat().st_size == 100_000  # the killed write's own temporary
    own = atomic.temporary_name(tmp_path / "mine.csv")
    own.write_text("a live writer's")  # this process is alive: kept
    assert atomic.sweep_temporaries(tmp_path) == left
    assert _temporaries(tmp_path) == [own]
    os.utime(own, (time.time() - 7200, time.time() - 7200))
    assert atomic.sweep_temporaries(tmp_path, older_than_s=3600) == [own]  # too old, whoever wrote it


_WRITER = """
import sys
from helpers import atomic
for round in range(int(sys.argv[3])):
    atomic.write_bytes(sys.argv[1], (sys.argv[2] * 200_000).encode())
"""


def test_two_processes_writing_one_file_leave_one_whole_output(tmp_path):
    target = tmp_path / "out.csv"
    writers = [subprocess.Popen([sys.executable, "-c", _WRITER, str(target), letter, "40"], cwd=REPO)
               for letter in "ab"]
    for writer in writers:
        assert writer.wait(120) == 0
    content = target.read_bytes()
    assert content in (b"a" * 200_000, b"b" * 200_000) and _temporaries(tmp_path) == []


@pytest.fixture
def tiny_disk(tmp_path):
    """A 64 KiB tmpfs: a real full disk (needs root, as in CI; skipped where mounting is not allowed)."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_a_full_disk_keeps_the_previous_file_whole(tiny_disk):
    target = tiny_disk / "results.csv"
    atomic.write_text(target, "path,score\na.jpg,0.1\n")
    with pytest.raises(OSError) as full:
        atomic.write_bytes(target, b"y" * 200_000)
    assert full.value.errno == 28  # ENOSPC
    assert target.read_text() == "path,score\na.jpg,0.1\n" and _temporaries(tiny_disk) == []


def test_an_unreadable_import_marker_and_a_rerun_after_the_provenance_heal(tmp_path):
    """A marker cut short (as kill -9 left it before markers were atomic) is removed and the source
    imported again; a rerun after a kill between the provenance and the marker lists each image once."""
    from conftest import smooth_image, write_jpeg

    from helpers import sources

    folder = tmp_path / "upstream"
    for k in range(3):
        write_jpeg(folder / f"f{k}.jpg", smooth_image(k))
    source = sources.Source(name="demo", label="real", folder="demo", kind="local", licence="CC0",
                            citation="test", include=["*.jpg"], path=str(folder))
    root = tmp_path / "faces"
    marker = root / "real" / "demo" / ".fetched-demo.json"
    first = sources.fetch_source(source, root, progress=False)
    assert (first["status"] == "ok").sum() == 3 and json.loads(marker.read_text())["imported"] == 3
    marker.unlink()  # killed after the provenance was written, before the marker
    again = sources.fetch_source(source, root, progress=False)
    provenance = pd.read_csv(root / "provenance.csv", keep_default_na=False)
    assert len(provenance) == 3 and provenance["sha256"].is_unique and (again["status"] == "ok").sum() == 3
    assert json.loads(marker.read_text())["imported"] == 3
    marker.write_text("")  # an empty marker: once JSONDecodeError on every fetch
    sources.fetch_source(source, root, progress=False)
    assert json.loads(marker.read_text())["imported"] == 3
    assert len(pd.read_csv(root / "provenance.csv")) == 3
    assert sources.fetch_source(source, root, progress=False)["sha256"].nunique() == 3  # a no-op now


def test_a_corrupt_trained_model_entry_is_discarded_and_trained_again(tmp_path):
    import zipfile

    from helpers import training_cache

    model = tmp_path / "m.keras"
    with zipfile.ZipFile(model, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("model.weights.h5", b"w" * 10_000)
    training_cache.store(tmp_path / "cache", "key1", {"finetune.keras": model}, {"stages": {}})
    assert training_cache.lookup(tmp_path / "cache", "key1") is not None
    stored = tmp_path / "cache" / "key1" / "finetune.keras"
    raw = bytearray(stored.read_bytes())
    raw[60:70] = b"\x00" * 10  # damaged on disk: the member's CRC no longer matches
    stored.write_bytes(bytes(raw))
    with pytest.warns(UserWarning, match="unreadable"):
        assert training_cache.lookup(tmp_path / "cache", "key1") is None
    assert not (tmp_path / "cache" / "key1").exists()
    training_cache.store(tmp_path / "cache", "key2", {"finetune.keras": model}, {"stages": {}})
    (tmp_path / "cache" / "key2" / training_cache.ENTRY_FILE).write_text('{"files": ')  # cut short
    with pytest.warns(UserWarning):
        assert training_cache.lookup(tmp_path / "cache", "key2") is None
    training_cache.store(tmp_path / "cache", "key3", {"finetune.keras": model}, {"stages": {}})
    stored = tmp_path / "cache" / "key3" / "finetune.keras"
    stored.write_bytes(stored.read_bytes()[:40])  # truncated
    with pytest.warns(UserWarning):
        assert training_cache.lookup(tmp_path / "cache", "key3") is None


def test_a_corrupt_feature_cache_entry_is_extracted_again(tmp_path, shared_faces):
    from helpers import features, models

    model, _ = models.build_mobilenetv2(image_size=32, augment="flip", weights=None)
    paths = sorted((shared_faces / "real" / "ffhq").iterdir())[:3]
    frame = pd.DataFrame({"path": [p.relative_to(shared_faces).as_posix() for p in paths],
                          "label": "real", "source": "ffhq"})
    first = features.extract_features(model, frame, shared_faces, 32, cache_dir=tmp_path)
    (entry,) = tmp_path.glob("*.npz")
    entry.write_bytes(entry.read_bytes()[:100])  # a write cut short before writes were atomic
    with pytest.warns(UserWarning, match="unreadable"):
        again = features.extract_features(model, frame, shared_faces, 32, cache_dir=tmp_path)
    assert np.array_equal(first["features"], again["features"]) and again["seconds"] > 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kept = features.extract_features(model, frame, shared_faces, 32, cache_dir=tmp_path)
    assert kept["seconds"] == 0 and np.array_equal(kept["features"], first["features"])


def test_results_files_are_written_by_the_atomic_helper_only():
    """No module of the package writes a file in place: every write_text/write_bytes/to_csv/savefig/np.save
    to a path goes through helpers.atomic (the only exceptions are listed with their reason)."""
    allowed = {
        "atomic.py": "the helper itself",
        "download.py": "a resumable download's .part file, renamed when complete and checked",
        "export.py": "the TFLite bytes are written to export_detector's own temporary",
        "training_cache.py": "files inside the cache entry's temporary folder",
        "protocol_cache.py": "a head's weights in a temporary folder, which training_cache.store copies in",
    }
    pattern = ("write_text(", "write_bytes(", ".to_csv(", "savefig(", "np.save(", "np.savez(", ".save(",
               "to_json(")
    in_memory_or_staged = ("atomic.", "buffer", "staged", "partial", "to_csv(index=False", "BytesIO", "StringIO")
    offenders = []
    for module in sorted((REPO / "helpers").glob("*.py")):
        if module.name in allowed:
            continue
        for number, line in enumerate(module.read_text().splitlines(), 1):
            code = line.split("#")[0]
            if code.strip().startswith(("def ", '"""')):
                continue
            if any(p in code for p in pattern) and not any(ok in code for ok in in_memory_or_staged):
                offenders.append(f"{module.name}:{number}: {line.strip()}")
    assert offenders == [], "\n".join(offenders)


def test_a_kept_file_cut_short_is_removed_with_a_warning(tmp_path):
    assert atomic.read_kept(tmp_path / "absent.npy", np.load) is None
    good = tmp_path / "scores.npy"
    with atomic.atomic_path(good) as partial:
        np.save(partial, np.arange(1000.0))
    assert np.array_equal(atomic.read_kept(good, np.load), np.arange(1000.0))
    good.write_bytes(good.read_bytes()[:200])  # a write cut short before writes were atomic
    with pytest.warns(UserWarning, match="kept scores scores.npy is unreadable"):
        assert atomic.read_kept(good, np.load, "kept scores") is None
    assert not good.exists()


def test_a_kept_array_is_computed_once_whole_and_again_when_damaged(tmp_path):
    calls = []

    def make():
        calls.append(1)
        return np.arange(12.0).reshape(3, 4)

    target = tmp_path / "features.npy"
    assert np.array_equal(atomic.kept_array(target, make), np.arange(12.0).reshape(3, 4))
    assert np.array_equal(atomic.kept_array(target, make), np.arange(12.0).reshape(3, 4))
    assert len(calls) == 1 and np.array_equal(np.load(target), np.arange(12.0).reshape(3, 4))
    target.write_bytes(target.read_bytes()[:60])  # damaged on disk: computed and written again
    with pytest.warns(UserWarning, match="kept features features.npy is unreadable"):
        atomic.kept_array(target, make, "kept features")
    assert len(calls) == 2 and np.array_equal(np.load(target), np.arange(12.0).reshape(3, 4))

    def fails():
        raise RuntimeError("out of memory")

    other = tmp_path / "other.npy"
    with pytest.raises(RuntimeError):
        atomic.kept_array(other, fails)
    assert list(tmp_path.iterdir()) == [target]  # nothing half-written beside it
    assert np.array_equal(atomic.kept_array(None, make), np.arange(12.0).reshape(3, 4))
    assert len(calls) == 3 and list(tmp_path.iterdir()) == [target]
