"""What a version carries besides its model, checked before anything is written: the immutable metrics,
params, datasets and run URL given at register time, and the values of the mutable annotations (tags,
description, yank reasons).

Each refusal is an `InvalidInputError` naming where the value came from (`where`: an option, a file) and why.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mreg._grammar import KEY_RE, KEY_RULE
from mreg.errors import InvalidInputError
from mreg.records.model import MAX_DATASETS, MAX_ENTRIES, MAX_TEXT, MAX_URI, Dataset

MAX_DESCRIPTION = 4096
"""The longest description, in characters."""
_URI_RE = re.compile(r"[a-z][a-z0-9+.-]*://[^\s]+")
_URL_RE = re.compile(r"https?://[^\s/?#]+[^\s]*")
_DIGEST_RE = re.compile(r"sha256:([0-9a-f]{64})")


def shown(text: str, width: int = 80) -> str:
    """A value as an error message names it: control characters escaped, cut short when long."""
    text = "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)
    return text if len(text) <= width else text[: width - 3] + "..."


def check_key(key: str, kind: str, where: str) -> str:
    """A metric, param or tag key, refused unless it follows the key grammar."""
    if not KEY_RE.fullmatch(key):
        raise InvalidInputError(f"{where}: {kind} key {key!r} is invalid: a key is {KEY_RULE}.")
    return key


def check_text(text: str, what: str, where: str, *, limit: int = MAX_TEXT, lines: bool = False) -> str:
    """A bounded text value without control characters (`lines`: newlines and tabs allowed)."""
    if len(text) > limit:
        raise InvalidInputError(f"{where}: {what} is {len(text)} characters long; at most {limit} are allowed.")
    allowed = "\n\t" if lines else ""
    if any((not char.isprintable() and char not in allowed) for char in text):
        raise InvalidInputError(f"{where}: {what} holds a control character.")
    return text


def check_metric(key: str, value: Any, where: str) -> float:
    """A metric's value: a finite number (booleans are not numbers)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInputError(f"{where}: metric {key!r} is {value!r}; a metric must be a finite number.")
    number = float(value)
    if not math.isfinite(number):
        raise InvalidInputError(f"{where}: metric {key!r} is {value}; a metric must be a finite number.")
    return number


def parse_number(text: str, key: str, where: str) -> float:
    """The number `--metric KEY=NUMBER` gives, refused unless it is finite."""
    try:
        number = float(text)
    except ValueError:
        raise InvalidInputError(f"{where}: metric {key!r} is {text!r}; a metric must be a finite number.") from None
    return check_metric(key, number, where)


def split_pair(text: str, option: str) -> tuple[str, str]:
    """`KEY=VALUE` split at its first `=`."""
    key, equals, value = text.partition("=")
    if not equals:
        raise InvalidInputError(f"{option} {text}: expected KEY=VALUE.")
    return key, value


def parse_dataset(text: str, where: str) -> Dataset:
    """`URI` or `URI@sha256:HEX`: a URI with a scheme (`s3://...`, `https://...`), and the data's SHA-256."""
    uri, at, digest = text.rpartition("@")
    if not at or not digest.startswith("sha256:"):
        uri, digest = text, ""
    check_text(uri, "the dataset URI", where, limit=MAX_URI)
    if not _URI_RE.fullmatch(uri):
        raise InvalidInputError(f"{where}: the dataset URI {uri!r} is not a URI (SCHEME://..., without spaces).")
    if not digest:
        return Dataset(uri=uri)
    match = _DIGEST_RE.fullmatch(digest)
    if match is None:
        raise InvalidInputError(
            f"{where}: the dataset digest {digest!r} is not sha256: followed by 64 lower-case hex digits."
        )
    return Dataset(uri=uri, sha256=match[1])


def check_url(url: str, where: str) -> str:
    """An http(s) URL without spaces or control characters (the training run's page)."""
    check_text(url, "the run URL", where, limit=MAX_URI)
    if not _URL_RE.fullmatch(url):
        raise InvalidInputError(f"{where}: the run URL {url!r} is not an http:// or https:// URL.")
    return url


def check_count(count: int, kind: str, where: str, limit: int = MAX_ENTRIES) -> None:
    if count > limit:
        raise InvalidInputError(f"{where}: {count} {kind}; at most {limit} are allowed.")


@dataclass
class Metadata:
    """The immutable metadata of one register, gathered from several sources and checked as it comes in.

    Each `add_*` names where its value came from (`--metric`, a metrics file); a key given twice is refused.
    """

    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    datasets: list[Dataset] = field(default_factory=list)
    run_url: str | None = None

    def add_metric(self, key: str, value: Any, where: str) -> None:
        check_key(key, "metric", where)
        if key in self.metrics:
            raise InvalidInputError(f"{where}: metric {key!r} is given twice.")
        self.metrics[key] = check_metric(key, value, where)
        check_count(len(self.metrics), "metrics", where)

    def add_metrics(self, document: Any, where: str) -> None:
        """A flat JSON object of numbers (a metrics file)."""
        if not isinstance(document, Mapping):
            raise InvalidInputError(f"{where}: expected a JSON object of metric names and numbers.")
        for key, value in document.items():
            self.add_metric(key, value, where)

    def add_param(self, key: str, value: str, where: str) -> None:
        check_key(key, "param", where)
        if key in self.params:
            raise InvalidInputError(f"{where}: param {key!r} is given twice.")
        self.params[key] = check_text(value, f"param {key!r}", where)
        check_count(len(self.params), "params", where)

    def add_datasets(self, texts: Iterable[str], where: str) -> None:
        for text in texts:
            self.datasets.append(parse_dataset(text, f"{where} {shown(text)}"))
        check_count(len(self.datasets), "datasets", where, MAX_DATASETS)

    def set_run_url(self, url: str, where: str) -> None:
        self.run_url = check_url(url, where)

    def record_fields(self) -> dict[str, Any]:
        """The record fields this metadata fills."""
        return {
            "metrics": dict(self.metrics),
            "params": dict(self.params),
            "datasets": list(self.datasets),
            "run_url": self.run_url,
        }
