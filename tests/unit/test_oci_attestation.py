"""Cosign's attestation layout, pure: the tag, the image reference and its URL, the envelope as a layer, the
manifest and config an append writes, the registry's challenges and Docker's stored credentials."""

from __future__ import annotations

import base64
import json
import re
import sys
import traceback
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mreg.errors import EngineError, InvalidInputError
from mreg.provenance._keys import load_signing_key
from mreg.provenance.dsse import sign_envelope
from mreg.provenance.oci import (
    DOCKER_MANIFEST,
    ENVELOPE_MEDIA_TYPE,
    MAX_LAYERS,
    OCI_CONFIG,
    OCI_MANIFEST,
    appended_manifest,
    attestation_manifest,
    attestation_tag,
    config_blob,
    docker_credentials,
    envelope_blob,
    layer_descriptor,
    parse_challenge,
    pinned_image,
    push_attestation,
)
from mreg.provenance.statement import PAYLOAD_TYPE, PREDICATE_TYPE, build_statement
from tests.support.keys import write_key

HEX = "28dadf13c294644860759179eceee798824824a52874c8e8f2cd8b4ed1804cf6"
DIGEST = f"sha256:{HEX}"
IMAGE = f"127.0.0.1:5000/team/tiny@{DIGEST}"


def statement(*digests: str) -> bytes:
    subjects = [(f"image/{number}", digest) for number, digest in enumerate(digests)]
    return build_statement(subjects=subjects, predicate={"buildDefinition": {}, "runDetails": {}})


@pytest.fixture
def envelope(tmp_path: Path) -> dict[str, object]:
    """An envelope of a statement naming IMAGE's digest, signed with a fresh ECDSA P-256 key."""
    private, _ = write_key(tmp_path, "signer")
    return sign_envelope(statement("sha256:" + "0" * 64, DIGEST), PAYLOAD_TYPE, load_signing_key(private, None))


def test_the_attestation_tag_is_cosigns() -> None:
    assert attestation_tag(DIGEST) == f"sha256-{HEX}.att"
    for bad in (HEX, f"sha512:{HEX}", DIGEST.upper(), DIGEST[:-1], f"{DIGEST}\n"):
        with pytest.raises(ValueError, match="is not sha256"):
            attestation_tag(bad)


@pytest.mark.parametrize(
    ("image", "registry", "repository", "base_url"),
    [
        (IMAGE, "127.0.0.1:5000", "team/tiny", "http://127.0.0.1:5000"),
        (f"127.0.0.1:5000/team/tiny:v1@{DIGEST}", "127.0.0.1:5000", "team/tiny", "http://127.0.0.1:5000"),
        (f"localhost:5000/tiny@{DIGEST}", "localhost:5000", "tiny", "http://localhost:5000"),
        (f"127.8.9.10/tiny@{DIGEST}", "127.8.9.10", "tiny", "http://127.8.9.10"),
        (f"registry.example.com/ml/iris@{DIGEST}", "registry.example.com", "ml/iris", "https://registry.example.com"),
        (f"127.0.0.1.example.com/x@{DIGEST}", "127.0.0.1.example.com", "x", "https://127.0.0.1.example.com"),
        (f"localhost.example.com/x@{DIGEST}", "localhost.example.com", "x", "https://localhost.example.com"),
        (f"python@{DIGEST}", "docker.io", "library/python", "https://registry-1.docker.io"),
        (f"docker.io/someone/img@{DIGEST}", "docker.io", "someone/img", "https://registry-1.docker.io"),
        (f"index.docker.io/python@{DIGEST}", "docker.io", "library/python", "https://registry-1.docker.io"),
    ],
)
def test_a_pinned_image_names_its_registry_and_repository(
    image: str, registry: str, repository: str, base_url: str
) -> None:
    target = pinned_image(image)
    assert (target.registry, target.repository, target.base_url, target.digest) == (
        registry,
        repository,
        base_url,
        DIGEST,
    )
    assert target.name == image.partition("@")[0].removesuffix(":v1")
    assert target.attestation_ref == f"{target.name}:sha256-{HEX}.att"


@pytest.mark.parametrize(
    ("image", "why"),
    [
        ("127.0.0.1:5000/tiny:v1", "not pinned by a sha256 manifest digest"),
        (f"127.0.0.1:5000/tiny@sha512:{HEX}{HEX}", "not pinned by a sha256 manifest digest"),
        (f"127.0.0.1:5000/tiny@{DIGEST.upper().replace('SHA256', 'sha256')}", "not pinned by a sha256"),
        (f"127.0.0.1:5000/Tiny@{DIGEST}", "not a valid image reference"),
        (f"127.0.0.1:5000/../tiny@{DIGEST}", "not a valid image reference"),
        (f"127.0.0.1:5000/tiny?x=1@{DIGEST}", "not a valid image reference"),
        (f"127.0.0.1:5000/tiny#x@{DIGEST}", "not a valid image reference"),
        (f"127.0.0.1:5000/tiny@{DIGEST}\r\nX-Evil: 1", "not a valid image reference"),
        (f"user:pw@127.0.0.1:5000/tiny@{DIGEST}", "not a valid image reference"),
        (f"http://127.0.0.1:5000/tiny@{DIGEST}", "not a valid image reference"),
        ("", "not a valid image reference"),
    ],
)
def test_an_image_that_is_not_a_pinned_reference_is_refused(image: str, why: str) -> None:
    with pytest.raises(InvalidInputError, match=re.escape(why)) as caught:
        pinned_image(image)
    message = str(caught.value)
    assert message.startswith("cannot attach an attestation to ")
    assert message.endswith(".")
    assert "\n" not in message


@given(st.text(alphabet="abc/.:-_@?#%&=+ \\\r\n\x00A1", max_size=30))
def test_only_safe_characters_reach_a_url(prefix: str) -> None:
    try:
        target = pinned_image(f"{prefix}@{DIGEST}")
    except InvalidInputError:
        return
    url = f"{target.base_url}/v2/{target.repository}/manifests/{attestation_tag(target.digest)}"
    assert re.fullmatch(r"https?://[a-z0-9.:-]+/v2/[a-z0-9._/-]+/manifests/sha256-[0-9a-f]{64}\.att", url), url
    assert ".." not in target.repository
    assert "//" not in target.repository


def test_the_envelope_layer_is_canonical_and_carries_its_predicate_type(envelope: dict[str, object]) -> None:
    target = pinned_image(IMAGE)
    blob, predicate_type = envelope_blob(envelope, target)
    assert predicate_type == PREDICATE_TYPE
    assert json.loads(blob) == envelope
    reordered = {key: envelope[key] for key in reversed(list(envelope))}
    assert envelope_blob(reordered, target)[0] == blob  # the same envelope is always the same blob
    layer = layer_descriptor(blob, predicate_type)
    assert layer["mediaType"] == ENVELOPE_MEDIA_TYPE == "application/vnd.dsse.envelope.v1+json"
    assert layer["annotations"] == {"dev.cosignproject.cosign/signature": "", "predicateType": PREDICATE_TYPE}
    assert layer["size"] == len(blob)


def _payload(document: object) -> str:
    return base64.b64encode(json.dumps(document).encode()).decode()


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"payloadType": "application/json"}, "its payloadType is 'application/json'"),
        ({"signatures": []}, "its signatures are not a non-empty list"),
        ({"signatures": [{"sig": 1}]}, "its signatures are not a non-empty list"),
        ({"signatures": [{"sig": "AA==", "cert": "x"}]}, "its signatures are not a non-empty list"),
        ({"payload": "not base64!"}, "not standard base64"),
        ({"payload": base64.urlsafe_b64encode(b'{"a":"\xff\xfe>>>"}').decode()}, "not standard base64"),
        ({"payload": _payload(["a list"])}, "not an in-toto statement"),
        ({"payload": _payload({"predicateType": "", "subject": []})}, "predicateType is not a printable string"),
        ({"payload": _payload({"predicateType": "x\n", "subject": []})}, "predicateType is not a printable string"),
        (
            {"payload": _payload({"predicateType": "x", "subject": [{"digest": {"sha256": "0" * 64}}]})},
            "names no subject with that digest",
        ),
        ({"payload": _payload({"predicateType": "x", "subject": "everything"})}, "names no subject"),
        ({"extra": 1}, "it is not a DSSE envelope"),
    ],
)
def test_an_envelope_cosign_could_not_accept_is_refused(
    envelope: dict[str, object], change: dict[str, object], why: str
) -> None:
    with pytest.raises(InvalidInputError, match=re.escape(why)) as caught:
        envelope_blob({**envelope, **change}, pinned_image(IMAGE))
    assert str(caught.value).startswith(f"cannot attach the attestation to {IMAGE}: ")


def test_the_first_attestation_is_laid_out_as_cosign_lays_it_out() -> None:
    """The bytes cosign 2.5 wrote as the config of a one-layer attestation (`cosign attest` against
    registry:2), and its manifest's shape."""
    layer = {
        "mediaType": ENVELOPE_MEDIA_TYPE,
        "size": 660,
        "digest": "sha256:4d174ee75abece110e185084b17f6a85d072af92845b70e9ad6e2997dc0aa8aa",
        "annotations": {"dev.cosignproject.cosign/signature": "", "predicateType": PREDICATE_TYPE},
    }
    manifest, config = appended_manifest(None, layer)
    assert config == (
        b'{"architecture":"","created":"0001-01-01T00:00:00Z","history":[{"created":"0001-01-01T00:00:00Z"}],'
        b'"os":"","rootfs":{"type":"layers","diff_ids":["sha256:4d174ee75abece110e185084b17f6a85d072af92845b70e9'
        b'ad6e2997dc0aa8aa"]},"config":{}}'
    )
    assert manifest == {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": OCI_CONFIG,
            "size": 233,
            "digest": "sha256:9bd6fc1744306b82080855c2344d97291b85b4bc2ac1baf5b765fd6562f45679",
        },
        "layers": [layer],
    }


def test_an_append_keeps_every_layer_field_and_media_type_already_there() -> None:
    foreign = {
        "mediaType": ENVELOPE_MEDIA_TYPE,
        "size": 10,
        "digest": "sha256:" + "a" * 64,
        "annotations": {"predicateType": "https://example.com/other", "dev.sigstore.cosign/bundle": "{}"},
    }
    existing = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 1, "digest": "x"},
        "layers": [foreign],
        "annotations": {"org.example": "kept"},
    }
    layer = layer_descriptor(b"{}", PREDICATE_TYPE)
    manifest, config = appended_manifest(existing, layer)
    assert manifest["layers"] == [foreign, layer]
    assert manifest["mediaType"] == DOCKER_MANIFEST
    assert manifest["annotations"] == {"org.example": "kept"}
    assert manifest["config"]["mediaType"] == "application/vnd.docker.container.image.v1+json"
    assert json.loads(config)["rootfs"]["diff_ids"] == [foreign["digest"], layer["digest"]]
    assert len(json.loads(config)["history"]) == 2
    assert config == config_blob([foreign, layer])
    assert existing["layers"] == [foreign]  # the manifest read is not changed


def test_a_tag_that_holds_anything_but_attestation_layers_is_left_alone() -> None:
    target = pinned_image(IMAGE)
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []}
    config = {"mediaType": OCI_CONFIG, "size": 2, "digest": "sha256:" + "b" * 64}
    for body, content_type in [
        (b"not json", OCI_MANIFEST),
        (json.dumps(index).encode(), ""),
        (json.dumps({"schemaVersion": 1, "layers": []}).encode(), OCI_MANIFEST),
        (json.dumps({"schemaVersion": 2, "config": config}).encode(), OCI_MANIFEST),
        (json.dumps({"schemaVersion": 2, "config": config, "layers": [{}]}).encode(), OCI_MANIFEST),
        (json.dumps({"schemaVersion": 2, "config": config, "layers": []}).encode(), "text/plain"),
    ]:
        with pytest.raises(EngineError, match=r"holds something other than an image manifest of attestation"):
            attestation_manifest(body, content_type, target)
    plain = {"schemaVersion": 2, "config": config, "layers": []}
    found = attestation_manifest(json.dumps(plain).encode(), f"{OCI_MANIFEST}; charset=utf-8", target)
    assert found["mediaType"] == OCI_MANIFEST
    full = {**plain, "layers": [{"digest": f"sha256:{n:064x}"} for n in range(MAX_LAYERS)]}
    with pytest.raises(EngineError, match=f"cosign reads at most {MAX_LAYERS}"):
        attestation_manifest(json.dumps(full).encode(), OCI_MANIFEST, target)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ('Basic realm="mreg-test"', ("basic", {"realm": "mreg-test"})),
        (
            'Bearer realm="https://auth.example.com/token",service="registry.example.com",'
            'scope="repository:team/tiny:pull,push"',
            (
                "bearer",
                {
                    "realm": "https://auth.example.com/token",
                    "service": "registry.example.com",
                    "scope": "repository:team/tiny:pull,push",
                },
            ),
        ),
        ('bearer Realm = "a\\"b" , service=plain', ("bearer", {"realm": 'a"b', "service": "plain"})),
        ("Bearer", ("bearer", {})),
        ('Bearer realm="unterminated', None),
        ("realm=x", None),
        ("", None),
    ],
)
def test_challenges_are_parsed(header: str, expected: tuple[str, dict[str, str]] | None) -> None:
    assert parse_challenge(header) == expected


SECRET = "pw-unit-93e1"


def _config(directory: Path, document: object) -> None:
    directory.mkdir(exist_ok=True)
    (directory / "config.json").write_text(json.dumps(document) if not isinstance(document, str) else document)


def _auth(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def test_credentials_come_from_the_auths_entry_of_the_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    assert docker_credentials("127.0.0.1:5000") is None  # no configuration at all
    _config(
        tmp_path / "docker",
        {
            "auths": {
                "127.0.0.1:5000": {"auth": _auth("alice", f"{SECRET}:with:colons")},
                "https://registry.example.com/v1/": {"auth": _auth("bob", SECRET)},
                "https://index.docker.io/v1/": {"auth": _auth("hub", SECRET)},
                "plain.example.com": {"username": "carol", "password": SECRET},
                "empty.example.com": {},
            }
        },
    )
    assert docker_credentials("127.0.0.1:5000") == ("alice", f"{SECRET}:with:colons")
    assert docker_credentials("registry.example.com") == ("bob", SECRET)
    assert docker_credentials("docker.io") == ("hub", SECRET)
    assert docker_credentials("plain.example.com") == ("carol", SECRET)
    assert docker_credentials("empty.example.com") is None
    assert docker_credentials("127.0.0.1:5001") is None


def _secret_free(error: BaseException) -> None:
    text = "".join(traceback.format_exception(error)) + repr(error)
    assert SECRET not in text, text
    assert _auth("alice", SECRET) not in text, text


@pytest.mark.parametrize(
    ("document", "why"),
    [
        (f'{{"auths": {{"127.0.0.1:5000": {{"auth": "{_auth("alice", SECRET)}"}}}}', "is not valid JSON"),
        ([SECRET], "is not a JSON object"),
        ({"auths": {"127.0.0.1:5000": {"auth": f"{SECRET}!"}}}, "is not base64 of USER:PASSWORD"),
        (
            {"auths": {"127.0.0.1:5000": {"auth": base64.b64encode(SECRET.encode()).decode()}}},
            "is not base64 of USER:PASSWORD",
        ),
        ({"auths": {"127.0.0.1:5000": {"identitytoken": SECRET}}}, "are an identity token"),
        ({"credsStore": f"../{SECRET}"}, "not a valid helper name"),
        ({"credHelpers": {"127.0.0.1:5000": "mreg-none-such"}}, "docker-credential-mreg-none-such"),
    ],
)
def test_unusable_credentials_are_refused_without_showing_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, document: object, why: str
) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    _config(tmp_path, document)
    with pytest.raises(InvalidInputError, match=re.escape(why)) as caught:
        docker_credentials("127.0.0.1:5000")
    _secret_free(caught.value)


def _helper(directory: Path, monkeypatch: pytest.MonkeyPatch, body: str) -> Path:
    """`docker-credential-mregtest` on PATH, running `body` (Python) with the server name in `server`;
    returns the file it records that name in."""
    directory.mkdir()
    record = directory / "asked"
    program = directory / "docker-credential-mregtest"
    program.write_text(
        f"#!{sys.executable}\nimport json, sys\nassert sys.argv[1:] == ['get']\nserver = sys.stdin.read()\n"
        f"open({str(record)!r}, 'w').write(server)\n{body}\n"
    )
    program.chmod(0o755)
    monkeypatch.setenv("PATH", f"{directory}:{Path(sys.executable).parent}")
    return record


def test_a_credential_helper_answers_for_its_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    record = _helper(
        tmp_path / "bin",
        monkeypatch,
        f"print(json.dumps({{'ServerURL': server, 'Username': 'dave', 'Secret': {SECRET!r}}}))",
    )
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    _config(tmp_path / "docker", {"auths": {"127.0.0.1:5000": {}}, "credHelpers": {"127.0.0.1:5000": "mregtest"}})
    assert docker_credentials("127.0.0.1:5000") == ("dave", SECRET)
    assert record.read_text() == "127.0.0.1:5000"
    assert docker_credentials("other.example.com") is None  # no helper and no entry for it
    _config(tmp_path / "docker", {"credsStore": "mregtest"})
    assert docker_credentials("docker.io") == ("dave", SECRET)
    assert record.read_text() == "https://index.docker.io/v1/"


def test_a_credential_helper_without_credentials_or_failing_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _helper(
        tmp_path / "bin",
        monkeypatch,
        f"print('credentials not found in native keychain' if 'none' in server else {SECRET!r}); sys.exit(1)",
    )
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    _config(tmp_path / "docker", {"credsStore": "mregtest"})
    assert docker_credentials("none.example.com") is None
    with pytest.raises(EngineError, match=r"docker-credential-mregtest failed for broken.example.com \(exit code 1\)"):
        docker_credentials("broken.example.com")


def test_push_refuses_what_cosign_could_not_use_before_any_request(envelope: dict[str, object]) -> None:
    """Port 9 of 127.0.0.1 has no registry: reaching for it would be an EngineError, not these."""
    with pytest.raises(InvalidInputError, match="is not pinned by a sha256 manifest digest"):
        push_attestation("127.0.0.1:9/tiny:v1", envelope)
    other = f"127.0.0.1:9/tiny@sha256:{'1' * 64}"
    with pytest.raises(InvalidInputError, match="names no subject with that digest"):
        push_attestation(other, envelope)
