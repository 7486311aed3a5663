"""The gs:// record store and object store against a real Cloud Storage emulator (fake-gcs-server) over
HTTP: versions, immutability, alias compare-and-swap under threads and processes, content addressing,
integrity, cleanup after failures, and an outage in the middle of an upload.

Not tested here, because the emulator does not do it: server-side rejection of a wrong CRC32C, and
preconditions on deletes and reads.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from mreg._gcs import GsLocation, parse_gs_uri, store_location, translate
from mreg.errors import IntegrityError, NotFoundError, StorageError
from mreg.records import Record
from mreg.records.gs import GsRecordStore
from mreg.storage.gs import GsObjectStore
from tests.support import REPO, free_port, make_record
from tests.support.faults import Proxy, up_again_after
from tests.support.gcs import fake_gcs

pytestmark = pytest.mark.gcs

MiB = 1024 * 1024
DIGEST = "sha256:" + "ab" * 32


def emulator_env(endpoint: str) -> dict[str, str]:
    """What points Google's client at the emulator, with no credential lookup on the network."""
    return {"STORAGE_EMULATOR_HOST": endpoint, "NO_GCE_CHECK": "True", "GOOGLE_CLOUD_PROJECT": "test"}


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with fake_gcs(tmp_path_factory.mktemp("gcs")) as endpoint, pytest.MonkeyPatch.context() as patch:
        for key, value in emulator_env(endpoint).items():
            patch.setenv(key, value)
        yield endpoint


def make_client() -> Any:
    """A client of the emulator STORAGE_EMULATOR_HOST names, for writing behind the stores' backs."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage  # type: ignore[import-untyped]

    return storage.Client(project="test", credentials=AnonymousCredentials())  # type: ignore[no-untyped-call]


@pytest.fixture
def client(emulator: str) -> Any:
    return make_client()


@pytest.fixture
def bucket(client: Any) -> str:
    """A new, empty bucket for one test."""
    name = f"mreg-{uuid.uuid4().hex[:20]}"
    client.create_bucket(name)
    return name


@pytest.fixture
def location(bucket: str) -> GsLocation:
    return store_location(f"gs://{bucket}/team")


def gs_record(version: int = 1, sha: str = "cd" * 32) -> Record:
    return make_record(version, sha=sha, uri=f"gs://models/team/blobs/{sha[:32]}")


def names(client: Any, bucket: str) -> list[str]:
    return sorted(blob.name for blob in client.list_blobs(bucket))


def random_file(path: Path, size: int) -> bytes:
    data = os.urandom(size)
    path.write_bytes(data)
    return data


# -- URIs and errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("s3://bucket/team", "is not a gs:// URI"),
        ("gs://Bucket/team", "invalid bucket"),
        ("gs://192.168.0.1/team", "IP addresses"),
        ("gs://google-models/team", "'google'"),
        ("gs://goog-models/team", "'goog'"),
        ("gs://models/../team", "invalid prefix"),
    ],
)
def test_invalid_gs_uris_are_refused_with_the_reason(uri: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_gs_uri(uri)


def test_a_gs_uri_splits_into_bucket_and_prefix() -> None:
    location = parse_gs_uri("gs://team_models.example/registry/v1/")
    assert (location.bucket, location.prefix) == ("team_models.example", "registry/v1")
    assert location.uri(location.key("models", "x")) == "gs://team_models.example/registry/v1/models/x"


def test_client_errors_become_mreg_errors() -> None:
    import requests
    from google.api_core import exceptions

    unreachable = translate(requests.ConnectionError("connection refused"), "read gs://b/k")
    assert isinstance(unreachable, StorageError)
    assert "unreachable" in str(unreachable)
    missing = translate(exceptions.NotFound("no such bucket"), "read gs://b/k")  # type: ignore[no-untyped-call]
    assert isinstance(missing, NotFoundError)
    assert "bucket" in str(missing)
    denied = translate(exceptions.Forbidden("denied"), "read gs://b/k")  # type: ignore[no-untyped-call]
    assert type(denied) is StorageError
    assert "access denied" in str(denied)


def test_a_missing_bucket_is_named_as_such(emulator: str) -> None:
    store = GsRecordStore(store_location(f"gs://mreg-missing-{uuid.uuid4().hex[:12]}/team"))
    with pytest.raises(NotFoundError, match="bucket exists"):
        store.latest_version("iris-rf")


# -- records -----------------------------------------------------------------------------------------


def test_versions_are_consecutive_and_a_create_never_overwrites(location: GsLocation, client: Any) -> None:
    store = GsRecordStore(location)
    made = [store.create("iris-rf", make_record) for _ in range(3)]
    assert [record.version for record in made] == [1, 2, 3]
    assert store.get("iris-rf") == made[2]
    assert store.get("iris-rf", 2) == made[1]
    assert store.models() == ["iris-rf"]
    key = f"team/models/iris-rf/versions/{1:010d}.json"
    first = client.bucket(location.bucket).blob(key).download_as_bytes()
    assert not store._create("iris-rf", 1, gs_record(1, "ee" * 32).sealed().to_json().encode())
    assert client.bucket(location.bucket).blob(key).download_as_bytes() == first


def test_a_create_that_loses_the_race_is_never_taken_for_a_win(location: GsLocation) -> None:
    """Identical bytes written by a second writer on its first attempt are a lost race, not its own write
    (only a create sent again after a transient failure reads back and compares)."""
    store = GsRecordStore(location)
    data = gs_record().sealed().to_json().encode()
    assert store._create("iris-rf", 1, data)
    assert not store._create("iris-rf", 1, data)
    assert not store._create("iris-rf", 1, data.replace(b"3.11.2", b"3.11.3"))
    assert store.get("iris-rf", 1).python == "3.11.2"


def test_a_lagging_or_missing_latest_hint_is_corrected(location: GsLocation, client: Any) -> None:
    store = GsRecordStore(location)
    for _ in range(3):
        store.create("iris-rf", make_record)
    hint = client.bucket(location.bucket).blob("team/models/iris-rf/latest")
    hint.upload_from_string(b"1")
    assert store.latest_version("iris-rf") == 3
    hint.delete()
    assert store.latest_version("iris-rf") == 3
    assert store.create("iris-rf", make_record).version == 4


def test_an_edited_record_is_refused(location: GsLocation, client: Any) -> None:
    store = GsRecordStore(location)
    store.create("iris-rf", make_record)
    blob = client.bucket(location.bucket).blob(f"team/models/iris-rf/versions/{1:010d}.json")
    edited = json.loads(blob.download_as_bytes())
    edited["python"] = "3.12.0"
    blob.upload_from_string(json.dumps(edited).encode())
    with pytest.raises(IntegrityError, match="changed after it was written"):
        store.get("iris-rf", 1)


def test_concurrent_alias_moves_lose_nothing(location: GsLocation) -> None:
    store = GsRecordStore(location)
    for _ in range(8):
        store.create("iris-rf", make_record)

    def move(version: int) -> None:
        GsRecordStore(location).move_alias("iris-rf", "prod", version, actor=f"thread-{version}")

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(move, range(1, 9)))
    alias = store.alias("iris-rf", "prod")
    moves = [event.version or 0 for event in alias.history]
    assert sorted(moves) == list(range(1, 9))  # every move is there, once
    assert [event.previous for event in alias.history] == [None, *moves[:-1]]  # each built on the one before
    assert alias.version == moves[-1]
    assert store.aliases("iris-rf") == [alias]


CREATE_ONE = """
import sys, time
from pathlib import Path
from mreg._gcs import store_location
from mreg.records import Record
from mreg.records.gs import GsRecordStore

uri, template, ready, go = sys.argv[1], Record.model_validate_json(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])
store = GsRecordStore(store_location(uri))
store.latest_version(template.name)  # the client is made and connected before the race starts
ready.touch()
while not go.exists():
    time.sleep(0.005)
print(store.create(template.name, lambda version: template.model_copy(update={"version": version})).version)
"""


def test_concurrent_processes_get_consecutive_versions(location: GsLocation, tmp_path: Path) -> None:
    count = 16
    go = tmp_path / "go"
    shas = [hashlib.sha256(b"one model").hexdigest()] * count  # identical records: each still gets a version
    argv = [sys.executable, "-c", CREATE_ONE, location.uri(location.prefix)]
    processes = [
        subprocess.Popen(
            [*argv, gs_record(1, sha).to_json(), str(tmp_path / f"ready-{number}"), str(go)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for number, sha in enumerate(shas)
    ]
    try:
        deadline = time.monotonic() + 60
        while len(list(tmp_path.glob("ready-*"))) < count:
            assert all(process.poll() is None for process in processes), [p.communicate() for p in processes]
            assert time.monotonic() < deadline
            time.sleep(0.02)
        go.touch()
        outputs = [process.communicate(timeout=60) for process in processes]
    finally:
        for process in processes:
            process.kill()
    assert all(process.returncode == 0 for process in processes), outputs
    assert sorted(int(stdout) for stdout, _ in outputs) == list(range(1, count + 1))
    store = GsRecordStore(location)
    assert sorted(record.model.sha256 for record in store.versions("iris-rf", limit=count)) == sorted(shas)


# -- objects -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1000, 20 * MiB + 5])
def test_put_and_fetch_round_trip(size: int, location: GsLocation, client: Any, tmp_path: Path) -> None:
    data = random_file(tmp_path / "model.bin", size)
    sha256 = hashlib.sha256(data).hexdigest()
    store = GsObjectStore(location)
    sent: list[int] = []
    stored = store.put_file(tmp_path / "model.bin", on_progress=sent.append)
    assert (stored.sha256, stored.size, sum(sent)) == (sha256, size, size)
    bucket, _, key = stored.uri.removeprefix("gs://").partition("/")
    assert bucket == location.bucket
    assert key.startswith("team/blobs/")
    blob = client.bucket(bucket).get_blob(key)
    assert (blob.size, blob.metadata) == (size, {"mreg-sha256": sha256})
    index = json.loads(client.bucket(bucket).blob(f"team/sha256/{sha256}").download_as_bytes())
    assert index == {"sha256": sha256, "size": size, "blob": key}
    destination = tmp_path / "pulled" / "model.bin"
    received: list[int] = []
    store.fetch(stored.uri, sha256, destination, on_progress=received.append)
    assert destination.read_bytes() == data
    assert sum(received) == size
    assert store.digest(stored.uri) == (sha256, size)


def test_the_same_bytes_are_stored_once(location: GsLocation, client: Any, tmp_path: Path) -> None:
    data = random_file(tmp_path / "a.bin", 3 * MiB)
    (tmp_path / "b.bin").write_bytes(data)
    store = GsObjectStore(location)
    first = store.put_file(tmp_path / "a.bin")
    second = store.put_file(tmp_path / "b.bin")
    assert second == first
    sha256 = hashlib.sha256(data).hexdigest()
    assert names(client, location.bucket) == sorted([first.uri.split("/", 3)[3], f"team/sha256/{sha256}"])


def test_a_claim_whose_blob_is_gone_is_taken_over(location: GsLocation, client: Any, tmp_path: Path) -> None:
    random_file(tmp_path / "model.bin", 1000)
    store = GsObjectStore(location)
    first = store.put_file(tmp_path / "model.bin")
    client.bucket(location.bucket).blob(first.uri.split("/", 3)[3]).delete()
    second = store.put_file(tmp_path / "model.bin")
    assert second.uri != first.uri
    assert store.digest(second.uri) == (first.sha256, 1000)


def test_tampered_bytes_are_refused_and_the_destination_is_untouched(
    location: GsLocation, client: Any, tmp_path: Path
) -> None:
    data = random_file(tmp_path / "model.bin", 1000)
    store = GsObjectStore(location)
    stored = store.put_file(tmp_path / "model.bin")
    client.bucket(location.bucket).blob(stored.uri.split("/", 3)[3]).upload_from_string(bytes(reversed(data)))
    destination = tmp_path / "pulled" / "model.bin"
    destination.parent.mkdir()
    destination.write_bytes(b"the previous model")
    with pytest.raises(IntegrityError, match="hashes to"):
        store.fetch(stored.uri, stored.sha256, destination)
    assert destination.read_bytes() == b"the previous model"
    assert list(destination.parent.iterdir()) == [destination]


def test_digest_catches_a_replaced_blob(location: GsLocation, client: Any, tmp_path: Path) -> None:
    random_file(tmp_path / "model.bin", 1000)
    store = GsObjectStore(location)
    stored = store.put_file(tmp_path / "model.bin")
    replacement = os.urandom(1000)
    client.bucket(location.bucket).blob(stored.uri.split("/", 3)[3]).upload_from_string(replacement)
    assert store.digest(stored.uri) == (hashlib.sha256(replacement).hexdigest(), 1000)


def test_fetching_a_missing_object_is_not_found(location: GsLocation, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        GsObjectStore(location).fetch(f"gs://{location.bucket}/team/blobs/gone", "0" * 64, tmp_path / "model.bin")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("stop_after", "error"),
    [(8 * MiB, RuntimeError), (20 * MiB + 5, KeyboardInterrupt)],
    ids=["midway", "after-the-last-byte"],
)
def test_a_failed_upload_leaves_no_blob(
    stop_after: int, error: type[BaseException], location: GsLocation, client: Any, tmp_path: Path
) -> None:
    random_file(tmp_path / "model.bin", 20 * MiB + 5)
    sent: list[int] = []

    def progress(size: int) -> None:
        sent.append(size)
        if sum(sent) >= stop_after:
            raise error("stopped")

    with pytest.raises(error):
        GsObjectStore(location).put_file(tmp_path / "model.bin", on_progress=progress)
    assert sum(sent) == stop_after
    assert names(client, location.bucket) == []


def test_an_outage_mid_upload_is_waited_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The network to the service goes down for 4 s in the third of five chunks; the upload resumes there.

    A proxy goes down rather than the emulator: fake-gcs-server keeps upload sessions in memory, so a restarted
    emulator has lost the session (the service keeps one for a week).
    """
    size = 40 * MiB
    data = random_file(tmp_path / "model.bin", size)
    port = free_port()
    with Proxy(port, down_after_bytes=19 * MiB) as proxy:
        proxy.on_down = up_again_after(proxy, 4.0)
        endpoint = f"http://127.0.0.1:{proxy.port}"
        with fake_gcs(tmp_path / "gcs", port=port, external_url=endpoint):
            for key, value in emulator_env(endpoint).items():
                monkeypatch.setenv(key, value)
            bucket = f"mreg-{uuid.uuid4().hex[:20]}"
            make_client().create_bucket(bucket)
            store = GsObjectStore(store_location(f"gs://{bucket}/team"))
            started = time.monotonic()
            stored = store.put_file(tmp_path / "model.bin")
            assert time.monotonic() - started > 4.0  # it did wait the outage out
            assert proxy.forwarded < size + 9 * MiB  # no more than the interrupted chunk was sent again
            store.fetch(stored.uri, stored.sha256, tmp_path / "pulled.bin")
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert (tmp_path / "pulled.bin").read_bytes() == data
