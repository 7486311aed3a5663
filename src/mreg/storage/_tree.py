"""Directory models: the manifest of a tree, scanned from disk, parsed back from a store, published safely.

A directory model is stored as one content-addressed blob per regular file plus a manifest: canonical JSON
listing every file's relative POSIX path, size, SHA-256 and executable bit, and the empty directories, all
sorted by path. The model's digest is the SHA-256 of the manifest's bytes, so it binds paths as well as
contents. Nothing here talks to a store: `walk_tree` checks a local tree, `scan_tree` also hashes it
(`hash_file` hashes one file of it), `parse_manifest` checks bytes read
back from a store, and `publish_tree` builds a tree in a staging directory beside its destination, filling
each file through a callback, and moves it into place with one rename.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import itertools
import json
import os
import re
import shutil
import stat
import threading
import unicodedata
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar

from mreg.errors import IntegrityError, InvalidInputError, StorageError

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

__all__ = [
    "ManifestFile",
    "TreeManifest",
    "TreeWalk",
    "WriteFile",
    "hash_file",
    "parse_manifest",
    "publish_tree",
    "scan_tree",
    "walk_tree",
]

SCHEMA_VERSION = 1
KIND = "directory"
CHUNK = 1024 * 1024
MAX_REPORTED = 20
"""At most this many problems are listed when a tree is refused."""

_HEX64 = re.compile(r"[0-9a-f]{64}")
_TOP_KEYS = frozenset({"schema_version", "kind", "files", "directories"})
_FILE_KEYS = frozenset({"path", "size", "sha256", "executable"})
# O_NONBLOCK: a file swapped for a FIFO after the walk must not block the open
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_SHOWN_LENGTH = 256

_Item = TypeVar("_Item")
_Result = TypeVar("_Result")


@dataclass(frozen=True)
class ManifestFile:
    """One regular file of a directory model."""

    path: str
    """Relative POSIX path: NFC, no `.`, `..` or empty parts, no backslash or control character."""
    size: int
    sha256: str
    """Lowercase hex."""
    executable: bool
    """The owner's execute bit."""


WriteFile = Callable[[ManifestFile, BinaryIO], None]
"""Fills a new, empty file with the bytes of a manifest entry (`publish_tree` checks them afterwards)."""


@dataclass(frozen=True)
class TreeManifest:
    """What a directory model holds: its files sorted by path, and its empty directories, sorted.

    Only a normalised manifest can be built: anything `parse_manifest` would refuse raises `ValueError`.
    """

    files: tuple[ManifestFile, ...]
    directories: tuple[str, ...] = ()
    """The empty directories only; the others are implied by the files' paths."""

    def __post_init__(self) -> None:
        problems = _manifest_problems(self.files, self.directories)
        if problems:
            raise ValueError(f"not a valid directory manifest: {problems[0]}")

    def to_bytes(self) -> bytes:
        """The canonical JSON of the manifest: sorted keys, no whitespace, UTF-8."""
        document = {
            "schema_version": SCHEMA_VERSION,
            "kind": KIND,
            "files": [
                {"path": entry.path, "size": entry.size, "sha256": entry.sha256, "executable": entry.executable}
                for entry in self.files
            ],
            "directories": list(self.directories),
        }
        return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    def digest(self) -> str:
        """The model's digest: SHA-256 (hex) of `to_bytes()`."""
        return hashlib.sha256(self.to_bytes()).hexdigest()

    @property
    def size(self) -> int:
        """Total bytes of all files."""
        return sum(entry.size for entry in self.files)

    @property
    def count(self) -> int:
        """Number of files."""
        return len(self.files)


# --- names and paths --------------------------------------------------------------------------------------


def _show(path: str) -> str:
    """`path` fit for a one-line message: quoted and escaped unless non-empty, printable and NFC; shortened if
    very long."""
    plain = path and path.isprintable() and unicodedata.is_normalized("NFC", path)
    text = path if plain else ascii(path)
    return text if len(text) <= _SHOWN_LENGTH else f"{text[:_SHOWN_LENGTH]}..."


def _brief(value: object) -> str:
    """A short repr of a value found in a manifest."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:60]}..."


def _fold(path: str) -> str:
    """The form under which a case-insensitive file system confuses two paths."""
    return unicodedata.normalize("NFC", path.casefold())


def _join(directory: str, name: str) -> str:
    return f"{directory}/{name}" if directory else name


def _parents(path: str) -> Iterator[str]:
    """The directories a relative path implies: `a/b/c` -> `a`, `a/b`."""
    parts = path.split("/")
    for end in range(1, len(parts)):
        yield "/".join(parts[:end])


def _name_problem(name: str) -> str | None:
    """Why one path component cannot be part of a model, if it cannot."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid UTF-8"
    if "\\" in name:
        return "contains a backslash"
    control = next((char for char in name if unicodedata.category(char) == "Cc"), None)
    if control is not None:
        return f"contains the control character U+{ord(control):04X}"
    if not unicodedata.is_normalized("NFC", name):
        return "is not in Unicode normalisation form NFC"
    return None


def _path_problem(path: str) -> str | None:
    """Why `path` is not a normalised relative POSIX path, if it is not."""
    if not path:
        return "is empty"
    if path.startswith("/"):
        return "is absolute"
    if path.endswith("/"):
        return "ends with a slash"
    return next(filter(None, map(_part_problem, path.split("/"))), None)


def _part_problem(part: str) -> str | None:
    if not part:
        return "has an empty part"
    if part in (".", ".."):
        return f"has a {part!r} part"
    return _name_problem(part)


def _list_problems(kind: str, paths: Sequence[str]) -> list[str]:
    """Paths of one list that are not normalised, listed twice or out of order."""
    problems = [f"{kind} {_show(path)} {reason}" for path in paths if (reason := _path_problem(path))]
    for previous, path in itertools.pairwise(paths):
        if path == previous:
            problems.append(f"{kind} {_show(path)} is listed twice")
        elif path < previous:
            problems.append(f"{kind} {_show(path)} is listed after {_show(previous)}, out of order")
    return problems


def _shape_problems(files: Sequence[str], directories: Sequence[str]) -> list[str]:
    """Normalised paths that cannot all exist in one tree on every file system."""
    file_set = set(files)
    holder: dict[str, str] = {}  # each directory implied by a path -> the first path under it
    for path in (*files, *directories):
        for parent in _parents(path):
            holder.setdefault(parent, path)
    problems = [
        f"file {_show(path)} is also the directory of {_show(holder[path])}" for path in files if path in holder
    ]
    for directory in directories:
        if directory in file_set:
            problems.append(f"empty directory {_show(directory)} is also a file")
        elif directory in holder:
            problems.append(f"empty directory {_show(directory)} is not empty: it holds {_show(holder[directory])}")
    folded: dict[str, str] = {}
    for node in sorted({*files, *directories, *holder}):
        other = folded.setdefault(_fold(node), node)
        if other != node:
            problems.append(f"{_show(other)} and {_show(node)} differ only by case")
    return problems


def _manifest_problems(files: Sequence[ManifestFile], directories: Sequence[str]) -> list[str]:
    """Why `files` and `directories` are not a normalised manifest (empty when they are)."""
    problems = [] if files else ["it lists no files"]
    for entry in files:
        if entry.size < 0:
            problems.append(f"file {_show(entry.path)} has a negative size ({entry.size})")
        if not _HEX64.fullmatch(entry.sha256):
            problems.append(f"file {_show(entry.path)} has a sha256 that is not 64 lowercase hex digits")
    paths = [entry.path for entry in files]
    problems += _list_problems("file", paths)
    problems += _list_problems("directory", directories)
    return problems or _shape_problems(paths, directories)


# --- a small pool of workers ------------------------------------------------------------------------------


class _Stopped(Exception):
    """Raised inside a worker once the work as a whole has failed or been interrupted."""


def _run_pool(
    work: Callable[[_Item, threading.Event], _Result],
    items: Sequence[_Item],
    workers: int,
    on_result: Callable[[_Result], None],
) -> None:
    """Run `work(item, stop)` for every item on up to `workers` threads; pass each result to `on_result` in
    this thread as it completes.

    On the first exception (KeyboardInterrupt included), `stop` is set, work not yet begun is cancelled, and
    that exception propagates once every running call has returned (calls it stopped may fail otherwise).
    """
    stop, lock = threading.Event(), threading.Lock()
    first: list[BaseException] = []

    def run(item: _Item) -> _Result:
        if stop.is_set():
            raise _Stopped
        try:
            return work(item, stop)
        except BaseException as exc:
            with lock:
                if not stop.is_set():
                    first.append(exc)
                    stop.set()
            raise

    executor = ThreadPoolExecutor(max_workers=max(1, min(workers, len(items))), thread_name_prefix="mreg-tree")
    try:
        futures = [executor.submit(run, item) for item in items]
        for future in as_completed(futures):
            if future.exception() is not None:
                break
            on_result(future.result())
    finally:
        stop.set()
        executor.shutdown(wait=True, cancel_futures=True)
    if first:
        raise first[0]


def _hash_descriptor(descriptor: int, stop: threading.Event) -> tuple[str, int]:
    """SHA-256 (hex) and size of what remains to be read from an open file, read in 1 MiB chunks."""
    sha, size = hashlib.sha256(), 0
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    while count := os.readv(descriptor, [buffer]):
        if stop.is_set():
            raise _Stopped
        sha.update(view[:count])
        size += count
    return sha.hexdigest(), size


# --- scanning a tree --------------------------------------------------------------------------------------


@dataclass
class _Walk:
    """What walking a tree found: regular files (relative paths, with their sizes) and empty directories,
    and problems."""

    files: dict[str, int] = field(default_factory=dict)
    directories: list[str] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class TreeWalk:
    """A tree `walk_tree` found fit to register, nothing read yet: its regular files (relative paths, with
    the sizes the walk saw) and its empty directories."""

    root: Path
    files: dict[str, int]
    directories: tuple[str, ...]

    def manifest(self, hashed: Iterable[ManifestFile]) -> TreeManifest:
        """The tree's manifest, from its files once hashed (`hash_file`), in any order."""
        return TreeManifest(files=tuple(sorted(hashed, key=lambda entry: entry.path)), directories=self.directories)


def walk_tree(root: Path) -> TreeWalk:
    """Check the directory tree at `root` without reading a file: links are never followed and hard links
    are plain files. Whatever cannot be registered is refused in one `InvalidInputError`, one line per path
    relative to `root`: symbolic links, FIFOs, sockets and devices, names that are not NFC or hold a
    backslash or a control character, names that differ only by case, and anything that cannot be opened
    for reading; so is a tree without a regular file."""
    _require_directory(root)
    walk = _walk(root)
    if not walk.files and not walk.problems:
        raise InvalidInputError(f"{root} holds no regular file, so there is no model to register.")
    if walk.problems:
        raise InvalidInputError(_refusal(root, walk.problems))
    return TreeWalk(root, walk.files, tuple(sorted(walk.directories)))


def hash_file(walked: TreeWalk, path: str) -> ManifestFile:
    """The manifest entry of one file of a walked tree, read and hashed; `InvalidInputError` when it can no
    longer be read or is no longer a regular file."""
    result = _hash_file(walked.root, path, threading.Event())
    if not isinstance(result, ManifestFile):
        raise InvalidInputError(_refusal(walked.root, [result]))
    return result


def scan_tree(root: Path, *, on_file: Callable[[ManifestFile], None] | None = None, workers: int = 4) -> TreeManifest:
    """The manifest of the directory tree at `root`: `walk_tree`, then every regular file read and hashed
    once, on up to `workers` threads. A file that can no longer be read is refused as the walk refuses.
    `on_file` is called in this thread with each file once it is hashed."""
    walked = walk_tree(root)
    hashed: list[ManifestFile] = []
    problems: list[tuple[str, str]] = []

    def collect(result: ManifestFile | tuple[str, str]) -> None:
        if isinstance(result, ManifestFile):
            hashed.append(result)
            if on_file is not None:
                on_file(result)
        else:
            problems.append(result)

    _run_pool(functools.partial(_hash_file, root), list(walked.files), workers, collect)
    if problems:
        raise InvalidInputError(_refusal(root, problems))
    return walked.manifest(hashed)


def _require_directory(root: Path) -> None:
    try:
        mode = os.lstat(root).st_mode
    except FileNotFoundError as exc:
        raise InvalidInputError(f"{root} does not exist.") from exc
    except OSError as exc:
        raise InvalidInputError(f"{root} cannot be examined ({exc.strerror}).") from exc
    if stat.S_ISLNK(mode):
        raise InvalidInputError(f"{root} is a symbolic link; register the directory it points to instead.")
    if not stat.S_ISDIR(mode):
        raise InvalidInputError(f"{root} is not a directory.")


def _walk(root: Path) -> _Walk:
    """Every entry under `root`, without following links, in a deterministic order."""
    walk = _Walk()
    pending = [""]
    while pending:
        relative = pending.pop()
        try:
            with os.scandir(root / relative) as listing:
                entries = sorted(listing, key=lambda entry: entry.name)
        except OSError as exc:
            walk.problems.append((relative or ".", f"cannot be listed ({exc.strerror})"))
            continue
        if not entries and relative:
            walk.directories.append(relative)
        walk.problems += _case_problems(relative, [entry.name for entry in entries])
        for entry in entries:
            _visit(root, entry, _join(relative, entry.name), walk, pending)
    return walk


def _case_problems(directory: str, names: Sequence[str]) -> list[tuple[str, str]]:
    """Names in one directory that a case-insensitive file system would confuse."""
    folded: dict[str, str] = {}
    problems = []
    for name in names:
        other = folded.setdefault(_fold(name), name)
        if other != name:
            problems.append((_join(directory, name), f"differs only by case from {_show(_join(directory, other))}"))
    return problems


def _visit(root: Path, entry: os.DirEntry[str], path: str, walk: _Walk, pending: list[str]) -> None:
    """Record one directory entry as a file, a directory to walk, or a problem."""
    if reason := _name_problem(entry.name):
        walk.problems.append((path, reason))
    try:
        status = entry.stat(follow_symlinks=False)
    except OSError as exc:
        walk.problems.append((path, f"cannot be examined ({exc.strerror})"))
        return
    mode = status.st_mode
    if stat.S_ISDIR(mode):
        pending.append(path)
    elif not stat.S_ISREG(mode):
        walk.problems.append((path, _not_regular(mode)))
    elif reason := _unreadable(root / path):
        walk.problems.append((path, reason))
    else:
        walk.files[path] = status.st_size


def _not_regular(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "is a symbolic link (copy what it points to into the model instead)"
    if stat.S_ISFIFO(mode):
        return "is a FIFO"
    if stat.S_ISSOCK(mode):
        return "is a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "is a device"
    return "is neither a regular file nor a directory"


def _unreadable(path: Path) -> str | None:
    """Why the file at `path` cannot be opened for reading, found during the walk so that nothing is hashed
    in a tree that will be refused."""
    try:
        os.close(os.open(path, _READ_FLAGS))
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    return None


def _hash_file(root: Path, path: str, stop: threading.Event) -> ManifestFile | tuple[str, str]:
    """The manifest entry of one file, or the problem that kept it from being read."""
    try:
        descriptor = os.open(root / path, _READ_FLAGS)
        try:
            mode = os.fstat(descriptor).st_mode
            if not stat.S_ISREG(mode):
                return path, "stopped being a regular file during the scan"
            sha256, size = _hash_descriptor(descriptor, stop)
        finally:
            os.close(descriptor)
    except OSError as exc:
        return path, f"cannot be read ({exc.strerror})"
    return ManifestFile(path=path, size=size, sha256=sha256, executable=bool(mode & stat.S_IXUSR))


def _refusal(root: Path, problems: list[tuple[str, str]]) -> str:
    """One line summing up, then one line per problem (at most `MAX_REPORTED`)."""
    problems.sort()
    noun = "problem" if len(problems) == 1 else "problems"
    lines = [f"{root} cannot be registered as a directory model ({len(problems)} {noun}):"]
    lines += [f"  {_show(path)} {reason}." for path, reason in problems[:MAX_REPORTED]]
    if len(problems) > MAX_REPORTED:
        lines.append(f"  ... and {len(problems) - MAX_REPORTED} more.")
    return "\n".join(lines)


# --- reading a manifest back ------------------------------------------------------------------------------


class _Malformed(Exception):
    """A manifest is not exactly what `TreeManifest.to_bytes` writes; the message says how."""


def parse_manifest(data: bytes, where: str) -> TreeManifest:
    """The manifest in `data`, read from `where` (a URI, for messages).

    Refused with `IntegrityError`, naming `where` and the bad entry, unless `data` is exactly what
    `TreeManifest.to_bytes` writes for a normalised tree: same schema, same types, same canonical bytes.
    """
    try:
        manifest = _manifest_from(_load_json(data))
    except _Malformed as exc:
        raise IntegrityError(f"{where} is not a valid directory manifest: {exc}.") from exc
    if manifest.to_bytes() != data:
        raise IntegrityError(
            f"{where} is not a valid directory manifest: it is not in canonical form (sorted keys, no whitespace, "
            "UTF-8), so its bytes would not hash to its digest."
        )
    return manifest


def _load_json(data: bytes) -> Any:
    try:
        return json.loads(data.decode("utf-8"), object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise _Malformed(f"it cannot be read as UTF-8 JSON ({exc})") from exc


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document: dict[str, Any] = {}
    for key, value in pairs:
        if key in document:
            raise _Malformed(f"an object repeats the key {_brief(key)}")
        document[key] = value
    return document


def _no_constant(name: str) -> None:
    raise _Malformed(f"it holds {name}, which is not a JSON number")


def _manifest_from(document: Any) -> TreeManifest:
    top = _object(document, "the manifest", _TOP_KEYS)
    version = top["schema_version"]
    if type(version) is not int or version != SCHEMA_VERSION:
        raise _Malformed(f"schema_version is {_brief(version)}, not {SCHEMA_VERSION}")
    if top["kind"] != KIND:
        raise _Malformed(f"kind is {_brief(top['kind'])}, not {KIND!r}")
    for key in ("files", "directories"):
        if not isinstance(top[key], list):
            raise _Malformed(f"{key} is not a list")
    files = tuple(_file_entry(index, item) for index, item in enumerate(top["files"]))
    for index, item in enumerate(top["directories"]):
        if not isinstance(item, str):
            raise _Malformed(f"directories entry {index} is {_brief(item)}, not a string")
    directories = tuple(top["directories"])
    problems = _manifest_problems(files, directories)
    if problems:
        raise _Malformed(problems[0])
    return TreeManifest(files=files, directories=directories)


def _object(value: Any, what: str, keys: frozenset[str]) -> dict[str, Any]:
    """`value` if it is a JSON object with exactly `keys`."""
    if not isinstance(value, dict):
        raise _Malformed(f"{what} is not a JSON object")
    if unknown := sorted(set(value) - keys):
        raise _Malformed(f"{what} has the unknown key {_brief(unknown[0])}")
    if missing := sorted(keys - set(value)):
        raise _Malformed(f"{what} lacks the key {missing[0]!r}")
    return value


def _file_entry(index: int, item: Any) -> ManifestFile:
    fields = _object(item, f"file entry {index}", _FILE_KEYS)
    path, size, sha256, executable = fields["path"], fields["size"], fields["sha256"], fields["executable"]
    if not isinstance(path, str):
        raise _Malformed(f"file entry {index} has the path {_brief(path)}, not a string")
    what = f"file entry {index} ({_show(path)})"
    if type(size) is not int or size < 0:
        raise _Malformed(f"{what} has the size {_brief(size)}, not a non-negative integer")
    if not isinstance(sha256, str) or not _HEX64.fullmatch(sha256):
        raise _Malformed(f"{what} has the sha256 {_brief(sha256)}, not 64 lowercase hex digits")
    if not isinstance(executable, bool):
        raise _Malformed(f"{what} has executable {_brief(executable)}, not true or false")
    return ManifestFile(path=path, size=size, sha256=sha256, executable=executable)


# --- publishing a tree ------------------------------------------------------------------------------------


class _StagedFile(io.FileIO):
    """A new file in the staging directory that refuses bytes past its expected size, and any bytes at all
    once the publication has stopped."""

    def __init__(self, descriptor: int, limit: int, label: str, stop: threading.Event) -> None:
        super().__init__(descriptor, "wb")
        self._limit, self._label, self._stop = limit, label, stop

    def write(self, data: ReadableBuffer, /) -> int:
        if self._stop.is_set():
            raise _Stopped
        if self.tell() + memoryview(data).nbytes > self._limit:
            raise IntegrityError(f"{self._label} is longer than the {self._limit} bytes its manifest says.")
        return super().write(data) or 0


@contextlib.contextmanager
def _opened_directory(base: int, parts: Sequence[str]) -> Iterator[int]:
    """A descriptor of the directory `parts` below the directory `base`, reached without following links."""
    descriptor = os.dup(base)
    try:
        for part in parts:
            child = os.open(part, _DIR_FLAGS, dir_fd=descriptor)
            os.close(descriptor)
            descriptor = child
        yield descriptor
    finally:
        os.close(descriptor)


def publish_tree(
    manifest: TreeManifest,
    destination: Path,
    write_file: WriteFile,
    *,
    overwrite: bool = False,
    workers: int = 8,
) -> Path:
    """Materialise `manifest` at `destination`, filling each file with `write_file(entry, handle)`.

    The tree is built in a hidden staging directory beside `destination` (mode 0o700 until done), on up to
    `workers` threads, without following links; each file is created exclusively, checked for size and
    SHA-256 once written, fsynced and given mode 0o755 or 0o644 by its executable bit (directories 0o755).
    One rename then publishes it. An existing `destination` is refused unless `overwrite`: then it is moved
    aside, replaced and removed. A `destination` that is a symbolic link is always refused. Missing parents
    are created. On any failure or interruption the staging directory is removed, the parents created are
    removed again, and `destination` is absent or, if it existed, untouched. Bytes that differ from the
    manifest raise `IntegrityError` naming the file.
    """
    if destination.name in ("", ".", ".."):
        raise InvalidInputError(f"{destination} cannot be published to: it does not end in a name.")
    created = _make_parents(destination.parent)
    try:
        parent = _open_parent(destination.parent)
        try:
            _publish_in(parent, manifest, destination, write_file, overwrite=overwrite, workers=workers)
        finally:
            os.close(parent)
    except OSError as exc:
        _remove_created(created)
        raise StorageError(f"cannot publish {destination}: {exc}.") from exc
    except BaseException:
        _remove_created(created)
        raise
    return destination


def _make_parents(directory: Path) -> list[Path]:
    """Create `directory` and its missing parents; return the ones created, deepest first."""
    missing = list(itertools.takewhile(lambda path: not os.path.lexists(path), (directory, *directory.parents)))
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _remove_created(missing)
        raise InvalidInputError(f"{directory} cannot be created to hold the model ({exc.strerror}).") from exc
    return missing


def _remove_created(directories: list[Path]) -> None:
    for directory in directories:
        with contextlib.suppress(OSError):
            directory.rmdir()


def _open_parent(directory: Path) -> int:
    try:
        return os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise InvalidInputError(f"{directory} cannot hold the model ({exc.strerror}).") from exc


def _publish_in(
    parent: int, manifest: TreeManifest, destination: Path, write_file: WriteFile, *, overwrite: bool, workers: int
) -> None:
    """Stage the tree in `parent` (a directory descriptor), then rename it to `destination.name`."""
    name = destination.name
    _exists(parent, destination, overwrite=overwrite)
    staging = f".mreg-staging-{uuid.uuid4().hex}"
    os.mkdir(staging, 0o700, dir_fd=parent)
    aside = None
    try:
        _stage(parent, staging, manifest, destination, write_file, workers)
        if _exists(parent, destination, overwrite=overwrite):
            aside = f".mreg-replaced-{uuid.uuid4().hex}"
            os.rename(name, aside, src_dir_fd=parent, dst_dir_fd=parent)
        try:
            os.rename(staging, name, src_dir_fd=parent, dst_dir_fd=parent)
        except BaseException:
            if aside is not None:
                os.rename(aside, name, src_dir_fd=parent, dst_dir_fd=parent)
            raise
    except BaseException:
        shutil.rmtree(staging, dir_fd=parent)
        raise
    os.fsync(parent)
    if aside is not None:
        _remove_replaced(parent, aside, destination)


def _exists(parent: int, destination: Path, *, overwrite: bool) -> bool:
    """Whether `destination` exists (and may be replaced); refused if it is a link, or if it exists and
    overwriting was not asked for."""
    try:
        mode = os.stat(destination.name, dir_fd=parent, follow_symlinks=False).st_mode
    except FileNotFoundError:
        return False
    if stat.S_ISLNK(mode):
        raise InvalidInputError(f"{destination} is a symbolic link; mreg does not publish a model through a link.")
    if not overwrite:
        raise InvalidInputError(f"{destination} already exists; it is replaced only when overwriting is asked for.")
    return True


def _stage(
    parent: int, staging: str, manifest: TreeManifest, destination: Path, write_file: WriteFile, workers: int
) -> None:
    """Build the whole tree inside the staging directory, every file written and checked."""
    paths = (*manifest.directories, *(entry.path for entry in manifest.files))
    directories = sorted({*manifest.directories, *(parent for path in paths for parent in _parents(path))})
    root = os.open(staging, _DIR_FLAGS, dir_fd=parent)
    try:
        for directory in directories:  # a parent sorts before its children
            *above, name = directory.split("/")
            with _opened_directory(root, above) as holder:
                os.mkdir(name, 0o700, dir_fd=holder)
        write = functools.partial(_write_entry, root, destination, write_file)
        _run_pool(write, manifest.files, workers, lambda _: None)
        for directory in reversed(directories):
            with _opened_directory(root, directory.split("/")) as descriptor:
                os.fchmod(descriptor, 0o755)
                os.fsync(descriptor)
        os.fchmod(root, 0o755)
        os.fsync(root)
    finally:
        os.close(root)


def _write_entry(
    root: int, destination: Path, write_file: WriteFile, entry: ManifestFile, stop: threading.Event
) -> None:
    """Create one file below `root`, let `write_file` fill it, check it and give it its final mode."""
    *above, name = entry.path.split("/")
    label = f"{entry.path} in {destination}"
    try:
        with _opened_directory(root, above) as holder:
            descriptor = os.open(name, _CREATE_FLAGS, 0o600, dir_fd=holder)
            with io.BufferedWriter(_StagedFile(descriptor, entry.size, label, stop), CHUNK) as handle:
                write_file(entry, handle)
            _check_written(holder, name, entry, label, stop)
    except OSError as exc:
        raise StorageError(f"cannot write {label}: {exc.strerror or exc}.") from exc


def _check_written(holder: int, name: str, entry: ManifestFile, label: str, stop: threading.Event) -> None:
    descriptor = os.open(name, _READ_FLAGS, dir_fd=holder)
    try:
        os.fsync(descriptor)
        sha256, size = _hash_descriptor(descriptor, stop)
        if (size, sha256) != (entry.size, entry.sha256):
            raise IntegrityError(
                f"{label} was written as {size} bytes hashing to {sha256}, but its manifest says {entry.size} "
                f"bytes hashing to {entry.sha256}."
            )
        os.fchmod(descriptor, 0o755 if entry.executable else 0o644)
    finally:
        os.close(descriptor)


def _remove_replaced(parent: int, aside: str, destination: Path) -> None:
    try:
        if stat.S_ISDIR(os.stat(aside, dir_fd=parent, follow_symlinks=False).st_mode):
            shutil.rmtree(aside, dir_fd=parent)
        else:
            os.unlink(aside, dir_fd=parent)
    except OSError as exc:
        raise StorageError(
            f"{destination} holds the new tree, but what it replaced could not be removed from "
            f"{destination.parent / aside} ({exc.strerror})."
        ) from exc
