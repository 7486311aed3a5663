"""Provenance documents beside a model's records, on the record store's own primitives.

    models/NAME/sboms/<hex>.json                      an image's SBOM, content-addressed (immutable)
    models/NAME/provenance/<version>.json             the version's in-toto statement (immutable)
    models/NAME/signatures/<version>/<keyid>.json     a DSSE envelope of that statement, one per key (immutable)
    models/NAME/model-bundles/<version>.json          an OpenSSF model-signing bundle of the model (immutable)

None of them is inside a record, so a record's digest never depends on who signed it, and another party can
sign later. Nothing here decides what a signature proves (that is `mreg.provenance.attestation`): an
envelope read back is only parsed JSON.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from mreg._grammar import DocumentPath, document_path
from mreg.errors import IntegrityError, NotFoundError

if TYPE_CHECKING:
    from mreg.records.store import RecordStore

_DIGEST_RE = re.compile(r"sha256:([0-9a-f]{64})")
_KEYID_RE = re.compile(r"[0-9a-f]{64}")
MAX_ENVELOPE_BYTES = 1 << 20


def _version(version: int) -> str:
    return f"{version:010d}"


def sbom_path(name: str, digest: str) -> DocumentPath:
    match = _DIGEST_RE.fullmatch(digest)
    if match is None:
        raise IntegrityError(f"{digest!r} is not an SBOM digest (sha256:<64 hex digits>).")
    return document_path("models", name, "sboms", match[1])


def put_sbom(store: RecordStore, name: str, document: bytes) -> str:
    """Store an SBOM under its own digest (already there: the same bytes); its `sha256:<hex>`."""
    digest = "sha256:" + hashlib.sha256(document).hexdigest()
    store._create_document(sbom_path(name, digest), document)  # False: the same bytes are there already
    return digest


def read_sbom(store: RecordStore, name: str, digest: str, what: str) -> bytes:
    """The SBOM stored under `digest`, checked against it."""
    data, _ = store._read_document(sbom_path(name, digest))
    if data is None:
        raise NotFoundError(f"{what}: its SBOM {digest} is not in {store.where}.")
    found = "sha256:" + hashlib.sha256(data).hexdigest()
    if found != digest:
        raise IntegrityError(f"{what}: its SBOM {digest} in {store.where} was changed (it hashes to {found}).")
    return data


def put_statement(store: RecordStore, name: str, version: int, statement: bytes) -> None:
    """Store the statement of `name:version`, once: a different one there already is refused."""
    path = document_path("models", name, "provenance", _version(version))
    if not store._create_document(path, statement) and read_statement(store, name, version) != statement:
        raise IntegrityError(f"{name}:{version} already has another provenance statement in {store.where}.")


def read_statement(store: RecordStore, name: str, version: int) -> bytes | None:
    """The statement stored for `name:version` (unverified), None when it has none."""
    return store._read_document(document_path("models", name, "provenance", _version(version)))[0]


def put_envelope(store: RecordStore, name: str, version: int, keyid: str, envelope: Mapping[str, Any]) -> bool:
    """Store a key's envelope of `name:version`'s statement; False when that key signed it already."""
    if _KEYID_RE.fullmatch(keyid) is None:
        raise ValueError(f"{keyid!r} is not a key id")
    data = json.dumps(envelope, indent=2, sort_keys=True).encode()
    return store._create_document(_signatures(name, version, keyid), data)


def read_envelope(store: RecordStore, name: str, version: int, keyid: str) -> dict[str, Any]:
    """The envelope `keyid` stored beside `name:version`, parsed (unverified)."""
    data, _ = store._read_document(_signatures(name, version, keyid))
    if data is None:
        raise NotFoundError(f"{name}:{version} has no signature by the key {keyid} in {store.where}.")
    return _envelope(store, name, version, keyid, data)


def read_envelopes(store: RecordStore, name: str, version: int) -> list[dict[str, Any]]:
    """Every envelope stored beside `name:version`, parsed; a document that is not a JSON object is refused."""
    envelopes = []
    for keyid in store._list_documents(_signatures(name, version)):
        data, _ = store._read_document(_signatures(name, version, keyid))
        if data is not None:  # else removed meanwhile
            envelopes.append(_envelope(store, name, version, keyid, data))
    return envelopes


def _envelope(store: RecordStore, name: str, version: int, keyid: str, data: bytes) -> dict[str, Any]:
    try:
        envelope = json.loads(data) if len(data) <= MAX_ENVELOPE_BYTES else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        envelope = None
    if not isinstance(envelope, dict):
        raise IntegrityError(f"{store.where}: the signature {keyid} of {name}:{version} is not a DSSE envelope.")
    return envelope


def put_model_bundle(store: RecordStore, name: str, version: int, bundle: bytes) -> None:
    """Store the OpenSSF model-signing bundle of `name:version`, once."""
    if not store._create_document(document_path("models", name, "model-bundles", _version(version)), bundle):
        raise IntegrityError(f"{name}:{version} already has a model-signing bundle in {store.where}.")


def read_model_bundle(store: RecordStore, name: str, version: int) -> bytes | None:
    """The OpenSSF model-signing bundle of `name:version`, None when it has none."""
    return store._read_document(document_path("models", name, "model-bundles", _version(version)))[0]


def _signatures(name: str, version: int, *keyid: str) -> DocumentPath:
    return document_path("models", name, "signatures", _version(version), *keyid)
