"""Real Docker Engine, real `registry:2` on 127.0.0.1. With CI set, a missing engine fails the run."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest

from tests.support import free_port, wait_http

os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")  # Ryuk's image cannot be pulled here


@pytest.fixture(scope="session")
def docker_engine() -> None:
    """A running Docker engine, or a skip (a failure when CI is set: a skipped e2e test proves nothing)."""
    result = subprocess.run(
        ["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        reason = f"no Docker engine ({result.stderr.strip()}); run ../shared/ci/provision-docker.sh"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture(scope="session")
def registry(docker_engine: None) -> Iterator[str]:
    """A CNCF distribution registry on 127.0.0.1 with a free port: yields `127.0.0.1:PORT`."""
    from testcontainers.core.container import DockerContainer

    port = free_port()
    container = (
        DockerContainer("registry:2")
        .with_env("REGISTRY_HTTP_ADDR", f"127.0.0.1:{port}")
        .with_kwargs(network_mode="host")
    )
    with container:
        wait_http(f"http://127.0.0.1:{port}/v2/", timeout=30)
        yield f"127.0.0.1:{port}"
