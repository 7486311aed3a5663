"""Every object store (a directory, S3 over HTTP to moto's server, the GCS emulator): content-addressed, checksummed,
nothing partial left behind."""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from mreg.errors import IntegrityError, InvalidInputError, NotFoundError
from mreg.storage import ObjectStore, open_object_store
from mreg.storage.s3 import MiB, S3ObjectStore
from tests.support import raw

SMALL = b"model bytes" * 1000
LARGE_SIZE = 12 * MiB + 123


@pytest.fixture
def store_uri(store_root: str) -> str:
    return f"{store_root}/objects"


@pytest.fixture
def store(store_uri: str, tmp_path: Path) -> ObjectStore:
    opened = open_object_store(store_uri, tmp_path)
    if isinstance(opened, S3ObjectStore):
        opened.part_size = 5 * MiB  # S3's smallest part: several parts for the large file
    return opened


@pytest.fixture
def large(tmp_path: Path) -> Path:
    path = tmp_path / "large.bin"
    path.write_bytes(os.urandom(LARGE_SIZE))
    return path


def leftovers(store_uri: str) -> list[str]:
    """Everything the store holds besides its objects and their content addresses: temporary files,
    blobs no address names, open multipart uploads."""
    keys = raw.keys(store_uri)
    if store_uri.startswith("file://"):
        return [key for key in keys if not key.startswith("sha256/")]
    named = {json.loads(raw.get(f"{store_uri}/{key}"))["blob"] for key in keys if key.startswith("sha256/")}
    prefix = store_uri.split("/", 3)[3] + "/"
    blobs = [key for key in keys if not key.startswith("sha256/") and prefix + key not in named]
    return sorted(blobs + [f"upload:{key}" for key in raw.pending_uploads(store_uri)])


def stored_objects(store_uri: str) -> list[str]:
    return sorted(key.removeprefix("sha256/") for key in raw.keys(store_uri) if key.startswith("sha256/"))


@pytest.mark.parametrize("size", ["small", "large"])
def test_put_file_is_content_addressed_and_round_trips(
    store: ObjectStore, store_uri: str, tmp_path: Path, large: Path, size: str
) -> None:
    source = large if size == "large" else tmp_path / "small.bin"
    if size == "small":
        source.write_bytes(SMALL)
    data = source.read_bytes()
    seen: list[int] = []
    stored = store.put_file(source, on_progress=seen.append)
    digest = hashlib.sha256(data).hexdigest()
    assert stored.sha256 == digest
    assert stored.size == len(data) == sum(seen)
    assert stored.uri.endswith(f"/sha256/{digest}") if store_uri.startswith("file:") else "/blobs/" in stored.uri
    assert store.digest(stored.uri) == (digest, len(data))
    assert store.put_file(source) == stored
    assert stored_objects(store_uri) == [digest]
    assert leftovers(store_uri) == []
    copy = tmp_path / "copy.bin"
    store.fetch(stored.uri, stored.sha256, copy)
    assert copy.read_bytes() == data


def test_fetch_refuses_bytes_that_do_not_match(store: ObjectStore, tmp_path: Path) -> None:
    source = tmp_path / "small.bin"
    source.write_bytes(SMALL)
    stored = store.put_file(source)
    target = tmp_path / "target.bin"
    target.write_bytes(b"previous content")
    with pytest.raises(IntegrityError, match="hashes to"):
        store.fetch(stored.uri, "0" * 64, target)
    assert target.read_bytes() == b"previous content"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    with pytest.raises(NotFoundError):
        store.fetch(stored.uri + "-missing", stored.sha256, tmp_path / "none.bin")


def test_interrupted_upload_leaves_nothing(store: ObjectStore, store_uri: str, large: Path) -> None:
    def interrupt(count: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        store.put_file(large, on_progress=interrupt)
    assert stored_objects(store_uri) == []
    assert leftovers(store_uri) == []


def test_unreadable_source(store: ObjectStore, tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match=r"missing\.bin: cannot be read"):
        store.put_file(tmp_path / "missing.bin")


def test_the_same_bytes_uploaded_at_once_are_stored_once(store_uri: str, large: Path, tmp_path: Path) -> None:
    stores = [open_object_store(store_uri, tmp_path) for _ in range(4)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        stored = list(pool.map(lambda store: store.put_file(large), stores))
    assert len({item.uri for item in stored}) == 1
    assert stored_objects(store_uri) == [stored[0].sha256]
    assert leftovers(store_uri) == []
    assert len([key for key in raw.keys(store_uri) if not key.startswith("sha256/")]) == (
        0 if store_uri.startswith("file://") else 1
    )


def test_a_damaged_object_is_replaced_when_the_same_bytes_come_again(
    store: ObjectStore, store_uri: str, large: Path
) -> None:
    stored = store.put_file(large)
    raw.put(stored.uri, b"damaged")
    assert store.digest(stored.uri)[1] == len(b"damaged")
    again = store.put_file(large)
    assert store.digest(again.uri) == (stored.sha256, stored.size)
    assert leftovers(store_uri) == ([] if store_uri.startswith("file:") else [stored.uri.split("/", 5)[5]])
