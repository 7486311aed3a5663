"""The record-store algorithms (`RecordStore`) on the file backend: version allocation, the `latest` hint,
paging, aliases and their history, concurrent writers, and records that were edited or are too new."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
from datetime import UTC, datetime
from functools import partial
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path

import pytest

from mreg.errors import IntegrityError, InvalidInputError, NotFoundError, StorageError
from mreg.records import ModelRef, Record
from mreg.records.file import FileRecordStore
from tests.support import make_record

NAME = "iris-rf"
DIGEST = "sha256:" + "ab" * 32
WORKERS, CREATES = 8, 4


def record_of(version: int, tag: str = "model") -> Record:
    """A record whose model bytes are named by `tag` (equal tags give byte-identical records)."""
    return make_record(version, sha=hashlib.sha256(tag.encode()).hexdigest())


@pytest.fixture
def store(tmp_path: Path) -> FileRecordStore:
    return FileRecordStore(tmp_path / "registry")


def fill(store: FileRecordStore, count: int) -> None:
    for _ in range(count):
        store.create(NAME, record_of)


def version_file(store: FileRecordStore, version: int) -> Path:
    return store.root / NAME / "versions" / f"{version:010d}.json"


def hint_file(store: FileRecordStore) -> Path:
    return store.root / NAME / "latest"


def rewrite(path: Path, edit: dict[str, object]) -> None:
    """Change a stored document behind the store's back (its files are read-only)."""
    path.chmod(0o644)
    path.write_text(json.dumps({**json.loads(path.read_text()), **edit}))


def test_versions_are_consecutive_sealed_and_found_by_every_route(store: FileRecordStore) -> None:
    created = [store.create(NAME, lambda v: record_of(v, f"m{v}")) for _ in range(3)]
    assert [record.version for record in created] == [1, 2, 3]
    assert all(record.digest == record.content_digest() for record in created)
    assert sorted(path.name for path in (store.root / NAME / "versions").iterdir()) == [
        "0000000001.json",
        "0000000002.json",
        "0000000003.json",
    ]
    assert store.latest_version(NAME) == 3
    assert hint_file(store).read_text() == "3\n"
    assert store.get(NAME) == created[2]
    assert store.get(NAME, 2) == created[1]
    assert store.resolve(ModelRef(NAME)) == created[2]
    assert store.resolve(ModelRef(NAME, version=1)) == created[0]
    assert store.models() == [NAME]


def test_an_existing_version_is_never_overwritten(store: FileRecordStore) -> None:
    fill(store, 2)
    before = [version_file(store, v).read_bytes() for v in (1, 2)]
    hint_file(store).write_text("0\n")  # a hint that lags behind every version
    third = store.create(NAME, lambda v: record_of(v, "other bytes"))
    assert third.version == 3
    assert [version_file(store, v).read_bytes() for v in (1, 2)] == before
    assert store.get(NAME, 1).model.sha256 == hashlib.sha256(b"model").hexdigest()


@pytest.mark.parametrize("hint", ["1\n", "0\n", "garbage\n", None], ids=["behind", "zero", "damaged", "missing"])
def test_a_lagging_or_missing_hint_is_corrected(store: FileRecordStore, hint: str | None) -> None:
    fill(store, 4)
    if hint is None:
        hint_file(store).unlink()  # found again by listing the versions
    else:
        hint_file(store).write_text(hint)  # found again by probing forward
    fresh = FileRecordStore(store.root)
    assert fresh.latest_version(NAME) == 4
    assert fresh.get(NAME).version == 4
    assert fresh.create(NAME, record_of).version == 5
    assert hint_file(store).read_text() == "5\n"


def test_an_unknown_model_has_version_zero_and_no_records(store: FileRecordStore) -> None:
    assert store.latest_version(NAME) == 0
    assert store.models() == []
    with pytest.raises(NotFoundError, match=rf"^model iris-rf has no versions in {store.where}\.$"):
        store.get(NAME)
    with pytest.raises(NotFoundError, match=r"^model iris-rf has no versions in "):
        store.versions(NAME)
    store.create(NAME, record_of)
    with pytest.raises(NotFoundError, match=rf"^model iris-rf has no version 7 in {store.where}\.$"):
        store.get(NAME, 7)


def test_versions_page_newest_first_with_before(store: FileRecordStore) -> None:
    fill(store, 5)
    assert [r.version for r in store.versions(NAME)] == [5, 4, 3, 2, 1]
    assert [r.version for r in store.versions(NAME, limit=2)] == [5, 4]
    assert [r.version for r in store.versions(NAME, limit=2, before=4)] == [3, 2]
    assert [r.version for r in store.versions(NAME, limit=2, before=2)] == [1]
    assert store.versions(NAME, limit=2, before=1) == []  # past the oldest: an empty page, not an error
    pages: list[list[int]] = []
    before: int | None = None
    while page := store.versions(NAME, limit=2, before=before):
        pages.append([r.version for r in page])
        before = page[-1].version
    assert pages == [[5, 4], [3, 2], [1]]


def test_alias_moves_record_who_when_from_and_to(store: FileRecordStore) -> None:
    fill(store, 3)
    start = datetime.now(UTC)
    store.move_alias(NAME, "production", 1, actor="alice")
    moved = store.move_alias(NAME, "production", 3, actor="bob")
    store.move_alias(NAME, "staging", 2, actor="carol")
    end = datetime.now(UTC)
    assert moved.version == 3
    assert [(e.previous, e.version, e.by) for e in moved.history] == [(None, 1, "alice"), (1, 3, "bob")]
    assert start <= moved.history[0].at <= moved.history[1].at <= end
    assert store.alias(NAME, "production") == moved
    assert store.resolve(ModelRef(NAME, alias="production")).version == 3
    assert store.resolve(ModelRef(NAME, alias="staging")).version == 2
    assert [(a.alias, a.version) for a in store.aliases(NAME)] == [("production", 3), ("staging", 2)]


def test_deleting_an_alias_keeps_its_history(store: FileRecordStore) -> None:
    fill(store, 2)
    store.move_alias(NAME, "production", 2, actor="alice")
    deleted = store.move_alias(NAME, "production", None, actor="bob")
    assert deleted.version is None
    assert [(e.previous, e.version, e.by) for e in store.alias(NAME, "production").history] == [
        (None, 2, "alice"),
        (2, None, "bob"),
    ]
    assert [(a.alias, a.version) for a in store.aliases(NAME)] == [("production", None)]
    with pytest.raises(NotFoundError, match=r"^alias iris-rf@production was deleted \(see `mreg alias iris-rf"):
        store.resolve(ModelRef(NAME, alias="production"))
    restored = store.move_alias(NAME, "production", 1, actor="carol")
    assert [(e.previous, e.version) for e in restored.history] == [(None, 2), (2, None), (None, 1)]


def test_aliasing_a_missing_version_or_deleting_a_missing_alias_is_refused(store: FileRecordStore) -> None:
    fill(store, 1)
    with pytest.raises(NotFoundError, match=r"^model iris-rf has no version 9 in "):
        store.move_alias(NAME, "production", 9, actor="alice")
    with pytest.raises(NotFoundError, match=rf"^model iris-rf has no alias production in {store.where}\.$"):
        store.alias(NAME, "production")
    with pytest.raises(NotFoundError, match=r"^model iris-rf has no alias production in "):
        store.move_alias(NAME, "production", None, actor="alice")
    assert store.aliases(NAME) == []


@pytest.mark.parametrize("name", ["../escape", "Iris", "iris/rf", ""])
def test_names_that_could_leave_the_store_are_refused_before_any_write(store: FileRecordStore, name: str) -> None:
    with pytest.raises(InvalidInputError, match="is not a valid model name"):
        store.create(name, record_of)
    with pytest.raises(InvalidInputError, match="is not a valid alias"):
        store.move_alias(NAME, name, None, actor="alice")
    assert not store.root.exists()


def _create_concurrently(root: str, worker: int, barrier: Barrier, results: Queue[tuple[int, str]]) -> None:
    store = FileRecordStore(Path(root))
    barrier.wait()  # every writer starts at once, so that they race for the same versions
    for index in range(CREATES):
        record = store.create(NAME, partial(record_of, tag=f"worker-{worker}-{index}"))
        results.put((record.version, record.model.sha256))


def test_concurrent_creates_from_processes_get_distinct_consecutive_versions(store: FileRecordStore) -> None:
    context = multiprocessing.get_context("fork")  # children start at once, with mreg already imported
    barrier = context.Barrier(WORKERS)
    results: Queue[tuple[int, str]] = context.Queue()
    processes = [
        context.Process(target=_create_concurrently, args=(str(store.root), worker, barrier, results))
        for worker in range(WORKERS)
    ]
    for process in processes:
        process.start()
    claimed = dict(results.get(timeout=60) for _ in range(WORKERS * CREATES))
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    assert sorted(claimed) == list(range(1, WORKERS * CREATES + 1))
    stored = {record.version: record.model.sha256 for record in store.versions(NAME, limit=100)}
    assert stored == claimed  # each writer got the version that holds its own record
    tags = {f"worker-{w}-{i}" for w in range(WORKERS) for i in range(CREATES)}
    assert set(stored.values()) == {hashlib.sha256(tag.encode()).hexdigest() for tag in tags}


def test_an_edited_record_is_refused_and_named(store: FileRecordStore) -> None:
    fill(store, 3)
    store.move_alias(NAME, "production", 2, actor="alice")
    edited = json.loads(version_file(store, 2).read_text())
    rewrite(version_file(store, 2), {"model": {**edited["model"], "sha256": "ee" * 32}})
    message = rf"^record {store.where} iris-rf:2 was changed after it was written: its content hashes to sha256:"
    with pytest.raises(IntegrityError, match=message) as caught:
        store.get(NAME, 2)
    assert str(caught.value).endswith(f"it says {edited['digest']}.")
    with pytest.raises(IntegrityError, match=message):
        store.resolve(ModelRef(NAME, alias="production"))
    with pytest.raises(IntegrityError, match=message):
        store.versions(NAME)
    assert store.get(NAME, 3).version == 3


def test_an_unsealed_record_is_refused(store: FileRecordStore) -> None:
    fill(store, 1)
    rewrite(version_file(store, 1), {"digest": None})
    with pytest.raises(IntegrityError, match=rf"^record {store.where} iris-rf:1 was changed .* it says None\.$"):
        store.get(NAME, 1)


def test_a_record_or_alias_from_a_newer_schema_is_refused(store: FileRecordStore) -> None:
    fill(store, 2)
    rewrite(version_file(store, 1), {"schema_version": 2, "a_field_from_the_future": True})
    with pytest.raises(StorageError, match=r"^record .* iris-rf:1 has schema version 2; this mreg reads version 1\."):
        store.get(NAME, 1)
    store.move_alias(NAME, "production", 2, actor="alice")
    rewrite(store.root / NAME / "aliases" / "production" / "0000000001.json", {"schema_version": 3})
    with pytest.raises(StorageError, match=r"^alias .* iris-rf@production has schema version 3; .* Upgrade mreg\.$"):
        store.alias(NAME, "production")
    assert store.get(NAME, 2).version == 2


def test_a_create_that_lost_the_race_to_other_bytes_takes_the_next_version(store: FileRecordStore) -> None:
    rival = FileRecordStore(store.root)

    def make_after_the_rival(version: int) -> Record:
        if rival.latest_version(NAME) == 0:
            rival.create(NAME, lambda v: record_of(v, "the rival's model"))
        return record_of(version)

    record = store.create(NAME, make_after_the_rival)
    assert record.version == 2
    assert store.get(NAME, 1).model.sha256 == hashlib.sha256(b"the rival's model").hexdigest()
    assert store.get(NAME, 2) == record
