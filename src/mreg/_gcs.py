"""What the GCS object store and the GCS record store share: locations, the client, retries and error
translation.

The client is Google's own (`google-cloud-storage`, the optional extra `mreg[gcs]`), imported on first use.
Credentials come from Google's application-default chain; with `STORAGE_EMULATOR_HOST` set, the client
talks to that emulator, anonymously, under a placeholder project. Transient failures (connection errors,
timeouts, 408, 429, 5xx) are retried with exponential backoff for up to `RETRY_SECONDS`, so that a network
outage of several seconds is waited out; permanent ones fail at once with a message that says what to fix.
"""

from __future__ import annotations

import functools
import os
import re
from typing import TYPE_CHECKING, Any

from mreg._grammar import BucketLocation, parse_bucket_uri
from mreg.errors import IntegrityError, InvalidInputError, MregError, NotFoundError, StorageError

if TYPE_CHECKING:
    from google.api_core.retry import Retry

RETRY_SECONDS = 20.0
"""How long a failing request is retried (from its first attempt) before the failure is reported."""
TIMEOUT = (10.0, 60.0)
"""Seconds to connect, and to wait for each answer, per request."""
EMULATOR_PROJECT = "mreg-emulator"
"""The project an emulator client names when GOOGLE_CLOUD_PROJECT is not set (emulators ignore it)."""
_TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_IP_ADDRESS_RE = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")

GsLocation = BucketLocation
"""`gs://bucket/prefix`: where a store keeps its objects."""


class GsResource:
    """Something kept under a GCS location, with a client made on first use (Google's credential chain)."""

    def __init__(self, location: GsLocation) -> None:
        self.location = location
        self._client: Any = None

    @property
    def client(self) -> Any:
        """The `google.cloud.storage.Client` (made on first use)."""
        if self._client is None:
            self._client = make_client(f"reach {self.location.uri('')}")
        return self._client

    def blob(self, key: str, *, bucket: str | None = None) -> Any:
        """The `Blob` of `key` in this location's bucket (or in `bucket`); no request is made."""
        return self.client.bucket(bucket or self.location.bucket).blob(key)

    def read(self, key: str) -> tuple[bytes, int] | None:
        """The bytes and generation of `key` (read in one request), or None when it does not exist."""
        blob = self.blob(key)
        try:
            data = blob.download_as_bytes(retry=retry(), timeout=TIMEOUT)
        except gcs_errors() as exc:
            if status_code(exc) == 404:
                return None
            raise translate(exc, f"read {self.location.uri(key)}") from exc
        return bytes(data), int(blob.generation)

    def write(self, key: str, data: bytes, *, generation: int | None) -> bool:
        """Write a small JSON object in one request; with `generation`, only if the object is still at that
        generation (0: it does not exist). False when another writer got there first.

        A write sent again after a transient failure (its answer may have been lost) can find its own object
        there: then, and only then, the precondition failure is followed by a read, and byte-identical
        content counts as written. A first attempt that loses the race is never taken for a win, so two
        writers of identical bytes still get two objects.
        """
        blob = self.blob(key)

        def send(policy: Retry | None) -> None:
            blob.upload_from_string(
                data, content_type="application/json", if_generation_match=generation, retry=policy, timeout=TIMEOUT
            )

        try:
            send(None)
        except gcs_errors() as first:
            if status_code(first) == 412:
                return False
            if not transient(first):
                raise translate(first, f"write {self.location.uri(key)}") from first
            try:
                send(retry())
            except gcs_errors() as exc:
                if status_code(exc) != 412:
                    raise translate(exc, f"write {self.location.uri(key)}") from exc
                found = self.read(key)
                return found is not None and found[0] == data
        return True


def parse_gs_uri(uri: str) -> GsLocation:
    """Split and check `gs://bucket[/prefix]`, with Cloud Storage's bucket naming rules; raise ValueError
    with the reason."""
    location = parse_bucket_uri(uri)
    if location.scheme != "gs":
        raise ValueError("is not a gs:// URI")
    bucket = location.bucket
    if _IP_ADDRESS_RE.fullmatch(bucket):
        raise ValueError(f"names an invalid bucket {bucket!r} (Cloud Storage bucket names are not IP addresses)")
    if bucket.startswith("goog") or "google" in bucket or "g00gle" in bucket:
        raise ValueError(
            f"names an invalid bucket {bucket!r} (Cloud Storage bucket names cannot start with 'goog' "
            "or contain 'google')"
        )
    return location


def store_location(uri: str) -> GsLocation:
    """The location of a store's `gs://` URI; InvalidInputError naming the URI when it is not one."""
    try:
        return parse_gs_uri(uri)
    except ValueError as exc:
        raise InvalidInputError(f"{uri}: {exc}.") from exc


def object_location(uri: str) -> tuple[str, str]:
    """(bucket, key) of an object's `gs://bucket/key` URI."""
    location = store_location(uri)
    if not location.prefix:
        raise InvalidInputError(f"{uri}: names a bucket, not an object.")
    return location.bucket, location.prefix


def make_client(what: str) -> Any:
    """A `google.cloud.storage.Client`: the emulator's (anonymous) when STORAGE_EMULATOR_HOST is set, else
    one with Google's application-default credentials. `what` names the operation for error messages."""
    try:
        from google.cloud import storage  # type: ignore[import-untyped]
    except ImportError as exc:
        raise StorageError(
            f"cannot {what}: gs:// stores need the google-cloud-storage package (pip install 'mreg[gcs]')."
        ) from exc
    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        project = os.environ.get("GOOGLE_CLOUD_PROJECT") or EMULATOR_PROJECT
        return storage.Client(project=project, credentials=AnonymousCredentials())  # type: ignore[no-untyped-call]
    try:
        return storage.Client(project=os.environ.get("GOOGLE_CLOUD_PROJECT"))
    except gcs_errors() as exc:
        raise translate(exc, what) from exc


@functools.cache
def retry() -> Retry:
    """The retry policy of every request: transient failures, exponential backoff, `RETRY_SECONDS` in all."""
    from google.api_core.retry import Retry

    return Retry(predicate=transient, initial=0.5, maximum=4.0, multiplier=2.0, timeout=RETRY_SECONDS)


def transient(exc: BaseException) -> bool:
    """Whether a failed request is worth retrying: it did not reach the service, timed out, or the service
    answered that it is overloaded or failing."""
    import requests
    from google.auth.exceptions import TransportError

    if isinstance(exc, (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)):
        return True
    if isinstance(exc, (ConnectionError, TransportError)):
        return True
    return status_code(exc) in _TRANSIENT_STATUS


def status_code(exc: BaseException) -> int | None:
    """The HTTP status of a failed Cloud Storage request (None when there was no answer)."""
    from google.api_core.exceptions import GoogleAPICallError

    if isinstance(exc, GoogleAPICallError):
        return exc.code
    response = getattr(exc, "response", None)  # the media layer's InvalidResponse and DataCorruption
    code = getattr(response, "status_code", None)
    return code if isinstance(code, int) else None


def gcs_errors() -> tuple[type[Exception], ...]:
    """The exceptions the Cloud Storage client raises for failed requests (imported lazily)."""
    import requests
    from google.api_core.exceptions import GoogleAPIError
    from google.auth.exceptions import GoogleAuthError
    from google.cloud.storage.exceptions import DataCorruption, InvalidResponse  # type: ignore[import-untyped]

    return (GoogleAPIError, GoogleAuthError, requests.RequestException, InvalidResponse, DataCorruption)


def translate(exc: Exception, what: str) -> MregError:  # noqa: PLR0911 - one return per kind of failure
    """One of mreg's errors for a Cloud Storage client exception raised while doing `what`."""
    from google.api_core.exceptions import RetryError
    from google.auth.exceptions import DefaultCredentialsError, RefreshError
    from google.cloud.storage.exceptions import DataCorruption

    if isinstance(exc, RetryError) and isinstance(exc.cause, Exception):
        return translate(exc.cause, what)  # retried until RETRY_SECONDS ran out: report the last failure
    if isinstance(exc, DefaultCredentialsError):
        return StorageError(
            f"cannot {what}: no Google credentials were found (run `gcloud auth application-default login`, "
            "set GOOGLE_APPLICATION_CREDENTIALS, or run where a service account is attached)."
        )
    if isinstance(exc, DataCorruption):
        return IntegrityError(f"cannot {what}: the bytes Cloud Storage holds do not match those sent ({exc}).")
    status = status_code(exc)
    if status is None and transient(exc):
        return StorageError(f"cannot {what}: the Cloud Storage endpoint is unreachable ({_reason(exc)}).")
    if status == 404:
        return NotFoundError(
            f"cannot {what}: not found ({_reason(exc)}); check that the bucket exists and that storage.uri "
            "and registry.uri name it."
        )
    if status in (401, 403) or isinstance(exc, RefreshError):
        return StorageError(
            f"cannot {what}: access denied ({_reason(exc)}); check the credentials (GOOGLE_APPLICATION_CREDENTIALS "
            "or `gcloud auth application-default login`) and the bucket's IAM permissions."
        )
    return StorageError(f"cannot {what}: {_reason(exc)}.")


def _reason(exc: BaseException) -> str:
    """A short account of a failure: the status and the service's own message, not the request URL."""
    from google.api_core.exceptions import GoogleAPICallError

    if isinstance(exc, GoogleAPICallError):
        messages = [error.get("message") for error in exc.errors if isinstance(error, dict)]
        detail = next((message for message in messages if message), "") or type(exc).__name__
        return f"HTTP {exc.code}: {detail}"
    status = status_code(exc)
    if status is not None:
        return f"HTTP {status}"
    cause = exc.args[0] if exc.args and isinstance(exc.args[0], BaseException) else exc
    cause = getattr(cause, "reason", cause)  # urllib3 wraps the connection's failure in a MaxRetryError
    text = str(cause).strip()
    return text.splitlines()[0] if text else type(exc).__name__
