"""A registry on S3 (moto's server over HTTP), through the real command line: concurrent registers,
aliases, pull, the Python API, and an S3 server that stops in the middle of an upload."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import boto3

from mreg import Registry
from tests.support import copy_example, mreg, mreg_json, save_build
from tests.support.faults import Proxy, up_again_after


def s3_project(directory: Path, bucket: str, *, endpoint_url: str | None = None) -> Path:
    """The bundled example with both stores on S3, and a saved build (no Docker needed to register)."""
    project = copy_example(directory)
    endpoint = f'endpoint_url = "{endpoint_url}"\n' if endpoint_url else ""
    text = (project / "registry.toml").read_text()
    text = text.replace(
        '[storage]\nuri = "file://.mreg/objects"\n', f'[storage]\nuri = "s3://{bucket}/objects"\n{endpoint}'
    )
    text = text.replace('[registry]\nuri = "file://.mreg/registry"\n', f'[registry]\nuri = "s3://{bucket}/registry"\n')
    (project / "registry.toml").write_text(text)
    save_build(project)
    (project / "model.joblib").write_bytes(os.urandom(256 * 1024))
    return project


def multipart_uploads(bucket: str) -> list[str]:
    return [upload["Key"] for upload in boto3.client("s3").list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


def test_32_registers_at_once_get_32_consecutive_versions(tmp_path: Path, bucket: str) -> None:
    project = s3_project(tmp_path / "project", bucket)
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "mreg", "register", "model.joblib", "--json"],
            cwd=project,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(32)
    ]
    outputs = [process.communicate(timeout=300) for process in processes]
    assert [process.returncode for process in processes] == [0] * 32, [err for _, err in outputs if err][:3]
    versions = sorted(json.loads(out)["version"] for out, _ in outputs)
    assert versions == list(range(1, 33))
    listed = mreg_json("list", "iris-rf", "--limit", "100", cwd=project)
    assert [record["version"] for record in listed] == list(range(32, 0, -1))
    [uri] = {record["model"]["uri"] for record in listed}  # the same bytes, stored once
    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix="objects/").get("Contents", [])]
    sha256 = hashlib.sha256((project / "model.joblib").read_bytes()).hexdigest()
    assert sorted(keys) == sorted([uri.removeprefix(f"s3://{bucket}/"), f"objects/sha256/{sha256}"])
    assert multipart_uploads(bucket) == []


def test_aliases_pull_and_the_python_api(tmp_path: Path, bucket: str) -> None:
    project = s3_project(tmp_path / "project", bucket)
    first = mreg_json("register", "model.joblib", cwd=project)
    (project / "model.joblib").write_bytes(b"a better model")
    second = mreg_json("register", "model.joblib", cwd=project)
    moved = mreg("alias", "iris-rf", "1", "production", cwd=project, env={"MREG_ACTOR": "alice"})
    assert moved.stdout == "iris-rf@production -> version 1\n"
    assert mreg_json("show", "iris-rf@production", cwd=project) == first
    mreg("alias", "iris-rf", "2", "production", cwd=project, env={"MREG_ACTOR": "bob"})
    history = mreg_json("alias", "iris-rf", "--history", "production", cwd=project)["history"]
    assert [(e["previous"], e["version"], e["by"]) for e in history] == [(None, 1, "alice"), (1, 2, "bob")]

    # a serving host: no spec, only the registry's URI
    elsewhere = tmp_path / "serving-host"
    elsewhere.mkdir()
    registry_uri = f"s3://{bucket}/registry"
    pulled = mreg(
        "--registry", registry_uri, "pull", "iris-rf@production", "-o", str(elsewhere), "--json", cwd=elsewhere
    )
    document = json.loads(pulled.stdout)
    assert document["version"] == 2
    assert document["serve_image"] == second["images"]["serve"]["image"]
    assert Path(document["path"]).read_bytes() == b"a better model"
    plain = mreg("--registry", registry_uri, "pull", "iris-rf:1", "-o", str(elsewhere / "v1.joblib"), cwd=elsewhere)
    assert plain.stdout == f"{first['images']['serve']['image']}\n"
    assert hashlib.sha256((elsewhere / "v1.joblib").read_bytes()).hexdigest() == first["model"]["sha256"]

    registry = Registry.open(registry_uri)
    record = registry.get("iris-rf@production")
    assert record.version == 2
    assert registry.download(record, elsewhere / "api.joblib").read_bytes() == b"a better model"

    deleted = mreg("alias", "iris-rf", "--delete", "production", cwd=project)
    assert deleted.stdout == "iris-rf@production -> nothing (deleted)\n"
    gone = mreg("show", "iris-rf@production", cwd=project, check=False)
    assert gone.returncode == 3
    assert "alias iris-rf@production was deleted" in gone.stderr


def test_a_tampered_model_object_is_refused_by_pull(tmp_path: Path, bucket: str) -> None:
    project = s3_project(tmp_path / "project", bucket)
    record = mreg_json("register", "model.joblib", cwd=project)
    key = record["model"]["uri"].removeprefix(f"s3://{bucket}/")
    boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=b"tampered")
    result = mreg("pull", "iris-rf", "-o", str(tmp_path), cwd=project, check=False)
    assert result.returncode == 6
    assert f"hashes to {hashlib.sha256(b'tampered').hexdigest()}, but the record says" in result.stderr
    assert not (tmp_path / "model.joblib").exists()


def test_s3_stopping_mid_upload_leaves_no_record_and_no_multipart_upload(
    tmp_path: Path, bucket: str, moto_endpoint: str
) -> None:
    port = int(moto_endpoint.rsplit(":", 1)[1])
    with Proxy(port, down_after_bytes=12 * 1024 * 1024) as proxy:
        proxy.on_down = up_again_after(proxy, 4.0)  # back after mreg gave up, while it is cleaning up
        project = s3_project(tmp_path / "project", bucket, endpoint_url=f"http://127.0.0.1:{proxy.port}")
        (project / "model.joblib").write_bytes(os.urandom(64 * 1024 * 1024))
        started = time.monotonic()
        env = {"AWS_MAX_ATTEMPTS": "2", "MREG_OUTAGE_WINDOW": "1"}  # give up on the upload within 4 s
        result = mreg("register", "model.joblib", cwd=project, check=False, env=env)
        elapsed = time.monotonic() - started
        assert result.returncode == 5, result.stderr
        assert result.stderr.splitlines()[-1].startswith(f"error: cannot upload to s3://{bucket}/objects/blobs/")
        assert "the S3 endpoint is unreachable" in result.stderr
        assert "Traceback" not in result.stderr
        assert elapsed < 60
        assert multipart_uploads(bucket) == []
        keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=bucket).get("Contents", [])]
        assert keys == []  # no object, no staging object, no record
        retried = mreg_json("register", "model.joblib", cwd=project)
        assert retried["version"] == 1
