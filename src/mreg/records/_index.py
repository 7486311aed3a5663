"""The version index of a model: what filters and orderings read, kept beside the records so that a query
over thousands of versions reads a few documents instead of every record.

- **Record facts** (version, creation time, metrics, params, packages) never change. They are kept in
  immutable chunks of `CHUNK` versions (`models/<name>/index/rows/<first>`) and in one mutable document of
  the newer versions (`index/tail`). A register adds its row to the tail by compare-and-swap once its record
  is written. The writer whose row completes a chunk writes the chunk (reading the record of any version
  whose row is missing: a register that died before adding it), then drops those rows from the tail; a
  chunk is written only when every version in it exists, so its content is the same whoever writes it.
- **Annotation facts** (tags, yanked) are in one mutable document (`index/annotations`), each version's
  entry carrying the revision of the annotations it reflects, so that a late update never replaces a newer
  one. Before changing a version's annotations a writer creates a marker (`index/pending/<version>-<id>`)
  and removes it once the index holds the change: the annotations of a version with a marker are read from
  the version itself, so a writer that died in between leaves a version that is re-read, never one that is
  wrongly indexed.
- A reader takes rows from the chunks and the tail, and reads the record of every version neither holds
  (newer than the index, or left out by a register that died). The index may lag behind, never lie: the
  query re-checks each result against its record and annotations.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from mreg._grammar import DocumentPath, document_path
from mreg.errors import StorageError

if TYPE_CHECKING:
    from mreg.records.model import Record
    from mreg.records.store import RecordStore

CHUNK = 1000
"""Versions per immutable chunk of rows."""
MAX_ATTEMPTS = 10_000
READERS = 16
"""Documents or records read at once."""
STAMP = "%Y%m%dT%H%M%S%fZ"
"""UTC time to the microsecond, as markers and event ids start (sortable as text)."""
_MARKER_RE = re.compile(r"(?P<version>\d{10})-(?P<stamp>\d{8}T\d{12}Z)-[0-9a-f]{16}")


@dataclass(frozen=True)
class Facts:
    """What the index knows of one version's record."""

    version: int
    created: datetime
    metrics: Mapping[str, float]
    params: Mapping[str, str]
    packages: Mapping[str, str]
    """Canonical distribution name -> version, over both images."""


@dataclass(frozen=True)
class Marks:
    """What the index knows of one version's annotations."""

    revision: int
    tags: Mapping[str, str]
    yanked: bool


def packages_of(record: Record) -> dict[str, str]:
    """Each recorded distribution (`name==version`, any image) by its canonical name."""
    from packaging.utils import canonicalize_name

    found: dict[str, str] = {}
    for pins in record.packages.values():
        for pin in pins:
            name, equals, version = pin.partition("==")
            if equals:
                found[canonicalize_name(name)] = version
    return found


def facts_of(record: Record) -> Facts:
    return Facts(
        version=record.version,
        created=record.created_at if record.created_at.tzinfo else record.created_at.replace(tzinfo=UTC),
        metrics=dict(record.metrics),
        params=dict(record.params),
        packages=packages_of(record),
    )


# Documents


def _path(name: str, *parts: str) -> DocumentPath:
    return document_path("models", name, "index", *parts)


@dataclass
class _Rows:
    """Rows by version, with the package sets they name (by a hash of their content): the body of the tail
    (with `sealed`, the last version already in chunks) and of a chunk."""

    rows: dict[int, dict[str, Any]] = field(default_factory=dict)
    packages: dict[str, dict[str, str]] = field(default_factory=dict)
    sealed: int = 0

    @classmethod
    def decode(cls, data: bytes | None, where: str) -> _Rows:
        if data is None:
            return cls()
        try:
            document = json.loads(data)
            rows = {int(row["v"]): row for row in document["rows"]}
            return cls(rows, dict(document["packages"]), int(document.get("sealed", 0)))
        except (ValueError, KeyError, TypeError) as exc:
            raise StorageError(f"the index document {where} is damaged ({exc!r}).") from exc

    def encode(self) -> bytes:
        used = {row["k"] for row in self.rows.values()}
        document = {
            "schema_version": 1,
            "sealed": self.sealed,
            "rows": [self.rows[version] for version in sorted(self.rows)],
            "packages": {key: value for key, value in self.packages.items() if key in used},
        }
        return json.dumps(document, separators=(",", ":")).encode()

    def add(self, facts: Facts) -> None:
        packages = dict(sorted(facts.packages.items()))
        key = hashlib.sha256(json.dumps(packages).encode()).hexdigest()[:16]
        self.packages[key] = packages
        self.rows[facts.version] = {
            "v": facts.version,
            "c": facts.created.isoformat(),
            "m": dict(facts.metrics),
            "p": dict(facts.params),
            "k": key,
        }

    def facts(self, where: str) -> Iterable[Facts]:
        try:
            for version, row in self.rows.items():
                yield Facts(version, datetime.fromisoformat(row["c"]), row["m"], row["p"], self.packages[row["k"]])
        except (ValueError, KeyError, TypeError) as exc:
            raise StorageError(f"the index document {where} is damaged ({exc!r}).") from exc


# Writing


def add_version(store: RecordStore, record: Record) -> None:
    """Add a version just written to the tail, then write every chunk the tail completes."""
    name, version = record.name, record.version
    path = _path(name, "tail")
    for _ in range(MAX_ATTEMPTS):
        data, token = store._read_document(path)
        tail = _Rows.decode(data, f"{store.where} {name} tail")
        if version <= tail.sealed or version in tail.rows:
            break
        tail.add(facts_of(record))
        if store._swap_document(path, tail.encode(), token):
            break
    else:
        raise StorageError(f"could not add {name}:{version} to the index after {MAX_ATTEMPTS} attempts.")
    seal(store, name)


def seal(store: RecordStore, name: str) -> None:
    """Move every complete chunk of rows from the tail into its immutable document."""
    path = _path(name, "tail")
    for _ in range(MAX_ATTEMPTS):
        data, token = store._read_document(path)
        tail = _Rows.decode(data, f"{store.where} {name} tail")
        first, last = tail.sealed + 1, tail.sealed + CHUNK
        if not tail.rows or max(tail.rows) < last:
            return
        chunk = _Rows(packages=tail.packages)
        chunk.rows = {version: tail.rows[version] for version in range(first, last + 1) if version in tail.rows}
        for facts in _read_records(store, name, [v for v in range(first, last + 1) if v not in chunk.rows]):
            chunk.add(facts)
        store._create_document(_path(name, "rows", f"{first:010d}"), chunk.encode())  # False: sealed already
        rest = {version: row for version, row in tail.rows.items() if version > last}
        store._swap_document(path, _Rows(rest, tail.packages, last).encode(), token)  # lost: look again
    raise StorageError(f"could not seal the index of {name} after {MAX_ATTEMPTS} attempts.")


def rebuild(store: RecordStore, name: str, records: Iterable[Record]) -> None:
    """Add every record given (all versions, read by `gc`) that the index lacks, replacing a damaged tail,
    then seal what the tail completes: a registry written before the index existed gets one."""
    path = _path(name, "tail")
    all_facts = [facts_of(record) for record in records]
    for _ in range(MAX_ATTEMPTS):
        data, token = store._read_document(path)
        try:
            tail = _Rows.decode(data, f"{store.where} {name} tail")
        except StorageError:
            tail = _Rows()  # a damaged tail is written again from the records
        missing = [facts for facts in all_facts if facts.version > tail.sealed and facts.version not in tail.rows]
        if not missing:
            break
        for facts in missing:
            tail.add(facts)
        if store._swap_document(path, tail.encode(), token):
            break
    seal(store, name)


def begin_change(store: RecordStore, name: str, version: int) -> DocumentPath:
    """The marker a writer creates before it changes a version's annotations."""
    stamp = datetime.now(UTC).strftime(STAMP)
    marker = _path(name, "pending", f"{version:010d}-{stamp}-{secrets.token_hex(8)}")
    store._create_document(marker, b"{}")
    return marker


def end_change(store: RecordStore, marker: DocumentPath) -> None:
    store._delete_document(marker)


def note_annotations(
    store: RecordStore, name: str, version: int, revision: int, tags: Mapping[str, str], yanked: bool
) -> None:
    """Record a version's annotations at `revision` in the index, unless it holds a newer revision."""
    path = _path(name, "annotations")
    for _ in range(MAX_ATTEMPTS):
        data, token = store._read_document(path)
        entries = _decode_entries(data, f"{store.where} {name} annotations index")
        entry = entries.get(str(version))
        if entry is not None and entry["r"] >= revision:
            return
        entries[str(version)] = {"r": revision, "t": dict(tags), "y": yanked}
        document = {"schema_version": 1, "versions": entries}
        if store._swap_document(path, json.dumps(document, separators=(",", ":")).encode(), token):
            return
    raise StorageError(f"could not index the annotations of {name}:{version} after {MAX_ATTEMPTS} attempts.")


# Reading


def read_indexed(store: RecordStore, name: str) -> dict[int, Facts]:
    """The facts the index holds: the chunks the tail says are sealed (read at once), then the tail."""
    tail = _Rows.decode(store._read_document(_path(name, "tail"))[0], f"{store.where} {name} tail")
    firsts = list(range(1, tail.sealed + 1, CHUNK))

    def chunk(first: int) -> list[Facts]:
        where = f"{store.where} {name} rows from {first}"
        return list(_Rows.decode(store._read_document(_path(name, "rows", f"{first:010d}"))[0], where).facts(where))

    facts: dict[int, Facts] = {}
    with ThreadPoolExecutor(max_workers=min(READERS, max(1, len(firsts)))) as pool:
        for found in pool.map(chunk, firsts):
            facts.update((item.version, item) for item in found)
    facts.update((item.version, item) for item in tail.facts(f"{store.where} {name} tail"))
    return facts


def complete(store: RecordStore, name: str, indexed: dict[int, Facts], latest: int) -> dict[int, Facts]:
    """The facts of every version 1..`latest`: the indexed ones, and the others read from their records."""
    facts = {version: item for version, item in indexed.items() if version <= latest}
    missing = [version for version in range(1, latest + 1) if version not in facts]
    facts.update((item.version, item) for item in _read_records(store, name, missing))
    return facts


def read_facts(store: RecordStore, name: str, latest: int) -> dict[int, Facts]:
    """The facts of every version 1..`latest`: from the chunks and the tail, else from the records."""
    return complete(store, name, read_indexed(store, name), latest)


def stale_markers(store: RecordStore, name: str, older_than: datetime) -> list[tuple[int, DocumentPath]]:
    """(version, marker) of every marker created before `older_than`: left by a writer that died."""
    return [
        (int(match["version"]), _path(name, "pending", match[0]))
        for match in _markers(store, name)
        if datetime.strptime(match["stamp"], STAMP).replace(tzinfo=UTC) < older_than
    ]


def _markers(store: RecordStore, name: str) -> list[re.Match[str]]:
    names = store._list_documents(_path(name, "pending"))
    return [match for match in map(_MARKER_RE.fullmatch, names) if match is not None]


def read_marks(store: RecordStore, name: str) -> tuple[dict[int, Marks], set[int]]:
    """The indexed annotations of every version that has any, and the versions being changed (with a
    marker), whose annotations the caller reads from the versions themselves."""
    pending = {int(match["version"]) for match in _markers(store, name)}
    data, _ = store._read_document(_path(name, "annotations"))
    entries = _decode_entries(data, f"{store.where} {name} annotations index")
    try:
        marks = {int(key): Marks(int(entry["r"]), entry["t"], bool(entry["y"])) for key, entry in entries.items()}
    except (ValueError, KeyError, TypeError) as exc:
        raise StorageError(f"the annotations index of {name} in {store.where} is damaged ({exc!r}).") from exc
    return marks, pending


def _decode_entries(data: bytes | None, where: str) -> dict[str, Any]:
    if data is None:
        return {}
    try:
        entries = json.loads(data)["versions"]
    except (ValueError, KeyError, TypeError) as exc:
        raise StorageError(f"the index document {where} is damaged ({exc!r}).") from exc
    if not isinstance(entries, dict):
        raise StorageError(f"the index document {where} is damaged (its versions are not an object).")
    return entries


def _read_records(store: RecordStore, name: str, versions: list[int]) -> list[Facts]:
    if not versions:
        return []
    with ThreadPoolExecutor(max_workers=min(READERS, len(versions))) as pool:
        return list(pool.map(lambda version: facts_of(store.get(name, version)), versions))
