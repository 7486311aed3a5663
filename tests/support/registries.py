"""Image registries for tests: `registry:2` on 127.0.0.1 that asks for a login."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support import free_port, wait_http


@contextmanager
def htpasswd_registry(htpasswd: str, directory: Path, *, realm: str) -> Iterator[str]:
    """registry:2 with htpasswd (Basic) authentication from the `htpasswd` lines (kept in `directory`) on
    127.0.0.1; yields `127.0.0.1:PORT`."""
    from testcontainers.core.container import DockerContainer

    (directory / "htpasswd").write_text(htpasswd)
    port = free_port()
    container = (
        DockerContainer("registry:2")
        .with_env("REGISTRY_HTTP_ADDR", f"127.0.0.1:{port}")
        .with_env("REGISTRY_AUTH", "htpasswd")
        .with_env("REGISTRY_AUTH_HTPASSWD_REALM", realm)
        .with_env("REGISTRY_AUTH_HTPASSWD_PATH", "/auth/htpasswd")
        .with_volume_mapping(str(directory), "/auth", "ro")
        .with_kwargs(network_mode="host")
    )
    with container:
        assert wait_http(f"http://127.0.0.1:{port}/v2/", timeout=30).status_code == 401
        yield f"127.0.0.1:{port}"
