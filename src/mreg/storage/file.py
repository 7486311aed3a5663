"""The local object store: a directory, written through fsynced temporary files moved into place."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlparse

from mreg._fileio import fsync_directory, incoming, write_durably
from mreg.errors import IntegrityError, InvalidInputError, NotFoundError, StorageError
from mreg.storage import ListedObject, Progress, StoredObject, fetch_verified, hash_stream


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes."""
    with path.open("rb") as handle:
        return hash_stream(handle)[0]


class FileObjectStore:
    """A directory: objects are written to a temporary file, fsynced, then moved into place atomically."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def uri(self) -> str:
        return self.root.as_uri()

    def put_file(self, path: Path, *, on_progress: Progress | None = None) -> StoredObject:
        try:
            source = path.open("rb")
        except OSError as exc:
            raise InvalidInputError(f"{path}: cannot be read ({exc.strerror}).") from exc
        objects = self.root / "sha256"
        try:
            objects.mkdir(parents=True, exist_ok=True)
            with source, incoming(objects) as (handle, temporary):
                sha256, size = hash_stream(source, handle, on_progress)
                write_durably(handle)
                handle.close()
                final = objects / sha256
                if not (final.exists() and file_sha256(final) == sha256):
                    temporary.chmod(0o444)
                    temporary.replace(final)
                    fsync_directory(objects)
        except OSError as exc:
            raise StorageError(f"cannot store {path} under {self.root}: {exc}.") from exc
        if file_sha256(final) != sha256:
            raise IntegrityError(f"{final} does not hash to {sha256} after it was written.")
        return StoredObject(uri=final.as_uri(), sha256=sha256, size=size)

    def fetch(self, uri: str, sha256: str, destination: Path, *, on_progress: Progress | None = None) -> None:
        source = file_uri_path(uri)
        try:
            with source.open("rb") as reader:
                fetch_verified(destination, sha256, uri, lambda sink: hash_stream(reader, sink, on_progress)[0])
        except FileNotFoundError as exc:
            raise NotFoundError(f"{uri} does not exist.") from exc
        except OSError as exc:
            raise StorageError(f"cannot copy {uri} to {destination}: {exc}.") from exc

    def find(self, sha256: str, size: int) -> str | None:
        path = self.root / "sha256" / sha256
        try:
            return path.as_uri() if path.stat().st_size == size else None
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(f"cannot look up {path}: {exc}.") from exc

    def read_into(self, uri: str, sink: BinaryIO, on_progress: Progress | None = None) -> tuple[str, int]:
        try:
            with file_uri_path(uri).open("rb") as reader:
                return hash_stream(reader, sink, on_progress)
        except FileNotFoundError as exc:
            raise NotFoundError(f"{uri} does not exist.") from exc
        except OSError as exc:
            raise StorageError(f"cannot read {uri}: {exc}.") from exc

    def digest(self, uri: str) -> tuple[str, int]:
        try:
            with file_uri_path(uri).open("rb") as reader:
                return hash_stream(reader)
        except FileNotFoundError as exc:
            raise NotFoundError(f"{uri} does not exist.") from exc
        except OSError as exc:
            raise StorageError(f"cannot read {uri}: {exc}.") from exc

    def list_objects(self) -> list[ListedObject]:
        objects = self.root / "sha256"
        listed = []
        try:
            entries = list(objects.iterdir()) if objects.is_dir() else []
            for entry in entries:
                try:
                    stat = entry.lstat()
                except FileNotFoundError:  # moved into place or removed meanwhile
                    continue
                modified = datetime.fromtimestamp(stat.st_mtime, UTC)
                listed.append(ListedObject(uri=entry.as_uri(), size=stat.st_size, modified=modified))
        except OSError as exc:
            raise StorageError(f"cannot list {objects}: {exc}.") from exc
        return listed

    def references(self, uri: str, sha256: str) -> list[str]:
        return [uri]

    def delete(self, uri: str) -> None:
        path = file_uri_path(uri)
        if path.parent != self.root / "sha256":
            raise StorageError(f"{uri} is not an object of {self.uri}; it is not deleted.")
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot delete {uri}: {exc}.") from exc


def file_uri_path(uri: str) -> Path:
    """The local path of an absolute `file://` URI."""
    parsed = urlparse(uri)
    if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
        raise InvalidInputError(f"{uri}: not an absolute file:// URI.")
    return Path(unquote(parsed.path))
