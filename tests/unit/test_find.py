"""`find` (`mreg list --filter --order-by`) over the version index, on the file backend: the same answers as
evaluating every record, through chunks, the tail and records the index lacks; an index that lags or lies is
corrected by the re-check; yanked versions and paging; the CLI table."""

from __future__ import annotations

import json
import multiprocessing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mreg.errors import InvalidInputError, MregError, StorageError
from mreg.records import Record, _index
from mreg.records._filter import VersionRow, parse_filter, parse_order
from mreg.records.file import FileRecordStore
from mreg.registry import Registry
from tests.support import make_record, mreg_in_process

NAME = "iris-rf"
COUNT = 23


def made(version: int) -> Record:
    """Versions with varied metrics, params, packages and creation times."""
    record = make_record(version)
    packages = {"shared": [f"scikit-learn==1.{version % 5}.0", "numpy==1.26.4"], "train": [], "serve": []}
    return record.model_copy(
        update={
            "metrics": {"accuracy": round(0.5 + (version * 7 % 23) / 50, 3)} | ({"f1": 0.1} if version % 2 else {}),
            "params": {"depth": str(version % 4)},
            "packages": packages,
            "created_at": datetime(2026, 1, 1, tzinfo=UTC) + timedelta(days=version),
        }
    )


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Registry:
    monkeypatch.setattr(_index, "CHUNK", 5)  # several sealed chunks and a tail
    registry = Registry(FileRecordStore(tmp_path / "registry"))
    for _ in range(COUNT):
        registry.create(NAME, made)
    for version in range(1, COUNT + 1, 3):
        registry.tag(f"{NAME}:{version}", set={"stage": "prod" if version % 2 else "dev"})
    registry.alias(NAME, "production", 7)
    registry.yank(f"{NAME}:10", "broken")
    return registry


def brute_force(registry: Registry, text: str | None, order: str | None, *, include_yanked: bool = False) -> list[int]:
    """The versions `find` must return, from every record and annotation read directly."""
    rows = []
    for version in range(1, COUNT + 1):
        record = registry.get(f"{NAME}:{version}")
        annotations = registry.annotations(record)
        aliases = frozenset(a.alias for a in registry.aliases(NAME) if a.version == version)
        rows.append(
            VersionRow(
                version=version,
                created=record.created_at,
                metrics=record.metrics,
                params=record.params,
                tags=annotations.tags,
                aliases=aliases,
                yanked=annotations.yanked is not None,
                packages=_index.packages_of(record),
            )
        )
    parsed = parse_filter(text) if text else None
    skip = not include_yanked and (parsed is None or "yanked" not in parsed.fields())
    rows = [row for row in rows if not (skip and row.yanked) and (parsed is None or parsed.matches(row))]
    ordered = parse_order(order).sort(rows) if order else sorted(rows, key=lambda row: -row.version)
    return [row.version for row in ordered]


QUERIES = [
    (None, None),
    ("metrics.accuracy >= 0.8", None),
    ("metrics.accuracy >= 0.8", "metrics.accuracy asc"),
    ("tags.stage = 'prod' or alias = 'production'", "created desc"),
    ("package.scikit-learn >= '1.3' and not params.depth in ('0', '1')", "version asc"),
    ("metrics.f1 > 0 and version < 12", "metrics.accuracy"),
    ("yanked", None),
    ("created >= '2026-01-15'", "params.depth asc"),
    (None, "metrics.f1 desc"),
]


@pytest.mark.parametrize(("text", "order"), QUERIES)
def test_find_answers_as_reading_every_record_does(registry: Registry, text: str | None, order: str | None) -> None:
    expected = brute_force(registry, text, order)
    assert [info.record.version for info in registry.find(NAME, text, order, limit=100)] == expected
    assert [info.record.version for info in registry.find(NAME, text, order, limit=4)] == expected[:4]


def test_chunks_hold_the_older_versions_and_the_tail_the_newer(registry: Registry) -> None:
    root = registry._records.root  # type: ignore[attr-defined]
    chunks = sorted(path.name for path in (root / NAME / "index" / "rows").iterdir())
    assert chunks == [f"{first:010d}.json" for first in (1, 6, 11, 16)]
    data, _ = registry._records._read_document(("models", NAME, "index", "tail"))
    assert data is not None
    tail = json.loads(data)
    assert (tail["sealed"], [row["v"] for row in tail["rows"]]) == (20, [21, 22, 23])


def test_yanked_versions_only_when_asked(registry: Registry) -> None:
    assert 10 not in [info.record.version for info in registry.find(NAME, limit=100)]
    assert 10 in [info.record.version for info in registry.find(NAME, limit=100, include_yanked=True)]
    assert [info.record.version for info in registry.find(NAME, "yanked = true")] == [10]
    assert [info.record.version for info in registry.find(NAME, before=12, limit=3)] == [11, 9, 8]


def test_versions_the_index_lacks_are_read_from_their_records(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(*args: object) -> None:
        raise StorageError("the index is unreachable.")

    with monkeypatch.context() as patched:  # registers whose index update failed (or that died before it)
        patched.setattr(_index, "add_version", fail)
        for _ in range(4):
            registry.create(NAME, made)
    found = [info.record.version for info in registry.find(NAME, "version > 22", "version asc", limit=100)]
    assert found == [23, 24, 25, 26, 27]
    registry.create(NAME, made)  # version 28 completes a chunk: its writer reads the missing records
    data, _ = registry._records._read_document(("models", NAME, "index", "tail"))
    assert data is not None
    assert json.loads(data)["sealed"] == 25
    assert [info.record.version for info in registry.find(NAME, "version > 22", "version asc")] == list(range(23, 29))


def test_an_index_that_lies_is_corrected_by_the_recheck(registry: Registry) -> None:
    store = registry._records
    data, token = store._read_document(("models", NAME, "index", "tail"))
    assert data is not None
    tail = json.loads(data)
    for row in tail["rows"]:
        row["m"] = {"accuracy": 99.0}
    assert store._swap_document(("models", NAME, "index", "tail"), json.dumps(tail).encode(), token)
    entries, token = store._read_document(("models", NAME, "index", "annotations"))
    assert entries is not None
    document = json.loads(entries)
    document["versions"]["2"] = {"r": 99, "t": {"stage": "prod"}, "y": False}
    assert store._swap_document(("models", NAME, "index", "annotations"), json.dumps(document).encode(), token)
    assert [info.record.version for info in registry.find(NAME, "metrics.accuracy > 90")] == []
    assert 2 not in [info.record.version for info in registry.find(NAME, "tags.stage = 'prod'", limit=100)]
    assert [i.record.version for i in registry.find(NAME, "tags.stage = 'prod'", limit=100)] == brute_force(
        registry, "tags.stage = 'prod'", None
    )


def test_a_writer_that_dies_mid_change_leaves_the_version_read_directly(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    def die(*args: object) -> None:
        raise StorageError("the process died here.")

    with monkeypatch.context() as patched:
        patched.setattr(_index, "note_annotations", die)
        with pytest.raises(MregError):
            registry.tag(f"{NAME}:2", set={"owner": "ml"})
    marks, pending = _index.read_marks(registry._records, NAME)
    assert pending == {2}
    assert "owner" not in marks.get(2, _index.Marks(0, {}, False)).tags
    assert [info.record.version for info in registry.find(NAME, "tags.owner = 'ml'")] == [2]
    registry._records.reindex(NAME, [], markers_older_than=datetime.now(UTC) + timedelta(seconds=1))  # as gc does
    marks, pending = _index.read_marks(registry._records, NAME)
    assert pending == set()
    assert marks[2].tags["owner"] == "ml"


def _register_many(root: str, count: int) -> None:
    registry = Registry(FileRecordStore(Path(root)))
    for _ in range(count):
        registry.create(NAME, made)


def test_concurrent_registers_leave_a_complete_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_index, "CHUNK", 4)
    root = tmp_path / "registry"
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_register_many, args=(str(root), 5)) for _ in range(6)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    store = FileRecordStore(root)
    data, _ = store._read_document(("models", NAME, "index", "tail"))
    assert data is not None
    tail = json.loads(data)
    chunked = [
        row["v"] for path in (root / NAME / "index" / "rows").iterdir() for row in json.loads(path.read_text())["rows"]
    ]
    assert sorted(chunked) == list(range(1, 29))
    assert (tail["sealed"], [row["v"] for row in tail["rows"]]) == (28, [29, 30])
    assert sorted(_index.read_facts(store, NAME, 30)) == list(range(1, 31))


def test_the_cli_lists_aliases_metrics_and_tags(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = (tmp_path / "registry").as_uri()
    args = ["--registry", uri, "list", NAME, "--filter", "tags.stage = 'prod'", "--order-by", "metrics.accuracy"]
    code, out, err = mreg_in_process(*args, "--limit", "4", cwd=tmp_path, monkeypatch=monkeypatch)
    assert (code, err) == (0, "")
    header, *rows = out.splitlines()
    assert header.split() == ["VERSION", "CREATED", "ALIASES", "METRICS", "TAGS", "SHA256"]
    assert rows[0].split() == ["iris-rf:13", "2026-01-14T00:00:00+00:00", "-", "accuracy=0.94,", "f1=0.1",
                               "stage=prod", "cdcdcdcdcdcd"]  # fmt: skip
    assert [row.split()[0] for row in rows] == ["iris-rf:13", "iris-rf:19", "iris-rf:1", "iris-rf:7"]
    assert rows[3].split()[2] == "production"
    code, out, _ = mreg_in_process("--registry", uri, "list", NAME, "--json", "--limit", "1", cwd=tmp_path,
                                   monkeypatch=monkeypatch)  # fmt: skip
    assert code == 0
    assert [(entry["version"], entry["aliases"]) for entry in json.loads(out)] == [(23, [])]
    code, _, err = mreg_in_process("--registry", uri, "list", NAME, "--filter", "metrics.accuracy >> 1",
                                   cwd=tmp_path, monkeypatch=monkeypatch)  # fmt: skip
    assert code == 2
    assert err == "error: filter: column 19: expected a value after '>', found '>'.\n"


def test_a_bad_filter_is_refused_before_anything_is_read(registry: Registry) -> None:
    with pytest.raises(InvalidInputError, match=r"^order-by: column 1: cannot order by 'alias'"):
        registry.find(NAME, None, "alias")
