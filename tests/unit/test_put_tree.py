"""Storing a directory model in a local object store: each file hashed as it is sent, the manifest the same as
a scan's, nothing sent twice, and a file that changes or goes after the walk stops the upload before its
manifest is written."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from mreg.errors import IntegrityError, InvalidInputError
from mreg.storage import directories
from mreg.storage._tree import scan_tree, walk_tree
from mreg.storage.file import FileObjectStore


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "model"
    (root / "variables").mkdir(parents=True)
    (root / "assets").mkdir()
    (root / "saved_model.pb").write_bytes(b"graph" * 1000)
    (root / "variables" / "variables.data-00000-of-00001").write_bytes(b"weights" * 100_000)
    (root / "variables" / "variables.index").write_bytes(b"index")
    (root / "copy.pb").write_bytes(b"graph" * 1000)  # the same bytes twice: stored once
    return root


def stored_sha256s(store: FileObjectStore) -> set[str]:
    return {Path(found.uri).name for found in store.list_objects()}


def stored_manifests(store: FileObjectStore) -> list[str]:
    """The stored objects that are directory manifests."""
    return [
        found.uri for found in store.list_objects() if Path(found.uri[7:]).read_bytes().startswith(b'{"directories"')
    ]


def test_the_manifest_is_the_scans_and_a_second_put_sends_nothing(tree: Path, tmp_path: Path) -> None:
    store = FileObjectStore(tmp_path / "objects")
    first = directories.put_tree(store, tree)
    manifest = scan_tree(tree)
    assert (first.manifest.sha256, first.count, first.size) == (manifest.digest(), 4, manifest.size)
    # the copy is sent too unless the other file with its bytes was stored before the copy was looked up;
    # either way its bytes are stored once
    assert first.uploaded in (3, 4)
    assert stored_sha256s(store) == {entry.sha256 for entry in manifest.files} | {manifest.digest()}
    assert len(stored_manifests(store)) == 1
    again = directories.put_tree(store, tree, walked=walk_tree(tree))
    assert (again.manifest.sha256, again.uploaded) == (first.manifest.sha256, 0)


def test_a_file_gone_after_the_walk_is_refused_by_name_and_no_manifest_is_written(tree: Path, tmp_path: Path) -> None:
    store = FileObjectStore(tmp_path / "objects")
    walked = walk_tree(tree)
    (tree / "variables" / "variables.index").unlink()
    with pytest.raises(InvalidInputError, match=r"variables/variables\.index cannot be read"):
        directories.put_tree(store, tree, walked=walked)
    files = {hashlib.sha256(path.read_bytes()).hexdigest() for path in tree.rglob("*") if path.is_file()}
    assert stored_sha256s(store) <= files  # the other files may be stored (left for gc), and nothing else
    assert stored_manifests(store) == []


class _ChangesTheFileOnLookup(FileObjectStore):
    """A local store where the file being registered changes right after it was hashed (on the look-up
    `put_tree` makes between hashing a file and sending it)."""

    victim: Path

    def reuse(self, sha256: str, size: int) -> str | None:
        if hashlib.sha256(self.victim.read_bytes()).hexdigest() == sha256:
            self.victim.write_bytes(b"changed behind mreg's back")
        return super().reuse(sha256, size)


def test_a_file_changed_between_its_hash_and_its_upload_fails_the_upload(tree: Path, tmp_path: Path) -> None:
    store = _ChangesTheFileOnLookup(tmp_path / "objects")
    store.victim = tree / "variables" / "variables.index"  # bytes no other file of the tree holds
    with pytest.raises(IntegrityError, match=r"variables\.index changed while it was being registered"):
        directories.put_tree(store, tree)
    assert stored_manifests(store) == []
