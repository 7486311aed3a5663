"""The record-store algorithms, written once over a backend's few atomic primitives.

A backend (`file://`, `s3://`, `gs://`) supplies exclusive creation of an object, a compare-and-swap of an
alias, single reads. Versions are allocated by exclusively creating `versions/<n>` (the first writer wins,
the others try `n + 1`), so concurrent registers get distinct, consecutive versions without a lock server.
A `latest` hint makes the newest version one read away; it may lag behind (a forward probe corrects it),
never run ahead.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from mreg.errors import NotFoundError, StorageError
from mreg.records.model import (
    Alias,
    AliasEvent,
    ModelRef,
    Record,
    check_name,
    decode_alias,
    decode_record,
)

MAX_ATTEMPTS = 10_000


RecordFactory = Callable[[int], Record]
"""Makes the record for a version number the store allocated."""


class RecordStore(ABC):
    """Records and aliases of models, over a backend's atomic primitives."""

    where: str
    """The store's URI, for messages."""

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

    # -- the algorithms --------------------------------------------------------------------------
    def create(self, name: str, make: RecordFactory) -> Record:
        """Allocate the next version of `name` and write `make(version)` there, never overwriting."""
        check_name(name)
        candidate = self.latest_version(name) + 1
        for _ in range(MAX_ATTEMPTS):
            record = make(candidate).sealed()
            if self._create(name, candidate, record.to_json().encode()):
                self._write_hint(name, candidate)
                return record
            candidate += 1
        raise StorageError(f"could not allocate a version of {name} in {self.where} after {MAX_ATTEMPTS} attempts.")

    def get(self, name: str, version: int | None = None) -> Record:
        """A version of `name` (the latest when `version` is None)."""
        check_name(name)
        if version is None:
            version = self.latest_version(name)
            if version == 0:
                raise NotFoundError(f"model {name} has no versions in {self.where}.")
        data = self._read(name, version)
        if data is None:
            raise NotFoundError(f"model {name} has no version {version} in {self.where}.")
        return decode_record(data, f"{self.where} {name}:{version}")

    def resolve(self, ref: ModelRef) -> Record:
        """The record `ref` names: by version, by alias (two reads), or the latest."""
        if ref.alias is None:
            return self.get(ref.name, ref.version)
        alias = self.alias(ref.name, ref.alias)
        if alias.version is None:
            raise NotFoundError(f"alias {ref} was deleted (see `mreg alias {ref.name} --history {ref.alias}`).")
        return self.get(ref.name, alias.version)

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
