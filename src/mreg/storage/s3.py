"""The S3 object store: bytes uploaded once, in one read of the file, checked by the server part by part,
and found by their SHA-256.

A file is read once, in parts: each part feeds the whole-file SHA-256 and carries its own SHA-256, which S3
checks when the part arrives; parts upload concurrently, at most `concurrency` at a time, so memory stays
bounded whatever the file size. Completing the upload, S3 answers with the checksum of the part checksums,
which must equal the one mreg computes: the object holds exactly the parts that were sent.

The whole-file SHA-256 is known only once the last byte is read, after the object's key had to be chosen;
rather than copying the bytes to a key named by their hash (a second full pass, on the server), the bytes
stay at `<prefix>/blobs/<uuid>` and the content address `<prefix>/sha256/<hex>` is a small index object
naming that blob, created with `If-None-Match: *`. The first upload of some bytes claims their address; a
later upload of the same bytes finds the claim, deletes its own blob and uses the first one: the same bytes
are stored once. Any failure or interruption aborts the multipart upload and deletes the blob.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
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
from mreg.errors import IntegrityError, InvalidInputError, StorageError
from mreg.storage import ListedObject, Progress, StoredObject, discarded_unless_kept, fetch_verified, hash_stream

MiB = 1024 * 1024
MAX_PARTS = 10_000


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def composite_checksum(part_checksums: list[str]) -> str:
    """S3's checksum of a multipart object: SHA-256 of the parts' SHA-256s, then `-<number of parts>`."""
    joined = b"".join(base64.b64decode(checksum) for checksum in part_checksums)
    return f"{_b64(hashlib.sha256(joined).digest())}-{len(part_checksums)}"


class S3ObjectStore(S3Resource):
    """Model binaries in `s3://bucket/prefix/blobs/`, found through `s3://bucket/prefix/sha256/<hex>`."""

    part_size = 8 * MiB
    concurrency = 8

    @property
    def uri(self) -> str:
        return self.location.uri(self.location.prefix).rstrip("/")

    def put_file(self, path: Path, *, on_progress: Progress | None = None) -> StoredObject:
        try:
            source = path.open("rb")
        except OSError as exc:
            raise InvalidInputError(f"{path}: cannot be read ({exc.strerror}).") from exc
        blob = self.location.key("blobs", uuid.uuid4().hex)
        with source, discarded_unless_kept(lambda: self._delete(blob)) as keep:
            size = Path(path).stat().st_size
            part_size = max(self.part_size, -(-size // MAX_PARTS))
            if size <= part_size:
                sha256 = self._put_small(source.read(), blob, on_progress)
            else:
                sha256 = self._upload_parts(source, blob, part_size, on_progress)
            stored = self._claim(sha256, size, blob)
            keep(stored == blob)
        return StoredObject(uri=self.location.uri(stored), sha256=sha256, size=size)

    def fetch(self, uri: str, sha256: str, destination: Path, *, on_progress: Progress | None = None) -> None:
        fetch_verified(destination, sha256, uri, lambda sink: self._read(uri, sink, on_progress)[0])

    def digest(self, uri: str) -> tuple[str, int]:
        return self._read(uri, None, None)

    def find(self, sha256: str, size: int) -> str | None:
        address = self.location.key("sha256", sha256)
        try:
            claimed = json.loads(self.client.get_object(Bucket=self.location.bucket, Key=address)["Body"].read())
            blob = str(claimed["blob"])
            return self.location.uri(blob) if claimed.get("size") == size and self._exists(blob, size) else None
        except boto_errors() as exc:
            if error_code(exc) in ABSENT:
                return None
            raise translate(exc, f"look up {self.location.uri(address)}") from exc
        except (ValueError, KeyError, TypeError) as exc:
            raise StorageError(f"{self.location.uri(address)} is not an index mreg wrote.") from exc

    def read_into(self, uri: str, sink: BinaryIO, on_progress: Progress | None = None) -> tuple[str, int]:
        return self._read(uri, sink, on_progress)

    def list_objects(self) -> list[ListedObject]:
        listed = []
        for below in (self.location.key("blobs", ""), self.location.key("sha256", "")):
            try:
                for page in self.client.get_paginator("list_objects_v2").paginate(
                    Bucket=self.location.bucket, Prefix=below
                ):
                    listed += [
                        ListedObject(self.location.uri(entry["Key"]), entry["Size"], entry["LastModified"])
                        for entry in page.get("Contents", [])
                    ]
            except boto_errors() as exc:
                raise translate(exc, f"list {self.location.uri(below)}") from exc
        return listed

    def references(self, uri: str, sha256: str) -> list[str]:
        return [uri, self.location.uri(self.location.key("sha256", sha256))]

    def delete(self, uri: str) -> None:
        bucket, key = object_location(uri)
        if bucket != self.location.bucket or not key.startswith(self.location.key("")):
            raise StorageError(f"{uri} is not an object of {self.uri}; it is not deleted.")
        try:
            through_outages(lambda: self.client.delete_object(Bucket=bucket, Key=key))
        except boto_errors() as exc:
            raise translate(exc, f"delete {uri}") from exc

    def _read(
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
            if head.get("ChecksumSHA256") != composite_checksum([part["ChecksumSHA256"] for part in parts]):
                raise
            return {"ChecksumSHA256": head.get("ChecksumSHA256")}

    def _put_small(self, data: bytes, key: str, on_progress: Progress | None) -> str:
        """One request, with the SHA-256 for S3 to check. A server that answers with the checksum it
        verified is taken at its word; one that answers with none (some S3-compatible servers) is checked
        by reading the object back."""
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
        if answered is None:
            stored, size = through_outages(lambda: self._read(uri, None, None, translated=False))
            if (stored, size) != (digest.hexdigest(), len(data)):
                raise IntegrityError(f"{uri} holds {size} bytes hashing to {stored} right after it was written.")
        return digest.hexdigest()

    def _upload_parts(self, source: BinaryIO, key: str, part_size: int, on_progress: Progress | None) -> str:
        """Multipart upload of `source` to `key`, in one read of it; returns its SHA-256."""
        client, bucket = self.client, self.location.bucket
        what = f"upload to {self.location.uri(key)}"
        try:
            upload_id = through_outages(
                lambda: client.create_multipart_upload(Bucket=bucket, Key=key, ChecksumAlgorithm="SHA256")
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
                        ChecksumSHA256=checksum,
                    )
                )  # fmt: skip
                if on_progress is not None:
                    on_progress(len(chunk))
                return {"PartNumber": number, "ETag": response["ETag"], "ChecksumSHA256": checksum}
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
                checksums.append(_b64(hashlib.sha256(chunk).digest()))
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
        answered, expected = completed.get("ChecksumSHA256"), composite_checksum(checksums)
        if answered is not None and answered != expected:
            raise IntegrityError(
                f"{self.location.uri(key)}: S3 assembled parts with checksum {answered}, not {expected}."
            )
        return whole.hexdigest()

    def _claim(self, sha256: str, size: int, blob: str) -> str:
        """Make `sha256/<hex>` name `blob`, or return the blob that already holds these bytes.

        The claim is tried first (`If-None-Match: *`: new bytes cost one request); only when an address
        exists is it read, and taken over (`If-Match`) when the blob it names is gone.
        """
        client, bucket = self.client, self.location.bucket
        address = self.location.key("sha256", sha256)
        document = json.dumps({"sha256": sha256, "size": size, "blob": blob}).encode()
        condition = {"IfNoneMatch": "*"}
        try:
            for _ in range(3):
                claim = dict(Bucket=bucket, Key=address, Body=document, **condition)
                try:
                    through_outages(lambda claim=claim: client.put_object(**claim))  # type: ignore[misc]
                except boto_errors() as exc:
                    if error_code(exc) not in CONFLICT:
                        raise
                else:
                    return blob
                try:  # claimed already (perhaps by this very request, answered too late): look at it
                    existing = through_outages(lambda: client.get_object(Bucket=bucket, Key=address))
                except boto_errors() as exc:
                    if error_code(exc) not in ABSENT:
                        raise
                    condition = {"IfNoneMatch": "*"}
                    continue
                claimed = json.loads(existing["Body"].read())
                if claimed.get("size") == size and self._exists(str(claimed.get("blob")), size):
                    return str(claimed["blob"])
                condition = {"IfMatch": existing["ETag"]}  # a claim on bytes that are gone: take it over
        except boto_errors() as exc:
            raise translate(exc, f"store {self.location.uri(address)}") from exc
        except (ValueError, KeyError) as exc:
            raise StorageError(f"{self.location.uri(address)} is not an index mreg wrote.") from exc
        raise StorageError(f"could not claim {self.location.uri(address)}: it keeps changing.")

    def _exists(self, key: str, size: int) -> bool:
        try:
            head = through_outages(lambda: self.client.head_object(Bucket=self.location.bucket, Key=key))
        except boto_errors() as exc:
            if error_code(exc) in ABSENT:
                return False
            raise
        return head.get("ContentLength") == size

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

    def _delete(self, key: str) -> None:
        try:
            through_outages(lambda: self.client.delete_object(Bucket=self.location.bucket, Key=key))
        except boto_errors() as exc:
            raise translate(exc, f"delete {self.location.uri(key)}") from exc
