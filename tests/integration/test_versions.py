"""Working with versions on every backend (a directory, S3 over HTTP to moto's server, the GCS emulator):
metadata, tags and descriptions, yank and unyank, filters over the index, diff, events and gc, with races
between real processes: concurrent tag changes lose nothing, and gc running while registers run deletes none
of their models."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import time
from datetime import timedelta
from pathlib import Path

import pytest

from mreg.errors import InvalidInputError
from mreg.records import Record, _index, open_record_store
from mreg.registry import Registry
from mreg.storage import open_object_store
from tests.support import make_record, mreg_in_process

NAME = "iris-rf"
WORKERS, CHANGES = 8, 4


def open_registry(root: str) -> Registry:
    """The registry of a store root, with its object store (as a spec would configure them)."""
    records = open_record_store(f"{root}/registry", Path("/"))
    return Registry(records, objects=open_object_store(f"{root}/objects"))


def register(registry: Registry, content: bytes, tmp: Path, **fields: object) -> Record:
    """Store the bytes and write the next version pointing at them, as `pipeline.register` does."""
    path = tmp / f"model-{hashlib.sha256(content).hexdigest()[:12]}.joblib"
    path.write_bytes(content)
    model = registry.store_model(path)
    return registry.create(NAME, lambda version: make_record(version).model_copy(update={"model": model, **fields}))


def object_exists(registry: Registry, record: Record) -> bool:
    try:
        return open_object_store(record.model.uri).digest(record.model.uri)[0] == record.model.sha256
    except Exception:
        return False


@pytest.fixture
def registry(store_root: str, tmp_path: Path) -> Registry:
    registry = open_registry(store_root)
    for number in range(1, 7):
        metrics = {"accuracy": round(0.8 + number / 100, 2)}
        register(registry, f"model {number}".encode(), tmp_path, metrics=metrics, params={"depth": str(number % 3)})
    return registry


def test_every_operation(registry: Registry, store_root: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MREG_ACTOR", "ci")
    assert registry.get(f"{NAME}:3").metrics == {"accuracy": 0.83}
    registry.tag(f"{NAME}:5", set={"stage": "prod"})
    registry.describe(f"{NAME}:5", "the one")
    registry.alias(NAME, "production", 5)
    with pytest.raises(InvalidInputError, match="is where iris-rf@production points"):
        registry.yank(f"{NAME}:5", "bad")
    registry.yank(f"{NAME}:6", "leaked labels")
    assert registry.get(NAME).version == 5
    with pytest.raises(InvalidInputError, match="is yanked"):
        registry.alias(NAME, "staging", 6)
    found = registry.find(NAME, "metrics.accuracy > 0.82", "metrics.accuracy desc", limit=10)
    assert [(info.record.version, info.aliases, dict(info.annotations.tags)) for info in found] == [
        (5, ("production",), {"stage": "prod"}),
        (4, (), {}),
        (3, (), {}),
    ]
    assert [info.record.version for info in registry.find(NAME, "yanked")] == [6]
    registry.unyank(f"{NAME}:6")
    assert registry.get(NAME).version == 6
    changes = {change.field: (change.old, change.new) for change in registry.diff(f"{NAME}:1", f"{NAME}:6").changes}
    assert changes["metrics.accuracy"] == (0.81, 0.86)
    assert changes["params.depth"] == ("1", "0")
    kinds = [event.type.removeprefix("io.mreg.") for event in registry.events(NAME)]
    assert kinds == [*["version.registered"] * 6, "version.tagged", "version.described", "alias.moved",
                     "version.yanked", "version.unyanked"]  # fmt: skip
    assert registry.events()[0].source == f"{store_root}/registry"
    code, out, _ = mreg_in_process("--registry", f"{store_root}/registry", "show", f"{NAME}:5", "--json",
                                   cwd=tmp_path, monkeypatch=monkeypatch)  # fmt: skip
    assert code == 0
    assert json.loads(out)["annotations"]["description"] == "the one"


def test_gc_and_purge(registry: Registry, store_root: str, tmp_path: Path) -> None:
    objects = open_object_store(f"{store_root}/objects")
    (tmp_path / "orphan.bin").write_bytes(b"an upload whose register failed")
    (tmp_path / "reused.bin").write_bytes(b"an upload whose register failed, then stored again")
    left = registry.store_model(tmp_path / "orphan.bin")
    reused = registry.store_model(tmp_path / "reused.bin")
    registry.yank(f"{NAME}:2", "bad")
    time.sleep(1.2)
    assert registry.store_model(tmp_path / "reused.bin").uri == reused.uri  # the same object, young again
    report = registry.gc(grace=timedelta(seconds=1), purge_yanked_older_than=timedelta(0))
    assert report.purged == [f"{NAME}:2"]
    deleted = {found.uri for found in report.deleted}
    young = {found.uri for found in report.young}
    assert set(objects.references(left.uri, left.sha256)) & deleted
    assert not set(objects.references(reused.uri, reused.sha256)) & deleted
    assert set(objects.references(reused.uri, reused.sha256)) & young
    assert objects.digest(reused.uri) == (reused.sha256, reused.size)
    assert not object_exists(registry, registry.get(f"{NAME}:2"))
    assert all(object_exists(registry, registry.get(f"{NAME}:{v}")) for v in (1, 3, 4, 5, 6))
    checks = registry.verify(registry.get(f"{NAME}:2"), lambda: pytest.fail("a purged version needs no engine"))
    assert checks[-1].detail.startswith("purged by gc")
    again = {found.uri for found in registry.gc(grace=timedelta(seconds=1)).deleted}
    assert again <= set(objects.references(reused.uri, reused.sha256))  # only what has aged since
    assert registry.events()[-1].type == "io.mreg.gc.swept"


def _tag(root: str, worker: int) -> None:
    registry = open_registry(root)
    for change in range(CHANGES):
        registry.tag(f"{NAME}:1", set={f"w{worker}-{change}": "x"})


def test_concurrent_tag_changes_from_processes_lose_nothing(registry: Registry, store_root: str) -> None:
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_tag, args=(store_root, n)) for n in range(WORKERS)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=300)
        assert worker.exitcode == 0
    expected = {f"w{n}-{c}": "x" for n in range(WORKERS) for c in range(CHANGES)}
    assert registry.annotations(f"{NAME}:1").tags == expected
    assert [info.record.version for info in registry.find(NAME, "tags.w7-3 = 'x'")] == [1]
    marks, pending = _index.read_marks(registry._records, NAME)
    assert (marks[1].tags, pending) == (expected, set())


def _register(root: str, scratch: str, count: int) -> None:
    registry = open_registry(root)
    for number in range(count):
        register(registry, f"concurrent {number}".encode() * 500, Path(scratch))


def test_gc_while_registers_run_deletes_none_of_their_models(
    registry: Registry, store_root: str, tmp_path: Path
) -> None:
    orphan = tmp_path / "orphan.bin"
    orphan.write_bytes(b"left behind")
    left = registry.store_model(orphan)
    time.sleep(3.2)
    context = multiprocessing.get_context("fork")
    registering = context.Process(target=_register, args=(store_root, str(tmp_path), 8))
    registering.start()
    sweeps: list[set[str]] = []
    while registering.is_alive() or not sweeps:
        sweeps.append({found.uri for found in registry.gc(grace=timedelta(seconds=3)).deleted})
    registering.join(timeout=300)
    assert registering.exitcode == 0
    assert len(sweeps) > 1
    assert sweeps[0]
    assert sweeps[0] <= set(open_object_store(f"{store_root}/objects").references(left.uri, left.sha256))
    versions = registry.find(NAME, limit=100)
    assert len(versions) == 14
    assert all(object_exists(registry, info.record) for info in versions)
