"""Faults injected for real: signals at each phase, a registry killed mid-push, an S3 server that drops out,
a missing bucket, missing credentials. Each leaves nothing half-written, and the next run works."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import psutil
import pytest

from tests.support import free_port, mreg, mreg_json, wait_http
from tests.support.faults import Proxy, up_again_after
from tests.support.projects import tiny_project
from tests.support.pypi import PrivateIndex

SLOW_TEMPLATE = (
    '{% extends "mreg/Dockerfile.j2" %}\n{% block serve %}{{ super() }}\nRUN echo mreg-slow-step-{{ model_name }} '
    "&& sleep 60\n{% endblock %}\n"
)


Start = Callable[..., subprocess.Popen[str]]


@pytest.fixture
def start() -> Iterator[Start]:
    """Start `mreg ARGS` in the background; whatever is still running when the test ends is killed."""
    started: list[subprocess.Popen[str]] = []

    def run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [sys.executable, "-m", "mreg", *args],
            cwd=cwd,
            env={**os.environ, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        started.append(process)
        return process

    yield run
    for process in started:
        if process.poll() is None:
            process.kill()
        process.communicate()


def big_file(path: Path, megabytes: int) -> Path:
    """Random bytes (no layer or object store can make them small), written quickly."""
    block = os.urandom(1024 * 1024)
    with path.open("wb") as handle:
        for index in range(megabytes):
            handle.write(index.to_bytes(8, "big") + block[8:])
    return path


def wait_for_line(process: subprocess.Popen[str], marker: str, *, timeout: float = 240) -> list[str]:
    """Read the process's stderr until a line holds `marker`; returns the lines read."""
    assert process.stderr is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    for line in process.stderr:
        lines.append(line)
        if marker in line:
            return lines
        assert time.monotonic() < deadline, f"no {marker!r} within {timeout} s"
    raise AssertionError(f"the process ended without printing {marker!r}:\n{''.join(lines[-20:])}")


def interrupt(process: subprocess.Popen[str], signum: int) -> tuple[float, str]:
    """Send `signum`; return how long the process took to exit, and the rest of its stderr."""
    children = psutil.Process(process.pid).children(recursive=True)
    started = time.monotonic()
    process.send_signal(signum)
    _, rest = process.communicate(timeout=60)
    elapsed = time.monotonic() - started
    time.sleep(0.5)
    assert not [child.pid for child in children if child.is_running() and child.status() != psutil.STATUS_ZOMBIE]
    return elapsed, rest


@pytest.mark.docker
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_the_build_stops_it_promptly_and_saves_nothing(
    tmp_path: Path, signum: int, start: Start
) -> None:
    project = tmp_path / "project"
    (project / "templates").mkdir(parents=True)
    (project / "templates" / "Dockerfile.j2").write_text(SLOW_TEMPLATE.replace("model_name", f"'{uuid.uuid4().hex}'"))
    tiny_project(project, extra='[render]\ntemplate_dir = "templates"\n')
    process = start("--verbose", "build", cwd=project)  # BuildKit's log, to see the slow step start
    wait_for_line(process, "mreg-slow-step")
    elapsed, rest = interrupt(process, signum)
    assert process.returncode == 130
    assert rest.strip().endswith("error: interrupted; nothing was recorded.")
    assert elapsed < 15
    assert not (project / ".mreg" / "build.json").exists()
    (project / "templates" / "Dockerfile.j2").write_text('{% extends "mreg/Dockerfile.j2" %}\n')
    assert mreg_json("build", cwd=project)["serve"]["digest"].startswith("sha256:")


def test_a_signal_during_the_lock_leaves_no_lock(tmp_path: Path, start: Start, pypi: None) -> None:
    (tmp_path / "registry.toml").write_text('[model]\nname = "slow"\n[packages]\nshared = ["mreg-private-demo"]\n')
    with PrivateIndex("tok-slow", delay=30) as index:
        process = start("lock", cwd=tmp_path, env={"MREG_EXTRA_INDEX_URL": index.url})
        deadline = time.monotonic() + 60
        while not index.requests:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        elapsed, rest = interrupt(process, signal.SIGINT)
    assert process.returncode == 130
    assert elapsed < 10
    assert "tok-slow" not in rest
    assert sorted(path.name for path in tmp_path.iterdir()) == ["registry.toml"]


@pytest.mark.docker
@pytest.mark.parametrize("fault", ["kill-registry", "sigint"])
def test_a_push_that_breaks_off_records_nothing(tmp_path: Path, fault: str, start: Start) -> None:
    from testcontainers.core.container import DockerContainer

    port = free_port()
    registry = DockerContainer("registry:2").with_env("REGISTRY_HTTP_ADDR", f"127.0.0.1:{port}")
    with registry.with_kwargs(network_mode="host") as container:
        wait_http(f"http://127.0.0.1:{port}/v2/", timeout=30)
        project = tmp_path / "project"
        project.mkdir()
        big_file(project / "weights.bin", 400)  # a layer big enough to be caught in the middle of its push
        tiny_project(
            project, repository=f"127.0.0.1:{port}/faulty-{fault}", extra='[stages.train]\ncopy = ["weights.bin"]\n'
        )
        process = start("--verbose", "build", "--push", cwd=project)
        wait_for_line(process, "Preparing")
        if fault == "sigint":
            _, rest = interrupt(process, signal.SIGINT)
            assert process.returncode == 130
        else:
            container.get_wrapped_container().kill()
            _, rest = process.communicate(timeout=180)
            assert process.returncode == 4
            assert "error: docker push" in rest
            assert "Traceback" not in rest
    assert not (project / ".mreg" / "build.json").exists()


def s3_project(directory: Path, bucket: str, endpoint: str | None = None) -> Path:
    from tests.support import copy_example, save_build

    project = copy_example(directory)
    text = (project / "registry.toml").read_text()
    endpoint_line = f'endpoint_url = "{endpoint}"\n' if endpoint else ""
    text = text.replace('uri = "file://.mreg/objects"\n', f'uri = "s3://{bucket}/objects"\n{endpoint_line}')
    text = text.replace('uri = "file://.mreg/registry"\n', f'uri = "s3://{bucket}/registry"\n{endpoint_line}')
    (project / "registry.toml").write_text(text)
    save_build(project)
    return project


def s3_keys_and_uploads(bucket: str) -> tuple[list[str], list[str]]:
    client = boto3.client("s3")
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]
    uploads = [u["Key"] for u in client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]
    return keys, uploads


def test_a_signal_during_an_s3_upload_aborts_it(tmp_path: Path, bucket: str, start: Start) -> None:
    project = s3_project(tmp_path / "project", bucket)
    big_file(project / "model.bin", 384)
    process = start("register", "model.bin", cwd=project)
    deadline = time.monotonic() + 60
    while not s3_keys_and_uploads(bucket)[1]:
        assert process.poll() is None, "the upload finished before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    elapsed, _ = interrupt(process, signal.SIGTERM)
    assert process.returncode == 130
    assert elapsed < 30
    assert s3_keys_and_uploads(bucket) == ([], [])
    (project / "model.bin").write_bytes(b"small model")
    assert mreg_json("register", "model.bin", cwd=project)["version"] == 1


def test_a_signal_while_writing_the_record_leaves_no_record(
    tmp_path: Path, bucket: str, moto_endpoint: str, start: Start
) -> None:
    """The model is stored; then the registry's server hangs, and mreg is stopped while it waits."""
    port = int(moto_endpoint.rsplit(":", 1)[1])
    with Proxy(port, stalled=True) as hanging:
        project = s3_project(tmp_path / "project", bucket)
        text = (project / "registry.toml").read_text()
        registry_table = f'uri = "s3://{bucket}/registry"\n'
        stalled_endpoint = f'endpoint_url = "http://127.0.0.1:{hanging.port}"\n'
        (project / "registry.toml").write_text(text.replace(registry_table, registry_table + stalled_endpoint))
        (project / "model.bin").write_bytes(b"a model")
        process = start("register", "model.bin", cwd=project)
        deadline = time.monotonic() + 60
        while not [key for key in s3_keys_and_uploads(bucket)[0] if "/sha256/" in key]:
            assert process.poll() is None
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.5)  # now waiting on the registry
        elapsed, rest = interrupt(process, signal.SIGTERM)
    assert process.returncode == 130
    assert elapsed < 10
    assert rest.strip().endswith("error: interrupted; nothing was recorded.")
    keys, uploads = s3_keys_and_uploads(bucket)
    assert not [key for key in keys if key.startswith("registry/")]
    assert uploads == []
    (project / "registry.toml").write_text(text)
    assert mreg_json("register", "model.bin", cwd=project)["version"] == 1


@pytest.mark.parametrize(
    ("down_after_mib", "outage"),
    [(6, 8.0), (30, 5.0)],  # while the first parts are in flight, and in the last part
)
def test_an_s3_outage_of_seconds_is_survived(
    tmp_path: Path, bucket: str, moto_endpoint: str, down_after_mib: int, outage: float
) -> None:
    """The endpoint goes away for several seconds (long enough that scheduling jitter cannot decide the
    outcome): the failed requests are sent again until it is back, the parts that arrived are not."""
    port = int(moto_endpoint.rsplit(":", 1)[1])
    with Proxy(port, down_after_bytes=down_after_mib * 1024 * 1024) as proxy:
        proxy.on_down = up_again_after(proxy, outage)
        project = s3_project(tmp_path / "project", bucket, f"http://127.0.0.1:{proxy.port}")
        (project / "model.bin").write_bytes(os.urandom(32 * 1024 * 1024))
        started = time.monotonic()
        record = mreg_json("register", "model.bin", cwd=project)
        assert time.monotonic() - started > outage  # it really waited the outage out
        assert proxy.forwarded < 2 * 32 * 1024 * 1024  # what had arrived was not sent again
        fetched = mreg_json("pull", "iris-rf", "-o", str(tmp_path / "pulled.bin"), cwd=project)
    assert record["version"] == 1
    assert s3_keys_and_uploads(bucket)[1] == []
    assert Path(fetched["path"]).read_bytes() == (project / "model.bin").read_bytes()


def run_fast(command: Callable[[], subprocess.CompletedProcess[str]]) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    result = command()
    return result, time.monotonic() - started


def test_a_missing_bucket_fails_at_once(tmp_path: Path, s3_env: dict[str, str]) -> None:
    project = s3_project(tmp_path / "project", "mreg-no-such-bucket")
    (project / "model.bin").write_bytes(b"model")
    result, elapsed = run_fast(lambda: mreg("register", "model.bin", cwd=project, check=False))
    assert result.returncode == 3
    assert "The specified bucket does not exist (NoSuchBucket)" in result.stderr
    assert "check storage.uri" in result.stderr
    assert elapsed < 10


def test_missing_credentials_fail_at_once_with_what_to_set(
    tmp_path: Path, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = s3_project(tmp_path / "project", bucket)
    (project / "model.bin").write_bytes(b"model")
    credentials = {key: os.environ[key] for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    env = {
        "AWS_EC2_METADATA_DISABLED": "true",  # never ask 169.254.169.254 from a test
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
    }
    result, elapsed = run_fast(lambda: mreg("register", "model.bin", cwd=project, check=False, env=env))
    assert result.returncode == 5
    assert "no usable AWS credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in result.stderr
    assert elapsed < 10
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", credentials["AWS_ACCESS_KEY_ID"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", credentials["AWS_SECRET_ACCESS_KEY"])
    assert s3_keys_and_uploads(bucket) == ([], [])
