"""What the S3 and GCS object stores share: blobs found through content addresses, their claims, their reuse,
and their removal by `gc`.

Both keep a file's bytes at `<prefix>/blobs/<uuid>` (a key chosen before the file's SHA-256 is known) and a
small index object at `<prefix>/sha256/<hex>`, `{"sha256", "size", "blob"}`, naming that blob: the bytes'
content address. The first upload of some bytes creates the address exclusively; a later one finds it and uses
its blob, so the same bytes are stored once.

The address carries the pair's age for `gc`. Reusing the bytes rewrites it, conditionally on the version just
read and with a `used` time, so that both its modification time and its version change; `gc` removes an
address only when it is still old and still that version (a conditional delete), and then the blob it named,
which nothing can find any more. A blob that no address names (left by an upload that was killed) is removed
on its own, once old. The backends supply the primitives: small documents read and written with
preconditions, metadata reads, listings and removals.
"""

from __future__ import annotations

import json
import os
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, overload

from mreg._grammar import BucketLocation, parse_bucket_uri
from mreg.errors import InvalidInputError, StorageError
from mreg.storage import ListedObject, Progress, StoredObject, discarded_unless_kept, fetch_verified

Tag = str | int
"""A version of an object, as its store names it (an S3 ETag, a GCS generation)."""
ATTEMPTS = 3
"""Writes of one content address tried before giving up on a key that keeps changing under other writers."""
LIST_WORKERS = 16
"""Content addresses read at once while listing (to learn which blob each one names)."""


@dataclass(frozen=True)
class Listed:
    """A key as a listing returns it."""

    key: str
    size: int
    modified: datetime


@dataclass(frozen=True)
class Stat:
    """What a metadata read of one object says."""

    size: int
    modified: datetime
    tag: Tag


class IndexedStore(ABC):
    """An object store over a bucket: uploads, reads and the algorithms over content addresses; a backend
    subclass provides `location` and the primitives."""

    location: BucketLocation

    # -- primitives ------------------------------------------------------------------------------
    @abstractmethod
    def _upload(self, source: BinaryIO, key: str, size: int, on_progress: Progress | None) -> str:
        """Upload the `size` bytes of `source` to the blob `key`, checked by the service; return their SHA-256.
        A failure may leave the blob (it is removed then), nothing else."""

    @abstractmethod
    def _stream(self, uri: str, sink: BinaryIO | None, on_progress: Progress | None) -> tuple[str, int]:
        """SHA-256 and size of the object at `uri`, copied to `sink` as it is read."""

    @abstractmethod
    def _read_document(self, key: str) -> tuple[bytes, Tag] | None:
        """A small object's bytes and version, or None when it does not exist."""

    @abstractmethod
    def _write_document(self, key: str, data: bytes, tag: Tag | None) -> bool:
        """Write a small object only if it does not exist (`tag` None) or is still at version `tag`; False when
        another writer changed it first."""

    @abstractmethod
    def _stat(self, key: str) -> Stat | None:
        """Size, modification time and version of an object, or None when it does not exist."""

    @abstractmethod
    def _remove(self, key: str, tag: Tag | None) -> bool:
        """Delete an object (only while at version `tag`, if given); False when it had changed, True once it is
        gone (also when it was gone already)."""

    @abstractmethod
    def _holds(self, key: str, sha256: str, size: int) -> bool:
        """Whether the blob `key` exists and holds `size` bytes (that mreg hashed to `sha256`, where the
        backend records that)."""

    @abstractmethod
    def _pages(self, prefix: str) -> Iterator[list[Listed]]:
        """The objects whose keys start with `prefix`, one page (one request) at a time."""

    # -- the store's operations ------------------------------------------------------------------
    @property
    def uri(self) -> str:
        return self.location.uri(self.location.prefix).rstrip("/")

    def put_file(self, path: Path, *, on_progress: Progress | None = None) -> StoredObject:
        try:
            source = path.open("rb")
        except OSError as exc:
            raise InvalidInputError(f"{path}: cannot be read ({exc.strerror}).") from exc
        blob = self.location.key("blobs", uuid.uuid4().hex)
        with source, discarded_unless_kept(lambda: self._remove(blob, None)) as keep:
            size = os.fstat(source.fileno()).st_size
            sha256 = self._upload(source, blob, size, on_progress)
            stored = self._claim(sha256, size, blob)
            keep(stored == blob)
        return StoredObject(uri=self.location.uri(stored), sha256=sha256, size=size)

    def fetch(self, uri: str, sha256: str, destination: Path, *, on_progress: Progress | None = None) -> None:
        fetch_verified(destination, sha256, uri, lambda sink: self._stream(uri, sink, on_progress)[0])

    def digest(self, uri: str) -> tuple[str, int]:
        return self._stream(uri, None, None)

    def read_into(self, uri: str, sink: BinaryIO, on_progress: Progress | None = None) -> tuple[str, int]:
        return self._stream(uri, sink, on_progress)

    def find(self, sha256: str, size: int) -> str | None:
        address = self._address(sha256)
        found = self._lookup(address)
        blob = None if found is None else self._usable(address, found[0], sha256, size)
        return None if blob is None else self.location.uri(blob)

    def present(self, *, max_requests: int) -> set[str] | None:
        below = self.location.key("sha256", "")
        listed: set[str] = set()
        pages = self._pages(below)
        for _ in range(max_requests):
            page = next(pages, None)
            if page is None:
                return listed
            listed |= {entry.key.removeprefix(below) for entry in page}
        return None

    def reuse(self, sha256: str, size: int) -> str | None:
        blob = self._settle(sha256, size, None)
        return None if blob is None else self.location.uri(blob)

    def references(self, uri: str, sha256: str) -> list[str]:
        return [uri, self.location.uri(self._address(sha256))]

    def list_objects(self) -> list[ListedObject]:
        addresses = self._listing("sha256")  # first: a blob claimed after it is listed is young
        blobs = {entry.key: entry for entry in self._listing("blobs")}
        with ThreadPoolExecutor(max_workers=LIST_WORKERS, thread_name_prefix="mreg-list") as pool:
            named = list(pool.map(self._named_blob, [entry.key for entry in addresses]))
        listed = []
        for address, blob_key in zip(addresses, named, strict=True):
            blob = blobs.pop(blob_key, None) if blob_key is not None else None
            size, modified = address.size, address.modified
            if blob is not None:
                size, modified = size + blob.size, max(modified, blob.modified)
            listed.append(ListedObject(self.location.uri(address.key), size, modified))
        listed += [ListedObject(self.location.uri(entry.key), entry.size, entry.modified) for entry in blobs.values()]
        return listed

    def delete(self, uri: str, *, unless_newer_than: datetime | None = None) -> bool:
        """A content address goes with the blob it names: the address first, so that nothing finds the blob
        any more. With `unless_newer_than`, the object's age and version are read first, and it is deleted only
        while it still has that version: a reuse in between rewrites the address, so changes its version."""
        key = self._own_key(uri)
        tag = None
        if unless_newer_than is not None:
            stat = self._stat(key)
            if stat is None:
                return True
            if stat.modified >= unless_newer_than:
                return False
            tag = stat.tag
        if key.startswith(self.location.key("sha256", "")):
            return self._delete_address(key, tag)
        return self._remove(key, tag)

    # -- content addresses -----------------------------------------------------------------------
    def _claim(self, sha256: str, size: int, blob: str) -> str:
        """Make the content address of these bytes name `blob` (just uploaded), or return the blob that holds
        them already (marking its address as just used). Creating the address is tried first: new bytes cost
        one request."""
        if self._write_document(self._address(sha256), self._index(sha256, size, blob), None):
            return blob
        return self._settle(sha256, size, blob)

    @overload
    def _settle(self, sha256: str, size: int, blob: str) -> str: ...
    @overload
    def _settle(self, sha256: str, size: int, blob: None) -> str | None: ...
    def _settle(self, sha256: str, size: int, blob: str | None) -> str | None:
        """The blob the content address of these bytes names, once the address is rewritten as just used (by
        this call, or by another writer after this call read it); or, where it names none that holds them or
        does not exist, `blob` once the address names it (None when no `blob` is given: nothing to name)."""
        address = self._address(sha256)
        raced = False  # a write of ours lost to another writer: what is read next was written after it
        for _ in range(ATTEMPTS):
            found = self._lookup(address)
            tag = None if found is None else found[1]
            usable = None if found is None else self._usable(address, found[0], sha256, size)
            if usable is not None:
                if raced:  # rewritten since our last read, so as young as our own rewrite would make it
                    return usable
                used = self._index(sha256, size, usable, used=datetime.now(UTC))
                if self._write_document(address, used, tag):
                    return usable
                raced = True
            elif blob is None:
                return None
            elif self._write_document(address, self._index(sha256, size, blob), tag):  # absent, or names bytes gone
                return blob
            else:
                raced = True
        raise StorageError(f"could not claim {self.location.uri(address)}: it keeps changing.")

    def _lookup(self, address: str) -> tuple[dict[str, Any], Tag] | None:
        """The index at `address` and its version, or None when there is none."""
        found = self._read_document(address)
        return None if found is None else (_parsed(self.location.uri(address), found[0]), found[1])

    def _usable(self, address: str, claimed: dict[str, Any], sha256: str, size: int) -> str | None:
        """The blob an index names, if it is a blob of this store holding these bytes."""
        blob = _blob_named(claimed, self.location.key("blobs", ""))
        return blob if blob is not None and claimed.get("size") == size and self._holds(blob, sha256, size) else None

    def _named_blob(self, address: str) -> str | None:
        """The blob the index at `address` names (None when it is gone or names none)."""
        found = self._read_document(address)
        return None if found is None else self._named_blob_in(found[0])

    def _delete_address(self, key: str, tag: Tag | None) -> bool:
        """Remove a content address (only while at version `tag`, if given), then the blob it named."""
        found = self._read_document(key)
        if found is None:
            return True
        if tag is not None and found[1] != tag:
            return False  # rewritten since its age was read
        if not self._remove(key, tag):
            return False
        blob = self._named_blob_in(found[0])
        if blob is not None:
            self._remove(blob, None)
        return True

    def _named_blob_in(self, data: bytes) -> str | None:
        try:
            document = json.loads(data)
        except ValueError:
            return None
        return _blob_named(document, self.location.key("blobs", "")) if isinstance(document, dict) else None

    def _listing(self, below: str) -> list[Listed]:
        return [entry for page in self._pages(self.location.key(below, "")) for entry in page]

    def _address(self, sha256: str) -> str:
        return self.location.key("sha256", sha256)

    @staticmethod
    def _index(sha256: str, size: int, blob: str, *, used: datetime | None = None) -> bytes:
        document: dict[str, Any] = {"sha256": sha256, "size": size, "blob": blob}
        if used is not None:
            document["used"] = used.isoformat()
        return json.dumps(document).encode()

    def _own_key(self, uri: str) -> str:
        """The key of `uri`, refused unless it is a blob or a content address of this store."""
        try:
            location = parse_bucket_uri(uri)
        except ValueError:
            location = None
        ours = (self.location.key("blobs", ""), self.location.key("sha256", ""))
        if (
            location is None
            or (location.scheme, location.bucket) != (self.location.scheme, self.location.bucket)
            or not location.prefix.startswith(ours)
        ):
            raise StorageError(f"{uri} is not an object of {self.uri}; it is not deleted.")
        return location.prefix


def _parsed(where: str, data: bytes) -> dict[str, Any]:
    try:
        document = json.loads(data)
    except ValueError as exc:
        raise StorageError(f"{where} is not an index mreg wrote.") from exc
    if not isinstance(document, dict):
        raise StorageError(f"{where} is not an index mreg wrote.")
    return document


def _blob_named(document: dict[str, Any], blobs: str) -> str | None:
    """The blob key an index names, if it is one below `blobs` (the prefix of a store's blobs)."""
    blob = document.get("blob")
    return blob if isinstance(blob, str) and blob.startswith(blobs) else None
