"""The S3 record store: `<prefix>/models/<name>/versions/<n>.json`, created with `If-None-Match: *`.

Each alias is one document, `<prefix>/models/<name>/aliases/<alias>.json`, replaced with `If-Match: <ETag>`
(created with `If-None-Match: *`): of two concurrent moves one wins and the other retries on top of it.
Generic documents are objects `<prefix>/<path>.json`, created and swapped the same two ways.
"""

from __future__ import annotations

from typing import Any

from mreg._grammar import DocumentPath
from mreg._s3 import ABSENT, CONFLICT, S3Location, S3Resource, boto_errors, error_code, translate
from mreg.records.store import RecordStore


class S3RecordStore(RecordStore, S3Resource):
    """Records in any S3-compatible object store."""

    def __init__(self, location: S3Location, *, endpoint_url: str | None = None) -> None:
        S3Resource.__init__(self, location, endpoint_url=endpoint_url)
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
        extra: dict[str, str] = {"Delimiter": "/"} if delimited else {}
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.location.bucket,
                Prefix=prefix,
                **extra,  # type: ignore[arg-type]
            ):
                if delimited:
                    found += [entry["Prefix"][len(prefix) :] for entry in page.get("CommonPrefixes", [])]
                else:
                    found += [entry["Key"][len(prefix) :] for entry in page.get("Contents", [])]
        except boto_errors() as exc:
            raise translate(exc, f"list {self.location.uri(prefix)}") from exc
        return found

    def _key(self, name: str, *parts: str) -> str:
        return self.location.key("models", name, *parts)

    def _version_key(self, name: str, version: int) -> str:
        return self._key(name, "versions", f"{version:010d}.json")

    def _get(self, key: str) -> tuple[bytes, str] | None:
        try:
            response = self.client.get_object(Bucket=self.location.bucket, Key=key)
            return response["Body"].read(), response["ETag"]
        except boto_errors() as exc:
            if error_code(exc) in ABSENT:
                return None
            raise translate(exc, f"read {self.location.uri(key)}") from exc

    def _put(self, key: str, data: bytes, **condition: str) -> bool:
        """Conditional write; False when the condition does not hold (someone else wrote first)."""
        try:
            self.client.put_object(
                Bucket=self.location.bucket,
                Key=key,
                Body=data,
                ContentType="application/json",
                **condition,  # type: ignore[arg-type]
            )
        except boto_errors() as exc:
            if error_code(exc) in CONFLICT:
                return False
            raise translate(exc, f"write {self.location.uri(key)}") from exc
        return True

    def _read(self, name: str, version: int) -> bytes | None:
        found = self._get(self._version_key(name, version))
        return found[0] if found else None

    def _exists(self, name: str, version: int) -> bool:
        key = self._version_key(name, version)
        try:
            self.client.head_object(Bucket=self.location.bucket, Key=key)
        except boto_errors() as exc:
            if error_code(exc) in ABSENT:
                return False
            raise translate(exc, f"look up {self.location.uri(key)}") from exc
        return True

    def _create(self, name: str, version: int, data: bytes) -> bool:
        return self._put(self._version_key(name, version), data, IfNoneMatch="*")

    def _read_hint(self, name: str) -> int | None:
        found = self._get(self._key(name, "latest"))
        try:
            return int(found[0]) if found else None
        except ValueError:
            return None

    def _write_hint(self, name: str, version: int) -> None:
        self._put(self._key(name, "latest"), str(version).encode())

    def _highest(self, name: str) -> int:
        stems = (key.removesuffix(".json") for key in self._list(self._key(name, "versions", "")))
        return max((int(stem) for stem in stems if stem.isdigit()), default=0)

    def _read_alias(self, name: str, alias: str) -> tuple[bytes | None, Any]:
        found = self._get(self._key(name, "aliases", f"{alias}.json"))
        return (found[0], found[1]) if found else (None, None)

    def _swap_alias(self, name: str, alias: str, data: bytes, token: Any) -> bool:
        key = self._key(name, "aliases", f"{alias}.json")
        return self._put(key, data, IfMatch=token) if token else self._put(key, data, IfNoneMatch="*")

    def _document_key(self, path: DocumentPath) -> str:
        return self.location.key(*path[:-1], f"{path[-1]}.json")

    def _create_document(self, path: DocumentPath, data: bytes) -> bool:
        return self._put(self._document_key(path), data, IfNoneMatch="*")

    def _read_document(self, path: DocumentPath) -> tuple[bytes | None, Any]:
        found = self._get(self._document_key(path))
        return (found[0], found[1]) if found else (None, None)

    def _swap_document(self, path: DocumentPath, data: bytes, token: Any) -> bool:
        key = self._document_key(path)
        return self._put(key, data, IfMatch=token) if token else self._put(key, data, IfNoneMatch="*")

    def _list_documents(self, prefix: DocumentPath, start_after: str | None = None) -> list[str]:
        below = self.location.key(*prefix, "")
        found: list[str] = []
        extra: dict[str, str] = {"StartAfter": below + start_after} if start_after else {}
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.location.bucket,
                Prefix=below,
                Delimiter="/",
                **extra,  # type: ignore[arg-type]
            ):
                found += [entry["Key"][len(below) :] for entry in page.get("Contents", [])]
        except boto_errors() as exc:
            raise translate(exc, f"list {self.location.uri(below)}") from exc
        names = (key.removesuffix(".json") for key in found if key.endswith(".json"))
        return sorted(name for name in names if start_after is None or name > start_after)

    def _delete_document(self, path: DocumentPath) -> None:
        key = self._document_key(path)
        try:
            self.client.delete_object(Bucket=self.location.bucket, Key=key)
        except boto_errors() as exc:
            if error_code(exc) not in ABSENT:
                raise translate(exc, f"delete {self.location.uri(key)}") from exc
