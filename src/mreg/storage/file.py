"""The local object store: a directory, written through fsynced temporary files moved into place."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

from mreg.errors import IntegrityError, InvalidInputError, NotFoundError, StorageError
from mreg.fileio import fsync_directory, incoming, write_durably
from mreg.storage import Progress, StoredObject, hash_stream


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes."""
    with path.open("rb") as handle:
        return hash_stream(handle)[0]


class FileObjectStore:
    """A directory: objects are written to a temporary file, fsynced, then moved into place atomically."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def put_file(self, path: Path, *, on_progress: Progress | None = None) -> StoredObject:
        try:
            source = path.open("rb")
        except OSError as exc:
            raise InvalidInputError(f"{path}: cannot be read ({exc.strerror}).") from None
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
            raise StorageError(f"cannot store {path} under {self.root}: {exc}.") from None
        if file_sha256(final) != sha256:
            raise IntegrityError(f"{final} does not hash to {sha256} after it was written.")
        return StoredObject(uri=final.as_uri(), sha256=sha256, size=size)

    def fetch(self, uri: str, sha256: str, destination: Path, *, on_progress: Progress | None = None) -> None:
        source = file_uri_path(uri)
        try:
            with source.open("rb") as reader, incoming(destination.parent) as (handle, temporary):
                actual, _ = hash_stream(reader, handle, on_progress)
                handle.close()
                if actual != sha256:
                    raise IntegrityError(f"{uri} hashes to {actual}, but the record says {sha256}.")
                temporary.chmod(0o644)
                temporary.replace(destination)
        except FileNotFoundError:
            raise NotFoundError(f"{uri} does not exist.") from None
        except OSError as exc:
            raise StorageError(f"cannot copy {uri} to {destination}: {exc}.") from None

    def digest(self, uri: str) -> tuple[str, int]:
        try:
            with file_uri_path(uri).open("rb") as reader:
                return hash_stream(reader)
        except FileNotFoundError:
            raise NotFoundError(f"{uri} does not exist.") from None
        except OSError as exc:
            raise StorageError(f"cannot read {uri}: {exc}.") from None


def file_uri_path(uri: str) -> Path:
    """The local path of an absolute `file://` URI."""
    parsed = urlparse(uri)
    if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
        raise InvalidInputError(f"{uri}: not an absolute file:// URI.")
    return Path(unquote(parsed.path))
