"""Directory models on local disk: scanning a tree, reading a manifest back, publishing a tree safely."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mreg.errors import IntegrityError, InvalidInputError
from mreg.storage._tree import (
    MAX_REPORTED,
    ManifestFile,
    TreeManifest,
    WriteFile,
    parse_manifest,
    publish_tree,
    scan_tree,
)

SHA = "ab" * 32
WHERE = "s3://bucket/manifests/sha256/0123"


def write(root: Path, path: str, data: bytes = b"", *, executable: bool = False) -> Path:
    target = root / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    target.chmod(0o755 if executable else 0o644)
    return target


def saved_model(root: Path) -> Path:
    """A tree shaped like a TensorFlow SavedModel, with an executable and an empty directory."""
    write(root, "saved_model.pb", b"graph" * 100)
    write(root, "variables/variables.index", b"index")
    write(root, "variables/variables.data-00000-of-00001", bytes(range(256)) * 40)
    write(root, "bin/serve.sh", b"#!/bin/sh\n", executable=True)
    (root / "assets").mkdir()
    return root


def refusal(root: Path) -> str:
    with pytest.raises(InvalidInputError) as caught:
        scan_tree(root)
    return str(caught.value)


def copier(source: Path) -> WriteFile:
    """A `write_file` that streams each file from a local copy of the tree."""

    def write_file(entry: ManifestFile, handle: BinaryIO) -> None:
        with (source / entry.path).open("rb") as reader:
            shutil.copyfileobj(reader, handle)

    return write_file


def tree_state(root: Path) -> dict[str, Any]:
    """Everything about a published tree a user could see: paths, bytes and modes."""
    state: dict[str, Any] = {}
    for path in sorted(root.rglob("*")):
        mode = stat.S_IMODE(path.lstat().st_mode)
        state[path.relative_to(root).as_posix()] = (mode, path.read_bytes() if path.is_file() else None)
    return state


# --- scanning -----------------------------------------------------------------------------------------------


def test_scan_lists_every_file_sorted_and_only_empty_directories(tmp_path: Path) -> None:
    manifest = scan_tree(saved_model(tmp_path / "model"))
    assert [entry.path for entry in manifest.files] == [
        "bin/serve.sh",
        "saved_model.pb",
        "variables/variables.data-00000-of-00001",
        "variables/variables.index",
    ]
    assert manifest.directories == ("assets",)
    assert manifest.files[0] == ManifestFile(
        "bin/serve.sh", 10, hashlib.sha256(b"#!/bin/sh\n").hexdigest(), executable=True
    )
    assert not any(entry.executable for entry in manifest.files[1:])
    assert manifest.count == 4
    assert manifest.size == 500 + 5 + 10240 + 10
    assert manifest.digest() == hashlib.sha256(manifest.to_bytes()).hexdigest()


def test_manifest_bytes_are_canonical_json() -> None:
    manifest = TreeManifest(files=(ManifestFile("café/a", 1, SHA, executable=True),), directories=("e",))
    assert (
        manifest.to_bytes()
        == (
            '{"directories":["e"],"files":[{"executable":true,"path":"café/a","sha256":"' + SHA + '","size":1}],'
            '"kind":"directory","schema_version":1}'
        ).encode()
    )


def test_the_same_tree_elsewhere_with_other_times_modes_and_umask_has_the_same_digest(tmp_path: Path) -> None:
    first = scan_tree(saved_model(tmp_path / "first"))
    previous = os.umask(0o077)
    try:
        second = tmp_path / "elsewhere" / "second"
        second.mkdir(parents=True)
        (second / "assets").mkdir()
        for entry in reversed(first.files):  # another creation order too
            target = second / entry.path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes((tmp_path / "first" / entry.path).read_bytes())
            target.chmod(0o700 if entry.executable else 0o600)
            os.utime(target, (1_000_000, 1_000_000))
    finally:
        os.umask(previous)
    assert scan_tree(second).to_bytes() == first.to_bytes()
    assert scan_tree(second).digest() == first.digest()


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda root: (root / "saved_model.pb").write_bytes(b"graph" * 99 + b"grapH"), id="bytes"),
        pytest.param(lambda root: (root / "saved_model.pb").rename(root / "saved_model.pbx"), id="path"),
        pytest.param(lambda root: (root / "saved_model.pb").chmod(0o744), id="exec-bit"),
        pytest.param(lambda root: (root / "bin/serve.sh").chmod(0o655), id="exec-bit-cleared"),
        pytest.param(lambda root: (root / "variables/empty").mkdir(), id="empty-directory"),
        pytest.param(lambda root: (root / "assets/vocab.txt").write_bytes(b""), id="empty-file"),
    ],
)
def test_any_change_to_bytes_paths_or_exec_bits_changes_the_digest(
    tmp_path: Path, change: Callable[[Path], object]
) -> None:
    root = saved_model(tmp_path / "model")
    before = scan_tree(root).digest()
    change(root)
    assert scan_tree(root).digest() != before


def test_hard_links_are_plain_files(tmp_path: Path) -> None:
    root = tmp_path / "model"
    os.link(write(root, "weights.bin", b"w" * 10), root / "copy.bin")
    manifest = scan_tree(root)
    assert [(entry.path, entry.size) for entry in manifest.files] == [("copy.bin", 10), ("weights.bin", 10)]
    assert manifest.files[0].sha256 == manifest.files[1].sha256


def test_on_file_is_called_once_per_file(tmp_path: Path) -> None:
    seen: list[ManifestFile] = []
    manifest = scan_tree(saved_model(tmp_path / "model"), on_file=seen.append)
    assert sorted(seen, key=lambda entry: entry.path) == list(manifest.files)


def test_many_files_are_hashed_on_several_threads_to_the_same_manifest(tmp_path: Path) -> None:
    root = tmp_path / "model"
    for index in range(60):
        write(root, f"shard-{index:03}.bin", os.urandom(index * 100))
    assert scan_tree(root, workers=8) == scan_tree(root, workers=1)


@pytest.mark.parametrize(
    "plant",
    [
        pytest.param(lambda root: (root / "link").symlink_to(root / "saved_model.pb"), id="to-a-file"),
        pytest.param(lambda root: (root / "link").symlink_to(root / "variables"), id="to-a-directory"),
        pytest.param(lambda root: (root / "link").symlink_to("/nonexistent"), id="dangling"),
        pytest.param(lambda root: (root / "assets/link").symlink_to("/etc"), id="deep-to-outside"),
    ],
)
def test_symbolic_links_are_refused_naming_the_path(tmp_path: Path, plant: Callable[[Path], object]) -> None:
    root = saved_model(tmp_path / "model")
    plant(root)
    message = refusal(root)
    assert "link is a symbolic link" in message
    assert str(tmp_path) in message.splitlines()[0]


def test_a_symbolic_link_as_root_is_refused(tmp_path: Path) -> None:
    saved_model(tmp_path / "model")
    (tmp_path / "alias").symlink_to(tmp_path / "model")
    assert "is a symbolic link" in refusal(tmp_path / "alias")


def test_a_root_that_is_missing_or_a_file_is_refused(tmp_path: Path) -> None:
    assert "does not exist" in refusal(tmp_path / "missing")
    assert "is not a directory" in refusal(write(tmp_path, "model.onnx", b"x"))


def test_a_fifo_is_refused(tmp_path: Path) -> None:
    root = saved_model(tmp_path / "model")
    os.mkfifo(root / "variables" / "pipe")
    assert "variables/pipe is a FIFO." in refusal(root)


def test_a_unix_socket_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = saved_model(tmp_path / "model")
    monkeypatch.chdir(root)  # socket paths are limited to about 100 bytes
    with socket.socket(socket.AF_UNIX) as server:
        server.bind("sock")
        assert "sock is a socket." in refusal(root)


def test_a_device_is_refused(tmp_path: Path) -> None:
    root = saved_model(tmp_path / "model")
    try:
        os.mknod(root / "null", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("creating a device node needs CAP_MKNOD")
    assert "null is a device." in refusal(root)


def unprivileged_refusal(root: Path) -> str:
    """The refusal of `root`, scanned by a user permissions apply to: as root, by `nobody` in a child."""
    if os.geteuid() != 0:
        return refusal(root)
    script = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from mreg.errors import InvalidInputError\n"
        "from mreg.storage._tree import scan_tree\n"
        "os.setgid(65534)\n"
        "os.setuid(65534)\n"
        "try:\n"
        "    scan_tree(Path(sys.argv[1]))\n"
        "except InvalidInputError as exc:\n"
        "    print(exc)\n"
        "    sys.exit(2)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(root)], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 2, result.stderr
    return result.stdout


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A temporary directory any user may enter (pytest's own are private to their owner)."""
    directory = Path(tempfile.mkdtemp())
    directory.chmod(0o755)
    try:
        yield directory
    finally:
        for path in (directory, *directory.rglob("*")):
            if not path.is_symlink():
                path.chmod(0o755)
        shutil.rmtree(directory)


def test_unreadable_files_and_directories_are_refused(shared_tmp: Path) -> None:
    root = saved_model(shared_tmp / "model")
    (root / "variables/variables.index").chmod(0o000)
    (root / "assets").chmod(0o000)
    message = unprivileged_refusal(root)
    assert "variables/variables.index cannot be read (Permission denied)." in message
    assert "assets cannot be listed (Permission denied)." in message


@pytest.mark.parametrize(
    ("names", "fragment"),
    [
        (["README.md", "readme.md"], "readme.md differs only by case from README.md"),
        (["Variables/a", "variables/b"], "variables differs only by case from Variables"),
        (["straße", "strasse"], "straße differs only by case from strasse"),
    ],
)
def test_names_that_differ_only_by_case_are_refused(tmp_path: Path, names: list[str], fragment: str) -> None:
    root = tmp_path / "model"
    for name in names:
        write(root, name, b"x")
    assert fragment in refusal(root)


@pytest.mark.parametrize(
    ("name", "line"),
    [
        ("e\u0301.bin", "'variables/e\\u0301.bin' is not in Unicode normalisation form NFC."),
        ("a\\b.bin", "variables/a\\b.bin contains a backslash."),
        ("a\nb.bin", "'variables/a\\nb.bin' contains the control character U+000A."),
        ("a\x7fb.bin", "'variables/a\\x7fb.bin' contains the control character U+007F."),
    ],
)
def test_names_that_are_not_portable_are_refused(tmp_path: Path, name: str, line: str) -> None:
    root = saved_model(tmp_path / "model")
    write(root, f"variables/{name}", b"x")
    assert f"  {line}" in refusal(root).splitlines()


def test_a_name_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    root = saved_model(tmp_path / "model")
    os.close(os.open(os.fsencode(root) + b"/\xff.bin", os.O_CREAT | os.O_WRONLY, 0o644))
    assert "'\\udcff.bin' is not valid UTF-8." in refusal(root)


def test_a_tree_without_a_regular_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "model" / "variables" / "deeper").mkdir(parents=True)
    assert "holds no regular file" in refusal(tmp_path / "model")
    assert "holds no regular file" in refusal(tmp_path / "model" / "variables" / "deeper")


def test_every_problem_is_reported_at_once_one_line_each(tmp_path: Path) -> None:
    root = saved_model(tmp_path / "model")
    (root / "link").symlink_to("saved_model.pb")
    os.mkfifo(root / "assets" / "pipe")
    write(root, "e\u0301", b"x")
    lines = refusal(root).splitlines()
    assert lines[0] == f"{root} cannot be registered as a directory model (3 problems):"
    assert lines[1:] == [
        "  assets/pipe is a FIFO.",
        "  'e\\u0301' is not in Unicode normalisation form NFC.",
        "  link is a symbolic link (copy what it points to into the model instead).",
    ]


def test_the_list_of_problems_is_capped(tmp_path: Path) -> None:
    root = saved_model(tmp_path / "model")
    for index in range(MAX_REPORTED + 7):
        (root / f"link-{index:02}").symlink_to("saved_model.pb")
    lines = refusal(root).splitlines()
    assert f"({MAX_REPORTED + 7} problems)" in lines[0]
    assert len(lines) == 1 + MAX_REPORTED + 1
    assert lines[-1] == "  ... and 7 more."


# --- reading a manifest back --------------------------------------------------------------------------------


def canonical(
    document: Any, *, sort_keys: bool = True, separators: tuple[str, str] = (",", ":"), ensure_ascii: bool = False
) -> bytes:
    """`document` as `TreeManifest.to_bytes` would write it, unless told otherwise."""
    return json.dumps(document, sort_keys=sort_keys, separators=separators, ensure_ascii=ensure_ascii).encode()


def entry(path: Any, **changes: Any) -> dict[str, Any]:
    return {"path": path, "size": 3, "sha256": SHA, "executable": False} | changes


def document(*files: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A manifest document with `files` (one by default) and the empty directory `e`, then `changes`."""
    listed = list(files) or [entry("a/b.bin")]
    return {"schema_version": 1, "kind": "directory", "files": listed, "directories": ["e"]} | changes


def test_a_manifest_round_trips_to_the_same_bytes(tmp_path: Path) -> None:
    manifest = scan_tree(saved_model(tmp_path / "model"))
    data = manifest.to_bytes()
    assert parse_manifest(data, WHERE) == manifest
    assert parse_manifest(data, WHERE).to_bytes() == data
    assert parse_manifest(canonical(document()), WHERE).files[0].path == "a/b.bin"


without_directories = document()
del without_directories["directories"]
HOSTILE = {
    "not-json": (b"not json", "it cannot be read as UTF-8 JSON"),
    "not-utf8": (b'{"kind":"\xff"}', "it cannot be read as UTF-8 JSON"),
    "too-deep": (b"[" * 100_000, "it cannot be read as UTF-8 JSON"),
    "nan": (canonical(document(entry("a", size=float("nan")))), "it holds NaN, which is not a JSON number"),
    "repeated-key": (b'{"kind":"directory","kind":"file"}', "an object repeats the key 'kind'"),
    "a-list": (b"[]", "the manifest is not a JSON object"),
    "unknown-key": (canonical(document(extra=1)), "the manifest has the unknown key 'extra'"),
    "missing-key": (canonical(without_directories), "the manifest lacks the key 'directories'"),
    "version-2": (canonical(document(schema_version=2)), "schema_version is 2, not 1"),
    "version-true": (canonical(document(schema_version=True)), "schema_version is True, not 1"),
    "version-float": (canonical(document(schema_version=1.0)), "schema_version is 1.0, not 1"),
    "kind-file": (canonical(document(kind="file")), "kind is 'file', not 'directory'"),
    "files-object": (canonical(document(files={})), "files is not a list"),
    "directories-string": (canonical(document(directories="e")), "directories is not a list"),
    "entry-not-object": (canonical(document(files=[1])), "file entry 0 is not a JSON object"),
    "entry-unknown-key": (canonical(document(entry("a", mode=420))), "file entry 0 has the unknown key 'mode'"),
    "entry-missing-key": (canonical(document({"path": "a", "size": 1})), "file entry 0 lacks the key 'executable'"),
    "path-number": (canonical(document(entry(5))), "file entry 0 has the path 5, not a string"),
    "negative-size": (canonical(document(entry("a", size=-1))), "file entry 0 (a) has the size -1"),
    "string-size": (canonical(document(entry("a", size="3"))), "file entry 0 (a) has the size '3'"),
    "float-size": (canonical(document(entry("a", size=3.0))), "file entry 0 (a) has the size 3.0"),
    "bool-size": (canonical(document(entry("a", size=True))), "file entry 0 (a) has the size True"),
    "upper-hex": (canonical(document(entry("a", sha256=SHA.upper()))), "not 64 lowercase hex digits"),
    "short-hex": (canonical(document(entry("a", sha256=SHA[:-1]))), "not 64 lowercase hex digits"),
    "hex-newline": (canonical(document(entry("a", sha256=SHA + "\n"))), "not 64 lowercase hex digits"),
    "exec-int": (canonical(document(entry("a", executable=1))), "has executable 1, not true or false"),
    "directory-number": (canonical(document(directories=[1])), "directories entry 0 is 1, not a string"),
    "absolute": (canonical(document(entry("/etc/passwd"))), "file /etc/passwd is absolute"),
    "dotdot": (canonical(document(entry("../escape"))), "file ../escape has a '..' part"),
    "inner-dotdot": (canonical(document(entry("a/../../b"))), "file a/../../b has a '..' part"),
    "dot": (canonical(document(entry("./a"))), "file ./a has a '.' part"),
    "empty-part": (canonical(document(entry("a//b"))), "file a//b has an empty part"),
    "trailing-slash": (canonical(document(entry("a/"))), "file a/ ends with a slash"),
    "empty-path": (canonical(document(entry(""))), "file '' is empty"),
    "backslash": (canonical(document(entry("a\\..\\b"))), "contains a backslash"),
    "nul": (canonical(document(entry("a\x00b"))), "file 'a\\x00b' contains the control character U+0000"),
    "newline": (canonical(document(entry("a\nb"))), "contains the control character U+000A"),
    "not-nfc": (canonical(document(entry("e\u0301"))), "file 'e\\u0301' is not in Unicode normalisation form NFC"),
    "surrogate": (canonical(document(entry("\ud800")), ensure_ascii=True), "file '\\ud800' is not valid UTF-8"),
    "duplicate": (canonical(document(entry("a"), entry("a"))), "file a is listed twice"),
    "unsorted": (canonical(document(entry("b"), entry("a"))), "file a is listed after b, out of order"),
    "case-duplicate": (canonical(document(entry("A"), entry("a"))), "A and a differ only by case"),
    "case-directories": (canonical(document(entry("A/x"), entry("a/y"))), "A and a differ only by case"),
    "case-sharp-s": (canonical(document(entry("ss"), entry("ß"))), "ss and ß differ only by case"),
    "file-is-a-directory": (canonical(document(entry("a"), entry("a/b"))), "file a is also the directory of a/b"),
    "empty-directory-is-a-file": (
        canonical(document(entry("a"), directories=["a"])),
        "empty directory a is also a file",
    ),
    "empty-directory-holds-a-file": (
        canonical(document(entry("a/b"), directories=["a"])),
        "empty directory a is not empty: it holds a/b",
    ),
    "empty-directory-holds-one": (canonical(document(directories=["d", "d/e"])), "empty directory d is not empty"),
    "directories-unsorted": (canonical(document(directories=["z", "y"])), "directory y is listed after z"),
    "directory-absolute": (canonical(document(directories=["/tmp"])), "directory /tmp is absolute"),
    "directory-dotdot": (canonical(document(directories=[".."])), "directory .. has a '..' part"),
    "no-files": (canonical(document(files=[])), "it lists no files"),
    "whitespace": (canonical(document(), separators=(", ", ": ")), "it is not in canonical form"),
    "key-order": (canonical(document(), sort_keys=False), "it is not in canonical form"),
    "non-ascii-control-case": (canonical(document(entry("café"))), None),
    "escaped-non-ascii": (canonical(document(entry("café")), ensure_ascii=True), "it is not in canonical form"),
    "trailing-newline": (canonical(document()) + b"\n", "it is not in canonical form"),
}


@pytest.mark.parametrize(("data", "fragment"), HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_manifests_are_refused_naming_the_entry(data: bytes, fragment: str | None) -> None:
    if fragment is None:  # the control case: the same document, canonical, is accepted
        assert parse_manifest(data, WHERE).files[0].path == "café"
        return
    with pytest.raises(IntegrityError) as caught:
        parse_manifest(data, WHERE)
    message = str(caught.value)
    assert message.startswith(f"{WHERE} is not a valid directory manifest: ")
    assert fragment in message
    assert message.endswith(".")
    assert "\n" not in message


def test_a_manifest_that_is_not_normalised_cannot_be_built() -> None:
    with pytest.raises(ValueError, match=re.escape("has a '..' part")):
        TreeManifest(files=(ManifestFile("../x", 1, SHA, executable=False),))
    with pytest.raises(ValueError, match="out of order"):
        TreeManifest(files=(ManifestFile("b", 1, SHA, executable=False), ManifestFile("a", 1, SHA, executable=False)))


# --- publishing ---------------------------------------------------------------------------------------------


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return saved_model(tmp_path / "source")


def leftovers(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


def test_a_published_tree_is_the_scanned_one_with_normal_modes(tmp_path: Path, source: Path) -> None:
    manifest = scan_tree(source)
    destination = tmp_path / "out" / "deeper" / "model"
    previous = os.umask(0o077)
    try:
        assert publish_tree(manifest, destination, copier(source)) == destination
    finally:
        os.umask(previous)
    assert scan_tree(destination) == manifest
    state = tree_state(destination)
    assert state["bin/serve.sh"] == (0o755, b"#!/bin/sh\n")
    assert state["saved_model.pb"] == (0o644, b"graph" * 100)
    assert state["assets"] == state["variables"] == (0o755, None)
    assert stat.S_IMODE(destination.stat().st_mode) == 0o755
    assert leftovers(destination.parent) == ["model"]


def test_write_file_may_seek_and_close_the_handle(tmp_path: Path, source: Path) -> None:
    def backwards(entry: ManifestFile, handle: BinaryIO) -> None:
        data = (source / entry.path).read_bytes()
        half = len(data) // 2
        handle.seek(half)
        handle.write(data[half:])
        handle.seek(0)
        handle.write(data[:half])
        handle.close()

    manifest = scan_tree(source)
    publish_tree(manifest, tmp_path / "model", backwards)
    assert scan_tree(tmp_path / "model") == manifest


@pytest.mark.parametrize(
    ("damage", "fragment"),
    [
        (lambda data: data[:-1] + bytes([data[-1] ^ 1]), "was written as 10240 bytes hashing to"),
        (lambda data: data[:-2], "was written as 10238 bytes"),
        (lambda data: data + b"!", "is longer than the 10240 bytes its manifest says"),
    ],
    ids=["flipped-bit", "short", "long"],
)
def test_bytes_that_differ_from_the_manifest_leave_nothing_behind(
    tmp_path: Path, source: Path, damage: Callable[[bytes], bytes], fragment: str
) -> None:
    damaged = "variables/variables.data-00000-of-00001"

    def write_file(entry: ManifestFile, handle: BinaryIO) -> None:
        data = (source / entry.path).read_bytes()
        handle.write(damage(data) if entry.path == damaged else data)

    destination = tmp_path / "out" / "model"
    with pytest.raises(IntegrityError) as caught:
        publish_tree(scan_tree(source), destination, write_file)
    assert f"{damaged} in {destination}" in str(caught.value)
    assert fragment in str(caught.value)
    assert not (tmp_path / "out").exists()  # the parent it created is gone too
    assert leftovers(tmp_path) == ["source"]


@pytest.mark.parametrize(
    "failure", [RuntimeError("the store went away"), KeyboardInterrupt()], ids=["error", "interrupt"]
)
@pytest.mark.parametrize("workers", [1, 8])
def test_a_failure_or_interrupt_midway_leaves_nothing_behind(
    tmp_path: Path, source: Path, failure: BaseException, workers: int
) -> None:
    written: list[str] = []

    def write_file(entry: ManifestFile, handle: BinaryIO) -> None:
        if entry.path.startswith("variables/variables.data"):
            handle.write(b"part of it")
            handle.flush()
            raise failure
        copier(source)(entry, handle)
        written.append(entry.path)

    (tmp_path / "out").mkdir()
    with pytest.raises(type(failure)):
        publish_tree(scan_tree(source), tmp_path / "out" / "model", write_file, workers=workers)
    assert leftovers(tmp_path / "out") == []
    if workers == 1:
        assert written == ["bin/serve.sh", "saved_model.pb"]


@pytest.mark.timeout(20)
def test_a_failure_stops_the_writers_still_running(tmp_path: Path) -> None:
    source = tmp_path / "source"
    for name in "abcd":
        write(source, name, b"x" * 1_000_000)

    def write_file(entry: ManifestFile, handle: BinaryIO) -> None:
        if entry.path == "a":
            time.sleep(0.1)
            raise RuntimeError("the store went away")
        for _ in range(20_000):  # 20 s of trickling bytes, unless stopped
            handle.write(b"x")
            handle.flush()
            time.sleep(0.001)

    started = time.monotonic()
    with pytest.raises(RuntimeError, match="the store went away"):
        publish_tree(scan_tree(source), tmp_path / "model", write_file, workers=4)
    assert time.monotonic() - started < 5
    assert leftovers(tmp_path) == ["source"]


def test_an_existing_destination_is_refused_and_untouched(tmp_path: Path, source: Path) -> None:
    destination = write(tmp_path / "model", "old.txt", b"old").parent
    with pytest.raises(InvalidInputError, match="already exists"):
        publish_tree(scan_tree(source), destination, copier(source))
    assert tree_state(destination) == {"old.txt": (0o644, b"old")}
    assert leftovers(tmp_path) == ["model", "source"]


def test_a_destination_that_appears_while_staging_is_not_replaced(tmp_path: Path, source: Path) -> None:
    destination = tmp_path / "model"

    def write_file(entry: ManifestFile, handle: BinaryIO) -> None:
        if entry.path == "saved_model.pb":
            write(destination, "theirs.txt", b"theirs")
        copier(source)(entry, handle)

    with pytest.raises(InvalidInputError, match="already exists"):
        publish_tree(scan_tree(source), destination, write_file, workers=1)
    assert tree_state(destination) == {"theirs.txt": (0o644, b"theirs")}
    assert leftovers(tmp_path) == ["model", "source"]


def test_overwrite_replaces_the_destination_only_once_the_new_tree_is_complete(tmp_path: Path, source: Path) -> None:
    destination = write(tmp_path / "model", "old.txt", b"old").parent
    old_seen_while_staging: list[bool] = []

    def write_file(entry: ManifestFile, handle: BinaryIO) -> None:
        old_seen_while_staging.append((destination / "old.txt").read_bytes() == b"old")
        copier(source)(entry, handle)

    manifest = scan_tree(source)
    publish_tree(manifest, destination, write_file, overwrite=True)
    assert old_seen_while_staging == [True] * manifest.count
    assert scan_tree(destination) == manifest
    assert leftovers(tmp_path) == ["model", "source"]


def test_overwrite_replaces_a_file(tmp_path: Path, source: Path) -> None:
    destination = write(tmp_path, "model", b"a single-file model")
    publish_tree(scan_tree(source), destination, copier(source), overwrite=True)
    assert scan_tree(destination) == scan_tree(source)
    assert leftovers(tmp_path) == ["model", "source"]


def test_a_failed_overwrite_leaves_the_destination_untouched(tmp_path: Path, source: Path) -> None:
    destination = write(tmp_path / "model", "old.txt", b"old").parent

    def write_file(entry: ManifestFile, handle: BinaryIO) -> None:
        handle.write(b"not the bytes")

    with pytest.raises(IntegrityError):
        publish_tree(scan_tree(source), destination, write_file, overwrite=True)
    assert tree_state(destination) == {"old.txt": (0o644, b"old")}
    assert leftovers(tmp_path) == ["model", "source"]


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_symbolic_link_at_the_destination_is_refused(tmp_path: Path, source: Path, overwrite: bool) -> None:
    target = write(tmp_path / "target", "keep.txt", b"keep").parent
    (tmp_path / "model").symlink_to(target)
    with pytest.raises(InvalidInputError, match="is a symbolic link"):
        publish_tree(scan_tree(source), tmp_path / "model", copier(source), overwrite=overwrite)
    assert (tmp_path / "model").readlink() == target
    assert tree_state(target) == {"keep.txt": (0o644, b"keep")}
    assert leftovers(tmp_path) == ["model", "source", "target"]


def test_a_destination_without_a_name_is_refused(tmp_path: Path, source: Path) -> None:
    with pytest.raises(InvalidInputError, match="does not end in a name"):
        publish_tree(scan_tree(source), tmp_path / "..", copier(source))


# --- property: scan, publish, scan ---------------------------------------------------------------------------

NAMES = st.text(alphabet="aAbBsßé. -_0", min_size=1, max_size=3).filter(lambda name: name not in (".", ".."))
PATHS = st.lists(NAMES, min_size=1, max_size=3)
Node = dict[str, Any]  # a directory: name -> Node, or (bytes, executable) for a file


def insert(tree: Node, parts: list[str], leaf: Any) -> None:
    """Add a path unless it clashes with one already there (as a file, a directory or by case)."""
    node = tree
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        clash = next((name for name in node if name.casefold() == part.casefold()), None)
        if clash is not None and (clash != part or last or not isinstance(node[clash], dict)):
            return
        node = node.setdefault(part, {} if not last else leaf)


def materialise(tree: Node, root: Path) -> None:
    root.mkdir()
    for name, child in tree.items():
        if isinstance(child, dict):
            materialise(child, root / name)
        else:
            write(root, name, child[0], executable=child[1])


def flatten(tree: Node, prefix: str = "") -> tuple[dict[str, tuple[bytes, bool]], set[str]]:
    """The files (path -> bytes, executable) and the empty directories of a tree."""
    files: dict[str, tuple[bytes, bool]] = {}
    empty: set[str] = set()
    for name, child in tree.items():
        path = f"{prefix}{name}"
        if not isinstance(child, dict):
            files[path] = child
        elif not child:
            empty.add(path)
        else:
            more_files, more_empty = flatten(child, f"{path}/")
            files |= more_files
            empty |= more_empty
    return files, empty


# each example builds, scans and publishes a tree with fsyncs: a third of the profile's examples (20 in `dev`)
@settings(max_examples=max(10, settings().max_examples // 3))
@given(
    files=st.lists(st.tuples(PATHS, st.binary(max_size=3000), st.booleans()), min_size=1, max_size=8),
    directories=st.lists(PATHS, max_size=3),
)
def test_scan_then_publish_reproduces_the_tree_and_its_digest(
    files: list[tuple[list[str], bytes, bool]], directories: list[list[str]]
) -> None:
    tree: Node = {}
    for parts, data, executable in files:
        insert(tree, parts, (data, executable))
    for parts in directories:
        insert(tree, parts, {})
    expected_files, expected_empty = flatten(tree)
    with tempfile.TemporaryDirectory() as temporary:
        source, destination = Path(temporary) / "source", Path(temporary) / "out" / "model"
        materialise(tree, source)
        manifest = scan_tree(source)
        assert {entry.path: entry.size for entry in manifest.files} == {
            path: len(data) for path, (data, _) in expected_files.items()
        }
        assert set(manifest.directories) == expected_empty
        assert parse_manifest(manifest.to_bytes(), WHERE) == manifest
        publish_tree(manifest, destination, copier(source), workers=3)
        again = scan_tree(destination)
        assert again.to_bytes() == manifest.to_bytes()
        assert again.digest() == manifest.digest()
        published = {
            path: ((destination / path).read_bytes(), bool((destination / path).stat().st_mode & stat.S_IXUSR))
            for path in expected_files
        }
        assert published == expected_files
        assert leftovers(destination.parent) == ["model"]
