"""Kubernetes and KServe manifests for one registered version, deterministic to the byte.

Both formats run the same pod: an `emptyDir` volume for the model; an init container of the serve image,
pinned by digest, that runs the fetch script (shipped in a ConfigMap) to download the model from S3 and
check it against the record's SHA-256; then the server container, the same image, with the volume mounted
read-only at `/mnt/models` and the serving contract's environment. The server never starts on bytes the
record does not vouch for.

Every value reaches the YAML through PyYAML's safe serializer (no text templating): hostile values stay
values. Names, the namespace, the health path and the endpoint are checked first.
"""

from __future__ import annotations

import hashlib
import re
import urllib.parse
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any, Literal

from mreg._grammar import parse_bucket_uri, parse_reference
from mreg.errors import InvalidInputError

if TYPE_CHECKING:
    from mreg.records import Record

ModelKind = Literal["file", "directory"]

MODEL_DIR = "/mnt/models"
SCRIPT_DIR = "/mreg"
SCRIPT_KEY = "fetch.py"
MODEL_VOLUME = "model"
SCRIPT_VOLUME = "fetch-script"
MAX_LABEL = 63
DEFAULT_CREDENTIALS = "mreg-storage"
"""The Secret whose keys become the fetch step's environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, ...)."""
KSERVE_MAX_NAME = 53
"""KServe names the predictor's Service `<name>-predictor`, which must fit in 63 characters."""

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_HTTP_PATH = re.compile(r"/[A-Za-z0-9\-._~!$&'()*+,;=:@%/?]*")


def fetch_script() -> str:
    """The source of the fetch script the pod's init container runs (`mreg/deploy/_fetch.py`)."""
    return resources.files("mreg.deploy").joinpath("_fetch.py").read_text(encoding="utf-8")


@dataclass(frozen=True)
class _Pod:
    """What both formats put in the pod, checked once."""

    name: str
    namespace: str | None
    labels: dict[str, str]
    annotations: dict[str, str]
    image: str
    fetch_args: list[str]
    endpoint_url: str | None
    credentials_secret: str
    env: list[tuple[str, str]]
    """The serving contract's variables: (name, value), sorted by name."""
    port: int
    health: str | None


def kubernetes_manifests(
    record: Record,
    *,
    namespace: str | None = None,
    replicas: int = 1,
    port: int = 8080,
    health: str | None = None,
    credentials_secret: str = DEFAULT_CREDENTIALS,
    endpoint_url: str | None = None,
) -> str:
    """A ConfigMap (the fetch script), a Deployment and a Service serving `record`, as multi-document YAML.

    `credentials_secret` names a Secret whose keys (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, ...)
    become the fetch step's environment; `endpoint_url` an S3-compatible endpoint. A directory model's files
    are found in the object store its record names.
    """
    pod = _pod(record, namespace, port, health, credentials_secret, endpoint_url, MAX_LABEL)
    _check_replicas(replicas)
    selector = {key: pod.labels[key] for key in ("io.mreg/model", "io.mreg/version")}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(pod, pod.name),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": pod.labels, "annotations": pod.annotations},
                "spec": _pod_spec(pod, server="server", port_name="http"),
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(pod, pod.name),
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": "http"}],
        },
    }
    return _dump([_config_map(pod), deployment, service])


def kserve_manifest(
    record: Record,
    *,
    namespace: str | None = None,
    replicas: int = 1,
    port: int = 8080,
    health: str | None = None,
    credentials_secret: str = DEFAULT_CREDENTIALS,
    endpoint_url: str | None = None,
) -> str:
    """A ConfigMap (the fetch script) and a KServe `InferenceService` (serving.kserve.io/v1beta1) whose
    predictor is the custom container pod, as multi-document YAML; arguments as `kubernetes_manifests`.

    The service asks for KServe's RawDeployment mode: a plain Deployment runs the pod as written, where
    Knative would need its init-container and emptyDir features enabled.
    """
    pod = _pod(record, namespace, port, health, credentials_secret, endpoint_url, KSERVE_MAX_NAME)
    _check_replicas(replicas)
    metadata = _metadata(pod, pod.name)
    metadata["annotations"] = {**pod.annotations, "serving.kserve.io/deploymentMode": "RawDeployment"}
    inference_service = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": metadata,
        "spec": {
            "predictor": {
                "minReplicas": replicas,
                "maxReplicas": replicas,
                **_pod_spec(pod, server="kserve-container", port_name="http1"),
            }
        },
    }
    return _dump([_config_map(pod), inference_service])


# -- checks ----------------------------------------------------------------------------------------------


def _pod(
    record: Record,
    namespace: str | None,
    port: int,
    health: str | None,
    credentials_secret: str,
    endpoint_url: str | None,
    max_name: int,
) -> _Pod:
    image = _serve_image(record)
    model_path, fetch_args = _model(record)
    digest = record.digest or record.content_digest()
    port = _check_port(port)
    return _Pod(
        name=object_name(record.name, record.version, max_name),
        namespace=_check_namespace(namespace),
        labels={
            "app.kubernetes.io/managed-by": "mreg",
            "app.kubernetes.io/name": label_value(record.name),
            "app.kubernetes.io/version": str(record.version),
            "io.mreg/model": label_value(record.name),
            "io.mreg/version": str(record.version),
        },
        annotations={
            "io.mreg/image": image,
            "io.mreg/model-sha256": record.model.sha256,
            "io.mreg/record-digest": digest,
        },
        image=image,
        fetch_args=fetch_args,
        endpoint_url=_check_endpoint(endpoint_url),
        credentials_secret=_check_secret(credentials_secret),
        env=[
            ("MREG_MODEL_NAME", record.name),
            ("MREG_MODEL_PATH", model_path),
            ("MREG_MODEL_SHA256", record.model.sha256),
            ("MREG_MODEL_VERSION", str(record.version)),
            ("PORT", str(port)),
        ],
        port=port,
        health=_check_health(health),
    )


def _serve_image(record: Record) -> str:
    """The serve image by registry digest; a local-only image cannot be pulled by a cluster."""
    image = record.images["serve"].image
    if "@" not in image:
        raise InvalidInputError(
            f"the serve image of {record.name}:{record.version} ({image}) is only in the local engine; "
            "push it (`mreg build --push`) and register again, so that a cluster can pull it by digest."
        )
    try:
        reference = parse_reference(image)
    except ValueError as exc:
        raise InvalidInputError(f"the serve image {image!r} of {record.name}:{record.version} {exc}.") from exc
    if reference.digest is None or not reference.digest.startswith("sha256:"):
        raise InvalidInputError(f"the serve image {image!r} of {record.name}:{record.version} has no sha256 digest.")
    return image


def _model(record: Record) -> tuple[str, list[str]]:
    """MREG_MODEL_PATH and the fetch script's arguments for the record's model."""
    uri, kind, store = record.model.uri, record.model.kind, record.model.store
    _check_s3(uri, f"the model of {record.name}:{record.version}", key_required=True)
    arguments = ["--uri", uri, "--sha256", record.model.sha256, "--kind", kind]
    if kind == "directory":
        if store is None:
            raise InvalidInputError(f"{record.name}:{record.version} is a directory model: its store URI is needed.")
        _check_s3(store, f"the object store of {record.name}:{record.version}", key_required=False)
        return MODEL_DIR, [*arguments, "--store", store, "--dest", MODEL_DIR]
    filename = _check_filename(record.model.filename, record)
    return f"{MODEL_DIR}/{filename}", [*arguments, "--filename", filename, "--dest", MODEL_DIR]


def _check_s3(uri: str, what: str, *, key_required: bool) -> None:
    if uri.startswith("file://"):
        raise InvalidInputError(
            f"{what} is {uri}, on this machine's disk, which a cluster cannot read; register it in an "
            'S3 store ([storage] uri = "s3://BUCKET/PREFIX") to export it.'
        )
    if uri.startswith("gs://"):
        raise InvalidInputError(
            f"{what} is {uri}; the pod's fetch step reads only S3, so register the model in an s3:// store to "
            "export it."
        )
    try:
        location = parse_bucket_uri(uri)
    except ValueError as exc:
        raise InvalidInputError(f"{what} {uri!r} {exc}.") from exc
    if location.scheme != "s3" or (key_required and not location.prefix):
        raise InvalidInputError(f"{what} {uri!r} is not an s3://BUCKET/KEY URI.")


def _check_filename(filename: str, record: Record) -> str:
    """The model's file name when it is one plain path component (it becomes part of MREG_MODEL_PATH)."""
    if (
        not filename
        or filename in {".", ".."}
        or "/" in filename
        or "\\" in filename
        or any(ord(character) < 32 or ord(character) == 127 for character in filename)
        or len(filename.encode()) > 255
    ):
        raise InvalidInputError(
            f"the model file name {filename!r} of {record.name}:{record.version} is not a plain file name."
        )
    return filename


def _check_namespace(namespace: str | None) -> str | None:
    if namespace is not None and (len(namespace) > MAX_LABEL or not _DNS_LABEL.fullmatch(namespace)):
        raise InvalidInputError(
            f"namespace {namespace!r} is not a DNS-1123 label (1-63 lower-case letters, digits and '-', "
            "starting and ending with a letter or digit)."
        )
    return namespace


def _check_secret(name: str) -> str:
    if len(name) > 253 or not _DNS_SUBDOMAIN.fullmatch(name):
        raise InvalidInputError(f"credentials secret {name!r} is not a valid Secret name (a DNS-1123 subdomain).")
    return name


def _check_endpoint(url: str | None) -> str | None:
    if url is None:
        return None
    parts = urllib.parse.urlsplit(url)
    if (
        parts.scheme not in {"http", "https"}
        or not parts.hostname
        or "@" in parts.netloc
        or parts.query
        or parts.fragment
        or any(character.isspace() or ord(character) < 32 for character in url)
    ):
        raise InvalidInputError(
            f"endpoint URL {url!r} is not an http:// or https:// URL of a host (no credentials, query or fragment)."
        )
    return url


def _check_port(port: int) -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise InvalidInputError(f"port {port!r} is not a TCP port (1-65535).")
    return port


def _check_health(path: str | None) -> str | None:
    if path is not None and (len(path) > 1024 or not _HTTP_PATH.fullmatch(path)):
        raise InvalidInputError(f"health path {path!r} is not an HTTP path starting with '/'.")
    return path


def _check_replicas(replicas: int) -> None:
    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
        raise InvalidInputError(f"replicas {replicas!r} is not a positive integer.")


# -- names -----------------------------------------------------------------------------------------------


def _shortened(text: str, limit: int) -> str:
    """`text`, or its first characters and a hash of all of it when it is longer than `limit`."""
    if len(text) <= limit:
        return text
    suffix = hashlib.sha256(text.encode()).hexdigest()[:8]
    return f"{text[: limit - len(suffix) - 1].rstrip('-._')}-{suffix}"


def object_name(model: str, version: int, limit: int = MAX_LABEL) -> str:
    """`<model>-v<version>` as a DNS-1035 label (what Service names must be) of at most `limit` characters:
    '.' and '_' become '-', a leading digit gets an `m-` prefix, a long name is cut and ends with a hash."""
    name = f"{model}-v{version}".replace(".", "-").replace("_", "-")
    if not name[0].isalpha():
        name = f"m-{name}"
    return _shortened(name, limit)


def label_value(text: str) -> str:
    """A label value for a model name (already `[a-z0-9._-]`, starting and ending alphanumeric): cut to 63
    characters with a hash suffix when longer."""
    return _shortened(text, MAX_LABEL)


# -- documents -------------------------------------------------------------------------------------------


def _metadata(pod: _Pod, name: str) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "labels": pod.labels, "annotations": pod.annotations}
    if pod.namespace is not None:
        metadata["namespace"] = pod.namespace
    return metadata


def _config_map(pod: _Pod) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(pod, f"{pod.name}-fetch"),
        "immutable": True,
        "data": {SCRIPT_KEY: fetch_script()},
    }


def _literal(value: str) -> str:
    """`value` with each `$` doubled: Kubernetes expands `$(NAME)` in `command`, `args` and env values, and
    turns `$$` back into `$`, so the container sees exactly `value`."""
    return value.replace("$", "$$")


def _probe(pod: _Pod, period: int, failures: int) -> dict[str, Any]:
    check: dict[str, Any] = (
        {"httpGet": {"path": pod.health, "port": pod.port}}
        if pod.health is not None
        else {"tcpSocket": {"port": pod.port}}
    )
    return {**check, "periodSeconds": period, "failureThreshold": failures, "timeoutSeconds": 5}


def _pod_spec(pod: _Pod, *, server: str, port_name: str) -> dict[str, Any]:
    fetch_env = [{"name": "AWS_ENDPOINT_URL", "value": _literal(pod.endpoint_url)}] if pod.endpoint_url else []
    fetch: dict[str, Any] = {
        "name": "fetch-model",
        "image": pod.image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["python3", f"{SCRIPT_DIR}/{SCRIPT_KEY}"],
        "args": [_literal(argument) for argument in pod.fetch_args],
        "envFrom": [{"secretRef": {"name": pod.credentials_secret, "optional": True}}],
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [
            {"name": MODEL_VOLUME, "mountPath": MODEL_DIR},
            {"name": SCRIPT_VOLUME, "mountPath": SCRIPT_DIR, "readOnly": True},
        ],
    }
    if fetch_env:
        fetch["env"] = fetch_env
    container = {
        "name": server,
        "image": pod.image,
        "imagePullPolicy": "IfNotPresent",
        "env": [{"name": name, "value": _literal(value)} for name, value in pod.env],
        "ports": [{"name": port_name, "containerPort": pod.port, "protocol": "TCP"}],
        "startupProbe": _probe(pod, period=5, failures=60),
        "readinessProbe": _probe(pod, period=5, failures=3),
        "livenessProbe": _probe(pod, period=10, failures=3),
        "securityContext": {"allowPrivilegeEscalation": False},
        "volumeMounts": [{"name": MODEL_VOLUME, "mountPath": MODEL_DIR, "readOnly": True}],
    }
    return {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
        "initContainers": [fetch],
        "containers": [container],
        "volumes": [
            {"name": MODEL_VOLUME, "emptyDir": {}},
            {"name": SCRIPT_VOLUME, "configMap": {"name": f"{pod.name}-fetch", "defaultMode": 0o444}},
        ],
    }


def _dump(documents: list[dict[str, Any]]) -> str:
    """The documents as YAML through PyYAML's safe serializer, keys sorted; multi-line text as literal blocks."""
    import yaml

    class Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True  # a shared dict (the labels) is written out each time, never as an anchor

    def represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)

    Dumper.add_representer(str, represent_str)
    return yaml.dump_all(
        documents,
        Dumper=Dumper,
        sort_keys=True,
        explicit_start=True,
        default_flow_style=False,
        allow_unicode=False,
        width=120,
        indent=2,
        line_break="\n",
    )
