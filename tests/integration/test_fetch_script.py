"""The fetch script the exported pod's init container runs, against moto's S3 server over HTTP with SigV4
signature checking switched on: file and directory models land verified, and a tampered object, a wrong
key or a hostile manifest path fails with a one-line reason and leaves nothing at the destination.

The script runs as the text the ConfigMap ships, by a Python without site-packages (`-S`): the standard
library only, as in a serve image without mreg or boto3. No Docker needed.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mreg.deploy.manifests import fetch_script

SHA = "a" * 64


@dataclass
class S3Server:
    endpoint: str
    bucket: str
    key_id: str
    secret: str
    client: Any

    def put(self, key: str, data: bytes) -> str:
        self.client.put_object(Bucket=self.bucket, Key=key, Body=data)
        return f"s3://{self.bucket}/{key}"

    def put_blob(self, data: bytes) -> str:
        """Store bytes as mreg's S3 store does: a blob, and its content address naming it."""
        blob = f"objects/blobs/{uuid.uuid4().hex}"
        self.put(blob, data)
        sha256 = hashlib.sha256(data).hexdigest()
        index = {"sha256": sha256, "size": len(data), "blob": blob}
        self.put(f"objects/sha256/{sha256}", json.dumps(index).encode())
        return f"s3://{self.bucket}/{blob}"

    def put_directory(self, files: dict[str, bytes], *, executable: tuple[str, ...] = (), directories: tuple[str, ...] = ()) -> tuple[str, str]:  # fmt: skip
        """Store a directory model; (URI of its manifest, SHA-256 of the manifest bytes)."""
        listed = []
        for path, data in files.items():
            self.put_blob(data)
            sha256 = hashlib.sha256(data).hexdigest()
            listed.append({"path": path, "size": len(data), "sha256": sha256, "executable": path in executable})
        return self.put_manifest(
            {"schema_version": 1, "kind": "directory", "files": listed, "directories": list(directories)}
        )

    def put_manifest(self, manifest: dict[str, Any]) -> tuple[str, str]:
        data = json.dumps(manifest, sort_keys=True).encode()
        return self.put(f"objects/blobs/{uuid.uuid4().hex}", data), hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def s3(moto_endpoint: str) -> Iterator[S3Server]:
    """A bucket on moto's server, readable with an IAM user's key; while this module runs, moto checks every
    request's SigV4 signature (moto's own setting, for the whole process: restored afterwards)."""
    import boto3
    import requests

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NO_GCE_CHECK", "True")
        patch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        iam = boto3.client(
            "iam",
            endpoint_url=moto_endpoint,
            region_name="us-east-1",
            aws_access_key_id="setup",
            aws_secret_access_key="x",
        )
        user = f"mreg-fetch-{uuid.uuid4().hex[:8]}"
        iam.create_user(UserName=user)
        key = iam.create_access_key(UserName=user)["AccessKey"]
        policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
        iam.put_user_policy(UserName=user, PolicyName="s3", PolicyDocument=json.dumps(policy))
        previous = requests.post(f"{moto_endpoint}/moto-api/reset-auth", data=b"0", timeout=10).json()
        try:
            client = boto3.client(
                "s3",
                endpoint_url=moto_endpoint,
                region_name="us-east-1",
                aws_access_key_id=key["AccessKeyId"],
                aws_secret_access_key=key["SecretAccessKey"],
            )
            bucket = f"mreg-fetch-{uuid.uuid4().hex[:12]}"
            client.create_bucket(Bucket=bucket)
            yield S3Server(moto_endpoint, bucket, key["AccessKeyId"], key["SecretAccessKey"], client)
        finally:
            restore = previous["PREVIOUS_INITIAL_NO_AUTH_ACTION_COUNT"].encode()
            requests.post(f"{moto_endpoint}/moto-api/reset-auth", data=restore, timeout=10)


@pytest.fixture(scope="module")
def script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("configmap") / "fetch.py"
    path.write_text(fetch_script())
    return path


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    path = tmp_path / "models"
    path.mkdir()
    return path


def run_fetch(script: Path, s3: S3Server, *args: str, secret: str | None = None) -> subprocess.CompletedProcess[str]:
    """The shipped script text, by a Python without site-packages (-S): the standard library only."""
    env = {
        "PATH": os.environ["PATH"],
        "AWS_ACCESS_KEY_ID": s3.key_id,
        "AWS_SECRET_ACCESS_KEY": secret or s3.secret,
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": s3.endpoint,
    }
    return subprocess.run(
        [sys.executable, "-I", "-S", str(script), *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def refused(result: subprocess.CompletedProcess[str], reason: str) -> None:
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.startswith("mreg-fetch: error: ")
    assert result.stderr.count("\n") == 1, result.stderr
    assert reason in result.stderr, result.stderr


def tree(root: Path) -> dict[str, str]:
    """Every entry below `root`: relative path -> 'dir', or the file's mode and content."""
    listing = {}
    for path in sorted(root.rglob("*")):
        if path.is_dir():
            listing[str(path.relative_to(root))] = "dir"
        else:
            listing[str(path.relative_to(root))] = f"{path.stat().st_mode & 0o777:o} {path.read_bytes().decode()}"
    return listing


def test_fetch_a_file_model(script: Path, s3: S3Server, dest: Path) -> None:
    data = b"a model"
    uri = s3.put_blob(data)
    (dest / ".mreg-fetch-0123").write_bytes(b"left by a killed run")
    result = run_fetch(
        script, s3, "--uri", uri, "--sha256", hashlib.sha256(data).hexdigest(), "--kind", "file",
        "--filename", "model.joblib", "--dest", str(dest),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert tree(dest) == {"model.joblib": "644 a model"}


def test_a_key_needing_encoding_is_signed_right(script: Path, s3: S3Server, dest: Path) -> None:
    uri = s3.put("models/a b+c=d~e/\u00e9t\u00e9 (1).bin", b"odd key")
    result = run_fetch(
        script,
        s3,
        "--uri",
        uri,
        "--sha256",
        hashlib.sha256(b"odd key").hexdigest(),
        "--filename",
        "m",
        "--dest",
        str(dest),
    )
    assert result.returncode == 0, result.stderr
    assert tree(dest) == {"m": "644 odd key"}


def test_a_tampered_blob_fails_and_leaves_nothing(script: Path, s3: S3Server, dest: Path) -> None:
    uri = s3.put_blob(b"the registered model")
    s3.put(uri.removeprefix(f"s3://{s3.bucket}/"), b"other bytes")
    result = run_fetch(
        script, s3, "--uri", uri, "--sha256", hashlib.sha256(b"the registered model").hexdigest(),
        "--filename", "model.joblib", "--dest", str(dest),
    )  # fmt: skip
    refused(result, f"hashes to {hashlib.sha256(b'other bytes').hexdigest()}, but the record says")
    assert tree(dest) == {}


def test_a_wrong_secret_is_refused_by_the_server(script: Path, s3: S3Server, dest: Path) -> None:
    uri = s3.put_blob(b"secret model")
    result = run_fetch(
        script, s3, "--uri", uri, "--sha256", SHA, "--filename", "m", "--dest", str(dest), secret="not-the-secret"
    )
    refused(result, "HTTP 403 SignatureDoesNotMatch")
    assert tree(dest) == {}


def test_a_missing_object_is_named(script: Path, s3: S3Server, dest: Path) -> None:
    uri = f"s3://{s3.bucket}/objects/blobs/missing"
    refused(run_fetch(script, s3, "--uri", uri, "--sha256", SHA, "--filename", "m", "--dest", str(dest)), "HTTP 404")
    assert tree(dest) == {}


@pytest.mark.parametrize("filename", ["../model", "a/b", ".", ""])
def test_a_hostile_file_name_is_refused(script: Path, s3: S3Server, dest: Path, filename: str) -> None:
    uri = s3.put_blob(b"x")
    result = run_fetch(
        script, s3, "--uri", uri, "--sha256", hashlib.sha256(b"x").hexdigest(), "--filename", filename,
        "--dest", str(dest),
    )  # fmt: skip
    refused(result, "file name" if filename else "needs --filename")
    assert tree(dest.parent) == {"models": "dir"}


def test_fetch_a_directory_model(script: Path, s3: S3Server, dest: Path) -> None:
    files = {"config.json": b"{}", "weights/part-1.bin": b"one", "weights/part-2.bin": b"two", "run.sh": b"#!/bin/sh"}
    uri, sha256 = s3.put_directory(files, executable=("run.sh",), directories=("cache", "weights"))
    result = run_fetch(
        script, s3, "--uri", uri, "--sha256", sha256, "--kind", "directory", "--store", f"s3://{s3.bucket}/objects",
        "--dest", str(dest),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "4 files verified" in result.stdout
    assert tree(dest) == {
        "cache": "dir",
        "config.json": "644 {}",
        "run.sh": "755 #!/bin/sh",
        "weights": "dir",
        "weights/part-1.bin": "644 one",
        "weights/part-2.bin": "644 two",
    }


def test_a_tampered_file_of_a_directory_model_leaves_nothing(script: Path, s3: S3Server, dest: Path) -> None:
    uri, sha256 = s3.put_directory({"a.bin": b"first", "b/c.bin": b"second"})
    index = json.loads(
        s3.client.get_object(Bucket=s3.bucket, Key=f"objects/sha256/{hashlib.sha256(b'second').hexdigest()}")[
            "Body"
        ].read()
    )
    s3.put(index["blob"], b"SECOND")
    result = run_fetch(
        script, s3, "--uri", uri, "--sha256", sha256, "--kind", "directory", "--store", f"s3://{s3.bucket}/objects",
        "--dest", str(dest),
    )  # fmt: skip
    refused(result, "but the manifest says 6 bytes hashing to")
    assert tree(dest) == {}


def test_a_manifest_that_is_not_the_recorded_one_is_refused(script: Path, s3: S3Server, dest: Path) -> None:
    uri, _ = s3.put_directory({"a.bin": b"first"})
    result = run_fetch(
        script, s3, "--uri", uri, "--sha256", SHA, "--kind", "directory", "--store", f"s3://{s3.bucket}/objects",
        "--dest", str(dest),
    )  # fmt: skip
    refused(result, f"but the record says {SHA}")
    assert tree(dest) == {}


@pytest.mark.parametrize(
    ("paths", "reason"),
    [
        (["../x"], "is not a relative, normalised path"),
        (["/etc/cron.d/x"], "is not a relative, normalised path"),
        (["a/../../x"], "is not a relative, normalised path"),
        (["a\\..\\x"], "is not a relative, normalised path"),
        (["./a"], "is not a relative, normalised path"),
        (["a//b"], "is not a relative, normalised path"),
        (["a/"], "is not a relative, normalised path"),
        (["a\nb"], "is not a relative, normalised path"),
        (["a", "a/b"], "both as a file and as a directory"),
        (["a", "a"], "twice"),
    ],
)
def test_a_hostile_manifest_path_is_refused_before_anything_is_written(
    script: Path, s3: S3Server, dest: Path, paths: list[str], reason: str
) -> None:
    s3.put_blob(b"x")
    entry = {"size": 1, "sha256": hashlib.sha256(b"x").hexdigest(), "executable": False}
    uri, sha256 = s3.put_manifest(
        {
            "schema_version": 1,
            "kind": "directory",
            "files": [{"path": path, **entry} for path in paths],
            "directories": [],
        }
    )
    result = run_fetch(
        script, s3, "--uri", uri, "--sha256", sha256, "--kind", "directory", "--store", f"s3://{s3.bucket}/objects",
        "--dest", str(dest),
    )  # fmt: skip
    refused(result, reason)
    assert tree(dest.parent) == {"models": "dir"}
