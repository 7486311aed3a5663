"""Both record stores (a directory, and S3 over HTTP to moto's server): versions, immutability, aliases,
concurrency, damaged and edited records."""

from __future__ import annotations

import itertools
import json
import multiprocessing
import os
from pathlib import Path

import pytest

from mreg.errors import IntegrityError, InvalidInputError, NotFoundError, StorageError
from mreg.records import (
    ModelRef,
    Record,
    RecordStore,
    open_record_store,
    parse_model_ref,
)
from tests.support import make_record, raw

DIGEST = "sha256:" + "ab" * 32


@pytest.fixture
def store_uri(store_root: str) -> str:
    return f"{store_root}/registry"


@pytest.fixture
def store(store_uri: str, tmp_path: Path) -> RecordStore:
    return open_record_store(store_uri, tmp_path)


def record_uri(store_uri: str, relative: str) -> str:
    """Where a store keeps `relative` (`<name>/versions/...`): under `models/` in a bucket."""
    return f"{store_uri}/{relative}" if store_uri.startswith("file://") else f"{store_uri}/models/{relative}"


def raw_put(store_uri: str, relative: str, data: bytes) -> None:
    """Write behind the store's back (to damage or edit what it holds)."""
    raw.put(record_uri(store_uri, relative), data)


def raw_get(store_uri: str, relative: str) -> bytes:
    return raw.get(record_uri(store_uri, relative))


def test_record_json_round_trip_and_digest() -> None:
    record = make_record().sealed()
    data = json.loads(record.to_json())
    assert data["schema_version"] == 1
    assert data["created_at"] == "2026-11-29T10:00:00Z"
    assert data["digest"] == record.content_digest()
    assert Record.model_validate_json(record.to_json()) == record
    assert make_record(sha="00" * 32).content_digest() != record.content_digest()


def test_versions_are_consecutive_and_latest_is_found(store: RecordStore) -> None:
    for expected in (1, 2, 3):
        record = store.create("iris-rf", lambda v: make_record(version=v))
        assert record.version == expected
        assert record.digest == record.content_digest()
    assert store.get("iris-rf").version == 3
    assert store.get("iris-rf", 2).version == 2
    assert [r.version for r in store.versions("iris-rf")] == [3, 2, 1]
    assert [r.version for r in store.versions("iris-rf", limit=2)] == [3, 2]
    assert [r.version for r in store.versions("iris-rf", limit=2, before=2)] == [1]
    assert store.models() == ["iris-rf"]
    store.create("other", lambda v: make_record(name="other", version=v))
    assert store.models() == ["iris-rf", "other"]


def test_an_existing_version_is_never_overwritten(store: RecordStore, store_uri: str) -> None:
    store.create("iris-rf", lambda v: make_record(version=v, sha="11" * 32))
    raw_put(store_uri, "iris-rf/latest", b"0")  # a stale hint points before version 1
    second = store.create("iris-rf", lambda v: make_record(version=v, sha="22" * 32))
    assert second.version == 2
    assert store.get("iris-rf", 1).model.sha256 == "11" * 32
    assert store.get("iris-rf").version == 2


def test_a_missing_hint_falls_back_to_a_listing(store: RecordStore, store_uri: str, tmp_path: Path) -> None:
    for _ in range(3):
        store.create("iris-rf", lambda v: make_record(version=v))
    raw.delete(record_uri(store_uri, "iris-rf/latest"))
    fresh = open_record_store(store_uri, tmp_path)
    assert fresh.get("iris-rf").version == 3
    assert fresh.create("iris-rf", lambda v: make_record(version=v)).version == 4


def _create_many(store_uri: str, root: str, count: int, env: dict[str, str]) -> list[int]:
    os.environ.update(env)
    store = open_record_store(store_uri, Path(root))
    return [store.create("iris-rf", lambda v: make_record(version=v)).version for _ in range(count)]


def test_concurrent_writers_get_distinct_consecutive_versions(store_uri: str, tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if key.startswith("AWS_")}
    with multiprocessing.get_context("spawn").Pool(8) as pool:
        results = pool.starmap(_create_many, [(store_uri, str(tmp_path), 4, env)] * 8)
    versions = sorted(v for batch in results for v in batch)
    assert versions == list(range(1, 33))
    store = open_record_store(store_uri, tmp_path)
    assert [r.version for r in store.versions("iris-rf", limit=100)] == list(range(32, 0, -1))


def test_a_failing_factory_leaves_no_record(store: RecordStore) -> None:
    def explode(version: int) -> Record:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        store.create("iris-rf", explode)
    with pytest.raises(NotFoundError):
        store.get("iris-rf")


def test_unknown_model_and_version(store: RecordStore) -> None:
    with pytest.raises(NotFoundError, match="model iris-rf has no versions"):
        store.get("iris-rf")
    store.create("iris-rf", lambda v: make_record(version=v))
    with pytest.raises(NotFoundError, match="model iris-rf has no version 7"):
        store.get("iris-rf", 7)


def test_damaged_newer_and_edited_records_are_named(store: RecordStore, store_uri: str) -> None:
    for _ in range(4):
        store.create("iris-rf", lambda v: make_record(version=v))
    first = raw_get(store_uri, "iris-rf/versions/0000000001.json")
    raw_put(store_uri, "iris-rf/versions/0000000001.json", first[:40])
    second = json.loads(raw_get(store_uri, "iris-rf/versions/0000000002.json"))
    raw_put(store_uri, "iris-rf/versions/0000000002.json", json.dumps({**second, "schema_version": 2}).encode())
    third = json.loads(raw_get(store_uri, "iris-rf/versions/0000000003.json"))
    third["model"]["sha256"] = "ee" * 32  # someone points version 3 at other bytes
    raw_put(store_uri, "iris-rf/versions/0000000003.json", json.dumps(third).encode())
    with pytest.raises(StorageError, match=r"record .*iris-rf:1 cannot be read"):
        store.get("iris-rf", 1)
    with pytest.raises(StorageError, match=r"iris-rf:2 has schema version 2; this mreg reads version 1"):
        store.get("iris-rf", 2)
    with pytest.raises(IntegrityError, match=r"record .*iris-rf:3 was changed after it was written"):
        store.get("iris-rf", 3)
    assert store.get("iris-rf", 4).version == 4


def test_aliases_move_and_keep_their_history(store: RecordStore) -> None:
    for _ in range(3):
        store.create("iris-rf", lambda v: make_record(version=v))
    store.move_alias("iris-rf", "production", 1, actor="alice")
    moved = store.move_alias("iris-rf", "production", 3, actor="bob")
    assert moved.version == 3
    assert [(e.previous, e.version, e.by) for e in moved.history] == [(None, 1, "alice"), (1, 3, "bob")]
    assert store.resolve(ModelRef("iris-rf", alias="production")).version == 3
    deleted = store.move_alias("iris-rf", "production", None, actor="carol")
    assert deleted.version is None
    assert len(store.alias("iris-rf", "production").history) == 3
    with pytest.raises(NotFoundError, match="alias iris-rf@production was deleted"):
        store.resolve(ModelRef("iris-rf", alias="production"))
    with pytest.raises(NotFoundError, match="model iris-rf has no version 9"):
        store.move_alias("iris-rf", "staging", 9, actor="dave")
    with pytest.raises(NotFoundError, match="model iris-rf has no alias staging"):
        store.alias("iris-rf", "staging")


def _move_many(store_uri: str, root: str, worker: int, env: dict[str, str]) -> None:
    os.environ.update(env)
    store = open_record_store(store_uri, Path(root))
    for step in range(5):
        store.move_alias("iris-rf", "production", 1 + (worker + step) % 3, actor=f"worker-{worker}-{step}")


def test_concurrent_alias_moves_lose_no_update(store: RecordStore, store_uri: str, tmp_path: Path) -> None:
    for _ in range(3):
        store.create("iris-rf", lambda v: make_record(version=v))
    env = {key: value for key, value in os.environ.items() if key.startswith("AWS_")}
    with multiprocessing.get_context("spawn").Pool(8) as pool:
        pool.starmap(_move_many, [(store_uri, str(tmp_path), worker, env) for worker in range(8)])
    history = store.alias("iris-rf", "production").history
    assert len(history) == 40
    assert sorted(event.by for event in history) == sorted(f"worker-{w}-{s}" for w in range(8) for s in range(5))
    for before, after in itertools.pairwise(history):
        assert after.previous == before.version  # each move saw the one before it


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("iris-rf", ModelRef("iris-rf")),
        ("iris-rf:12", ModelRef("iris-rf", version=12)),
        ("iris-rf@production", ModelRef("iris-rf", alias="production")),
    ],
)
def test_parse_model_ref(text: str, expected: ModelRef) -> None:
    assert parse_model_ref(text) == expected
    assert str(parse_model_ref(text)) == text


@pytest.mark.parametrize("text", ["../etc", "iris:0", "iris:x", "Iris", "", "iris@", "iris@../x", "a:1@b", "iris:1:2"])
def test_parse_model_ref_refuses(text: str) -> None:
    with pytest.raises(InvalidInputError):
        parse_model_ref(text)
