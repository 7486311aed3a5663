"""Helpers shared by the test tiers: run the real CLI, copy the bundled example, wait for services."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from mreg import pipeline
from mreg.guards.skew import ImageEnvironment
from mreg.lock import Lock, LockedPackage, load_lock, lock_inputs
from mreg.records import BuiltImage, ModelFile, Record
from mreg.render import render
from mreg.spec import Spec, Stage, load_spec

REPO = Path(__file__).resolve().parents[2]


def mreg(
    *args: str, cwd: Path, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the real `mreg` command line in `cwd`; with check, fail with its output when it fails."""
    result = subprocess.run(
        [sys.executable, "-m", "mreg", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **(env or {})},
    )
    if check and result.returncode != 0:
        raise AssertionError(f"mreg {' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


def mreg_json(*args: str, cwd: Path) -> Any:
    """Run mreg with --json and parse its stdout."""
    return json.loads(mreg(*args, "--json", cwd=cwd).stdout)


def copy_example(target: Path, *, repository: str | None = None, stores: str | None = None) -> Path:
    """The bundled example (registry.toml and examples/iris) in a fresh directory; returns it. `stores` puts
    its object store at `<stores>/objects` and its registry at `<stores>/registry`."""
    target.mkdir(parents=True, exist_ok=True)
    shutil.copytree(REPO / "examples" / "iris", target / "examples" / "iris")
    shutil.copy(REPO / "registry.lock", target / "registry.lock")
    text = (REPO / "registry.toml").read_text()
    if repository:
        marker = '# repository = "registry.example.com/ml/iris-rf"'
        assert marker in text
        text = text.replace(marker, f'repository = "{repository}"')
    for section, store in (("storage", "objects"), ("registry", "registry")) if stores else ():
        marker = f'[{section}]\nuri = "file://.mreg/{store}"\n'
        assert marker in text
        text = text.replace(marker, f'[{section}]\nuri = "{stores}/{store}"\n')
    (target / "registry.toml").write_text(text)
    return target


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_http(url: str, *, timeout: float = 60.0) -> requests.Response:
    """GET `url` until it answers below 500; TimeoutError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            response = requests.get(url, timeout=2)
            if response.status_code < 500:
                return response
        except requests.RequestException as exc:
            last = exc
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout} s (last error: {last})")


def make_lock(spec: Spec, sets: dict[str, dict[str, str]]) -> Lock:
    """A lock for `spec` without resolving anything: `sets` maps a set name to its `name -> version` pins.

    The hashes are made up; only builds would notice, and tests that build use `mreg lock`.
    """
    members: dict[tuple[str, str], list[str]] = {}
    for set_name, pins in sets.items():
        for name, version in pins.items():
            members.setdefault((name, version), []).append(set_name)
    packages = [
        LockedPackage(name=name, version=version, sets=names, hashes=[f"sha256:{name_hash(name, version)}"])  # type: ignore[arg-type]
        for (name, version), names in sorted(members.items())
    ]
    return Lock(python=spec.python.version, platform=spec.python.platform, inputs=lock_inputs(spec), packages=packages)


def name_hash(name: str, version: str) -> str:
    return hashlib.sha256(f"{name}=={version}".encode()).hexdigest()


DIGESTS = {"train": "sha256:" + "1" * 64, "serve": "sha256:" + "2" * 64}


def save_build(project: Path, stages: tuple[Stage, ...] = ("train", "serve")) -> None:
    """A build result as `mreg build` leaves it for the project's current files (image digests made up,
    installed distributions as the lock pins them)."""
    spec = load_spec(project / "registry.toml")
    lock = load_lock(spec)
    result = pipeline.BuildResult(
        spec_sha256=spec.digest(),
        context_sha256=render(spec, lock).digest(),
        buildkit=True,
        images={
            stage: BuiltImage(ref=f"mreg/iris-rf:{stage}-x", digest=DIGESTS[stage], image=DIGESTS[stage])
            for stage in stages
        },
        environments={stage: ImageEnvironment(python="3.11.2", packages=lock.pins(stage)) for stage in stages},
    )
    (project / ".mreg").mkdir(exist_ok=True)
    (project / ".mreg" / "build.json").write_text(result.model_dump_json())


def mreg_in_process(*args: str, cwd: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[int, str, str]:
    """Run the command line in this process (fast, for large tables of cases): (exit code, stdout, stderr)."""
    from mreg.cli import run

    monkeypatch.chdir(cwd)
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = run(list(args))
    return code, stdout.getvalue(), stderr.getvalue()


@contextlib.contextmanager
def serving(record: dict[str, Any], model_path_in_image: str) -> Iterator[str]:
    """The record's serve image answering on a free port of 127.0.0.1, with its model mounted read-only
    (from the local object store) and its SHA-256 to check; yields the base URL."""
    from testcontainers.core.container import DockerContainer

    port = free_port()
    container = (
        DockerContainer(record["images"]["serve"]["image"])
        .with_kwargs(network_mode="host")
        .with_volume_mapping(record["model"]["uri"].removeprefix("file://"), model_path_in_image, "ro")
        .with_env("MREG_MODEL_PATH", model_path_in_image)
        .with_env("MREG_MODEL_SHA256", record["model"]["sha256"])
        .with_env("PORT", str(port))
        .with_env("HOST", "127.0.0.1")
    )
    with container:
        wait_http(f"http://127.0.0.1:{port}/healthz", timeout=60)
        yield f"http://127.0.0.1:{port}"


RECORD_DIGEST = "sha256:" + "ab" * 32


def make_record(version: int = 1, *, name: str = "iris-rf", sha: str = "cd" * 32, uri: str | None = None) -> Record:
    """A record of a file model (made-up digests), unsealed: stores seal what they write."""
    image = BuiltImage(
        ref="localhost:5000/iris-rf:train-0123", image=f"localhost:5000/iris-rf@{RECORD_DIGEST}", digest=RECORD_DIGEST
    )
    return Record(
        name=name,
        version=version,
        model=ModelFile(uri=uri or f"file:///store/sha256/{sha}", sha256=sha, size=12, filename="model.joblib"),
        images={"train": image, "serve": image},
        packages={"shared": ["scikit-learn==1.3.2"], "train": [], "serve": ["fastapi==0.109.0"]},
        python="3.11.2",
        spec_sha256="ef" * 32,
        created_at=datetime(2026, 11, 29, 10, 0, tzinfo=UTC),
        git=None,
    )
