"""The local record store: `<root>/<name>/versions/<n>.json`, created by an atomic, exclusive link.

Aliases are sequences of immutable files `<root>/<name>/aliases/<alias>/<seq>.json`, each the whole alias
document after one move: a move links `seq + 1` exclusively, so of two concurrent moves one wins and the
other retries on top of it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from mreg._fileio import fsync_directory, incoming, write_durably
from mreg.errors import StorageError
from mreg.records.store import RecordStore


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


def _numbers(directory: Path) -> list[int]:
    if not directory.is_dir():
        return []
    return [int(entry.stem) for entry in directory.iterdir() if entry.suffix == ".json" and entry.stem.isdigit()]


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
