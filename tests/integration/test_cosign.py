"""mreg's attestations as cosign reads them: real `registry:2` on 127.0.0.1 (anonymous, htpasswd Basic, and
token auth with a token service of the test's own), a one-file image pushed there by the engine, statements
signed with ECDSA P-256 keys made here, and the real `cosign verify-attestation` (offline: key-based, no
transparency log). Without cosign the tests fail under CI."""

from __future__ import annotations

import base64
import datetime
import hashlib
import http.server
import json
import os
import re
import shutil
import subprocess
import tarfile
import threading
import time
import traceback
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from mreg.errors import EngineError, NotFoundError
from mreg.provenance._keys import load_signing_key
from mreg.provenance.dsse import sign_envelope
from mreg.provenance.oci import OCI_MANIFEST, push_attestation
from mreg.provenance.statement import PAYLOAD_TYPE, build_statement
from tests.support import free_port, wait_http
from tests.support.keys import write_key
from tests.support.registries import htpasswd_registry

pytestmark = pytest.mark.docker

COSIGN_TIMEOUT = 120
USER, PASSWORD = "mreg", "pw-cosign-5d21e7"
# bcrypt of PASSWORD for registry:2's htpasswd auth, made once with Python's crypt module
HTPASSWD = f"{USER}:$2b$12$VRWKIAwztBAM7X8HffFvUOp0kFGzketWyrJWM1EqJeLyaxCTfE3ie\n"
SECRETS = (PASSWORD, base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode())


@pytest.fixture(scope="session")
def cosign() -> str:
    """The cosign executable; a skip without it, a failure under CI."""
    path = shutil.which("cosign")
    if path is None:
        message = "cosign is not installed (apt-get install -y -t trixie cosign)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture
def docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This test's own Docker configuration (empty), for mreg, docker and cosign alike."""
    directory = tmp_path / "docker-config"
    directory.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(directory))
    return directory


def tool_env(tmp_path: Path) -> dict[str, str]:
    """The environment of cosign and docker: this test's Docker configuration and home, no cosign settings
    of the caller's (another repository for signatures, Docker media types)."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {key: value for key, value in os.environ.items() if not key.startswith(("COSIGN_", "SIGSTORE_", "TUF_"))}
    return {**env, "HOME": str(home)}


def docker(*args: str, tmp_path: Path, stdin: str | None = None) -> str:
    result = subprocess.run(
        ["docker", *args], input=stdin, capture_output=True, text=True, check=False, timeout=300, env=tool_env(tmp_path)
    )
    assert result.returncode == 0, f"docker {args[0]} failed: {result.stderr}"
    return result.stdout


def pushed_image(registry: str, name: str, tmp_path: Path) -> str:
    """A new one-file image (`docker import`, no build) pushed to `registry`: `REGISTRY/NAME@sha256:...`."""
    tree = tmp_path / "image.tar"
    content = tmp_path / "hello"
    content.write_text(f"hello {uuid.uuid4()}\n")  # every image its own digest, so its own attestations
    with tarfile.open(tree, "w") as tar:
        tar.add(content, arcname="hello")
    ref = f"{registry}/{name}:{uuid.uuid4().hex[:12]}"
    docker("import", str(tree), ref, tmp_path=tmp_path)
    try:
        output = docker("push", ref, tmp_path=tmp_path)
    finally:
        docker("image", "rm", ref, tmp_path=tmp_path)
    digest = re.search(r"digest: (sha256:[0-9a-f]{64})", output)
    assert digest is not None, output
    return f"{registry}/{name}@{digest[1]}"


def envelope_for(image: str, key: Path) -> dict[str, Any]:
    """An in-toto statement naming the image's digest among mreg's other subjects, signed with `key`."""
    digest = image.split("@")[1]
    subjects = [("record", "sha256:" + hashlib.sha256(image.encode()).hexdigest()), ("image/serve", digest)]
    predicate = {"buildDefinition": {"buildType": "test"}, "runDetails": {"metadata": {"mreg_actor": str(key)}}}
    statement = build_statement(subjects=subjects, predicate=predicate)
    return sign_envelope(statement, PAYLOAD_TYPE, load_signing_key(key, None))


def verify(
    cosign: str, image: str, public_key: Path, tmp_path: Path, *, kind: str = "slsaprovenance1"
) -> subprocess.CompletedProcess[str]:
    argv = [cosign, "verify-attestation", "--key", str(public_key), "--insecure-ignore-tlog=true", "--type", kind]
    return subprocess.run(
        [*argv, image], capture_output=True, text=True, check=False, timeout=COSIGN_TIMEOUT, env=tool_env(tmp_path)
    )


def verified(cosign: str, image: str, public_key: Path, tmp_path: Path) -> list[Any]:
    """The envelopes cosign verified with `public_key` (one JSON document a line on its stdout)."""
    result = verify(cosign, image, public_key, tmp_path)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def attestation_layers(registry: str, image: str) -> list[dict[str, Any]]:
    name, digest = image.removeprefix(f"{registry}/").split("@")
    url = f"http://{registry}/v2/{name}/manifests/sha256-{digest.removeprefix('sha256:')}.att"
    response = requests.get(url, headers={"Accept": OCI_MANIFEST}, timeout=10)
    response.raise_for_status()
    layers: list[dict[str, Any]] = response.json()["layers"]
    return layers


def test_cosign_verifies_each_signers_attestation_and_no_other_key(
    registry: str, cosign: str, docker_config: Path, tmp_path: Path
) -> None:
    image = pushed_image(registry, "attested", tmp_path)
    keys = {name: write_key(tmp_path, name) for name in ("alice", "bob", "carol")}
    first = envelope_for(image, keys["alice"][0])

    ref = push_attestation(image, first)
    name, digest = image.split("@")
    assert re.fullmatch(rf"{re.escape(name)}:sha256-{digest[7:]}\.att@sha256:[0-9a-f]{{64}}", ref), ref
    assert verified(cosign, image, keys["alice"][1], tmp_path) == [first]
    by_url = verify(cosign, image, keys["alice"][1], tmp_path, kind="https://slsa.dev/provenance/v1")
    assert by_url.returncode == 0, by_url.stderr
    refused = verify(cosign, image, keys["bob"][1], tmp_path)
    assert refused.returncode != 0, refused.stdout
    assert "no matching attestations" in refused.stderr, refused.stderr

    second = envelope_for(image, keys["bob"][0])
    appended = push_attestation(image, second)
    assert appended != ref
    assert verified(cosign, image, keys["alice"][1], tmp_path) == [first]
    assert verified(cosign, image, keys["bob"][1], tmp_path) == [second]
    assert verify(cosign, image, keys["carol"][1], tmp_path).returncode != 0
    assert push_attestation(image, first) == appended  # already there: nothing written
    assert push_attestation(image, dict(reversed(list(second.items())))) == appended
    assert len(attestation_layers(registry, image)) == 2

    # cosign appends to mreg's manifest, and mreg to cosign's, and every signer still verifies
    (tmp_path / "predicate.json").write_text(json.dumps({"buildDefinition": {}, "runDetails": {}}))
    env = {**tool_env(tmp_path), "COSIGN_PASSWORD": ""}
    subprocess.run(
        [cosign, "generate-key-pair"], cwd=tmp_path, env=env, check=True, capture_output=True, timeout=COSIGN_TIMEOUT
    )
    attest = [cosign, "attest", "--key", "cosign.key", "--type", "slsaprovenance1", "--predicate", "predicate.json"]
    attested = subprocess.run(
        [*attest, "--tlog-upload=false", "--yes", image],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=COSIGN_TIMEOUT, check=False,
    )  # fmt: skip
    assert attested.returncode == 0, attested.stderr
    third = envelope_for(image, keys["carol"][0])
    push_attestation(image, third)
    assert len(attestation_layers(registry, image)) == 4
    assert verified(cosign, image, keys["alice"][1], tmp_path) == [first]
    assert verified(cosign, image, keys["carol"][1], tmp_path) == [third]
    assert len(verified(cosign, image, tmp_path / "cosign.pub", tmp_path)) == 1


def test_cosign_refuses_a_tampered_envelope(registry: str, cosign: str, docker_config: Path, tmp_path: Path) -> None:
    image = pushed_image(registry, "tampered", tmp_path)
    private, public = write_key(tmp_path, "alice")
    envelope = envelope_for(image, private)
    statement = json.loads(base64.b64decode(envelope["payload"]))
    statement["predicate"]["runDetails"]["metadata"]["mreg_actor"] = "mallory"
    forged = {**envelope, "payload": base64.b64encode(json.dumps(statement).encode()).decode()}

    push_attestation(image, forged)
    refused = verify(cosign, image, public, tmp_path)
    assert refused.returncode != 0, refused.stdout
    assert "no matching attestations" in refused.stderr, refused.stderr

    push_attestation(image, envelope)  # the genuine one beside it is the only one cosign accepts
    assert verified(cosign, image, public, tmp_path) == [envelope]


def _secret_free(error: BaseException, *secrets: str) -> None:
    text = "".join(traceback.format_exception(error)) + repr(error)
    for secret in (*SECRETS, *secrets):
        assert secret not in text, f"a credential leaked into the error: {text}"


def _login(registry: str, tmp_path: Path, password: str = PASSWORD) -> None:
    docker("login", "--username", USER, "--password-stdin", registry, tmp_path=tmp_path, stdin=password)


def _refusals(registry: str, image: str, envelope: dict[str, Any], docker_config: Path, tmp_path: Path) -> None:
    """Without credentials, and with a wrong password, the push fails naming the registry, showing neither."""
    (docker_config / "config.json").unlink()
    with pytest.raises(EngineError, match=rf"requires a login .* `docker login {re.escape(registry)}`") as anonymous:
        push_attestation(image, envelope)
    _secret_free(anonymous.value)
    wrong = "pw-wrong-0b7c44"
    auth = base64.b64encode(f"{USER}:{wrong}".encode()).decode()
    (docker_config / "config.json").write_text(json.dumps({"auths": {registry: {"auth": auth}}}))
    with pytest.raises(EngineError, match=rf"refused .* `docker login {re.escape(registry)}`") as refused:
        push_attestation(image, envelope)
    _secret_free(refused.value, wrong, auth)


@pytest.fixture
def basic_registry(docker_engine: None, tmp_path: Path) -> Iterator[str]:
    """registry:2 with htpasswd (Basic) authentication on 127.0.0.1; yields `127.0.0.1:PORT`."""
    auth = tmp_path / "auth"
    auth.mkdir()
    with htpasswd_registry(HTPASSWD, auth, realm="mreg-cosign") as address:
        yield address


def test_a_basic_auth_registry_gets_dockers_stored_credentials_and_no_error_shows_them(
    basic_registry: str, cosign: str, docker_config: Path, tmp_path: Path
) -> None:
    _login(basic_registry, tmp_path)
    image = pushed_image(basic_registry, "private", tmp_path)
    private, public = write_key(tmp_path, "alice")
    envelope = envelope_for(image, private)
    push_attestation(image, envelope)
    assert verified(cosign, image, public, tmp_path) == [envelope]
    _refusals(basic_registry, image, envelope, docker_config, tmp_path)


class TokenService:
    """A Docker registry token service on 127.0.0.1: answers `GET /token` given USER and PASSWORD (Basic)
    with an ES256 JWT granting the scopes asked for, signed by a key whose self-signed certificate the
    registry trusts (`x5c`)."""

    ISSUER, SERVICE = "mreg-test-issuer", "mreg-test-registry"

    def __init__(self, directory: Path) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mreg test token service")])
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.bundle = directory / "root.pem"
        self.bundle.write_bytes(self.certificate.public_bytes(serialization.Encoding.PEM))
        self.tokens: list[str] = []
        self.port = free_port()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def token(self, scopes: list[str]) -> str:
        access = []
        for scope in scopes:
            kind, name, actions = scope.split(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        claims = {
            "iss": self.ISSUER, "sub": USER, "aud": self.SERVICE, "exp": now + 600, "nbf": now - 60, "iat": now,
            "jti": uuid.uuid4().hex, "access": access,
        }  # fmt: skip
        der = base64.b64encode(self.certificate.public_bytes(serialization.Encoding.DER)).decode()
        header = {"typ": "JWT", "alg": "ES256", "x5c": [der]}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        r, s = decode_dss_signature(self.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
        token = f"{signing_input}.{_b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"
        self.tokens.append(token)
        return token

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        service = self
        expected = "Basic " + SECRETS[1]

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                query = urllib.parse.parse_qs(url.query)
                if url.path != "/token" or self.headers.get("Authorization") != expected:
                    self._answer(401, {"errors": [{"code": "UNAUTHORIZED"}]})
                    return
                token = service.token(query.get("scope", []))
                self._answer(200, {"token": token, "access_token": token, "expires_in": 600})

            def _answer(self, status: int, document: object) -> None:
                body = json.dumps(document).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

        return Handler


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.fixture
def token_registry(docker_engine: None, tmp_path: Path) -> Iterator[tuple[str, TokenService]]:
    """registry:2 with token (Bearer) authentication on 127.0.0.1 and its token service; yields
    (`127.0.0.1:PORT`, the service)."""
    from testcontainers.core.container import DockerContainer

    auth = tmp_path / "token-auth"
    auth.mkdir()
    service = TokenService(auth)
    service.thread.start()
    port = free_port()
    container = (
        DockerContainer("registry:2")
        .with_env("REGISTRY_HTTP_ADDR", f"127.0.0.1:{port}")
        .with_env("REGISTRY_AUTH", "token")
        .with_env("REGISTRY_AUTH_TOKEN_REALM", f"http://127.0.0.1:{service.port}/token")
        .with_env("REGISTRY_AUTH_TOKEN_SERVICE", TokenService.SERVICE)
        .with_env("REGISTRY_AUTH_TOKEN_ISSUER", TokenService.ISSUER)
        .with_env("REGISTRY_AUTH_TOKEN_ROOTCERTBUNDLE", "/auth/root.pem")
        .with_volume_mapping(str(auth), "/auth", "ro")
        .with_kwargs(network_mode="host")
    )
    try:
        with container:
            assert wait_http(f"http://127.0.0.1:{port}/v2/", timeout=30).status_code == 401
            yield f"127.0.0.1:{port}", service
    finally:
        service.server.shutdown()
        service.server.server_close()


def test_a_token_auth_registry_gets_a_bearer_token_for_dockers_stored_credentials(
    token_registry: tuple[str, TokenService], cosign: str, docker_config: Path, tmp_path: Path
) -> None:
    registry, service = token_registry
    _login(registry, tmp_path)
    image = pushed_image(registry, "team/private", tmp_path)
    private, public = write_key(tmp_path, "alice")
    envelope = envelope_for(image, private)
    issued = len(service.tokens)
    push_attestation(image, envelope)
    assert len(service.tokens) == issued + 1  # one token for the whole push
    assert verified(cosign, image, public, tmp_path) == [envelope]
    _refusals(registry, image, envelope, docker_config, tmp_path)
    _login(registry, tmp_path)
    with pytest.raises(NotFoundError, match="holds no such manifest in team/absent") as caught:
        push_attestation(image.replace("team/private", "team/absent"), envelope)  # after a token was issued
    _secret_free(caught.value, *service.tokens)
