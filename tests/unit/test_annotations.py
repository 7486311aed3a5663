"""Mutable annotations on the file backend: tags and descriptions with their history (never touching the
record's digest), concurrent changes from processes, yank and unyank as PEP 592 has them, and the events
each change appends (none for a change that failed)."""

from __future__ import annotations

import json
import multiprocessing
from multiprocessing.synchronize import Barrier
from pathlib import Path

import pytest

from mreg.errors import InvalidInputError, NotFoundError
from mreg.records import _index
from mreg.records.file import FileRecordStore
from mreg.registry import Registry
from tests.support import make_record, mreg_in_process

NAME = "iris-rf"
WORKERS, CHANGES = 8, 5


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "registry"


@pytest.fixture
def registry(root: Path, monkeypatch: pytest.MonkeyPatch) -> Registry:
    monkeypatch.setenv("MREG_ACTOR", "alice")
    registry = Registry(FileRecordStore(root))
    for _ in range(3):
        registry.create(NAME, make_record)
    return registry


def cli(root: Path, monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str, str]:
    return mreg_in_process("--registry", root.as_uri(), *args, cwd=root.parent, monkeypatch=monkeypatch)


def event_types(registry: Registry) -> list[str]:
    return [event.type.removeprefix("io.mreg.") for event in registry.events()]


def test_tags_change_with_history_and_the_record_stays_as_written(registry: Registry, root: Path) -> None:
    record_file = root / NAME / "versions" / "0000000002.json"
    written = record_file.read_bytes()
    registry.tag(f"{NAME}:2", set={"stage": "staging", "owner": "ml"})
    registry.tag(f"{NAME}:2", set={"stage": "production"}, delete=["owner"])
    after = registry.describe(f"{NAME}:2", "retrained on November data")
    assert after.tags == {"stage": "production"}
    assert after.description == "retrained on November data"
    changes = [(c.field, c.old, c.new, c.by) for c in after.history]
    assert changes == [
        ("tags.stage", None, "staging", "alice"),
        ("tags.owner", None, "ml", "alice"),
        ("tags.owner", "ml", None, "alice"),
        ("tags.stage", "staging", "production", "alice"),
        ("description", None, "retrained on November data", "alice"),
    ]
    assert record_file.read_bytes() == written
    assert registry.get(f"{NAME}:2").digest == json.loads(written)["digest"]
    assert registry.annotations(f"{NAME}:1").history == []


def test_a_change_that_changes_nothing_writes_nothing(registry: Registry) -> None:
    registry.tag(f"{NAME}:1", set={"stage": "dev"})
    count = len(registry.events())
    assert registry.tag(f"{NAME}:1", set={"stage": "dev"}).revision == 1
    assert len(registry.events()) == count


def test_bad_tags_are_refused_with_the_version_named(registry: Registry) -> None:
    rule = "a key is 1-128 lower-case letters, digits, '.', '_', '/' or '-', starting with a letter or digit"
    cases = [
        ({"Stage": "x"}, (), f"iris-rf:1: tag key 'Stage' is invalid: {rule}."),
        ({"stage": "x" * 1025}, (), "iris-rf:1: tag 'stage' is 1025 characters long; at most 1024 are allowed."),
        ({"stage": "a\nb"}, (), "iris-rf:1: tag 'stage' holds a control character."),
        ({"stage": "x"}, ("stage",), "iris-rf:1: tag 'stage' is both set and deleted."),
        ({}, (), "iris-rf:1: give tags to set (KEY=VALUE) or to delete (--delete KEY)."),
    ]
    for tags, deleted, message in cases:
        with pytest.raises(InvalidInputError) as caught:
            registry.tag(f"{NAME}:1", set=tags, delete=deleted)
        assert str(caught.value) == message
    with pytest.raises(NotFoundError, match=r"^iris-rf:1 has no tag 'stage'\.$"):
        registry.tag(f"{NAME}:1", delete=["stage"])
    assert registry.annotations(f"{NAME}:1").history == []
    assert event_types(registry) == ["version.registered"] * 3


def _tag_concurrently(root: str, worker: int, barrier: Barrier) -> None:
    registry = Registry(FileRecordStore(Path(root)))
    barrier.wait()
    for change in range(CHANGES):
        registry.tag(f"{NAME}:1", set={f"w{worker}-{change}": str(change)})


def test_concurrent_tag_changes_from_processes_lose_nothing(registry: Registry, root: Path) -> None:
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(WORKERS)
    workers = [context.Process(target=_tag_concurrently, args=(str(root), n, barrier)) for n in range(WORKERS)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    expected = {f"w{n}-{c}": str(c) for n in range(WORKERS) for c in range(CHANGES)}
    annotations = registry.annotations(f"{NAME}:1")
    assert annotations.tags == expected
    assert annotations.revision == WORKERS * CHANGES
    marks, pending = _index.read_marks(registry._records, NAME)
    assert marks[1].tags == expected
    assert marks[1].revision == WORKERS * CHANGES
    assert pending == set()
    assert len([e for e in registry.events() if e.type == "io.mreg.version.tagged"]) == WORKERS * CHANGES
    sequence_files = list((root / NAME / "annotations" / "0000000001").glob("*.json"))
    assert len(sequence_files) <= 4  # old copies are removed as new ones are written


def test_yank_needs_force_where_an_alias_points_and_is_skipped_by_latest(
    registry: Registry, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry.alias(NAME, "production", 3)
    code, _, err = cli(root, monkeypatch, "yank", f"{NAME}:3", "--reason", "leaks test data")
    assert code == 2
    assert err == (
        "error: iris-rf:3 is where iris-rf@production points; move the alias first, or yank it with --force.\n"
    )
    assert cli(root, monkeypatch, "yank", f"{NAME}:3", "--reason", "leaks test data", "--force")[0] == 0
    yanked = registry.annotations(f"{NAME}:3").yanked
    assert yanked is not None
    assert (yanked.reason, yanked.by, yanked.aliases) == ("leaks test data", "alice", ["production"])
    assert registry.get(NAME).version == 2
    assert registry.get(f"{NAME}@production").version == 3  # an alias still resolves, as an exact version does
    code, out, err = cli(root, monkeypatch, "show", f"{NAME}:3", "--json")
    assert code == 0
    assert err == "warning: iris-rf:3 is yanked (leaks test data).\n"
    document = json.loads(out)
    assert document["annotations"]["yanked"]["reason"] == "leaks test data"
    del document["annotations"]
    assert document == registry.get(f"{NAME}:3").model_dump(mode="json")


def test_an_alias_cannot_move_to_a_yanked_version(
    registry: Registry, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry.yank(f"{NAME}:2", "wrong labels")
    code, _, err = cli(root, monkeypatch, "alias", NAME, "2", "staging")
    assert code == 2
    assert err == "error: iris-rf:2 is yanked (wrong labels); unyank it before pointing iris-rf@staging at it.\n"
    assert registry.aliases(NAME) == []
    with pytest.raises(InvalidInputError, match=r"^iris-rf:2 is already yanked \(wrong labels\)\.$"):
        registry.yank(f"{NAME}:2", "again")
    registry.unyank(f"{NAME}:2")
    with pytest.raises(InvalidInputError, match=r"^iris-rf:2 is not yanked\.$"):
        registry.unyank(f"{NAME}:2")
    assert registry.alias(NAME, "staging", 2).version == 2
    assert event_types(registry) == [*["version.registered"] * 3, "version.yanked", "version.unyanked", "alias.moved"]


def test_every_version_yanked_leaves_no_latest(registry: Registry) -> None:
    for version in (1, 2, 3):
        registry.yank(f"{NAME}:{version}", "bad batch")
    with pytest.raises(NotFoundError, match=r"every version of model iris-rf in .* is yanked"):
        registry.get(NAME)
    assert registry.get(f"{NAME}:1").version == 1


def test_a_yank_needs_a_reason(registry: Registry) -> None:
    with pytest.raises(InvalidInputError, match=r"^iris-rf:1: a yank needs a reason \(--reason TEXT\)\.$"):
        registry.yank(f"{NAME}:1", " ")


def test_events_are_cloudevents_in_order(registry: Registry, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    registry.alias(NAME, "production", 2)
    registry.tag(f"{NAME}:2", set={"stage": "prod"})
    registry.describe(f"{NAME}:2", "the good one")
    registry.yank(f"{NAME}:1", "bad")
    registry.unyank(f"{NAME}:1")
    found = registry.events(NAME)
    assert [event.type for event in found] == [
        *["io.mreg.version.registered"] * 3,
        "io.mreg.alias.moved",
        "io.mreg.version.tagged",
        "io.mreg.version.described",
        "io.mreg.version.yanked",
        "io.mreg.version.unyanked",
    ]
    assert [event.subject for event in found[2:5]] == ["iris-rf:3", "iris-rf@production", "iris-rf:2"]
    assert [event.id for event in found] == sorted(event.id for event in found)
    assert found[3].data == {"name": NAME, "alias": "production", "version": 2, "previous": None}
    assert found[4].data == {"name": NAME, "version": 2, "set": {"stage": "prod"}, "deleted": []}
    stored = json.loads(sorted((root / "events").glob("*.json"))[0].read_text())
    assert stored["specversion"] == "1.0"
    assert stored["source"] == root.as_uri()
    assert stored["datacontenttype"] == "application/json"
    assert stored["type"] == "io.mreg.version.registered"
    assert stored["data"]["digest"] == registry.get(f"{NAME}:1").digest
    assert registry.events(since=found[5].time) == found[5:]
    assert registry.events("other-model") == []
    code, out, _ = cli(root, monkeypatch, "events", NAME, "--json")
    assert code == 0
    assert [event["id"] for event in json.loads(out)] == [event.id for event in found]
