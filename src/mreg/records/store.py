"""The record-store algorithms, written once over a backend's few atomic primitives.

A backend (`file://`, `s3://`, `gs://`) supplies exclusive creation of an object, a compare-and-swap of an
alias, single reads, and the same as generic document operations on paths below the registry's root (for
annotations, events and the version index, and for any later feature that keeps documents beside records).
Versions are allocated by exclusively creating `versions/<n>` (the first writer wins, the others try
`n + 1`), so concurrent registers get distinct, consecutive versions without a lock server. A `latest` hint
makes the newest version one read away; it may lag behind (a forward probe corrects it), never run ahead.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from mreg._grammar import DocumentPath
from mreg.errors import MregError, NotFoundError, StorageError
from mreg.records import _annotations, _index
from mreg.records._annotations import Annotations, Edit
from mreg.records.model import (
    Alias,
    AliasEvent,
    ModelRef,
    Record,
    check_name,
    decode_alias,
    decode_record,
)

if TYPE_CHECKING:
    from mreg.records._cache import RecordCache
    from mreg.records._filter import Filter, Order, VersionRow

MAX_ATTEMPTS = 10_000


RecordFactory = Callable[[int], Record]
"""Makes the record for a version number the store allocated."""


@dataclass(frozen=True)
class VersionInfo:
    """One version as `find` returns it: its record, its current annotations, and the aliases on it."""

    record: Record
    annotations: Annotations
    aliases: tuple[str, ...]


class RecordStore(ABC):
    """Records and aliases of models, over a backend's atomic primitives."""

    where: str
    """The store's URI, for messages."""
    cache: RecordCache | None = None
    """Where records read from this store are kept locally, to be read from there again (None: nowhere)."""

    # -- what a backend provides ---------------------------------------------------------------
    @abstractmethod
    def _read(self, name: str, version: int) -> bytes | None:
        """The stored record, or None when that version does not exist."""

    @abstractmethod
    def _exists(self, name: str, version: int) -> bool:
        """Whether that version exists (cheaper than reading it)."""

    @abstractmethod
    def _create(self, name: str, version: int, data: bytes) -> bool:
        """Write a record only if that version does not exist yet, atomically; False when it does."""

    @abstractmethod
    def _read_hint(self, name: str) -> int | None:
        """The `latest` hint (None when missing)."""

    @abstractmethod
    def _write_hint(self, name: str, version: int) -> None:
        """Update the `latest` hint (last writer wins; readers probe forward)."""

    @abstractmethod
    def _highest(self, name: str) -> int:
        """The highest version, by listing (used only when the hint is missing)."""

    @abstractmethod
    def _read_alias(self, name: str, alias: str) -> tuple[bytes | None, Any]:
        """The alias document and a token for `_swap_alias` (the document is None when absent)."""

    @abstractmethod
    def _swap_alias(self, name: str, alias: str, data: bytes, token: Any) -> bool:
        """Replace the alias document only if it is still the one `token` came with; False otherwise."""

    @abstractmethod
    def _alias_names(self, name: str) -> list[str]:
        """Names of every alias `name` has or had (by listing)."""

    @abstractmethod
    def models(self) -> list[str]:
        """Names of every model with at least one version."""

    @abstractmethod
    def _create_document(self, path: DocumentPath, data: bytes) -> bool:
        """Write an immutable document only if it does not exist yet, atomically; False when it does."""

    @abstractmethod
    def _read_document(self, path: DocumentPath) -> tuple[bytes | None, Any]:
        """A document (None when absent) and, for a mutable one, the token `_swap_document` needs."""

    @abstractmethod
    def _swap_document(self, path: DocumentPath, data: bytes, token: Any) -> bool:
        """Replace a mutable document only if it is still the one `token` came with (a token of a missing
        document: only if it still does not exist); False otherwise. A path is either created or swapped,
        never both."""

    @abstractmethod
    def _list_documents(self, prefix: DocumentPath, start_after: str | None = None) -> list[str]:
        """Names of the documents directly below `prefix` (after `start_after` when given), sorted."""

    @abstractmethod
    def _delete_document(self, path: DocumentPath) -> None:
        """Remove an immutable document (nothing happens when it is absent)."""

    # -- the algorithms --------------------------------------------------------------------------
    def create(self, name: str, make: RecordFactory) -> Record:
        """Allocate the next version of `name` and write `make(version)` there, never overwriting."""
        check_name(name)
        candidate = self.latest_version(name) + 1
        for _ in range(MAX_ATTEMPTS):
            record = make(candidate).sealed()
            if self._create(name, candidate, record.to_json().encode()):
                self._write_hint(name, candidate)
                with contextlib.suppress(MregError):  # the index may lag: a query reads the record instead
                    _index.add_version(self, record)
                return record
            candidate += 1
        raise StorageError(f"could not allocate a version of {name} in {self.where} after {MAX_ATTEMPTS} attempts.")

    def get(self, name: str, version: int | None = None, *, fresh: bool = False) -> Record:
        """A version of `name` (the latest when `version` is None, as the store says now). The record is
        taken from `cache` when it holds it, and kept there once read; `fresh` reads the store's own copy and
        leaves the cache alone."""
        check_name(name)
        if version is None:
            version = self.latest_version(name)
            if version == 0:
                raise NotFoundError(f"model {name} has no versions in {self.where}.")
        cache = None if fresh else self.cache
        cached = cache.get(name, version) if cache is not None else None
        if cached is not None:
            return cached
        data = self._read(name, version)
        if data is None:
            raise NotFoundError(f"model {name} has no version {version} in {self.where}.")
        record = decode_record(data, f"{self.where} {name}:{version}")
        if cache is not None:
            cache.put(name, version, record)
        return record

    def resolve(self, ref: ModelRef, *, fresh: bool = False) -> Record:
        """The record `ref` names: by version, by alias (two reads), or the latest that is not yanked. Which
        version an alias or the name alone means is always read from the store; the record itself comes from
        `cache` when it holds it, unless `fresh` (see `get`)."""
        if ref.alias is None:
            if ref.version:
                return self.get(ref.name, ref.version, fresh=fresh)
            return self.latest_usable(ref.name, fresh=fresh)
        alias = self.alias(ref.name, ref.alias)
        if alias.version is None:
            raise NotFoundError(f"alias {ref} was deleted (see `mreg alias {ref.name} --history {ref.alias}`).")
        return self.get(ref.name, alias.version, fresh=fresh)

    def versions(self, name: str, *, limit: int = 20, before: int | None = None) -> list[Record]:
        """Up to `limit` records of `name`, newest first, older than version `before` when given.

        Versions are dense (1..latest), so a page is read directly, without listing the store.
        """
        newest = (before - 1) if before else self.latest_version(check_name(name))
        numbers = list(range(newest, max(0, newest - limit), -1))
        if not numbers and before is None:
            raise NotFoundError(f"model {name} has no versions in {self.where}.")
        with ThreadPoolExecutor(max_workers=min(16, max(1, len(numbers)))) as pool:
            return list(pool.map(lambda number: self.get(name, number), numbers))

    def latest_version(self, name: str) -> int:
        """The newest version (0 when none): the hint, then forward probes."""
        version = self._read_hint(name)
        if version is None:
            version = self._highest(name)
        while self._exists(name, version + 1):
            version += 1
        return version

    def alias(self, name: str, alias: str) -> Alias:
        """The alias `name@alias` and its history."""
        data, _ = self._read_alias(check_name(name), check_name(alias, "alias"))
        if data is None:
            raise NotFoundError(f"model {name} has no alias {alias} in {self.where}.")
        return decode_alias(data, f"{self.where} {name}@{alias}")

    def aliases(self, name: str) -> list[Alias]:
        """Every alias of `name` that exists or existed, sorted by alias name (read concurrently)."""
        names = sorted(self._alias_names(check_name(name)))
        with ThreadPoolExecutor(max_workers=min(16, max(1, len(names)))) as pool:
            return list(pool.map(lambda alias: self.alias(name, alias), names))

    def move_alias(self, name: str, alias: str, version: int | None, *, actor: str) -> Alias:
        """Point `name@alias` at `version` (None deletes it), recording who moved it from where, and when.

        A compare-and-swap loop: concurrent moves are applied one after the other, none is lost.
        """
        check_name(name)
        check_name(alias, "alias")
        if version is not None:
            self.get(name, version)  # refuse an alias to a version that does not exist
        for _ in range(MAX_ATTEMPTS):
            data, token = self._read_alias(name, alias)
            current = decode_alias(data, f"{self.where} {name}@{alias}") if data is not None else None
            if current is None and version is None:
                raise NotFoundError(f"model {name} has no alias {alias} in {self.where}.")
            previous = current.version if current else None
            event = AliasEvent(version=version, previous=previous, by=actor, at=datetime.now(UTC))
            moved = Alias(
                name=name, alias=alias, version=version, history=[*(current.history if current else []), event]
            )
            if self._swap_alias(name, alias, moved.model_dump_json(indent=2).encode(), token):
                return moved
        raise StorageError(f"could not move alias {name}@{alias} after {MAX_ATTEMPTS} attempts.")

    # -- annotations and queries -------------------------------------------------------------------
    def annotations(self, name: str, version: int) -> Annotations:
        """The current annotations of `name:version` (empty when it has none)."""
        return _annotations.read(self, check_name(name), version)[0]

    def annotate(self, name: str, version: int, edit: Edit) -> tuple[Annotations, Annotations]:
        """Change the annotations of `name:version` with `edit`; the annotations before and after."""
        return _annotations.annotate(self, check_name(name), version, edit)

    def latest_usable(self, name: str, *, fresh: bool = False) -> Record:
        """The newest version of `name` that is not yanked (its record from `cache` unless `fresh`)."""
        version = self.latest_version(check_name(name))
        if version == 0:
            raise NotFoundError(f"model {name} has no versions in {self.where}.")
        with ThreadPoolExecutor(max_workers=1) as pool:
            while version >= 1:
                record = pool.submit(self.get, name, version, fresh=fresh)  # read meanwhile: it is rarely yanked
                if self.annotations(name, version).yanked is None:
                    return record.result()
                version -= 1
        raise NotFoundError(f"every version of model {name} in {self.where} is yanked; name one as {name}:VERSION.")

    def find(
        self,
        name: str,
        *,
        filter: Filter | None = None,
        order: Order | None = None,
        limit: int = 20,
        include_yanked: bool = False,
        before: int | None = None,
    ) -> list[VersionInfo]:
        """Up to `limit` versions of `name` that pass `filter`, in `order` (newest first by default), older
        than `before` when given; yanked ones only with `include_yanked` or when the filter asks about
        `yanked`.

        Candidates come from the index (`_index`), with the annotations of versions being changed read from
        the versions themselves; each result is then checked against its record and its annotations as
        they are now (see `_first`), so the index may lag behind but never makes a result wrong.
        """
        from mreg.records._filter import VersionRow

        latest = self.latest_version(check_name(name))  # first: it makes the backend's client, once
        if latest == 0:
            raise NotFoundError(f"model {name} has no versions in {self.where}.")
        queried = filter is not None or order is not None
        with ThreadPoolExecutor(max_workers=3) as pool:  # independent reads, at once
            aliases_read = pool.submit(self.aliases, name)
            marks_read = pool.submit(_index.read_marks, self, name)
            indexed = pool.submit(_index.read_indexed, self, name) if queried else None
            marks, pending = marks_read.result()
            named: dict[int, set[str]] = {}
            for alias in aliases_read.result():
                if alias.version is not None:
                    named.setdefault(alias.version, set()).add(alias.alias)
            aliases = {version: frozenset(names) for version, names in named.items()}
            facts = _index.complete(self, name, indexed.result(), latest) if indexed else {}
        changing = sorted(pending)
        for version, current in zip(changing, self._annotations_of(name, changing), strict=True):
            marks[version] = _index.Marks(current.revision, current.tags, current.yanked is not None)
        skip_yanked = not include_yanked and (filter is None or "yanked" not in filter.fields())
        newest = min(latest, before - 1) if before else latest

        unmarked = _index.Marks(0, {}, False)

        def row(item: _index.Facts, current: _index.Marks | None = None) -> VersionRow:
            """The row of a version: its facts, with the given annotations, else the indexed ones."""
            mark = current or marks.get(item.version, unmarked)
            return VersionRow(
                version=item.version,
                created=item.created,
                metrics=item.metrics,
                params=item.params,
                tags=mark.tags,
                aliases=aliases.get(item.version, frozenset()),
                yanked=mark.yanked,
                packages=item.packages,
            )

        def passes(candidate: VersionRow) -> bool:
            return not (skip_yanked and candidate.yanked) and (filter is None or filter.matches(candidate))

        if not queried:
            candidates: Iterable[int] = (
                v for v in range(newest, 0, -1) if not (skip_yanked and v in marks and marks[v].yanked)
            )
        else:
            rows = [row(item) for item in facts.values() if item.version <= newest]
            matching = [candidate for candidate in rows if passes(candidate)]
            ordered = order.sort(matching) if order else sorted(matching, key=lambda found: -found.version)
            candidates = [found.version for found in ordered]

        def confirmed(record: Record, current: Annotations) -> VersionInfo | None:
            fresh = row(
                _index.facts_of(record), _index.Marks(current.revision, current.tags, current.yanked is not None)
            )
            return VersionInfo(record, current, tuple(sorted(fresh.aliases))) if passes(fresh) else None

        return self._first(name, candidates, confirmed, limit, annotated=set(marks))

    def _annotations_of(self, name: str, versions: Iterable[int]) -> list[Annotations]:
        wanted = list(versions)
        with ThreadPoolExecutor(max_workers=min(_index.READERS, max(1, len(wanted)))) as pool:
            return list(pool.map(lambda version: self.annotations(name, version), wanted))

    def _first(
        self,
        name: str,
        candidates: Iterable[int],
        confirm: Callable[[Record, Annotations], VersionInfo | None],
        limit: int,
        *,
        annotated: set[int],
    ) -> list[VersionInfo]:
        """The first `limit` candidates that `confirm` accepts, in order, given each one's record and current
        annotations (all of a batch read at once).

        Only the `annotated` versions (those the index has an entry or a marker for) have annotations to
        read: every change creates its marker before it writes and removes it only once the index holds the
        change, so a version with neither has none (or one being written right now).
        """
        found: list[VersionInfo] = []
        pending = iter(candidates)
        with ThreadPoolExecutor(max_workers=_index.READERS) as pool:
            while len(found) < limit:
                batch = [version for _, version in zip(range(limit - len(found)), pending, strict=False)]
                if not batch:
                    break
                records = [pool.submit(self.get, name, version) for version in batch]
                annotations = [
                    pool.submit(self.annotations, name, version) if version in annotated else None for version in batch
                ]
                for version, record, current in zip(batch, records, annotations, strict=True):
                    now = current.result() if current else Annotations(name=name, version=version)
                    info = confirm(record.result(), now)
                    found += [info] if info is not None else []
        return found

    def yanked(self, name: str) -> dict[int, Annotations]:
        """The annotations of every yanked (or purged) version of `name`, read from the versions the index
        and its markers name."""
        marks, pending = _index.read_marks(self, check_name(name))
        suspects = sorted({version for version, mark in marks.items() if mark.yanked} | pending)
        found = zip(suspects, self._annotations_of(name, suspects), strict=True)
        return {version: annotations for version, annotations in found if annotations.yanked is not None}

    def reindex(self, name: str, records: Iterable[Record], *, markers_older_than: datetime) -> None:
        """Bring the index of `name` up to date with `records` (all its versions), and index again the
        annotations of versions whose writer died mid-change (markers older than `markers_older_than`)."""
        _index.rebuild(self, check_name(name), records)
        for version, marker in _index.stale_markers(self, name, markers_older_than):
            current = self.annotations(name, version)
            yanked = current.yanked is not None
            _index.note_annotations(self, name, version, current.revision, current.tags, yanked)
            _index.end_change(self, marker)
