"""The registry: the one read/write surface over records and the model objects they point to.

The CLI, the pipeline, the exporters and serving code all go through it; none of them opens a record store or
an object store itself.

from mreg import Registry

registry = Registry.open("s3://models/registry")          # or Registry.from_spec(load_spec("registry.toml"))
record = registry.get("iris-rf@production")                # a typed, digest-checked Record
path = registry.download(record, "/models")                # the model, SHA-256 checked
"""

from __future__ import annotations

import getpass
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mreg.errors import IntegrityError, MregError
from mreg.records import (
    Alias,
    BuiltImage,
    ModelFile,
    ModelRef,
    Record,
    RecordFactory,
    RecordStore,
    check_name,
    open_record_store,
    parse_model_ref,
)
from mreg.storage import ObjectStore, Progress, open_object_store
from mreg.storage._tree import TreeManifest
from mreg.storage.directories import fetch_tree, put_tree, verify_tree

if TYPE_CHECKING:
    from mreg.engine import Engine
    from mreg.spec import Spec


def actor() -> str:
    """Who changes the registry: MREG_ACTOR, else GITHUB_ACTOR (in GitHub Actions), else user@host."""
    return (
        os.environ.get("MREG_ACTOR") or os.environ.get("GITHUB_ACTOR") or f"{getpass.getuser()}@{socket.gethostname()}"
    )


@dataclass(frozen=True)
class Check:
    """One thing `verify` looked at."""

    subject: str
    ok: bool
    detail: str


class Registry:
    """Records of models and the binaries they point to."""

    def __init__(
        self, records: RecordStore, *, objects: ObjectStore | None = None, storage_endpoint_url: str | None = None
    ) -> None:
        self._records = records
        self._objects = objects
        self._storage_endpoint_url = storage_endpoint_url

    @property
    def where(self) -> str:
        """The record store's URI, for messages."""
        return self._records.where

    @classmethod
    def open(cls, uri: str, *, endpoint_url: str | None = None, root: Path | None = None) -> Registry:
        """The registry at `uri` (`s3://bucket/prefix`, `gs://bucket/prefix` or `file://PATH`, relative to
        `root` or the working directory). `endpoint_url` (else AWS_ENDPOINT_URL) serves records and objects.
        It reads and moves aliases; registering needs the spec's object store (`from_spec`)."""
        store = open_record_store(uri, root or Path.cwd(), endpoint_url=endpoint_url)
        return cls(store, storage_endpoint_url=endpoint_url)

    @classmethod
    def from_spec(cls, spec: Spec) -> Registry:
        """The registry a spec writes to, with its object store."""
        records = open_record_store(spec.registry.uri, spec.root, endpoint_url=spec.registry.endpoint_url)
        objects = open_object_store(spec.storage.uri, spec.root, endpoint_url=spec.storage.endpoint_url)
        return cls(records, objects=objects, storage_endpoint_url=spec.storage.endpoint_url)

    # -- reading ---------------------------------------------------------------------------------
    def get(self, ref: str | ModelRef) -> Record:
        """The record `NAME`, `NAME:VERSION` or `NAME@ALIAS` names (the latest version for `NAME`)."""
        return self._records.resolve(parse_model_ref(ref) if isinstance(ref, str) else ref)

    def versions(self, name: str, *, limit: int = 20, before: int | None = None) -> list[Record]:
        """Up to `limit` records of `name`, newest first, older than version `before` when given."""
        return self._records.versions(check_name(name), limit=limit, before=before)

    def models(self) -> list[str]:
        """Names of every model with at least one version, sorted."""
        return self._records.models()

    def aliases(self, name: str) -> list[Alias]:
        """Every alias of `name` that ever existed (deleted ones have `version` None), by alias name."""
        return self._records.aliases(check_name(name))

    def alias_history(self, name: str, alias: str) -> Alias:
        """The alias `name@alias` and every move it made."""
        return self._records.alias(name, alias)

    # -- writing ---------------------------------------------------------------------------------
    def alias(self, name: str, alias: str, version: int | None) -> Alias:
        """Point `name@alias` at `version` (None removes it; its history is kept). Each move is recorded
        with who made it and when; concurrent moves are applied one after the other."""
        return self._records.move_alias(name, alias, version, actor=actor())

    def store_model(
        self, path: Path, *, tree: TreeManifest | None = None, on_progress: Progress | None = None
    ) -> ModelFile:
        """Upload a model into the object store, content-addressed and checked once written: a file as one
        object; a directory (already scanned into `tree`, else scanned here) as one object per file not
        stored yet, then its manifest."""
        if self._objects is None:
            raise MregError(f"the registry {self.where} was opened without an object store; use Registry.from_spec.")
        if not path.is_dir():
            stored = self._objects.put_file(path, on_progress=on_progress)
            return ModelFile(uri=stored.uri, sha256=stored.sha256, size=stored.size, filename=path.name)
        put = put_tree(self._objects, path, manifest=tree, on_progress=on_progress)
        return ModelFile(
            uri=put.manifest.uri,
            sha256=put.manifest.sha256,
            size=put.size,
            filename=path.resolve().name,
            kind="directory",
            files=put.count,
            store=self._objects.uri,
        )

    def create(self, name: str, make: RecordFactory) -> Record:
        """Write the next version of `name`'s record, `make(version)`, never overwriting one."""
        return self._records.create(name, make)

    # -- models ----------------------------------------------------------------------------------
    def download(
        self,
        record: Record,
        destination: Path | str,
        *,
        overwrite: bool = False,
        on_progress: Progress | None = None,
    ) -> Path:
        """Fetch the record's model into `destination` (an existing directory, where it keeps its name, or a
        path) with every byte checked. A file replaces what is there; a directory model is published with
        one rename, replacing an existing one only with `overwrite`, and leaves nothing on failure."""
        target = Path(destination)
        if target.is_dir() and not target.is_symlink():
            target = target / _plain_name(record.model.filename)
        model = record.model
        if model.kind == "directory":
            fetch_tree(
                self._reader(record), model.uri, model.sha256, target, overwrite=overwrite, on_progress=on_progress
            )
        else:
            self._reader(record).fetch(model.uri, model.sha256, target, on_progress=on_progress)
        return target

    def verify(self, record: Record, engine: Callable[[], Engine]) -> list[Check]:
        """Check that the record's model bytes still hash to its SHA-256 (each file of a directory model,
        naming each one missing or changed) and that both images are still there, pinned by their recorded
        digests (and their tags not moved). The record's own digest was checked when it was read; `engine` is
        opened only for the images."""
        checks = [Check("record", True, f"{record.name}:{record.version} matches its digest {record.digest}")]
        checks += self._check_model(record)
        try:
            opened = engine()
        except MregError as exc:  # no engine to ask: the images are unchecked, the other checks stand
            return checks + [Check(stage, False, str(exc)) for stage in record.images]
        checks += [_check_image(opened, stage, image) for stage, image in record.images.items()]
        return checks

    def _check_model(self, record: Record) -> list[Check]:
        model = record.model
        if model.kind == "directory":
            problems = verify_tree(self._reader(record), model.uri, model.sha256)
            if problems:
                return [Check("model", False, problem) for problem in problems]
            return [Check("model", True, f"{model.files} files, {model.size} bytes, manifest sha256 {model.sha256}")]
        try:
            sha256, size = self._reader(record).digest(model.uri)
        except MregError as exc:
            return [Check("model", False, str(exc))]
        same = (sha256, size) == (model.sha256, model.size)
        found = f"{size} bytes, sha256 {sha256}"
        expected = f"{model.size} bytes, sha256 {model.sha256}"
        return [Check("model", same, found if same else f"{model.uri} holds {found}; the record says {expected}")]

    def _reader(self, record: Record) -> ObjectStore:
        """A store that reads the record's model (wherever the record says it is)."""
        where = record.model.store if record.model.kind == "directory" and record.model.store else record.model.uri
        return open_object_store(where, endpoint_url=self._storage_endpoint_url)


def _plain_name(name: str) -> str:
    """A recorded file or directory name, refused unless it is one plain path component."""
    if not name or name in {".", ".."} or "/" in name or "\\" in name or "\0" in name:
        raise IntegrityError(f"the record names its model {name!r}, which is not a plain file name.")
    return name


def _check_image(engine: Engine, stage: str, image: BuiltImage) -> Check:
    try:
        if image.image == image.digest:  # a local image, pinned by its ID
            found, tagged = engine.local_image_id(image.image), engine.local_image_id(image.ref)
            where = "in the local engine"
        else:
            found, tagged = engine.registry_digest(image.image), engine.registry_digest(image.ref)
            where = "in its registry"
    except MregError as exc:
        return Check(stage, False, str(exc))
    if found != image.digest:
        return Check(stage, False, f"{image.image} is gone {where}")
    if tagged != image.digest:
        now = f"now points to {tagged}" if tagged else "is gone"
        return Check(stage, False, f"{image.ref} {now}; the record pins {image.digest} (re-pushed or re-tagged)")
    return Check(stage, True, f"{image.image} present {where}")
