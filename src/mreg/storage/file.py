"""The local object store: a directory, written through fsynced temporary files moved into place."""

from __future__ import annotations

import os
import uuid
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlparse

from mreg._fileio import fsync_directory, incoming, write_durably
from mreg.errors import IntegrityError, InvalidInputError, NotFoundError, StorageError
from mreg.storage import ListedObject, Progress, StoredObject, fetch_verified, hash_stream

GC_PREFIX = ".gc-"
"""Names an object `gc` has moved aside to check its age (a crash can leave one; a later gc removes it)."""


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
                if file_sha256(temporary) != sha256:
                    raise IntegrityError(f"{temporary} does not hash to {sha256} after it was written.")
                temporary.chmod(0o444)
                temporary.replace(final)  # also over the same bytes: their age starts again, for gc
                fsync_directory(objects)
        except OSError as exc:
            raise StorageError(f"cannot store {path} under {self.root}: {exc}.") from exc
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

    def present(self, *, max_requests: int) -> None:
        """None: a look-up here is one `stat`, cheaper than listing the directory."""
        return

    def reuse(self, sha256: str, size: int) -> str | None:
        found = self.find(sha256, size)
        if found is None:
            return None
        try:
            os.utime(file_uri_path(found))
        except (FileNotFoundError, PermissionError):  # removed meanwhile, or another user's: store it anew
            return None
        except OSError as exc:
            raise StorageError(f"cannot mark {found} as used: {exc}.") from exc
        return found

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

    def delete(self, uri: str, *, unless_newer_than: datetime | None = None) -> bool:
        """With `unless_newer_than`, the object is first moved aside (one rename), then its modification time
        is read: a `reuse` (a utime) that came first is seen then, and the object is moved back; one that comes
        later finds it gone and stores the bytes anew. Either way nothing a register uses is lost."""
        path = file_uri_path(uri)
        if path.parent != self.root / "sha256":
            raise StorageError(f"{uri} is not an object of {self.uri}; it is not deleted.")
        try:
            if unless_newer_than is None:
                path.unlink(missing_ok=True)
                return True
            return _delete_unless_newer(path, unless_newer_than)
        except OSError as exc:
            raise StorageError(f"cannot delete {uri}: {exc}.") from exc


def _delete_unless_newer(path: Path, cutoff: datetime) -> bool:
    aside = path.with_name(f"{GC_PREFIX}{uuid.uuid4().hex}")
    try:
        path.rename(aside)
    except FileNotFoundError:
        return True
    if datetime.fromtimestamp(aside.lstat().st_mtime, UTC) < cutoff:
        aside.unlink()
        return True
    with suppress(FileExistsError):  # back in place, unless the same bytes were stored anew meanwhile
        os.link(aside, path)
    aside.unlink()
    return False


def file_uri_path(uri: str) -> Path:
    """The local path of an absolute `file://` URI."""
    parsed = urlparse(uri)
    if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
        raise InvalidInputError(f"{uri}: not an absolute file:// URI.")
    return Path(unquote(parsed.path))
