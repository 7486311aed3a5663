"""The pod `mreg export kubernetes` writes, run without a cluster: its init container and then its server
container, with the real Docker engine, in order, sharing the model volume, against the S3 store on moto's
server. The served model answers a prediction; a tampered blob fails the init step and the server never
starts. A directory model is fetched and served the same way.

A small kubelet stand-in reads the Deployment's pod spec and turns each container into `docker run`: an
`emptyDir` becomes a fresh host directory, the ConfigMap volume a directory holding the ConfigMap's data,
`readOnly` mounts `:ro`, `env` and the `envFrom` Secret the container's environment (passed by name, the
values through the docker CLI's own environment, never argv), `allowPrivilegeEscalation: false` and
`capabilities.drop` their Docker options. Containers share the host network (this engine has no bridge);
the one deviation from the manifest is HOST=127.0.0.1 for the server, so that it does not listen on every
interface of a shared machine.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from mreg.deploy.manifests import kubernetes_manifests
from mreg.records import Record
from tests.support import free_port, mreg, mreg_json, wait_http
from tests.support.projects import tiny_project

pytestmark = pytest.mark.docker

SERVER = '''"""A linear model behind HTTP, following mreg's serving contract (MREG_MODEL_PATH, PORT, ...)."""
import hashlib, json, os
from http.server import BaseHTTPRequestHandler, HTTPServer

path = os.environ["MREG_MODEL_PATH"]
if os.path.isdir(path):
    path = os.path.join(path, "weights", "linear.json")
else:
    with open(path, "rb") as model_file:
        assert hashlib.sha256(model_file.read()).hexdigest() == os.environ["MREG_MODEL_SHA256"]
with open(path) as model_file:
    MODEL = json.load(model_file)


class Handler(BaseHTTPRequestHandler):
    def answer(self, document, status=200):
        body = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path != "/healthz":
            return self.answer({"error": "not found"}, 404)
        names = ("MREG_MODEL_NAME", "MREG_MODEL_VERSION", "MREG_MODEL_PATH", "MREG_MODEL_SHA256")
        self.answer({name: os.environ[name] for name in names})

    def do_POST(self):
        rows = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["instances"]
        weights, bias = MODEL["weights"], MODEL["bias"]
        self.answer({"predictions": [sum(w * x for w, x in zip(weights, row)) + bias for row in rows]})


HTTPServer((os.environ.get("HOST", "0.0.0.0"), int(os.environ["PORT"])), Handler).serve_forever()
'''
MODEL = {"weights": [2.0, -1.0, 0.5], "bias": 1.0}
ROWS = [[1.0, 2.0, 4.0], [0.0, 0.0, 0.0]]
PREDICTIONS = [3.0, 1.0]
SUPPORTED_CONTAINER_FIELDS = {
    "name", "image", "imagePullPolicy", "command", "args", "env", "envFrom", "securityContext", "volumeMounts",
    "ports", "startupProbe", "readinessProbe", "livenessProbe",
}  # fmt: skip
SUPPORTED_POD_FIELDS = {
    "automountServiceAccountToken", "enableServiceLinks", "securityContext", "initContainers", "containers", "volumes",
}  # fmt: skip
"""What the stand-in understands (the first three need nothing from Docker); anything else fails the test."""


@dataclass
class Store:
    endpoint: str
    bucket: str
    credentials: dict[str, str]
    client: Any


@pytest.fixture(scope="module")
def store(moto_endpoint: str) -> Iterator[Store]:
    """A bucket on moto's S3 server, and boto3's environment pointed at it for this module (and for the
    mreg processes it starts)."""
    import boto3

    credentials = {
        "AWS_ACCESS_KEY_ID": "mreg-pod-key",
        "AWS_SECRET_ACCESS_KEY": "mreg-pod-secret",
        "AWS_REGION": "us-east-1",
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, value in {
            **credentials,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": moto_endpoint,
        }.items():
            patch.setenv(name, value)
        patch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        patch.setenv("NO_GCE_CHECK", "True")
        patch.delenv("AWS_PROFILE", raising=False)
        client = boto3.client("s3", endpoint_url=moto_endpoint)
        bucket = f"mreg-pod-{uuid.uuid4().hex[:12]}"
        client.create_bucket(Bucket=bucket)
        yield Store(moto_endpoint, bucket, credentials, client)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, registry: str, store: Store) -> Path:
    """A tiny project whose serve image runs SERVER, built and pushed; both stores on the S3 bucket."""
    stores = f'[storage]\nuri = "s3://{store.bucket}/objects"\n[registry]\nuri = "s3://{store.bucket}/registry"\n'
    project = tiny_project(tmp_path_factory.mktemp("pod") / "project", repository=f"{registry}/pod", extra=stores)
    (project / "app.py").write_text(SERVER)
    mreg("build", "--push", "--json", cwd=project)
    return project


def register(project: Path, model: dict[str, Any]) -> Record:
    (project / "model.json").write_bytes(json.dumps(model).encode())
    return Record.model_validate(mreg_json("register", "model.json", cwd=project))


def docs_of(text: str) -> dict[str, dict[str, Any]]:
    return {document["kind"]: document for document in yaml.safe_load_all(text)}


def kube_value(text: str) -> str:
    """What Kubernetes gives a container for an env value or argument with no `$(NAME)` reference."""
    assert "$(" not in text.replace("$$", "")
    return text.replace("$$", "$")


@dataclass
class PodRun:
    started: list[str] = field(default_factory=list)
    """Names of the containers started, in order."""
    failed: subprocess.CompletedProcess[str] | None = None
    """The init container that failed (and stopped the pod), if any."""
    volumes: dict[str, Path] = field(default_factory=dict)
    server_names: list[str] = field(default_factory=list)


class Kubelet:
    """Runs one pod spec with `docker run`, the way a kubelet would: init containers one after the other,
    each to completion, and the server containers only when all of them succeeded."""

    def __init__(self, pod: dict[str, Any], config_maps: dict[str, dict[str, Any]], secrets: dict[str, dict[str, str]], workdir: Path) -> None:  # fmt: skip
        assert set(pod) <= SUPPORTED_POD_FIELDS, set(pod) - SUPPORTED_POD_FIELDS
        self.pod, self.config_maps, self.secrets, self.workdir = pod, config_maps, secrets, workdir
        self.prefix = f"mreg-pod-{uuid.uuid4().hex[:8]}"

    def _volumes(self) -> dict[str, Path]:
        paths = {}
        for volume in self.pod["volumes"]:
            path = self.workdir / volume["name"]
            path.mkdir()
            if "emptyDir" in volume:
                path.chmod(0o777)  # what the kubelet gives an emptyDir
            else:
                source = volume["configMap"]
                for key, value in self.config_maps[source["name"]]["data"].items():
                    (path / key).write_text(value)
                    (path / key).chmod(source["defaultMode"])
            paths[volume["name"]] = path
        return paths

    def _argv(self, container: dict[str, Any], volumes: dict[str, Path], extra_env: dict[str, str]) -> tuple[list[str], dict[str, str]]:  # fmt: skip
        """`docker run` options and image/command for a container, and the environment the CLI passes on."""
        assert set(container) <= SUPPORTED_CONTAINER_FIELDS, set(container) - SUPPORTED_CONTAINER_FIELDS
        environment: dict[str, str] = {}
        for source in container.get("envFrom", []):
            reference = source["secretRef"]
            if reference["name"] in self.secrets or not reference.get("optional"):
                environment.update(self.secrets[reference["name"]])
        environment.update({item["name"]: kube_value(item["value"]) for item in container.get("env", [])})
        environment.update(extra_env)
        argv = ["--name", f"{self.prefix}-{container['name']}", "--network", "host", "--pull", "missing"]
        for mount in container["volumeMounts"]:
            argv += ["-v", f"{volumes[mount['name']]}:{mount['mountPath']}" + (":ro" if mount.get("readOnly") else "")]
        security = container.get("securityContext", {})
        if security.get("allowPrivilegeEscalation") is False:
            argv += ["--security-opt", "no-new-privileges"]
        for capability in security.get("capabilities", {}).get("drop", []):
            argv += ["--cap-drop", capability]
        for name in sorted(environment):
            argv += ["-e", name]  # the value comes from the docker CLI's environment, never from argv
        command = [kube_value(part) for part in container.get("command", [])]
        if command:
            argv += ["--entrypoint", command[0]]
        argv += [container["image"], *command[1:], *(kube_value(arg) for arg in container.get("args", []))]
        return argv, {**os.environ, **environment}

    @contextmanager
    def run(self, server_env: dict[str, str]) -> Iterator[PodRun]:
        result = PodRun(volumes=self._volumes())
        try:
            for container in self.pod["initContainers"]:
                argv, environment = self._argv(container, result.volumes, {})
                result.started.append(container["name"])
                done = subprocess.run(
                    ["docker", "run", "--rm", *argv],
                    env=environment,
                    capture_output=True,
                    text=True,
                    timeout=300,
                    check=False,
                )
                if done.returncode != 0:
                    result.failed = done
                    break
            else:
                for container in self.pod["containers"]:
                    argv, environment = self._argv(container, result.volumes, server_env)
                    result.started.append(container["name"])
                    result.server_names.append(f"{self.prefix}-{container['name']}")
                    subprocess.run(["docker", "run", "-d", *argv], env=environment, check=True, capture_output=True)
            yield result
        finally:
            everything = [*self.pod["initContainers"], *self.pod["containers"]]
            names = [f"{self.prefix}-{container['name']}" for container in everything]
            subprocess.run(["docker", "rm", "-f", *names], capture_output=True, check=False)

    def wait_ready(self, container: dict[str, Any], *, timeout: float = 60.0) -> None:
        """Wait as the readiness probe would (on 127.0.0.1: the containers share the host network); a
        server that never gets ready fails the test with its logs."""
        try:
            probe_until_ready(container["readinessProbe"], timeout)
        except TimeoutError as exc:
            logs = subprocess.run(
                ["docker", "logs", f"{self.prefix}-{container['name']}"], capture_output=True, text=True, check=False
            )
            pytest.fail(f"{exc}\n{logs.stdout}{logs.stderr}")

    def containers(self) -> list[str]:
        """Names of this pod's containers the engine knows, running or not."""
        listed = subprocess.run(
            ["docker", "ps", "-a", "--filter", f"name={self.prefix}", "--format", "{{.Names}}"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        return listed.stdout.split()


def probe_until_ready(probe: dict[str, Any], timeout: float) -> None:
    if "httpGet" in probe:
        wait_http(f"http://127.0.0.1:{probe['httpGet']['port']}{probe['httpGet']['path']}", timeout=timeout)
        return
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", probe["tcpSocket"]["port"]), timeout=2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on port {probe['tcpSocket']['port']} after {timeout} s") from None
            time.sleep(0.2)


def pod_of(text: str, store: Store, tmp_path: Path) -> tuple[Kubelet, dict[str, Any]]:
    docs = docs_of(text)
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    config_maps = {docs["ConfigMap"]["metadata"]["name"]: docs["ConfigMap"]}
    [fetch] = pod["initContainers"]
    secret = fetch["envFrom"][0]["secretRef"]["name"]
    return Kubelet(pod, config_maps, {secret: store.credentials}, tmp_path), pod["containers"][0]


def test_the_exported_pod_fetches_verifies_and_serves_the_registered_model(
    project: Path, store: Store, tmp_path: Path
) -> None:
    record = register(project, MODEL)
    port = free_port()
    text = kubernetes_manifests(record, port=port, health="/healthz", endpoint_url=store.endpoint)
    kubelet, server = pod_of(text, store, tmp_path)
    with kubelet.run({"HOST": "127.0.0.1"}) as pod:
        assert pod.failed is None, pod.failed.stderr if pod.failed else ""
        assert pod.started == ["fetch-model", "server"]
        model = pod.volumes["model"] / "model.json"
        assert hashlib.sha256(model.read_bytes()).hexdigest() == record.model.sha256
        assert sorted(path.name for path in pod.volumes["model"].iterdir()) == ["model.json"]
        kubelet.wait_ready(server)
        health = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=10).json()
        assert health == {
            "MREG_MODEL_NAME": "tiny",
            "MREG_MODEL_VERSION": str(record.version),
            "MREG_MODEL_PATH": "/mnt/models/model.json",
            "MREG_MODEL_SHA256": record.model.sha256,
        }
        answer = requests.post(f"http://127.0.0.1:{port}/predict", json={"instances": ROWS}, timeout=10)
        assert answer.json() == {"predictions": PREDICTIONS}
        written = subprocess.run(
            ["docker", "exec", pod.server_names[0], "sh", "-c", "echo x > /mnt/models/x"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert written.returncode != 0
        assert "Read-only file system" in written.stderr


def test_a_tampered_blob_fails_the_init_step_and_the_server_never_starts(
    project: Path, store: Store, tmp_path: Path
) -> None:
    record = register(project, {"weights": [1.0, 1.0, 1.0], "bias": 0.0})
    key = record.model.uri.removeprefix(f"s3://{store.bucket}/")
    store.client.put_object(Bucket=store.bucket, Key=key, Body=b'{"weights": [0, 0, 0], "bias": 42}')
    text = kubernetes_manifests(record, port=free_port(), health="/healthz", endpoint_url=store.endpoint)
    kubelet, _ = pod_of(text, store, tmp_path)
    with kubelet.run({"HOST": "127.0.0.1"}) as pod:
        assert pod.failed is not None
        assert pod.failed.returncode == 1
        assert f"but the record says {record.model.sha256}" in pod.failed.stderr
        assert pod.started == ["fetch-model"]
        assert list(pod.volumes["model"].iterdir()) == []
        assert kubelet.containers() == []


def test_a_directory_model_is_fetched_into_the_volume_and_served(project: Path, store: Store, tmp_path: Path) -> None:
    """Laid out as the S3 store keeps a directory model: a manifest object, blobs, content addresses."""
    files = {"weights/linear.json": json.dumps(MODEL).encode(), "README": b"a linear model\n"}
    listed = []
    for path, data in files.items():
        sha256, blob = hashlib.sha256(data).hexdigest(), f"objects/blobs/{uuid.uuid4().hex}"
        store.client.put_object(Bucket=store.bucket, Key=blob, Body=data)
        index = json.dumps({"sha256": sha256, "size": len(data), "blob": blob}).encode()
        store.client.put_object(Bucket=store.bucket, Key=f"objects/sha256/{sha256}", Body=index)
        listed.append({"path": path, "size": len(data), "sha256": sha256, "executable": False})
    manifest = json.dumps({"schema_version": 1, "kind": "directory", "files": listed, "directories": []}).encode()
    manifest_key = f"objects/blobs/{uuid.uuid4().hex}"
    store.client.put_object(Bucket=store.bucket, Key=manifest_key, Body=manifest)
    registered = register(project, MODEL)
    model = registered.model.model_copy(
        update={
            "uri": f"s3://{store.bucket}/{manifest_key}",
            "sha256": hashlib.sha256(manifest).hexdigest(),
            "kind": "directory",
            "files": len(files),
            "store": f"s3://{store.bucket}/objects",
        }
    )
    record = registered.model_copy(update={"model": model, "digest": None}).sealed()
    port = free_port()
    text = kubernetes_manifests(record, port=port, endpoint_url=store.endpoint)
    kubelet, server = pod_of(text, store, tmp_path)
    with kubelet.run({"HOST": "127.0.0.1"}) as pod:
        assert pod.failed is None, pod.failed.stderr if pod.failed else ""
        assert sorted(str(p.relative_to(pod.volumes["model"])) for p in pod.volumes["model"].rglob("*")) == [
            "README", "weights", "weights/linear.json",
        ]  # fmt: skip
        kubelet.wait_ready(server)
        assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=10).json()["MREG_MODEL_PATH"] == "/mnt/models"
        answer = requests.post(f"http://127.0.0.1:{port}/predict", json={"instances": ROWS}, timeout=10)
        assert answer.json() == {"predictions": PREDICTIONS}
