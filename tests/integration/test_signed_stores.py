"""Signed provenance on every backend (a directory, S3 over HTTP to moto's server, GCS on its emulator):
statements, SBOMs and envelopes beside the record, signers racing in real processes, and envelopes swapped
behind the store's back."""

from __future__ import annotations

import json
import multiprocessing
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mreg.engine import Engine
from mreg.errors import IntegrityError, MregError
from mreg.provenance._keys import load_signing_key, load_trusted_keys
from mreg.provenance.attestation import Trust
from mreg.provenance.statement import provenance_predicate
from mreg.records import Record, open_record_store
from mreg.registry import Registry
from mreg.storage import open_object_store
from tests.support import make_record, raw
from tests.support.keys import ed25519_key, write_key

NAME = "iris-rf"
SIGNERS, TWICE = 4, 2
SBOMS = {"train": b'{"bomFormat": "CycloneDX", "stage": "train"}\n', "serve": b'{"bomFormat": "CycloneDX"}\n'}


def open_registry(root: str) -> Registry:
    records = open_record_store(f"{root}/registry", Path("/"))
    return Registry(records, objects=open_object_store(f"{root}/objects"))


def document_uri(root: str, *parts: str) -> str:
    """Where a record store keeps a model's document (the file store keeps `models/NAME` in `NAME`)."""
    model = NAME if root.startswith("file://") else f"models/{NAME}"
    return "/".join([f"{root}/registry", model, *parts]) + ".json"


def predicate() -> dict[str, object]:
    now = datetime.now(UTC)
    return provenance_predicate(
        mreg_version="0.1.0",
        model_name=NAME,
        spec_sha256="ab" * 32,
        lock_sha256="cd" * 32,
        base_image="python:3.11-slim-bookworm",
        base_image_digest=None,
        git_commit=None,
        git_dirty=False,
        actor="ci@example",
        invocation_id="urn:uuid:00000000-0000-0000-0000-000000000000",
        started_on=now,
        finished_on=now,
    )


def register(registry: Registry, tmp: Path, content: bytes) -> Record:
    path = tmp / "model.joblib"
    path.write_bytes(content)
    model = registry.store_model(path)
    record = registry.create(NAME, lambda version: make_record(version).model_copy(update={"model": model}))
    registry.attest(record, predicate=predicate(), sboms=SBOMS)
    return record


def _sign(root: str, key_file: str, results: multiprocessing.Queue[bool]) -> None:
    results.put(open_registry(root).sign(f"{NAME}:1", load_signing_key(Path(key_file), None)))


@pytest.fixture
def keys(tmp_path: Path) -> list[tuple[Path, Path]]:
    directory = tmp_path / "keys"
    directory.mkdir()
    return [write_key(directory, f"signer{number}", ed25519_key() if number % 2 else None) for number in range(SIGNERS)]


def test_signers_racing_in_processes_each_sign_once(
    store_root: str, tmp_path: Path, keys: list[tuple[Path, Path]]
) -> None:
    registry = open_registry(store_root)
    record = register(registry, tmp_path, b"a model" * 100)
    context = multiprocessing.get_context("fork")
    results: multiprocessing.Queue[bool] = context.Queue()
    workers = [context.Process(target=_sign, args=(store_root, str(private), results)) for private, _ in keys * TWICE]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=300)
        assert worker.exitcode == 0
    outcomes = [results.get(timeout=10) for _ in workers]
    assert sorted(outcomes) == [False] * SIGNERS + [True] * SIGNERS  # each key's second try changed nothing
    trusted = [key for _, public in keys for key in load_trusted_keys(public)]
    status = registry.signatures(record, trusted)
    assert sorted(status.signed_by) == sorted(key.name for key in trusted)
    assert registry.sbom(record, "train") == SBOMS["train"]
    assert registry.get(f"{NAME}:1", trusted_keys=keys[0][1]).digest == record.digest


def test_a_swapped_envelope_and_sbom_are_caught(store_root: str, tmp_path: Path, keys: list[tuple[Path, Path]]) -> None:
    registry = open_registry(store_root)
    first = register(registry, tmp_path, b"first model")
    second = register(registry, tmp_path, b"second model")
    key = load_signing_key(keys[0][0], None)
    assert registry.sign(first, key)
    assert registry.sign(second, key)
    trusted = tuple(load_trusted_keys(keys[0][1]))
    # version 2's envelope replaced by version 1's (validly signed, but of another record)
    envelope = raw.get(document_uri(store_root, "signatures", "0000000001", key.keyid))
    raw.put(document_uri(store_root, "signatures", "0000000002", key.keyid), envelope)
    with pytest.raises(
        IntegrityError, match=r"iris-rf:2 has no valid signature by a trusted key: the signed statement"
    ):
        registry.get(f"{NAME}:2", trusted_keys=trusted)
    # version 1's SBOM changed behind the store: verify names it, whatever the images say
    digest = registry.statement(first).subjects["sbom/serve"].removeprefix("sha256:")
    raw.put(document_uri(store_root, "sboms", digest), b'{"bomFormat": "CycloneDX", "tampered": true}\n')
    checks = {check.subject: check for check in registry.verify(first, _no_engine, trust=Trust(trusted, required=True))}
    assert checks["signature"].ok
    assert checks["sbom/train"].ok
    assert not checks["sbom/serve"].ok
    assert "was changed" in checks["sbom/serve"].detail
    # a malformed envelope is refused by name, not a crash
    raw.put(
        document_uri(store_root, "signatures", "0000000001", key.keyid), json.dumps(["not", "an envelope"]).encode()
    )
    with pytest.raises(IntegrityError, match=f"the signature {key.keyid} of iris-rf:1 is not a DSSE envelope"):
        registry.get(f"{NAME}:1", trusted_keys=trusted)


def _no_engine() -> Engine:
    raise MregError("no engine here")
