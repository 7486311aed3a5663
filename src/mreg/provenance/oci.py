"""Cosign-compatible attestations in an image's registry, over the registry's HTTP API (standard library only).

An attestation is a DSSE envelope of an in-toto statement about an image, kept as cosign keeps it in a
registry without the referrers API: an OCI image manifest tagged `sha256-<hex>.att` in the image's
repository (`<hex>`: the image's manifest digest), one layer per envelope (media type
`application/vnd.dsse.envelope.v1+json`, annotated with the statement's predicate type and cosign's empty
signature annotation), and a config blob that lists the layers. `cosign verify-attestation` reads it and
`cosign attest` extends it. A new envelope is appended to the layers already there (other signers', cosign's
own); an envelope already there is not pushed again.

A registry on a loopback host (`localhost`, `127.0.0.0/8`, which Docker treats as insecure by default) is
spoken to over plain HTTP, any other over HTTPS. Credentials come from Docker's configuration
(`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`): a credential helper (`credHelpers`,
`credsStore`) or an `auths` entry, sent only as the registry's `WWW-Authenticate` challenge asks (Basic, or a
Bearer token from its realm). No message or exception holds a credential or a token.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import http.client
import ipaddress
import json
import os
import random
import re
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any

from mreg._grammar import SHA256_DIGEST_RE, parse_reference, registry_host
from mreg.errors import EngineError, InvalidInputError, NotFoundError
from mreg.provenance.statement import PAYLOAD_TYPE

__all__ = [
    "ENVELOPE_MEDIA_TYPE",
    "ImageTarget",
    "appended_manifest",
    "attestation_tag",
    "docker_credentials",
    "envelope_blob",
    "layer_descriptor",
    "parse_challenge",
    "pinned_image",
    "push_attestation",
]

ENVELOPE_MEDIA_TYPE = "application/vnd.dsse.envelope.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
"""cosign's signature annotation: empty on an attestation, whose signatures are inside the envelope."""
PREDICATE_ANNOTATION = "predicateType"
MAX_LAYERS = 1000
"""cosign reads at most this many attestations of one image."""
MAX_DOCUMENT = 4 * 1024 * 1024
"""Largest manifest, token answer or error body read into memory (distribution's manifest limit)."""
ATTEMPTS = 5
TIMEOUT = 30.0
EPOCH = "0001-01-01T00:00:00Z"
"""The time cosign writes in an attestation's config (it records none unless asked)."""
_ACCEPT = ", ".join(
    (
        OCI_MANIFEST,
        DOCKER_MANIFEST,
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    )
)
_DOCKER_HUB = "docker.io"
_DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
_DOCKER_HUB_API = "registry-1.docker.io"
_DOCKER_HUB_SERVER = "https://index.docker.io/v1/"
"""The server name Docker keeps Docker Hub's credentials under."""
_HELPER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_TOKEN_RE = re.compile(r"[\x21-\x7e]{1,16384}")
_ERROR_CODE_RE = re.compile(r"[A-Z][A-Z_]{0,63}")
_SCHEME_RE = re.compile(r"\s*([A-Za-z][A-Za-z0-9_-]*)(?:\s+|$)")
_PARAM_RE = re.compile(r'\s*([A-Za-z][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^",\s]*))\s*(?:,|$)')


@dataclass(frozen=True)
class ImageTarget:
    """An image pinned by its manifest digest, and where its registry's API finds it."""

    name: str
    """The image's name as given (`127.0.0.1:5000/tiny`), for references."""
    registry: str
    """`host[:port]`, or `docker.io` for Docker Hub."""
    repository: str
    """The repository's path in the registry's API (`library/python` on Docker Hub)."""
    digest: str

    def __str__(self) -> str:
        return f"{self.name}@{self.digest}"

    @property
    def plain_http(self) -> bool:
        """Whether the registry is on a loopback host, spoken to over plain HTTP."""
        return is_loopback(self.registry)

    @property
    def base_url(self) -> str:
        """`http://127.0.0.1:5000`, `https://registry-1.docker.io`."""
        host = _DOCKER_HUB_API if self.registry == _DOCKER_HUB else self.registry
        return f"{'http' if self.plain_http else 'https'}://{host}"

    @property
    def attestation_ref(self) -> str:
        """The reference of the image's attestation tag: `NAME:sha256-<hex>.att`."""
        return f"{self.name}:{attestation_tag(self.digest)}"


def is_loopback(netloc: str) -> bool:
    """Whether `host[:port]` is `localhost` or a loopback address (127.0.0.0/8)."""
    host = netloc.rsplit(":", 1)[0] if ":" in netloc else netloc
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def pinned_image(image: str) -> ImageTarget:
    """The image `image` names, which must be pinned by a sha256 manifest digest (`NAME[:TAG]@sha256:<hex>`,
    the tag ignored); InvalidInputError otherwise."""
    try:
        reference = parse_reference(image)
    except ValueError as exc:
        raise InvalidInputError(f"cannot attach an attestation to {image[:200]!r}: it {exc}.") from exc
    if reference.digest is None or SHA256_DIGEST_RE.fullmatch(reference.digest) is None:
        raise InvalidInputError(
            f"cannot attach an attestation to {image}: it is not pinned by a sha256 manifest digest "
            "(NAME@sha256:<64 lower-case hex digits>), and an attestation is about one exact image."
        )
    registry = registry_host(reference.name)
    explicit = reference.name.startswith(f"{registry}/")
    path = reference.name.removeprefix(f"{registry}/") if explicit else reference.name
    if registry in _DOCKER_HUB_ALIASES:
        registry = _DOCKER_HUB
        path = path if "/" in path else f"library/{path}"
    return ImageTarget(reference.name, registry, path, reference.digest)


def attestation_tag(digest: str) -> str:
    """The tag cosign keeps an image's attestations under: `sha256-<hex>.att`."""
    if SHA256_DIGEST_RE.fullmatch(digest) is None:
        raise ValueError(f"{digest!r} is not sha256:<64 lower-case hex digits>")
    return f"sha256-{digest.removeprefix('sha256:')}.att"


def envelope_blob(envelope: Mapping[str, Any], image: ImageTarget) -> tuple[bytes, str]:
    """The envelope as an attestation layer (canonical JSON, so that the same envelope is always the same
    blob) and its statement's predicate type. InvalidInputError when cosign could not accept it for `image`
    whatever the key: not a DSSE envelope of an in-toto statement, or a statement that does not name the
    image's digest among its subjects."""

    def refuse(why: str) -> InvalidInputError:
        return InvalidInputError(f"cannot attach the attestation to {image}: {why}.")

    if not isinstance(envelope, Mapping) or set(envelope) != {"payloadType", "payload", "signatures"}:
        raise refuse("it is not a DSSE envelope (payloadType, payload and signatures)")
    if envelope["payloadType"] != PAYLOAD_TYPE:
        raise refuse(f"its payloadType is {str(envelope['payloadType'])[:80]!r}, not {PAYLOAD_TYPE}")
    signatures = envelope["signatures"]
    if (
        not isinstance(signatures, list)
        or not signatures
        or not all(_is_signature(signature) for signature in signatures)
    ):
        raise refuse("its signatures are not a non-empty list of {keyid (a string), sig (a string)}")
    try:
        statement = json.loads(base64.b64decode(envelope["payload"], validate=True))
    except (TypeError, ValueError, binascii.Error):
        raise refuse("its payload is not standard base64 of a JSON statement") from None
    if not isinstance(statement, dict) or not isinstance(statement.get("predicateType"), str):
        raise refuse("its payload is not an in-toto statement with a predicateType")
    predicate_type: str = statement["predicateType"]
    if not predicate_type or len(predicate_type) > 1024 or not predicate_type.isprintable():
        raise refuse("its statement's predicateType is not a printable string of at most 1024 characters")
    hex_digest = image.digest.removeprefix("sha256:")
    subjects = statement.get("subject")
    if not isinstance(subjects, list) or not any(
        isinstance(subject, dict)
        and isinstance(subject.get("digest"), dict)
        and subject["digest"].get("sha256") == hex_digest
        for subject in subjects
    ):
        raise refuse("its statement names no subject with that digest, so cosign would refuse it")
    canonical = {
        "payloadType": envelope["payloadType"],
        "payload": envelope["payload"],
        "signatures": [dict(signature) for signature in signatures],
    }
    return _json(canonical, sort_keys=True), predicate_type


def _is_signature(signature: object) -> bool:
    return (
        isinstance(signature, Mapping)
        and set(signature) <= {"keyid", "sig"}
        and isinstance(signature.get("sig"), str)
        and isinstance(signature.get("keyid", ""), str)
    )


def layer_descriptor(blob: bytes, predicate_type: str) -> dict[str, Any]:
    """The manifest's descriptor of an envelope layer, annotated as cosign annotates it."""
    return {
        "mediaType": ENVELOPE_MEDIA_TYPE,
        "size": len(blob),
        "digest": _digest(blob),
        "annotations": {SIGNATURE_ANNOTATION: "", PREDICATE_ANNOTATION: predicate_type},
    }


def appended_manifest(existing: Mapping[str, Any] | None, layer: Mapping[str, Any]) -> tuple[dict[str, Any], bytes]:
    """The attestation manifest with `layer` after the layers of `existing` (None: the image has none yet),
    and its config blob. The other fields of `existing` and its media types are kept."""
    if existing is None:
        base: dict[str, Any] = {"schemaVersion": 2, "mediaType": OCI_MANIFEST}
        layers: list[Any] = []
        config_type = OCI_CONFIG
    else:
        base, layers, config_type = dict(existing), list(existing["layers"]), existing["config"]["mediaType"]
    layers.append(dict(layer))
    config = config_blob(layers)
    descriptor = {"mediaType": config_type, "size": len(config), "digest": _digest(config)}
    return {**base, "config": descriptor, "layers": layers}, config


def config_blob(layers: Sequence[Mapping[str, Any]]) -> bytes:
    """The config of an attestation image as cosign writes it: each layer is its own diff ID (layers are
    stored uncompressed), with one empty history entry per layer."""
    return _json(
        {
            "architecture": "",
            "created": EPOCH,
            "history": [{"created": EPOCH} for _ in layers],
            "os": "",
            "rootfs": {"type": "layers", "diff_ids": [layer["digest"] for layer in layers]},
            "config": {},
        }
    )


def attestation_manifest(body: bytes, content_type: str, image: ImageTarget) -> dict[str, Any]:
    """The attestation manifest an image's `.att` tag holds, checked; EngineError when the tag holds
    anything else (mreg never replaces it)."""
    refusal = EngineError(
        f"cannot attach the attestation to {image}: the tag {attestation_tag(image.digest)} holds something "
        "other than an image manifest of attestation layers, and mreg does not replace it."
    )
    try:
        manifest = json.loads(body)
    except ValueError:
        raise refusal from None
    if not isinstance(manifest, dict) or manifest.get("schemaVersion") != 2:
        raise refusal
    media_type = manifest.get("mediaType", content_type.partition(";")[0].strip() or OCI_MANIFEST)
    config, layers = manifest.get("config"), manifest.get("layers")
    if (
        media_type not in {OCI_MANIFEST, DOCKER_MANIFEST}
        or not isinstance(config, dict)
        or not isinstance(config.get("mediaType"), str)
        or not isinstance(layers, list)
        or not all(isinstance(layer, dict) and isinstance(layer.get("digest"), str) for layer in layers)
    ):
        raise refusal
    if len(layers) >= MAX_LAYERS:
        raise EngineError(
            f"cannot attach the attestation to {image}: it already has {len(layers)} attestations, and cosign "
            f"reads at most {MAX_LAYERS}."
        )
    return {**manifest, "mediaType": media_type}


def holds_layer(manifest: Mapping[str, Any], digest: str) -> bool:
    """Whether an attestation manifest has a layer with `digest`."""
    return any(layer.get("digest") == digest for layer in manifest["layers"])


def push_attestation(image: str, envelope: Mapping[str, Any], *, timeout: float = TIMEOUT) -> str:
    """Attach `envelope` (a DSSE envelope of an in-toto statement that names the image's digest) to `image`
    (`NAME@sha256:<hex>`) in its registry, as cosign attaches attestations; return the attestation tag's
    reference pinned by its manifest digest, `NAME:sha256-<hex>.att@sha256:<digest>`.

    An envelope the tag already holds is not pushed again. The registry has no conditional write: the tag is
    read, its new manifest written only when a last look finds the tag unchanged, and read again to check
    the envelope is there (else all again, up to ATTEMPTS times). A writer whose manifest lands between
    another's last look and its write, and who read the tag before that write, still replaces it without
    the other's envelope: pushing that envelope again restores it. `timeout` bounds each request.

    Raises InvalidInputError (a reference or envelope cosign could not use), NotFoundError (the registry has
    no such image) or EngineError (the registry failed, refused the credentials, or the tag holds something
    else).
    """
    target = pinned_image(image)
    blob, predicate_type = envelope_blob(envelope, target)
    layer = layer_descriptor(blob, predicate_type)
    tag = attestation_tag(target.digest)
    registry = _Registry(target, timeout)
    registry.login()
    if registry.manifest_digest(target.digest) is None:
        raise NotFoundError(
            f"cannot attach the attestation to {target}: its registry holds no such manifest in {target.repository}."
        )
    for attempt in range(1, ATTEMPTS + 1):
        current = registry.manifest(tag)
        existing = None if current is None else attestation_manifest(current.body, current.content_type, target)
        if current is not None and existing is not None and holds_layer(existing, layer["digest"]):
            return f"{target.attestation_ref}@{current.digest}"
        manifest, config = appended_manifest(existing, layer)
        registry.upload_blob(blob)
        registry.upload_blob(config)
        if registry.manifest_digest(tag) == (None if current is None else current.digest):
            registry.put_manifest(tag, _json(manifest), manifest["mediaType"])
            written = registry.manifest(tag)
            if written is not None:
                found = attestation_manifest(written.body, written.content_type, target)
                if holds_layer(found, layer["digest"]):
                    return f"{target.attestation_ref}@{written.digest}"
        time.sleep(random.uniform(0.05, 0.25) * attempt)  # noqa: S311 - jitter, not a secret
    raise EngineError(
        f"cannot attach the attestation to {target}: its tag {tag} changed under mreg {ATTEMPTS} times in a row "
        "(other signers attaching at the same moment); push it again."
    )


def parse_challenge(header: str) -> tuple[str, dict[str, str]] | None:
    """(lower-case scheme, parameters) of a `WWW-Authenticate` challenge (`Bearer realm="...",service="..."`),
    None when the header is not one."""
    scheme = _SCHEME_RE.match(header)
    if scheme is None:
        return None
    params: dict[str, str] = {}
    position = scheme.end()
    while position < len(header):
        match = _PARAM_RE.match(header, position)
        if match is None or match.end() == position:
            return None
        quoted, bare = match[2], match[3]
        params[match[1].lower()] = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else bare
        position = match.end()
    return scheme[1].lower(), params


def docker_credentials(registry: str) -> tuple[str, str] | None:
    """(user, password) Docker's configuration holds for `registry` (`host[:port]`, or `docker.io`): from its
    credential helper (`credHelpers`, else `credsStore`), else from its `auths` entry (base64 `auth`, or
    `username` and `password`); None when it holds none. No message names a credential."""
    path = Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker") / "config.json"
    try:
        config = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise InvalidInputError(f"{path}: cannot read Docker's configuration ({exc.strerror or exc}).") from None
    except ValueError:  # the exception would hold the document, credentials and all
        raise InvalidInputError(f"{path}: Docker's configuration is not valid JSON.") from None
    if not isinstance(config, dict):
        raise InvalidInputError(f"{path}: Docker's configuration is not a JSON object.")
    hub = registry == _DOCKER_HUB
    names = _DOCKER_HUB_ALIASES if hub else frozenset({registry.lower()})
    helpers = _section(config, "credHelpers")
    helper = next((value for key, value in helpers.items() if _server_host(key) in names), None)
    helper = helper or config.get("credsStore")
    if helper:
        return _helper_credentials(path, helper, _DOCKER_HUB_SERVER if hub else registry)
    for key, entry in _section(config, "auths").items():
        if _server_host(key) in names and isinstance(entry, dict):
            credentials = _entry_credentials(path, registry, entry)
            if credentials is not None:
                return credentials
    return None


def _section(config: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    section = config.get(name)
    return section if isinstance(section, dict) else {}


def _server_host(server: str) -> str:
    """The host of a Docker config key (`https://host/v1/`, `host:port`)."""
    return server.lower().removeprefix("https://").removeprefix("http://").split("/", 1)[0]


def _entry_credentials(path: Path, registry: str, entry: Mapping[str, Any]) -> tuple[str, str] | None:
    auth = entry.get("auth")
    if isinstance(auth, str) and auth:
        try:
            user, colon, password = base64.b64decode(auth, validate=True).decode().partition(":")
        except (ValueError, binascii.Error):
            raise InvalidInputError(f"{path}: the `auth` of {registry} is not base64 of USER:PASSWORD.") from None
        if not colon or not user:
            raise InvalidInputError(f"{path}: the `auth` of {registry} is not base64 of USER:PASSWORD.")
        return user, password
    if isinstance(entry.get("username"), str) and isinstance(entry.get("password"), str):
        return entry["username"], entry["password"]
    if entry.get("identitytoken"):
        raise _identity_token(registry)
    return None


def _identity_token(registry: str) -> InvalidInputError:
    return InvalidInputError(
        f"Docker's credentials for {registry} are an identity token (an OAuth refresh token), which mreg does "
        "not use; log in with a user name and a password or access token."
    )


def _helper_credentials(path: Path, helper: object, server: str) -> tuple[str, str] | None:
    """What `docker-credential-HELPER get` answers for `server`; None when it has nothing for it."""
    if not isinstance(helper, str) or _HELPER_RE.fullmatch(helper) is None:
        raise InvalidInputError(f"{path}: the credential helper of {server} is not a valid helper name.")
    program = f"docker-credential-{helper}"
    try:
        result = subprocess.run(
            [program, "get"], input=server, capture_output=True, text=True, timeout=TIMEOUT, check=False
        )
    except FileNotFoundError:
        raise InvalidInputError(f"{path}: names the credential helper {program}, which is not installed.") from None
    except subprocess.TimeoutExpired:  # its partial output could hold a secret
        raise EngineError(f"the credential helper {program} did not answer for {server} in {TIMEOUT:g} s.") from None
    if result.returncode != 0:
        if "credentials not found" in result.stdout.lower():
            return None
        raise EngineError(f"the credential helper {program} failed for {server} (exit code {result.returncode}).")
    try:
        answer = json.loads(result.stdout)
        user, secret = answer["Username"], answer["Secret"]
    except (ValueError, LookupError, TypeError):
        raise EngineError(f"the credential helper {program} gave no Username and Secret for {server}.") from None
    if not isinstance(user, str) or not isinstance(secret, str):
        raise EngineError(f"the credential helper {program} gave no Username and Secret for {server}.")
    if user == "<token>":
        raise _identity_token(server)
    return user, secret


@dataclass(frozen=True)
class _Response:
    status: int
    headers: Message
    body: bytes


@dataclass(frozen=True)
class _Manifest:
    digest: str
    body: bytes
    content_type: str


class _Registry:
    """The registry of one image, spoken to with the authorization its challenge asked for."""

    def __init__(self, image: ImageTarget, timeout: float) -> None:
        self.image = image
        self.timeout = timeout
        handlers: list[urllib.request.BaseHandler] = [_HttpRedirects()]
        if image.plain_http:
            handlers.append(urllib.request.ProxyHandler({}))  # a proxy could not reach this machine's loopback
        self._opener = urllib.request.build_opener(*handlers)
        self._authorization: str | None = None
        self._api = f"{image.base_url}/v2/{image.repository}"

    def _fail(self, why: str) -> EngineError:
        return EngineError(f"cannot attach the attestation to {self.image}: {why}.")

    def _send(
        self,
        method: str,
        url: str,
        *,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        authorization: str | None = None,
    ) -> _Response:
        """One request; any HTTP status is answered, a failure to connect raises EngineError. The
        authorization is never sent on to where a redirect points."""
        request = urllib.request.Request(url, data=body, headers=dict(headers or {}), method=method)  # noqa: S310 - http(s) only
        credential = authorization or self._authorization
        if credential is not None:
            request.add_unredirected_header("Authorization", credential)
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                return _Response(response.status, response.headers, self._read(response))
        except urllib.error.HTTPError as exc:
            with exc:
                return _Response(exc.code, exc.headers, self._read(exc))
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            reason = str(getattr(exc, "reason", exc)) or type(exc).__name__
            host = urllib.parse.urlsplit(url).netloc
            raise self._fail(f"{host} cannot be reached ({reason})") from exc

    def _read(self, response: Any) -> bytes:
        body: bytes = response.read(MAX_DOCUMENT + 1)
        if len(body) > MAX_DOCUMENT:
            raise self._fail(f"the registry answered with more than {MAX_DOCUMENT} bytes")
        return body

    def _check(self, response: _Response, expected: set[int], what: str) -> _Response:
        """`response`, when its status is one of `expected`; EngineError saying what went wrong otherwise."""
        if response.status in expected:
            return response
        codes = _error_codes(response.body)
        detail = f"HTTP {response.status}{f' {codes}' if codes else ''}"
        if response.status in {401, 403}:
            raise self._fail(
                f"the registry refused {what} ({detail}); mreg uses Docker's credentials: log in with "
                f"`docker login {self.image.registry}` as an account that may push to {self.image.name}"
            )
        raise self._fail(f"the registry answered {detail} to {what}")

    def login(self) -> None:
        """Learn how the registry wants to be authenticated (`GET /v2/`) and get that authorization."""
        base = f"{self.image.base_url}/v2/"
        response = self._check(self._send("GET", base), {200, 401}, "the API version check")
        if response.status == 200:
            return
        challenge = parse_challenge(response.headers.get("WWW-Authenticate", ""))
        credentials = docker_credentials(self.image.registry)
        if challenge is not None and challenge[0] == "basic":
            if credentials is None:
                raise self._login_needed()
            self._authorization = "Basic " + base64.b64encode(":".join(credentials).encode()).decode("ascii")
            self._check(self._send("GET", base), {200}, "the credentials of Docker's configuration")
        elif challenge is not None and challenge[0] == "bearer":
            self._authorization = f"Bearer {self._token(challenge[1], credentials)}"
        else:
            raise self._fail("the registry asks for an authentication scheme mreg does not speak (Basic or Bearer)")

    def _login_needed(self) -> EngineError:
        return self._fail(
            f"the registry requires a login and Docker's configuration has no credentials for {self.image.registry} "
            f"(log in with `docker login {self.image.registry}`)"
        )

    def _token(self, params: Mapping[str, str], credentials: tuple[str, str] | None) -> str:
        """A Bearer token for pulling and pushing the image's repository, from the challenge's realm."""
        realm = urllib.parse.urlsplit(params.get("realm", ""))
        if not realm.netloc or not (realm.scheme == "https" or (realm.scheme == "http" and is_loopback(realm.netloc))):
            raise self._fail("the registry's token realm is not an https:// URL (http:// only on a loopback host)")
        query = [("scope", f"repository:{self.image.repository}:pull,push")]
        if params.get("service"):
            query.insert(0, ("service", params["service"]))
        url = _with_query(realm, urllib.parse.urlencode(query))
        basic = None if credentials is None else "Basic " + base64.b64encode(":".join(credentials).encode()).decode()
        response = self._send("GET", url, headers={"Accept": "application/json"}, authorization=basic)
        if response.status in {401, 403}:
            if credentials is None:
                raise self._login_needed()
            raise self._fail(
                f"the registry's token service refused the credentials Docker's configuration holds for "
                f"{self.image.registry} (HTTP {response.status}); log in again with "
                f"`docker login {self.image.registry}`"
            )
        self._check(response, {200}, "the token request")
        try:
            answer = json.loads(response.body)
            token = answer.get("token") or answer.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or _TOKEN_RE.fullmatch(token) is None:
            raise self._fail("the registry's token service answered without a usable token")
        return token

    def manifest(self, reference: str) -> _Manifest | None:
        """The manifest `reference` (a tag or a digest) names, None when there is none."""
        response = self._send("GET", f"{self._api}/manifests/{reference}", headers={"Accept": _ACCEPT})
        if response.status == 404:
            return None
        self._check(response, {200}, f"reading the manifest {reference}")
        digest = _digest(response.body)
        announced = response.headers.get("Docker-Content-Digest")
        if announced is not None and announced != digest:
            raise self._fail(f"the manifest {reference} the registry sent does not hash to the digest it announced")
        return _Manifest(digest, response.body, response.headers.get("Content-Type", ""))

    def manifest_digest(self, reference: str) -> str | None:
        """The digest of the manifest `reference` names (HEAD, else GET), None when there is none."""
        response = self._send("HEAD", f"{self._api}/manifests/{reference}", headers={"Accept": _ACCEPT})
        if response.status == 404:
            return None
        self._check(response, {200}, f"looking up the manifest {reference}")
        digest = response.headers.get("Docker-Content-Digest")
        if digest is not None and SHA256_DIGEST_RE.fullmatch(digest):
            return digest
        found = self.manifest(reference)
        return None if found is None else found.digest

    def upload_blob(self, blob: bytes) -> None:
        """Store `blob` in the repository, unless it is there already (monolithic upload: POST, then PUT)."""
        digest = _digest(blob)
        exists = self._check(self._send("HEAD", f"{self._api}/blobs/{digest}"), {200, 404}, f"looking up {digest}")
        if exists.status == 200:
            return
        started = self._check(self._send("POST", f"{self._api}/blobs/uploads/", body=b""), {202}, "starting an upload")
        location = urllib.parse.urljoin(f"{self.image.base_url}/", started.headers.get("Location", ""))
        parts, origin = urllib.parse.urlsplit(location), urllib.parse.urlsplit(self.image.base_url)
        if (parts.scheme, parts.netloc.lower()) != (origin.scheme, origin.netloc.lower()) or not parts.path:
            raise self._fail("the registry sent an upload to another host, where mreg does not send credentials")
        url = _with_query(parts, urllib.parse.urlencode({"digest": digest}))
        headers = {"Content-Type": "application/octet-stream"}
        self._check(self._send("PUT", url, body=blob, headers=headers), {201}, f"uploading the blob {digest}")

    def put_manifest(self, tag: str, body: bytes, media_type: str) -> None:
        response = self._send("PUT", f"{self._api}/manifests/{tag}", body=body, headers={"Content-Type": media_type})
        self._check(response, {201}, f"writing the manifest {tag}")
        stored = response.headers.get("Docker-Content-Digest")
        if stored is not None and stored != _digest(body):
            raise self._fail(f"the registry stored the manifest {tag} under another digest ({stored[:80]})")


class _HttpRedirects(urllib.request.HTTPRedirectHandler):
    """Follows redirects to http(s) URLs only (urllib's default also follows ftp://)."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: Message,
        newurl: str,
    ) -> urllib.request.Request | None:
        if urllib.parse.urlsplit(newurl).scheme not in {"http", "https"}:
            return None
        return super().redirect_request(req, fp, code, msg, headers, newurl)  # type: ignore[arg-type]


def _with_query(url: urllib.parse.SplitResult, query: str) -> str:
    """`url` with `query` added to its own query, without a fragment."""
    joined = "&".join(part for part in (url.query, query) if part)
    return urllib.parse.urlunsplit((url.scheme, url.netloc, url.path or "/", joined, ""))


def _error_codes(body: bytes) -> str:
    """The error codes of a registry's JSON error body (`MANIFEST_INVALID, BLOB_UNKNOWN`); its messages are
    left out, as they may echo what was sent."""
    try:
        errors = json.loads(body).get("errors")
        codes = [error.get("code") for error in errors]
    except (ValueError, AttributeError, TypeError):
        return ""
    return ", ".join(code for code in codes if isinstance(code, str) and _ERROR_CODE_RE.fullmatch(code))


def _digest(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def _json(document: Any, *, sort_keys: bool = False) -> bytes:
    """Compact JSON in ASCII, as registries and cosign hash it."""
    return json.dumps(document, sort_keys=sort_keys, separators=(",", ":"), ensure_ascii=True).encode("ascii")
