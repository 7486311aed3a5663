"""Signing keys, trusted keys, DSSE envelopes, in-toto statements and CycloneDX SBOMs (mreg.provenance)."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from mreg.errors import IntegrityError, InvalidInputError, MregError
from mreg.provenance._keys import SigningKey, TrustedKey, load_signing_key, load_trusted_keys
from mreg.provenance.dsse import add_signature, pae, sign_envelope, verify_envelope
from mreg.provenance.sbom import image_purl, image_sbom
from mreg.provenance.statement import (
    BUILD_TYPE,
    PAYLOAD_TYPE,
    PREDICATE_TYPE,
    STATEMENT_TYPE,
    build_statement,
    parse_statement,
    provenance_predicate,
)

Kind = Literal["p256", "p384", "ed25519"]
KINDS: tuple[Kind, ...] = ("p256", "p384", "ed25519")
PASSPHRASE = "correct-horse-9271"
NOW = datetime.now(UTC)
D = {name: "sha256:" + hashlib.sha256(name.encode()).hexdigest() for name in ("record", "model", "a", "b", "c")}


def generate(kind: Kind) -> ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey:
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    return ec.generate_private_key(ec.SECP256R1() if kind == "p256" else ec.SECP384R1())


def write_private(path: Path, key: PrivateKeyTypes, passphrase: str | None = None) -> Path:
    encryption = (
        serialization.BestAvailableEncryption(passphrase.encode()) if passphrase else serialization.NoEncryption()
    )
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption))
    return path


def public_pem(key: PrivateKeyTypes) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def signing_key(tmp_path: Path, kind: Kind, name: str = "signer") -> SigningKey:
    return load_signing_key(write_private(tmp_path / f"{name}-{kind}.pem", generate(kind)), None)


def trusted(tmp_path: Path, key: SigningKey, name: str = "ci", **window: datetime) -> TrustedKey:
    path = tmp_path / f"{name}.toml"
    dates = "".join(f'{bound} = "{when.isoformat()}"\n' for bound, when in window.items())
    path.write_text(f'[[keys]]\nname = "{name}"\nkey = """{key.public_pem()}"""\n{dates}')
    [loaded] = load_trusted_keys(path)
    return loaded


# -- signing keys ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("encrypted", [False, True])
@pytest.mark.parametrize("kind", KINDS)
def test_signing_key_of_each_type_loads_and_has_the_spki_key_id(tmp_path: Path, kind: Kind, encrypted: bool) -> None:
    private = generate(kind)
    passphrase = PASSPHRASE if encrypted else None
    key = load_signing_key(write_private(tmp_path / "key.pem", private, passphrase), passphrase)
    der = private.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert key.keyid == hashlib.sha256(der).hexdigest()
    assert key.public_pem() == public_pem(private)
    assert "PRIVATE" not in repr(key)


def test_wrong_passphrase_is_refused_without_showing_it(tmp_path: Path) -> None:
    path = write_private(tmp_path / "key.pem", generate("p256"), PASSPHRASE)
    with pytest.raises(InvalidInputError, match="passphrase is wrong") as caught:
        load_signing_key(path, "wrong-staple-5113")
    chain = f"{caught.value} {caught.value.__cause__}"
    assert str(path) in str(caught.value)
    assert PASSPHRASE not in chain
    assert "wrong-staple-5113" not in chain
    assert "BEGIN" not in chain


def test_missing_and_superfluous_passphrases_are_refused(tmp_path: Path) -> None:
    encrypted = write_private(tmp_path / "encrypted.pem", generate("ed25519"), PASSPHRASE)
    plain = write_private(tmp_path / "plain.pem", generate("ed25519"))
    with pytest.raises(InvalidInputError, match=r"encrypted\.pem: the signing key is encrypted, but no passphrase"):
        load_signing_key(encrypted, None)
    with pytest.raises(InvalidInputError, match=r"plain\.pem: the signing key is not encrypted"):
        load_signing_key(plain, PASSPHRASE)


def test_unreadable_and_non_pem_signing_keys_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match=r"missing\.pem: cannot read the signing key"):
        load_signing_key(tmp_path / "missing.pem", None)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a key\n")
    with pytest.raises(InvalidInputError, match=r"garbage\.pem: .*not a PEM private key"):
        load_signing_key(garbage, None)


@pytest.mark.parametrize(
    ("private", "described"),
    [
        (rsa.generate_private_key(public_exponent=65537, key_size=2048), "an RSA key"),
        (ec.generate_private_key(ec.SECP521R1()), "an ECDSA key on curve secp521r1"),
        (ec.generate_private_key(ec.SECP256K1()), "an ECDSA key on curve secp256k1"),
        (ed448.Ed448PrivateKey.generate(), "an Ed448 key"),
    ],
)
def test_unsupported_key_types_are_refused(tmp_path: Path, private: PrivateKeyTypes, described: str) -> None:
    path = write_private(tmp_path / "other.pem", private)
    with pytest.raises(InvalidInputError, match=rf"other\.pem: the signing key is {described}; mreg signs with ECDSA"):
        load_signing_key(path, None)


@pytest.mark.parametrize("kind", KINDS)
def test_signatures_use_the_curves_hash_and_der(tmp_path: Path, kind: Kind) -> None:
    private = generate(kind)
    key = load_signing_key(write_private(tmp_path / "key.pem", private), None)
    signature = key.sign(b"data")
    public = private.public_key()
    if isinstance(public, ed25519.Ed25519PublicKey):
        assert len(signature) == 64
        public.verify(signature, b"data")
    else:
        decode_dss_signature(signature)  # DER, as DSSE and cosign expect
        public.verify(signature, b"data", ec.ECDSA(hashes.SHA256() if kind == "p256" else hashes.SHA384()))


# -- DSSE -----------------------------------------------------------------------------------------------------


def test_pae_matches_the_dsse_spec_vector() -> None:
    assert (
        pae("http://example.com/HelloWorld", b"hello world")
        == b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_pae_counts_bytes_not_characters() -> None:
    assert pae("t", "é".encode()) == b"DSSEv1 1 t 2 \xc3\xa9"


@pytest.mark.parametrize("kind", KINDS)
def test_sign_and_verify_round_trip(tmp_path: Path, kind: Kind) -> None:
    key = signing_key(tmp_path, kind)
    envelope = sign_envelope(b'{"a":1}', PAYLOAD_TYPE, key)
    assert envelope["signatures"][0]["keyid"] == key.keyid
    assert base64.b64decode(envelope["payload"]) == b'{"a":1}'
    verified = verify_envelope(json.loads(json.dumps(envelope)), [trusted(tmp_path, key)], at=NOW)
    assert (verified.payload, verified.payload_type, verified.key_names) == (b'{"a":1}', PAYLOAD_TYPE, ("ci",))


@pytest.mark.parametrize("field", ["payload", "payloadType"])
def test_a_tampered_envelope_fails(tmp_path: Path, field: str) -> None:
    key = signing_key(tmp_path, "p256")
    envelope = sign_envelope(b'{"a":1}', PAYLOAD_TYPE, key)
    envelope[field] = base64.b64encode(b'{"a":2}').decode() if field == "payload" else "text/plain"
    with pytest.raises(IntegrityError, match=rf"trusted key ci \(keyid {key.keyid}\) does not match .* altered"):
        verify_envelope(envelope, [trusted(tmp_path, key)], at=NOW)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("garbage", [b"", b"\x00\x01", b"\x30\x06\x02\x01\x01\x02\x01\x01", b"x" * 5000])
def test_garbage_signature_bytes_fail_cleanly(tmp_path: Path, kind: Kind, garbage: bytes) -> None:
    key = signing_key(tmp_path, kind)
    envelope = sign_envelope(b"{}", PAYLOAD_TYPE, key)
    envelope["signatures"][0]["sig"] = base64.b64encode(garbage).decode()
    with pytest.raises(IntegrityError, match="does not match the envelope's payload"):
        verify_envelope(envelope, [trusted(tmp_path, key)], at=NOW)


def test_a_signature_by_an_untrusted_key_fails(tmp_path: Path) -> None:
    signer, other = signing_key(tmp_path, "p256", "signer"), signing_key(tmp_path, "ed25519", "other")
    envelope = sign_envelope(b"{}", PAYLOAD_TYPE, signer)
    with pytest.raises(IntegrityError, match=rf"signed by an untrusted key \(keyid '{signer.keyid}'\)"):
        verify_envelope(envelope, [trusted(tmp_path, other)], at=NOW)


def test_a_trusted_keyid_on_an_untrusted_signature_is_not_trusted(tmp_path: Path) -> None:
    signer, other = signing_key(tmp_path, "p256", "signer"), signing_key(tmp_path, "p256", "other")
    envelope = sign_envelope(b"{}", PAYLOAD_TYPE, signer)
    envelope["signatures"][0]["keyid"] = other.keyid
    with pytest.raises(IntegrityError, match="does not match the envelope's payload"):
        verify_envelope(envelope, [trusted(tmp_path, other)], at=NOW)


@pytest.mark.parametrize("hint", [None, "", "0" * 64])
def test_the_keyid_is_only_a_hint(tmp_path: Path, hint: str | None) -> None:
    key = signing_key(tmp_path, "p384")
    envelope = sign_envelope(b"{}", PAYLOAD_TYPE, key)
    if hint is None:
        del envelope["signatures"][0]["keyid"]
    else:
        envelope["signatures"][0]["keyid"] = hint
    decoy = trusted(tmp_path, signing_key(tmp_path, "p384", "decoy"), "decoy")
    assert verify_envelope(envelope, [decoy, trusted(tmp_path, key)], at=NOW).key_names == ("ci",)


def test_a_key_outside_its_window_fails(tmp_path: Path) -> None:
    key = signing_key(tmp_path, "ed25519")
    envelope = sign_envelope(b"{}", PAYLOAD_TYPE, key)
    expired = trusted(tmp_path, key, "old", not_after=datetime(2025, 1, 1, tzinfo=UTC))
    with pytest.raises(IntegrityError, match=r"the key old was valid only until 2025-01-01T00:00:00\+00:00"):
        verify_envelope(envelope, [expired], at=NOW)
    future = trusted(tmp_path, key, "next", not_before=NOW + timedelta(days=1))
    with pytest.raises(IntegrityError, match="the key next is valid only from"):
        verify_envelope(envelope, [future], at=NOW)
    assert verify_envelope(envelope, [expired], at=datetime(2024, 6, 1, tzinfo=UTC)).key_names == ("old",)


def test_the_same_key_in_two_windows_verifies_in_the_current_one(tmp_path: Path) -> None:
    key = signing_key(tmp_path, "p256")
    envelope = sign_envelope(b"{}", PAYLOAD_TYPE, key)
    expired = trusted(tmp_path, key, "old", not_after=datetime(2025, 1, 1, tzinfo=UTC))
    current = trusted(tmp_path, key, "renewed", not_before=datetime(2025, 1, 1, tzinfo=UTC))
    assert verify_envelope(envelope, [expired, current], at=NOW).key_names == ("renewed",)


def test_a_second_signature_verifies_with_either_key(tmp_path: Path) -> None:
    first, second = signing_key(tmp_path, "p256", "first"), signing_key(tmp_path, "ed25519", "second")
    once = sign_envelope(b"{}", PAYLOAD_TYPE, first)
    twice = add_signature(once, second)
    assert len(once["signatures"]) == 1
    assert [s["keyid"] for s in twice["signatures"]] == [first.keyid, second.keyid]
    one, two = trusted(tmp_path, first, "one"), trusted(tmp_path, second, "two")
    assert verify_envelope(twice, [one], at=NOW).key_names == ("one",)
    assert verify_envelope(twice, [two], at=NOW).key_names == ("two",)
    assert verify_envelope(twice, [two, one], at=NOW).key_names == ("one", "two")
    with pytest.raises(InvalidInputError, match=f"already signed by the key {second.keyid}"):
        add_signature(twice, second)


def _envelope_variants() -> list[Any]:
    good = {"payloadType": PAYLOAD_TYPE, "payload": "e30=", "signatures": [{"keyid": "", "sig": "AAAA"}]}
    return [
        [],
        {k: v for k, v in good.items() if k != "signatures"},
        {**good, "extra": 1},
        {**good, "payloadType": ""},
        {**good, "payload": "not base64!"},
        {**good, "payload": 7},
        {**good, "signatures": []},
        {**good, "signatures": [{"sig": "AAAA"}] * 17},
        {**good, "signatures": [{"keyid": 1, "sig": "AAAA"}]},
        {**good, "signatures": [{"keyid": "", "sig": "A"}]},
        {**good, "signatures": ["AAAA"]},
    ]


@pytest.mark.parametrize("envelope", _envelope_variants())
def test_a_malformed_envelope_fails(tmp_path: Path, envelope: Any) -> None:
    with pytest.raises(IntegrityError, match="the envelope is malformed"):
        verify_envelope(envelope, [trusted(tmp_path, signing_key(tmp_path, "p256"))], at=NOW)


def test_url_safe_base64_is_accepted(tmp_path: Path) -> None:
    key = signing_key(tmp_path, "p256")
    payload = b"\xfb\xff" * 30  # standard base64 of it holds '+' and '/'
    envelope = sign_envelope(payload, PAYLOAD_TYPE, key)
    envelope["payload"] = base64.urlsafe_b64encode(payload).decode()
    assert verify_envelope(envelope, [trusted(tmp_path, key)], at=NOW).payload == payload


# -- trusted keys ---------------------------------------------------------------------------------------------


def test_trusted_keys_from_a_pem_file_with_several_blocks(tmp_path: Path) -> None:
    keys = [signing_key(tmp_path, kind) for kind in KINDS]
    path = tmp_path / "trusted.pub"
    path.write_text("\n".join(key.public_pem() for key in keys))
    loaded = load_trusted_keys(path)
    assert [k.name for k in loaded] == ["trusted.pub#1", "trusted.pub#2", "trusted.pub#3"]
    assert [k.keyid for k in loaded] == [key.keyid for key in keys]
    assert all(k.not_before is None and k.not_after is None for k in loaded)


def test_trusted_keys_from_toml(tmp_path: Path) -> None:
    inline, on_disk = signing_key(tmp_path, "p256", "inline"), signing_key(tmp_path, "ed25519", "disk")
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "release.pem").write_text(on_disk.public_pem())
    path = tmp_path / "trusted.toml"
    path.write_text(
        f'[[keys]]\nname = "ci"\nkey = """{inline.public_pem()}"""\n'
        'not_before = 2026-01-01T00:00:00Z\nnot_after = "2027-01-01T00:00:00+01:00"\n'
        '[[keys]]\nname = "release@example.com"\npath = "keys/release.pem"\n'
    )
    ci, release = load_trusted_keys(path)
    assert (ci.name, ci.keyid, release.name, release.keyid) == (
        "ci",
        inline.keyid,
        "release@example.com",
        on_disk.keyid,
    )
    assert ci.not_before == datetime(2026, 1, 1, tzinfo=UTC)
    assert ci.valid_at(datetime(2026, 12, 31, 23, 0, tzinfo=UTC))
    assert not ci.valid_at(datetime(2026, 12, 31, 23, 0, 1, tzinfo=UTC))
    assert not ci.valid_at(datetime(2025, 12, 31, tzinfo=UTC))
    assert release.valid_at(NOW)


def test_trusted_keys_from_json(tmp_path: Path) -> None:
    key = signing_key(tmp_path, "p384")
    path = tmp_path / "trusted.json"
    entry = {"name": "ci", "key": key.public_pem(), "not_after": "2030-01-01T00:00:00Z"}
    path.write_text(json.dumps({"keys": [entry]}))
    [loaded] = load_trusted_keys(path)
    assert (loaded.name, loaded.keyid, loaded.not_after) == ("ci", key.keyid, datetime(2030, 1, 1, tzinfo=UTC))
    envelope = sign_envelope(b"{}", PAYLOAD_TYPE, key)
    assert verify_envelope(envelope, [loaded], at=NOW).key_names == ("ci",)


def _toml_cases(pem: str, rsa_pem: str) -> list[tuple[str, str]]:
    key = f'key = """{pem}"""'
    return [
        (
            f'[[keys]]\nname = "ci"\n{key}\nnot_afterr = "2030-01-01T00:00:00Z"\n',
            r"keys entry 1 \(ci\): unknown field 'not_afterr'",
        ),
        (
            f'[[keys]]\nname = "ci"\n{key}\nnot_after = "soon"\n',
            r"keys entry 1 \(ci\): not_after 'soon' is not an ISO 8601",
        ),
        (
            f'[[keys]]\nname = "ci"\n{key}\nnot_after = 2030-01-01T00:00:00\n',
            r"keys entry 1 \(ci\): not_after must .* time zone",
        ),
        (
            f'[[keys]]\nname = "ci"\n{key}\nnot_after = 2030-01-01\n',
            r"keys entry 1 \(ci\): not_after must .* time zone",
        ),
        (
            f'[[keys]]\nname = "ci"\n{key}\nnot_before = 2030-01-01T00:00:00Z\nnot_after = 2029-01-01T00:00:00Z\n',
            r"keys entry 1 \(ci\): not_after .* is before not_before",
        ),
        (
            f'[[keys]]\nname = "ci"\n{key}\n[[keys]]\nname = "two"\nkey = "junk"\n',
            r"keys entry 2 \(two\).*exactly one PEM PUBLIC KEY",
        ),
        (f'[[keys]]\nname = "ci"\n{key}\n[[keys]]\nname = "ci"\n{key}\n', "more than one key is named 'ci'"),
        (f'[[keys]]\nname = "bad name"\n{key}\n', r"keys entry 1: `name` must be"),
        ('[[keys]]\nname = "ci"\n', r"keys entry 1 \(ci\): give exactly one of `key`"),
        (f'[[keys]]\nname = "ci"\n{key}\npath = "x.pem"\n', r"keys entry 1 \(ci\): give exactly one of `key`"),
        ('[[keys]]\nname = "ci"\npath = "absent.pem"\n', r"keys entry 1 \(ci\): cannot read .*absent\.pem"),
        (f'[[keys]]\nname = "ci"\nkey = """{rsa_pem}"""\n', r"keys entry 1 \(ci\): PEM block 1 is an RSA key"),
        (
            '[[keys]]\nname = "ci"\nkey = """-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----"""\n',
            r"keys entry 1 \(ci\): PEM block 1 is not a valid public key",
        ),
        ("keys = []\n", "the list `keys` is empty"),
        (f'other = 1\n[[keys]]\nname = "ci"\n{key}\n', "must hold one list `keys`"),
        ("[[keys]\n", "is not valid TOML"),
    ]


def test_bad_trusted_key_files_are_refused_naming_the_file_and_entry(tmp_path: Path) -> None:
    pem = signing_key(tmp_path, "p256").public_pem()
    rsa_pem = public_pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    path = tmp_path / "trusted.toml"
    for text, message in _toml_cases(pem, rsa_pem):
        path.write_text(text)
        with pytest.raises(InvalidInputError, match=rf"trusted\.toml: .*{message}"):
            load_trusted_keys(path)


def test_bad_pem_trusted_key_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "trusted.pem"
    write_private(path, generate("p256"))
    with pytest.raises(
        InvalidInputError, match=r"trusted\.pem: PEM block 1 is a PRIVATE KEY; trusted keys are PUBLIC"
    ) as caught:
        load_trusted_keys(path)
    assert "MII" not in str(caught.value)
    path.write_text("nothing here\n")
    with pytest.raises(InvalidInputError, match=r"trusted\.pem: holds no PEM PUBLIC KEY block"):
        load_trusted_keys(path)
    with pytest.raises(InvalidInputError, match=r"absent\.pem: cannot read the trusted keys"):
        load_trusted_keys(tmp_path / "absent.pem")
    bad_json = tmp_path / "trusted.json"
    bad_json.write_text('{"keys": [{"name": "ci", "key": 1}]}')
    with pytest.raises(InvalidInputError, match=r"trusted\.json: keys entry 1 \(ci\): `key` must be the PEM text"):
        load_trusted_keys(bad_json)


# -- statements -----------------------------------------------------------------------------------------------


def predicate(**changes: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "mreg_version": "0.1.0",
        "model_name": "iris",
        "spec_sha256": "1" * 64,
        "lock_sha256": "2" * 64,
        "base_image": "python:3.11-slim-bookworm",
        "base_image_digest": "sha256:" + "3" * 64,
        "git_commit": "4" * 40,
        "git_dirty": True,
        "actor": "ci@example.com",
        "invocation_id": "run-17",
        "started_on": datetime(2026, 3, 1, 12, 0, tzinfo=UTC),
        "finished_on": datetime(2026, 3, 1, 14, 30, tzinfo=timezone(timedelta(hours=1))),
        "buildkit_refs": {"train": "default/default/abc123", "serve": "default/default/def456"},
        "engine": "buildx",
    }
    return provenance_predicate(**(fields | changes))


def test_statement_shape_and_canonical_json() -> None:
    body = predicate()
    payload = build_statement(subjects=[("record", D["record"]), ("model", D["model"])], predicate=body)
    document = json.loads(payload)
    assert payload == json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    assert document["_type"] == STATEMENT_TYPE == "https://in-toto.io/Statement/v1"
    assert document["predicateType"] == PREDICATE_TYPE == "https://slsa.dev/provenance/v1"
    assert document["subject"] == [
        {"name": "record", "digest": {"sha256": D["record"].removeprefix("sha256:")}},
        {"name": "model", "digest": {"sha256": D["model"].removeprefix("sha256:")}},
    ]
    statement = parse_statement(payload)
    assert statement.subject_digest("model") == D["model"]
    assert statement.subject_digest("image:train") is None
    assert statement.predicate == body


def test_provenance_predicate_fields() -> None:
    body = predicate()
    definition, run = body["buildDefinition"], body["runDetails"]
    assert set(body) == {"buildDefinition", "runDetails"}
    assert definition["buildType"] == BUILD_TYPE
    assert definition["externalParameters"] == {
        "model": "iris",
        "spec": {"digest": {"sha256": "1" * 64}},
        "lock": {"digest": {"sha256": "2" * 64}},
    }
    assert definition["internalParameters"] == {
        "buildkitRefs": {"serve": "default/default/def456", "train": "default/default/abc123"},
        "engine": "buildx",
    }
    assert definition["resolvedDependencies"] == [
        {
            "name": "base-image",
            "uri": f"pkg:docker/python@sha256:{'3' * 64}?tag=3.11-slim-bookworm",
            "digest": {"sha256": "3" * 64},
        },
        {"name": "git", "digest": {"gitCommit": "4" * 40}, "annotations": {"dirty": True}},
    ]
    assert run["builder"] == {"id": "pkg:generic/mreg@0.1.0", "version": {"mreg": "0.1.0"}}
    assert run["metadata"] == {
        "invocationId": "run-17",
        "startedOn": "2026-03-01T12:00:00Z",
        "finishedOn": "2026-03-01T13:30:00Z",
        "mreg_actor": "ci@example.com",
    }


def test_provenance_predicate_without_optional_parts() -> None:
    body = predicate(base_image_digest=None, git_commit=None, buildkit_refs=None, engine=None)
    assert "internalParameters" not in body["buildDefinition"]
    assert body["buildDefinition"]["resolvedDependencies"] == [
        {"name": "base-image", "uri": "pkg:docker/python@3.11-slim-bookworm"}
    ]
    with pytest.raises(ValueError, match="no time zone"):
        predicate(started_on=datetime(2026, 3, 1))


def test_build_statement_refuses_bad_subjects() -> None:
    with pytest.raises(ValueError, match="distinct names"):
        build_statement(subjects=[("a", D["a"]), ("a", D["b"])], predicate={})
    with pytest.raises(ValueError, match="subject a is not sha256"):
        build_statement(subjects=[("a", "md5:00")], predicate={})


def _statement(**changes: Any) -> bytes:
    document = {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": "a", "digest": {"sha256": D["a"][7:]}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {},
    }
    return json.dumps(document | changes).encode()


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"\xff", "not JSON"),
        (b"[]", "not an in-toto statement"),
        (_statement(extra=1), "not an in-toto statement"),
        (_statement(_type="https://in-toto.io/Statement/v0.1"), "_type is"),
        (_statement(predicateType="https://slsa.dev/provenance/v0.2"), "predicateType is"),
        (_statement(predicate=[]), "predicate is not an object"),
        (_statement(subject=[]), "has no subjects"),
        (_statement(subject=[{"digest": {"sha256": D["a"][7:]}}]), "has no name"),
        (_statement(subject=[{"name": "a", "digest": {"sha512": "0" * 128}}]), "subject 'a' .* no sha256 digest"),
        (_statement(subject=[{"name": "a", "digest": {"sha256": D["a"][7:]}}] * 2), "subject 'a' twice"),
    ],
)
def test_parse_statement_refuses_other_shapes(payload: bytes, message: str) -> None:
    with pytest.raises(IntegrityError, match=message):
        parse_statement(payload)


def test_signed_statement_end_to_end(tmp_path: Path) -> None:
    key = signing_key(tmp_path, "ed25519")
    payload = build_statement(subjects=[("record", D["record"])], predicate=predicate())
    verified = verify_envelope(sign_envelope(payload, PAYLOAD_TYPE, key), [trusted(tmp_path, key)], at=NOW)
    assert parse_statement(verified.payload).subject_digest("record") == D["record"]


# -- SBOMs ----------------------------------------------------------------------------------------------------


def sbom(**changes: Any) -> bytes:
    fields: dict[str, Any] = {
        "model_name": "iris",
        "stage": "serve",
        "image_ref": "localhost:5000/mreg/iris-serve:3",
        "image_digest": "sha256:" + "b" * 64,
        "python": "3.11.7",
        "packages": {"numpy": "1.26.4", "fastapi": "0.109.0", "pip": "24.0"},
        "hashes": {"numpy": ["sha256:" + "d" * 64, "sha256:" + "c" * 64], "fastapi": ["sha256:" + "e" * 64]},
        "base_image": "python:3.11-slim-bookworm",
        "base_image_digest": "sha256:" + "f" * 64,
    }
    return image_sbom(**(fields | changes))


def test_sbom_is_valid_cyclonedx_1_6() -> None:
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    text = sbom()
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(text.decode()) is None
    document = json.loads(text)
    assert (document["bomFormat"], document["specVersion"]) == ("CycloneDX", "1.6")
    assert "timestamp" not in document["metadata"]
    image = document["metadata"]["component"]
    assert image["type"] == "container"
    assert image["purl"] == f"pkg:docker/mreg/iris-serve@sha256:{'b' * 64}?repository_url=localhost:5000&tag=3"
    assert {p["name"]: p["value"] for p in image["properties"]} == {"mreg:model": "iris", "mreg:stage": "serve"}
    by_name = {(c["type"], c["name"]): c for c in document["components"]}
    numpy = by_name["library", "numpy"]
    assert numpy["purl"] == "pkg:pypi/numpy@1.26.4"
    assert numpy["hashes"] == [{"alg": "SHA-256", "content": "c" * 64}, {"alg": "SHA-256", "content": "d" * 64}]
    assert "hashes" not in by_name["library", "pip"]
    assert by_name["platform", "python"]["version"] == "3.11.7"
    base = by_name["container", "python"]
    assert base["purl"] == f"pkg:docker/python@sha256:{'f' * 64}?tag=3.11-slim-bookworm"
    assert base["hashes"] == [{"alg": "SHA-256", "content": "f" * 64}]
    assert [c["name"] for c in document["components"]] == ["python", "fastapi", "numpy", "pip", "python"]


def test_sbom_is_deterministic() -> None:
    first = sbom()
    reordered = sbom(packages={"pip": "24.0", "fastapi": "0.109.0", "numpy": "1.26.4"})
    assert first == sbom() == reordered
    other = json.loads(sbom(image_digest="sha256:" + "a" * 64))
    assert other["serialNumber"] != json.loads(first)["serialNumber"]
    assert json.loads(first)["serialNumber"].startswith("urn:uuid:")


def test_an_invalid_sbom_raises_an_mreg_error() -> None:
    with pytest.raises(MregError, match=r"SBOM of the serve image of iris is not valid CycloneDX 1\.6: .*hashes"):
        sbom(hashes={"numpy": ["sha256:not-hex"]})


@pytest.mark.parametrize(
    ("reference", "digest", "purl"),
    [
        ("python:3.11-slim", None, "pkg:docker/python@3.11-slim"),
        ("docker.io/library/python", None, "pkg:docker/python@latest"),
        (
            "ghcr.io/org/team/img:1@sha256:" + "a" * 64,
            None,
            f"pkg:docker/org/team/img@sha256:{'a' * 64}?repository_url=ghcr.io&tag=1",
        ),
        ("localhost:5000/m", "sha256:" + "b" * 64, f"pkg:docker/m@sha256:{'b' * 64}?repository_url=localhost:5000"),
    ],
)
def test_image_purls(reference: str, digest: str | None, purl: str) -> None:
    assert image_purl(reference, digest) == purl


def test_image_purl_refuses_a_bad_reference() -> None:
    with pytest.raises(InvalidInputError, match="'Bad Ref' is not a valid image reference"):
        image_purl("Bad Ref", None)
