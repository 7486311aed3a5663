"""Real Docker Engine, real `registry:2` on 127.0.0.1. With CI set, a missing engine fails the run."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import free_port, wait_http

os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")  # Ryuk's image cannot be pulled here


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


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """moto's S3 server over real HTTP on 127.0.0.1; yields its endpoint URL."""
    from tests.support.moto import SerialMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    port = free_port()
    server = SerialMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


S3_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "mreg-test-key",
    "AWS_SECRET_ACCESS_KEY": "mreg-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture
def s3_env(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """boto3's configuration chain pointed at moto, in this process and for the CLI processes tests start."""
    env = {**S3_CREDENTIALS, "AWS_ENDPOINT_URL": moto_endpoint}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return env


@pytest.fixture
def bucket(s3_env: dict[str, str]) -> str:
    """A new, empty bucket for one test."""
    import boto3

    name = f"mreg-{uuid.uuid4().hex[:20]}"
    boto3.client("s3", endpoint_url=s3_env["AWS_ENDPOINT_URL"]).create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def gcs_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """fake-gcs-server over real HTTP on 127.0.0.1 (its filesystem backend); yields its endpoint URL."""
    from tests.support.gcs import fake_gcs

    with fake_gcs(tmp_path_factory.mktemp("gcs")) as endpoint:
        yield endpoint


GCS_ENVIRONMENT = {"NO_GCE_CHECK": "True", "GOOGLE_CLOUD_PROJECT": "test"}
"""No credential lookup on the network: with STORAGE_EMULATOR_HOST, mreg's client is anonymous."""


@pytest.fixture
def gcs_bucket(gcs_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A new, empty bucket on the emulator, with the emulator's variables set for this process and the CLI
    processes a test starts."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage  # type: ignore[import-untyped]

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_endpoint)
    for key, value in GCS_ENVIRONMENT.items():
        monkeypatch.setenv(key, value)
    name = f"mreg-{uuid.uuid4().hex[:20]}"
    storage.Client(project="test", credentials=AnonymousCredentials()).create_bucket(name)  # type: ignore[no-untyped-call]
    return name


@pytest.fixture(params=["file", "s3", "gs"])
def store_root(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a store test keeps its store: a local directory, a prefix of a bucket on moto's S3 server, and
    one on the GCS emulator. Every store test runs against every backend."""
    if request.param == "file":
        return tmp_path.as_uri()
    if request.param == "gs":
        return f"gs://{request.getfixturevalue('gcs_bucket')}/team"
    bucket: str = request.getfixturevalue("bucket")
    return f"s3://{bucket}/team"
