"""A local cache of immutable records, so that looking up `NAME:VERSION` again needs no request to the store.

A record never changes once written (its version is created exclusively), so a copy of it stays true. Aliases,
`NAME` alone (the latest usable version) and annotations do change: they are never cached, and a record read
through them is taken from the cache only after the store said which version it is.

Each registry has its own directory below the cache root, named by the SHA-256 of its identity (its URI and
what decides which server answers for it): `records/<hex>.json` holds a record's content, exactly the bytes its
digest is the SHA-256 of, and `index/<name>/<version>.json` names the digest filed for that version. Both are
written to a temporary file and renamed into place, so that a reader finds a whole entry or none, and any
number of processes may fill the cache at once.

Nothing read from the cache is trusted: the content must hash to the digest it is filed under and decode into a
record whose own digest is that one, of the name and version asked for, and the index entry must be this
registry's; else the entry is removed and the store is read. A digest proves that bytes were not damaged, not
who wrote them, so the cache is used only while its directory belongs to the user and no one else may write to
it (mreg makes it with mode 0700).

The root is MREG_CACHE_DIR, else `$XDG_CACHE_HOME/mreg`, else `~/.cache/mreg`; MREG_NO_CACHE=1 turns the cache
off. Removing the root at any time is safe.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
from pathlib import Path

from mreg._fileio import incoming
from mreg._grammar import SHA256_DIGEST_RE
from mreg.records.model import Record, check_name

CACHE_DIR_ENV = "MREG_CACHE_DIR"
NO_CACHE_ENV = "MREG_NO_CACHE"


def cache_root() -> Path | None:
    """Where mreg caches: MREG_CACHE_DIR, else `$XDG_CACHE_HOME/mreg` (an absolute one), else `~/.cache/mreg`;
    None when MREG_NO_CACHE is set (to anything but '' or '0') or no home directory is known."""
    if os.environ.get(NO_CACHE_ENV, "") not in {"", "0"}:
        return None
    if chosen := os.environ.get(CACHE_DIR_ENV):
        return Path(chosen)
    xdg = Path(os.environ.get("XDG_CACHE_HOME", ""))
    if xdg.is_absolute():
        return xdg / "mreg"
    try:
        return Path.home() / ".cache" / "mreg"
    except RuntimeError:
        return None


def registry_cache(where: str, *, endpoint_url: str | None = None) -> RecordCache | None:
    """The record cache of the registry whose record store is at `where` (its URI), served by `endpoint_url`
    when given; None when caching is off or the registry is a local directory (reading it costs what reading
    the cache does, and a local registry deleted and made again would find the old one's records)."""
    root = cache_root()
    identity = registry_identity(where, endpoint_url=endpoint_url)
    if root is None or identity is None:
        return None
    return RecordCache(root / "records", identity)


def registry_identity(where: str, *, endpoint_url: str | None = None) -> str | None:
    """What tells one remote registry from another: its URI, and for S3 the endpoint (`endpoint_url`, else
    AWS_ENDPOINT_URL_S3, else AWS_ENDPOINT_URL) and the AWS profile (which may name another endpoint), for
    GCS the emulator (STORAGE_EMULATOR_HOST). None for a registry of any other scheme."""
    environ = os.environ
    if where.startswith("s3://"):
        endpoint = endpoint_url or environ.get("AWS_ENDPOINT_URL_S3") or environ.get("AWS_ENDPOINT_URL") or ""
        profile = environ.get("AWS_PROFILE") or environ.get("AWS_DEFAULT_PROFILE") or ""
        return json.dumps(["s3", where, endpoint, profile])
    if where.startswith("gs://"):
        return json.dumps(["gs", where, environ.get("STORAGE_EMULATOR_HOST", "")])
    return None


class RecordCache:
    """The cached records of one registry, below `root` (see the module's docstring)."""

    def __init__(self, root: Path, identity: str) -> None:
        self.root = root
        self.identity = identity
        self.directory = root / hashlib.sha256(identity.encode()).hexdigest()
        self._private: bool | None = None

    def get(self, name: str, version: int) -> Record | None:
        """The record `name:version`, when the cache holds a sound copy of it; else None, and a damaged,
        misfiled or foreign entry is removed."""
        index = self._index_path(name, version)
        if not self._usable():
            return None
        try:
            entry = index.read_bytes()
        except OSError:
            return None
        digest = self._filed_digest(entry, name, version)
        if digest is None:
            _remove(index)
            return None
        content = self._content_path(digest)
        try:
            record = _decode(content.read_bytes(), digest)
        except OSError:
            record = None
        if record is None:
            _remove(content)
            _remove(index)
            return None
        if (record.name, record.version) != (name, version):  # a sound record, of another version
            _remove(index)
            return None
        return record

    def put(self, name: str, version: int, record: Record) -> None:
        """Keep `record` as `name:version`; nothing is kept when it is another version, its digest is not the
        hash of its content, or the cache cannot be written (it only ever saves a read)."""
        content = _content(record)
        digest = _digest(content)
        if (record.name, record.version, record.digest) != (name, version, digest) or not self._usable():
            return
        entry = {"registry": self.identity, "name": name, "version": version, "digest": digest}
        index = self._index_path(name, version)
        with contextlib.suppress(OSError):
            for directory in (self.directory, self.directory / "records", index.parent.parent, index.parent):
                directory.mkdir(mode=0o700, exist_ok=True)  # private whatever the umask lets others do
            _replace(self._content_path(digest), content)
            _replace(index, json.dumps(entry).encode())

    def _index_path(self, name: str, version: int) -> Path:
        return self.directory / "index" / check_name(name) / f"{version:010d}.json"

    def _content_path(self, digest: str) -> Path:
        return self.directory / "records" / f"{digest.removeprefix('sha256:')}.json"

    def _filed_digest(self, entry: bytes, name: str, version: int) -> str | None:
        """The digest an index entry files under, when it is this registry's entry for `name:version`."""
        try:
            document = json.loads(entry)
        except ValueError:  # not UTF-8, not JSON
            return None
        if not isinstance(document, dict):
            return None
        digest = document.get("digest")
        expected = {"registry": self.identity, "name": name, "version": version, "digest": digest}
        if document != expected or not isinstance(digest, str) or not SHA256_DIGEST_RE.fullmatch(digest):
            return None
        return digest

    def _usable(self) -> bool:
        """Whether the cache's directory (made when missing) is this user's and no one else may write to it;
        checked once."""
        if self._private is None:
            try:
                self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
                found = self.root.stat()
            except OSError:
                self._private = False
            else:
                mine = stat.S_ISDIR(found.st_mode) and found.st_uid == os.getuid()
                self._private = mine and not found.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        return self._private


def _content(record: Record) -> bytes:
    """The bytes a record's digest is the SHA-256 of: the canonical JSON of every field but `digest`."""
    fields = record.model_dump(mode="json", exclude={"digest"})
    return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _decode(content: bytes, digest: str) -> Record | None:
    """The record `content` is, when it hashes to `digest` and decodes into a record with that digest."""
    if _digest(content) != digest:
        return None
    try:
        record = Record.model_validate({**json.loads(content), "digest": digest})
    except (ValueError, TypeError):  # not JSON, not an object, or not a record (a ValidationError)
        return None
    return record if record.content_digest() == digest else None


def _replace(path: Path, data: bytes) -> None:
    """Write `data` to `path` by a rename: a reader sees the old file, or the whole new one."""
    with incoming(path.parent) as (handle, temporary):
        handle.write(data)
        handle.close()
        temporary.replace(path)


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)
