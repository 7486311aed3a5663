"""The grammars every layer shares, as pure functions: model and alias names, container image references
(distribution's `reference` package) and store URIs (`file://`, `s3://`, `gs://`).

Imported by the spec, the records, the stores and the engine alike, so it imports nothing of mreg's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

NAME_RE = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
"""A model or alias name; also a valid path component of an image repository (`mreg/<name>`)."""
MAX_NAME = 64
NAME_RULE = (
    "1-64 lower-case letters and digits, in words joined by '.', '_', '__' or dashes; it starts and ends with "
    "a letter or digit"
)


def is_name(text: str) -> bool:
    """Whether `text` is a valid model or alias name."""
    return len(text) <= MAX_NAME and NAME_RE.fullmatch(text) is not None


KEY_RE = re.compile(r"[a-z0-9][a-z0-9._/-]{0,127}")
"""A metric, param or tag key."""
KEY_RULE = "1-128 lower-case letters, digits, '.', '_', '/' or '-', starting with a letter or digit"

DOCUMENT_PART_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
"""One part of a registry document's path: a name, a number or an id mreg made."""
DocumentPath = tuple[str, ...]
"""A document below a registry's root, e.g. `("models", NAME, "annotations", "0000000003")`; a record store
keeps it as `<root>/models/NAME/annotations/0000000003.json` (the file store keeps `models/NAME/` in `NAME/`)."""


def document_path(*parts: str) -> DocumentPath:
    """A document path, each part checked, so that only names, numbers and ids reach a key or a file."""
    for part in parts:
        if not DOCUMENT_PART_RE.fullmatch(part) or ".." in part:
            raise ValueError(f"{part!r} is not a valid document path part")
    return parts


_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*(?::[0-9]+)?"
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_NAME = rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"

IMAGE_NAME_RE = re.compile(_NAME)
REFERENCE_RE = re.compile(rf"(?P<name>{_NAME})(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?")
SHA256_DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
MAX_NAME_LENGTH = 255


@dataclass(frozen=True)
class ImageReference:
    """A parsed `name[:tag][@digest]` reference."""

    name: str
    tag: str | None = None
    digest: str | None = None

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def parse_reference(text: str) -> ImageReference:
    """Parse an image reference; raise ValueError with the reason when it is not one."""
    match = REFERENCE_RE.fullmatch(text)
    if match is None:
        raise ValueError("is not a valid image reference ([registry[:port]/]name[:tag][@digest], lower-case path)")
    if len(match["name"]) > MAX_NAME_LENGTH:
        raise ValueError(f"is not a valid image reference (the name is longer than {MAX_NAME_LENGTH} characters)")
    return ImageReference(match["name"], match["tag"], match["digest"])


def registry_host(reference: str) -> str:
    """The registry a reference points to: its first component when that is a host (it holds a dot or a
    port, or is localhost), else Docker Hub."""
    first, slash, _ = reference.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"


def parse_repository(text: str) -> str:
    """Validate a repository name (no tag, no digest); raise ValueError with the reason."""
    if IMAGE_NAME_RE.fullmatch(text) is None:
        raise ValueError("is not a valid image repository ([registry[:port]/]path, lower-case, no tag or digest)")
    if len(text) > MAX_NAME_LENGTH:
        raise ValueError(f"is not a valid image repository (longer than {MAX_NAME_LENGTH} characters)")
    return text


StoreScheme = Literal["file", "s3", "gs"]
STORE_SCHEMES: tuple[StoreScheme, ...] = ("file", "s3", "gs")
_BUCKET_RE = {
    "s3": re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]"),
    "gs": re.compile(r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]"),  # dotted names may reach 222 characters
}
_PREFIX_PART_RE = re.compile(r"[A-Za-z0-9._-]+")


@dataclass(frozen=True)
class BucketLocation:
    """`s3://bucket/prefix` or `gs://bucket/prefix`: where a store keeps its objects."""

    scheme: Literal["s3", "gs"]
    bucket: str
    prefix: str

    def key(self, *parts: str) -> str:
        """The key of `parts` below the prefix."""
        return "/".join([self.prefix, *parts] if self.prefix else parts)

    def uri(self, key: str) -> str:
        """The URI of a key in this bucket."""
        return f"{self.scheme}://{self.bucket}/{key}"


def store_scheme(uri: str) -> StoreScheme:
    """The scheme of a store or object URI; ValueError naming the supported ones otherwise."""
    scheme, sep, _ = uri.partition("://")
    if not sep or scheme not in STORE_SCHEMES:
        raise ValueError("is not a supported store URI (use file://PATH, s3://BUCKET/PREFIX or gs://BUCKET/PREFIX)")
    return scheme


def parse_bucket_uri(uri: str) -> BucketLocation:
    """Split and check `s3://bucket[/prefix]` or `gs://bucket[/prefix]`; raise ValueError with the reason."""
    scheme = store_scheme(uri)
    if scheme == "file":
        raise ValueError("is not an s3:// or gs:// URI")
    bucket, _, prefix = uri.removeprefix(f"{scheme}://").partition("/")
    if not _BUCKET_RE[scheme].fullmatch(bucket) or ".." in bucket:
        allowed = "'.', '-'" if scheme == "s3" else "'.', '_', '-'"
        raise ValueError(f"names an invalid bucket {bucket!r} (3-63 lower-case letters, digits, {allowed})")
    prefix = prefix.strip("/")
    if prefix and not all(_PREFIX_PART_RE.fullmatch(part) and part not in {".", ".."} for part in prefix.split("/")):
        raise ValueError("has an invalid prefix (letters, digits, '.', '_', '-' separated by '/'; no '..')")
    return BucketLocation(scheme, bucket, prefix)


def local_store_path(uri: str, root: Path) -> Path:
    """The directory of a `file://` store URI; a relative path resolves against `root`."""
    if store_scheme(uri) != "file":
        raise ValueError("is not a file:// URI")
    return (root / uri.removeprefix("file://")).resolve()
