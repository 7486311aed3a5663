"""The ONNX example end to end, and ONNX models the serve image cannot load."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support import REPO, free_port, mreg, mreg_json, serving
from tests.support.onnx_models import LINEAR_WEIGHTS, identity_model, linear_classifier_with_external_data

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = tmp_path_factory.mktemp("iris-onnx") / "iris-onnx"
    shutil.copytree(REPO / "examples" / "iris-onnx", project, ignore=shutil.ignore_patterns(".mreg", "out"))
    return project


@pytest.fixture(scope="module")
def built(project: Path) -> dict[str, Any]:
    result: dict[str, Any] = mreg_json("build", cwd=project)
    return result


@pytest.fixture(scope="module")
def model(project: Path, built: dict[str, Any]) -> Path:
    out = project / "out"
    out.mkdir()
    trained = subprocess.run(
        ["docker", "run", "--rm", "--network", "host", "-v", f"{out}:/out", built["train"]["image"]],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(trained.stdout.strip().splitlines()[-1])["opsets"]["ai.onnx"] == 17
    return out / "model.onnx"


@pytest.fixture(scope="module")
def record(project: Path, model: Path) -> dict[str, Any]:
    registered: dict[str, Any] = mreg_json("register", str(model), cwd=project)
    return registered


def test_onnx_model_is_checked_and_its_opsets_recorded(record: dict[str, Any]) -> None:
    assert record["onnx"]["opsets"]["ai.onnx"] == 17
    assert record["onnx"]["ir_version"] == 8
    assert record["onnx"]["producer"] == "skl2onnx 1.16.0"
    assert record["onnx"]["runtime"] == "onnxruntime 1.17.3"
    assert "onnxruntime==1.17.3" in record["packages"]["serve"]


@pytest.fixture
def served(record: dict[str, Any]) -> Iterator[str]:
    """The serve image answering with the registered model."""
    with serving(record, "/models/model.onnx") as url:
        yield url


def test_serve_image_predicts_with_onnxruntime(served: str) -> None:
    instances = [[5.1, 3.5, 1.4, 0.2], [6.4, 3.2, 4.5, 1.5], [6.7, 3.0, 5.2, 2.3]]
    response = requests.post(f"{served}/predict", json={"instances": instances}, timeout=10)
    assert response.status_code == 200
    assert response.json()["classes"] == ["setosa", "versicolor", "virginica"]


def test_an_opset_newer_than_the_serve_runtime_is_refused(project: Path, model: Path, tmp_path: Path) -> None:
    before = mreg_json("list", "iris-onnx", cwd=project) if (project / ".mreg" / "registry").exists() else []
    newer = identity_model(tmp_path / "newer.onnx", opset=23)
    result = mreg("register", str(newer), cwd=project, check=False)
    assert result.returncode == 2
    assert result.stderr.startswith(
        f"error: {newer}: the serve image's onnxruntime 1.17.3 cannot load this model (IR 8; opsets ai.onnx 23): "
    )
    assert "Opset 23 is under development" in result.stderr
    after = mreg_json("list", "iris-onnx", cwd=project) if (project / ".mreg" / "registry").exists() else []
    assert after == before
    supported = identity_model(tmp_path / "supported.onnx", opset=17)
    assert mreg_json("register", str(supported), cwd=project)["onnx"]["opsets"] == {"ai.onnx": 17}


def test_an_onnx_model_needs_a_runtime_in_the_serve_image(tmp_path: Path) -> None:
    (tmp_path / "registry.toml").write_text('[model]\nname = "no-runtime"\n[python]\nbase_image = "python:3.11-slim"\n')
    mreg("build", cwd=tmp_path)
    model = identity_model(tmp_path / "model.onnx", opset=17)
    result = mreg("register", str(model), cwd=tmp_path, check=False)
    assert result.returncode == 2
    assert result.stderr == (
        f"error: {model}: an ONNX model (IR 8; opsets ai.onnx 17), but the serve image has no onnxruntime; "
        "add onnxruntime to packages.serve.\n"
    )
    assert not (tmp_path / ".mreg" / "registry").exists()
    assert not (tmp_path / ".mreg" / "objects").exists()


@pytest.mark.parametrize("engine", ["docker"])
def test_the_classic_engine_runs_the_check_too(tmp_path: Path, engine: str) -> None:
    (tmp_path / "registry.toml").write_text('[model]\nname = "no-runtime"\n[python]\nbase_image = "python:3.11-slim"\n')
    mreg("build", "--engine", engine, cwd=tmp_path)
    model = identity_model(tmp_path / "model.onnx", opset=17)
    result = mreg("register", str(model), "--engine", engine, cwd=tmp_path, check=False)
    assert result.returncode == 2
    assert "the serve image has no onnxruntime" in result.stderr


def test_an_onnx_model_with_external_data_is_a_directory_model_checked_pulled_and_served(
    project: Path, built: dict[str, Any], tmp_path: Path
) -> None:
    directory = linear_classifier_with_external_data(tmp_path / "linear-external")
    assert (directory / "weights.bin").stat().st_size == 4 * (12 + 3)  # the weights are not in model.onnx
    record = mreg_json("register", str(directory), cwd=project)
    assert record["model"]["kind"] == "directory"
    assert record["model"]["files"] == 2
    assert record["onnx"]["path"] == "model.onnx"
    assert record["onnx"]["runtime"] == "onnxruntime 1.17.3"  # opened in the serve image, weights beside it

    pulled = tmp_path / "pulled"
    mreg("pull", f"iris-onnx:{record['version']}", "-o", str(pulled), cwd=project)
    assert (pulled / "weights.bin").read_bytes() == (directory / "weights.bin").read_bytes()

    port = free_port()
    served = json.loads(
        mreg("serve", f"iris-onnx:{record['version']}", "--port", str(port), "--detach", "--json", cwd=project).stdout
    )
    try:
        instances = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [1.0, 0.0, 0.0, 0.0]]
        response = requests.post(f"{served['url']}/predict", json={"instances": instances}, timeout=10)
        expected = [
            max(
                range(3),
                key=lambda c: (
                    sum(x * w[c] for x, w in zip(row, LINEAR_WEIGHTS, strict=True)) + (0.5 if c == 1 else 0.0)
                ),
            )
            for row in instances
        ]
        assert response.json()["predictions"] == expected
    finally:
        subprocess.run(["docker", "rm", "--force", served["container"]], capture_output=True, check=False)
