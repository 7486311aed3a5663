"""Both engine backends on a small spec: hostile values arrive verbatim, failures are reported clearly."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.support import free_port, mreg
from tests.support.projects import NOTE, tiny_project

pytestmark = pytest.mark.docker


def labels(image: str) -> dict[str, str]:
    inspected = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{json .Config.Labels}}", image],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, str] = json.loads(inspected.stdout)
    return result


@pytest.mark.parametrize("engine", ["buildx", "docker"])
def test_engine_builds_pushes_and_keeps_hostile_values_verbatim(tmp_path: Path, registry: str, engine: str) -> None:
    project = tiny_project(tmp_path, repository=f"{registry}/tiny-{engine}")
    result = mreg("build", "--push", "--json", "--engine", engine, cwd=project)
    built = json.loads(result.stdout)
    for stage in ("train", "serve"):
        assert built[stage]["image"] == f"{registry}/tiny-{engine}@{built[stage]['digest']}"
        assert labels(built[stage]["image"])["note"] == NOTE
    saved = json.loads((project / ".mreg" / "build.json").read_text())
    assert saved["buildkit"] is (engine == "buildx")
    ran = subprocess.run(
        ["docker", "run", "--rm", "--network", "host", built["serve"]["image"]],
        capture_output=True,
        text=True,
        check=True,
    )
    assert ran.stdout.strip() == "tiny says $HOME"


def test_local_build_without_repository_gives_runnable_image_ids(tmp_path: Path) -> None:
    project = tiny_project(tmp_path)
    built = json.loads(mreg("build", "--json", cwd=project).stdout)
    for stage in ("train", "serve"):
        assert built[stage]["ref"].startswith(f"mreg/tiny:{stage}-")
        assert built[stage]["image"] == built[stage]["digest"]
        assert built[stage]["digest"].startswith("sha256:")
    ran = subprocess.run(
        ["docker", "run", "--rm", "--network", "host", built["serve"]["image"]],
        capture_output=True,
        text=True,
        check=True,
    )
    assert ran.stdout.startswith("tiny says")


def test_failed_build_exits_4_with_the_output_tail_and_saves_nothing(tmp_path: Path) -> None:
    project = tiny_project(tmp_path, system=("mreg-no-such-debian-package",))
    result = mreg("build", cwd=project, check=False)
    assert result.returncode == 4
    assert "error: docker buildx bake of targets train, serve failed" in result.stderr
    assert "Unable to locate package mreg-no-such-debian-package" in result.stderr.split("error:", 1)[1]
    assert "Traceback" not in result.stderr
    assert not (project / ".mreg" / "build.json").exists()


def test_unknown_distribution_fails_the_lock_not_the_build(tmp_path: Path) -> None:
    project = tiny_project(tmp_path, shared=("mreg-no-such-distribution-anywhere==1.0",))
    assert not (project / "registry.lock").exists()
    result = mreg("build", cwd=project, check=False)
    assert result.returncode == 2
    assert "the packages cannot be locked" in result.stderr
    assert "packages.shared[0] = mreg-no-such-distribution-anywhere==1.0" in result.stderr
    assert "Because mreg-no-such-distribution-anywhere was not found" in result.stderr
    assert not (project / "registry.lock").exists()


def test_bad_spec_is_refused_before_any_build(tmp_path: Path) -> None:
    project = tiny_project(tmp_path, shared=("numpy; echo pwned",))
    result = mreg("build", cwd=project, check=False)
    assert result.returncode == 2
    assert result.stderr.startswith('error: registry.toml: packages.shared[0] = "numpy; echo pwned"')
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_push_needs_a_repository(tmp_path: Path) -> None:
    result = mreg("build", "--push", cwd=tiny_project(tmp_path), check=False)
    assert result.returncode == 2
    assert "--push needs images.repository" in result.stderr


def test_unreachable_registry_fails_clearly(tmp_path: Path) -> None:
    project = tiny_project(tmp_path, repository=f"127.0.0.1:{free_port()}/tiny")
    result = mreg("build", "--push", cwd=project, check=False)
    assert result.returncode == 4
    assert "connection refused" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (project / ".mreg" / "build.json").exists()
