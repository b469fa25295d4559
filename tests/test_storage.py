"""S3 sync against a real S3 endpoint on loopback (moto's ThreadedMotoServer)."""

import os

import pytest
from servers import free_port

from helpers import storage


@pytest.fixture(scope="module")
def endpoint():
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def client(endpoint, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    s3 = storage.s3_client(endpoint_url=endpoint)
    bucket = f"faces-{os.urandom(4).hex()}"
    s3.create_bucket(Bucket=bucket)
    return s3, bucket


@pytest.fixture
def dataset(tmp_path):
    root = tmp_path / "faces"
    for k in range(6):
        path = root / ("real" if k % 2 else "fake") / "src" / f"img{k}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(1000 + k))
    (root / "manifest.csv").write_text("path,label\n")
    (root / "big.bin").write_bytes(os.urandom(11 * 1024 * 1024))  # multipart with 5 MiB parts
    return root


PART = 5 * 1024 * 1024


def test_round_trip_multipart_and_idempotent_resync(client, dataset, tmp_path):
    s3, bucket = client
    report = storage.sync_up(dataset, bucket, "v1", s3, part_size=PART, progress=False)
    assert report.transferred == 8 and report.skipped == 0
    objects = storage.list_objects(s3, bucket, "v1")
    assert objects["v1/big.bin"][1].endswith("-3")  # uploaded in 3 parts
    assert objects["v1/big.bin"][1] == storage.local_etag(dataset / "big.bin", PART)
    assert storage.sync_up(dataset, bucket, "v1", s3, part_size=PART, progress=False).transferred == 0

    copy = tmp_path / "copy"
    down = storage.sync_down(bucket, "v1", copy, s3, part_size=PART, progress=False)
    assert down.transferred == 8
    for path in dataset.rglob("*"):
        if path.is_file():
            assert (copy / path.relative_to(dataset)).read_bytes() == path.read_bytes()
    again = storage.sync_down(bucket, "v1", copy, s3, part_size=PART, progress=False)
    assert again.transferred == 0 and again.skipped == 8
    (dataset / "real" / "src" / "img1.jpg").write_bytes(b"changed")
    assert storage.sync_up(dataset, bucket, "v1", s3, part_size=PART, progress=False).transferred == 1


def test_an_interrupted_sync_resumes_to_the_same_object_set(client, dataset, monkeypatch):
    s3, bucket = client
    real_upload = s3.upload_file
    calls = {"n": 0}

    def flaky_upload(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise ConnectionResetError("network dropped")
        return real_upload(*args, **kwargs)

    monkeypatch.setattr(s3, "upload_file", flaky_upload)
    with pytest.raises(ConnectionResetError):
        storage.sync_up(dataset, bucket, "run", s3, part_size=PART, progress=False)
    assert len(storage.list_objects(s3, bucket, "run")) == 3
    resumed = storage.sync_up(dataset, bucket, "run", s3, part_size=PART, progress=False)
    assert resumed.skipped == 3 and resumed.transferred == 5
    expected = {f"run/{p.relative_to(dataset).as_posix()}" for p in dataset.rglob("*") if p.is_file()}
    assert set(storage.list_objects(s3, bucket, "run")) == expected


def test_missing_bucket_wrong_endpoint_and_missing_credentials(client, dataset, monkeypatch):
    s3, _ = client
    with pytest.raises(storage.StorageError, match="bucket 'no-such-bucket' does not exist"):
        storage.sync_up(dataset, "no-such-bucket", "", s3, progress=False)
    dead = storage.s3_client(endpoint_url=f"http://127.0.0.1:{free_port()}")
    dead.meta.config.retries = {"max_attempts": 1}
    with pytest.raises(storage.StorageError, match="cannot reach the S3 endpoint"):
        storage.list_objects(dead, "faces", "")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    with pytest.raises(storage.StorageError, match="AWS_ACCESS_KEY_ID"):
        storage.s3_client()


def test_hostile_object_keys_never_write_outside_the_folder(client, tmp_path):
    """Keys with //, an absolute path, .., backslashes, a NUL or a control byte are refused and named;
    the legitimate objects beside them all arrive and nothing appears outside the target folder."""
    s3, bucket = client
    outside = tmp_path / "outside"
    hostile = [f"v1//{outside}/abs.txt", f"v1/{outside}//double.txt", "v1/../escape.txt", "v1/a/../../up.txt",
               "v1/..\\..\\back.txt", "v1/a\\b.txt", "v1/nul\x00.txt", "v1/bell\x07.txt", "v1/./dot.txt", "v1/"]
    good = ["v1/real/src/a.jpg", "v1/fake/src/b.jpg", "v1/manifest.csv"]
    for key in hostile + good:
        try:
            s3.put_object(Bucket=bucket, Key=key, Body=key.encode("utf-8", "replace"))
        except Exception:  # noqa: BLE001 - a key the server itself refuses cannot be synced either
            hostile.remove(key)
    assert len(hostile) >= 8  # the store accepted (nearly) all of them: the sync must refuse them
    s3.put_object(Bucket=bucket, Key="v10/other.txt", Body=b"another prefix")
    before = {p for p in tmp_path.rglob("*")}
    target = tmp_path / "data" / "copy"
    report = storage.sync_down(bucket, "v1", target, s3, progress=False)
    assert sorted(report.refused) == sorted(hostile) and report.transferred == len(good)
    for key in good:
        assert (target / key[3:]).read_bytes() == key.encode()
    written = {p for p in tmp_path.rglob("*")} - before
    assert all(p == target or target in p.parents or p == target.parent for p in written), written
    assert not outside.exists() and not (tmp_path / "data" / "escape.txt").exists()


def test_a_key_that_is_both_an_object_and_a_folder_is_refused_and_the_sync_goes_on(client, tmp_path):
    """``p/a`` and ``p/a/b`` cannot both be local paths: ``p/a`` is refused by name, everything else arrives."""
    s3, bucket = client
    for key in ("v1/a", "v1/a/b", "v1/a/c/d", "v1/z.txt", "v1/a/c"):
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
    target = tmp_path / "copy"
    report = storage.sync_down(bucket, "v1", target, s3, progress=False)
    assert sorted(report.refused) == ["v1/a", "v1/a/c"] and report.transferred == 3
    assert (target / "a" / "b").read_bytes() == b"v1/a/b" and (target / "a" / "c" / "d").read_bytes() == b"v1/a/c/d"
    assert (target / "z.txt").read_bytes() == b"v1/z.txt"
    (target / "z.txt").unlink()
    (target / "z.txt").mkdir()  # a local folder where an object goes: that object is refused, named
    report = storage.sync_down(bucket, "v1", target, s3, progress=False)
    assert "v1/z.txt" in report.refused and report.skipped == 2


def test_a_changed_object_of_the_same_size_is_transferred_again(client, dataset, tmp_path):
    """Size alone cannot tell a changed file: the same-size object changed on either side is copied again
    (its ETag differs), in both directions, and an unchanged one is not."""
    s3, bucket = client
    storage.sync_up(dataset, bucket, "same", s3, part_size=PART, progress=False)
    copy = tmp_path / "copy"
    storage.sync_down(bucket, "same", copy, s3, part_size=PART, progress=False)
    key, local = "same/real/src/img1.jpg", copy / "real" / "src" / "img1.jpg"
    changed = os.urandom(len(local.read_bytes()))
    s3.put_object(Bucket=bucket, Key=key, Body=changed)  # remote changed, same size
    down = storage.sync_down(bucket, "same", copy, s3, part_size=PART, progress=False)
    assert down.transferred == 1 and local.read_bytes() == changed
    edited = dataset / "fake" / "src" / "img0.jpg"
    edited.write_bytes(os.urandom(edited.stat().st_size))  # local changed, same size
    up = storage.sync_up(dataset, bucket, "same", s3, part_size=PART, progress=False)
    assert up.transferred == 2  # the edited file, and img1, whose remote copy was changed above
    assert s3.get_object(Bucket=bucket, Key="same/fake/src/img0.jpg")["Body"].read() == edited.read_bytes()
    # the large file: one changed byte in its last part, same size, multipart ETag
    big = dataset / "big.bin"
    content = bytearray(big.read_bytes())
    content[-1] ^= 0xFF
    big.write_bytes(bytes(content))
    assert storage.sync_up(dataset, bucket, "same", s3, part_size=PART, progress=False).transferred == 1
