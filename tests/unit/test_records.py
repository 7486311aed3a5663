"""The record model and the file record store: versions, immutability, damaged records."""

from __future__ import annotations

import json
import multiprocessing
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mreg.errors import InvalidInputError, NotFoundError, StorageError
from mreg.records import FileRecordStore, ImageRecord, ModelFile, Record, parse_model_ref

DIGEST = "sha256:" + "ab" * 32


def make_record(name: str = "iris-rf", version: int = 1, sha: str = "cd" * 32) -> Record:
    image = ImageRecord(
        ref="localhost:5000/iris-rf:train-0123", image=f"localhost:5000/iris-rf@{DIGEST}", digest=DIGEST
    )
    return Record(
        name=name,
        version=version,
        model=ModelFile(uri=f"file:///store/sha256/{sha}", sha256=sha, size=12, filename="model.joblib"),
        images={"train": image, "serve": image},
        packages={"shared": ["scikit-learn==1.3.2"], "train": [], "serve": ["fastapi==0.109.0"]},
        python="3.11",
        spec_sha256="ef" * 32,
        created_at=datetime(2026, 11, 29, 10, 0, tzinfo=UTC),
        git=None,
    )


def test_record_json_round_trip() -> None:
    record = make_record()
    data = json.loads(record.to_json())
    assert data["schema_version"] == 1
    assert data["created_at"] == "2026-11-29T10:00:00Z"
    assert data["images"]["serve"]["digest"] == DIGEST
    assert Record.model_validate_json(record.to_json()) == record


@pytest.mark.parametrize(
    ("field", "value"),
    [("name", "Bad Name"), ("version", 0), ("spec_sha256", "xyz")],
)
def test_record_refuses_bad_fields(field: str, value: object) -> None:
    data = json.loads(make_record().to_json())
    data[field] = value
    with pytest.raises(ValueError, match=field):
        Record.model_validate(data)


def test_versions_are_consecutive_and_latest_is_found(tmp_path: Path) -> None:
    store = FileRecordStore(tmp_path)
    for expected in (1, 2, 3):
        record = store.create("iris-rf", lambda v: make_record(version=v))
        assert record.version == expected
    assert store.get("iris-rf").version == 3
    assert store.get("iris-rf", 2).version == 2
    assert [r.version for r in store.versions("iris-rf")] == [3, 2, 1]
    assert [r.version for r in store.versions("iris-rf", limit=2)] == [3, 2]
    assert store.models() == ["iris-rf"]


def test_an_existing_version_is_never_overwritten(tmp_path: Path) -> None:
    store = FileRecordStore(tmp_path)
    store.create("iris-rf", lambda v: make_record(version=v, sha="11" * 32))
    (tmp_path / "iris-rf" / "latest").write_text("0\n")  # a stale hint points before version 1
    second = store.create("iris-rf", lambda v: make_record(version=v, sha="22" * 32))
    assert second.version == 2
    assert store.get("iris-rf", 1).model.sha256 == "11" * 32


def test_a_missing_hint_falls_back_to_a_listing(tmp_path: Path) -> None:
    store = FileRecordStore(tmp_path)
    for _ in range(3):
        store.create("iris-rf", lambda v: make_record(version=v))
    (tmp_path / "iris-rf" / "latest").unlink()
    assert store.get("iris-rf").version == 3
    assert store.create("iris-rf", lambda v: make_record(version=v)).version == 4


def _create_many(root: str, count: int) -> list[int]:
    store = FileRecordStore(Path(root))
    return [store.create("iris-rf", lambda v: make_record(version=v)).version for _ in range(count)]


def test_concurrent_writers_get_distinct_versions(tmp_path: Path) -> None:
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        results = pool.starmap(_create_many, [(str(tmp_path), 8)] * 4)
    versions = sorted(v for batch in results for v in batch)
    assert versions == list(range(1, 33))
    assert len(FileRecordStore(tmp_path).versions("iris-rf", limit=100)) == 32


def test_no_temporary_files_are_left(tmp_path: Path) -> None:
    store = FileRecordStore(tmp_path)
    store.create("iris-rf", lambda v: make_record(version=v))
    leftovers = [p.name for p in tmp_path.rglob(".*") if p.is_file() and p.name != ".gitignore"]
    assert leftovers == []


def test_a_failing_factory_leaves_no_record(tmp_path: Path) -> None:
    store = FileRecordStore(tmp_path)

    def explode(version: int) -> Record:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        store.create("iris-rf", explode)
    with pytest.raises(NotFoundError):
        store.get("iris-rf")


def test_unknown_model_and_version(tmp_path: Path) -> None:
    store = FileRecordStore(tmp_path)
    with pytest.raises(NotFoundError, match="model iris-rf has no versions"):
        store.get("iris-rf")
    store.create("iris-rf", lambda v: make_record(version=v))
    with pytest.raises(NotFoundError, match="model iris-rf has no version 7"):
        store.get("iris-rf", 7)


def test_damaged_and_newer_records_are_named(tmp_path: Path) -> None:
    store = FileRecordStore(tmp_path)
    for _ in range(3):
        store.create("iris-rf", lambda v: make_record(version=v))
    versions = tmp_path / "iris-rf" / "versions"
    first, second = versions / "0000000001.json", versions / "0000000002.json"
    first.chmod(0o644)
    first.write_text(first.read_text()[:40])
    second.chmod(0o644)
    second.write_text(json.dumps({**json.loads(second.read_text()), "schema_version": 2}))
    with pytest.raises(StorageError, match=r"record .*0000000001.json cannot be read"):
        store.get("iris-rf", 1)
    with pytest.raises(StorageError, match=r"0000000002.json has schema version 2; this mreg reads version 1"):
        store.get("iris-rf", 2)
    assert store.get("iris-rf", 3).version == 3


@pytest.mark.parametrize(
    ("text", "expected"),
    [("iris-rf", ("iris-rf", None)), ("iris-rf:12", ("iris-rf", 12))],
)
def test_parse_model_ref(text: str, expected: tuple[str, int | None]) -> None:
    assert parse_model_ref(text) == expected


@pytest.mark.parametrize("text", ["../etc", "iris:0", "iris:x", "Iris", ""])
def test_parse_model_ref_refuses(text: str) -> None:
    with pytest.raises(InvalidInputError):
        parse_model_ref(text)
