"""The registry's event log: one CloudEvents 1.0 JSON document per change, `events/<id>`, created once and
never replaced, after the change it reports succeeded.

An id is the UTC time to the microsecond and a random suffix (`20261202T180153123456Z-1f2e3d4c`), so ids
sort as text in the order the events were written (to the clock's precision, across writers), and a
listing of `events/` after an id reads only what came later. Bucket notifications on that prefix (S3 Event
Notifications, GCS Pub/Sub) can drive deployments without an mreg server.
"""

from __future__ import annotations

import re
import secrets
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from mreg._grammar import document_path
from mreg.errors import StorageError
from mreg.records._index import READERS, STAMP

if TYPE_CHECKING:
    from mreg.records.store import RecordStore

TYPES = (
    "io.mreg.version.registered",
    "io.mreg.alias.moved",
    "io.mreg.version.tagged",
    "io.mreg.version.described",
    "io.mreg.version.yanked",
    "io.mreg.version.unyanked",
    "io.mreg.version.signed",
    "io.mreg.gc.swept",
)
ID_RE = re.compile(r"\d{8}T\d{12}Z-[0-9a-f]{8}")
MAX_ATTEMPTS = 100


class Event(BaseModel):
    """A CloudEvents 1.0 event in its JSON format (structured mode)."""

    model_config = ConfigDict(frozen=True, extra="allow")  # CloudEvents extension attributes are kept

    specversion: Literal["1.0"] = "1.0"
    id: str
    source: str
    """The registry's URI."""
    type: str
    subject: str | None = None
    """`NAME:VERSION` or `NAME@ALIAS` (none for `io.mreg.gc.swept`)."""
    time: datetime
    datacontenttype: Literal["application/json"] = "application/json"
    data: dict[str, Any]

    @property
    def model(self) -> str | None:
        """The model the subject names."""
        return re.split(r"[:@]", self.subject, maxsplit=1)[0] if self.subject else None


def emit(store: RecordStore, type_: str, subject: str | None, data: dict[str, Any]) -> Event:
    """Append an event (a new id on the rare collision) and return it."""
    for _ in range(MAX_ATTEMPTS):
        now = datetime.now(UTC)
        event = Event(
            id=f"{now.strftime(STAMP)}-{secrets.token_hex(4)}",
            source=store.where,
            type=type_,
            subject=subject,
            time=now,
            data=data,
        )
        if store._create_document(document_path("events", event.id), event.model_dump_json(exclude_none=True).encode()):
            return event
    raise StorageError(f"could not write a {type_} event in {store.where} after {MAX_ATTEMPTS} attempts.")


def read_events(store: RecordStore, *, name: str | None = None, since: datetime | None = None) -> list[Event]:
    """The events (of model `name`, at or after `since`), oldest first."""
    start = since.astimezone(UTC).strftime(STAMP) if since else None
    ids = [found for found in store._list_documents(("events",), start_after=start) if ID_RE.fullmatch(found)]

    def read(event_id: str) -> Event | None:
        data, _ = store._read_document(document_path("events", event_id))
        if data is None:
            return None
        try:
            return Event.model_validate_json(data)
        except ValidationError as exc:
            raise StorageError(f"event {event_id} in {store.where} is not a CloudEvents document ({exc}).") from exc

    with ThreadPoolExecutor(max_workers=min(READERS, max(1, len(ids)))) as pool:
        events = [event for event in pool.map(read, ids) if event is not None]
    return [event for event in events if name is None or event.model == name]
