"""Model binaries in object storage, content-addressed (`<root>/sha256/<hex>`), streamed and checksummed."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from mreg.errors import IntegrityError, InvalidInputError, StorageError

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
        """Store the file's bytes, hashing them in the same read; return it once stored and verified."""


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


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes."""
    with path.open("rb") as handle:
        return hash_stream(handle)[0]


class FileObjectStore:
    """A directory: objects are written to a temporary file, fsynced, then moved into place atomically."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def put_file(self, path: Path, *, on_progress: Progress | None = None) -> StoredObject:
        try:
            source = path.open("rb")
        except OSError as exc:
            raise InvalidInputError(f"{path}: cannot be read ({exc.strerror}).") from None
        objects = self.root / "sha256"
        try:
            objects.mkdir(parents=True, exist_ok=True)
            with source, _temporary_file(objects) as (handle, temporary):
                sha256, size = hash_stream(source, handle, on_progress)
                handle.flush()
                os.fsync(handle.fileno())
                handle.close()
                final = objects / sha256
                if not (final.exists() and file_sha256(final) == sha256):
                    temporary.chmod(0o444)
                    temporary.replace(final)
                    _fsync_directory(objects)
        except OSError as exc:
            raise StorageError(f"cannot store {path} under {self.root}: {exc}.") from None
        if file_sha256(final) != sha256:
            raise IntegrityError(f"{final} does not hash to {sha256} after it was written.")
        return StoredObject(uri=final.as_uri(), sha256=sha256, size=size)


def open_object_store(uri: str, root: Path) -> ObjectStore:
    """The object store behind `uri`; a relative `file://` path resolves against `root`."""
    return FileObjectStore(local_root(uri, root))


def local_root(uri: str, root: Path) -> Path:
    """The directory of a `file://` store URI; a relative path resolves against `root`."""
    if not uri.startswith("file://"):
        raise InvalidInputError(f"{uri}: unsupported store URI (use file://PATH).")
    return (root / uri.removeprefix("file://")).resolve()


@contextlib.contextmanager
def _temporary_file(directory: Path) -> Iterator[tuple[BinaryIO, Path]]:
    """A temporary file in `directory`, removed on any exit unless it was moved away."""
    directory.mkdir(parents=True, exist_ok=True)
    descriptor, name = tempfile.mkstemp(dir=directory, prefix=".incoming-")
    path = Path(name)
    handle = os.fdopen(descriptor, "wb")
    try:
        yield handle, path
    finally:
        handle.close()
        path.unlink(missing_ok=True)


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
