"""Directory models over any object store, written once over the stores' primitives.

A directory is stored as one content-addressed object per regular file (uploaded only when the store does not
hold those bytes yet) plus its manifest (`_tree.TreeManifest`), stored last like any other object. The
model's digest is the manifest's SHA-256, so a record binds every path, size, hash and executable bit. A
download checks the manifest against that digest, every path against the manifest grammar, and every file's
size and SHA-256, in a staging directory that becomes the destination with one rename.
"""

from __future__ import annotations

import contextlib
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TypeVar

from mreg._fileio import write_durably
from mreg.errors import IntegrityError, MregError, NotFoundError
from mreg.storage import ObjectStore, Progress, StoredObject
from mreg.storage._tree import ManifestFile, TreeManifest, TreeWalk, hash_file, parse_manifest, publish_tree, walk_tree

_Entry = TypeVar("_Entry")
MiB = 1024 * 1024
WORKERS = 8
"""Files of up to `LARGE_FILE` bytes uploaded (or looked up) at once: each is a few small requests, so they
wait on round trips, and each is read whole into memory at most."""
LARGE_FILE = 8 * MiB
LARGE_WORKERS = 2
"""Larger files uploaded at once, beside the small ones: each sends its parts concurrently already, holding
several in memory (8 MiB each, 8 in flight on S3)."""
MAX_MANIFEST = 64 * MiB


@dataclass(frozen=True)
class StoredTree:
    """A directory model in the store: its manifest object, digest, and what it holds."""

    manifest: StoredObject
    """The manifest object; its SHA-256 is the model's digest."""
    count: int
    size: int
    uploaded: int
    """Files whose bytes were sent (the others were in the store already)."""


def put_tree(
    store: ObjectStore, root: Path, *, walked: TreeWalk | None = None, on_progress: Progress | None = None
) -> StoredTree:
    """Store every file of `root` that the store does not hold yet, then its manifest.

    The tree is refused before anything is read or sent when it holds a link, a special file, an unreadable
    entry, names that differ only by case or are not NFC, or no file at all (`walk_tree`; `walked` is its
    result when the caller walked it already). Each file is then hashed and, unless the store holds it,
    sent, many at once: hashing one file overlaps sending others. Files found in the store are reused
    (`ObjectStore.reuse`: a `gc` running meanwhile keeps them); where the store can list its content
    addresses in a quarter as many requests as there are files, that listing tells which files to send
    without looking each up. A failure leaves no manifest behind; file objects already sent are unreferenced
    and left for `gc`.
    """
    walked = walked or walk_tree(root)
    lock = threading.Lock()
    hashed: list[ManifestFile] = []
    uploaded = [0]
    # one listing of the store's addresses, where it is short, spares a look-up of each file not stored yet
    present = store.present(max_requests=len(walked.files) // 4)

    def upload(path: str) -> None:
        entry = hash_file(walked, path)
        new = present is not None and entry.sha256 not in present
        sent = new or store.reuse(entry.sha256, entry.size) is None
        if sent:
            stored = store.put_file(root / entry.path, on_progress=on_progress)
            if stored.sha256 != entry.sha256:
                raise IntegrityError(f"{root / entry.path} changed while it was being registered.")
        elif on_progress is not None:
            on_progress(entry.size)
        with lock:
            hashed.append(entry)
            uploaded[0] += sent

    small = [path for path, size in walked.files.items() if size <= LARGE_FILE]
    large = [path for path, size in walked.files.items() if size > LARGE_FILE]
    _each(upload, (small, WORKERS), (large, LARGE_WORKERS))
    manifest = walked.manifest(hashed)
    with tempfile.NamedTemporaryFile(prefix="mreg-manifest-") as handle:
        write_durably(handle, manifest.to_bytes())  # type: ignore[arg-type]
        stored = store.put_file(Path(handle.name))
    if stored.sha256 != manifest.digest():
        raise IntegrityError(f"the manifest of {root} was stored as {stored.sha256}, not {manifest.digest()}.")
    return StoredTree(manifest=stored, count=manifest.count, size=manifest.size, uploaded=uploaded[0])


def read_manifest(store: ObjectStore, uri: str, sha256: str) -> TreeManifest:
    """The manifest at `uri`, refused unless its bytes hash to `sha256` and every entry is well formed."""
    with tempfile.SpooledTemporaryFile(max_size=MAX_MANIFEST) as sink:
        actual, size = store.read_into(uri, sink)  # type: ignore[arg-type]
        if actual != sha256:
            raise IntegrityError(f"the manifest {uri} hashes to {actual}, but the record says {sha256}.")
        if size > MAX_MANIFEST:
            raise IntegrityError(f"the manifest {uri} is larger than {MAX_MANIFEST} bytes.")
        sink.seek(0)
        return parse_manifest(sink.read(), uri)


def fetch_tree(
    store: ObjectStore,
    uri: str,
    sha256: str,
    destination: Path,
    *,
    overwrite: bool = False,
    on_progress: Progress | None = None,
) -> TreeManifest:
    """Download the directory model whose manifest is `uri` into `destination`, all checked, published with
    one rename. An existing destination is replaced only with `overwrite`; on any failure nothing is left at
    the destination and no staging directory remains."""
    manifest = read_manifest(store, uri, sha256)
    located = _locate(store, manifest)

    def write(entry: ManifestFile, sink: BinaryIO) -> None:
        actual, size = store.read_into(located[entry.sha256], sink, on_progress)
        if (actual, size) != (entry.sha256, entry.size):
            raise IntegrityError(
                f"{located[entry.sha256]} ({entry.path}) holds {size} bytes hashing to {actual}; "
                f"the manifest says {entry.size} bytes, {entry.sha256}."
            )

    publish_tree(manifest, destination, write, overwrite=overwrite)
    return manifest


def verify_tree(store: ObjectStore, uri: str, sha256: str) -> list[str]:
    """Every problem with a stored directory model, one line each, naming each file that is missing or
    differs (empty when it is intact)."""
    try:
        manifest = read_manifest(store, uri, sha256)
    except MregError as exc:
        return [str(exc)]
    problems: list[str] = []
    lock = threading.Lock()

    def check(entry: ManifestFile) -> None:
        found = store.find(entry.sha256, entry.size)
        if found is None:
            problem = f"{entry.path}: missing (no object holds sha256 {entry.sha256})"
        else:
            try:
                actual, size = store.digest(found)
            except MregError as exc:
                problem = f"{entry.path}: {exc}"
            else:
                if (actual, size) == (entry.sha256, entry.size):
                    return
                problem = f"{entry.path}: {found} holds {size} bytes hashing to {actual}, not {entry.sha256}"
        with lock:
            problems.append(problem)

    _each(check, (_distinct(manifest), WORKERS))
    return sorted(problems)


def referenced_objects(store: ObjectStore, uri: str, sha256: str) -> list[str]:
    """The objects a directory model needs: its manifest and each file's object."""
    manifest = read_manifest(store, uri, sha256)
    return [uri, *_locate(store, manifest).values()]


def _locate(store: ObjectStore, manifest: TreeManifest) -> dict[str, str]:
    """The object holding each file's bytes, by SHA-256 (looked up concurrently)."""
    located: dict[str, str] = {}
    lock = threading.Lock()

    def find(entry: ManifestFile) -> None:
        found = store.find(entry.sha256, entry.size)
        if found is None:
            raise NotFoundError(f"no object holds {entry.path} (sha256 {entry.sha256}) in the store.")
        with lock:
            located[entry.sha256] = found

    _each(find, (_distinct(manifest), WORKERS))
    return located


def _distinct(manifest: TreeManifest) -> list[ManifestFile]:
    """One entry per distinct content (the same bytes at two paths are one object)."""
    return list({entry.sha256: entry for entry in manifest.files}.values())


def _each(work: Callable[[_Entry], None], *lanes: tuple[list[_Entry], int]) -> None:
    """Run `work` on the entries of every lane at once, each lane on its own number of threads; the first
    failure stops the rest and is raised."""
    with contextlib.ExitStack() as pools:
        futures = []
        for entries, workers in lanes:
            pool = pools.enter_context(ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mreg-tree"))
            futures += [pool.submit(work, entry) for entry in entries]
        try:
            for future in as_completed(futures):
                future.result()
        except BaseException:
            for future in futures:
                future.cancel()
            raise
