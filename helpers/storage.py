"""Dataset folders on Amazon S3 or any S3-compatible store (MinIO, Ceph...), with boto3.

:func:`sync_up` and :func:`sync_down` copy only what differs: an object is skipped when its
size and ETag equal the local file's (the ETag is computed locally the way S3 computes it,
multipart uploads included), so an interrupted sync resumes where it stopped and ends with
the same object set. Large files go up and down in parts. Credentials come from the
environment (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, optional
``AWS_SESSION_TOKEN``) and the endpoint from ``endpoint_url`` or ``$FAKEFACE_S3_ENDPOINT``.
On Colab, a mounted Google Drive folder is just a local path: no sync needed.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from helpers import atomic
from helpers.download import contained_path

ENDPOINT_ENV = "FAKEFACE_S3_ENDPOINT"
PART_SIZE = 8 * 1024 * 1024


class StorageError(RuntimeError):
    """The store cannot be reached, the bucket is missing, or credentials are absent; says which."""


@dataclass
class SyncReport:
    """What a sync did."""

    transferred: int = 0
    skipped: int = 0
    bytes: int = 0
    refused: list[str] = field(default_factory=list)  # object keys not written: outside the folder, both an
    # object and a folder of objects, or not writable here (each named when refused)


def _transfer_config(part_size: int):
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(multipart_threshold=part_size, multipart_chunksize=part_size)


def s3_client(endpoint_url: str | None = None, region: str | None = None):
    """A boto3 S3 client from environment credentials; raises :class:`StorageError` if they are absent."""
    import boto3

    key, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
    if not key or not secret:
        raise StorageError("set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment")
    return boto3.client("s3", endpoint_url=endpoint_url or os.environ.get(ENDPOINT_ENV) or None,
                        region_name=region or os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
                        aws_access_key_id=key, aws_secret_access_key=secret,
                        aws_session_token=os.environ.get("AWS_SESSION_TOKEN"))


def local_etag(path: str | Path, part_size: int = PART_SIZE) -> str:
    """The ETag S3 gives this file uploaded by boto3 with ``part_size`` as threshold and part size.

    Below the threshold the upload is one PUT and the ETag is the MD5; at or above it, the
    ETag is the MD5 of the parts' MD5s followed by ``-<number of parts>``.
    """
    digests = []
    whole = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        while block := handle.read(part_size):
            digests.append(hashlib.md5(block, usedforsecurity=False).digest())
            whole.update(block)
    if Path(path).stat().st_size < part_size:
        return whole.hexdigest()
    return f"{hashlib.md5(b''.join(digests), usedforsecurity=False).hexdigest()}-{len(digests)}"


def _wrap(exc: Exception, bucket: str, client) -> StorageError:
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

    endpoint = client.meta.endpoint_url
    if isinstance(exc, EndpointConnectionError):
        return StorageError(f"cannot reach the S3 endpoint {endpoint}: {exc}")
    if isinstance(exc, NoCredentialsError):
        return StorageError("no S3 credentials in the environment")
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("NoSuchBucket", "404"):
            return StorageError(f"bucket {bucket!r} does not exist at {endpoint}")
        if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"):
            return StorageError(f"access to bucket {bucket!r} at {endpoint} denied ({code})")
        return StorageError(f"S3 error {code} for bucket {bucket!r} at {endpoint}: {exc}")
    return StorageError(f"S3 failure for bucket {bucket!r} at {endpoint}: {exc}")


def list_objects(client, bucket: str, prefix: str = "") -> dict[str, tuple[int, str]]:
    """``{key: (size, etag)}`` for every object under ``prefix``."""
    from botocore.exceptions import BotoCoreError, ClientError

    objects = {}
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                objects[item["Key"]] = (int(item["Size"]), item["ETag"].strip('"'))
    except (BotoCoreError, ClientError) as exc:
        raise _wrap(exc, bucket, client) from exc
    return objects


def _key(prefix: str, relative: str) -> str:
    return f"{prefix.strip('/')}/{relative}" if prefix.strip("/") else relative


def sync_up(local_dir: str | Path, bucket: str, prefix: str, client, part_size: int = PART_SIZE,
            progress: bool = True) -> SyncReport:
    """Upload every file under ``local_dir`` (manifest and pairs files included) that differs remotely."""
    from botocore.exceptions import BotoCoreError, ClientError
    from tqdm.auto import tqdm

    local_dir = Path(local_dir)
    remote = list_objects(client, bucket, prefix)
    files = sorted(p for p in local_dir.rglob("*") if p.is_file() and not atomic.is_temporary(p))
    report = SyncReport()
    for path in tqdm(files, desc=f"s3://{bucket}/{prefix}", disable=not progress):
        key = _key(prefix, path.relative_to(local_dir).as_posix())
        size = path.stat().st_size
        if key in remote and remote[key] == (size, local_etag(path, part_size)):
            report.skipped += 1
            continue
        try:
            client.upload_file(str(path), bucket, key, Config=_transfer_config(part_size))
        except (BotoCoreError, ClientError) as exc:
            raise _wrap(exc, bucket, client) from exc
        report.transferred += 1
        report.bytes += size
    return report


def sync_down(bucket: str, prefix: str, local_dir: str | Path, client, part_size: int = PART_SIZE,
              progress: bool = True) -> SyncReport:
    """Download every object under ``prefix`` whose local copy is missing or differs (atomic writes).

    A key that would be written outside ``local_dir`` (:func:`helpers.download.contained_path`) is refused, named and
    counted in ``report.refused``; the rest of the sync goes on.
    """
    from botocore.exceptions import BotoCoreError, ClientError
    from tqdm.auto import tqdm

    local_dir = Path(local_dir)
    report = SyncReport()
    listed = prefix.strip("/") + "/" if prefix.strip("/") else ""  # "v1" must not list "v10/..."
    objects = sorted(list_objects(client, bucket, listed).items())
    strip = len(prefix.strip("/")) + 1 if prefix.strip("/") else 0
    folders = {"/".join(key[strip:].split("/")[:depth]) for key, _ in objects
               for depth in range(1, key[strip:].count("/") + 1)}
    for key, (size, etag) in tqdm(objects, desc=f"s3://{bucket}/{prefix}", disable=not progress):
        relative = key[strip:]
        target = contained_path(local_dir, relative)
        if target is None:
            print(f"refused object key {key!r}: it would be written outside {local_dir}")
            report.refused.append(key)
            continue
        if relative in folders:  # "p/a" and "p/a/b": one local path cannot be a file and a folder
            print(f"refused object key {key!r}: it is also the folder of other objects ({key}/...), which are kept")
            report.refused.append(key)
            continue
        # A plain MD5 ETag (single PUT) is checked as one part; a multipart one with part_size.
        check_part_size = part_size if "-" in etag else size + 1
        if target.is_file() and target.stat().st_size == size and local_etag(target, check_part_size) == etag:
            report.skipped += 1
            continue
        try:
            with atomic.atomic_path(target) as temporary:
                try:
                    client.download_file(bucket, key, str(temporary), Config=_transfer_config(part_size))
                except (BotoCoreError, ClientError) as exc:
                    raise _wrap(exc, bucket, client) from exc
        except OSError as exc:  # the local side: a folder where the file goes, a full disk, no permission
            print(f"refused object key {key!r}: cannot write {target}: {exc.strerror or exc}")
            report.refused.append(key)
            continue
        report.transferred += 1
        report.bytes += size
    return report


def maybe_sync_up(root: str | Path, bucket: str | None, prefix: str = "fakeface-lab",
                  endpoint_url: str | None = None,
                  extra_files: list[Path] | None = None) -> SyncReport | None:
    """Notebook 01's optional upload: skipped, with the reason, without a bucket or credentials.

    Uploads the data folder (with its provenance and pairs files) and ``extra_files`` (the
    run's manifest) under ``prefix``.
    """
    if not bucket:
        print("S3 upload skipped (s3_bucket is not set).")
        return None
    try:
        client = s3_client(endpoint_url)
    except StorageError as exc:
        print(f"S3 upload skipped: {exc}")
        return None
    report = sync_up(root, bucket, f"{prefix.strip('/')}/faces", client)
    for path in extra_files or []:
        client.upload_file(str(path), bucket, _key(prefix, Path(path).name))
        report.transferred += 1
    print(f"s3://{bucket}/{prefix}: {report.transferred} uploaded, {report.skipped} already there")
    return report
