"""The S3 object store: `<prefix>/sha256/<hex>`, uploaded in one read of the file, verified by the server.

A file is read once, in parts: each part feeds the whole-file SHA-256 and its own SHA-256, which S3 checks
when the part arrives; parts upload concurrently, at most `concurrency` at a time, so memory stays bounded
whatever the file size. The parts land under a staging key (the final, content-addressed key is known only
once the last byte is read); a server-side copy then moves them to `sha256/<hex>` and returns the SHA-256
the server computed over the stored bytes, which must equal ours. Any failure or interruption aborts the
multipart upload and deletes the staging object.
"""

from __future__ import annotations

import base64
import hashlib
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from mreg.errors import IntegrityError, InvalidInputError, StorageError
from mreg.fileio import incoming
from mreg.s3 import ABORT_BACKOFF, S3Location, boto_errors, error_code, make_client, object_location, translate
from mreg.storage import Progress, StoredObject, hash_stream

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

MiB = 1024 * 1024
MAX_PARTS = 10_000


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


class S3ObjectStore:
    """Model binaries under `s3://bucket/prefix/sha256/<hex>`."""

    part_size = 8 * MiB
    concurrency = 8
    single_copy_limit = 5 * 1024 * MiB
    """S3 copies up to 5 GiB in one request; larger objects are copied part by part."""

    def __init__(self, location: S3Location, *, endpoint_url: str | None = None) -> None:
        self.location = location
        self.endpoint_url = endpoint_url
        self._client: S3Client | None = None

    @property
    def client(self) -> S3Client:
        if self._client is None:
            self._client = make_client(self.endpoint_url)
        return self._client

    def put_file(self, path: Path, *, on_progress: Progress | None = None) -> StoredObject:
        try:
            source = path.open("rb")
        except OSError as exc:
            raise InvalidInputError(f"{path}: cannot be read ({exc.strerror}).") from None
        with source:
            size = Path(path).stat().st_size
            part_size = max(self.part_size, -(-size // MAX_PARTS))
            if size <= part_size:
                return self._put_small(source.read(), on_progress)
            staging = self.location.key("incoming", uuid.uuid4().hex)
            with self._staged(staging):
                sha256, parts = self._upload_parts(source, staging, part_size, on_progress)
                final = self.location.key("sha256", sha256)
                self._promote(staging, final, sha256, size, parts, part_size)
        return StoredObject(uri=self.location.uri(final), sha256=sha256, size=size)

    def fetch(self, uri: str, sha256: str, destination: Path, *, on_progress: Progress | None = None) -> None:
        with incoming(destination.parent) as (sink, temporary):
            actual, _ = self._read(uri, sink, on_progress)
            sink.close()
            if actual != sha256:
                raise IntegrityError(f"{uri} hashes to {actual}, but the record says {sha256}.")
            temporary.chmod(0o644)
            temporary.replace(destination)

    def digest(self, uri: str) -> tuple[str, int]:
        return self._read(uri, None, None)

    def _read(self, uri: str, sink: BinaryIO | None, on_progress: Progress | None) -> tuple[str, int]:
        bucket, key = object_location(uri)
        try:
            body = self.client.get_object(Bucket=bucket, Key=key)["Body"]
            with body:
                return hash_stream(body, sink, on_progress)  # type: ignore[arg-type]
        except boto_errors() as exc:
            raise translate(exc, f"read {uri}") from None

    def _put_small(self, data: bytes, on_progress: Progress | None) -> StoredObject:
        """One request; read back, so the stored bytes are checked on any S3 server."""
        digest = hashlib.sha256(data)
        key = self.location.key("sha256", digest.hexdigest())
        uri = self.location.uri(key)
        try:
            self.client.put_object(
                Bucket=self.location.bucket, Key=key, Body=data, ChecksumSHA256=_b64(digest.digest())
            )
        except boto_errors() as exc:
            raise translate(exc, f"upload {uri}") from None
        if on_progress is not None:
            on_progress(len(data))
        stored, size = self.digest(uri)
        if (stored, size) != (digest.hexdigest(), len(data)):
            raise IntegrityError(f"{uri} holds {size} bytes hashing to {stored} right after it was written.")
        return StoredObject(uri=uri, sha256=digest.hexdigest(), size=len(data))

    def _upload_parts(
        self, source: BinaryIO, key: str, part_size: int, on_progress: Progress | None
    ) -> tuple[str, list[str]]:
        """Multipart upload of `source` to `key`; returns the whole-file SHA-256 and each part's (base64)."""
        client, bucket = self.client, self.location.bucket
        what = f"upload to {self.location.uri(key)}"
        try:
            upload_id = client.create_multipart_upload(Bucket=bucket, Key=key, ChecksumAlgorithm="SHA256")["UploadId"]
        except boto_errors() as exc:
            raise translate(exc, what) from None
        whole = hashlib.sha256()
        checksums: list[str] = []
        futures: list[Future[dict[str, Any]]] = []
        slots = threading.BoundedSemaphore(self.concurrency)
        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="mreg-upload")

        def send(number: int, chunk: bytes, checksum: str) -> dict[str, Any]:
            try:
                response = client.upload_part(
                    Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=chunk,
                    ChecksumSHA256=checksum,
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
            client.complete_multipart_upload(
                Bucket=bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},  # type: ignore[typeddict-item]
            )
        except BaseException as exc:
            pool.shutdown(wait=True, cancel_futures=True)
            self._abort(key, upload_id)
            if isinstance(exc, boto_errors()):
                raise translate(exc, what) from None
            raise
        pool.shutdown(wait=True)
        return whole.hexdigest(), checksums

    def _promote(self, staging: str, final: str, sha256: str, size: int, parts: list[str], part_size: int) -> None:
        """Copy the staged object to its content address on the server, and check the server's hashes."""
        client, bucket = self.client, self.location.bucket
        uri = self.location.uri(final)
        expected = _b64(bytes.fromhex(sha256))
        try:
            if self._holds(final, expected, size):
                return
            if size <= self.single_copy_limit:
                result = client.copy_object(
                    Bucket=bucket, Key=final, CopySource={"Bucket": bucket, "Key": staging}, ChecksumAlgorithm="SHA256"
                )["CopyObjectResult"]
                if result.get("ChecksumSHA256") != expected:
                    raise IntegrityError(
                        f"{uri}: the server computed SHA-256 {result.get('ChecksumSHA256')!r} for the copied "
                        f"bytes, not {expected!r}."
                    )
            else:
                self._copy_in_parts(staging, final, parts, part_size, size)
        except boto_errors() as exc:
            raise translate(exc, f"store {uri}") from None

    def _holds(self, key: str, checksum: str, size: int) -> bool:
        """True when `key` already holds these bytes (the same model registered again)."""
        try:
            head = self.client.head_object(Bucket=self.location.bucket, Key=key, ChecksumMode="ENABLED")
        except boto_errors() as exc:
            if error_code(exc) in {"404", "NoSuchKey", "NotFound"}:
                return False
            raise
        return head.get("ContentLength") == size and head.get("ChecksumSHA256") == checksum

    def _copy_in_parts(self, staging: str, final: str, parts: list[str], part_size: int, size: int) -> None:
        """A multipart copy along the upload's part boundaries; each part's server checksum must match."""
        client, bucket = self.client, self.location.bucket
        upload_id = client.create_multipart_upload(Bucket=bucket, Key=final, ChecksumAlgorithm="SHA256")["UploadId"]
        try:
            copied = []
            for index, checksum in enumerate(parts):
                first, last = index * part_size, min(size, (index + 1) * part_size) - 1
                result = client.upload_part_copy(
                    Bucket=bucket, Key=final, UploadId=upload_id, PartNumber=index + 1,
                    CopySource={"Bucket": bucket, "Key": staging}, CopySourceRange=f"bytes={first}-{last}",
                )["CopyPartResult"]  # fmt: skip
                if result.get("ChecksumSHA256") not in (None, checksum):
                    raise IntegrityError(f"part {index + 1} of {self.location.uri(final)} changed while copied.")
                copied.append({"PartNumber": index + 1, "ETag": result["ETag"], "ChecksumSHA256": checksum})
            client.complete_multipart_upload(
                Bucket=bucket,
                Key=final,
                UploadId=upload_id,
                MultipartUpload={"Parts": copied},  # type: ignore[typeddict-item]
            )
        except BaseException:
            self._abort(final, upload_id)
            raise

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

    @contextmanager
    def _staged(self, key: str) -> Iterator[None]:
        """Delete the staging object however the upload ends (a failure to do so hides no other error)."""
        try:
            yield
        except BaseException:
            with suppress(*boto_errors()):
                self.client.delete_object(Bucket=self.location.bucket, Key=key)
            raise
        try:
            self.client.delete_object(Bucket=self.location.bucket, Key=key)
        except boto_errors() as exc:
            raise translate(exc, f"delete the staging object {self.location.uri(key)}") from None
