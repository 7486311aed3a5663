"""BuildKit through the `docker buildx` CLI: honours DOCKER_HOST, Docker contexts and buildx builders."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mreg._grammar import SHA256_DIGEST_RE
from mreg.engine import Built, BuiltImage, LineSink, Redactor, with_login_hint
from mreg.engine._process import capture, error_text, follow, run, stream
from mreg.engine.containers import ContainerRequest, ContainerState, Mount, check_request, refuse_unpullable
from mreg.errors import EngineError

PLUGIN_DIRS = (
    "/usr/local/lib/docker/cli-plugins",
    "/usr/local/libexec/docker/cli-plugins",
    "/usr/lib/docker/cli-plugins",
    "/usr/libexec/docker/cli-plugins",
)


def buildx_available() -> bool:
    """True when `docker buildx` is installed: its plugin is in one of the docker CLI's plugin directories
    (checked without starting a process), or else `docker buildx version` answers."""
    config = Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker")
    for directory in (config / "cli-plugins", *map(Path, PLUGIN_DIRS)):
        if os.access(directory / "docker-buildx", os.X_OK):
            return True
    return run(["docker", "buildx", "version"], what="docker buildx version").returncode == 0


def bake_definition(
    context: Path,
    targets: Mapping[str, str],
    *,
    network: str | None,
    secrets: Iterable[str] = (),
    exports: Mapping[str, Path] | None = None,
) -> dict[str, Any]:
    """A compose-format bake file building every target of one context (the only bake format that takes
    a build network with buildx 0.13): `targets` (target -> reference) are loaded into the engine,
    `exports` (target -> directory) written as files. Secret values come from the environment
    (`secret_variable`)."""
    outputs = dict.fromkeys(targets, "type=docker")
    outputs.update(
        {target: _csv_line("type=local", f"dest={directory}") for target, directory in (exports or {}).items()}
    )
    services = {}
    for target, output in outputs.items():
        build: dict[str, Any] = {"context": str(context), "dockerfile": "Dockerfile", "target": target}
        if target in targets:
            build["tags"] = [targets[target]]
        if network:
            build["network"] = network
        if secrets:
            build["secrets"] = list(secrets)
        build["x-bake"] = {"output": [output]}
        services[target] = {"build": build}
    definition: dict[str, Any] = {"services": services}
    if secrets:
        definition["secrets"] = {secret: {"environment": secret_variable(secret)} for secret in secrets}
    return definition


def _csv_line(*fields: str) -> str:
    """One CSV record, as buildx parses `--output` values (a field with a comma or a quote gets quoted)."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow(fields)
    return buffer.getvalue()


def secret_variable(secret: str) -> str:
    """The variable of the docker process's environment that carries a secret's value."""
    return "MREG_SECRET_" + secret.upper().replace("-", "_")


BUILD_REF_RE = re.compile(r"[A-Za-z0-9][\w.-]{0,127}/[A-Za-z0-9][\w.-]{0,127}/[a-z0-9]{1,64}")
"""A BuildKit build reference as buildx writes it: `builder/node/ref`."""


def bake_argv(definition: Path, targets: Iterable[str], *, builder: str | None, metadata: Path) -> list[str]:
    """The `docker buildx bake` command line: one BuildKit solve, shared stages built once, targets
    concurrently (each target's output is in the definition); buildx writes what it built to `metadata`."""
    argv = ["docker", "buildx", "bake", "--progress=plain", "--file", str(definition), "--metadata-file", str(metadata)]
    if builder:
        argv += ["--builder", builder]
    return [*argv, "--", *targets]


def build_argv(
    context: Path,
    target: str,
    ref: str,
    *,
    network: str | None,
    builder: str | None,
    metadata: Path,
    secrets: Iterable[str] = (),
) -> list[str]:
    """The `docker buildx build` command line for one target (a pure function of its arguments; secret
    values are read by buildx from its environment, never passed in argv); buildx writes what it built to
    `metadata`."""
    argv = ["docker", "buildx", "build", "--progress=plain", "--load", "--target", target, "--tag", ref]
    argv += ["--metadata-file", str(metadata)]
    if builder:
        argv += ["--builder", builder]
    if network:
        argv += ["--network", network]
    for secret in secrets:
        argv += ["--secret", f"id={secret},env={secret_variable(secret)}"]
    return [*argv, "--", str(context)]


def create_argv(request: ContainerRequest, *, env_file: Path | None) -> list[str]:
    """The `docker create` command line of a checked request. The environment's values travel in
    `env_file` (`env_file_text`), never in argv, where any local user could read them."""
    argv = ["docker", "create", "--name", request.name]
    for key, value in sorted(request.labels.items()):
        argv += ["--label", f"{key}={value}"]
    if request.network:
        argv += ["--network", request.network]
    if request.user:
        argv += ["--user", request.user]
    if env_file is not None:
        argv += ["--env-file", str(env_file)]
    for mount in request.mounts:
        argv += ["--mount", mount_option(mount)]
    return [*argv, "--", request.image, *(request.command or ())]


def mount_option(mount: Mount) -> str:
    """A bind mount as `--mount` takes it: one CSV record (a comma or a quote in a path stays in its field)."""
    fields = ["type=bind", f"source={mount.source}", f"target={mount.target}"]
    return _csv_line(*fields, *(["readonly"] if mount.read_only else []))


def env_file_text(env: Mapping[str, str]) -> str:
    """An `--env-file` holding `env`: docker passes each value after the first `=` through untouched (values
    hold no line break: `check_request` refuses them). The comment line takes the byte-order-mark trim
    docker applies to the first line."""
    return "# written by mreg\n" + "".join(f"{key}={value}\n" for key, value in sorted(env.items()))


def logs_argv(container: str, *, follow: bool = False, tail: int | None = None) -> list[str]:
    """The `docker logs` command line: everything from the start, or the last `tail` lines."""
    argv = ["docker", "logs", *(["--follow"] if follow else [])]
    if tail is not None:
        argv += ["--tail", str(tail)]
    return [*argv, "--", container]


def stop_argvs(container: str, *, grace: float) -> list[list[str]]:
    """The command lines that stop and remove a container: `docker stop` with the grace period, unless it
    is 0, then `docker rm --force`."""
    remove = ["docker", "rm", "--force", "--", container]
    if grace <= 0:
        return [remove]
    return [["docker", "stop", "--time", str(max(1, round(grace))), "--", container], remove]


class BuildxEngine:
    """Builds with BuildKit; the base stage is built once and then served from BuildKit's cache."""

    name = "buildx"
    buildkit = True

    def __init__(self, *, builder: str | None = None) -> None:
        self.builder = builder

    def default_network(self) -> str | None:
        names = capture(["docker", "network", "ls", "--format", "{{.Name}}"], what="docker network ls")
        return None if "bridge" in names.split() else "host"

    def local_image_id(self, ref: str) -> str | None:
        result = run(["docker", "image", "inspect", "--format", "{{.Id}}", "--", ref], what="docker image inspect")
        if result.returncode == 0:
            return result.stdout.strip()
        if "No such image" in result.stderr:
            return None
        raise EngineError(f"cannot inspect local image {ref}: {error_text(result)}")

    def registry_digest(self, ref: str) -> str | None:
        argv = ["docker", "buildx", "imagetools", "inspect", "--format", "{{json .Manifest}}", "--", ref]
        result = run(argv, what="docker buildx imagetools inspect")
        if result.returncode != 0:
            if result.stderr.rstrip().endswith("not found"):
                return None
            raise EngineError(with_login_hint(ref, f"cannot read {ref} from its registry: {error_text(result)}"))
        return _digest(json.loads(result.stdout).get("digest"), ref)

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
        secrets = secrets or {}
        env = {secret_variable(secret): value for secret, value in secrets.items()}
        with tempfile.TemporaryDirectory(prefix="mreg-bake-") as scratch:
            metadata = Path(scratch, "metadata.json")
            baked = len(targets) > 1 or bool(exports)
            if not baked:
                [(target, ref)] = targets.items()
                argv = build_argv(
                    context, target, ref, network=network, builder=self.builder, metadata=metadata, secrets=secrets
                )
                what = f"docker buildx build of target {target!r}"
            else:
                definition = Path(scratch, "compose.yaml")  # JSON is YAML; bake reads it as a compose file
                document = bake_definition(context, targets, network=network, secrets=secrets, exports=exports)
                definition.write_text(json.dumps(document, indent=2))
                argv = bake_argv(definition, [*targets, *(exports or {})], builder=self.builder, metadata=metadata)
                what = f"docker buildx bake of targets {', '.join(targets)}"
            stream(argv, on_line=on_line, what=what, env=env, redact=redact)
            refs = build_refs(_read_metadata(metadata), list(targets), baked=baked)
        built: dict[str, BuiltImage] = {}
        for target, ref in targets.items():
            image_id = self.local_image_id(ref)
            if image_id is None:
                raise EngineError(
                    f"buildx built {ref} but the engine does not have it; can builder "
                    f"{self.builder or 'default'} load images into this engine?"
                )
            built[target] = BuiltImage.local(ref, image_id)
        return Built(built, refs)

    def push(self, ref: str, *, on_line: LineSink) -> BuiltImage:
        try:
            stream(["docker", "push", "--", ref], on_line=on_line, what=f"docker push {ref}")
        except EngineError as exc:
            raise EngineError(with_login_hint(ref, str(exc))) from exc
        digest = self.registry_digest(ref)
        if digest is None:
            raise EngineError(f"pushed {ref}, but its registry does not know the tag.")
        return BuiltImage.pushed(ref, digest)

    def run(self, image: str, argv: Sequence[str], *, files: Mapping[str, Path] | None = None) -> str:
        create = ["docker", "create", "--network", "none", "--entrypoint", argv[0], "--", image, *argv[1:]]
        container = capture(create, what=f"docker create {image}").strip()
        try:
            for target, source in (files or {}).items():
                capture(["docker", "cp", "--", str(source), f"{container}:{target}"], what=f"docker cp {source}")
            result = run(["docker", "start", "--attach", container], what=f"running {argv[0]} in {image}")
            if result.returncode != 0:
                raise EngineError(f"{argv[0]} in {image} exited {result.returncode}: {error_text(result)}")
            return result.stdout
        finally:
            run(["docker", "rm", "--force", container], what="docker rm")

    def remove(self, ref: str) -> None:
        run(["docker", "image", "rm", "--", ref], what=f"docker image rm {ref}")

    def ensure_image(self, image: str) -> None:
        if self.local_image_id(image) is not None:
            return
        refuse_unpullable(image)
        result = run(["docker", "pull", "--quiet", "--", image], what=f"docker pull {image}")
        if result.returncode != 0:
            raise EngineError(with_login_hint(image, f"cannot pull {image}: {error_text(result)}")) from (
                subprocess.CalledProcessError(result.returncode, result.args)
            )

    def start_container(self, request: ContainerRequest) -> str:
        check_request(request)
        with tempfile.TemporaryDirectory(prefix="mreg-env-") as scratch:
            env_file = Path(scratch, "env") if request.env else None
            if env_file is not None:
                env_file.write_text(env_file_text(request.env))
            container = capture(create_argv(request, env_file=env_file), what=f"docker create {request.image}").strip()
        result = run(["docker", "start", "--", container], what=f"docker start {request.name}")
        if result.returncode != 0:
            self.remove_container(container, grace=0)
            raise EngineError(f"cannot start a container of {request.image}: {error_text(result)}")
        return container

    def follow_container(self, container: str, *, on_line: LineSink) -> int:
        follow(logs_argv(container, follow=True), on_line=on_line, what=f"docker logs {container}")
        state = self.container_state(container)
        if state is None:
            raise EngineError(f"the container {container} was removed while it ran.")
        return state.exit_code

    def container_logs(self, container: str, *, tail: int) -> list[str]:
        code, lines = follow(logs_argv(container, tail=tail), on_line=lambda line: None, what="docker logs")
        return lines if code == 0 else []

    def container_state(self, container: str) -> ContainerState | None:
        argv = ["docker", "container", "inspect", "--format", "{{json .State}}", "--", container]
        result = run(argv, what="docker container inspect")
        if result.returncode != 0:
            if "No such container" in result.stderr or "no such container" in result.stderr.lower():
                return None
            raise EngineError(f"cannot inspect the container {container}: {error_text(result)}")
        try:
            state = json.loads(result.stdout)
            return ContainerState(status=str(state["Status"]), exit_code=int(state["ExitCode"]))
        except (ValueError, LookupError, TypeError) as exc:
            raise EngineError(f"docker container inspect {container}: unexpected output ({exc!r}).") from exc

    def remove_container(self, container: str, *, grace: float) -> None:
        for argv in stop_argvs(container, grace=grace):
            run(argv, what=f"{argv[1]} {container}")


def build_refs(metadata: object, targets: list[str], *, baked: bool) -> dict[str, str]:
    """Each target's BuildKit build reference from buildx's metadata file (`bake` keys it by target, `build`
    writes one target's at the top). A target without one is left out (buildx writes none when nothing was
    exported, older ones none at all); one that is not a build reference is refused."""
    refs: dict[str, str] = {}
    for target in targets:
        entry = (metadata.get(target) if baked else metadata) if isinstance(metadata, dict) else None
        value = entry.get("buildx.build.ref") if isinstance(entry, dict) else None
        if value is None:
            continue
        if not isinstance(value, str) or not BUILD_REF_RE.fullmatch(value):
            raise EngineError(
                f"buildx reported {value!r} as the build reference of target {target!r}; expected builder/node/ref."
            )
        refs[target] = value
    return refs


def _read_metadata(path: Path) -> object:
    """buildx's metadata file, or None when it wrote none."""
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise EngineError(f"cannot read buildx's metadata file {path}: {exc}.") from exc


def _digest(value: object, ref: str) -> str:
    if not isinstance(value, str) or not SHA256_DIGEST_RE.fullmatch(value):
        raise EngineError(f"the registry returned no valid sha256 digest for {ref}: {value!r}")
    return value
