"""Registry records and the record store: immutable, versioned, one object per version, with aliases.

`RecordStore` holds the algorithms; its two backends (`file://`, `s3://`) supply a few atomic primitives:
exclusive creation of an object, a compare-and-swap of an alias, single reads. Versions are allocated by
exclusively creating `versions/<n>` (the first writer wins, the others try `n + 1`), so concurrent
registers get distinct, consecutive versions without a lock server. A `latest` hint makes the newest
version one read away; it may lag behind (a forward probe corrects it), never run ahead.
"""

from __future__ import annotations

import hashlib
import json
import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mreg.errors import IntegrityError, InvalidInputError, NotFoundError, StorageError
from mreg.names import MAX_NAME, NAME_RE, is_name

SCHEMA_VERSION = 1
MAX_ATTEMPTS = 10_000
NAME_PATTERN = f"^{NAME_RE.pattern}$"
_REF_RE = re.compile(r"(?P<name>[^:@]+)(?::(?P<version>[^:@]*)|@(?P<alias>[^:@]*))?")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ModelFile(_Frozen):
    uri: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)
    filename: str


class ImageRecord(_Frozen):
    ref: str
    image: str
    digest: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")


class GitInfo(_Frozen):
    commit: str
    dirty: bool


class OnnxInfo(_Frozen):
    """What an ONNX model declares, and the runtime that was checked to load it."""

    ir_version: int
    opsets: dict[str, int]
    """Operator set domain (`ai.onnx` for the default one) -> version."""
    producer: str
    runtime: str | None = None
    """`onnxruntime <version>` of the serve image, once it loaded the model."""


class Record(_Frozen):
    """One immutable version of a model: its binary, its images and the packages they hold."""

    schema_version: Literal[1] = 1
    name: str = Field(pattern=NAME_PATTERN, max_length=MAX_NAME)
    version: int = Field(ge=1)
    model: ModelFile
    images: dict[Literal["train", "serve"], ImageRecord]
    packages: dict[Literal["shared", "train", "serve"], list[str]]
    python: str
    """The Python version both images run (read from them by the skew guard)."""
    spec_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    created_at: datetime
    git: GitInfo | None
    onnx: OnnxInfo | None = None
    """For an ONNX model: its IR version, opsets and producer, and the serve runtime that loaded it."""
    digest: str | None = Field(default=None, pattern=r"^sha256:[0-9a-f]{64}$")
    """SHA-256 of the record's own content (everything but this field), set when the store writes it."""

    def to_json(self) -> str:
        """The record's JSON document, as `register --json` and `show --json` print it."""
        return self.model_dump_json(indent=2)

    def content_digest(self) -> str:
        """`sha256:<hex>` of the canonical JSON of every field but `digest`."""
        canonical = json.dumps(self.model_dump(mode="json", exclude={"digest"}), sort_keys=True, separators=(",", ":"))
        return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()

    def sealed(self) -> Record:
        """This record with its content digest set."""
        return self.model_copy(update={"digest": self.content_digest()})


class AliasEvent(_Frozen):
    """One move of an alias: from `previous` to `version` (None: deleted), by whom and when."""

    version: int | None
    previous: int | None
    by: str
    at: datetime


class Alias(_Frozen):
    """An alias of a model and every move it made."""

    schema_version: Literal[1] = 1
    name: str = Field(pattern=NAME_PATTERN, max_length=MAX_NAME)
    alias: str = Field(pattern=NAME_PATTERN, max_length=MAX_NAME)
    version: int | None
    history: list[AliasEvent]


@dataclass(frozen=True)
class ModelRef:
    """`NAME`, `NAME:VERSION` or `NAME@ALIAS`."""

    name: str
    version: int | None = None
    alias: str | None = None

    def __str__(self) -> str:
        if self.alias:
            return f"{self.name}@{self.alias}"
        return f"{self.name}:{self.version}" if self.version else self.name


def parse_model_ref(text: str) -> ModelRef:
    """Parse `NAME`, `NAME:VERSION` or `NAME@ALIAS`; names and aliases are checked (they become keys)."""
    match = _REF_RE.fullmatch(text)
    if match is None:
        raise InvalidInputError(f"{text!r} is not NAME, NAME:VERSION or NAME@ALIAS.")
    name = check_name(match["name"])
    if match["alias"] is not None:
        return ModelRef(name, alias=check_name(match["alias"], "alias"))
    if match["version"] is not None:
        if not match["version"].isdigit() or int(match["version"]) < 1:
            raise InvalidInputError(f"{text!r}: the version after ':' must be a positive integer.")
        return ModelRef(name, version=int(match["version"]))
    return ModelRef(name)


def check_name(name: str, what: str = "model name") -> str:
    """Refuse anything that is not a model (or alias) name: it becomes part of a path or key."""
    if not is_name(name):
        raise InvalidInputError(f"{name!r} is not a valid {what}.")
    return name


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


def decode_record(data: bytes, where: str) -> Record:
    """A stored record, refused with a message naming it when damaged, from a newer mreg, or edited."""
    payload = _decode(data, where, "record")
    try:
        record = Record.model_validate(payload)
    except ValidationError as exc:
        raise StorageError(f"record {where} is not a valid record ({_first_error(exc)}).") from None
    if record.digest is None or record.digest != record.content_digest():
        raise IntegrityError(
            f"record {where} was changed after it was written: its content hashes to {record.content_digest()}, "
            f"it says {record.digest}."
        )
    return record


def decode_alias(data: bytes, where: str) -> Alias:
    """A stored alias document, refused with a message naming it when damaged or from a newer mreg."""
    try:
        return Alias.model_validate(_decode(data, where, "alias"))
    except ValidationError as exc:
        raise StorageError(f"alias {where} is not a valid alias document ({_first_error(exc)}).") from None


def _decode(data: bytes, where: str, what: str) -> Any:
    try:
        payload = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StorageError(f"{what} {where} cannot be read: {exc}.") from None
    version = payload.get("schema_version") if isinstance(payload, dict) else None
    if isinstance(version, int) and version > SCHEMA_VERSION:
        raise StorageError(
            f"{what} {where} has schema version {version}; this mreg reads version {SCHEMA_VERSION}. Upgrade mreg."
        )
    return payload


def _first_error(exc: ValidationError) -> str:
    first = exc.errors(include_url=False)[0]
    return f"{'.'.join(str(part) for part in first['loc'])}: {first['msg']}"


def open_record_store(uri: str, root: Path, *, endpoint_url: str | None = None) -> RecordStore:
    """The record store behind `uri` (`file://PATH`, relative to `root`, or `s3://bucket/prefix`)."""
    if uri.startswith("s3://"):
        from mreg.records.s3 import S3RecordStore
        from mreg.s3 import store_location

        return S3RecordStore(store_location(uri), endpoint_url=endpoint_url)
    from mreg.records.file import FileRecordStore
    from mreg.storage import local_root

    return FileRecordStore(local_root(uri, root))
