"""The record cache in front of the S3 record store, over HTTP to moto's server: a record read once is served
locally (even once gone from the bucket), a fresh read asks the bucket, and aliases and the latest version
always come from the bucket."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest

from mreg.errors import IntegrityError, NotFoundError
from mreg.records import ModelRef, RecordStore, open_record_store
from mreg.records._cache import registry_cache
from tests.support import make_record

NAME = "iris-rf"


def cached_store(bucket: str, root: Path) -> RecordStore:
    """The bucket's record store with its cache, as a new process would open it."""
    store = open_record_store(f"s3://{bucket}/registry", root)
    store.cache = registry_cache(store.where)
    assert store.cache is not None
    return store


@pytest.fixture
def store(bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> RecordStore:
    monkeypatch.setenv("MREG_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("MREG_NO_CACHE", raising=False)
    store = cached_store(bucket, tmp_path)
    for _ in range(3):
        store.create(NAME, lambda version: make_record(version, sha=f"{version:02d}" * 32))
    store.move_alias(NAME, "production", 2, actor="alice")
    return store


def version_key(version: int) -> str:
    return f"registry/models/{NAME}/versions/{version:010d}.json"


def test_a_record_read_once_is_served_without_the_bucket_and_fresh_reads_ask_it(
    store: RecordStore, bucket: str, tmp_path: Path
) -> None:
    record = store.get(NAME, 2)
    boto3.client("s3").delete_object(Bucket=bucket, Key=version_key(2))
    later = cached_store(bucket, tmp_path)
    assert later.get(NAME, 2) == record
    assert later.resolve(ModelRef(NAME, alias="production")) == record
    with pytest.raises(NotFoundError, match="has no version 2"):
        later.get(NAME, 2, fresh=True)


def test_an_edit_in_the_bucket_after_caching_is_found_by_a_fresh_read(
    store: RecordStore, bucket: str, tmp_path: Path
) -> None:
    record = store.get(NAME, 3)
    s3 = boto3.client("s3")
    edited = json.loads(s3.get_object(Bucket=bucket, Key=version_key(3))["Body"].read())
    edited["model"]["sha256"] = "ee" * 32
    s3.put_object(Bucket=bucket, Key=version_key(3), Body=json.dumps(edited).encode())
    later = cached_store(bucket, tmp_path)
    assert later.get(NAME, 3) == record  # the copy checked when it was first read
    with pytest.raises(IntegrityError, match="was changed after it was written"):
        later.get(NAME, 3, fresh=True)


def test_aliases_and_the_latest_version_come_from_the_bucket(store: RecordStore, bucket: str, tmp_path: Path) -> None:
    assert store.resolve(ModelRef(NAME, alias="production")).version == 2
    assert store.resolve(ModelRef(NAME)).version == 3
    writer = open_record_store(f"s3://{bucket}/registry", tmp_path)  # another host, without a cache
    writer.move_alias(NAME, "production", 3, actor="bob")
    writer.create(NAME, lambda version: make_record(version, sha="44" * 32))
    later = cached_store(bucket, tmp_path)
    assert later.resolve(ModelRef(NAME, alias="production")).version == 3
    assert later.resolve(ModelRef(NAME)).version == 4
    writer.move_alias(NAME, "production", None, actor="bob")
    with pytest.raises(NotFoundError, match="was deleted"):
        cached_store(bucket, tmp_path).resolve(ModelRef(NAME, alias="production"))
