"""The record model: one immutable, digest-sealed version of a model, its aliases, and how they are named.

`decode_record` and `decode_alias` read stored documents back, refusing damaged, newer or edited ones.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mreg._grammar import KEY_RE, MAX_NAME, NAME_RE, is_name
from mreg.engine import BuiltImage
from mreg.errors import IntegrityError, InvalidInputError, StorageError

SCHEMA_VERSION = 1
NAME_PATTERN = f"^{NAME_RE.pattern}$"
MAX_ENTRIES = 256
"""The most metrics, params or tags one version may have."""
MAX_TEXT = 1024
"""The longest param or tag value, in characters."""
MAX_URI = 2048
"""The longest dataset URI or run URL, in characters."""
MAX_DATASETS = 64
_REF_RE = re.compile(r"(?P<name>[^:@]+)(?::(?P<version>[^:@]*)|@(?P<alias>[^:@]*))?")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ModelFile(_Frozen):
    """The model's bytes: one file, or a directory stored as one object per file plus a manifest.

    Fields added after the first records (`kind`, `files`, `store`) are left out of a file model's document,
    so records written before keep their digests.
    """

    uri: str
    """The file's object, or the directory's manifest object."""
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    """The file's SHA-256, or the manifest's (which binds every path, size, hash and executable bit)."""
    size: int = Field(ge=0)
    """Bytes in all (every file of a directory)."""
    filename: str
    """The file's or the directory's name; a download keeps it."""
    kind: Literal["file", "directory"] = Field(default="file", exclude_if=lambda kind: kind == "file")
    files: int | None = Field(default=None, ge=1, exclude_if=lambda files: files is None)
    """Number of files of a directory model."""
    store: str | None = Field(default=None, exclude_if=lambda store: store is None)
    """The object store holding a directory model's files (found there by their SHA-256)."""


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
    path: str | None = Field(default=None, exclude_if=lambda path: path is None)
    """In a directory model (e.g. with external data): the ONNX file's path inside it."""


Key = Annotated[str, Field(pattern=f"^{KEY_RE.pattern}$")]
"""A metric, param or tag key."""
Text = Annotated[str, Field(max_length=MAX_TEXT)]


class Dataset(_Frozen):
    """Data the model was trained on: a URI and, when known, the SHA-256 of its content."""

    uri: str = Field(max_length=MAX_URI)
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$", exclude_if=lambda sha256: sha256 is None)


class ServingContract(_Frozen):
    """How the serve image's server is run (the spec's `[stages.serve]` port and health path), recorded so
    that serving a version needs no spec. The model is mounted read-only at `/mnt/models`."""

    port: int = Field(default=8080, ge=1, le=65535)
    """The default of PORT, the port the server listens on."""
    health: str | None = Field(default=None, pattern=r"^/[A-Za-z0-9\-._~!$&'()*+,;=:@%/?]{0,1023}$")
    """An HTTP path that answers 2xx once the server is ready (None: an open port is ready)."""


class Record(_Frozen):
    """One immutable version of a model: its binary, its images and the packages they hold."""

    schema_version: Literal[1] = 1
    name: str = Field(pattern=NAME_PATTERN, max_length=MAX_NAME)
    version: int = Field(ge=1)
    model: ModelFile
    images: dict[Literal["train", "serve"], BuiltImage]
    packages: dict[Literal["shared", "train", "serve"], list[str]]
    python: str
    """The Python version both images run (read from them by the skew guard)."""
    spec_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    created_at: datetime
    git: GitInfo | None
    onnx: OnnxInfo | None = None
    """For an ONNX model: its IR version, opsets and producer, and the serve runtime that loaded it."""
    metrics: dict[Key, Annotated[float, Field(allow_inf_nan=False)]] = Field(
        default_factory=dict, max_length=MAX_ENTRIES, exclude_if=lambda metrics: not metrics
    )
    """Numbers the training run measured (accuracy, loss, ...), given at register time."""
    params: dict[Key, Text] = Field(default_factory=dict, max_length=MAX_ENTRIES, exclude_if=lambda params: not params)
    """The training run's parameters, as text."""
    datasets: list[Dataset] = Field(
        default_factory=list, max_length=MAX_DATASETS, exclude_if=lambda datasets: not datasets
    )
    """The data the model was trained on (its lineage)."""
    run_url: str | None = Field(default=None, max_length=MAX_URI, exclude_if=lambda url: url is None)
    """The training run's page (a CI run, an experiment tracker)."""
    base_image: str | None = Field(default=None, exclude_if=lambda image: image is None)
    """The image both stages were built from."""
    serving: ServingContract | None = Field(default=None, exclude_if=lambda serving: serving is None)
    """The serving contract of the serve image (None in records written before mreg recorded it)."""
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


def decode_record(data: bytes, where: str) -> Record:
    """A stored record, refused with a message naming it when damaged, from a newer mreg, or edited."""
    payload = _decode(data, where, "record")
    try:
        record = Record.model_validate(payload)
    except ValidationError as exc:
        raise StorageError(f"record {where} is not a valid record ({_first_error(exc)}).") from exc
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
        raise StorageError(f"alias {where} is not a valid alias document ({_first_error(exc)}).") from exc


def _decode(data: bytes, where: str, what: str) -> Any:
    try:
        payload = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StorageError(f"{what} {where} cannot be read: {exc}.") from exc
    version = payload.get("schema_version") if isinstance(payload, dict) else None
    if isinstance(version, int) and version > SCHEMA_VERSION:
        raise StorageError(
            f"{what} {where} has schema version {version}; this mreg reads version {SCHEMA_VERSION}. Upgrade mreg."
        )
    return payload


def _first_error(exc: ValidationError) -> str:
    first = exc.errors(include_url=False)[0]
    return f"{'.'.join(str(part) for part in first['loc'])}: {first['msg']}"
