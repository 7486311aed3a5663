"""`mreg export` through the real command line, on a registry in S3 (moto's server), no Docker needed."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tests.support import DIGESTS, copy_example, mreg, mreg_json, save_build


def s3_project_with_pushed_images(directory: Path, bucket: str) -> Path:
    project = copy_example(directory, stores=f"s3://{bucket}")
    save_build(project)
    build = json.loads((project / ".mreg" / "build.json").read_text())
    for stage, image in build["images"].items():  # as `mreg build --push` leaves them: pinned by digest
        image["image"] = f"registry.example.com/ml/iris-rf@{DIGESTS[stage]}"
    (project / ".mreg" / "build.json").write_text(json.dumps(build))
    return project


def test_export_writes_digest_pinned_manifests_for_a_version(tmp_path: Path, bucket: str) -> None:
    project = s3_project_with_pushed_images(tmp_path / "project", bucket)
    (project / "model.joblib").write_bytes(b"a model")
    record = mreg_json("register", "model.joblib", cwd=project)
    mreg(
        "export", "kubernetes", "iris-rf:1", "--namespace", "ml", "--health", "/healthz", "-o", "k8s.yaml", cwd=project
    )
    documents = {doc["kind"]: doc for doc in yaml.safe_load_all((project / "k8s.yaml").read_text())}
    assert sorted(documents) == ["ConfigMap", "Deployment", "Service"]
    pod = documents["Deployment"]["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == f"registry.example.com/ml/iris-rf@{DIGESTS['serve']}"
    assert pod["initContainers"][0]["image"] == pod["containers"][0]["image"]
    assert documents["Deployment"]["metadata"]["annotations"]["io.mreg/record-digest"] == record["digest"]
    env = {item["name"]: item["value"] for item in pod["containers"][0]["env"]}
    assert env["MREG_MODEL_SHA256"] == record["model"]["sha256"]
    assert env["MREG_MODEL_PATH"] == "/mnt/models/model.joblib"

    kserve = mreg("export", "kserve", "iris-rf", cwd=project).stdout
    assert [doc["kind"] for doc in yaml.safe_load_all(kserve)] == ["ConfigMap", "InferenceService"]


def test_export_refuses_a_model_a_cluster_cannot_reach(tmp_path: Path) -> None:
    project = copy_example(tmp_path / "project")
    save_build(project)
    (project / "model.joblib").write_bytes(b"a model")
    mreg("register", "model.joblib", cwd=project)
    result = mreg("export", "kubernetes", "iris-rf", cwd=project, check=False)
    assert result.returncode == 2
    assert "push it (`mreg build --push`)" in result.stderr
