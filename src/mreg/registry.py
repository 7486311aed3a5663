"""The registry as serving code and the CLI use it: look records up, follow aliases, fetch models.

from mreg import Registry

registry = Registry.open("s3://models/registry")          # or Registry.from_spec("registry.toml")
record = registry.get("iris-rf@production")                # a typed Record
path = registry.download(record, "/models")                # the model file, SHA-256 checked
"""

from __future__ import annotations

import getpass
import os
import socket
from pathlib import Path

from mreg.records import Alias, ModelRef, Record, RecordStore, open_record_store, parse_model_ref
from mreg.storage import ObjectStore, Progress, object_store_for


def actor() -> str:
    """Who moves an alias: MREG_ACTOR, else GITHUB_ACTOR (in GitHub Actions), else user@host."""
    return (
        os.environ.get("MREG_ACTOR") or os.environ.get("GITHUB_ACTOR") or f"{getpass.getuser()}@{socket.gethostname()}"
    )


class Registry:
    """Records of models and the binaries they point to."""

    def __init__(self, records: RecordStore, *, storage_endpoint_url: str | None = None) -> None:
        self.records = records
        self.storage_endpoint_url = storage_endpoint_url

    @classmethod
    def open(cls, uri: str, *, endpoint_url: str | None = None, root: Path | None = None) -> Registry:
        """The registry at `uri` (`s3://bucket/prefix` or `file://PATH`, relative to `root` or the
        working directory). `endpoint_url` (else AWS_ENDPOINT_URL) serves records and model objects."""
        store = open_record_store(uri, root or Path.cwd(), endpoint_url=endpoint_url)
        return cls(store, storage_endpoint_url=endpoint_url)

    @classmethod
    def from_spec(cls, path: Path | str = "registry.toml") -> Registry:
        """The registry a spec writes to."""
        from mreg.spec import load_spec

        spec = load_spec(path)
        store = open_record_store(spec.registry.uri, spec.root, endpoint_url=spec.registry.endpoint_url)
        return cls(store, storage_endpoint_url=spec.storage.endpoint_url)

    def get(self, ref: str | ModelRef) -> Record:
        """The record `NAME`, `NAME:VERSION` or `NAME@ALIAS` names (the latest version for `NAME`)."""
        return self.records.resolve(parse_model_ref(ref) if isinstance(ref, str) else ref)

    def alias(self, name: str, alias: str) -> Alias:
        """An alias and its history."""
        return self.records.alias(name, alias)

    def move_alias(self, name: str, version: int, alias: str) -> Alias:
        """Point `name@alias` at `version`; the move is recorded with who made it and when."""
        return self.records.move_alias(name, alias, version, actor=actor())

    def delete_alias(self, name: str, alias: str) -> Alias:
        """Remove `name@alias`; its history is kept."""
        return self.records.move_alias(name, alias, None, actor=actor())

    def download(self, record: Record, destination: Path | str, *, on_progress: Progress | None = None) -> Path:
        """Fetch the record's model into `destination` (a directory, or a file path) and check its SHA-256."""
        target = Path(destination)
        if target.is_dir():
            target = target / record.model.filename
        self.object_store(record).fetch(record.model.uri, record.model.sha256, target, on_progress=on_progress)
        return target

    def object_store(self, record: Record) -> ObjectStore:
        """A store that reads the record's model object."""
        return object_store_for(record.model.uri, endpoint_url=self.storage_endpoint_url)
