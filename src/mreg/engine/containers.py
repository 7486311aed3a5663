"""Containers that train and serve models: what to run (`ContainerRequest`, checked by `check_request` before
any backend turns it into a command line or an API call), what came of it, and the foreground run both
backends share (`run_to_end`)."""

from __future__ import annotations

import collections
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from mreg._grammar import SHA256_DIGEST_RE, parse_reference
from mreg.errors import EngineError, InvalidInputError

if TYPE_CHECKING:
    from mreg.engine import Engine

LineSink = Callable[[str], None]
TAIL_LINES = 25
"""Lines of a container's output an error quotes."""

ENV_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,255}")
CONTAINER_NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}")
NETWORK_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}")
USER_RE = re.compile(r"[0-9]{1,10}:[0-9]{1,10}")
LABEL_KEY_RE = re.compile(r"[a-z0-9]+(?:[._-][a-z0-9]+)*")
MAX_VALUE = 32 * 1024


@dataclass(frozen=True)
class Mount:
    """A host file or directory bound into a container at `target`."""

    source: Path
    target: str
    read_only: bool = True


@dataclass(frozen=True)
class ContainerRequest:
    """One container: its image (a reference or a local image ID), its command (None: the image's CMD),
    bind mounts, environment, user (`UID:GID`), network, name and labels."""

    image: str
    name: str
    command: tuple[str, ...] | None = None
    mounts: tuple[Mount, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    user: str | None = None
    network: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ContainerState:
    """What the engine says about a container: `status` is Docker's (created, running, exited, ...)."""

    status: str
    exit_code: int

    @property
    def running(self) -> bool:
        return self.status in {"created", "running", "restarting"}


@dataclass(frozen=True)
class ContainerExit:
    """How a container ended: its exit code and the last lines of its output."""

    code: int
    tail: tuple[str, ...]

    def quoted_tail(self) -> str:
        """The last lines, indented, for an error message."""
        return "\n".join(f"  {line}" for line in self.tail) or "  (no output)"


def check_request(request: ContainerRequest) -> ContainerRequest:
    """Refuse a request any of whose values is not what its grammar allows (InvalidInputError), so that none
    can become an option or break out of its argument."""
    problems = [
        *_check_image(request.image),
        *_check_name("container name", request.name, CONTAINER_NAME_RE),
        *_check_text("command argument", request.command or ()),
        *(problem for mount in request.mounts for problem in _check_mount(mount)),
        *_check_env(request.env),
        *_check_labels(request.labels),
    ]
    if request.user is not None and not USER_RE.fullmatch(request.user):
        problems.append(f"user {request.user!r} is not UID:GID")
    if request.network is not None:
        problems += _check_name("network", request.network, NETWORK_RE)
    if problems:
        raise InvalidInputError(f"cannot run a container of {request.image!r}: {'; '.join(problems)}.")
    return request


def _check_image(image: str) -> list[str]:
    if SHA256_DIGEST_RE.fullmatch(image):
        return []
    try:
        parse_reference(image)
    except ValueError as exc:
        return [f"the image {exc}"]
    return []


def _check_name(what: str, value: str, pattern: re.Pattern[str]) -> list[str]:
    return [] if pattern.fullmatch(value) else [f"{what} {value!r} is not {pattern.pattern}"]


def _check_text(what: str, values: tuple[str, ...] | list[str]) -> list[str]:
    return [f"{what} {value[:80]!r} holds a NUL character or is too long" for value in values if not _plain(value)]


def _plain(value: str, *, lines: bool = True) -> bool:
    """No NUL (no process can receive one), bounded, and, unless `lines`, no line break."""
    return "\0" not in value and len(value) <= MAX_VALUE and (lines or not ({"\n", "\r"} & set(value)))


def _check_mount(mount: Mount) -> list[str]:
    problems = []
    if not mount.source.is_absolute() or not _plain(str(mount.source), lines=False):
        problems.append(f"mount source {str(mount.source)!r} is not an absolute path without line breaks")
    target = PurePosixPath(mount.target)
    if (
        not mount.target.startswith("/")
        or str(target) != mount.target
        or ".." in target.parts
        or any(ord(char) < 32 or ord(char) == 127 for char in mount.target)
        or len(mount.target) > 4096
    ):
        problems.append(f"mount target {mount.target!r} is not a normalised absolute container path")
    return problems


def _check_env(env: Mapping[str, str]) -> list[str]:
    problems = [
        f"environment variable name {key!r} is not {ENV_KEY_RE.pattern}" for key in env if not ENV_KEY_RE.fullmatch(key)
    ]
    problems += [
        f"the value of {key} holds a line break or a NUL character, or is longer than {MAX_VALUE}"
        for key, value in env.items()
        if not _plain(value, lines=False)
    ]
    return problems


def _check_labels(labels: Mapping[str, str]) -> list[str]:
    problems = [
        f"label key {key!r} is not {LABEL_KEY_RE.pattern}"
        for key in labels
        if len(key) > 128 or not LABEL_KEY_RE.fullmatch(key)
    ]
    problems += [f"label {key} holds a control character" for key, value in labels.items() if not value.isprintable()]
    return problems


def run_to_end(engine: Engine, request: ContainerRequest, *, on_line: LineSink) -> ContainerExit:
    """Run a container in the foreground, passing each line of its output to `on_line`, and return its exit
    code and last lines. The container is removed however this ends: an interrupt (Ctrl-C, SIGTERM) kills
    it first. It is removed by name, so that no interrupt can come between its creation and the cleanup
    taking charge of it."""
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)

    def sink(line: str) -> None:
        tail.append(line)
        on_line(line)

    try:
        engine.start_container(request)
        code = engine.follow_container(request.name, on_line=sink)
    finally:
        engine.remove_container(request.name, grace=0)
    return ContainerExit(code, tuple(tail))


def refuse_unpullable(image: str) -> None:
    """Refuse an image that is not in the local engine and is named by its ID: only a registry reference
    can be pulled."""
    if SHA256_DIGEST_RE.fullmatch(image):
        raise EngineError(
            f"the image {image} is not in the local engine (removed or pruned?), and an image ID cannot be "
            "pulled: build it again and register a new version."
        )
