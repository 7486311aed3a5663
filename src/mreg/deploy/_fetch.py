"""Fetch one registered model from S3 into a directory, refusing any byte the record does not vouch for.

mreg's Kubernetes manifests ship this file in a ConfigMap and run it, in an init container of the serve
image, before the server starts. It uses the standard library only (Python 3.8 or later): the serve image
has Python but neither mreg nor boto3.

- `--kind file`: the object at `--uri` must hash to `--sha256`; it becomes `DEST/FILENAME`.
- `--kind directory`: the object at `--uri` is the model's manifest and must hash to `--sha256`; every file
  it lists is found through the content address `<store prefix>/sha256/<hex>` of `--store` and must have
  the listed size and SHA-256. The manifest's paths are checked (relative, normalised, no `..`) before
  anything is written, and the files are assembled in a staging directory inside DEST.

Bytes are written under a temporary name inside DEST and get their final name only once verified: on any
failure the script exits 1 with a one-line reason and DEST holds nothing new. Nothing is written outside
DEST.

Requests are signed with AWS Signature Version 4 using AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and
AWS_SESSION_TOKEN (sent unsigned when no key is set), for AWS_REGION (else AWS_DEFAULT_REGION, else
us-east-1). They go to AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL (path-style) when set, else to
https://BUCKET.s3.REGION.amazonaws.com. Connection failures, throttling and 5xx answers are retried.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import http.client
import io
import json
import os
import posixpath
import re
import secrets
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
CHUNK = 1024 * 1024
MAX_DOCUMENT = 64 * 1024 * 1024
"""Largest manifest or index object the script reads into memory."""
ATTEMPTS = 5
TIMEOUT = 60.0
STAGING_PREFIX = ".mreg-fetch-"
_HEX64 = re.compile(r"[0-9a-f]{64}")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_RETRIED_STATUS = {429, 500, 502, 503, 504}
_XML_FIELD = re.compile(r"<(Code|Message)>([^<]*)</(?:Code|Message)>")


class FetchError(Exception):
    """Why the model could not be fetched; one line, printed before exiting 1."""


# -- Signature Version 4 --------------------------------------------------------------------------------


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def signed_headers(
    *,
    host: str,
    path: str,
    region: str,
    access_key: str,
    secret_key: str,
    session_token: str | None,
    now: float,
) -> dict[str, str]:
    """Headers of a SigV4-signed S3 GET of `path` (already URI-encoded) on `host`, with no query or body."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    scope = f"{stamp[:8]}/{region}/s3/aws4_request"
    headers = {"host": host, "x-amz-content-sha256": EMPTY_SHA256, "x-amz-date": stamp}
    if session_token:
        headers["x-amz-security-token"] = session_token
    names = sorted(headers)
    canonical = "\n".join(
        [
            "GET",
            path,
            "",
            "".join(f"{name}:{headers[name].strip()}\n" for name in names),
            ";".join(names),
            EMPTY_SHA256,
        ]
    )
    to_sign = "\n".join(["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + secret_key).encode()
    for part in (stamp[:8], region, "s3", "aws4_request"):
        key = _hmac(key, part)
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={';'.join(names)}, Signature={signature}"
    )
    return headers


# -- S3 over HTTP ---------------------------------------------------------------------------------------


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """(bucket, key) of `s3://bucket/key`; FetchError when `uri` is not one."""
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not uri.startswith("s3://") or not _BUCKET.fullmatch(bucket) or not key:
        raise FetchError(f"{uri!r} is not s3://BUCKET/KEY.")
    return bucket, key


def parse_store_uri(uri: str) -> tuple[str, str]:
    """(bucket, prefix) of `s3://bucket[/prefix]`; FetchError when `uri` is not one."""
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    if not uri.startswith("s3://") or not _BUCKET.fullmatch(bucket):
        raise FetchError(f"{uri!r} is not s3://BUCKET[/PREFIX].")
    return bucket, prefix.strip("/")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Never follow a redirect: the signed headers belong to the host they were signed for."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class S3:
    """GETs from S3 or an S3-compatible endpoint, configured from environment variables as boto3 is."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.region = environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        self.endpoint = environ.get("AWS_ENDPOINT_URL_S3") or environ.get("AWS_ENDPOINT_URL") or None
        self.access_key = environ.get("AWS_ACCESS_KEY_ID") or None
        self.secret_key = environ.get("AWS_SECRET_ACCESS_KEY", "")
        self.session_token = environ.get("AWS_SESSION_TOKEN") or None
        if self.endpoint is not None:
            parts = urllib.parse.urlsplit(self.endpoint)
            if parts.scheme not in {"http", "https"} or not parts.netloc:
                raise FetchError(f"AWS_ENDPOINT_URL {self.endpoint!r} is not an http:// or https:// URL.")
        self._opener = urllib.request.build_opener(_NoRedirect)

    def url(self, bucket: str, key: str) -> tuple[str, str, str]:
        """(URL, host, encoded path) of an object: path-style on a configured endpoint or for a bucket name
        with dots (TLS certificates cover one level of `*.s3.REGION.amazonaws.com`), else virtual-hosted."""
        encoded = urllib.parse.quote(key, safe="/")
        if self.endpoint is not None:
            parts = urllib.parse.urlsplit(self.endpoint)
            path = f"{parts.path.rstrip('/')}/{bucket}/{encoded}"
            return f"{parts.scheme}://{parts.netloc}{path}", parts.netloc, path
        if "." in bucket:
            host = f"s3.{self.region}.amazonaws.com"
            return f"https://{host}/{bucket}/{encoded}", host, f"/{bucket}/{encoded}"
        host = f"{bucket}.s3.{self.region}.amazonaws.com"
        return f"https://{host}/{encoded}", host, f"/{encoded}"

    def transfer(self, bucket: str, key: str, sink: IO[bytes], limit: int | None) -> tuple[str, int]:
        """Copy the object into `sink` (emptied before each attempt): its SHA-256 and size.

        More than `limit` bytes stop the transfer with FetchError.
        """
        attempt = 1
        while True:
            sink.seek(0)
            sink.truncate()
            try:
                return self._copy(bucket, key, sink, limit)
            except _Transient as exc:
                if attempt == ATTEMPTS:
                    raise FetchError(f"cannot read s3://{bucket}/{key}: {exc} (after {ATTEMPTS} attempts).") from exc
            time.sleep(0.5 * 2**attempt)
            attempt += 1

    def _copy(self, bucket: str, key: str, sink: IO[bytes], limit: int | None) -> tuple[str, int]:
        uri = f"s3://{bucket}/{key}"
        url, host, path = self.url(bucket, key)
        headers = {"host": host}
        if self.access_key is not None:
            headers = signed_headers(
                host=host,
                path=path,
                region=self.region,
                access_key=self.access_key,
                secret_key=self.secret_key,
                session_token=self.session_token,
                now=time.time(),
            )
        request = urllib.request.Request(url, headers=headers, method="GET")  # noqa: S310 (http(s) only, checked)
        sha, size = hashlib.sha256(), 0
        try:
            with self._opener.open(request, timeout=TIMEOUT) as response:
                while True:
                    chunk = response.read(CHUNK)
                    if not chunk:
                        break
                    size += len(chunk)
                    if limit is not None and size > limit:
                        raise FetchError(f"{uri} holds more than the {limit} bytes expected.")
                    sha.update(chunk)
                    _write(sink, chunk)
        except urllib.error.HTTPError as exc:
            reason = _s3_reason(exc)
            if exc.code in _RETRIED_STATUS:
                raise _Transient(reason) from None
            raise FetchError(f"cannot read {uri}: {reason}.") from exc
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            raise _Transient(_one_line(str(getattr(exc, "reason", exc)) or type(exc).__name__)) from exc
        return sha.hexdigest(), size

    def document(self, bucket: str, key: str) -> tuple[bytes, str]:
        """A small object's bytes (held in memory, at most MAX_DOCUMENT) and SHA-256."""
        buffer = io.BytesIO()
        sha, _ = self.transfer(bucket, key, buffer, MAX_DOCUMENT)
        return buffer.getvalue(), sha


class _Transient(Exception):
    """A failure worth another attempt (connection trouble, throttling, 5xx)."""


def _write(sink: IO[bytes], chunk: bytes) -> None:
    try:
        sink.write(chunk)
    except OSError as exc:
        raise FetchError(f"cannot write the model: {exc.strerror or exc}.") from exc


def _s3_reason(exc: urllib.error.HTTPError) -> str:
    try:
        body = exc.read(64 * 1024).decode("utf-8", "replace")
    except OSError:
        body = ""
    fields = dict(_XML_FIELD.findall(body))
    detail = " ".join(part for part in (fields.get("Code"), fields.get("Message", "").rstrip(".")) if part)
    return _one_line(f"HTTP {exc.code}" + (f" {detail}" if detail else ""))


def _one_line(text: str) -> str:
    return " ".join(text.split())


# -- the model ------------------------------------------------------------------------------------------


def check_relative_path(path: object, what: str) -> str:
    """`path` when it is a normalised relative POSIX path inside its root, else FetchError."""
    if (
        not isinstance(path, str)
        or not path
        or path.startswith("/")
        or "\\" in path
        or any(ord(character) < 32 or ord(character) == 127 for character in path)
        or posixpath.normpath(path) != path
        or any(part in {"", ".", ".."} for part in path.split("/"))
    ):
        raise FetchError(f"{what} {path!r} is not a relative, normalised path inside the model directory.")
    return path


@dataclass(frozen=True)
class ManifestFile:
    """One file a directory model's manifest lists."""

    path: str
    size: int
    sha256: str
    executable: bool


def parse_manifest(data: bytes, uri: str) -> tuple[list[ManifestFile], list[str]]:
    """The files and directories of a directory model's manifest, every path checked; FetchError otherwise."""
    try:
        document = json.loads(data)
    except ValueError as exc:
        raise FetchError(f"the manifest {uri} is not JSON.") from exc
    if (
        not isinstance(document, dict)
        or document.get("schema_version") != 1
        or document.get("kind") != "directory"
        or not isinstance(document.get("files"), list)
        or not isinstance(document.get("directories", []), list)
    ):
        raise FetchError(f"the manifest {uri} is not a version 1 directory manifest.")
    files = [_manifest_file(entry, uri) for entry in document["files"]]
    where = f"the manifest {uri} lists the directory"
    directories = [check_relative_path(entry, where) for entry in document.get("directories", [])]
    _check_tree([entry.path for entry in files], directories, uri)
    return files, directories


def _manifest_file(entry: object, uri: str) -> ManifestFile:
    if not isinstance(entry, dict):
        raise FetchError(f"the manifest {uri} lists a file that is not an object.")
    path = check_relative_path(entry.get("path"), f"the manifest {uri} lists the file")
    size, sha256, executable = entry.get("size"), entry.get("sha256"), entry.get("executable", False)
    if (
        not isinstance(size, int)
        or isinstance(size, bool)
        or size < 0
        or not isinstance(sha256, str)
        or not _HEX64.fullmatch(sha256)
        or not isinstance(executable, bool)
    ):
        raise FetchError(f"the manifest {uri} lists {path!r} without a valid size, sha256 and executable flag.")
    return ManifestFile(path, size, sha256, executable)


def _check_tree(files: list[str], directories: list[str], uri: str) -> None:
    """Refuse two entries with one path, and a file that another entry needs as a directory."""
    seen = set()
    for path in files + directories:
        if path in seen:
            raise FetchError(f"the manifest {uri} lists {path!r} twice.")
        seen.add(path)
    parents = set(directories)
    for path in files + directories:
        parts = path.split("/")
        parents.update("/".join(parts[:end]) for end in range(1, len(parts)))
    clash = sorted(parents.intersection(files))
    if clash:
        raise FetchError(f"the manifest {uri} lists {clash[0]!r} both as a file and as a directory.")


def check_filename(filename: str) -> str:
    """`filename` when it is one safe path component, else FetchError."""
    check_relative_path(filename, "the file name")
    if "/" in filename:
        raise FetchError(f"the file name {filename!r} must not contain '/'.")
    return filename


def _verified_download(s3: S3, uri: str, sha256: str, target: Path, size: int | None, mode: int) -> None:
    """Download `uri` to the new file `target` (created exclusively, never through a link); other bytes than
    the record's are refused (FetchError) and left at `target` for the caller to remove."""
    bucket, key = parse_s3_uri(uri)
    descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    with os.fdopen(descriptor, "w+b") as sink:
        actual, actual_size = s3.transfer(bucket, key, sink, size)
        os.fsync(sink.fileno())
    if size is not None and (actual, actual_size) != (sha256, size):
        raise FetchError(
            f"{uri} holds {actual_size} bytes hashing to {actual}, but the manifest says {size} bytes hashing to "
            f"{sha256}."
        )
    if actual != sha256:
        raise FetchError(f"{uri} hashes to {actual}, but the record says {sha256}.")
    target.chmod(mode)


def fetch_file(s3: S3, uri: str, sha256: str, filename: str, dest: Path) -> Path:
    """Download a file model to `dest/filename`, verified; returns that path."""
    target = dest / check_filename(filename)
    temporary = dest / (STAGING_PREFIX + secrets.token_hex(8))
    try:
        _verified_download(s3, uri, sha256, temporary, None, 0o644)
        temporary.replace(target)
    finally:
        _remove(temporary)
    return target


def fetch_directory(s3: S3, uri: str, sha256: str, store: str, dest: Path) -> int:
    """Fill `dest` with a directory model, every file verified; returns the number of files."""
    bucket, key = parse_s3_uri(uri)
    data, actual = s3.document(bucket, key)
    if actual != sha256:
        raise FetchError(f"the manifest {uri} hashes to {actual}, but the record says {sha256}.")
    files, directories = parse_manifest(data, uri)
    store_bucket, prefix = parse_store_uri(store)
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=dest))
    try:
        for directory in sorted(directories):
            (staging / directory).mkdir(mode=0o755, parents=True, exist_ok=True)
        for entry in files:
            blob = _blob_of(s3, store_bucket, prefix, entry)
            target = staging / entry.path
            target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            mode = 0o755 if entry.executable else 0o644
            _verified_download(s3, f"s3://{store_bucket}/{blob}", entry.sha256, target, entry.size, mode)
        for verified in sorted(staging.iterdir()):
            _remove(dest / verified.name)
            verified.replace(dest / verified.name)
    finally:
        _remove(staging)
    return len(files)


def _blob_of(s3: S3, bucket: str, prefix: str, entry: ManifestFile) -> str:
    """The key of the blob holding a listed file, from its content address `<prefix>/sha256/<hex>`."""
    address = "/".join(part for part in (prefix, "sha256", entry.sha256) if part)
    data, _ = s3.document(bucket, address)
    try:
        index = json.loads(data)
    except ValueError:
        index = None
    if not isinstance(index, dict) or not isinstance(index.get("blob"), str) or not index["blob"]:
        raise FetchError(f"s3://{bucket}/{address} is not an index object naming a blob.")
    if index.get("sha256") != entry.sha256 or index.get("size") != entry.size:
        raise FetchError(f"s3://{bucket}/{address} indexes other bytes than {entry.path!r} of the manifest.")
    return str(index["blob"])


def _remove(path: Path) -> None:
    """Remove `path` if it exists: a file, a link (not what it points to) or a directory tree."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.is_symlink() or path.exists():
        path.unlink()


def remove_leftovers(dest: Path) -> None:
    """Remove the temporary files and staging directories of an earlier run that was killed."""
    for entry in dest.iterdir():
        if entry.name.startswith(STAGING_PREFIX):
            _remove(entry)


# -- command line ---------------------------------------------------------------------------------------


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="fetch.py", description="Fetch a registered model and verify it.")
    parser.add_argument("--uri", required=True, help="s3://BUCKET/KEY of the model (a directory's manifest)")
    parser.add_argument("--sha256", required=True, help="the model's SHA-256 (hex), from its record")
    parser.add_argument("--kind", choices=["file", "directory"], default="file")
    parser.add_argument("--store", help="s3://BUCKET/PREFIX of the object store (directory models)")
    parser.add_argument("--filename", help="the file name of a file model")
    parser.add_argument("--dest", required=True, help="the directory to fill (the model volume)")
    return parser.parse_args(argv)


def run(arguments: argparse.Namespace, environ: Mapping[str, str], log: Callable[[str], None]) -> None:
    """Fetch what the arguments name into their destination; FetchError on any failure."""
    if not _HEX64.fullmatch(arguments.sha256):
        raise FetchError(f"--sha256 {arguments.sha256!r} is not 64 lower-case hex digits.")
    dest = Path(arguments.dest)
    if dest.is_symlink() or not dest.is_dir():
        raise FetchError(f"the destination {dest!r} is not a directory.")
    s3 = S3(environ)
    remove_leftovers(dest)
    if arguments.kind == "file":
        if not arguments.filename:
            raise FetchError("a file model needs --filename.")
        target = fetch_file(s3, arguments.uri, arguments.sha256, arguments.filename, dest)
        log(f"mreg-fetch: {arguments.uri} -> {target}, sha256 {arguments.sha256} verified")
        return
    if not arguments.store:
        raise FetchError("a directory model needs --store.")
    count = fetch_directory(s3, arguments.uri, arguments.sha256, arguments.store, dest)
    log(f"mreg-fetch: {arguments.uri} -> {dest}, manifest sha256 {arguments.sha256} and {count} files verified")


def main(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run the script: 0 when the model is in place and verified, 1 (with the reason on stderr) otherwise."""
    arguments = _arguments(argv)
    try:
        run(arguments, os.environ if environ is None else environ, lambda line: print(line, flush=True))
    except FetchError as exc:
        print(f"mreg-fetch: error: {_one_line(str(exc))}", file=sys.stderr, flush=True)
        return 1
    except OSError as exc:
        print(f"mreg-fetch: error: cannot write into {arguments.dest}: {_one_line(str(exc))}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
