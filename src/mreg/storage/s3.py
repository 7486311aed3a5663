"""The S3 object store: bytes uploaded once, in one read of the file, checked by the server part by part,
and found by their SHA-256.

A file of one request carries its SHA-256 (the content address itself), which S3 checks. A larger file is
read once, in parts: each part feeds the whole-file SHA-256 and carries its own CRC32, which S3 checks when
the part arrives (a transport check: S3 cannot check a multipart object's SHA-256, and a part's SHA-256
would cost both sides a second cryptographic hash of every byte for no more than that); parts upload
concurrently, at most `concurrency` at a time, so memory stays bounded whatever the file size. Completing
the upload, S3 answers with the checksum of the part checksums, which must equal the one mreg computes: the
object holds exactly the parts that were sent.

The whole-file SHA-256 is known only once the last byte is read, after the object's key had to be chosen;
rather than copying the bytes to a key named by their hash (a second full pass, on the server), the bytes
stay at `<prefix>/blobs/<uuid>` and the content address `<prefix>/sha256/<hex>` is a small index object
naming that blob, created with `If-None-Match: *` (conditional writes and deletes use `If-Match` on the
ETag); `storage/_indexed.py` holds those algorithms, shared with the GCS store. Any failure or interruption
aborts the multipart upload and deletes the blob.

`gc` (`delete` with `unless_newer_than`) reads a content address's age and ETag, then deletes it with
`If-Match` on that ETag: a reuse in between rewrites the address (a new `used` time, so a new ETag), and both
the address and its blob stay. Blobs themselves are never touched by a reuse (on S3 only a copy would change
their modification time): their address stands for them.
"""

from __future__ import annotations

import base64
import hashlib
import threading
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, BinaryIO, cast

from mreg._s3 import (
    ABORT_BACKOFF,
    ABSENT,
    CONFLICT,
    S3Resource,
    boto_errors,
    error_code,
    object_location,
    through_outages,
    translate,
)
from mreg.errors import IntegrityError, StorageError
from mreg.storage import Progress, hash_stream
from mreg.storage._indexed import IndexedStore, Listed, Stat, Tag

MiB = 1024 * 1024
MAX_PARTS = 10_000


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def _md5(data: bytes) -> str:
    """What S3 answers as the ETag of an unencrypted object written in one request."""
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def part_checksum(data: bytes) -> str:
    """A part's CRC32 as S3 takes it (`ChecksumCRC32`: the 4 bytes, big-endian, in base64)."""
    return _b64(zlib.crc32(data).to_bytes(4, "big"))


def composite_checksum(part_checksums: list[str]) -> str:
    """S3's checksum of a multipart object (COMPOSITE type): the CRC32 of the parts' CRC32s, then
    `-<number of parts>`."""
    joined = b"".join(base64.b64decode(checksum) for checksum in part_checksums)
    return f"{part_checksum(joined)}-{len(part_checksums)}"


class S3ObjectStore(S3Resource, IndexedStore):
    """Model binaries in `s3://bucket/prefix/blobs/`, found through `s3://bucket/prefix/sha256/<hex>`."""

    part_size = 8 * MiB
    concurrency = 8
    signed_payloads = False
    """Every body this store sends carries a checksum in a signed header, which the server checks it against
    (`ChecksumSHA256` for an object of one request, `ChecksumCRC32` for a part), and a multipart completion's
    list of parts is checked through the checksum the server answers; so bodies are not hashed again for the
    SigV4 signature over plain HTTP (botocore does not over HTTPS). A part's CRC32 detects corruption, not
    tampering: over plain HTTP, bytes changed in transit are caught by mreg's SHA-256 when they are read
    (`pull`, `verify`, the serve image's fetch), as they are on any store."""

    def _upload(self, source: BinaryIO, key: str, size: int, on_progress: Progress | None) -> str:
        part_size = max(self.part_size, -(-size // MAX_PARTS))
        if size <= part_size:
            return self._put_small(source.read(), key, on_progress)
        return self._upload_parts(source, key, part_size, on_progress)

    # -- the primitives of IndexedStore ----------------------------------------------------------
    def _read_document(self, key: str) -> tuple[bytes, Tag] | None:
        client, bucket = self.client, self.location.bucket

        def read() -> tuple[bytes, Tag]:
            answer = client.get_object(Bucket=bucket, Key=key)
            return answer["Body"].read(), answer["ETag"]

        try:
            return through_outages(read)
        except boto_errors() as exc:
            if error_code(exc) in ABSENT:
                return None
            raise translate(exc, f"read {self.location.uri(key)}") from exc

    def _write_document(self, key: str, data: bytes, tag: Tag | None) -> bool:
        condition = {"IfNoneMatch": "*"} if tag is None else {"IfMatch": str(tag)}
        client, bucket, checksum = self.client, self.location.bucket, _b64(hashlib.sha256(data).digest())
        try:
            through_outages(
                lambda: client.put_object(Bucket=bucket, Key=key, Body=data, ChecksumSHA256=checksum, **condition)  # type: ignore[arg-type]
            )
        except boto_errors() as exc:
            if error_code(exc) in CONFLICT or (tag is not None and error_code(exc) in ABSENT):
                return False
            raise translate(exc, f"write {self.location.uri(key)}") from exc
        return True

    def _stat(self, key: str) -> Stat | None:
        try:
            head = through_outages(lambda: self.client.head_object(Bucket=self.location.bucket, Key=key))
        except boto_errors() as exc:
            if error_code(exc) in ABSENT:
                return None
            raise translate(exc, f"look up {self.location.uri(key)}") from exc
        return Stat(head["ContentLength"], head["LastModified"], head["ETag"])

    def _remove(self, key: str, tag: Tag | None) -> bool:
        condition = {} if tag is None else {"IfMatch": str(tag)}
        try:
            through_outages(lambda: self.client.delete_object(Bucket=self.location.bucket, Key=key, **condition))  # type: ignore[arg-type]
        except boto_errors() as exc:
            if error_code(exc) in CONFLICT:
                return False
            if error_code(exc) not in ABSENT:
                raise translate(exc, f"delete {self.location.uri(key)}") from exc
        return True

    def _holds(self, key: str, sha256: str, size: int) -> bool:
        stat = self._stat(key)
        return stat is not None and stat.size == size

    def _pages(self, prefix: str) -> Iterator[list[Listed]]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.location.bucket, Prefix=prefix)
        try:
            for page in pages:
                yield [Listed(entry["Key"], entry["Size"], entry["LastModified"]) for entry in page.get("Contents", [])]
        except boto_errors() as exc:
            raise translate(exc, f"list {self.location.uri(prefix)}") from exc

    # -- uploads and reads -----------------------------------------------------------------------
    def _stream(
        self, uri: str, sink: BinaryIO | None, on_progress: Progress | None, *, translated: bool = True
    ) -> tuple[str, int]:
        bucket, key = object_location(uri)
        try:
            body = self.client.get_object(Bucket=bucket, Key=key)["Body"]
            with body:
                return hash_stream(body, sink, on_progress)  # type: ignore[arg-type]
        except boto_errors() as exc:
            if not translated:
                raise
            raise translate(exc, f"read {uri}") from exc

    def _complete(self, key: str, upload_id: str, parts: list[dict[str, Any]]) -> dict[str, Any]:
        """Complete a multipart upload through outages; an upload that turns out complete already (its
        answer was lost) is taken as complete when the object's part checksums are the ones sent."""
        client, bucket = self.client, self.location.bucket
        try:
            return dict(
                through_outages(
                    lambda: client.complete_multipart_upload(
                        Bucket=bucket,
                        Key=key,
                        UploadId=upload_id,
                        MultipartUpload={"Parts": parts},  # type: ignore[typeddict-item]
                    )
                )
            )
        except boto_errors() as exc:
            if error_code(exc) != "NoSuchUpload":
                raise
            head = client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
            if head.get("ChecksumCRC32") != composite_checksum([part["ChecksumCRC32"] for part in parts]):
                raise
            return {"ChecksumCRC32": head.get("ChecksumCRC32")}

    def _put_small(self, data: bytes, key: str, on_progress: Progress | None) -> str:
        """One request, with the SHA-256 for S3 to check. A server that answers with the checksum it
        verified is taken at its word; so is one that answers with none (some S3-compatible servers) but with
        the MD5 of the bytes sent as the ETag (what it hashed of what it stored); any other is checked by
        reading the object back."""
        digest = hashlib.sha256(data)
        checksum = _b64(digest.digest())
        uri = self.location.uri(key)
        try:
            answer = through_outages(
                lambda: self.client.put_object(Bucket=self.location.bucket, Key=key, Body=data, ChecksumSHA256=checksum)
            )
        except boto_errors() as exc:
            raise translate(exc, f"upload to {uri}") from exc
        if on_progress is not None:
            on_progress(len(data))
        answered = cast("str | None", answer.get("ChecksumSHA256"))  # absent from some servers' answers
        if answered is not None and answered != checksum:
            raise IntegrityError(f"{uri}: S3 stored bytes with checksum {answered}, not {checksum}.")
        if answered is None and answer.get("ETag", "").strip('"') != _md5(data):
            stored, size = through_outages(lambda: self._stream(uri, None, None, translated=False))
            if (stored, size) != (digest.hexdigest(), len(data)):
                raise IntegrityError(f"{uri} holds {size} bytes hashing to {stored} right after it was written.")
        return digest.hexdigest()

    def _upload_parts(self, source: BinaryIO, key: str, part_size: int, on_progress: Progress | None) -> str:
        """Multipart upload of `source` to `key`, in one read of it; returns its SHA-256."""
        client, bucket = self.client, self.location.bucket
        what = f"upload to {self.location.uri(key)}"
        try:
            upload_id = through_outages(
                lambda: client.create_multipart_upload(Bucket=bucket, Key=key, ChecksumAlgorithm="CRC32")
            )["UploadId"]
        except boto_errors() as exc:
            raise translate(exc, what) from exc
        whole = hashlib.sha256()
        checksums: list[str] = []
        futures: list[Future[dict[str, Any]]] = []
        slots = threading.BoundedSemaphore(self.concurrency)
        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="mreg-upload")

        def send(number: int, chunk: bytes, checksum: str) -> dict[str, Any]:
            try:
                response = through_outages(  # a part that failed is sent again; the others stay
                    lambda: client.upload_part(
                        Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=chunk,
                        ChecksumCRC32=checksum,
                    )
                )  # fmt: skip
                if on_progress is not None:
                    on_progress(len(chunk))
                return {"PartNumber": number, "ETag": response["ETag"], "ChecksumCRC32": checksum}
            finally:
                slots.release()

        try:
            while True:
                slots.acquire()  # at most `concurrency` parts in memory, whatever the file size
                if any(future.done() and future.exception() for future in futures):
                    slots.release()
                    break
                chunk = source.read(part_size)
                if not chunk:
                    slots.release()
                    break
                whole.update(chunk)
                checksums.append(part_checksum(chunk))
                futures.append(pool.submit(send, len(checksums), chunk, checksums[-1]))
            parts = [future.result() for future in futures]
            completed = self._complete(key, upload_id, parts)
        except BaseException as exc:
            pool.shutdown(wait=True, cancel_futures=True)
            self._abort(key, upload_id)
            if isinstance(exc, boto_errors()):
                raise translate(exc, what) from exc
            raise
        pool.shutdown(wait=True)
        answered, expected = completed.get("ChecksumCRC32"), composite_checksum(checksums)
        if answered is not None and answered != expected:
            raise IntegrityError(
                f"{self.location.uri(key)}: S3 assembled parts with checksum {answered}, not {expected}."
            )
        return whole.hexdigest()

    def _abort(self, key: str, upload_id: str) -> None:
        """Abort a multipart upload, waiting out a short outage (the reason it failed may be one)."""
        last: Exception | None = None
        for wait in (0.0, *ABORT_BACKOFF):
            time.sleep(wait)
            try:
                self.client.abort_multipart_upload(Bucket=self.location.bucket, Key=key, UploadId=upload_id)
            except boto_errors() as exc:
                if error_code(exc) == "NoSuchUpload":
                    return
                last = exc
            else:
                return
        raise StorageError(
            f"could not abort multipart upload {upload_id} of {self.location.uri(key)} ({last}); remove it "
            "with `aws s3api abort-multipart-upload`, or let a lifecycle rule expire incomplete uploads."
        )
