"""mreg talks to the Docker Engine the user chose: DOCKER_HOST, else the current Docker context.

The engine is reached through a relay on a socket of its own, which records the API requests it carries:
each step of a build (the build itself, the image lookups, the skew guard's container) must go through it.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import mreg
from tests.support.docker_relay import DockerRelay
from tests.support.projects import tiny_project

pytestmark = pytest.mark.docker

BUILD_REQUESTS = {"buildx": r"/session", "docker": r"/build"}


@pytest.fixture
def relay() -> Iterator[DockerRelay]:
    directory = tempfile.mkdtemp(prefix="mreg-relay-")  # under /tmp: a socket's path is limited to 107 bytes
    with DockerRelay(Path(directory, "docker.sock")) as running:
        yield running
    Path(directory).rmdir()


@pytest.fixture
def context(relay: DockerRelay) -> Iterator[str]:
    name = f"mreg-test-{secrets.token_hex(4)}"
    subprocess.run(
        ["docker", "context", "create", name, "--docker", f"host={relay.url}"], check=True, capture_output=True
    )
    yield name
    subprocess.run(["docker", "context", "rm", "--force", name], check=False, capture_output=True)


def build_through(relay: DockerRelay, project: Path, *args: str, env: dict[str, str] | None = None) -> None:
    built = json.loads(mreg("build", "--rebuild", "--json", *args, cwd=project, env=env).stdout)
    engine = "docker" if "docker" in args else "buildx"
    assert relay.seen(BUILD_REQUESTS[engine]), relay.paths
    assert relay.seen(r"/images/.+/json"), relay.paths  # the image lookups
    if engine == "buildx":  # its build lists the distributions; reused images unknown to mreg need a container
        assert not relay.seen(r"/containers/create"), relay.paths
        (project / ".mreg" / "build.json").unlink()
        mreg("build", *args, cwd=project, env=env)
    assert relay.seen(r"/containers/create"), relay.paths  # the skew guard's container
    for stage in ("train", "serve"):
        subprocess.run(["docker", "image", "inspect", built[stage]["image"]], check=True, capture_output=True)


@pytest.mark.parametrize("engine", ["buildx", "docker"])
def test_docker_host_is_honoured(relay: DockerRelay, tmp_path: Path, engine: str) -> None:
    project = tiny_project(tmp_path / "project")
    build_through(relay, project, "--engine", engine, env={"DOCKER_HOST": relay.url})


@pytest.mark.parametrize("engine", ["buildx", "docker"])
def test_the_current_docker_context_is_honoured(relay: DockerRelay, context: str, tmp_path: Path, engine: str) -> None:
    project = tiny_project(tmp_path / "project")
    build_through(relay, project, "--engine", engine, env={"DOCKER_CONTEXT": context})


@pytest.mark.parametrize("engine", ["buildx", "docker"])
def test_an_unknown_docker_context_fails_the_build_by_name(tmp_path: Path, engine: str) -> None:
    project = tiny_project(tmp_path / "project")
    result = mreg("build", "--rebuild", "--engine", engine, cwd=project, check=False, env={"DOCKER_CONTEXT": "nope"})
    assert result.returncode == 4
    assert 'context "nope": context not found' in result.stderr
    assert "Traceback" not in result.stderr
