"""What the S3 object store and the S3 record store share: locations, the client, and error translation.

The client uses boto3's own configuration chain (credentials, region, profiles, `AWS_ENDPOINT_URL`), so any
S3-compatible server works (AWS S3, MinIO). Transient failures (connection resets,
5xx, throttling) are retried by botocore's standard retry mode with bounded exponential backoff;
permanent ones fail at once with a message that says what to fix. Credentials never leave boto3.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

from mreg._grammar import BucketLocation, parse_bucket_uri
from mreg.errors import InvalidInputError, MregError, NotFoundError, StorageError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

_T = TypeVar("_T")
_CLIENT_LOCK = threading.Lock()

MAX_ATTEMPTS = 6
"""Per request, by botocore's standard retry mode (AWS_MAX_ATTEMPTS and AWS_RETRY_MODE override it)."""
ABORT_BACKOFF = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
"""Waits between attempts to abort a failed multipart upload: the server may be coming back."""
OUTAGE_WINDOW = 40.0
"""How long an upload keeps retrying a request that failed transiently (after botocore's own retries): a CI
runner's network may blip for ten seconds or more. MREG_OUTAGE_WINDOW (seconds) overrides it."""
_TRANSIENT_CODES = {
    "RequestTimeout",
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "InternalError",
    "ServiceUnavailable",
}
ABSENT = frozenset({"404", "NoSuchKey", "NotFound"})
"""Codes of a read or lookup of a key that does not exist."""
CONFLICT = frozenset({"PreconditionFailed", "412", "ConditionalRequestConflict", "409"})
"""Codes of a conditional write (`If-None-Match`, `If-Match`) that lost to another writer."""
_NOT_FOUND = {"404", "NoSuchKey", "NotFound", "NoSuchBucket", "NoSuchUpload"}
_DENIED = {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken"}


S3Location = BucketLocation
"""`s3://bucket/prefix`: where a store keeps its objects."""


class S3Resource:
    """Something kept under an S3 location, with a client made on first use (boto3's chain)."""

    signed_payloads = True
    """Whether the client signs request bodies (see `make_client`)."""

    def __init__(self, location: S3Location, *, endpoint_url: str | None = None) -> None:
        self.location = location
        self.endpoint_url = endpoint_url
        self._client: S3Client | None = None

    @property
    def client(self) -> S3Client:
        """The client, made once even when several threads ask for it first at the same time."""
        if self._client is None:
            with _CLIENT_LOCK:
                if self._client is None:
                    self._client = make_client(self.endpoint_url, signed_payloads=self.signed_payloads)
        return self._client


def store_location(uri: str) -> S3Location:
    """The location of a store's `s3://` URI; InvalidInputError naming the URI when it is not one."""
    try:
        location = parse_bucket_uri(uri)
    except ValueError as exc:
        raise InvalidInputError(f"{uri}: {exc}.") from exc
    if location.scheme != "s3":
        raise InvalidInputError(f"{uri}: is not an s3:// URI.")
    return location


def object_location(uri: str) -> tuple[str, str]:
    """(bucket, key) of an object's `s3://bucket/key` URI."""
    location = store_location(uri)
    if not location.prefix:
        raise InvalidInputError(f"{uri}: names a bucket, not an object.")
    return location.bucket, location.prefix


def make_client(endpoint_url: str | None = None, *, signed_payloads: bool = True) -> S3Client:
    """An S3 client from boto3's configuration chain (botocore's, without boto3's own import cost);
    `endpoint_url` overrides AWS_ENDPOINT_URL. Without `signed_payloads`, request bodies are sent as
    UNSIGNED-PAYLOAD even over plain HTTP (botocore does so over HTTPS when a checksum header is sent): for
    callers whose every body carries a signed checksum header (`x-amz-checksum-*`), which the server checks
    the body against, so that hashing it again for the signature adds nothing."""
    import botocore.session
    from botocore.config import Config

    from mreg._s3_loader import service_loader

    retries: Any = {
        "mode": os.environ.get("AWS_RETRY_MODE", "standard"),
        "max_attempts": int(os.environ.get("AWS_MAX_ATTEMPTS", MAX_ATTEMPTS)),
    }
    config = Config(
        retries=retries,
        max_pool_connections=32,
        connect_timeout=5,
        read_timeout=60,
        tcp_keepalive=True,
        s3=None if signed_payloads else {"payload_signing_enabled": False},
    )
    session = botocore.session.get_session()
    session.register_component("data_loader", service_loader(session.get_config_variable("data_path")))
    client = session.create_client("s3", endpoint_url=endpoint_url, config=config)
    return cast("S3Client", client)


def boto_errors() -> tuple[type[Exception], ...]:
    """The exceptions boto3 raises for failed requests (imported lazily, like boto3 itself)."""
    from botocore.exceptions import BotoCoreError, ClientError

    return (BotoCoreError, ClientError)


def translate(exc: Exception, what: str) -> MregError:  # noqa: PLR0911 - one return per kind of failure
    """One of mreg's errors for a boto3/botocore exception raised while doing `what`."""
    from botocore.exceptions import (
        ClientError,
        ConnectionError,
        EndpointConnectionError,
        NoCredentialsError,
        PartialCredentialsError,
    )

    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return StorageError(
            f"cannot {what}: no usable AWS credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
            "AWS_PROFILE, or an instance role)."
        )
    if isinstance(exc, (EndpointConnectionError, ConnectionError)):
        return StorageError(f"cannot {what}: the S3 endpoint is unreachable ({_reason(exc)}).")
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        message = exc.response.get("Error", {}).get("Message", "") or code
        if code == "NoSuchBucket":
            return NotFoundError(
                f"cannot {what}: {message} ({code}); create the bucket, or check storage.uri and registry.uri."
            )
        if code in _NOT_FOUND:
            return NotFoundError(f"cannot {what}: {message or 'not found'} ({code}).")
        if code in _DENIED:
            return StorageError(
                f"cannot {what}: access denied ({code}: {message}); check the credentials and the bucket policy."
            )
        return StorageError(f"cannot {what}: {code}: {message}.")
    return StorageError(f"cannot {what}: {_reason(exc)}.")


def is_transient(exc: BaseException) -> bool:
    """Whether a failed request may succeed when sent again: the connection failed or timed out, or the
    server answered 5xx or asked to slow down."""
    from botocore.exceptions import ClientError, ConnectionError, ConnectTimeoutError, ReadTimeoutError

    if isinstance(exc, (ConnectionError, ConnectTimeoutError, ReadTimeoutError)):
        return True
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return error_code(exc) in _TRANSIENT_CODES or status >= 500
    return False


def through_outages(call: Callable[[], _T]) -> _T:
    """`call()`, sent again with exponential backoff (0.5 s doubling to 4 s) while it fails transiently,
    for up to the outage window; any other failure, or one past the window, is raised."""
    deadline = time.monotonic() + float(os.environ.get("MREG_OUTAGE_WINDOW", OUTAGE_WINDOW))
    delay = 0.5
    while True:
        try:
            return call()
        except boto_errors() as exc:
            if not is_transient(exc) or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 4.0)


def error_code(exc: Exception) -> str:
    """The S3 error code of a ClientError ('' for anything else)."""
    response: Any = getattr(exc, "response", None)
    return str(response.get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""


def _reason(exc: Exception) -> str:
    return str(exc).strip() or type(exc).__name__
