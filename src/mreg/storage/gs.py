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
small index object naming that blob, created with `ifGenerationMatch=0` (and rewritten or deleted with
`ifGenerationMatch` on the generation read): `storage/_indexed.py` holds those algorithms, shared with the S3
store. Any failure or interruption cancels the upload session and deletes the blob. (fake-gcs-server ignores
`ifGenerationMatch` on deletes, so there a reuse that lands between `gc`'s read of an address and its delete
is not seen; Cloud Storage honours it.)
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import suppress
from typing import Any, BinaryIO

from mreg._gcs import TIMEOUT, GsResource, gcs_errors, object_location, retry, status_code, translate
from mreg.errors import IntegrityError
from mreg.storage import Progress, hash_stream
from mreg.storage._indexed import IndexedStore, Listed, Stat, Tag

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


class GsObjectStore(GsResource, IndexedStore):
    """Model binaries in `gs://bucket/prefix/blobs/`, found through `gs://bucket/prefix/sha256/<hex>`."""

    chunk_size = 8 * MiB

    def _stream(self, uri: str, sink: BinaryIO | None, on_progress: Progress | None) -> tuple[str, int]:
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

    # -- the primitives of IndexedStore ----------------------------------------------------------
    def _read_document(self, key: str) -> tuple[bytes, Tag] | None:
        return self.read(key)

    def _write_document(self, key: str, data: bytes, tag: Tag | None) -> bool:
        return self.write(key, data, generation=0 if tag is None else int(tag))

    def _stat(self, key: str) -> Stat | None:
        blob = self._metadata(key)
        return None if blob is None else Stat(int(blob.size or 0), blob.updated, int(blob.generation))

    def _remove(self, key: str, tag: Tag | None) -> bool:
        generation = None if tag is None else int(tag)
        try:
            self.blob(key).delete(if_generation_match=generation, retry=retry(), timeout=TIMEOUT)
        except gcs_errors() as exc:
            if status_code(exc) == 412:
                return False
            if status_code(exc) != 404:
                raise translate(exc, f"delete {self.location.uri(key)}") from exc
        return True

    def _holds(self, key: str, sha256: str, size: int) -> bool:
        blob = self._metadata(key)
        return blob is not None and blob.size == size and (blob.metadata or {}).get(SHA256_KEY) == sha256

    def _metadata(self, key: str) -> Any:
        """The `Blob` of `key` with its metadata read (None when it does not exist)."""
        try:
            return self.client.bucket(self.location.bucket).get_blob(key, retry=retry(), timeout=TIMEOUT)
        except gcs_errors() as exc:
            raise translate(exc, f"look up {self.location.uri(key)}") from exc

    def _pages(self, prefix: str) -> Iterator[list[Listed]]:
        try:
            listing = self.client.list_blobs(self.location.bucket, prefix=prefix, retry=retry(), timeout=TIMEOUT)
            for page in listing.pages:
                yield [Listed(blob.name, int(blob.size or 0), blob.updated) for blob in page]
        except gcs_errors() as exc:
            raise translate(exc, f"list {self.location.uri(prefix)}") from exc
