"""Signed records on the local store, without Docker: register signs, verify and `get` check the signature
against trusted keys, and each way of tampering with a record, its envelope, its SBOM or its key fails."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from mreg import pipeline
from mreg._provenance import signing_key
from mreg.engine import Engine
from mreg.errors import IntegrityError, InvalidInputError, MregError, NotFoundError
from mreg.provenance._keys import load_trusted_keys
from mreg.provenance.attestation import Trust
from mreg.provenance.statement import PREDICATE_TYPE, parse_statement
from mreg.records import Record
from mreg.registry import Check, Registry
from mreg.spec import load_spec
from tests.support import DIGESTS, REPO, copy_example, mreg, mreg_in_process, save_build
from tests.support.keys import ed25519_key, write_key

PASSPHRASE = "correct horse battery staple"


def no_engine() -> Engine:
    raise AssertionError("register opened the engine for a model that is not ONNX")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    project = copy_example(tmp_path / "project")
    save_build(project)
    (project / "model.joblib").write_bytes(b"a model" * 1000)
    return project


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, tuple[Path, Path]]:
    directory = tmp_path / "keys"
    directory.mkdir()
    return {"ci": write_key(directory, "ci"), "other": write_key(directory, "other", ed25519_key())}


def register(project: Path, key: Path | None = None) -> Record:
    spec = load_spec(project / "registry.toml")
    return pipeline.register(spec, project / "model.joblib", engine=no_engine, signing_key=signing_key(key))


def registry_dir(project: Path) -> Path:
    return project / ".mreg" / "registry" / "iris-rf"


def envelope_files(project: Path, version: int) -> list[Path]:
    return sorted((registry_dir(project) / "signatures" / f"{version:010d}").glob("*.json"))


def signature_rows(project: Path, ref: str, trusted: Path, *, required: bool = False) -> dict[str, Check]:
    """What `verify` says of everything but the images (no engine answers here)."""

    def engine() -> Engine:
        raise MregError("no engine here")

    registry = Registry.from_spec(load_spec(project / "registry.toml"))
    trust = Trust(tuple(load_trusted_keys(trusted)), required=required)
    checks = registry.verify(registry.get(ref), engine, trust=trust)
    return {check.subject: check for check in checks if check.subject not in {"train", "serve"}}


def test_register_signs_a_statement_of_the_record_beside_it(project: Path, keys: dict[str, tuple[Path, Path]]) -> None:
    record = register(project, keys["ci"][0])
    registry = Registry.from_spec(load_spec(project / "registry.toml"))
    status = registry.signatures(record, load_trusted_keys(keys["ci"][1]))
    assert status.signed_by == ("ci.pub#1",)
    statement = status.statement
    assert statement is not None
    assert statement.predicate_type == PREDICATE_TYPE
    assert statement.subjects["record"] == record.digest
    assert statement.subjects["model"] == f"sha256:{record.model.sha256}"
    assert statement.subjects["image/serve"] == DIGESTS["serve"]
    assert set(statement.subjects) == {"record", "model", "image/train", "image/serve", "sbom/train", "sbom/serve"}
    predicate = statement.predicate
    assert predicate["buildDefinition"]["externalParameters"]["spec"]["digest"]["sha256"] == record.spec_sha256
    assert predicate["runDetails"]["metadata"]["mreg_actor"]
    # the record is exactly what an unsigned register writes: the signature is beside it, never inside
    assert "signature" not in json.loads((registry_dir(project) / "versions" / "0000000001.json").read_text())


def test_verify_accepts_the_signature_and_the_sboms(project: Path, keys: dict[str, tuple[Path, Path]]) -> None:
    register(project, keys["ci"][0])
    env = {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}  # the made-up images fail; the rest must not
    options = ("--engine", "docker", "--json", "--trusted-keys", str(keys["ci"][1]), "--require-signature")
    result = mreg("verify", "iris-rf:1", *options, cwd=project, check=False, env=env)
    assert result.returncode == 6
    rows = {row["subject"]: row for row in json.loads(result.stdout)}
    assert rows["signature"] == {"subject": "signature", "ok": True, "detail": "signed by ci.pub#1"}
    assert rows["sbom/train"]["ok"]
    assert rows["sbom/serve"]["ok"]
    assert rows["record"]["ok"]
    assert rows["model"]["ok"]
    assert not rows["serve"]["ok"]


def test_sbom_prints_the_images_cyclonedx_document(
    project: Path, keys: dict[str, tuple[Path, Path]], monkeypatch: pytest.MonkeyPatch
) -> None:
    register(project, keys["ci"][0])
    monkeypatch.setenv("MREG_TRUSTED_KEYS", str(keys["ci"][1]))
    code, out, err = mreg_in_process("sbom", "iris-rf:1", "--stage", "train", cwd=project, monkeypatch=monkeypatch)
    assert code == 0, err
    document = json.loads(out)
    assert document["specVersion"] == "1.6"
    names = {component["name"]: component for component in document["components"]}
    assert names["pandas"]["purl"].startswith("pkg:pypi/pandas@")
    assert names["pandas"]["hashes"][0]["alg"] == "SHA-256"


def test_get_with_trusted_keys_refuses_an_unsigned_version(project: Path, keys: dict[str, tuple[Path, Path]]) -> None:
    register(project, keys["ci"][0])
    register(project)
    registry = Registry.from_spec(load_spec(project / "registry.toml"))
    assert registry.get("iris-rf:1", trusted_keys=keys["ci"][1]).version == 1
    with pytest.raises(IntegrityError, match=r"iris-rf:2 is not signed, and a signature by a trusted key is required"):
        registry.get("iris-rf:2", trusted_keys=str(keys["ci"][1]))
    with pytest.raises(IntegrityError, match="no valid signature by a trusted key"):
        registry.get("iris-rf:1", trusted_keys=keys["other"][1])


def test_an_edited_and_resealed_record_fails(project: Path, keys: dict[str, tuple[Path, Path]]) -> None:
    record = register(project, keys["ci"][0])
    path = registry_dir(project) / "versions" / "0000000001.json"
    forged = record.model_copy(update={"packages": {**record.packages, "serve": ["fastapi==0.1.0"]}}).sealed()
    path.write_text(forged.to_json())  # a digest that checks out: only the signature tells
    registry = Registry.from_spec(load_spec(project / "registry.toml"))
    assert registry.get("iris-rf:1").digest == forged.digest
    with pytest.raises(IntegrityError, match=r"the signed statement is not of this record: it names record sha256:"):
        registry.get("iris-rf:1", trusted_keys=keys["ci"][1])


def test_a_swapped_envelope_payload_fails(project: Path, keys: dict[str, tuple[Path, Path]]) -> None:
    register(project, keys["ci"][0])
    [path] = envelope_files(project, 1)
    envelope = json.loads(path.read_text())
    statement = json.loads(base64.b64decode(envelope["payload"]))
    statement["predicate"]["runDetails"]["metadata"]["mreg_actor"] = "mallory"
    envelope["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    path.write_text(json.dumps(envelope))
    registry = Registry.from_spec(load_spec(project / "registry.toml"))
    with pytest.raises(IntegrityError, match="no valid signature by a trusted key"):
        registry.get("iris-rf:1", trusted_keys=keys["ci"][1])


def test_an_envelope_from_another_record_fails(project: Path, keys: dict[str, tuple[Path, Path]]) -> None:
    register(project, keys["ci"][0])
    register(project)
    [path] = envelope_files(project, 1)
    target = registry_dir(project) / "signatures" / "0000000002"
    target.mkdir(parents=True)
    shutil.copy(path, target / path.name)
    registry = Registry.from_spec(load_spec(project / "registry.toml"))
    with pytest.raises(IntegrityError, match=r"not of this record: it names record sha256:\w+; iris-rf:2 has sha256:"):
        registry.get("iris-rf:2", trusted_keys=keys["ci"][1])


def test_a_signature_by_an_untrusted_key_fails_verify(
    project: Path, keys: dict[str, tuple[Path, Path]], monkeypatch: pytest.MonkeyPatch
) -> None:
    register(project, keys["other"][0])
    rows = signature_rows(project, "iris-rf:1", keys["ci"][1])
    assert not rows["signature"].ok
    assert "no trusted key verifies" in rows["signature"].detail or "untrusted" in rows["signature"].detail


def test_a_key_outside_its_window_fails(
    project: Path, keys: dict[str, tuple[Path, Path]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    register(project, keys["ci"][0])
    expired = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    trusted = tmp_path / "trusted.toml"
    trusted.write_text(f'[[keys]]\nname = "ci-2025"\npath = "keys/ci.pub"\nnot_after = "{expired}"\n')
    rows = signature_rows(project, "iris-rf:1", trusted)
    assert not rows["signature"].ok
    assert "the key ci-2025 was valid only until" in rows["signature"].detail


def test_a_replaced_model_blob_fails_while_the_signature_holds(
    project: Path, keys: dict[str, tuple[Path, Path]], monkeypatch: pytest.MonkeyPatch
) -> None:
    record = register(project, keys["ci"][0])
    blob = Path(record.model.uri.removeprefix("file://"))
    blob.chmod(0o644)
    blob.write_bytes(b"another model")
    rows = signature_rows(project, "iris-rf:1", keys["ci"][1])
    assert rows["signature"].ok
    assert not rows["model"].ok
    assert "the record says" in rows["model"].detail


def test_a_changed_sbom_fails(
    project: Path, keys: dict[str, tuple[Path, Path]], monkeypatch: pytest.MonkeyPatch
) -> None:
    record = register(project, keys["ci"][0])
    registry = Registry.from_spec(load_spec(project / "registry.toml"))
    digest = registry.statement(record).subjects["sbom/serve"]
    path = registry_dir(project) / "sboms" / f"{digest.removeprefix('sha256:')}.json"
    path.write_text(path.read_text().replace("fastapi", "fastapj"))
    rows = signature_rows(project, "iris-rf:1", keys["ci"][1])
    assert rows["sbom/train"].ok
    assert not rows["sbom/serve"].ok
    assert "was changed" in rows["sbom/serve"].detail


def test_a_removed_signature_fails_only_when_one_is_required(
    project: Path, keys: dict[str, tuple[Path, Path]], monkeypatch: pytest.MonkeyPatch
) -> None:
    register(project, keys["ci"][0])
    for path in envelope_files(project, 1):
        path.unlink()
    trusted = keys["ci"][1]
    assert signature_rows(project, "iris-rf:1", trusted)["signature"].ok
    required = signature_rows(project, "iris-rf:1", trusted, required=True)
    assert not required["signature"].ok
    assert required["signature"].detail == "not signed (a signature by a trusted key is required)"


def test_the_specs_policy_makes_every_read_check(
    project: Path, keys: dict[str, tuple[Path, Path]], monkeypatch: pytest.MonkeyPatch
) -> None:
    register(project)
    shutil.copy(keys["ci"][1], project / "trusted.pub")
    spec = project / "registry.toml"
    spec.write_text(
        spec.read_text().replace("[registry]", '[registry]\ntrusted_keys = "trusted.pub"\nrequire_signature = true', 1)
    )
    code, _, err = mreg_in_process("deps", "iris-rf:1", cwd=project, monkeypatch=monkeypatch)
    assert (code, err) == (6, "error: iris-rf:1 is not signed, and a signature by a trusted key is required.\n")
    monkeypatch.setenv("MREG_SIGNING_KEY", str(keys["ci"][0]))
    assert mreg_in_process("sign", "iris-rf:1", cwd=project, monkeypatch=monkeypatch)[0] == 0
    code, out, err = mreg_in_process("deps", "iris-rf:1", cwd=project, monkeypatch=monkeypatch)
    assert code == 0, err
    assert "scikit-learn==" in out


def test_a_second_party_signs_later_once(
    project: Path, keys: dict[str, tuple[Path, Path]], monkeypatch: pytest.MonkeyPatch
) -> None:
    record = register(project, keys["ci"][0])
    before = (registry_dir(project) / "versions" / "0000000001.json").read_bytes()
    monkeypatch.setenv("MREG_SIGNING_KEY", str(keys["other"][0]))
    code, _, err = mreg_in_process("sign", "iris-rf:1", cwd=project, monkeypatch=monkeypatch)
    assert code == 0
    assert "signed iris-rf:1 with the key" in err
    code, _, err = mreg_in_process("sign", "iris-rf:1", cwd=project, monkeypatch=monkeypatch)
    assert code == 0
    assert "already signed" in err
    assert len(envelope_files(project, 1)) == 2
    assert (registry_dir(project) / "versions" / "0000000001.json").read_bytes() == before
    registry = Registry.from_spec(load_spec(project / "registry.toml"))
    both = load_trusted_keys(keys["ci"][1]) + load_trusted_keys(keys["other"][1])
    assert sorted(registry.signatures(record, both).signed_by) == ["ci.pub#1", "other.pub#1"]
    assert registry.get("iris-rf:1", trusted_keys=keys["other"][1]).digest == record.digest


def test_sign_refuses_a_statement_of_another_record(project: Path, keys: dict[str, tuple[Path, Path]]) -> None:
    register(project)
    register(project)
    provenance = registry_dir(project) / "provenance"
    shutil.copy(provenance / "0000000001.json", provenance / "0000000002.json")
    registry = Registry.from_spec(load_spec(project / "registry.toml"))
    key = signing_key(keys["ci"][0])
    assert key is not None
    with pytest.raises(IntegrityError, match=r"iris-rf:2: its stored statement is not of this record"):
        registry.sign("iris-rf:2", key)
    assert envelope_files(project, 2) == []


def test_a_version_without_a_statement_cannot_be_signed(project: Path, keys: dict[str, tuple[Path, Path]]) -> None:
    register(project)
    (registry_dir(project) / "provenance" / "0000000001.json").unlink()
    key = signing_key(keys["ci"][0])
    assert key is not None
    with pytest.raises(NotFoundError, match="iris-rf:1 has no provenance statement"):
        Registry.from_spec(load_spec(project / "registry.toml")).sign("iris-rf:1", key)


def test_a_wrong_passphrase_stops_register_before_any_upload(project: Path, tmp_path: Path) -> None:
    private, _ = write_key(tmp_path, "locked", password=PASSPHRASE)
    env = {"MREG_SIGNING_KEY": str(private), "MREG_SIGNING_KEY_PASSWORD": "wrong"}
    result = mreg("register", "model.joblib", cwd=project, check=False, env=env)
    assert result.returncode == 2
    assert result.stderr == f"error: {private}: cannot load the signing key: the passphrase is wrong.\n"
    assert not (project / ".mreg" / "models").exists()
    assert not registry_dir(project).exists()
    unreadable = mreg(
        "register", "model.joblib", cwd=project, check=False, env={"MREG_SIGNING_KEY": str(tmp_path / "absent.pem")}
    )
    assert unreadable.returncode == 2
    assert "cannot read the signing key" in unreadable.stderr


def test_keys_and_passphrases_land_nowhere(project: Path, tmp_path: Path) -> None:
    private, public = write_key(tmp_path, "locked", password=PASSPHRASE)
    env = {"MREG_SIGNING_KEY": str(private), "MREG_SIGNING_KEY_PASSWORD": PASSPHRASE, "MREG_DEBUG": "1"}
    result = mreg("register", "model.joblib", "--json", cwd=project, env=env)
    key = serialization.load_pem_private_key(private.read_bytes(), PASSPHRASE.encode())
    secrets = [
        PASSPHRASE.encode(),
        private.read_bytes(),
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    ]
    written = [path.read_bytes() for path in (project / ".mreg").rglob("*") if path.is_file()]
    for secret in secrets:
        assert secret not in (result.stdout + result.stderr).encode()
        assert not any(secret in data for data in written)
    assert load_trusted_keys(public)[0].keyid in result.stderr


def test_a_required_signature_needs_trusted_keys(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    register(project)
    monkeypatch.setenv("MREG_REQUIRE_SIGNATURE", "1")
    code, _, err = mreg_in_process("show", "iris-rf:1", cwd=project, monkeypatch=monkeypatch)
    assert code == InvalidInputError.exit_code
    assert "a signature is required, but no trusted keys were given" in err


def test_the_statement_is_the_same_as_the_signed_one(project: Path, keys: dict[str, tuple[Path, Path]]) -> None:
    record = register(project, keys["ci"][0])
    stored = (registry_dir(project) / "provenance" / "0000000001.json").read_bytes()
    [path] = envelope_files(project, 1)
    assert base64.b64decode(json.loads(path.read_text())["payload"]) == stored
    assert parse_statement(stored).subjects["record"] == record.digest


def test_a_pulled_directory_model_verifies_with_openssf_model_signing(
    project: Path, keys: dict[str, tuple[Path, Path]], tmp_path: Path
) -> None:
    model = shutil.copytree(REPO / "tests" / "data" / "models" / "saved_model", project / "saved_model")
    env = {"MREG_SIGNING_KEY": str(keys["ci"][0])}
    mreg("register", "saved_model", "--model-signature", cwd=project, env=env)
    pulled = tmp_path / "pulled"
    pulled.mkdir()
    mreg("pull", "iris-rf:1", "-o", str(pulled), "--model-signature", cwd=project)
    assert sorted(path.name for path in pulled.iterdir()) == ["saved_model", "saved_model.sig"]
    cli = Path(sys.executable).parent / "model_signing"
    argv = [str(cli), "verify", "key", "--signature", str(pulled / "saved_model.sig"), "--public_key"]
    accepted = subprocess.run(
        [*argv, str(keys["ci"][1]), str(pulled / "saved_model")], check=False, capture_output=True, text=True
    )
    assert accepted.returncode == 0, accepted.stderr
    (pulled / "saved_model" / "fingerprint.pb").write_bytes(b"changed")
    refused = subprocess.run(
        [*argv, str(keys["ci"][1]), str(pulled / "saved_model")], check=False, capture_output=True, text=True
    )
    assert refused.returncode != 0
    assert model.is_dir()


def test_pull_asks_for_a_bundle_the_version_does_not_have(project: Path, tmp_path: Path) -> None:
    register(project)
    destination = tmp_path / "pulled"
    destination.mkdir()
    result = mreg("pull", "iris-rf:1", "-o", str(destination), "--model-signature", cwd=project, check=False)
    assert result.returncode == 3
    assert "iris-rf:1 has no model-signing bundle (register it with --model-signature)" in result.stderr
    assert list(destination.iterdir()) == []


def test_the_ui_shows_who_signed_a_version(project: Path, keys: dict[str, tuple[Path, Path]]) -> None:
    from mreg.ui.pages import version_page

    register(project, keys["ci"][0])
    spec = load_spec(project / "registry.toml")
    unchecked = version_page(Registry.from_spec(spec), "iris-rf", 1)
    assert unchecked.context["signature"].signed
    assert not unchecked.context["checked"]
    trust = Trust(tuple(load_trusted_keys(keys["ci"][1])), required=True)
    checked = version_page(Registry.from_spec(spec, trust=trust), "iris-rf", 1)
    assert checked.context["signature"].signed_by == ("ci.pub#1",)
    from starlette.testclient import TestClient

    from mreg.ui.app import create_app

    with TestClient(create_app(Registry.from_spec(spec, trust=trust))) as client:
        page = client.get("/models/iris-rf/versions/1/").text
    assert "signed by ci.pub#1 (a trusted key; the statement names exactly this record)" in page
    with TestClient(create_app(Registry.from_spec(spec))) as client:
        page = client.get("/models/iris-rf/versions/1/").text
    assert "not checked: no trusted keys are configured" in page


@pytest.mark.parametrize("value", ["1", "true", "yes", "on"])
def test_the_require_signature_variable_reads_as_clicks_flags_do(
    project: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    register(project)
    monkeypatch.setenv("MREG_REQUIRE_SIGNATURE", value)
    code, _, err = mreg_in_process("deps", "iris-rf:1", cwd=project, monkeypatch=monkeypatch)
    assert code == InvalidInputError.exit_code
    assert "a signature is required" in err


def test_a_require_signature_variable_that_is_no_boolean_is_refused(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    register(project)
    monkeypatch.setenv("MREG_REQUIRE_SIGNATURE", "maybe")
    code, _, err = mreg_in_process("deps", "iris-rf:1", cwd=project, monkeypatch=monkeypatch)
    assert (code, err) == (
        2,
        "error: MREG_REQUIRE_SIGNATURE='maybe' is not a boolean (1 or 0, true or false, yes or no).\n",
    )
