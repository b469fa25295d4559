"""Downloads against a real HTTP server on 127.0.0.1; safe extraction; a whole source fetched."""

import hashlib
import io
import re
import tarfile
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from conftest import smooth_image, write_jpeg
from servers import FileServer

from helpers import download, sources
from helpers import pins as pins_module

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
        info = tarfile.TarInfo("./d/hello.txt")  # tar's own "./" prefix is a plain relative name
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
    folders = {"ffhq", "stylegan1", "unsplash", "stylegan2", "sd21", "utkface", "mebeauty", "wildfaces",
               "fairface", "sd15"}
    assert folders == {registry[name].folder for name in sources.default_sample()}
    for source in registry.values():
        assert source.label in ("real", "fake") and source.licence and source.citation and source.include
        assert (source.generator is not None) == (source.label == "fake")
        if source.kind == "github":
            for part in source.archives():
                assert re.fullmatch(r"[0-9a-f]{40}", part.ref), f"{part.name}: ref must be a commit"
                assert part.archive_url == f"https://github.com/{part.repo}/archive/{part.ref}.zip"
                assert part.sha256 is None  # GitHub archives are not byte-stable: their files are pinned
        if source.kind == "kaggle":  # no pins: said in the registry and at every fetch
            assert source.notes.startswith("unverified") and source.pins() is None
        else:
            pins = source.pins()
            assert pins is not None, f"{source.name} has no pin file"
            assert len(pins) == source.expected_count and pins["md5"].str.fullmatch(r"[0-9a-f]{32}").all()
            assert pins["sha256"].str.fullmatch(r"[0-9a-f]{64}").all() and pins_module.pin_digest(pins) == "sha256"
    sd15 = registry["sd15-portraits-github"]
    assert len(sd15.archives()) == 3 and sd15.reencode == "jpeg"
    provenance = sd15.pins()
    assert provenance["upstream_md5"].str.fullmatch(r"[0-9a-f]{32}").all() and provenance["upstream_md5"].is_unique
    assert provenance["jpeg_quality"].astype(int).between(75, 95).all()
    assert set(provenance["repo"]) == {part["repo"] for part in sd15.parts}
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


def _png(path, seed: int):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(smooth_image(seed)).save(path, "PNG")
    return path


def _reencoded_source(tmp_path, url_base: str) -> tuple[sources.Source, dict[str, bytes]]:
    """A source made of two repositories whose PNGs were re-encoded to JPEG, pinned as the sample's sd15 is."""
    upstream = {("a/one", "faces/x/1.png"): _png(tmp_path / "up" / "a1.png", 1),
                ("a/one", "faces/x/2.png"): _png(tmp_path / "up" / "a2.png", 2),
                ("b/two", "data/happy/1.png"): _png(tmp_path / "up" / "b1.png", 3)}
    stray = _png(tmp_path / "up" / "stray.png", 4)  # in an archive, not pinned
    rows = []
    for k, ((repo, path), png) in enumerate(upstream.items()):
        quality = 75 + 7 * k
        made = pins_module.reencode_jpeg(png, quality)
        rows.append(dict(name=f"{k}_{Path(path).stem}.jpg", md5=hashlib.md5(made).hexdigest(),
                         sha256=hashlib.sha256(made).hexdigest(), repo=repo, upstream_path=path,
                         upstream_md5=hashlib.md5(png.read_bytes()).hexdigest(), jpeg_quality=quality))
    pd.DataFrame(rows).to_csv(tmp_path / "pins.csv", index=False)
    archives = {}
    for repo, ref in (("a/one", "1" * 40), ("b/two", "2" * 40)):
        members = {f"{repo.split('/')[1]}-{ref}/{path}": png.read_bytes()
                   for (owner, path), png in upstream.items() if owner == repo}
        members[f"{repo.split('/')[1]}-{ref}/faces/x/stray.png"] = stray.read_bytes()
        archives[f"/{repo}/archive/{ref}.zip"] = _zip(tmp_path / f"{ref[0]}.zip", members).read_bytes()
    source = sources.Source(name="made", label="fake", folder="made", kind="github", licence="x", citation="y",
                            generator="G", include=["*"], files=str(tmp_path / "pins.csv"), expected_count=3,
                            reencode="jpeg", parts=[{"repo": "a/one", "ref": "1" * 40, "include": ["*/faces/*"]},
                                                    {"repo": "b/two", "ref": "2" * 40, "include": ["*/data/*"]}])
    return source, archives


def test_a_source_of_several_repositories_is_re_encoded_as_pinned(tmp_path, monkeypatch):
    """Upstream md5 checked, re-encoded at each pin's quality (same Pillow: the pinned bytes), an
    unpinned file left out with its reason, and every archive of the source requested once."""
    source, archives = _reencoded_source(tmp_path, "")
    with FileServer(archives) as server:
        monkeypatch.setenv(sources.GITHUB_ENV, server.url)
        provenance = sources.fetch_source(source, tmp_path / "faces", cache_dir=tmp_path / "cache", progress=False)
        assert sorted(r["path"] for r in server.requests) == sorted(archives)
    made = provenance[provenance.status == "converted"]
    assert len(made) == 3 and made.reason.str.contains("upstream md5 [0-9a-f]{32} verified").all()
    assert made.reason.str.contains("the pinned bytes exactly").all()
    assert set(made.original_path.str.split("/", n=1).str[1]) == {"faces/x/1.png", "faces/x/2.png", "data/happy/1.png"}
    assert provenance.loc[provenance.status == "skipped", "original_path"].str.endswith("stray.png").all()
    check = sources.check_pins(source, tmp_path / "faces" / "fake" / "made")
    assert (check["matched"], check["missing"], check["unexpected"]) == (3, 0, 0)
    assert all(p.suffix == ".jpg" for p in (tmp_path / "faces" / "fake" / "made").glob("*_*"))


def test_a_changed_upstream_file_fails_the_re_encoded_source(tmp_path, monkeypatch):
    source, archives = _reencoded_source(tmp_path, "")
    path = next(iter(archives))
    changed = zipfile.ZipFile(io.BytesIO(archives[path]))
    members = {m: changed.read(m) for m in changed.namelist()}
    first = sorted(m for m in members if not m.endswith("stray.png"))[0]
    members[first] = _png(tmp_path / "other.png", 9).read_bytes()  # a different picture at the pinned path
    archives[path] = _zip(tmp_path / "changed.zip", members).read_bytes()
    with FileServer(archives) as server:
        monkeypatch.setenv(sources.GITHUB_ENV, server.url)
        with pytest.raises(download.ChecksumError, match="1 pinned files are missing"):
            sources.fetch_source(source, tmp_path / "faces", cache_dir=tmp_path / "cache", progress=False)
    assert not list((tmp_path / "cache").glob("*.zip"))  # no archive of a failed fetch stays cached


@pytest.mark.parametrize("bad", ["html", "truncated"])
def test_a_bad_archive_never_poisons_the_cache(tmp_path, bad):
    """An HTML error page served with 200, or a truncated zip: the fetch fails, the archive is deleted
    from the cache, and the next fetch from a good server succeeds."""
    good = _repo_archive(tmp_path)
    body = b"<!doctype html><title>rate limited</title>" if bad == "html" else good[: len(good) // 2]
    source = _pinned_source(tmp_path, "")
    cache = tmp_path / "cache"
    with FileServer({"/p.zip": body}) as server:
        source.url = f"{server.url}/p.zip"
        with pytest.raises(download.ArchiveError, match=source.archive_name):
            sources.fetch_source(source, tmp_path / "faces", cache_dir=cache, progress=False)
    assert not (cache / source.archive_name).exists() and not list(cache.glob("pinned-*"))
    with FileServer({"/p.zip": good}) as server:
        source.url = f"{server.url}/p.zip"
        provenance = sources.fetch_source(source, tmp_path / "faces", cache_dir=cache, progress=False)
    assert (provenance.status == "ok").sum() == 2


def test_an_archive_pinned_by_hash_and_size_is_refused_when_it_differs(tmp_path):
    good = _repo_archive(tmp_path)
    source = _pinned_source(tmp_path, "")
    source.sha256, source.size = hashlib.sha256(good).hexdigest(), len(good)
    with FileServer({"/p.zip": good[:-1] + b"X"}) as server:
        source.url = f"{server.url}/p.zip"
        with pytest.raises(download.ChecksumError, match="sha256"):
            sources.fetch_source(source, tmp_path / "faces", cache_dir=tmp_path / "cache", progress=False)
    assert not list((tmp_path / "cache").iterdir())


@pytest.mark.parametrize("name", ["a\\..\\..\\escape.txt", "a//b.txt", "c:/x.txt", "a/./b.txt", "a/\x01b.txt"])
def test_archive_members_with_odd_names_are_refused(tmp_path, name):
    archive = _zip(tmp_path / "odd.zip", {"ok/a.txt": b"a", name: b"x"})
    with pytest.raises(download.UnsafeArchiveError, match="outside"):
        download.safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*"))


def test_a_remote_name_never_lands_outside_its_folder_even_through_a_link(tmp_path):
    """Oracle: the resolved destination's parents, by hand. A link already inside the folder that points
    outside it must not carry a name (an S3 key, an archive member) out."""
    folder = tmp_path / "faces"
    (folder / "real").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (folder / "link").symlink_to(tmp_path / "elsewhere")
    assert download.contained_path(folder, "real/a.jpg") == (folder / "real" / "a.jpg").resolve()
    assert download.contained_path(folder, "link/evil.txt") is None
    for name in ("", "/abs", "a//b", "../x", "a/../../x", "a\\b", "a\x00b", "c:/x", "./a", "a/\x7f"):
        assert download.contained_path(folder, name) is None, name


@pytest.mark.parametrize("way", ["served truncated", "served corrupted", "left on disk", "mirror"])
def test_bytes_that_do_not_match_the_checksum_are_refused_by_name(tmp_path, way):
    """However the wrong bytes arrive — a truncated or altered response, a damaged file already at the
    destination, a damaged mirror copy — the download is refused with the file named, nothing is kept under the
    final name, and the right bytes are fetched once they are served."""
    digest = hashlib.sha256(PAYLOAD).hexdigest()
    wrong = {"served truncated": PAYLOAD[:-100], "served corrupted": b"x" + PAYLOAD[1:]}.get(way, PAYLOAD)
    target = tmp_path / "faces-v2.zip"
    if way == "left on disk":
        target.write_bytes(b"y" + PAYLOAD[1:])  # same size, other bytes: not "already verified"
        with FileServer({"/faces-v2.zip": PAYLOAD}) as server:
            path = download.download(f"{server.url}/faces-v2.zip", target, sha256=digest, size=len(PAYLOAD),
                                     progress=False)
        assert path.read_bytes() == PAYLOAD and len(server.requests) == 1
        return
    if way == "mirror":
        mirror = tmp_path / "mirror"
        mirror.mkdir()
        (mirror / "faces-v2.zip").write_bytes(PAYLOAD[:-1] + b"z")
        with pytest.raises(download.ChecksumError, match="faces-v2.zip"):
            download.download("http://127.0.0.1:9/faces-v2.zip", target, sha256=digest, mirror=mirror, progress=False)
        assert not target.exists()
        return
    with FileServer({"/faces-v2.zip": wrong}) as server, pytest.raises(download.ChecksumError, match="faces-v2.zip"):
        download.download(f"{server.url}/faces-v2.zip", target, sha256=digest, progress=False)
    assert not target.exists() and not list(tmp_path.glob("faces-v2.zip*"))
