"""Test tiers, decided at collection: a test that needs Docker (itself or through any fixture it uses) is
marked `docker`, and one that needs PyPI is marked `network`. A `docker` test skips without an engine and
fails instead when CI is set (a skipped end-to-end test proves nothing). `make test-unit` runs the rest.

Hypothesis runs the `ci` profile under CI and the quicker `dev` profile elsewhere (MREG_HYPOTHESIS_PROFILE
picks one).
"""

from __future__ import annotations

import os
import subprocess
import tempfile

import pytest
from hypothesis import HealthCheck, settings

# No cloud client of any test, or of the mreg processes tests start, may look for credentials on EC2's or
# GCE's metadata address; tests give explicit (S3) or anonymous (GCS emulator) credentials.
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
os.environ.setdefault("NO_GCE_CHECK", "True")
# Records cached by tests and their mreg processes go to a directory of this run, not the user's cache.
os.environ["MREG_CACHE_DIR"] = tempfile.mkdtemp(prefix="mreg-test-cache-")

settings.register_profile("ci", max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("MREG_HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev"))

DOCKER_FIXTURES = frozenset({"docker_engine"})
"""Fixtures that stand for a running Docker engine: every fixture that needs one requests it."""
NETWORK_FIXTURES = frozenset({"pypi"})
"""Fixtures that stand for PyPI being reachable."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test by what its fixture closure needs, so that no marker can be forgotten; a test marked
    `docker` by hand gets the engine check too."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if names & DOCKER_FIXTURES or item.get_closest_marker("docker"):
            item.add_marker(pytest.mark.docker)
            item.add_marker(pytest.mark.network)  # images are built from PyPI's packages
        if names & NETWORK_FIXTURES:
            item.add_marker(pytest.mark.network)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("docker") and "docker_engine" not in getattr(item, "fixturenames", ()):
        require_docker()


_engine_state: list[str | None] = []


def require_docker() -> None:
    """Skip without a Docker engine; fail instead when CI is set."""
    if not _engine_state:
        result = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True, check=False
        )
        _engine_state.append(None if result.returncode == 0 else result.stderr.strip() or "docker info failed")
    reason = _engine_state[0]
    if reason is not None:
        message = f"no Docker engine ({reason}); run ../shared/ci/provision-docker.sh"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="session")
def docker_engine() -> None:
    """A running Docker engine, or a skip (a failure when CI is set)."""
    require_docker()


@pytest.fixture(scope="session")
def pypi() -> None:
    """The package index uv resolves from answers (UV_DEFAULT_INDEX, else PyPI), or a skip (a failure
    under CI)."""
    import requests

    index = os.environ.get("UV_DEFAULT_INDEX") or os.environ.get("UV_INDEX_URL") or "https://pypi.org/simple/"
    try:
        requests.head(f"{index.rstrip('/')}/uv/", timeout=10, allow_redirects=True).raise_for_status()
    except requests.RequestException as exc:
        message = f"the package index {index} is unreachable ({exc})"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
