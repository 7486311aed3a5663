"""Registry credentials stay in Docker's own store: against a registry that requires a login, mreg pushes and
verifies with what `docker login` stored, and the password appears in nothing mreg prints or writes."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import mreg
from tests.support.projects import tiny_project
from tests.support.registries import htpasswd_registry

pytestmark = pytest.mark.docker

USER, PASSWORD = "mreg", "pw-mreg-8f3a1c"
# bcrypt of PASSWORD (what registry:2's htpasswd auth accepts), made once with Python's crypt module
HTPASSWD = f"{USER}:$2b$12$VY7qkDwtpyErsTqu.kIgbeTj2Zkkd0lBjmCNgvHuy8H7bT7K0WdCK\n"


@pytest.fixture(scope="module")
def private_registry(docker_engine: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """registry:2 with htpasswd authentication on 127.0.0.1; yields `127.0.0.1:PORT`."""
    with htpasswd_registry(HTPASSWD, tmp_path_factory.mktemp("auth"), realm="mreg-test") as address:
        yield address


def test_a_push_uses_dockers_credential_store_and_shows_the_password_nowhere(
    private_registry: str, tmp_path: Path
) -> None:
    config = tmp_path / "docker-config"  # this test's own Docker configuration: the user's stays untouched
    config.mkdir()
    env = {"DOCKER_CONFIG": str(config)}
    project = tiny_project(tmp_path / "project", repository=f"{private_registry}/private-tiny")

    refused = mreg("build", "--push", cwd=project, check=False, env=env)
    assert refused.returncode == 4, refused.stderr
    assert "Traceback" not in refused.stderr
    assert f"log in with `docker login {private_registry}`" in refused.stderr, refused.stderr

    subprocess.run(
        ["docker", "login", "--username", USER, "--password-stdin", private_registry],
        input=PASSWORD, text=True, capture_output=True, check=True, env={**os.environ, **env},
    )  # fmt: skip
    built = mreg("build", "--push", "--json", cwd=project, env=env)
    images = json.loads(built.stdout)
    assert images["serve"]["image"].startswith(f"{private_registry}/private-tiny@sha256:")
    (project / "model.bin").write_bytes(b"a model")
    registered = mreg("register", "model.bin", "--json", cwd=project, env=env)
    verified = mreg("verify", "tiny:1", cwd=project, env=env)

    secrets = [PASSWORD, base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()]
    places = {
        "mreg output": "".join(r.stdout + r.stderr for r in (refused, built, registered, verified)),
        **{str(path): path.read_text(errors="replace") for path in (project / ".mreg").rglob("*") if path.is_file()},
        "registry.lock": (project / "registry.lock").read_text(),
    }
    assert any("registry" in where for where in places)  # the record is among the files searched
    for where, text in places.items():
        for secret in secrets:
            assert secret not in text, f"the registry password leaked into {where}"
