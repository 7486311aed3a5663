"""The file object store: content-addressed, checksummed, nothing partial left behind."""

from __future__ import annotations

import hashlib
from pathlib import Path
from urllib.parse import urlparse

import pytest

from mreg.errors import InvalidInputError
from mreg.storage import FileObjectStore


def file_uri_path(uri: str) -> Path:
    parsed = urlparse(uri)
    assert parsed.scheme == "file"
    return Path(parsed.path)


def test_put_file_is_content_addressed(tmp_path: Path) -> None:
    data = b"model bytes" * 100_000
    source = tmp_path / "model.bin"
    source.write_bytes(data)
    store = FileObjectStore(tmp_path / "store")
    seen: list[int] = []
    stored = store.put_file(source, on_progress=seen.append)
    digest = hashlib.sha256(data).hexdigest()
    assert stored.sha256 == digest
    assert stored.size == len(data) == sum(seen)
    assert file_uri_path(stored.uri) == tmp_path / "store" / "sha256" / digest
    assert file_uri_path(stored.uri).read_bytes() == data
    again = store.put_file(source)
    assert again == stored
    assert [p.name for p in (tmp_path / "store" / "sha256").iterdir()] == [digest]


def test_a_corrupted_object_is_replaced(tmp_path: Path) -> None:
    source = tmp_path / "model.bin"
    source.write_bytes(b"good")
    store = FileObjectStore(tmp_path / "store")
    path = file_uri_path(store.put_file(source).uri)
    path.chmod(0o644)
    path.write_bytes(b"evil")
    store.put_file(source)
    assert path.read_bytes() == b"good"


def test_interrupted_upload_leaves_nothing(tmp_path: Path) -> None:
    source = tmp_path / "model.bin"
    source.write_bytes(b"x" * (5 * 1024 * 1024))
    store = FileObjectStore(tmp_path / "store")

    def interrupt(count: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        store.put_file(source, on_progress=interrupt)
    assert list((tmp_path / "store" / "sha256").iterdir()) == []


def test_unreadable_source(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match=r"missing\.bin: cannot be read"):
        FileObjectStore(tmp_path).put_file(tmp_path / "missing.bin")
