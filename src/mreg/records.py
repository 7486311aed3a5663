"""Registry records and the record store: immutable, versioned, one object per version."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mreg.errors import InvalidInputError, NotFoundError, StorageError
from mreg.spec import MODEL_NAME_RE
from mreg.storage import local_root

SCHEMA_VERSION = 1
MAX_ATTEMPTS = 10_000


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
    name: str = Field(pattern=f"^{MODEL_NAME_RE.pattern}$")
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

    def to_json(self) -> str:
        """The record's JSON document, as `register --json` and `show --json` print it."""
        return self.model_dump_json(indent=2)


RecordFactory = Callable[[int], Record]
"""Makes the record for a version number the store allocated."""


class RecordStore(Protocol):
    """Where records live."""

    def create(self, name: str, make: RecordFactory) -> Record:
        """Allocate the next version of `name` and write `make(version)` there, never overwriting."""

    def get(self, name: str, version: int | None = None) -> Record:
        """A version of `name` (the latest when `version` is None)."""

    def versions(self, name: str, *, limit: int | None = None) -> list[Record]:
        """Records of `name`, newest first."""

    def models(self) -> list[str]:
        """Names of every model with at least one version."""


def parse_model_ref(text: str) -> tuple[str, int | None]:
    """`NAME` or `NAME:VERSION` -> (name, version or None)."""
    name, sep, version = text.partition(":")
    check_name(name)
    if not sep:
        return name, None
    if not version.isdigit() or int(version) < 1:
        raise InvalidInputError(f"{text!r}: the version after ':' must be a positive integer.")
    return name, int(version)


def check_name(name: str) -> str:
    """Refuse anything that is not a model name (it becomes part of a path or key)."""
    if not MODEL_NAME_RE.fullmatch(name) or ".." in name:
        raise InvalidInputError(f"{name!r} is not a valid model name.")
    return name


class FileRecordStore:
    """`<root>/<name>/versions/<version>.json`, created with an atomic, exclusive link; `latest` is a hint."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def create(self, name: str, make: RecordFactory) -> Record:
        versions = self._versions_dir(check_name(name))
        try:
            versions.mkdir(parents=True, exist_ok=True)
            candidate = self._latest_version(name) + 1
            for _ in range(MAX_ATTEMPTS):
                record = make(candidate)
                if self._link_new(versions, candidate, record.to_json()):
                    self._write_hint(name, candidate)
                    return record
                candidate += 1
        except OSError as exc:
            raise StorageError(f"cannot write a record under {self.root}: {exc}.") from None
        raise StorageError(f"could not allocate a version of {name} after {MAX_ATTEMPTS} attempts.")

    def get(self, name: str, version: int | None = None) -> Record:
        check_name(name)
        if version is None:
            version = self._latest_version(name)
            if version == 0:
                raise NotFoundError(f"model {name} has no versions in {self.root}.")
        return self._read(name, version)

    def versions(self, name: str, *, limit: int | None = None) -> list[Record]:
        directory = self._versions_dir(check_name(name))
        numbers = sorted(self._numbers(directory), reverse=True)[:limit]
        if not numbers:
            raise NotFoundError(f"model {name} has no versions in {self.root}.")
        return [self._read(name, number) for number in numbers]

    def models(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(entry.name for entry in self.root.iterdir() if (entry / "versions").is_dir())

    def _versions_dir(self, name: str) -> Path:
        return self.root / name / "versions"

    def _path(self, name: str, version: int) -> Path:
        return self._versions_dir(name) / f"{version:010d}.json"

    def _read(self, name: str, version: int) -> Record:
        path = self._path(name, version)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise NotFoundError(f"model {name} has no version {version} in {self.root}.") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise StorageError(f"record {path} cannot be read: {exc}.") from None
        return _validate(data, str(path))

    def _latest_version(self, name: str) -> int:
        """The hint, then forward probes: a stale hint costs one read more, a missing one a listing."""
        hint = self.root / name / "latest"
        try:
            version = int(hint.read_text().strip())
        except (FileNotFoundError, ValueError):
            version = max(self._numbers(self._versions_dir(name)), default=0)
        while self._path(name, version + 1).exists():
            version += 1
        return version

    def _write_hint(self, name: str, version: int) -> None:
        directory = self.root / name
        descriptor, temporary = tempfile.mkstemp(dir=directory, prefix=".latest-")
        with os.fdopen(descriptor, "w") as handle:
            handle.write(f"{version}\n")
        Path(temporary).replace(directory / "latest")

    @staticmethod
    def _numbers(directory: Path) -> list[int]:
        if not directory.is_dir():
            return []
        return [int(entry.stem) for entry in directory.iterdir() if entry.suffix == ".json" and entry.stem.isdigit()]

    def _link_new(self, directory: Path, version: int, text: str) -> bool:
        """Write the record to a temporary file, then link it into place: False when the version exists."""
        descriptor, temporary = tempfile.mkstemp(dir=directory, prefix=".incoming-")
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(temporary, 0o444)  # noqa: PTH101 - the temporary file is known by name only
            try:
                os.link(temporary, self._path(directory.parent.name, version))
            except FileExistsError:
                return False
            return True
        finally:
            Path(temporary).unlink(missing_ok=True)


def open_record_store(uri: str, root: Path) -> RecordStore:
    """The record store behind `uri`; a relative `file://` path resolves against `root`."""
    return FileRecordStore(local_root(uri, root))


def _validate(data: object, where: str) -> Record:
    if (
        isinstance(data, dict)
        and isinstance(data.get("schema_version"), int)
        and data["schema_version"] > SCHEMA_VERSION
    ):
        raise StorageError(
            f"record {where} has schema version {data['schema_version']}; this mreg reads version "
            f"{SCHEMA_VERSION}. Upgrade mreg."
        )
    try:
        return Record.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        key = ".".join(str(part) for part in first["loc"])
        raise StorageError(f"record {where} is not a valid record ({key}: {first['msg']}).") from None
