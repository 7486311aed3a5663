"""Model binaries in object storage, content-addressed (`<root>/sha256/<hex>`), streamed and checksummed.

Two backends: a local directory (`file://`, the default) and any S3-compatible store (`s3://`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from mreg.errors import InvalidInputError

CHUNK = 1024 * 1024
Progress = Callable[[int], None]
"""Called with the number of bytes just transferred."""


@dataclass(frozen=True)
class StoredObject:
    """A model binary in the store."""

    uri: str
    sha256: str
    size: int


class ObjectStore(Protocol):
    """Where model binaries live."""

    def put_file(self, path: Path, *, on_progress: Progress | None = None) -> StoredObject:
        """Store the file's bytes, hashing them in the same read; return it once stored and verified.

        A failed or interrupted upload leaves nothing behind (no partial object, no multipart upload).
        """

    def fetch(self, uri: str, sha256: str, destination: Path, *, on_progress: Progress | None = None) -> None:
        """Download the object at `uri` to `destination`; bytes that do not hash to `sha256` are refused
        and `destination` is left untouched."""

    def digest(self, uri: str) -> tuple[str, int]:
        """SHA-256 and size of the bytes stored at `uri`, read in full (for `verify`)."""


def hash_stream(source: BinaryIO, sink: BinaryIO | None = None, on_progress: Progress | None = None) -> tuple[str, int]:
    """SHA-256 and size of a stream, copying it to `sink` in the same pass."""
    sha, size = hashlib.sha256(), 0
    while chunk := source.read(CHUNK):
        sha.update(chunk)
        size += len(chunk)
        if sink is not None:
            sink.write(chunk)
        if on_progress is not None:
            on_progress(len(chunk))
    return sha.hexdigest(), size


def open_object_store(uri: str, root: Path, *, endpoint_url: str | None = None) -> ObjectStore:
    """The object store behind `uri` (`file://PATH`, relative to `root`, or `s3://bucket/prefix`)."""
    if uri.startswith("s3://"):
        from mreg.s3 import store_location
        from mreg.storage.s3 import S3ObjectStore

        return S3ObjectStore(store_location(uri), endpoint_url=endpoint_url)
    from mreg.storage.file import FileObjectStore

    return FileObjectStore(local_root(uri, root))


def object_store_for(uri: str, *, endpoint_url: str | None = None) -> ObjectStore:
    """A store that can read the object a record points to (`file:///...` or `s3://bucket/key`)."""
    if uri.startswith("s3://"):
        from mreg.s3 import S3Location
        from mreg.storage.s3 import S3ObjectStore

        bucket = uri.removeprefix("s3://").partition("/")[0]
        return S3ObjectStore(S3Location(bucket, ""), endpoint_url=endpoint_url)
    from mreg.storage.file import FileObjectStore

    return FileObjectStore(Path("/"))


def local_root(uri: str, root: Path) -> Path:
    """The directory of a `file://` store URI; a relative path resolves against `root`."""
    if not uri.startswith("file://"):
        raise InvalidInputError(f"{uri}: unsupported store URI (use file://PATH or s3://BUCKET/PREFIX).")
    return (root / uri.removeprefix("file://")).resolve()
