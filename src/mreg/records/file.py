"""The local record store: `<root>/<name>/versions/<n>.json`, created by an atomic, exclusive link.

Aliases are sequences of immutable files `<root>/<name>/aliases/<alias>/<seq>.json`, each the whole alias
document after one move: a move links `seq + 1` exclusively, so of two concurrent moves one wins and the
other retries on top of it.

Generic documents follow the same two patterns: an immutable one is a file `<path>.json` linked exclusively;
a mutable one is a directory `<path>/` of sequence files, the last one current. A swap holds the directory's
lock (`flock` on `<path>/.lock`) while it checks that the last sequence is still its token's, links
`seq + 1` and removes the file `KEEP` sequences back, so that a document rewritten often stays small on disk
(removing without the lock would let a late swap re-create a removed sequence file). Readers take no lock:
the last sequence file is complete when it appears, and one removed while being read is looked up again.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mreg._fileio import fsync_directory, incoming, write_durably
from mreg._grammar import DocumentPath
from mreg.errors import StorageError
from mreg.records.store import MAX_ATTEMPTS, RecordStore

KEEP = 4
"""Sequence files kept of a mutable document (older ones are removed by the next swap)."""


class FileRecordStore(RecordStore):
    """Records in a local directory (the default, `file://.mreg/registry`)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.where = root.as_uri()

    def models(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(entry.name for entry in self.root.iterdir() if (entry / "versions").is_dir())

    def _alias_names(self, name: str) -> list[str]:
        directory = self.root / name / "aliases"
        return [entry.name for entry in directory.iterdir() if entry.is_dir()] if directory.is_dir() else []

    def _path(self, name: str, version: int) -> Path:
        return self.root / name / "versions" / f"{version:010d}.json"

    def _read(self, name: str, version: int) -> bytes | None:
        try:
            return self._path(name, version).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(f"cannot read {self._path(name, version)}: {exc}.") from exc

    def _exists(self, name: str, version: int) -> bool:
        return self._path(name, version).exists()

    def _create(self, name: str, version: int, data: bytes) -> bool:
        return _link_new(self._path(name, version), data)

    def _read_hint(self, name: str) -> int | None:
        try:
            return int((self.root / name / "latest").read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def _write_hint(self, name: str, version: int) -> None:
        directory = self.root / name
        try:
            with incoming(directory) as (handle, temporary):
                handle.write(f"{version}\n".encode())
                handle.close()
                temporary.replace(directory / "latest")
        except OSError as exc:
            raise StorageError(f"cannot update {directory / 'latest'}: {exc}.") from exc

    def _highest(self, name: str) -> int:
        return max(_numbers(self.root / name / "versions"), default=0)

    def _read_alias(self, name: str, alias: str) -> tuple[bytes | None, Any]:
        directory = self.root / name / "aliases" / alias
        sequence = max(_numbers(directory), default=0)
        if sequence == 0:
            return None, 0
        try:
            return (directory / f"{sequence:010d}.json").read_bytes(), sequence
        except OSError as exc:
            raise StorageError(f"cannot read alias {name}@{alias} under {directory}: {exc}.") from exc

    def _swap_alias(self, name: str, alias: str, data: bytes, token: Any) -> bool:
        return _link_new(self.root / name / "aliases" / alias / f"{token + 1:010d}.json", data)

    def _document(self, path: DocumentPath) -> Path:
        """Where a document lives: `models/NAME/...` in the model's own directory, anything else below the root."""
        parts = path[1:] if path[:1] == ("models",) else path
        return self.root.joinpath(*parts)

    def _create_document(self, path: DocumentPath, data: bytes) -> bool:
        return _link_new(self._document(path).with_name(path[-1] + ".json"), data)

    def _read_document(self, path: DocumentPath) -> tuple[bytes | None, Any]:
        base = self._document(path)
        if not base.is_dir():
            try:
                return base.with_name(path[-1] + ".json").read_bytes(), None
            except FileNotFoundError:
                return None, 0
            except OSError as exc:
                raise StorageError(f"cannot read {base}.json: {exc}.") from exc
        for _ in range(MAX_ATTEMPTS):  # a sequence file removed while being read: look again
            sequence = max(_numbers(base), default=0)
            try:
                return ((base / f"{sequence:010d}.json").read_bytes() if sequence else None), sequence
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise StorageError(f"cannot read {base / f'{sequence:010d}.json'}: {exc}.") from exc
        raise StorageError(f"cannot read {base}: its sequence files keep changing.")

    def _swap_document(self, path: DocumentPath, data: bytes, token: Any) -> bool:
        base = self._document(path)
        current = int(token or 0)
        with _locked(base):
            if max(_numbers(base), default=0) != current:
                return False
            if not _link_new(base / f"{current + 1:010d}.json", data):
                return False
            if current + 1 > KEEP:
                with contextlib.suppress(OSError):  # an old copy left behind costs only its bytes
                    (base / f"{current + 1 - KEEP:010d}.json").unlink()
        return True

    def _list_documents(self, prefix: DocumentPath, start_after: str | None = None) -> list[str]:
        directory = self._document(prefix)
        try:
            entries = list(directory.iterdir())
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StorageError(f"cannot list {directory}: {exc}.") from exc
        names = {
            entry.name.removesuffix(".json")
            for entry in entries
            if not entry.name.startswith(".") and (entry.is_dir() or entry.name.endswith(".json"))
        }
        return sorted(name for name in names if start_after is None or name > start_after)

    def _delete_document(self, path: DocumentPath) -> None:
        target = self._document(path).with_name(path[-1] + ".json")
        try:
            target.unlink(missing_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot remove {target}: {exc}.") from exc


def _numbers(directory: Path) -> list[int]:
    if not directory.is_dir():
        return []
    return [int(entry.stem) for entry in directory.iterdir() if entry.suffix == ".json" and entry.stem.isdigit()]


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Hold the exclusive lock of a mutable document's directory (released when the process dies, too)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise StorageError(f"cannot lock {directory}: {exc}.") from exc
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


def _link_new(path: Path, data: bytes) -> bool:
    """Write `data` to a temporary file, fsync it, then link it to `path`: False when `path` exists.

    A reader sees the whole file or nothing; an interrupted write leaves nothing behind.
    """
    try:
        with incoming(path.parent) as (handle, temporary):
            write_durably(handle, data)
            handle.close()
            temporary.chmod(0o444)
            os.link(temporary, path)
    except FileExistsError:
        return False
    except OSError as exc:
        raise StorageError(f"cannot write {path}: {exc}.") from exc
    fsync_directory(path.parent)
    return True
