"""Grammar of container image references (distribution's `reference` package), as pure functions."""

from __future__ import annotations

import re
from dataclasses import dataclass

_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*(?::[0-9]+)?"
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_NAME = rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"

NAME_RE = re.compile(_NAME)
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
    if NAME_RE.fullmatch(text) is None:
        raise ValueError("is not a valid image repository ([registry[:port]/]path, lower-case, no tag or digest)")
    if len(text) > MAX_NAME_LENGTH:
        raise ValueError(f"is not a valid image repository (longer than {MAX_NAME_LENGTH} characters)")
    return text
