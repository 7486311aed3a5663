"""`mreg verify` on real images in a real registry and a registry on S3: it passes on an intact version and
catches a changed model object, an edited record, a re-pushed tag and a deleted image."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path

import boto3
import pytest
import requests

from mreg.engine.buildx import BUILD_REF_RE
from tests.support import mreg, mreg_json
from tests.support.keys import write_key
from tests.support.projects import tiny_project

pytestmark = pytest.mark.docker

MANIFEST_TYPES = "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json"


def verify(project: Path, ref: str) -> tuple[int, list[dict[str, object]]]:
    options = ("--trusted-keys", str(project / "keys" / "ci.pub"), "--require-signature")
    result = mreg("verify", ref, "--json", *options, cwd=project, check=False)
    assert "Traceback" not in result.stderr
    return result.returncode, json.loads(result.stdout) if result.stdout else []


def failed(checks: list[dict[str, object]]) -> dict[object, object]:
    return {check["subject"]: check["detail"] for check in checks if not check["ok"]}


def test_verify_catches_every_kind_of_tampering(tmp_path: Path, registry: str, bucket: str) -> None:
    stores = f'[storage]\nuri = "s3://{bucket}/objects"\n[registry]\nuri = "s3://{bucket}/registry"\n'
    project = tiny_project(tmp_path / "project", repository=f"{registry}/verified", extra=stores)
    (project / "keys").mkdir()
    private, public = write_key(project / "keys", "ci")
    (tmp_path / "home").mkdir()
    cosign_env = {**os.environ, "HOME": str(tmp_path / "home")}
    built = mreg_json("build", "--push", cwd=project)
    s3 = boto3.client("s3")

    def register(content: bytes) -> dict[str, object]:
        (project / "model.bin").write_bytes(content)
        signed = mreg("register", "model.bin", "--json", cwd=project, env={"MREG_SIGNING_KEY": str(private)})
        record: dict[str, object] = json.loads(signed.stdout)
        return record

    intact = register(b"intact model")
    code, checks = verify(project, "tiny:1")
    assert code == 0
    assert [(c["subject"], c["ok"]) for c in checks] == [
        ("record", True),
        ("signature", True),
        ("sbom/serve", True),
        ("sbom/train", True),
        ("model", True),
        ("train", True),
        ("serve", True),
    ]
    assert "ok    serve" in mreg("verify", "tiny:1", cwd=project).stdout

    # the SBOM lists exactly what the skew guard read out of the real image, by purl
    sbom = json.loads(mreg("sbom", "tiny:1", "--stage", "serve", cwd=project).stdout)
    assert sbom["metadata"]["component"]["version"] == built["serve"]["digest"]
    pypi = {c["name"]: c["version"] for c in sbom["components"] if c.get("purl", "").startswith("pkg:pypi/")}
    recorded = intact["packages"]["shared"] + intact["packages"]["serve"]  # type: ignore[index]
    assert {f"{name}=={version}" for name, version in pypi.items()} == set(recorded)

    # the same signature pushed beside both images as cosign attestations, which cosign accepts offline
    attested = mreg("sign", "tiny:1", "--attest-images", cwd=project, env={"MREG_SIGNING_KEY": str(private)})
    assert "already signed" in attested.stderr
    assert attested.stderr.count("pushed the attestation") == 2
    cosign = shutil.which("cosign")
    assert cosign is not None, "cosign is not installed (apt-get install -y -t trixie cosign)"
    for stage in ("train", "serve"):
        argv = [cosign, "verify-attestation", "--key", str(public), "--insecure-ignore-tlog=true"]
        argv += ["--type", "slsaprovenance1", built[stage]["image"]]
        checked = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120, env=cosign_env)
        assert checked.returncode == 0, checked.stderr
        statement = json.loads(base64.b64decode(json.loads(checked.stdout.splitlines()[0])["payload"]))
        record_subject = {"name": "record", "digest": {"sha256": str(intact["digest"]).removeprefix("sha256:")}}
        assert record_subject in statement["subject"]
        base = statement["predicate"]["buildDefinition"]["resolvedDependencies"][0]
        assert base["name"] == "base-image"
        assert base["digest"]["sha256"]  # the local base image's ID, recorded by the build
        refs = statement["predicate"]["buildDefinition"]["internalParameters"]["buildkitRefs"]
        assert sorted(refs) == ["serve", "train"]  # one bake built both, each target its own BuildKit build
        assert all(BUILD_REF_RE.fullmatch(ref) and ref.startswith("default/") for ref in refs.values()), refs

    # a changed model object
    changed = register(b"model to be changed")
    uri = str(changed["model"]["uri"])  # type: ignore[index]
    s3.put_object(Bucket=bucket, Key=uri.removeprefix(f"s3://{bucket}/"), Body=b"model changed behind the registry")
    code, checks = verify(project, "tiny:2")
    assert code == 6
    assert set(failed(checks)) == {"model"}
    assert "the record says" in str(failed(checks)["model"])

    # an edited record: version 3 made to point at version 1's bytes
    register(b"model 3")
    key = "registry/models/tiny/versions/0000000003.json"
    record = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    record["model"] = json.loads(s3.get_object(Bucket=bucket, Key=key.replace("3.json", "1.json"))["Body"].read())[
        "model"
    ]
    s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(record).encode())
    edited = mreg("verify", "tiny:3", cwd=project, check=False)
    assert edited.returncode == 6
    assert "was changed after it was written" in edited.stderr

    # the train tag re-pushed with other content
    other = tmp_path / "other"
    other.mkdir()
    (other / "Dockerfile").write_text("FROM python:3.11-slim\nLABEL other=yes\n")
    subprocess.run(
        ["docker", "buildx", "build", "-q", "--tag", built["train"]["ref"], str(other)], check=True, capture_output=True
    )
    subprocess.run(["docker", "push", "-q", built["train"]["ref"]], check=True, capture_output=True)
    code, checks = verify(project, "tiny:1")
    assert code == 6
    assert set(failed(checks)) == {"train"}  # the signature still holds: it pins the digest the tag left
    assert "now points to sha256:" in str(failed(checks)["train"])

    # the serve image deleted from the registry
    name = built["serve"]["ref"].split("/", 1)[1].rsplit(":", 1)[0]
    deleted = requests.delete(f"http://{registry}/v2/{name}/manifests/{built['serve']['digest']}", timeout=10)
    assert deleted.status_code == 202
    code, checks = verify(project, "tiny:1")
    assert code == 6
    assert set(failed(checks)) == {"train", "serve"}
    assert str(failed(checks)["serve"]) == f"{built['serve']['image']} is gone in its registry"
