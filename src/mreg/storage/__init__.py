"""Model binaries in object storage, content-addressed (`<root>/sha256/<hex>`), streamed and checksummed.

Three backends: a local directory (`file://`, the default), any S3-compatible store (`s3://`) and Google
Cloud Storage (`gs://`), chosen by `open_object_store` from the URI's scheme.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, Protocol

from mreg._fileio import incoming
from mreg._grammar import local_store_path, store_scheme
from mreg.errors import IntegrityError, InvalidInputError, MregError

CHUNK = 1024 * 1024
Progress = Callable[[int], None]
"""Called with the number of bytes just transferred."""


@dataclass(frozen=True)
class StoredObject:
    """A model binary in the store."""

    uri: str
    sha256: str
    size: int


@dataclass(frozen=True)
class ListedObject:
    """An object as `gc` sees it: where it is, how big, and when it was last written."""

    uri: str
    size: int
    modified: datetime
    """Timezone-aware."""


class ObjectStore(Protocol):
    """Where model binaries live."""

    @property
    def uri(self) -> str:
        """The store's own URI (`file:///...`, `s3://bucket/prefix`, `gs://bucket/prefix`)."""

    def put_file(self, path: Path, *, on_progress: Progress | None = None) -> StoredObject:
        """Store the file's bytes, hashing them in the same read; return it once stored and verified.

        A failed or interrupted upload leaves nothing behind (no partial object, no multipart upload).
        """

    def fetch(self, uri: str, sha256: str, destination: Path, *, on_progress: Progress | None = None) -> None:
        """Download the object at `uri` to `destination`; bytes that do not hash to `sha256` are refused
        and `destination` is left untouched."""

    def digest(self, uri: str) -> tuple[str, int]:
        """SHA-256 and size of the bytes stored at `uri`, read in full (for `verify`)."""

    def find(self, sha256: str, size: int) -> str | None:
        """The URI of an object holding `size` bytes that hash to `sha256`, or None (for deduplication)."""

    def reuse(self, sha256: str, size: int) -> str | None:
        """`find`, for bytes about to be recorded again: what keeps them findable is marked as just written, so
        that a `gc` running meanwhile, whose grace period counts from then, keeps them (`put_file` does the same
        when it finds the bytes stored already)."""

    def read_into(self, uri: str, sink: BinaryIO, on_progress: Progress | None = None) -> tuple[str, int]:
        """Stream the object at `uri` into `sink`; return the SHA-256 and size of what was read."""

    def present(self, *, max_requests: int) -> set[str] | None:
        """The SHA-256s that have a content address in the store, from one listing of the addresses if that
        takes at most `max_requests` requests; None when it would take more (or the store has no cheaper
        answer than `find`). An address listed may name bytes that are gone: `reuse` still checks."""

    def list_objects(self) -> list[ListedObject]:
        """Everything the store keeps (model bytes, content addresses, unfinished temporary files), one entry
        per thing `delete` removes: a content address that names a blob of its own is listed once, for both,
        with its blob's size added and the later of their modification times."""

    def references(self, uri: str, sha256: str) -> list[str]:
        """The listed objects that keep the bytes at `uri` (hashing to `sha256`) stored and findable in this
        store: the object itself, and its content address where that is an object of its own."""

    def delete(self, uri: str, *, unless_newer_than: datetime | None = None) -> bool:
        """Remove a listed object of this store (a content address together with the blob it names); True
        once it is gone (also when it was gone already).

        With `unless_newer_than`, the object's modification time is read again right before it is removed,
        and it stays (False) when it was written or reused (`reuse`) at or after that time; the removal is
        conditional on the version just read where the store supports that, so a reuse that lands in between
        keeps it too (each backend documents what it guarantees).
        """


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


@contextmanager
def discarded_unless_kept(delete: Callable[[], object]) -> Iterator[Callable[[bool], None]]:
    """Run `delete` (which raises mreg's errors) when the block fails, is interrupted, or ends without
    `keep(True)`: an upload's blob goes when the upload fails or turns out to be a duplicate. A failure to
    clean up after a failure never hides why the block failed."""
    kept = [False]

    def keep(decision: bool) -> None:
        kept[0] = decision

    try:
        yield keep
    except BaseException:
        with suppress(MregError):
            delete()
        raise
    if not kept[0]:
        delete()


def fetch_verified(
    destination: Path, sha256: str, uri: str, copy: Callable[[BinaryIO], str], *, mode: int = 0o644
) -> None:
    """The one "fetch, verify, replace" step of every backend: `copy` writes the object into a temporary
    file beside `destination` and returns the SHA-256 it read; only matching bytes replace `destination`."""
    with incoming(destination.parent) as (sink, temporary):
        actual = copy(sink)
        sink.close()
        if actual != sha256:
            raise IntegrityError(f"{uri} hashes to {actual}, but the record says {sha256}.")
        temporary.chmod(mode)
        temporary.replace(destination)


def open_object_store(uri: str, root: Path = Path("/"), *, endpoint_url: str | None = None) -> ObjectStore:
    """The object store behind a store URI (`file://PATH`, relative to `root`, `s3://bucket/prefix`,
    `gs://bucket/prefix`), or one that can read the object an object URI names."""
    try:
        scheme = store_scheme(uri)
    except ValueError as exc:
        raise InvalidInputError(f"{uri}: {exc}.") from exc
    if scheme == "s3":
        from mreg._s3 import store_location
        from mreg.storage.s3 import S3ObjectStore

        return S3ObjectStore(store_location(uri), endpoint_url=endpoint_url)
    if scheme == "gs":
        from mreg._gcs import store_location as gs_location
        from mreg.storage.gs import GsObjectStore

        return GsObjectStore(gs_location(uri))
    from mreg.storage.file import FileObjectStore

    try:
        return FileObjectStore(local_store_path(uri, root))
    except ValueError as exc:
        raise InvalidInputError(f"{uri}: {exc}.") from exc
