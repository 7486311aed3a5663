"""Behind the stores' backs: read, write, delete and list raw objects of a `file://`, `s3://` or `gs://`
location, as a tampering user or a damaged disk would (tests that check what the stores left or refuse)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _split(uri: str) -> tuple[str, str, str]:
    scheme, _, rest = uri.partition("://")
    bucket, _, key = rest.partition("/")
    return scheme, bucket, key


def _gcs_bucket(name: str) -> Any:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage  # type: ignore[import-untyped]

    client = storage.Client(project="test", credentials=AnonymousCredentials())  # type: ignore[no-untyped-call]
    return client.bucket(name)


def _s3() -> Any:
    import boto3

    return boto3.client("s3")


def put(uri: str, data: bytes) -> None:
    """Write `data` at `uri` (replacing what is there; a read-only local file is made writable first)."""
    scheme, bucket, key = _split(uri)
    if scheme == "file":
        path = Path(uri.removeprefix("file://"))
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            path.chmod(0o644)
        path.write_bytes(data)
    elif scheme == "s3":
        _s3().put_object(Bucket=bucket, Key=key, Body=data)
    else:
        _gcs_bucket(bucket).blob(key).upload_from_string(data)


def get(uri: str) -> bytes:
    scheme, bucket, key = _split(uri)
    if scheme == "file":
        return Path(uri.removeprefix("file://")).read_bytes()
    if scheme == "s3":
        return _s3().get_object(Bucket=bucket, Key=key)["Body"].read()  # type: ignore[no-any-return]
    return _gcs_bucket(bucket).blob(key).download_as_bytes()  # type: ignore[no-any-return]


def delete(uri: str) -> None:
    scheme, bucket, key = _split(uri)
    if scheme == "file":
        Path(uri.removeprefix("file://")).unlink()
    elif scheme == "s3":
        _s3().delete_object(Bucket=bucket, Key=key)
    else:
        _gcs_bucket(bucket).blob(key).delete()


def keys(uri: str) -> list[str]:
    """Every object below the prefix `uri`, as paths relative to it, sorted (files, for `file://`)."""
    scheme, bucket, prefix = _split(uri)
    prefix = prefix.rstrip("/") + "/"
    if scheme == "file":
        root = Path(uri.removeprefix("file://"))
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.is_dir() else []
    if scheme == "s3":
        pages = _s3().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(entry["Key"][len(prefix) :] for page in pages for entry in page.get("Contents", []))
    return sorted(blob.name[len(prefix) :] for blob in _gcs_bucket(bucket).list_blobs(prefix=prefix))


def pending_uploads(uri: str) -> list[str]:
    """Multipart uploads still open below `uri` (S3 only: GCS sessions are not objects)."""
    scheme, bucket, prefix = _split(uri)
    if scheme != "s3":
        return []
    uploads = _s3().list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", [])
    return sorted(upload["Key"] for upload in uploads)
