"""The engine's classic builder through the docker SDK: the fallback for engines without buildx."""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import IO, Any

from mreg._grammar import SHA256_DIGEST_RE, parse_reference
from mreg.engine import Built, BuiltImage, LineSink, Redactor, with_login_hint
from mreg.engine._process import capture
from mreg.engine.containers import ContainerRequest, ContainerState, check_request, refuse_unpullable
from mreg.errors import EngineError


def _tar_of(source: Path, name: str) -> IO[bytes]:
    """A tar stream holding `source` as `name`, spooled to disk past a few MiB (models can be large)."""
    archive = tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024)  # noqa: SIM115 - handed to the SDK
    with tarfile.open(fileobj=archive, mode="w") as tar:
        tar.add(source, arcname=name)
    archive.seek(0)
    return archive


def _context_endpoint() -> dict[str, Any]:
    """The client arguments for the Docker context the docker CLI would use (DOCKER_CONTEXT, else its
    configuration's current one), read from the CLI itself: the docker SDK looks for contexts only next to
    a config.json. Empty when DOCKER_HOST is set (it wins, as for the CLI) or without a docker CLI."""
    if os.environ.get("DOCKER_HOST") or shutil.which("docker") is None:
        return {}
    output = capture(["docker", "context", "inspect"], what="docker context inspect")
    try:
        context = json.loads(output)[0]
        endpoint = context["Endpoints"]["docker"]
        arguments: dict[str, Any] = {"base_url": endpoint["Host"]}
        tls_path = Path(context["Storage"]["TLSPath"], "docker")
    except (ValueError, LookupError, TypeError) as exc:
        raise EngineError(f"docker context inspect: unexpected output ({exc!r}).") from exc
    if tls_path.is_dir():  # a context made with --docker "host=tcp://...,ca=...,cert=...,key=..."
        from docker.tls import TLSConfig

        ca, cert, key = (tls_path / f"{name}.pem" for name in ("ca", "cert", "key"))
        arguments["tls"] = TLSConfig(
            client_cert=(str(cert), str(key)) if cert.is_file() and key.is_file() else None,
            ca_cert=str(ca) if ca.is_file() else None,
            verify=not endpoint.get("SkipTLSVerify", False),
        )
    return arguments


def _lines(chunks: Iterable[bytes]) -> Iterator[str]:
    """The lines of a stream of output chunks (which split lines anywhere)."""
    pending = b""
    for chunk in chunks:
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for line in complete:
            yield line.decode(errors="replace").rstrip("\r")
    if pending:
        yield pending.decode(errors="replace").rstrip("\r")


def create_arguments(request: ContainerRequest) -> dict[str, Any]:
    """The keyword arguments of `containers.create` for a checked request."""
    from docker.types import Mount

    return {
        "image": request.image,
        "name": request.name,
        "command": list(request.command) if request.command is not None else None,
        "mounts": [
            Mount(target=mount.target, source=str(mount.source), type="bind", read_only=mount.read_only)
            for mount in request.mounts
        ],
        "environment": dict(request.env),
        "user": request.user,
        "network_mode": request.network,
        "labels": dict(request.labels),
    }


def _client() -> Any:
    """A client for DOCKER_HOST, else for the Docker context the docker CLI would use, else the default
    socket."""
    import docker
    from docker.errors import DockerException

    try:
        endpoint = _context_endpoint()
        if endpoint:
            return docker.DockerClient(**endpoint)
        return docker.from_env()
    except DockerException as exc:
        raise EngineError(f"cannot reach the Docker engine: {exc}") from exc


class DockerSdkEngine:
    """Builds each target with the classic builder; the base stage comes from its layer cache."""

    name = "docker"
    buildkit = False

    def __init__(self) -> None:
        from docker.errors import APIError, ImageNotFound, NotFound

        self._client = _client()
        self._api_error, self._not_found = APIError, (ImageNotFound, NotFound)

    def default_network(self) -> str | None:
        names = {network.name for network in self._client.networks.list()}
        return None if "bridge" in names else "host"

    def local_image_id(self, ref: str) -> str | None:
        try:
            return str(self._client.images.get(ref).id)
        except self._not_found:
            return None
        except self._api_error as exc:
            raise EngineError(f"cannot inspect local image {ref}: {exc}") from exc

    def registry_digest(self, ref: str) -> str | None:
        try:
            digest = self._client.images.get_registry_data(ref).id
        except self._not_found:
            return None
        except self._api_error as exc:
            if "manifest unknown" in str(exc) or "not found" in str(exc):
                return None
            raise EngineError(with_login_hint(ref, f"cannot read {ref} from its registry: {exc}")) from exc
        if not SHA256_DIGEST_RE.fullmatch(str(digest)):
            raise EngineError(f"the registry returned no valid sha256 digest for {ref}: {digest!r}")
        return str(digest)

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
        if exports:
            raise EngineError("the classic builder cannot export a target's files; use --engine buildx.")
        if secrets:
            raise EngineError(
                "the classic builder cannot pass secrets (private package indexes) to a build without writing "
                "them into the image; use --engine buildx."
            )
        built: dict[str, BuiltImage] = {}
        for target, ref in targets.items():
            chunks = self._client.api.build(
                path=str(context), target=target, tag=ref, network_mode=network, rm=True, decode=True
            )
            self._follow(chunks, on_line, what=f"classic build of target {target!r}")
            image_id = self.local_image_id(ref)
            if image_id is None:
                raise EngineError(f"the classic builder reported success for {ref}, but the image is missing.")
            built[target] = BuiltImage.local(ref, image_id)
        return Built(built)

    def push(self, ref: str, *, on_line: LineSink) -> BuiltImage:
        parsed = parse_reference(ref)
        chunks = self._client.api.push(parsed.name, tag=parsed.tag, stream=True, decode=True)
        try:
            self._follow(chunks, on_line, what=f"push of {ref}")
        except EngineError as exc:
            raise EngineError(with_login_hint(ref, str(exc))) from exc
        digest = self.registry_digest(ref)
        if digest is None:
            raise EngineError(f"pushed {ref}, but its registry does not know the tag.")
        return BuiltImage.pushed(ref, digest)

    def run(self, image: str, argv: Sequence[str], *, files: Mapping[str, Path] | None = None) -> str:
        try:
            if self.local_image_id(image) is None:
                self._client.images.pull(image)
            container = self._client.containers.create(
                image, command=list(argv[1:]), entrypoint=[argv[0]], network_mode="none"
            )
        except self._api_error as exc:
            raise EngineError(f"cannot create a container of {image}: {exc}") from exc
        try:
            for target, source in (files or {}).items():
                container.put_archive(str(PurePosixPath(target).parent), _tar_of(source, PurePosixPath(target).name))
            container.start()
            status = container.wait()
            stdout = container.logs(stdout=True, stderr=False).decode(errors="replace")
            if status.get("StatusCode") != 0:
                stderr = container.logs(stdout=False, stderr=True).decode(errors="replace").strip()
                raise EngineError(f"{argv[0]} in {image} exited {status.get('StatusCode')}: {stderr or 'no output'}")
            return str(stdout)
        except self._api_error as exc:
            raise EngineError(f"running {argv[0]} in {image} failed: {exc}") from exc
        finally:
            container.remove(force=True)

    def remove(self, ref: str) -> None:
        try:
            self._client.images.remove(ref)
        except (self._api_error, *self._not_found):
            pass

    def ensure_image(self, image: str) -> None:
        if self.local_image_id(image) is not None:
            return
        refuse_unpullable(image)
        try:
            self._client.images.pull(image)
        except (self._api_error, *self._not_found) as exc:
            raise EngineError(with_login_hint(image, f"cannot pull {image}: {exc}")) from exc

    def start_container(self, request: ContainerRequest) -> str:
        check_request(request)
        try:
            container = self._client.containers.create(**create_arguments(request))
        except (self._api_error, *self._not_found) as exc:
            raise EngineError(f"cannot create a container of {request.image}: {exc}") from exc
        try:
            container.start()
        except self._api_error as exc:
            self.remove_container(container.id, grace=0)
            raise EngineError(f"cannot start a container of {request.image}: {exc}") from exc
        return str(container.id)

    def follow_container(self, container: str, *, on_line: LineSink) -> int:
        try:
            handle = self._client.containers.get(container)
            for line in _lines(handle.logs(stream=True, follow=True, stdout=True, stderr=True)):
                on_line(line)
            return int(handle.wait()["StatusCode"])
        except self._not_found as exc:
            raise EngineError(f"the container {container} was removed while it ran.") from exc
        except self._api_error as exc:
            raise EngineError(f"cannot follow the container {container}: {exc}") from exc

    def container_logs(self, container: str, *, tail: int) -> list[str]:
        try:
            output = self._client.containers.get(container).logs(stdout=True, stderr=True, tail=tail)
        except (self._api_error, *self._not_found):
            return []
        return list(_lines([output]))

    def container_state(self, container: str) -> ContainerState | None:
        try:
            state = self._client.containers.get(container).attrs["State"]
        except self._not_found:
            return None
        except self._api_error as exc:
            raise EngineError(f"cannot inspect the container {container}: {exc}") from exc
        return ContainerState(status=str(state["Status"]), exit_code=int(state["ExitCode"]))

    def remove_container(self, container: str, *, grace: float) -> None:
        try:
            handle = self._client.containers.get(container)
            if grace > 0:
                handle.stop(timeout=max(1, round(grace)))
            handle.remove(force=True)
        except (self._api_error, *self._not_found):
            pass

    def _follow(self, chunks: Iterator[dict[str, Any]], on_line: LineSink, *, what: str) -> None:
        try:
            for chunk in chunks:
                if "error" in chunk:
                    detail = chunk.get("errorDetail", {}).get("message") or chunk["error"]
                    raise EngineError(f"{what} failed: {str(detail).strip()}")
                text = chunk.get("stream") or chunk.get("status")
                if text:
                    for line in str(text).splitlines():
                        if line.strip():
                            on_line(line)
        except self._api_error as exc:
            raise EngineError(f"{what} failed: {exc}") from exc
