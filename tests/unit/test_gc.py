"""`gc` on the file backend: mark every record's objects, sweep what nothing references once older than the
grace period, purge long-yanked versions (records stay, `verify` says purged), and never delete the model of
a register running at the same time."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import time
from datetime import timedelta
from pathlib import Path

import pytest

from mreg import pipeline
from mreg.engine import Engine
from mreg.errors import InvalidInputError
from mreg.records import Record
from mreg.registry import Registry
from mreg.spec import load_spec
from tests.support import copy_example, mreg_in_process, save_build

DAY = 24 * 3600


def no_engine() -> Engine:
    raise AssertionError("gc tests register no ONNX model")


def register(project: Path, content: bytes, name: str = "model.joblib") -> Record:
    (project / name).write_bytes(content)
    return pipeline.register(load_spec(project / "registry.toml"), project / name, engine=no_engine)


def age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then), follow_symlinks=False)


def objects_of(project: Path) -> Path:
    return project / ".mreg" / "objects" / "sha256"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    project = copy_example(tmp_path / "project")
    save_build(project)
    return project


def registry_of(project: Path) -> Registry:
    return Registry.from_spec(load_spec(project / "registry.toml"))


def test_only_old_unreferenced_objects_are_deleted(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kept = register(project, b"the model")
    objects = objects_of(project)
    referenced = objects / kept.model.sha256
    orphan, young, leftover = objects / ("0" * 64), objects / ("1" * 64), objects / ".incoming-interrupted"
    for path in (orphan, young, leftover):
        path.write_bytes(b"left by a failed upload")
    for path in (referenced, orphan, leftover):
        age(path, 2 * DAY)
    code, out, err = mreg_in_process("gc", "--dry-run", cwd=project, monkeypatch=monkeypatch)
    assert code == 0
    assert sorted(line.split()[2] for line in out.splitlines()) == sorted([orphan.as_uri(), leftover.as_uri()])
    assert err == "would delete 2 objects (46 bytes); kept 1 referenced and 1 younger than 1d\n"
    assert orphan.exists()
    report = registry_of(project).gc()
    assert sorted(found.uri for found in report.deleted) == sorted([orphan.as_uri(), leftover.as_uri()])
    assert (report.referenced, [found.uri for found in report.young]) == (1, [young.as_uri()])
    assert not orphan.exists()
    assert not leftover.exists()
    assert young.exists()
    assert hashlib.sha256(referenced.read_bytes()).hexdigest() == kept.model.sha256
    event = registry_of(project).events()[-1]
    assert (event.type, event.subject, event.data) == (
        "io.mreg.gc.swept",
        None,
        {"deleted": 2, "bytes": 46, "purged": []},
    )
    assert registry_of(project).gc(grace=timedelta(0)).deleted[0].uri == young.as_uri()


def test_a_long_yanked_version_is_purged_and_verify_says_so(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = register(project, b"a bad model")
    second = register(project, b"a good model")
    third = register(project, b"a good model")  # the same bytes as a version that stays
    for path in objects_of(project).iterdir():
        age(path, 2 * DAY)
    registry = registry_of(project)
    registry.yank("iris-rf:1", "trained on the test set")
    registry.yank("iris-rf:3", "duplicate")
    dry = registry.gc(dry_run=True, purge_yanked_older_than=timedelta(0))
    assert dry.purged == ["iris-rf:1", "iris-rf:3"]
    assert [found.uri for found in dry.deleted] == [first.model.uri]
    assert registry.annotations("iris-rf:1").purged is None
    assert (objects_of(project) / first.model.sha256).exists()
    report = registry.gc(purge_yanked_older_than=timedelta(0))
    assert report.purged == ["iris-rf:1", "iris-rf:3"]
    assert [found.uri for found in report.deleted] == [first.model.uri]
    assert not (objects_of(project) / first.model.sha256).exists()
    assert (objects_of(project) / second.model.sha256).exists()  # version 2 still references these bytes
    assert third.model.sha256 == second.model.sha256
    checks = registry.verify(registry.get("iris-rf:1"), no_engine)
    assert [(check.subject, check.ok) for check in checks] == [("record", True), ("model", False)]
    assert checks[1].detail.startswith("purged by gc at ")
    with pytest.raises(InvalidInputError, match=r"^iris-rf:1 was purged by gc \(its model is gone\), so it stays"):
        registry.unyank("iris-rf:1")
    code, out, err = mreg_in_process("show", "iris-rf:1", cwd=project, monkeypatch=monkeypatch)
    assert code == 0
    assert err == "warning: iris-rf:1 is yanked and was purged by gc; its model is gone.\n"
    assert "PURGED  by gc" in out
    assert registry.gc(purge_yanked_older_than=timedelta(0)).purged == []  # purged once


def test_a_yank_younger_than_the_purge_age_is_kept(project: Path) -> None:
    first = register(project, b"a bad model")
    age(objects_of(project) / first.model.sha256, 2 * DAY)
    registry = registry_of(project)
    registry.yank("iris-rf:1", "bad")
    report = registry.gc(purge_yanked_older_than=timedelta(days=7))
    assert (report.purged, report.deleted) == ([], [])
    assert (objects_of(project) / first.model.sha256).exists()


def test_every_file_of_a_directory_model_is_kept(project: Path, tmp_path: Path) -> None:
    tree = project / "saved_model"
    (tree / "variables").mkdir(parents=True)
    (tree / "saved_model.pb").write_bytes(b"graph")
    (tree / "variables" / "variables.data").write_bytes(b"weights")
    record = pipeline.register(load_spec(project / "registry.toml"), tree, engine=no_engine)
    for path in objects_of(project).iterdir():
        age(path, 2 * DAY)
    registry = registry_of(project)
    assert registry.gc().deleted == []
    assert registry.gc().referenced == 3  # the manifest and both files
    pulled = registry.download(record, tmp_path / "pulled")
    assert (pulled / "variables" / "variables.data").read_bytes() == b"weights"


def _register_while_gc_runs(project: str, count: int) -> None:
    for number in range(count):
        register(Path(project), f"model {number} ".encode() * 1000, f"model-{number}.joblib")


def test_gc_running_while_a_register_runs_never_deletes_its_model(project: Path) -> None:
    register(project, b"first")
    orphans = [objects_of(project) / (f"{n}" * 64) for n in range(5)]
    for orphan in orphans:
        orphan.write_bytes(b"orphan")
        age(orphan, 2 * DAY)
    context = multiprocessing.get_context("fork")
    registering = context.Process(target=_register_while_gc_runs, args=(str(project), 12))
    registering.start()
    registry = registry_of(project)
    sweeps = 0
    while registering.is_alive() or sweeps == 0:
        registry.gc(grace=timedelta(hours=1))
        sweeps += 1
    registering.join(timeout=120)
    assert registering.exitcode == 0
    assert sweeps > 1
    assert not any(orphan.exists() for orphan in orphans)
    for version in range(1, 14):
        record = registry.get(f"iris-rf:{version}")
        assert hashlib.sha256(Path(record.model.uri.removeprefix("file://")).read_bytes()).hexdigest() == (
            record.model.sha256
        )


def test_gc_needs_the_spec_and_sane_durations(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code, _, err = mreg_in_process("--registry", "file:///tmp/x", "gc", cwd=project, monkeypatch=monkeypatch)
    assert code == 2
    assert "gc sweeps the object store of the spec (--spec); it does not take --registry." in err
    code, _, err = mreg_in_process("gc", "--grace", "soon", cwd=project, monkeypatch=monkeypatch)
    assert code == 2
    assert "'soon' is not a duration (a whole number and s, m, h or d: 90s, 30m, 24h, 7d)." in err
    with pytest.raises(InvalidInputError, match=r"^gc: durations cannot be negative\.$"):
        registry_of(project).gc(grace=timedelta(seconds=-1))
