"""The GCS object store: bytes uploaded once, in one read of the file, checked by the service, and found by
their SHA-256.

A file is read once, in chunks of `chunk_size` sent through one resumable upload session: each byte feeds
the file's CRC32C and SHA-256 as it is read. The last chunk carries the CRC32C, which the service checks
before it creates the object (and which must equal the one it answers); the SHA-256 is then written to the
object's metadata (`mreg-sha256`).

A chunk whose request fails is sent again for up to `RETRY_SECONDS`, with backoff: when no answer came, from
the last offset the service acknowledged; when the service answered with an error, from the offset it says
it holds (asked first). Acknowledged bytes are never sent again, so an outage costs at most one chunk.

As on S3, the bytes stay at `<prefix>/blobs/<uuid>`, and the content address `<prefix>/sha256/<hex>` is a
small index object naming that blob, created with `ifGenerationMatch=0`. The first upload of some bytes
claims their address; a later upload of the same bytes finds the claim, deletes its own blob and uses the
first one. Any failure or interruption cancels the upload session and deletes the blob.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from contextlib import suppress
from pathlib import Path
from typing import Any, BinaryIO

from mreg._gcs import TIMEOUT, GsResource, gcs_errors, object_location, retry, status_code, translate
from mreg.errors import IntegrityError, InvalidInputError, StorageError
from mreg.storage import ListedObject, Progress, StoredObject, discarded_unless_kept, fetch_verified, hash_stream

MiB = 1024 * 1024
SHA256_KEY = "mreg-sha256"
"""The blob metadata entry holding the SHA-256 of its bytes."""


class _HashingReader:
    """The file as the upload reads it: each byte feeds the SHA-256 the first time it is read (a chunk sent
    again is read again from an earlier offset, not hashed again)."""

    def __init__(self, source: BinaryIO) -> None:
        self._source = source
        self._sha256 = hashlib.sha256()
        self.hashed = 0
        """How many bytes from the start went into the SHA-256."""

    def read(self, size: int = -1) -> bytes:
        start = self._source.tell()
        data = self._source.read(size)
        if start + len(data) > self.hashed:
            self._sha256.update(memoryview(data)[max(self.hashed - start, 0) :])
            self.hashed = start + len(data)
        return data

    def tell(self) -> int:
        return self._source.tell()

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._source.seek(offset, whence)

    def hexdigest(self) -> str:
        return self._sha256.hexdigest()


class GsObjectStore(GsResource):
    """Model binaries in `gs://bucket/prefix/blobs/`, found through `gs://bucket/prefix/sha256/<hex>`."""

    chunk_size = 8 * MiB

    def put_file(self, path: Path, *, on_progress: Progress | None = None) -> StoredObject:
        try:
            source = path.open("rb")
        except OSError as exc:
            raise InvalidInputError(f"{path}: cannot be read ({exc.strerror}).") from exc
        blob = self.location.key("blobs", uuid.uuid4().hex)
        with source, discarded_unless_kept(lambda: self._delete(blob)) as keep:
            size = os.fstat(source.fileno()).st_size
            sha256 = self._upload(source, blob, size, on_progress)
            stored = self._claim(sha256, size, blob)
            keep(stored == blob)
        return StoredObject(uri=self.location.uri(stored), sha256=sha256, size=size)

    def fetch(self, uri: str, sha256: str, destination: Path, *, on_progress: Progress | None = None) -> None:
        fetch_verified(destination, sha256, uri, lambda sink: self._read(uri, sink, on_progress)[0])

    def digest(self, uri: str) -> tuple[str, int]:
        return self._read(uri, None, None)

    @property
    def uri(self) -> str:
        return self.location.uri(self.location.prefix).rstrip("/")

    def find(self, sha256: str, size: int) -> str | None:
        address = self.location.key("sha256", sha256)
        found = self.read(address)
        if found is None:
            return None
        try:
            blob = str(json.loads(found[0])["blob"])
        except (ValueError, KeyError, TypeError) as exc:
            raise StorageError(f"{self.location.uri(address)} is not an index mreg wrote.") from exc
        return self.location.uri(blob) if self._holds(blob, sha256, size) else None

    def read_into(self, uri: str, sink: BinaryIO, on_progress: Progress | None = None) -> tuple[str, int]:
        return self._read(uri, sink, on_progress)

    def _read(self, uri: str, sink: BinaryIO | None, on_progress: Progress | None) -> tuple[str, int]:
        """Hash the object's bytes (copying them to `sink`), in ranged reads of one generation of it."""
        bucket, key = object_location(uri)
        try:
            with self.blob(key, bucket=bucket).open(
                "rb", chunk_size=self.chunk_size, retry=retry(), timeout=TIMEOUT
            ) as reader:
                return hash_stream(reader, sink, on_progress)
        except gcs_errors() as exc:
            raise translate(exc, f"read {uri}") from exc

    def _upload(self, source: BinaryIO, key: str, size: int, on_progress: Progress | None) -> str:
        """Upload `source` to `key` in one read of it; return its SHA-256, once in the object's metadata."""
        uri = self.location.uri(key)
        stream = _HashingReader(source)
        blob = self.blob(key)
        try:
            # Blob's own upload loop never asks the service what it holds, and stops at the first error answer
            # (its session stays invalid); so only the session is the library's (a private method of Blob,
            # returning its public ResumableUpload), and _send drives it.
            upload, transport = retry()(blob._initiate_resumable_upload)(
                self.client,
                stream,
                "application/octet-stream",
                size,
                chunk_size=self.chunk_size,
                if_generation_match=0,
                checksum="crc32c",
                retry=None,
                timeout=TIMEOUT,
            )
            created = self._send(upload, transport, stream, on_progress)
            if int(created["size"]) != size or stream.hashed != size:
                raise IntegrityError(
                    f"{uri} holds {created['size']} bytes after its upload, but the file has {size} "
                    f"({stream.hashed} were read)."
                )
            blob.metadata = {SHA256_KEY: stream.hexdigest()}
            blob.patch(if_generation_match=int(created["generation"]), retry=retry(), timeout=TIMEOUT)
        except gcs_errors() as exc:
            raise translate(exc, f"upload to {uri}") from exc
        return stream.hexdigest()

    def _send(self, upload: Any, transport: Any, stream: _HashingReader, on_progress: Progress | None) -> Any:
        """Send every chunk of an initiated upload (the client library's `ResumableUpload`, driven here so that
        a failed chunk resumes from what the service holds); return the object it created."""

        def next_chunk() -> Any:
            if upload.invalid:  # the service answered with an error: ask it what it holds
                upload.recover(transport)
            stream.seek(upload.bytes_uploaded)  # a chunk that got no answer is sent again, from there
            return upload.transmit_next_chunk(transport, timeout=TIMEOUT)

        send = retry()(next_chunk)
        try:
            while True:
                acknowledged = upload.bytes_uploaded
                response = send()
                if on_progress is not None:
                    on_progress(upload.bytes_uploaded - acknowledged)
                if upload.finished:
                    return response.json()
        except BaseException:
            if not upload.finished:
                with suppress(*gcs_errors()):  # a failure to cancel must not hide why the upload failed
                    retry()(transport.request)("DELETE", upload.resumable_url, timeout=TIMEOUT)
            raise

    def _claim(self, sha256: str, size: int, blob: str) -> str:
        """Make `sha256/<hex>` name `blob`, or return the blob that already holds these bytes."""
        address = self.location.key("sha256", sha256)
        document = json.dumps({"sha256": sha256, "size": size, "blob": blob}).encode()
        try:
            for _ in range(3):
                found = self.read(address)
                generation = 0
                if found is not None:
                    claimed = json.loads(found[0])
                    if claimed.get("size") == size and self._holds(str(claimed.get("blob")), sha256, size):
                        return str(claimed["blob"])
                    generation = found[1]  # a claim on bytes that are gone: take it over
                if self.write(address, document, generation=generation):
                    return blob
        except (ValueError, AttributeError) as exc:
            raise StorageError(f"{self.location.uri(address)} is not an index mreg wrote.") from exc
        raise StorageError(f"could not claim {self.location.uri(address)}: it keeps changing.")

    def _holds(self, key: str, sha256: str, size: int) -> bool:
        """Whether `key` is a blob of this store holding `size` bytes that mreg hashed to `sha256`."""
        if not key.startswith(self.location.key("blobs", "")):
            return False
        try:
            blob = self.client.bucket(self.location.bucket).get_blob(key, retry=retry(), timeout=TIMEOUT)
        except gcs_errors() as exc:
            raise translate(exc, f"look up {self.location.uri(key)}") from exc
        return blob is not None and blob.size == size and (blob.metadata or {}).get(SHA256_KEY) == sha256

    def _delete(self, key: str) -> None:
        try:
            self.blob(key).delete(retry=retry(), timeout=TIMEOUT)
        except gcs_errors() as exc:
            if status_code(exc) != 404:
                raise translate(exc, f"delete {self.location.uri(key)}") from exc

    def list_objects(self) -> list[ListedObject]:
        listed = []
        for below in (self.location.key("blobs", ""), self.location.key("sha256", "")):
            try:
                for blob in self.client.list_blobs(self.location.bucket, prefix=below, retry=retry(), timeout=TIMEOUT):
                    listed.append(ListedObject(self.location.uri(blob.name), int(blob.size or 0), blob.updated))
            except gcs_errors() as exc:
                raise translate(exc, f"list {self.location.uri(below)}") from exc
        return listed

    def references(self, uri: str, sha256: str) -> list[str]:
        return [uri, self.location.uri(self.location.key("sha256", sha256))]

    def delete(self, uri: str) -> None:
        bucket, key = object_location(uri)
        if bucket != self.location.bucket or not key.startswith(self.location.key("")):
            raise StorageError(f"{uri} is not an object of {self.uri}; it is not deleted.")
        self._delete(key)
