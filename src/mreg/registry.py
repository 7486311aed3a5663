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
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mreg.errors import IntegrityError, InvalidInputError, MregError, NotFoundError, StorageError
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
from mreg.records._annotations import (
    Annotations,
    Purge,
    describe_edit,
    purge_edit,
    tag_edit,
    unyank_edit,
    yank_edit,
)
from mreg.records._cache import registry_cache
from mreg.records._diff import VersionDiff, diff_records
from mreg.records._events import Event, emit, read_events
from mreg.records._metadata import MAX_DESCRIPTION, check_key, check_text
from mreg.records.store import VersionInfo
from mreg.storage import ListedObject, ObjectStore, Progress, open_object_store
from mreg.storage._tree import TreeWalk
from mreg.storage.directories import fetch_tree, put_tree, read_manifest, verify_tree
from mreg.storage.file import file_uri_path

if TYPE_CHECKING:
    from mreg.engine import Engine
    from mreg.provenance._keys import SigningKey, TrustedKey
    from mreg.provenance.attestation import SignatureStatus, Trust
    from mreg.provenance.statement import Statement
    from mreg.records._filter import Filter, Order
    from mreg.spec import Spec

GRACE = timedelta(hours=24)
"""How old an unreferenced object must be before `gc` deletes it: older than any register still running."""


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


@dataclass(frozen=True)
class GcReport:
    """What `gc` deleted (or, in a dry run, would delete) and what it kept."""

    dry_run: bool
    deleted: list[ListedObject]
    """Objects no record references, older than the grace period."""
    young: list[ListedObject]
    """Objects no record references yet, kept for the grace period (a register may be writing its record)."""
    referenced: int
    """Objects kept because a record references them."""
    purged: list[str]
    """`NAME:VERSION` of each yanked version whose objects were released."""


class Registry:
    """Records of models and the binaries they point to."""

    def __init__(
        self,
        records: RecordStore,
        *,
        objects: ObjectStore | None = None,
        storage_endpoint_url: str | None = None,
        trust: Trust | None = None,
    ) -> None:
        self._records = records
        self._objects = objects
        self._storage_endpoint_url = storage_endpoint_url
        self._trust = trust

    @property
    def trusted_keys(self) -> tuple[TrustedKey, ...]:
        """The keys this registry's reads trust (none when it was opened without a trust)."""
        return self._trust.keys if self._trust is not None else ()

    @property
    def where(self) -> str:
        """The record store's URI, for messages."""
        return self._records.where

    @classmethod
    def open(
        cls, uri: str, *, endpoint_url: str | None = None, root: Path | None = None, trust: Trust | None = None
    ) -> Registry:
        """The registry at `uri` (`s3://bucket/prefix`, `gs://bucket/prefix` or `file://PATH`, relative to
        `root` or the working directory). `endpoint_url` (else AWS_ENDPOINT_URL) serves records and objects.
        It reads and moves aliases; registering needs the spec's object store (`from_spec`). With `trust`,
        every `get` checks signatures (see `get`)."""
        store = open_record_store(uri, root or Path.cwd(), endpoint_url=endpoint_url)
        store.cache = registry_cache(store.where, endpoint_url=endpoint_url)
        return cls(store, storage_endpoint_url=endpoint_url, trust=trust)

    @classmethod
    def from_spec(cls, spec: Spec, *, trust: Trust | None = None) -> Registry:
        """The registry a spec writes to, with its object store."""
        records = open_record_store(spec.registry.uri, spec.root, endpoint_url=spec.registry.endpoint_url)
        records.cache = registry_cache(records.where, endpoint_url=spec.registry.endpoint_url)
        objects = open_object_store(spec.storage.uri, spec.root, endpoint_url=spec.storage.endpoint_url)
        return cls(records, objects=objects, storage_endpoint_url=spec.storage.endpoint_url, trust=trust)

    # -- reading ---------------------------------------------------------------------------------
    def get(
        self,
        ref: str | ModelRef,
        *,
        fresh: bool = False,
        trusted_keys: Sequence[TrustedKey] | Path | str | None = None,
    ) -> Record:
        """The record `NAME`, `NAME:VERSION` or `NAME@ALIAS` names: for `NAME`, the latest version that is not
        yanked; an exact version or an alias resolves whether yanked or not (see `annotations`). A record of
        an S3 or GCS registry is kept in a local cache by its digest (aliases and annotations never are);
        `fresh` reads the store's own copy.

        With `trusted_keys` (keys, or a trusted-keys file), the record must carry a signature by one of them
        over a statement of exactly this record, else IntegrityError; without, the registry's own trust (if
        it was opened with one) applies."""
        record = self._records.resolve(parse_model_ref(ref) if isinstance(ref, str) else ref, fresh=fresh)
        trust = self._trust if trusted_keys is None else _required_trust(trusted_keys)
        if trust is not None and trust.active:
            from mreg.provenance.attestation import enforce

            enforce(record, self.signatures(record, trust.keys), trust)
        return record

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
        with who made it and when; concurrent moves are applied one after the other. A yanked version is
        refused."""
        if version is not None:
            yanked = self._records.annotations(name, version).yanked
            if yanked is not None:
                raise InvalidInputError(
                    f"{name}:{version} is yanked ({yanked.reason}); unyank it before pointing {name}@{alias} at it."
                )
        moved = self._records.move_alias(name, alias, version, actor=actor())
        data = {"name": name, "alias": alias, "version": moved.version, "previous": moved.history[-1].previous}
        self._emit("io.mreg.alias.moved", f"{name}@{alias}", data)
        return moved

    def store_model(
        self, path: Path, *, tree: TreeWalk | None = None, on_progress: Progress | None = None
    ) -> ModelFile:
        """Upload a model into the object store, content-addressed and checked once written: a file as one
        object; a directory (already checked by `walk_tree` into `tree`, else checked here) as one object per
        file not stored yet, then its manifest."""
        if self._objects is None:
            raise MregError(f"the registry {self.where} was opened without an object store; use Registry.from_spec.")
        if not path.is_dir():
            stored = self._objects.put_file(path, on_progress=on_progress)
            return ModelFile(uri=stored.uri, sha256=stored.sha256, size=stored.size, filename=path.name)
        put = put_tree(self._objects, path, walked=tree, on_progress=on_progress)
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
        """Write the next version of `name`'s record, `make(version)`, never overwriting one, then its event."""
        record = self._records.create(name, make)
        model = {"uri": record.model.uri, "sha256": record.model.sha256, "size": record.model.size}
        data = {"name": name, "version": record.version, "digest": record.digest, "model": model}
        self._emit("io.mreg.version.registered", f"{name}:{record.version}", data)
        return record

    # -- annotations -----------------------------------------------------------------------------
    def annotations(self, ref: str | ModelRef | Record) -> Annotations:
        """The tags, description and yank state of a version (a record, or the version `ref` names), with
        every change made to them."""
        record = ref if isinstance(ref, Record) else self.get(ref)
        return self._records.annotations(record.name, record.version)

    def tag(
        self,
        ref: str | ModelRef,
        *,
        set: Mapping[str, str] | None = None,
        delete: Iterable[str] = (),
    ) -> Annotations:
        """Set tags (`KEY=VALUE`) and delete tags of a version; concurrent changes are all applied."""
        record = self.get(ref)
        where = f"{record.name}:{record.version}"
        added, deleted = dict(set or {}), list(delete)
        if not added and not deleted:
            raise InvalidInputError(f"{where}: give tags to set (KEY=VALUE) or to delete (--delete KEY).")
        for key, value in added.items():
            check_text(value, f"tag {check_key(key, 'tag', where)!r}", where)
        for key in deleted:
            if key in added:
                raise InvalidInputError(f"{where}: tag {check_key(key, 'tag', where)!r} is both set and deleted.")
        before, after = self._records.annotate(
            record.name, record.version, tag_edit(where, added, deleted, by=actor(), at=datetime.now(UTC))
        )
        if after is not before:
            changed = {key: value for key, value in after.tags.items() if before.tags.get(key) != value}
            data = {"name": record.name, "version": record.version, "set": changed, "deleted": deleted}
            self._emit("io.mreg.version.tagged", where, data)
        return after

    def describe(self, ref: str | ModelRef, text: str) -> Annotations:
        """Replace a version's description (an empty text removes it)."""
        record = self.get(ref)
        where = f"{record.name}:{record.version}"
        check_text(text, "the description", where, limit=MAX_DESCRIPTION, lines=True)
        edit = describe_edit(text, by=actor(), at=datetime.now(UTC))
        before, after = self._records.annotate(record.name, record.version, edit)
        if after is not before:
            data = {"name": record.name, "version": record.version, "description": after.description}
            self._emit("io.mreg.version.described", where, data)
        return after

    def yank(self, ref: str | ModelRef, reason: str, *, force: bool = False) -> Annotations:
        """Yank a version, as PEP 592 yanks a release: it stays (its number is never reused), `NAME` and
        `find` skip it, and no alias may move to it. A version an alias points to needs `force`, and the
        aliases are recorded with the yank."""
        record = self.get(ref)
        where = f"{record.name}:{record.version}"
        if not reason.strip():
            raise InvalidInputError(f"{where}: a yank needs a reason (--reason TEXT).")
        check_text(reason, "the reason", where)
        pointing = [alias.alias for alias in self.aliases(record.name) if alias.version == record.version]
        if pointing and not force:
            names = ", ".join(f"{record.name}@{alias}" for alias in pointing)
            raise InvalidInputError(f"{where} is where {names} points; move the alias first, or yank it with --force.")
        edit = yank_edit(where, reason, pointing, by=actor(), at=datetime.now(UTC))
        _, after = self._records.annotate(record.name, record.version, edit)
        data = {"name": record.name, "version": record.version, "reason": reason, "aliases": pointing}
        self._emit("io.mreg.version.yanked", where, data)
        return after

    def unyank(self, ref: str | ModelRef) -> Annotations:
        """Make a yanked version usable again (not one that `gc` purged)."""
        record = self.get(ref)
        where = f"{record.name}:{record.version}"
        edit = unyank_edit(where, by=actor(), at=datetime.now(UTC))
        _, after = self._records.annotate(record.name, record.version, edit)
        self._emit("io.mreg.version.unyanked", where, {"name": record.name, "version": record.version})
        return after

    # -- finding and comparing -------------------------------------------------------------------
    def find(
        self,
        name: str,
        filter: str | Filter | None = None,
        order_by: str | Order | None = None,
        *,
        limit: int = 20,
        include_yanked: bool = False,
        before: int | None = None,
    ) -> list[VersionInfo]:
        """Up to `limit` versions of `name` that pass `filter` (the `mreg list --filter` language), in
        `order_by` (`FIELD [asc|desc]`; newest first by default), older than `before` when given. Yanked
        versions are left out unless `include_yanked` or the filter asks about `yanked`. Each result is
        checked against its record and annotations as they are now."""
        from mreg.records._filter import parse_filter, parse_order

        parsed = parse_filter(filter) if isinstance(filter, str) else filter
        order = parse_order(order_by) if isinstance(order_by, str) else order_by
        return self._records.find(
            check_name(name), filter=parsed, order=order, limit=limit, include_yanked=include_yanked, before=before
        )

    def diff(self, a: str | ModelRef, b: str | ModelRef) -> VersionDiff:
        """What changed from version `a` to version `b`: packages per image, images, metrics, and more."""
        return diff_records(self.get(a), self.get(b))

    def events(self, name: str | None = None, since: datetime | None = None) -> list[Event]:
        """The registry's events (of model `name`, at or after `since`), oldest first."""
        return read_events(self._records, name=check_name(name) if name else None, since=since)

    def _emit(self, type_: str, subject: str | None, data: dict[str, Any]) -> Event:
        try:
            return emit(self._records, type_, subject, data)
        except MregError as exc:
            raise StorageError(
                f"{subject or 'the registry'} was changed, but its {type_} event could not be written: {exc}"
            ) from exc

    # -- provenance ------------------------------------------------------------------------------
    def attest(
        self,
        record: Record,
        *,
        predicate: dict[str, Any],
        sboms: Mapping[str, bytes],
        key: SigningKey | None = None,
        model_bundle: bytes | None = None,
    ) -> bytes:
        """Store each image's SBOM (content-addressed) and the in-toto statement of `record` (its record,
        model, image and SBOM digests, with the SLSA `predicate`) beside it, signed by `key` when given, and
        the model's OpenSSF model-signing bundle when given; the statement's bytes. Nothing is written inside
        the record."""
        from mreg.provenance.attestation import record_subjects
        from mreg.provenance.statement import build_statement
        from mreg.records._provenance import put_model_bundle, put_sbom, put_statement

        digests = {stage: put_sbom(self._records, record.name, document) for stage, document in sboms.items()}
        statement = build_statement(subjects=record_subjects(record, digests), predicate=predicate)
        put_statement(self._records, record.name, record.version, statement)
        if model_bundle is not None:
            put_model_bundle(self._records, record.name, record.version, model_bundle)
        if key is not None:
            self._add_signature(record, statement, key)
        return statement

    def model_bundle(self, record: Record) -> bytes:
        """The OpenSSF model-signing bundle registered with `record`'s model (`register --model-signature`)."""
        from mreg.records._provenance import read_model_bundle

        bundle = read_model_bundle(self._records, record.name, record.version)
        if bundle is None:
            raise NotFoundError(
                f"{record.name}:{record.version} has no model-signing bundle (register it with --model-signature)."
            )
        return bundle

    def sign(self, ref: str | ModelRef | Record, key: SigningKey) -> bool:
        """Sign the stored statement of a version with `key` (a second party, or a record registered without
        a key), after checking that it is the statement of exactly that record; False when `key` signed it
        already."""
        from mreg.provenance.attestation import statement_problems
        from mreg.provenance.statement import parse_statement

        if not isinstance(ref, Record):
            ref = self._records.resolve(parse_model_ref(ref) if isinstance(ref, str) else ref, fresh=True)
        record = ref
        statement = self._stored_statement(record)
        problems = statement_problems(record, parse_statement(statement))
        if problems:
            raise IntegrityError(
                f"{record.name}:{record.version}: its stored statement is not of this record ({problems[0]}); "
                "refusing to sign it."
            )
        return self._add_signature(record, statement, key)

    def push_attestations(self, record: Record, keyid: str) -> list[str]:
        """Push the envelope `keyid` signed of `record` to each of its pushed images' OCI registries as a
        cosign attestation (`sha256-<digest>.att`); the attestations' references."""
        from mreg.provenance.oci import push_attestation
        from mreg.records._provenance import read_envelope

        envelope = read_envelope(self._records, record.name, record.version, keyid)
        pushed = [image for _, image in sorted(record.images.items()) if image.image != image.digest]
        if not pushed:
            raise InvalidInputError(
                f"{record.name}:{record.version}: its images are local only; build with --push to attest them."
            )
        return [push_attestation(image.image, envelope) for image in pushed]

    def signatures(self, record: Record, trusted_keys: Sequence[TrustedKey] = ()) -> SignatureStatus:
        """What the signatures stored beside `record` prove, checked against `trusted_keys` now (without keys:
        only which key ids claim to have signed)."""
        from mreg.provenance.attestation import check_signatures
        from mreg.records._provenance import read_envelopes

        envelopes = read_envelopes(self._records, record.name, record.version)
        return check_signatures(record, envelopes, trusted_keys, at=datetime.now(UTC))

    def statement(self, record: Record) -> Statement:
        """The stored (unverified) statement of `record`; `signatures` says whether a trusted key signed it."""
        from mreg.provenance.statement import parse_statement

        return parse_statement(self._stored_statement(record))

    def sbom(self, ref: str | ModelRef | Record, stage: str) -> bytes:
        """The CycloneDX SBOM of a version's `stage` image, checked against the digest its statement names
        (the signed statement, refused as `get` refuses, when the registry checks signatures)."""
        from mreg.provenance.attestation import enforce, sbom_digests
        from mreg.records._provenance import read_sbom

        if not isinstance(ref, Record):
            ref = self._records.resolve(parse_model_ref(ref) if isinstance(ref, str) else ref)
        record = ref
        where = f"{record.name}:{record.version}"
        if stage not in record.images:
            raise InvalidInputError(f"{where} has no {stage} image.")
        trusted = None
        if self._trust is not None and self._trust.active:  # one read of the signatures: checked, then used
            status = self.signatures(record, self._trust.keys)
            enforce(record, status, self._trust)
            trusted = status.statement
        digest = sbom_digests(trusted or self.statement(record), [stage]).get(stage)
        if digest is None:
            raise NotFoundError(f"{where}: its statement names no SBOM of the {stage} image.")
        return read_sbom(self._records, record.name, digest, where)

    def _stored_statement(self, record: Record) -> bytes:
        from mreg.records._provenance import read_statement

        statement = read_statement(self._records, record.name, record.version)
        if statement is None:
            raise NotFoundError(
                f"{record.name}:{record.version} has no provenance statement in {self.where} "
                "(it was registered by an mreg without provenance)."
            )
        return statement

    def _add_signature(self, record: Record, statement: bytes, key: SigningKey) -> bool:
        from mreg.provenance.dsse import sign_envelope
        from mreg.provenance.statement import PAYLOAD_TYPE
        from mreg.records._provenance import put_envelope

        envelope = sign_envelope(statement, PAYLOAD_TYPE, key)
        added = put_envelope(self._records, record.name, record.version, key.keyid, envelope)
        if added:
            data = {"name": record.name, "version": record.version, "keyid": key.keyid}
            self._emit("io.mreg.version.signed", f"{record.name}:{record.version}", data)
        return added

    # -- garbage collection ----------------------------------------------------------------------
    def gc(
        self,
        *,
        dry_run: bool = False,
        grace: timedelta = GRACE,
        purge_yanked_older_than: timedelta | None = None,
    ) -> GcReport:
        """Mark and sweep the object store: delete every object that no record references and that is older
        than `grace` (so that a register running meanwhile, whose record is not written yet, keeps its
        model). With `purge_yanked_older_than`, versions yanked longer ago are purged first: marked so in
        their annotations (their records stay) and their objects no longer referenced. Also brings each
        model's version index up to date."""
        objects = self._require_objects()
        if grace < timedelta(0) or (purge_yanked_older_than is not None and purge_yanked_older_than < timedelta(0)):
            raise InvalidInputError("gc: durations cannot be negative.")
        now = datetime.now(UTC)
        yanked_before = None if purge_yanked_older_than is None else now - purge_yanked_older_than
        listed = objects.list_objects()  # before marking: what a register uploads from now on is young
        referenced: set[str] = set()
        purged: list[str] = []
        for name in self._records.models():
            records = self._all_records(name)
            yanked = self._records.yanked(name)
            for record in records:
                state = yanked.get(record.version)
                if state is not None and _due(state, yanked_before):
                    state = state.changed([], purged=Purge(by=actor(), at=now)) if dry_run else self._purge(record)
                    purged += [f"{name}:{record.version}"] if state.purged else []
                if state is None or state.purged is None:
                    referenced |= self._referenced_objects(record)
            if not dry_run:
                self._records.reindex(name, records, markers_older_than=now - grace)
        report = self._sweep(listed, referenced, now - grace, dry_run=dry_run, purged=purged)
        if not dry_run and (report.deleted or purged):
            data = {"deleted": len(report.deleted), "bytes": sum(o.size for o in report.deleted), "purged": purged}
            self._emit("io.mreg.gc.swept", None, data)
        return report

    def _purge(self, record: Record) -> Annotations:
        """Mark a yanked version purged (left as it is when it was unyanked meanwhile)."""
        edit = purge_edit(by=actor(), at=datetime.now(UTC))
        return self._records.annotate(record.name, record.version, edit)[1]

    def _sweep(
        self, listed: list[ListedObject], referenced: set[str], cutoff: datetime, *, dry_run: bool, purged: list[str]
    ) -> GcReport:
        objects = self._require_objects()
        kept = {_normal(uri) for uri in referenced}
        unreferenced = [found for found in listed if _normal(found.uri) not in kept]
        old = [found for found in unreferenced if found.modified < cutoff]
        deleted = old if dry_run else [found for found in old if objects.delete(found.uri, unless_newer_than=cutoff)]
        gone = {found.uri for found in deleted}
        young = [found for found in unreferenced if found.uri not in gone]
        return GcReport(dry_run, deleted, young, len(listed) - len(unreferenced), purged)

    def _all_records(self, name: str) -> list[Record]:
        latest = self._records.latest_version(name)
        with ThreadPoolExecutor(max_workers=16) as pool:
            return list(pool.map(lambda version: self._records.get(name, version, fresh=True), range(1, latest + 1)))

    def _referenced_objects(self, record: Record) -> set[str]:
        """The objects of this registry's object store that a record needs: its model object and the content
        address that finds it; for a directory model, those of its manifest and of every file in it."""
        objects = self._require_objects()
        model = record.model
        found = set(objects.references(model.uri, model.sha256))
        if model.kind == "directory":
            reader = self._reader(record)
            for entry in {
                entry.sha256: entry for entry in read_manifest(reader, model.uri, model.sha256).files
            }.values():
                located = reader.find(entry.sha256, entry.size)
                if located is not None:
                    found |= set(objects.references(located, entry.sha256))
        return found

    def _require_objects(self) -> ObjectStore:
        if self._objects is None:
            raise MregError(f"the registry {self.where} was opened without an object store; use Registry.from_spec.")
        return self._objects

    def _purged_checks(self, record: Record) -> list[Check]:
        """For a version `gc` purged, what `verify` reports instead of a model it would find gone."""
        purged = self._records.annotations(record.name, record.version).purged
        if purged is None:
            return []
        return [
            Check("record", True, f"{record.name}:{record.version} matches its digest {record.digest}"),
            Check("model", False, f"purged by gc at {purged.at.isoformat()} ({purged.by}) after it was yanked"),
        ]

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

    def verify(self, record: Record, engine: Callable[[], Engine], *, trust: Trust | None = None) -> list[Check]:
        """Check that the record's model bytes still hash to its SHA-256 (each file of a directory model,
        naming each one missing or changed) and that both images are still there, pinned by their recorded
        digests (and their tags not moved). With `trust` (else the registry's own), also that a trusted key
        signed a statement of exactly this record, and that the SBOMs it names are intact. The record's own
        digest was checked when it was read; `engine` is opened only for the images."""
        if purged := self._purged_checks(record):
            return purged
        checks = [Check("record", True, f"{record.name}:{record.version} matches its digest {record.digest}")]
        checks += self._check_signatures(record, trust or self._trust)
        checks += self._check_model(record)
        try:
            opened = engine()
        except MregError as exc:  # no engine to ask: the images are unchecked, the other checks stand
            return checks + [Check(stage, False, str(exc)) for stage in record.images]
        checks += [_check_image(opened, stage, image) for stage, image in record.images.items()]
        return checks

    def _check_signatures(self, record: Record, trust: Trust | None) -> list[Check]:
        if trust is None or not trust.active:
            return []
        from mreg.provenance.attestation import sbom_digests
        from mreg.records._provenance import read_sbom

        try:
            status = self.signatures(record, trust.keys)
        except MregError as exc:
            return [Check("signature", False, str(exc))]
        if not status.signed:
            needed = "a signature by a trusted key is required" if trust.required else "no signature is required"
            return [Check("signature", not trust.required, f"not signed ({needed})")]
        if status.statement is None:
            return [Check("signature", False, status.summary())]
        checks = [Check("signature", True, status.summary())]
        found = sbom_digests(status.statement, sorted(record.images))
        for stage in sorted(record.images):
            subject = f"sbom/{stage}"
            if stage not in found:
                checks.append(Check(subject, False, f"the signed statement names no SBOM of the {stage} image"))
                continue
            try:
                read_sbom(self._records, record.name, found[stage], f"{record.name}:{record.version}")
            except MregError as exc:
                checks.append(Check(subject, False, str(exc)))
            else:
                checks.append(Check(subject, True, f"matches the signed digest {found[stage]}"))
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


def _required_trust(trusted_keys: Sequence[TrustedKey] | Path | str) -> Trust:
    """A trust that requires a signature by one of `trusted_keys` (keys, or a trusted-keys file)."""
    from mreg.provenance._keys import load_trusted_keys
    from mreg.provenance.attestation import Trust

    keys = load_trusted_keys(Path(trusted_keys)) if isinstance(trusted_keys, str | Path) else trusted_keys
    return Trust(tuple(keys), required=True)


def _due(state: Annotations, yanked_before: datetime | None) -> bool:
    """Whether a version is to be purged: yanked before `yanked_before` (None: purge nothing), not purged yet."""
    return (
        yanked_before is not None
        and state.yanked is not None
        and state.purged is None
        and state.yanked.at < yanked_before
    )


def _normal(uri: str) -> str:
    """An object URI in one spelling: a local path resolved (links, `..`), any other URI as it is."""
    return file_uri_path(uri).resolve().as_uri() if uri.startswith("file://") else uri


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
