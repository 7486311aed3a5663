"""The bundled iris example, end to end: build and push both images to a real registry, train in the
train image, register the model, and get a correct prediction from the serve image."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from packaging.utils import canonicalize_name

from tests.support import copy_example, mreg, mreg_json, serving

pytestmark = pytest.mark.docker

MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)
SAMPLES = {"setosa": [5.1, 3.5, 1.4, 0.2], "versicolor": [6.4, 3.2, 4.5, 1.5], "virginica": [6.7, 3.0, 5.2, 2.3]}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, registry: str) -> Path:
    return copy_example(tmp_path_factory.mktemp("iris"), repository=f"{registry}/iris-rf")


@pytest.fixture(scope="module")
def built(project: Path) -> dict[str, Any]:
    result = mreg("build", "--push", "--json", cwd=project)
    summary: dict[str, Any] = json.loads(result.stdout)
    return summary


@pytest.fixture(scope="module")
def record(project: Path, built: dict[str, Any]) -> dict[str, Any]:
    out = project / "out"
    out.mkdir()
    subprocess.run(
        ["docker", "run", "--rm", "--network", "host", "-v", f"{out}:/out", built["train"]["image"]],
        check=True,
        capture_output=True,
    )
    registered: dict[str, Any] = mreg_json("register", str(out / "model.joblib"), cwd=project)
    return registered


def test_build_json_names_both_images_by_registry_digest(built: dict[str, Any], registry: str) -> None:
    assert set(built) == {"train", "serve"}
    for stage, image in built.items():
        assert image["ref"].startswith(f"{registry}/iris-rf:{stage}-")
        assert image["digest"].startswith("sha256:")
        assert len(image["digest"]) == len("sha256:") + 64
        assert image["image"] == f"{registry}/iris-rf@{image['digest']}"
    assert built["train"]["digest"] != built["serve"]["digest"]


def test_registry_serves_each_recorded_manifest(built: dict[str, Any], registry: str) -> None:
    for image in built.values():
        url = f"http://{registry}/v2/iris-rf/manifests/{image['digest']}"
        response = requests.get(url, headers={"Accept": MANIFEST_TYPES}, timeout=10)
        assert response.status_code == 200
        assert response.headers["Docker-Content-Digest"] == image["digest"]
        assert "sha256:" + hashlib.sha256(response.content).hexdigest() == image["digest"]
        tag = image["ref"].rsplit(":", 1)[1]
        by_tag = requests.head(
            f"http://{registry}/v2/iris-rf/manifests/{tag}", headers={"Accept": MANIFEST_TYPES}, timeout=10
        )
        assert by_tag.headers["Docker-Content-Digest"] == image["digest"]


def test_images_carry_mreg_and_oci_labels(project: Path, built: dict[str, Any]) -> None:
    for stage, image in built.items():
        inspected = subprocess.run(
            ["docker", "image", "inspect", "--format", "{{json .Config.Labels}}", image["image"]],
            capture_output=True,
            text=True,
            check=True,
        )
        labels = json.loads(inspected.stdout)
        assert labels["io.mreg.stage"] == stage
        assert labels["io.mreg.model"] == "iris-rf"
        assert "io.mreg.spec-sha256" not in labels  # the train image must not change with serve-only inputs
        assert labels["org.opencontainers.image.title"] == f"iris-rf-{stage}"
        assert labels["team"] == "ml-platform"
        installed = json.loads(labels["io.mreg.packages"])
        assert "scikit-learn==1.3.2" in installed
        assert ("fastapi==0.109.0" in installed) is (stage == "serve")


def test_record_ties_the_model_to_both_image_digests(
    project: Path, built: dict[str, Any], record: dict[str, Any]
) -> None:
    model = project / "out" / "model.joblib"
    assert record["name"] == "iris-rf"
    assert record["version"] == 1
    assert record["model"]["sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    assert record["model"]["size"] == model.stat().st_size
    assert record["model"]["filename"] == "model.joblib"
    for stage in ("train", "serve"):
        assert record["images"][stage]["digest"] == built[stage]["digest"]
        assert record["images"][stage]["image"] == built[stage]["image"]
    lock = tomllib.loads((project / "registry.lock").read_text())
    pins = {
        stage: {f"{p['name']}=={p['version']}" for p in lock["packages"] if stage in p["sets"]}
        for stage in ("train", "serve")
    }
    assert set(record["packages"]["shared"]) == pins["train"] & pins["serve"]
    assert set(record["packages"]["train"]) == pins["train"] - pins["serve"]
    assert set(record["packages"]["serve"]) == pins["serve"] - pins["train"]
    assert "scikit-learn==1.3.2" in record["packages"]["shared"]
    assert "fastapi==0.109.0" in record["packages"]["serve"]
    assert record["python"].startswith("3.11.")


def test_show_json_prints_exactly_what_register_printed(project: Path, record: dict[str, Any]) -> None:
    shown = mreg("show", "iris-rf:1", "--json", cwd=project).stdout
    assert json.loads(shown) == record
    assert mreg("show", "iris-rf", "--json", cwd=project).stdout == shown
    listed = mreg_json("list", "iris-rf", cwd=project)
    assert [entry["version"] for entry in listed] == [1]


@pytest.fixture
def served(record: dict[str, Any]) -> Iterator[str]:
    """The serve image answering with the registered model."""
    with serving(record, "/models/model.joblib") as url:
        yield url


def test_serve_image_predicts_with_the_registered_model(served: str) -> None:
    health = requests.get(f"{served}/healthz", timeout=10).json()
    assert health["sklearn"] == "1.3.2"
    response = requests.post(f"{served}/predict", json={"instances": list(SAMPLES.values())}, timeout=10)
    assert response.status_code == 200
    assert response.json()["classes"] == list(SAMPLES)


def test_unchanged_spec_reuses_pushed_images(project: Path, built: dict[str, Any]) -> None:
    started = time.monotonic()
    again = mreg("build", "--push", "--json", cwd=project)
    assert json.loads(again.stdout) == built
    assert again.stderr.count("is up to date") == 2
    assert "#1 [internal] load build definition" not in again.stderr
    print(f"no-change rebuild took {time.monotonic() - started:.2f} s")


@pytest.mark.parametrize("stage", ["train", "serve"])
def test_exported_requirements_reproduce_the_recorded_versions(
    project: Path, record: dict[str, Any], tmp_path: Path, stage: str
) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(mreg("deps", "iris-rf:1", "--stage", stage, cwd=project).stdout)
    venv = tmp_path / "venv"
    uv = [sys.executable, "-m", "uv"]
    subprocess.run([*uv, "venv", "--quiet", "--python", sys.executable, str(venv)], check=True)
    python = str(venv / "bin" / "python")
    subprocess.run([*uv, "pip", "install", "--quiet", "--python", python, "-r", str(requirements)], check=True)
    listed = subprocess.run(
        [*uv, "pip", "freeze", "--python", python], capture_output=True, text=True, check=True
    ).stdout
    installed = set()
    for line in listed.splitlines():
        name, _, version = line.strip().partition("==")
        installed.add(f"{canonicalize_name(name)}=={version}")
    assert installed == set(record["packages"]["shared"]) | set(record["packages"][stage])


def test_deps_formats(project: Path, record: dict[str, Any]) -> None:
    python_env = mreg("deps", "iris-rf:1", "--format", "python-env", cwd=project).stdout
    assert f'python: "{record["python"]}"' in python_env
    assert '  - "fastapi==0.109.0"' in python_env
    conda = mreg("deps", "iris-rf:1", "--stage", "train", "--format", "conda", cwd=project).stdout
    assert f'  - "python={record["python"]}"' in conda
    assert '      - "pandas==2.1.4"' in conda
    assert "fastapi" not in conda
