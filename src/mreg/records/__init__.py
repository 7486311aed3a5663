"""Registry records: the record model (`model`), the record-store algorithms (`store`) and their backends
(`file`, `s3`, `gs`), chosen by the store URI's scheme."""

from __future__ import annotations

from pathlib import Path

from mreg._grammar import local_store_path, store_scheme
from mreg.engine import BuiltImage
from mreg.errors import InvalidInputError
from mreg.records.model import (
    Alias,
    AliasEvent,
    Dataset,
    GitInfo,
    ModelFile,
    ModelRef,
    OnnxInfo,
    Record,
    check_name,
    decode_alias,
    decode_record,
    parse_model_ref,
)
from mreg.records.store import RecordFactory, RecordStore

__all__ = [
    "Alias",
    "AliasEvent",
    "BuiltImage",
    "Dataset",
    "GitInfo",
    "ModelFile",
    "ModelRef",
    "OnnxInfo",
    "Record",
    "RecordFactory",
    "RecordStore",
    "check_name",
    "decode_alias",
    "decode_record",
    "open_record_store",
    "parse_model_ref",
]


def open_record_store(uri: str, root: Path, *, endpoint_url: str | None = None) -> RecordStore:
    """The record store behind `uri` (`file://PATH`, relative to `root`, `s3://bucket/prefix` or
    `gs://bucket/prefix`)."""
    try:
        scheme = store_scheme(uri)
    except ValueError as exc:
        raise InvalidInputError(f"{uri}: {exc}.") from exc
    if scheme == "s3":
        from mreg._s3 import store_location
        from mreg.records.s3 import S3RecordStore

        return S3RecordStore(store_location(uri), endpoint_url=endpoint_url)
    if scheme == "gs":
        from mreg._gcs import store_location as gs_location
        from mreg.records.gs import GsRecordStore

        return GsRecordStore(gs_location(uri))
    from mreg.records.file import FileRecordStore

    return FileRecordStore(local_store_path(uri, root))
