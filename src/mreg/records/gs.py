"""The GCS record store: `<prefix>/models/<name>/versions/<n>.json`, created with `ifGenerationMatch=0`.

Each alias is one document, `<prefix>/models/<name>/aliases/<alias>.json`, replaced with
`ifGenerationMatch=<generation>` (created with `ifGenerationMatch=0`): of two concurrent moves one wins and
the other retries on top of it. Every write is a single-request upload, whose precondition the service checks
when the object is written (a resumable upload's is checked only when its session starts); a write retried
after its answer was lost, finding its own bytes there, counts as written. Generic documents are objects
`<prefix>/<path>.json`, created and swapped the same two ways.
"""

from __future__ import annotations

from typing import Any

from mreg._gcs import TIMEOUT, GsLocation, GsResource, gcs_errors, retry, status_code, translate
from mreg._grammar import DocumentPath
from mreg.errors import IntegrityError
from mreg.records.store import RecordStore

READ_ATTEMPTS = 3
"""Reads of a mutable document whose bytes fail their checksum, before the failure is reported."""


class GsRecordStore(RecordStore, GsResource):
    """Records in a Google Cloud Storage bucket."""

    def __init__(self, location: GsLocation) -> None:
        GsResource.__init__(self, location)
        self.where = location.uri(location.prefix).rstrip("/")

    def models(self) -> list[str]:
        return sorted(name.rstrip("/") for name in self._list(self.location.key("models", ""), delimited=True))

    def _alias_names(self, name: str) -> list[str]:
        return [
            key.removesuffix(".json") for key in self._list(self._key(name, "aliases", "")) if key.endswith(".json")
        ]

    def _list(self, prefix: str, *, delimited: bool = False) -> list[str]:
        """What lies below `prefix` (the part after it): keys, or with `delimited` the next level's prefixes."""
        found: list[str] = []
        try:
            listing = self.client.list_blobs(
                self.location.bucket,
                prefix=prefix,
                delimiter="/" if delimited else None,
                retry=retry(),
                timeout=TIMEOUT,
            )
            for page in listing.pages:
                names = page.prefixes if delimited else (blob.name for blob in page)
                found += [str(name)[len(prefix) :] for name in names]
        except gcs_errors() as exc:
            raise translate(exc, f"list {self.location.uri(prefix)}") from exc
        return found

    def _key(self, name: str, *parts: str) -> str:
        return self.location.key("models", name, *parts)

    def _version_key(self, name: str, version: int) -> str:
        return self._key(name, "versions", f"{version:010d}.json")

    def _read(self, name: str, version: int) -> bytes | None:
        found = self.read(self._version_key(name, version))
        return found[0] if found else None

    def _exists(self, name: str, version: int) -> bool:
        key = self._version_key(name, version)
        try:
            return bool(self.blob(key).exists(retry=retry(), timeout=TIMEOUT))
        except gcs_errors() as exc:
            raise translate(exc, f"look up {self.location.uri(key)}") from exc

    def _create(self, name: str, version: int, data: bytes) -> bool:
        return self.write(self._version_key(name, version), data, generation=0)

    def _read_hint(self, name: str) -> int | None:
        found = self.read(self._key(name, "latest"))
        try:
            return int(found[0]) if found else None
        except ValueError:
            return None

    def _write_hint(self, name: str, version: int) -> None:
        self.write(self._key(name, "latest"), str(version).encode(), generation=None)

    def _highest(self, name: str) -> int:
        stems = (key.removesuffix(".json") for key in self._list(self._key(name, "versions", "")))
        return max((int(stem) for stem in stems if stem.isdigit()), default=0)

    def _read_alias(self, name: str, alias: str) -> tuple[bytes | None, Any]:
        found = self.read(self._key(name, "aliases", f"{alias}.json"))
        return found if found else (None, 0)

    def _swap_alias(self, name: str, alias: str, data: bytes, token: Any) -> bool:
        return self.write(self._key(name, "aliases", f"{alias}.json"), data, generation=int(token))

    def _document_key(self, path: DocumentPath) -> str:
        return self.location.key(*path[:-1], f"{path[-1]}.json")

    def _create_document(self, path: DocumentPath, data: bytes) -> bool:
        return self.write(self._document_key(path), data, generation=0)

    def _read_document(self, path: DocumentPath) -> tuple[bytes | None, Any]:
        key = self._document_key(path)
        for _ in range(READ_ATTEMPTS - 1):
            try:
                found = self.read(key)
            except IntegrityError:  # bytes that fail their CRC32C (torn by a concurrent replace): read again
                continue
            return found if found else (None, 0)
        found = self.read(key)
        return found if found else (None, 0)

    def _swap_document(self, path: DocumentPath, data: bytes, token: Any) -> bool:
        return self.write(self._document_key(path), data, generation=int(token or 0))

    def _list_documents(self, prefix: DocumentPath, start_after: str | None = None) -> list[str]:
        below = self.location.key(*prefix, "")
        found: list[str] = []
        try:
            listing = self.client.list_blobs(
                self.location.bucket,
                prefix=below,
                delimiter="/",
                start_offset=below + start_after if start_after else None,
                retry=retry(),
                timeout=TIMEOUT,
            )
            for page in listing.pages:
                found += [str(blob.name)[len(below) :] for blob in page]
        except gcs_errors() as exc:
            raise translate(exc, f"list {self.location.uri(below)}") from exc
        names = (key.removesuffix(".json") for key in found if key.endswith(".json"))
        return sorted(name for name in names if start_after is None or name > start_after)

    def _delete_document(self, path: DocumentPath) -> None:
        key = self._document_key(path)
        try:
            self.blob(key).delete(retry=retry(), timeout=TIMEOUT)
        except gcs_errors() as exc:
            if status_code(exc) != 404:
                raise translate(exc, f"delete {self.location.uri(key)}") from exc
