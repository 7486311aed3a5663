"""The mutable annotations of a version: tags, a description, whether it is yanked or purged, and every
change made to them.

They live beside the immutable record, never in it, so that they never change its digest: one document per
version, `models/<name>/annotations/<version>`, replaced by compare-and-swap like an alias document. Each
change reads the document, applies an edit and swaps it in; a writer that lost the race applies its edit
again on top of the winner's, so concurrent changes lose nothing. Each change is recorded (who, when, old,
new), and the version index is told (`_index`), with a marker that outlives a writer that dies mid-way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Literal

from pydantic import Field, ValidationError

from mreg._grammar import DocumentPath, document_path
from mreg.errors import InvalidInputError, NotFoundError, StorageError
from mreg.records import _index
from mreg.records.model import MAX_ENTRIES, NAME_PATTERN, Key, Text, _Frozen

if TYPE_CHECKING:
    from mreg.records.store import RecordStore

MAX_ATTEMPTS = 10_000


class Change(_Frozen):
    """One change of a version's annotations: which field (`tags.KEY`, `description`, `yanked`, `purged`),
    from what to what (None: absent), by whom and when."""

    field: str
    old: str | None
    new: str | None
    by: str
    at: datetime


class Yank(_Frozen):
    """Why a version was yanked, by whom and when; `aliases` that still pointed at it (yanked with --force)."""

    reason: str
    by: str
    at: datetime
    aliases: list[str] = Field(default_factory=list, exclude_if=lambda aliases: not aliases)


class Purge(_Frozen):
    """When `gc` deleted the objects of a yanked version (its record stays)."""

    by: str
    at: datetime


class Annotations(_Frozen):
    """The current annotations of one version, and every change that led to them."""

    schema_version: Literal[1] = 1
    name: str = Field(pattern=NAME_PATTERN)
    version: int = Field(ge=1)
    tags: dict[Key, Text] = Field(default_factory=dict, max_length=MAX_ENTRIES)
    description: str | None = None
    yanked: Yank | None = None
    purged: Purge | None = None
    history: list[Change] = Field(default_factory=list)

    @property
    def revision(self) -> int:
        """How many changes were made (orders the index's updates)."""
        return len(self.history)

    def changed(self, changes: list[Change], **fields: object) -> Annotations:
        """These annotations with `fields` replaced and `changes` added to the history."""
        return self.model_copy(update={**fields, "history": [*self.history, *changes]})


Edit = Callable[[Annotations], Annotations]
"""Makes the new annotations from the current ones (returning them unchanged when there is nothing to do)."""


def annotations_path(name: str, version: int) -> DocumentPath:
    return document_path("models", name, "annotations", f"{version:010d}")


def decode_annotations(data: bytes, where: str) -> Annotations:
    """A stored annotations document, refused with a message naming it when damaged or from a newer mreg."""
    try:
        return Annotations.model_validate_json(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        location = ".".join(str(part) for part in first["loc"])
        message = f"annotations {where} are not a valid annotations document ({location}: {first['msg']})."
        raise StorageError(message) from exc


def read(store: RecordStore, name: str, version: int) -> tuple[Annotations, object]:
    """The version's annotations (empty when it has none yet) and the token to replace them."""
    data, token = store._read_document(annotations_path(name, version))
    if data is None:
        return Annotations(name=name, version=version), token
    return decode_annotations(data, f"{store.where} {name}:{version}"), token


def annotate(store: RecordStore, name: str, version: int, edit: Edit) -> tuple[Annotations, Annotations]:
    """Apply `edit` to the version's annotations by compare-and-swap, then update the index; return the
    annotations before and after (the same when the edit changed nothing, and then nothing is written).

    The change's marker is removed once the index holds the change, or when the edit refused (nothing was
    written); after any other failure it stays, and readers read this version's annotations themselves.
    """
    marker = _index.begin_change(store, name, version)
    try:
        current, changed = _swap(store, name, version, edit)
    except (InvalidInputError, NotFoundError):
        _index.end_change(store, marker)
        raise
    if changed is not current:
        _index.note_annotations(store, name, version, changed.revision, changed.tags, changed.yanked is not None)
    _index.end_change(store, marker)
    return current, changed


def _swap(store: RecordStore, name: str, version: int, edit: Edit) -> tuple[Annotations, Annotations]:
    path = annotations_path(name, version)
    for _ in range(MAX_ATTEMPTS):
        current, token = read(store, name, version)
        changed = edit(current)
        if changed is current or store._swap_document(path, changed.model_dump_json(indent=2).encode(), token):
            return current, changed
    raise StorageError(f"could not change the annotations of {name}:{version} after {MAX_ATTEMPTS} attempts.")


def tag_edit(ref: str, set_tags: Mapping[str, str], delete: Iterable[str], *, by: str, at: datetime) -> Edit:
    """Set and delete tags; deleting a tag the version does not have is refused."""
    deleted = list(delete)

    def edit(current: Annotations) -> Annotations:
        tags = dict(current.tags)
        changes: list[Change] = []
        for key in deleted:
            if key not in tags:
                raise NotFoundError(f"{ref} has no tag {key!r}.")
            changes.append(Change(field=f"tags.{key}", old=tags.pop(key), new=None, by=by, at=at))
        for key, value in set_tags.items():
            if tags.get(key) != value:
                changes.append(Change(field=f"tags.{key}", old=tags.get(key), new=value, by=by, at=at))
                tags[key] = value
        if len(tags) > MAX_ENTRIES:
            raise InvalidInputError(f"{ref} would have {len(tags)} tags; at most {MAX_ENTRIES} are allowed.")
        return current.changed(changes, tags=tags) if changes else current

    return edit


def describe_edit(text: str, *, by: str, at: datetime) -> Edit:
    """Replace the description (an empty text removes it)."""
    new = text or None

    def edit(current: Annotations) -> Annotations:
        if current.description == new:
            return current
        change = Change(field="description", old=current.description, new=new, by=by, at=at)
        return current.changed([change], description=new)

    return edit


def yank_edit(ref: str, reason: str, aliases: list[str], *, by: str, at: datetime) -> Edit:
    """Yank the version; one already yanked is refused (unyank it first to give another reason)."""

    def edit(current: Annotations) -> Annotations:
        if current.yanked is not None:
            raise InvalidInputError(f"{ref} is already yanked ({current.yanked.reason}).")
        yank = Yank(reason=reason, by=by, at=at, aliases=aliases)
        return current.changed([Change(field="yanked", old=None, new=reason, by=by, at=at)], yanked=yank)

    return edit


def unyank_edit(ref: str, *, by: str, at: datetime) -> Edit:
    """Unyank the version; one not yanked, or purged (its model is gone), is refused."""

    def edit(current: Annotations) -> Annotations:
        if current.purged is not None:
            raise InvalidInputError(f"{ref} was purged by gc (its model is gone), so it stays yanked.")
        if current.yanked is None:
            raise InvalidInputError(f"{ref} is not yanked.")
        change = Change(field="yanked", old=current.yanked.reason, new=None, by=by, at=at)
        return current.changed([change], yanked=None)

    return edit


def purge_edit(*, by: str, at: datetime) -> Edit:
    """Mark a yanked version purged; a version unyanked meanwhile, or purged already, is left as it is."""

    def edit(current: Annotations) -> Annotations:
        if current.yanked is None or current.purged is not None:
            return current
        change = Change(field="purged", old=None, new=at.isoformat(), by=by, at=at)
        return current.changed([change], purged=Purge(by=by, at=at))

    return edit
