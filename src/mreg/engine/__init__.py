"""The only place that talks to Docker: a narrow `Engine` protocol and its two backends.

`buildx` drives `docker buildx` (BuildKit; honours DOCKER_HOST, Docker contexts and `--builder`);
`docker` drives the engine's classic builder through the docker SDK, for engines without buildx.
The engine never sees the spec: it builds a context directory into the references it is given, and runs
the containers it is asked for (`containers.ContainerRequest`, checked before any backend sees it).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from mreg._grammar import registry_host
from mreg.engine.containers import ContainerRequest, ContainerState
from mreg.errors import EngineError

EngineName = Literal["auto", "buildx", "docker"]
LineSink = Callable[[str], None]
Redactor = Callable[[str], str]
"""Masks secret values in a line of output."""


_REFUSED_RE = re.compile(
    r"unauthorized|authentication required|no basic auth credentials|access denied|requested access", re.IGNORECASE
)


def with_login_hint(ref: str, message: str) -> str:
    """`message`, plus what to do when `ref`'s registry refused the credentials (or got none)."""
    if not _REFUSED_RE.search(message):
        return message
    return (
        f"{message}\nmreg uses Docker's credential store: log in with `docker login {registry_host(ref)}` "
        "(or a credential helper) with an account that may push there."
    )


class BuiltImage(BaseModel):
    """One built image: its tag reference, a reference `docker run` accepts, and its digest.

    Pushed: `digest` is the registry's manifest digest and `image` is `repo@digest`.
    Local only: `digest` is the image ID, which is also what `image` holds.
    Records keep the same three fields for each of their images.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    ref: str
    image: str
    digest: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")

    @property
    def in_registry(self) -> bool:
        """True when the image is pinned by a registry's manifest digest."""
        return "@" in self.image

    @classmethod
    def pushed(cls, ref: str, digest: str) -> BuiltImage:
        """An image in a registry: pinned by its manifest digest."""
        repository = ref.rsplit(":", 1)[0] if ":" in ref.rsplit("/", 1)[-1] else ref
        return cls(ref=ref, digest=digest, image=f"{repository}@{digest}")

    @classmethod
    def local(cls, ref: str, image_id: str) -> BuiltImage:
        """An image only in the local engine: pinned by its image ID."""
        return cls(ref=ref, digest=image_id, image=image_id)


@dataclass(frozen=True)
class Built:
    """What one `Engine.build` made: the images by target and, from BuildKit, each target's build reference
    (`builder/node/ref`, from buildx's metadata file: what BuildKit's build history knows the build by)."""

    images: dict[str, BuiltImage]
    buildkit_refs: dict[str, str] = field(default_factory=dict)


class Engine(Protocol):
    """What mreg needs from a container engine."""

    name: str
    buildkit: bool
    """True when the engine understands BuildKit Dockerfile features (`RUN --mount`)."""

    def default_network(self) -> str | None:
        """`host` when the engine has no bridge network (builds could not reach an index), else None."""

    def local_image_id(self, ref: str) -> str | None:
        """The ID of the local image tagged `ref`, or None."""

    def registry_digest(self, ref: str) -> str | None:
        """The manifest digest the registry holds for `ref`, or None when the registry has no such tag."""

    def build(
        self,
        context: Path,
        targets: Mapping[str, str],
        *,
        network: str | None,
        on_line: LineSink,
        secrets: Mapping[str, str] | None = None,
        redact: Redactor | None = None,
        exports: Mapping[str, Path] | None = None,
    ) -> Built:
        """Build each Dockerfile target of `context` (target -> reference) into the local engine.

        `secrets` (id -> value) reach the build only as BuildKit secrets; `redact` masks them in the
        output. `exports` (target -> directory) are built in the same solve and written as files, not
        images (BuildKit engines only). Shared stages are built once. Returns the images by target (and
        BuildKit's references of their builds, where the engine has them); raises EngineError.
        """

    def push(self, ref: str, *, on_line: LineSink) -> BuiltImage:
        """Push a local image and return it pinned by the registry's manifest digest."""

    def run(self, image: str, argv: Sequence[str], *, files: Mapping[str, Path] | None = None) -> str:
        """Run `argv` in a new container of `image` without network, after copying `files` (container
        path -> local file) into it; return its stdout. A non-zero exit raises EngineError with stderr."""

    def remove(self, ref: str) -> None:
        """Untag a local image (the image stays while other tags or containers use it)."""

    def ensure_image(self, image: str) -> None:
        """Make sure `image` (a `repo@digest` reference or a local image ID) is in the local engine, pulling
        a reference that is not; raise EngineError with the reason when it cannot be had."""

    def start_container(self, request: ContainerRequest) -> str:
        """Create and start a container (in the background) as `request` says; return its ID. A container
        that was created but could not be started is removed."""

    def follow_container(self, container: str, *, on_line: LineSink) -> int:
        """Pass each line of a container's output (from its start) to `on_line` until it stops; return its
        exit code."""

    def container_logs(self, container: str, *, tail: int) -> list[str]:
        """The last `tail` lines of a container's output (empty when the container is gone)."""

    def container_state(self, container: str) -> ContainerState | None:
        """The container's status and exit code, or None when there is no such container."""

    def remove_container(self, container: str, *, grace: float) -> None:
        """Stop a container (SIGTERM, then SIGKILL after `grace` seconds; at once when 0) and remove it;
        nothing happens when it is already gone."""


def open_engine(name: EngineName = "auto", *, builder: str | None = None) -> Engine:
    """The engine backend called `name`; `auto` prefers buildx and falls back to the docker SDK."""
    if name in ("auto", "buildx"):
        from mreg.engine.buildx import BuildxEngine, buildx_available

        if shutil.which("docker") and buildx_available():
            return BuildxEngine(builder=builder)
        if name == "buildx":
            raise EngineError(
                "docker buildx is not available: install the docker CLI with the buildx plugin, "
                "or pass --engine docker to use the classic builder."
            )
    if builder:
        raise EngineError("--builder selects a buildx builder; it cannot be used with --engine docker.")
    from mreg.engine.dockersdk import DockerSdkEngine

    return DockerSdkEngine()
