"""The local cache of immutable records (`mreg.records._cache`) under the record store's read path: what it
serves, what it refuses (damaged, misfiled, foreign or unprotected entries), what it never serves (aliases,
the latest version, annotations), concurrent writers, and that a hit needs no S3 or GCS client."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import random
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from multiprocessing.synchronize import Barrier
from pathlib import Path

import pytest

from mreg.errors import NotFoundError
from mreg.records import ModelRef, Record, open_record_store
from mreg.records._annotations import tag_edit, yank_edit
from mreg.records._cache import RecordCache, cache_root, registry_cache, registry_identity
from mreg.records.file import FileRecordStore
from mreg.registry import Registry
from tests.support import make_record

NAME = "iris-rf"
IDENTITY = '["s3", "s3://models/registry", "", ""]'
AT = datetime(2026, 12, 1, tzinfo=UTC)
WORKERS, VERSIONS, ROUNDS = 6, 24, 4


class CountingStore(FileRecordStore):
    """A file record store that notes each record it reads from its directory."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.reads: list[int] = []

    def _read(self, name: str, version: int) -> bytes | None:
        self.reads.append(version)
        return super()._read(name, version)


def sealed(version: int, tag: str = "model", name: str = NAME) -> Record:
    return make_record(version, name=name, sha=hashlib.sha256(tag.encode()).hexdigest()).sealed()


@pytest.fixture
def cache(tmp_path: Path) -> RecordCache:
    return RecordCache(tmp_path / "cache" / "records", IDENTITY)


@pytest.fixture
def store(tmp_path: Path, cache: RecordCache) -> CountingStore:
    """Versions 1-3 of NAME, with a cache (mreg caches only remote stores; the algorithms are the same)."""
    store = CountingStore(tmp_path / "registry")
    for _ in range(3):
        store.create(NAME, lambda version: make_record(version, sha=f"{version:02d}" * 32))
    store.cache = cache
    return store


def version_file(store: FileRecordStore, version: int) -> Path:
    return store.root / NAME / "versions" / f"{version:010d}.json"


def index_file(cache: RecordCache, version: int) -> Path:
    return cache.directory / "index" / NAME / f"{version:010d}.json"


def content_file(cache: RecordCache, digest: str | None) -> Path:
    assert digest is not None
    return cache.directory / "records" / f"{digest.removeprefix('sha256:')}.json"


def remove_from_store(store: FileRecordStore, version: int) -> None:
    """Take a record away behind the store's back: only the cache can serve it now."""
    version_file(store, version).unlink()


def test_a_record_read_once_is_then_served_by_the_cache_and_fresh_reads_the_store(
    store: CountingStore, cache: RecordCache
) -> None:
    store.get(NAME, 1, fresh=True)
    assert cache.get(NAME, 1) is None  # a fresh read leaves the cache alone
    store.reads.clear()
    first = store.get(NAME, 2)
    assert store.reads == [2]
    remove_from_store(store, 2)
    assert store.get(NAME, 2) == first
    assert store.resolve(ModelRef(NAME, version=2)) == first
    assert store.reads == [2]
    with pytest.raises(NotFoundError, match="has no version 2"):
        store.get(NAME, 2, fresh=True)
    with pytest.raises(NotFoundError, match="has no version 2"):
        store.resolve(ModelRef(NAME, version=2), fresh=True)


def test_the_cache_holds_the_bytes_the_digest_hashes_and_an_index_entry_of_its_registry(
    store: CountingStore, cache: RecordCache
) -> None:
    record = store.get(NAME, 1)
    content = content_file(cache, record.digest).read_bytes()
    assert "sha256:" + hashlib.sha256(content).hexdigest() == record.digest == record.content_digest()
    assert "digest" not in json.loads(content)
    entry = json.loads(index_file(cache, 1).read_bytes())
    assert entry == {"registry": IDENTITY, "name": NAME, "version": 1, "digest": record.digest}
    assert cache.directory.name == hashlib.sha256(IDENTITY.encode()).hexdigest()
    assert not list(cache.directory.rglob(".incoming-*"))


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-7])


def damage_content(damage: Callable[[Path], None]) -> Callable[[RecordCache, Record, Record], None]:
    def apply(cache: RecordCache, cached: Record, other: Record) -> None:
        damage(content_file(cache, cached.digest))

    return apply


def damage_index(damage: Callable[[Path], None]) -> Callable[[RecordCache, Record, Record], None]:
    def apply(cache: RecordCache, cached: Record, other: Record) -> None:
        damage(index_file(cache, cached.version))

    return apply


def entry_of_another_version(cache: RecordCache, cached: Record, other: Record) -> None:
    index_file(cache, cached.version).write_bytes(index_file(cache, other.version).read_bytes())


def index_naming_another_versions_record(cache: RecordCache, cached: Record, other: Record) -> None:
    entry = {"registry": IDENTITY, "name": NAME, "version": cached.version, "digest": other.digest}
    index_file(cache, cached.version).write_text(json.dumps(entry))


def valid_record_under_the_wrong_digest(cache: RecordCache, cached: Record, other: Record) -> None:
    content_file(cache, cached.digest).write_bytes(content_file(cache, other.digest).read_bytes())


def content_filed_by_the_hash_of_its_bytes_not_of_its_content(cache: RecordCache, cached: Record, _: Record) -> None:
    """The same record, re-indented: the bytes hash to their file name, but the record's digest is not that."""
    reformatted = json.dumps(json.loads(content_file(cache, cached.digest).read_bytes()), indent=1).encode()
    digest = "sha256:" + hashlib.sha256(reformatted).hexdigest()
    content_file(cache, digest).write_bytes(reformatted)
    entry = {"registry": IDENTITY, "name": NAME, "version": cached.version, "digest": digest}
    index_file(cache, cached.version).write_text(json.dumps(entry))


def entry_of_another_registry(cache: RecordCache, cached: Record, _: Record) -> None:
    """Another registry's sound entry for the same name and version (another record), copied in."""
    other_cache = RecordCache(cache.root, '["s3", "s3://elsewhere/registry", "", ""]')
    elsewhere = sealed(cached.version, "the other registry's model")
    other_cache.put(NAME, cached.version, elsewhere)
    assert other_cache.get(NAME, cached.version) == elsewhere
    content_file(cache, elsewhere.digest).write_bytes(content_file(other_cache, elsewhere.digest).read_bytes())
    index_file(cache, cached.version).write_bytes(index_file(other_cache, cached.version).read_bytes())


TAMPERING = {
    "flipped byte in the content": damage_content(flip_a_byte),
    "truncated content": damage_content(truncate),
    "content removed": damage_content(Path.unlink),
    "flipped byte in the index entry": damage_index(flip_a_byte),
    "truncated index entry": damage_index(truncate),
    "index entry of another version": entry_of_another_version,
    "index entry naming another version's record": index_naming_another_versions_record,
    "a valid record filed under the wrong digest": valid_record_under_the_wrong_digest,
    "content filed by the hash of its bytes, not of its content": content_filed_by_the_hash_of_its_bytes_not_of_its_content,
    "entry of another registry": entry_of_another_registry,
}


@pytest.mark.parametrize("tamper", TAMPERING.values(), ids=TAMPERING.keys())
def test_a_damaged_misfiled_or_foreign_entry_is_never_served_and_is_replaced_from_the_store(
    store: CountingStore, cache: RecordCache, tamper: Callable[[RecordCache, Record, Record], None]
) -> None:
    cached, other = store.get(NAME, 2), store.get(NAME, 3)
    tamper(cache, cached, other)
    assert store.get(NAME, 2) == cached  # read from the store again
    assert store.reads == [2, 3, 2]
    assert cache.get(NAME, 2) == cached  # and cached again, soundly
    assert cache.get(NAME, 3) == other  # a sound entry of another version is kept
    tamper(cache, cached, other)
    remove_from_store(store, 2)
    with pytest.raises(NotFoundError, match="has no version 2"):
        store.get(NAME, 2)


def test_an_index_entry_is_removed_when_unsound_and_its_record_only_when_the_record_is(
    store: CountingStore, cache: RecordCache
) -> None:
    cached, other = store.get(NAME, 2), store.get(NAME, 3)
    index_naming_another_versions_record(cache, cached, other)
    assert cache.get(NAME, 2) is None
    assert not index_file(cache, 2).exists()
    assert content_file(cache, other.digest).exists()  # version 3's record, sound: kept
    flip_a_byte(content_file(cache, other.digest))
    assert cache.get(NAME, 3) is None
    assert not index_file(cache, 3).exists()
    assert not content_file(cache, other.digest).exists()


def test_a_record_is_kept_only_under_its_own_name_and_version(cache: RecordCache) -> None:
    record = sealed(3)
    cache.put(NAME, 4, record)  # a store's version 4 that holds version 3's record
    cache.put("other", 3, record)
    assert cache.get(NAME, 4) is None
    assert cache.get("other", 3) is None
    assert not cache.directory.exists()
    unsealed = make_record(3)
    cache.put(NAME, 3, unsealed)
    assert cache.get(NAME, 3) is None
    cache.put(NAME, 3, record)
    assert cache.get(NAME, 3) == record


def test_two_registries_never_share_entries(tmp_path: Path) -> None:
    root = tmp_path / "records"
    first, second = RecordCache(root, IDENTITY), RecordCache(root, '["s3", "s3://models/other", "", ""]')
    first.put(NAME, 1, sealed(1, "first"))
    assert second.get(NAME, 1) is None
    second.put(NAME, 1, sealed(1, "second"))
    assert first.get(NAME, 1) == sealed(1, "first")
    assert second.get(NAME, 1) == sealed(1, "second")
    assert first.directory != second.directory


@pytest.mark.parametrize("mode", [0o770, 0o722, 0o777])
def test_a_cache_directory_others_may_write_to_is_not_used(tmp_path: Path, mode: int) -> None:
    root = tmp_path / "records"
    RecordCache(root, IDENTITY).put(NAME, 1, sealed(1))
    root.chmod(mode)
    shared = RecordCache(root, IDENTITY)
    assert shared.get(NAME, 1) is None
    shared.put(NAME, 2, sealed(2))
    assert not index_file(shared, 2).exists()
    root.chmod(0o755)  # group and others may read: still the user's own
    assert RecordCache(root, IDENTITY).get(NAME, 1) == sealed(1)


def test_a_new_cache_directory_is_private(tmp_path: Path) -> None:
    cache = RecordCache(tmp_path / "fresh" / "records", IDENTITY)
    cache.put(NAME, 1, sealed(1))
    assert cache.get(NAME, 1) == sealed(1)
    assert (tmp_path / "fresh" / "records").stat().st_mode & 0o777 == 0o700


def test_what_the_cache_makes_below_a_readable_root_is_private_whatever_the_umask(tmp_path: Path) -> None:
    root = tmp_path / "records"
    root.mkdir(mode=0o755)
    previous = os.umask(0o002)  # group members may write what is made with the default modes
    try:
        RecordCache(root, IDENTITY).put(NAME, 1, sealed(1))
    finally:
        os.umask(previous)
    made = [path for path in root.rglob("*") if path.is_dir()]
    assert len(made) == 4  # the registry's directory, records/, index/ and index/NAME/
    assert all(path.stat().st_mode & 0o777 == 0o700 for path in made)


def test_aliases_and_the_latest_version_are_always_read_from_the_store(store: CountingStore) -> None:
    store.move_alias(NAME, "production", 2, actor="alice")
    assert store.resolve(ModelRef(NAME, alias="production")).version == 2
    assert store.resolve(ModelRef(NAME)).version == 3
    store.move_alias(NAME, "production", 3, actor="alice")
    assert store.resolve(ModelRef(NAME, alias="production")).version == 3
    store.move_alias(NAME, "production", None, actor="alice")
    with pytest.raises(NotFoundError, match="was deleted"):
        store.resolve(ModelRef(NAME, alias="production"))
    store.create(NAME, lambda version: make_record(version, sha="44" * 32))
    assert store.resolve(ModelRef(NAME)).version == 4
    assert store.get(NAME).version == 4
    store.annotate(NAME, 4, yank_edit(f"{NAME}:4", "bad data", [], by="alice", at=AT))
    assert store.resolve(ModelRef(NAME)).version == 3
    assert store.reads == [2, 3, 4]  # each record once; the alias, the hint and the yank state every time


def test_annotations_are_read_from_the_store_while_the_record_comes_from_the_cache(store: CountingStore) -> None:
    registry = Registry(store)
    assert registry.annotations(f"{NAME}:2").tags == {}
    store.annotate(NAME, 2, tag_edit(f"{NAME}:2", {"stage": "production"}, [], by="alice", at=AT))
    assert registry.annotations(f"{NAME}:2").tags == {"stage": "production"}
    store.annotate(NAME, 2, yank_edit(f"{NAME}:2", "leaked test data", [], by="alice", at=AT))
    yanked = registry.annotations(f"{NAME}:2").yanked
    assert yanked is not None
    assert yanked.reason == "leaked test data"
    assert store.reads == [2]


def test_the_cache_is_where_the_environment_says_and_only_for_remote_registries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in ("MREG_CACHE_DIR", "MREG_NO_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home" / ".cache" / "mreg"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # not absolute: ignored, as the XDG spec says
    assert cache_root() == tmp_path / "home" / ".cache" / "mreg"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "mreg"
    monkeypatch.setenv("MREG_CACHE_DIR", str(tmp_path / "chosen"))
    found = registry_cache("s3://models/registry")
    assert found is not None
    assert found.root == tmp_path / "chosen" / "records"
    assert registry_cache("gs://models/registry") is not None
    assert registry_cache((tmp_path / "registry").as_uri()) is None
    monkeypatch.setenv("MREG_NO_CACHE", "0")
    assert registry_cache("s3://models/registry") is not None
    monkeypatch.setenv("MREG_NO_CACHE", "1")
    assert cache_root() is None
    assert registry_cache("s3://models/registry") is None


def test_a_registry_is_told_apart_by_what_decides_which_server_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    seen = {registry_identity("s3://models/registry"), registry_identity("s3://models/other")}
    seen.add(registry_identity("s3://models/registry", endpoint_url="http://minio:9000"))
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    seen.add(registry_identity("s3://models/registry"))
    assert registry_identity("s3://models/registry", endpoint_url="http://minio:9000") in seen  # explicit wins
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9001")
    seen.add(registry_identity("s3://models/registry"))
    monkeypatch.setenv("AWS_PROFILE", "staging")
    seen.add(registry_identity("s3://models/registry"))
    seen.add(registry_identity("gs://models/registry"))
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:4443")
    seen.add(registry_identity("gs://models/registry"))
    assert len(seen) == 8
    assert registry_identity("file:///srv/registry") is None


def _fill_concurrently(root: str, worker: int, barrier: Barrier) -> None:
    """Put every version (in an order of this worker's own) and read each back at once; read others' too."""
    cache = RecordCache(Path(root), IDENTITY)
    records = {version: sealed(version, f"model {version}") for version in range(1, VERSIONS + 1)}
    order = random.Random(worker)  # noqa: S311 (an order of writes, no secret)
    barrier.wait()  # every writer starts at once, so that they race for the same entries
    for _ in range(ROUNDS):
        versions = list(records)
        order.shuffle(versions)
        for version in versions:
            cache.put(NAME, version, records[version])
            assert cache.get(NAME, version) == records[version], f"worker {worker} lost version {version}"
            other = order.randint(1, VERSIONS)
            assert cache.get(NAME, other) in (None, records[other]), f"worker {worker} read a wrong version {other}"


def test_concurrent_writers_in_processes_never_leave_or_read_a_partial_entry(tmp_path: Path) -> None:
    root = tmp_path / "records"
    context = multiprocessing.get_context("fork")  # children start at once, with mreg already imported
    barrier = context.Barrier(WORKERS)
    processes = [
        context.Process(target=_fill_concurrently, args=(str(root), worker, barrier)) for worker in range(WORKERS)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    assert [process.exitcode for process in processes] == [0] * WORKERS
    cache = RecordCache(root, IDENTITY)
    assert all(cache.get(NAME, v) == sealed(v, f"model {v}") for v in range(1, VERSIONS + 1))
    assert not list(root.rglob(".incoming-*"))
    assert len(list((cache.directory / "records").iterdir())) == VERSIONS


LOOKUP = """
import json, sys
from pathlib import Path
from mreg.records import open_record_store
from mreg.records._cache import registry_cache

store = open_record_store(sys.argv[1], Path.cwd())
store.cache = registry_cache(store.where)
record = store.get("iris-rf", 3)
heavy = ("boto3", "botocore", "google.cloud.storage", "google.auth")
print(json.dumps({"digest": record.digest, "client": store._client is not None,
                  "imported": [name for name in heavy if name in sys.modules]}))
"""


@pytest.mark.parametrize("uri", ["s3://models/registry", "gs://models/registry"])
def test_a_cache_hit_on_a_bucket_makes_no_client_and_imports_no_cloud_library(
    uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in [key for key in os.environ if key.startswith(("AWS_", "MREG_"))]:
        monkeypatch.delenv(key)
    settings = {
        "MREG_CACHE_DIR": str(tmp_path / "cache"),
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",  # nothing listens: a request would fail
        "AWS_ACCESS_KEY_ID": "mreg-test-key",
        "AWS_SECRET_ACCESS_KEY": "mreg-test-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_MAX_ATTEMPTS": "1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "STORAGE_EMULATOR_HOST": "http://127.0.0.1:9",
        "NO_GCE_CHECK": "True",
    }
    for key, value in settings.items():
        monkeypatch.setenv(key, value)
    cache = registry_cache(open_record_store(uri, tmp_path).where)  # the same environment as the child's
    assert cache is not None
    record = sealed(3)
    cache.put(NAME, 3, record)
    result = subprocess.run(
        [sys.executable, "-c", LOOKUP, uri], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"digest": record.digest, "client": False, "imported": []}
