"""The S3 record store: `<prefix>/models/<name>/versions/<n>.json`, created with `If-None-Match: *`.

Each alias is one document, `<prefix>/models/<name>/aliases/<alias>.json`, replaced with `If-Match: <ETag>`
(created with `If-None-Match: *`): of two concurrent moves one wins and the other retries on top of it.
"""

from __future__ import annotations

from typing import Any

from mreg.records import RecordStore
from mreg.s3 import S3Location, S3Resource, boto_errors, error_code, translate

_ABSENT = {"404", "NoSuchKey", "NotFound"}
_CONFLICT = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}


class S3RecordStore(RecordStore, S3Resource):
    """Records in any S3-compatible object store."""

    def __init__(self, location: S3Location, *, endpoint_url: str | None = None) -> None:
        S3Resource.__init__(self, location, endpoint_url=endpoint_url)
        self.where = location.uri(location.prefix).rstrip("/")

    def models(self) -> list[str]:
        prefix = self.location.key("models", "")
        names: list[str] = []
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.location.bucket, Prefix=prefix, Delimiter="/"
            ):
                names += [entry["Prefix"][len(prefix) :].rstrip("/") for entry in page.get("CommonPrefixes", [])]
        except boto_errors() as exc:
            raise translate(exc, f"list the models in {self.where}") from None
        return sorted(names)

    def _key(self, name: str, *parts: str) -> str:
        return self.location.key("models", name, *parts)

    def _version_key(self, name: str, version: int) -> str:
        return self._key(name, "versions", f"{version:010d}.json")

    def _get(self, key: str) -> tuple[bytes, str] | None:
        try:
            response = self.client.get_object(Bucket=self.location.bucket, Key=key)
            return response["Body"].read(), response["ETag"]
        except boto_errors() as exc:
            if error_code(exc) in _ABSENT:
                return None
            raise translate(exc, f"read {self.location.uri(key)}") from None

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
            if error_code(exc) in _CONFLICT:
                return False
            raise translate(exc, f"write {self.location.uri(key)}") from None
        return True

    def _read(self, name: str, version: int) -> bytes | None:
        found = self._get(self._version_key(name, version))
        return found[0] if found else None

    def _exists(self, name: str, version: int) -> bool:
        key = self._version_key(name, version)
        try:
            self.client.head_object(Bucket=self.location.bucket, Key=key)
        except boto_errors() as exc:
            if error_code(exc) in _ABSENT:
                return False
            raise translate(exc, f"look up {self.location.uri(key)}") from None
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
        prefix = self._key(name, "versions", "")
        highest = 0
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.location.bucket, Prefix=prefix
            ):
                for entry in page.get("Contents", []):
                    stem = entry["Key"][len(prefix) :].removesuffix(".json")
                    highest = max(highest, int(stem)) if stem.isdigit() else highest
        except boto_errors() as exc:
            raise translate(exc, f"list the versions of {name} in {self.where}") from None
        return highest

    def _read_alias(self, name: str, alias: str) -> tuple[bytes | None, Any]:
        found = self._get(self._key(name, "aliases", f"{alias}.json"))
        return (found[0], found[1]) if found else (None, None)

    def _swap_alias(self, name: str, alias: str, data: bytes, token: Any) -> bool:
        key = self._key(name, "aliases", f"{alias}.json")
        return self._put(key, data, IfMatch=token) if token else self._put(key, data, IfNoneMatch="*")
