"""BuildKit through the `docker buildx` CLI: honours DOCKER_HOST, Docker contexts and buildx builders."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from pathlib import Path

from mreg.engine import BuiltImage, LineSink
from mreg.engine.process import capture, error_text, run, stream
from mreg.errors import EngineError
from mreg.refs import SHA256_DIGEST_RE


def buildx_available() -> bool:
    """True when `docker buildx` is installed."""
    return run(["docker", "buildx", "version"], what="docker buildx version").returncode == 0


def build_argv(
    context: Path,
    target: str,
    ref: str,
    *,
    push: bool,
    network: str | None,
    builder: str | None,
    metadata_file: Path,
) -> list[str]:
    """The `docker buildx build` command line for one target (a pure function of its arguments)."""
    argv = ["docker", "buildx", "build", "--progress=plain", "--target", target, "--tag", ref]
    if builder:
        argv += ["--builder", builder]
    if network:
        argv += ["--network", network]
    argv += ["--push"] if push else ["--load"]
    argv += ["--metadata-file", str(metadata_file), "--", str(context)]
    return argv


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
            raise EngineError(f"cannot read {ref} from its registry: {error_text(result)}")
        return _digest(json.loads(result.stdout).get("digest"), ref)

    def build(
        self,
        context: Path,
        targets: Mapping[str, str],
        *,
        push: bool,
        network: str | None,
        on_line: LineSink,
    ) -> dict[str, BuiltImage]:
        built: dict[str, BuiltImage] = {}
        with tempfile.TemporaryDirectory(prefix="mreg-buildx-") as scratch:
            for target, ref in targets.items():
                metadata_file = Path(scratch, f"{target}.json")
                argv = build_argv(
                    context, target, ref, push=push, network=network, builder=self.builder,
                    metadata_file=metadata_file,
                )  # fmt: skip
                stream(argv, on_line=on_line, what=f"docker buildx build of target {target!r}")
                metadata = json.loads(metadata_file.read_text())
                if push:
                    built[target] = self._pinned(ref, metadata.get("containerimage.digest"))
                else:
                    image_id = self.local_image_id(ref)
                    if image_id is None:
                        raise EngineError(
                            f"buildx built {ref} but the engine does not have it; is builder "
                            f"{self.builder or 'default'} able to load images into this engine?"
                        )
                    built[target] = BuiltImage.local(ref, image_id)
        return built

    def push(self, ref: str, *, on_line: LineSink) -> BuiltImage:
        stream(["docker", "push", "--", ref], on_line=on_line, what=f"docker push {ref}")
        return self._pinned(ref, None)

    def _pinned(self, ref: str, reported: str | None) -> BuiltImage:
        """Read the digest back from the registry: a push is done only when the registry says so."""
        digest = self.registry_digest(ref)
        if digest is None:
            raise EngineError(f"pushed {ref}, but its registry does not know the tag.")
        if reported is not None and reported != digest:
            raise EngineError(f"pushed {ref} as {reported}, but its registry holds {digest}.")
        return BuiltImage.pushed(ref, digest)


def _digest(value: object, ref: str) -> str:
    if not isinstance(value, str) or not SHA256_DIGEST_RE.fullmatch(value):
        raise EngineError(f"the registry returned no valid sha256 digest for {ref}: {value!r}")
    return value
