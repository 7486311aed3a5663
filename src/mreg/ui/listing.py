"""A model's versions as the UI lists them: a filter and an order (the `mreg list` language), a page at a
time, read through `Registry.find`.

Newest first (no order given), a page continues `before` the last version shown, as `mreg list --before`
does. In an explicit order, a page continues `after` the last version shown: the condition that puts a
version after that one in the order (a greater or smaller value, an equal value and an older version, or
no value, as the filter language orders rows) is added to the filter, so a page reads only its own
versions however deep it is. Yanked versions are listed (the page marks them); `yanked = false` hides them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mreg.errors import InvalidInputError

if TYPE_CHECKING:
    from mreg.records import Record
    from mreg.records._annotations import Annotations
    from mreg.records._filter import Filter, Order
    from mreg.records.store import VersionInfo
    from mreg.registry import Registry

_ABSENT_PROBE = {"metrics": "0", "params": "''", "tags": "''", "package": "'0'"}
"""A literal of each field family that may be missing, to write "the version has this field"."""


@dataclass(frozen=True)
class Query:
    """What a versions page shows: the filter and order texts as typed, and where the page starts."""

    filter: str = ""
    order: str = ""
    before: int | None = None
    """Newest first: versions older than this one."""
    after: int | None = None
    """In `order`: the versions that come after this one."""

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> Query:
        """The query of a page's URL parameters (`filter`, `order`, `before`, `after`)."""
        filter_text, order = params.get("filter", "").strip(), params.get("order", "").strip()
        before, after = _version_param(params, "before"), _version_param(params, "after")
        if after is not None and not order:
            raise InvalidInputError("after= continues an order; give order= too (newest first pages with before=).")
        if before is not None and order:
            raise InvalidInputError("before= pages newest first; with order= the next page is after=.")
        return cls(filter_text, order, before, after)

    @property
    def is_default(self) -> bool:
        """Whether this is the plain listing (no filter, no order), the one a static export holds."""
        return not (self.filter or self.order)

    def params(self, **position: int) -> dict[str, str]:
        """URL parameters of this query's filter and order, at `position` (`before=` or `after=`)."""
        found = {"filter": self.filter, "order": self.order, **{key: str(value) for key, value in position.items()}}
        return {key: value for key, value in found.items() if value}


@dataclass(frozen=True)
class Listing:
    """One page of versions and the URL parameters of the next page (None on the last one)."""

    versions: list[VersionInfo]
    next: dict[str, str] | None


def list_versions(registry: Registry, name: str, query: Query, limit: int) -> Listing:
    """The page of `name`'s versions that `query` names, up to `limit`; InvalidInputError for a bad filter or
    order (the parser's message, naming the column)."""
    from mreg.records._filter import parse_filter, parse_order

    user_filter = parse_filter(query.filter) if query.filter else None
    order = parse_order(query.order) if query.order else None
    condition = user_filter
    if order is not None and query.after is not None:
        record = registry.get(f"{name}:{query.after}")
        condition = _continued(order, user_filter, record, registry.annotations(record))
    found = registry.find(name, condition, order, limit=limit + 1, include_yanked=True, before=query.before)
    versions = found[:limit]
    if len(found) <= limit:
        return Listing(versions, None)
    last = versions[-1].record.version
    return Listing(versions, query.params(after=last) if order is not None else query.params(before=last))


def _continued(order: Order, user_filter: Filter | None, record: Record, annotations: Annotations) -> Filter:
    """`user_filter` and "comes after `record` in `order`", parsed."""
    from mreg.records._filter import MAX_FILTER, parse_filter

    field, direction = order.text.rsplit(" ", 1)
    family, _, key = field.partition(".")
    older = f"version < {record.version}"
    value = _literal(record, annotations, family, key)
    probe = _ABSENT_PROBE.get(family)
    absent = f"not ({field} = {probe} or {field} != {probe})" if probe else None
    if value is None:
        after = f"{absent} and {older}"
    else:
        beyond = "<" if direction == "desc" else ">"
        after = f"{field} {beyond} {value} or ({field} = {value} and {older})" + (f" or {absent}" if absent else "")
    text = f"({after}) and ({user_filter.text})" if user_filter else after
    if len(text) > MAX_FILTER:
        raise InvalidInputError(
            f"filter: too long to page through in the order {order.text!r} ({len(text)} characters with the "
            f"page position, at most {MAX_FILTER}); shorten it."
        )
    return parse_filter(text)


def _literal(record: Record, annotations: Annotations, family: str, key: str) -> str | None:
    """The filter literal of the version's value of a field (`order.text`'s family and key), None when the
    version has no such value."""
    if family == "version":
        return str(record.version)
    if family == "created":
        return _quote(record.created_at.isoformat())
    if family == "metrics":
        metric = record.metrics.get(key)
        return None if metric is None else repr(metric)
    if family == "package":
        text = _package_version(record, key)
    else:
        text = (record.params if family == "params" else annotations.tags).get(key)
    return None if text is None else _quote(text)


def _package_version(record: Record, canonical: str) -> str | None:
    """The recorded version of a distribution (by its canonical name), None when absent or not PEP 440 (a
    filter counts such a version as missing)."""
    from packaging.utils import canonicalize_name
    from packaging.version import InvalidVersion, Version

    found = None
    for pins in record.packages.values():
        for pin in pins:
            package, equals, version = pin.partition("==")
            if equals and canonicalize_name(package) == canonical:
                found = version
    if found is None:
        return None
    try:
        Version(found)
    except InvalidVersion:
        return None
    return found


def _quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _version_param(params: Mapping[str, str], key: str) -> int | None:
    text = params.get(key)
    if text is None:
        return None
    if not re.fullmatch(r"[0-9]{1,12}", text) or int(text) < 1:
        raise InvalidInputError(f"{key}= takes a version number, got {text!r}.")
    return int(text)
