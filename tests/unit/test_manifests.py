"""`mreg export kubernetes|kserve` manifests and the fetch script their pod runs.

Golden files, `kubernetes-validate --strict`, the InferenceService against a JSON Schema of the fields mreg
emits, the serving contract, refusals and hostile values, and the fetch script's SigV4 signing against
botocore's. The script against a real S3 server: tests/integration/test_fetch_script.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml

from mreg.deploy import _fetch
from mreg.deploy.manifests import fetch_script, kserve_manifest, kubernetes_manifests, label_value, object_name
from mreg.errors import InvalidInputError
from mreg.records import Record

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "data" / "golden" / "k8s"
UPDATE = os.environ.get("MREG_UPDATE_GOLDEN") == "1"
IMAGE = "registry.example.com/ml/iris-rf@sha256:" + "2" * 64
SHA = "a" * 64
K8S_VERSIONS = ["1.31.0", "1.37.0"]
"""An older Kubernetes version clusters still run, and the newest kubernetes-validate 1.37 knows."""


def make_record(
    *, name: str = "iris-rf", version: int = 3, image: str = IMAGE, uri: str = "s3://ml-models/objects/blobs/0f1e2d",
    filename: str = "model.joblib",
) -> Record:  # fmt: skip
    return Record.model_validate(
        {
            "name": name,
            "version": version,
            "model": {"uri": uri, "sha256": SHA, "size": 1234, "filename": filename},
            "images": {
                "train": {
                    "ref": "registry.example.com/ml/iris-rf:train-1",
                    "image": IMAGE,
                    "digest": "sha256:" + "1" * 64,
                },
                "serve": {
                    "ref": "registry.example.com/ml/iris-rf:serve-1",
                    "image": image,
                    "digest": "sha256:" + "2" * 64,
                },
            },
            "packages": {"shared": ["scikit-learn==1.3.2"], "train": [], "serve": ["fastapi==0.109.0"]},
            "python": "3.11.2",
            "spec_sha256": "c" * 64,
            "created_at": datetime(2024, 5, 1, 12, 0, tzinfo=UTC),
            "git": None,
        }
    ).sealed()


def file_manifests() -> str:
    return kubernetes_manifests(
        make_record(), namespace="ml", health="/healthz", endpoint_url="http://minio.storage.svc:9000"
    )


def directory_record(store: str | None = "s3://ml-models/objects") -> Record:
    record = make_record(uri="s3://ml-models/objects/blobs/9a8b7c", filename="iris-rf")
    model = record.model.model_copy(update={"kind": "directory", "files": 3, "store": store})
    return record.model_copy(update={"model": model, "digest": None}).sealed()


def directory_manifests() -> str:
    return kubernetes_manifests(directory_record(), replicas=2, port=9000)


def kserve() -> str:
    return kserve_manifest(make_record(), namespace="ml", health="/healthz")


def documents(text: str) -> list[dict[str, Any]]:
    return list(yaml.safe_load_all(text))


def by_kind(text: str) -> dict[str, dict[str, Any]]:
    return {document["kind"]: document for document in documents(text)}


def kube_value(text: str) -> str:
    """What a container sees for an env value or argument: Kubernetes turns `$$` into `$`."""
    return text.replace("$$", "$")


# -- golden files ----------------------------------------------------------------------------------------


def check_golden(name: str, text: str) -> None:
    """Compare with the golden file; with MREG_UPDATE_GOLDEN=1 a different file is rewritten and the test
    fails, so that a rewrite is never mistaken for a pass."""
    path = GOLDEN / name
    current = path.read_text() if path.exists() else None
    if text == current:
        return
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        pytest.fail(f"rewrote {path.relative_to(REPO)}; review it and rerun without MREG_UPDATE_GOLDEN")
    assert text == current, f"{name} changed; rerun with MREG_UPDATE_GOLDEN=1 if that is intended"


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("iris-rf.kubernetes.yaml", file_manifests),
        ("iris-rf-directory.kubernetes.yaml", directory_manifests),
        ("iris-rf.kserve.yaml", kserve),
    ],
)
def test_golden(name: str, make: Callable[[], str]) -> None:
    first = make()
    assert make() == first
    check_golden(name, first)


# -- validity --------------------------------------------------------------------------------------------


def kubernetes_validate(paths: list[Path], version: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "--strict", "-k", version, *map(str, paths)],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_core_kinds_pass_kubernetes_validate_strict(tmp_path: Path, version: str) -> None:
    paths = [tmp_path / "kubernetes.yaml", tmp_path / "directory.yaml", tmp_path / "kserve-configmap.yaml"]
    paths[0].write_text(file_manifests())
    paths[1].write_text(directory_manifests())
    paths[2].write_text(yaml.safe_dump(by_kind(kserve())["ConfigMap"]))  # the InferenceService is checked below
    result = kubernetes_validate(paths, version)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("passed for resource") == 3 + 3 + 1, result.stdout


def test_kubernetes_validate_catches_an_unknown_field(tmp_path: Path) -> None:
    deployment = by_kind(file_manifests())["Deployment"]
    deployment["spec"]["template"]["spec"]["initContainers"][0]["storageUri"] = "s3://elsewhere"
    path = tmp_path / "deployment.yaml"
    path.write_text(yaml.safe_dump(deployment))
    result = kubernetes_validate([path], K8S_VERSIONS[-1])
    assert result.returncode != 0
    assert "storageUri" in result.stdout + result.stderr


def inference_service_schema() -> dict[str, Any]:
    """A JSON Schema of the part of KServe's v1beta1 InferenceService that mreg emits (our own subset, not
    KServe's CRD): the KServe-specific fields are spelled out here; the pod fields the predictor embeds
    (PredictorSpec inlines a PodSpec) refer to Kubernetes' own strict definitions."""
    core = "https://kubernetes.io/api/_definitions.json#/$defs/io.k8s.api.core.v1."
    meta = "https://kubernetes.io/api/_definitions.json#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
    predictor = {
        "type": "object",
        "additionalProperties": False,
        "required": ["containers"],
        "properties": {
            "minReplicas": {"type": "integer", "minimum": 0},
            "maxReplicas": {"type": "integer", "minimum": 0},
            "containers": {
                "type": "array",
                "minItems": 1,
                "items": {"$ref": core + "Container"},
                "prefixItems": [
                    {
                        "allOf": [{"$ref": core + "Container"}],
                        "required": ["name"],
                        "properties": {"name": {"const": "kserve-container"}},
                    }
                ],
            },
            "initContainers": {"type": "array", "items": {"$ref": core + "Container"}},
            "volumes": {"type": "array", "items": {"$ref": core + "Volume"}},
            "securityContext": {"$ref": core + "PodSecurityContext"},
            "automountServiceAccountToken": {"type": "boolean"},
            "enableServiceLinks": {"type": "boolean"},
        },
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "additionalProperties": False,
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "serving.kserve.io/v1beta1"},
            "kind": {"const": "InferenceService"},
            "metadata": {
                "allOf": [
                    {"$ref": meta},
                    {
                        "required": ["name"],
                        "properties": {
                            "name": {"type": "string", "pattern": "^[a-z]([-a-z0-9]*[a-z0-9])?$", "maxLength": 53},
                            "annotations": {
                                "properties": {
                                    "serving.kserve.io/deploymentMode": {
                                        "enum": ["Serverless", "RawDeployment", "ModelMesh"]
                                    }
                                }
                            },
                        },
                    },
                ]
            },
            "spec": {
                "type": "object",
                "additionalProperties": False,
                "required": ["predictor"],
                "properties": {"predictor": predictor},
            },
        },
    }


def inference_service_errors(document: dict[str, Any]) -> list[str]:
    import jsonschema
    from referencing import Registry, Resource

    definitions = (
        resources.files("kubernetes_validate")
        / "kubernetes-json-schema"
        / f"v{K8S_VERSIONS[-1]}-local-strict"
        / "_definitions.json"
    )
    registry: Registry[Any] = Registry().with_resource(
        "https://kubernetes.io/api/_definitions.json", Resource.from_contents(json.loads(definitions.read_text()))
    )
    validator = jsonschema.Draft202012Validator(inference_service_schema(), registry=registry)
    return [error.message for error in validator.iter_errors(document)]


def test_inference_service_passes_the_schema_of_what_mreg_emits() -> None:
    assert inference_service_errors(by_kind(kserve())["InferenceService"]) == []


@pytest.mark.parametrize(
    ("sabotage", "expected"),
    [
        (lambda p: p["containers"][0].update(name="server"), "'kserve-container' was expected"),
        (lambda p: p["containers"][0].update(bogus=1), "'bogus' was unexpected"),
        (lambda p: p.update(storageUri="s3://x/y"), "'storageUri' was unexpected"),
    ],
)
def test_the_inference_service_schema_can_fail(sabotage: Callable[[dict[str, Any]], None], expected: str) -> None:
    document = by_kind(kserve())["InferenceService"]
    sabotage(document["spec"]["predictor"])
    assert any(expected in message for message in inference_service_errors(document))


# -- the pod ---------------------------------------------------------------------------------------------


def test_the_pod_fetches_and_verifies_before_the_server_starts() -> None:
    docs = by_kind(file_manifests())
    deployment, service, config_map = docs["Deployment"], docs["Service"], docs["ConfigMap"]
    pod = deployment["spec"]["template"]["spec"]
    [fetch], [server] = pod["initContainers"], pod["containers"]
    assert fetch["image"] == server["image"] == IMAGE
    assert fetch["command"] == ["python3", "/mreg/fetch.py"]
    assert fetch["args"] == [
        "--uri", "s3://ml-models/objects/blobs/0f1e2d", "--sha256", SHA, "--kind", "file",
        "--filename", "model.joblib", "--dest", "/mnt/models",
    ]  # fmt: skip
    assert fetch["envFrom"] == [{"secretRef": {"name": "mreg-storage", "optional": True}}]
    assert fetch["env"] == [{"name": "AWS_ENDPOINT_URL", "value": "http://minio.storage.svc:9000"}]
    assert "envFrom" not in server  # the server never sees the storage credentials
    assert {item["name"]: item["value"] for item in server["env"]} == {
        "MREG_MODEL_PATH": "/mnt/models/model.joblib",
        "MREG_MODEL_SHA256": SHA,
        "MREG_MODEL_NAME": "iris-rf",
        "MREG_MODEL_VERSION": "3",
        "PORT": "8080",
    }
    assert server["volumeMounts"] == [{"name": "model", "mountPath": "/mnt/models", "readOnly": True}]
    assert {"name": "model", "mountPath": "/mnt/models"} in fetch["volumeMounts"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert volumes["model"] == {"name": "model", "emptyDir": {}}
    assert volumes["fetch-script"]["configMap"]["name"] == config_map["metadata"]["name"]
    assert config_map["data"] == {"fetch.py": fetch_script()}
    assert fetch_script() == (REPO / "src" / "mreg" / "deploy" / "_fetch.py").read_text()
    assert server["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert server[probe]["httpGet"] == {"path": "/healthz", "port": 8080}
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert service["spec"]["selector"] == selector
    assert service["spec"]["ports"][0]["targetPort"] == "http"


def test_labels_and_annotations_name_the_version_and_its_digests() -> None:
    record = make_record()
    for document in documents(file_manifests()):
        metadata = document["metadata"]
        assert metadata["namespace"] == "ml"
        assert metadata["labels"]["io.mreg/model"] == metadata["labels"]["app.kubernetes.io/name"] == "iris-rf"
        assert metadata["labels"]["io.mreg/version"] == metadata["labels"]["app.kubernetes.io/version"] == "3"
        assert metadata["annotations"] == {
            "io.mreg/image": IMAGE,
            "io.mreg/model-sha256": SHA,
            "io.mreg/record-digest": record.digest,
        }


def test_a_directory_model_is_the_model_directory() -> None:
    pod = by_kind(directory_manifests())["Deployment"]["spec"]["template"]["spec"]
    [fetch], [server] = pod["initContainers"], pod["containers"]
    assert fetch["args"][fetch["args"].index("--kind") + 1] == "directory"
    assert fetch["args"][fetch["args"].index("--store") + 1] == "s3://ml-models/objects"
    assert "--filename" not in fetch["args"]
    assert "env" not in fetch
    env = {item["name"]: item["value"] for item in server["env"]}
    assert env["MREG_MODEL_PATH"] == "/mnt/models"
    assert env["PORT"] == "9000"
    assert server["readinessProbe"]["tcpSocket"] == {"port": 9000}
    assert "httpGet" not in server["livenessProbe"]


def test_kserve_predictor_runs_the_same_pod() -> None:
    docs = by_kind(kserve())
    service = docs["InferenceService"]
    predictor = service["spec"]["predictor"]
    assert service["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "RawDeployment"
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (1, 1)
    assert predictor["containers"][0]["name"] == "kserve-container"
    deployment_pod = by_kind(file_manifests())["Deployment"]["spec"]["template"]["spec"]
    assert predictor["initContainers"][0]["args"] == deployment_pod["initContainers"][0]["args"]
    assert predictor["volumes"][1]["configMap"]["name"] == docs["ConfigMap"]["metadata"]["name"]


# -- refusals and hostile values ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: kubernetes_manifests(make_record(image="sha256:" + "2" * 64)), "only in the local engine; push it"),
        (
            lambda: kubernetes_manifests(make_record(uri="file:///home/me/.mreg/objects/blobs/1")),
            "a cluster cannot read",
        ),
        (lambda: kserve_manifest(make_record(uri="gs://ml-models/objects/blobs/1")), "reads only S3"),
        (lambda: kubernetes_manifests(make_record(uri="s3://ml-models")), "is not an s3://BUCKET/KEY URI"),
        (lambda: kubernetes_manifests(make_record(filename="../../etc/passwd")), "is not a plain file name"),
        (lambda: kubernetes_manifests(make_record(filename="model\n.joblib")), "is not a plain file name"),
        (lambda: kubernetes_manifests(directory_record(store=None)), "its store URI is needed"),
        (lambda: kubernetes_manifests(directory_record(store="file:///x")), "a cluster cannot read"),
        (lambda: kubernetes_manifests(make_record(), port=0), "is not a TCP port"),
        (lambda: kubernetes_manifests(make_record(), replicas=0), "is not a positive integer"),
        (lambda: kubernetes_manifests(make_record(), health="healthz"), "is not an HTTP path"),
        (lambda: kubernetes_manifests(make_record(), health="/ok\n#x"), "is not an HTTP path"),
        (lambda: kubernetes_manifests(make_record(), credentials_secret="Storage Keys"), "is not a valid Secret"),
        (lambda: kubernetes_manifests(make_record(), endpoint_url="ftp://minio"), "is not an http:// or https://"),
        (lambda: kubernetes_manifests(make_record(), endpoint_url="http://key:secret@minio"), "no credentials"),
    ],
)
def test_refused(call: Callable[[], str], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call()


@pytest.mark.parametrize("namespace", ["ML", "a_b", "-ml", "ml-", "a.b", "x" * 64, "", "ml\nkind: Secret"])
def test_a_namespace_that_is_not_a_dns_label_is_refused(namespace: str) -> None:
    with pytest.raises(InvalidInputError, match="is not a DNS-1123 label"):
        kubernetes_manifests(make_record(), namespace=namespace)


def test_hostile_file_names_stay_values() -> None:
    hostile = 'it\'s "x": #y $(AWS_SECRET_ACCESS_KEY) ${HOME} [a] {b} &c *d !e %f @g `id` \u00e9.bin'
    text = kubernetes_manifests(make_record(filename=hostile), namespace="ml")
    docs = documents(text)
    assert [document["kind"] for document in docs] == ["ConfigMap", "Deployment", "Service"]
    pod = docs[1]["spec"]["template"]["spec"]
    args = pod["initContainers"][0]["args"]
    assert kube_value(args[args.index("--filename") + 1]) == hostile
    env = {item["name"]: item["value"] for item in pod["containers"][0]["env"]}
    assert env["MREG_MODEL_PATH"] == "/mnt/models/" + hostile.replace("$", "$$")
    assert kube_value(env["MREG_MODEL_PATH"]) == f"/mnt/models/{hostile}"
    assert text.isascii()


def test_object_names_are_dns_labels_of_bounded_length() -> None:
    assert object_name("iris-rf", 3) == "iris-rf-v3"
    assert object_name("resnet_50.v2", 12) == "resnet-50-v2-v12"
    assert object_name("3d-unet", 1) == "m-3d-unet-v1"
    long_a, long_b = "a" * 60 + "-one", "a" * 60 + "-two"
    names = {object_name(long_a, 7), object_name(long_b, 7), object_name(long_a, 8)}
    assert len(names) == 3
    assert all(len(name) == 63 and name[:1].isalpha() and name[-1].isalnum() for name in names)
    assert len(object_name(long_a, 7, 53)) == 53
    assert label_value(long_a) != label_value(long_b)
    assert all(len(label_value(name)) == 63 for name in (long_a, long_b))
    assert label_value("iris-rf") == "iris-rf"


def test_a_long_model_name_fits_kserve_and_kubernetes() -> None:
    name = "a" * 64
    kube = by_kind(kubernetes_manifests(make_record(name=name)))
    isvc = by_kind(kserve_manifest(make_record(name=name)))
    assert len(kube["Service"]["metadata"]["name"]) == 63
    assert len(isvc["InferenceService"]["metadata"]["name"]) == 53
    assert len(kube["Deployment"]["metadata"]["labels"]["io.mreg/model"]) == 63
    assert inference_service_errors(isvc["InferenceService"]) == []


# -- the fetch script: signing ---------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["objects/blobs/0f1e", "a b/c+d=e~f/\u00fc.bin", "x//y", "q?x#y%z&w"])
@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:9000", "https://s3.example.com/base/", None])
@pytest.mark.parametrize("token", [None, "session-token"])
def test_sigv4_matches_botocore(key: str, endpoint: str | None, token: str | None) -> None:
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    environ = {"AWS_REGION": "eu-west-1"} | ({"AWS_ENDPOINT_URL": endpoint} if endpoint else {})
    s3 = _fetch.S3(environ)
    url, host, path = s3.url("ml-models", key)
    ours = _fetch.signed_headers(
        host=host, path=path, region="eu-west-1", access_key="AKIDEXAMPLE", secret_key="wJalrXUtnFEMI/K7MDENG",
        session_token=token, now=1_714_564_800.0,
    )  # fmt: skip
    headers = {name: value for name, value in ours.items() if name != "authorization"}
    request = AWSRequest(method="GET", url=url, headers=headers)
    request.context["timestamp"] = ours["x-amz-date"]
    signer = S3SigV4Auth(Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG", token), "s3", "eu-west-1")
    canonical = signer.canonical_request(request)
    signature = signer.signature(signer.string_to_sign(request, canonical), request)
    assert ours["authorization"].endswith(f", Signature={signature}")
    assert url.endswith(path)


def test_virtual_hosted_and_path_style_urls() -> None:
    assert _fetch.S3({}).url("models", "a b")[0] == "https://models.s3.us-east-1.amazonaws.com/a%20b"
    assert _fetch.S3({"AWS_REGION": "eu-west-1"}).url("my.models", "k")[0] == (
        "https://s3.eu-west-1.amazonaws.com/my.models/k"
    )
    assert _fetch.S3({"AWS_ENDPOINT_URL": "http://minio:9000"}).url("models", "k+1")[0] == (
        "http://minio:9000/models/k%2B1"
    )
