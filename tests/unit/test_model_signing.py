"""OpenSSF model-signing bundles (mreg.provenance.openssf), checked by the real `model_signing` command line.

Every model is signed in one place and verified as a pull leaves it: a file under its recorded name in
another directory, a directory recreated elsewhere with the same relative paths, the bundle beside it. The
command-line runs happen in parallel, once per module, with no network-related environment.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from mreg.errors import IntegrityError, InvalidInputError
from mreg.provenance.openssf import sign_model, verify_model
from tests.support.keys import write_key

if not os.environ.get("CI"):  # under CI the extra is installed: a missing library fails instead of skipping
    pytest.importorskip("model_signing")

CLI = Path(sys.executable).parent / "model_signing"
PASSPHRASE = "battery-staple-5521"


@dataclass(frozen=True)
class Keys:
    p256: Path
    p256_pub: Path
    other_pub: Path
    p384_encrypted: Path
    p384_pub: Path
    ed25519: Path
    ed25519_pub: Path


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    directory = tmp_path_factory.mktemp("keys")
    p256, p256_pub = write_key(directory, "ci", ec.generate_private_key(ec.SECP256R1()))
    _, other_pub = write_key(directory, "other", ec.generate_private_key(ec.SECP256R1()))
    p384, p384_pub = write_key(directory, "release", ec.generate_private_key(ec.SECP384R1()), password=PASSPHRASE)
    ed, ed_pub = write_key(directory, "ed", ed25519.Ed25519PrivateKey.generate())
    return Keys(p256, p256_pub, other_pub, p384, p384_pub, ed, ed_pub)


def _file_model(root: Path) -> Path:
    root.mkdir(parents=True)
    model = root / "model.joblib"
    model.write_bytes(bytes(range(256)) * 64)
    return model


def _directory_model(root: Path) -> Path:
    model = root / "iris"
    (model / "weights").mkdir(parents=True)
    (model / "config.json").write_text('{"layers": 3}\n')
    (model / "tokenizer.txt").write_text("a b c\n")
    (model / "weights" / "layer0.bin").write_bytes(b"\x00\x01\x02" * 1000)
    (model / "weights" / "layer1.bin").write_bytes(b"\xff" * 4096)
    return model


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


Change = Callable[[Path, Path], tuple[Path, Path]]
"""Turns a pulled (model, bundle path) into the case's (model, bundle path)."""


@dataclass(frozen=True)
class Case:
    kind: Literal["file", "directory"]
    change: Change | None = None
    key: Literal["p256", "p384", "other"] = "p256"
    cli_accepts: bool = True
    refusal: str | None = None
    """A pattern verify_model's IntegrityError matches; None: verify_model accepts."""


@dataclass(frozen=True)
class Verified:
    model: Path
    bundle: Path
    public_key: Path
    cli: subprocess.CompletedProcess[str]


def _flip(relative: str) -> Change:
    def change(model: Path, bundle: Path) -> tuple[Path, Path]:
        _flip_byte(model / relative if relative else model)
        return model, bundle

    return change


def _add_file(model: Path, bundle: Path) -> tuple[Path, Path]:
    (model / "extra.txt").write_text("not signed\n")
    return model, bundle


def _rename_inner_file(model: Path, bundle: Path) -> tuple[Path, Path]:
    (model / "weights" / "layer1.bin").rename(model / "weights" / "layer9.bin")
    return model, bundle


def _rename_file_model(model: Path, bundle: Path) -> tuple[Path, Path]:
    return model.rename(model.with_name("renamed.joblib")), bundle


def _bundle_inside(model: Path, bundle: Path) -> tuple[Path, Path]:
    return model, bundle.rename(model / "model.sig")


MISMATCH = r"does not match its model-signing bundle: "
CASES = {
    "file": Case("file"),
    "file-changed-byte": Case("file", _flip(""), cli_accepts=False, refusal=MISMATCH + r"Hash mismatch for '\.'\.$"),
    # model_signing does not sign a single file's name: its one resource is named "."
    "file-renamed-is-accepted": Case("file", _rename_file_model),
    "directory": Case("directory"),
    "directory-p384-encrypted-key": Case("directory", key="p384"),
    "directory-changed-byte": Case(
        "directory",
        _flip("weights/layer0.bin"),
        cli_accepts=False,
        refusal=MISMATCH + r"Hash mismatch for 'weights/layer0\.bin'\.$",
    ),
    "directory-added-file": Case(
        "directory",
        _add_file,
        cli_accepts=False,
        refusal=MISMATCH + r"Extra files found in model 'iris': extra\.txt\.$",
    ),
    "directory-renamed-file": Case(
        "directory",
        _rename_inner_file,
        cli_accepts=False,
        refusal=MISMATCH + r"Extra files .*: weights/layer9\.bin; Missing files .*: weights/layer1\.bin\.$",
    ),
    "directory-wrong-public-key": Case(
        "directory", key="other", cli_accepts=False, refusal=MISMATCH + r"Key mismatch: The public key hash"
    ),
    # the command line leaves out the --signature file it is given; verify_model, given bytes, cannot
    "directory-bundle-inside": Case(
        "directory", _bundle_inside, refusal=MISMATCH + r"Extra files found in model 'iris': model\.sig\.$"
    ),
}


def _pulled(source: Path, destination: Path, bundle: bytes) -> tuple[Path, Path]:
    """A copy of `source` as a pull leaves it in `destination`, with `bundle` beside it as `<name>.sig`."""
    destination.mkdir(parents=True)
    target = destination / source.name
    if source.is_dir():
        shutil.copytree(source, target)
    else:
        shutil.copyfile(source, target)
    signature = destination / f"{source.name}.sig"
    signature.write_bytes(bundle)
    return target, signature


def _cli_verify(model: Path, signature: Path, public_key: Path, home: Path) -> subprocess.CompletedProcess[str]:
    argv = [str(CLI), "verify", "key", "--signature", str(signature), "--public_key", str(public_key), str(model)]
    environment = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home)}
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60, env=environment)


@pytest.fixture(scope="module")
def verified(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> dict[str, Verified]:
    """Each case signed, pulled, changed, and verified by the command line (all at once)."""
    home = tmp_path_factory.mktemp("home")
    private = {"p256": (keys.p256, None), "p384": (keys.p384_encrypted, PASSPHRASE), "other": (keys.p256, None)}
    public = {"p256": keys.p256_pub, "p384": keys.p384_pub, "other": keys.other_pub}
    prepared: dict[str, tuple[Path, Path, Path]] = {}
    for name, case in CASES.items():
        root = tmp_path_factory.mktemp(name)
        source = _file_model(root / "source") if case.kind == "file" else _directory_model(root / "source")
        model, bundle = _pulled(source, root / "pulled", sign_model(source, *private[case.key]))
        if case.change is not None:
            model, bundle = case.change(model, bundle)
        prepared[name] = (model, bundle, public[case.key])
    with ThreadPoolExecutor(max_workers=len(prepared)) as pool:
        runs = {name: pool.submit(_cli_verify, *paths, home) for name, paths in prepared.items()}
        return {name: Verified(*prepared[name], run.result()) for name, run in runs.items()}


@pytest.mark.parametrize("name", list(CASES))
def test_the_command_line_and_verify_model_on_a_pulled_model(verified: dict[str, Verified], name: str) -> None:
    case, run = CASES[name], verified[name]
    if case.cli_accepts:
        assert run.cli.returncode == 0, run.cli.stderr
        assert "Verification succeeded" in run.cli.stdout
    else:
        assert run.cli.returncode == 1, run.cli.stdout
        assert "Verification failed" in run.cli.stderr
    bundle = run.bundle.read_bytes()
    if case.refusal is None:
        verify_model(run.model, bundle, run.public_key)
    else:
        with pytest.raises(IntegrityError, match=case.refusal) as refused:
            verify_model(run.model, bundle, run.public_key)
        assert "\n" not in str(refused.value)
        assert "digest_value" not in str(refused.value)


def test_the_bundle_covers_each_file_by_relative_path(verified: dict[str, Verified]) -> None:
    bundle = json.loads(verified["directory"].bundle.read_bytes())
    assert bundle["mediaType"] == "application/vnd.dev.sigstore.bundle.v0.3+json"
    assert bundle["verificationMaterial"]["tlogEntries"] == []
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    names = [resource["name"] for resource in statement["predicate"]["resources"]]
    assert names == ["config.json", "tokenizer.txt", "weights/layer0.bin", "weights/layer1.bin"]


def test_top_level_git_files_are_not_signed_nested_ones_are(tmp_path: Path, keys: Keys) -> None:
    model = _directory_model(tmp_path)
    (model / ".gitattributes").write_text("*.bin filter=lfs\n")
    (model / "weights" / ".gitignore").write_text("*.tmp\n")
    bundle = sign_model(model, keys.p256, None)
    (model / ".gitattributes").write_text("changed\n")
    verify_model(model, bundle, keys.p256_pub)
    (model / "weights" / ".gitignore").write_text("changed\n")
    with pytest.raises(IntegrityError, match=r"Hash mismatch for 'weights/\.gitignore'"):
        verify_model(model, bundle, keys.p256_pub)


def test_ed25519_keys_are_refused_by_name(tmp_path: Path, keys: Keys) -> None:
    model = _file_model(tmp_path / "m")
    with pytest.raises(InvalidInputError, match=r"ed\.pem: the signing key is an Ed25519 key; .*P-256 or P-384"):
        sign_model(model, keys.ed25519, None)
    bundle = sign_model(model, keys.p256, None)
    with pytest.raises(InvalidInputError, match=r"ed\.pub: the public key is an Ed25519 key; .*P-256 or P-384"):
        verify_model(model, bundle, keys.ed25519_pub)


def test_a_wrong_or_missing_passphrase_is_refused_before_anything_is_hashed(tmp_path: Path, keys: Keys) -> None:
    model = _file_model(tmp_path / "m")
    with pytest.raises(InvalidInputError, match=r"the passphrase is wrong"):
        sign_model(model, keys.p384_encrypted, "not-it")
    with pytest.raises(InvalidInputError, match=r"is encrypted, but no passphrase was given"):
        sign_model(model, keys.p384_encrypted, None)


def test_a_missing_model_or_a_link_is_refused(tmp_path: Path, keys: Keys) -> None:
    with pytest.raises(InvalidInputError, match=r"absent: cannot be examined"):
        sign_model(tmp_path / "absent", keys.p256, None)
    model = _file_model(tmp_path / "m")
    link = tmp_path / "link"
    link.symlink_to(model)
    with pytest.raises(InvalidInputError, match=r"link: is neither a regular file nor a directory"):
        sign_model(link, keys.p256, None)


def test_malformed_or_altered_bundles_are_integrity_errors(tmp_path: Path, keys: Keys) -> None:
    model = _file_model(tmp_path / "m")
    good = json.loads(sign_model(model, keys.p256, None))
    with pytest.raises(IntegrityError, match=r"is not a JSON Sigstore bundle that names a public key"):
        verify_model(model, b"\xff not json", keys.p256_pub)
    no_hint = json.loads(json.dumps(good))
    no_hint["verificationMaterial"]["publicKey"]["hint"] = ""
    with pytest.raises(IntegrityError, match=r"names no public key"):
        verify_model(model, json.dumps(no_hint).encode(), keys.p256_pub)
    wrong_media = {**good, "mediaType": "text/plain"}
    with pytest.raises(IntegrityError, match=r"is malformed \(mediaType: "):
        verify_model(model, json.dumps(wrong_media).encode(), keys.p256_pub)
    altered = json.loads(json.dumps(good))
    statement = json.loads(base64.b64decode(altered["dsseEnvelope"]["payload"]))
    statement["predicate"]["resources"][0]["digest"] = "0" * 64
    altered["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    with pytest.raises(IntegrityError, match=r"signature does not verify with .*ci\.pub"):
        verify_model(model, json.dumps(altered).encode(), keys.p256_pub)


def _python(code: str, home: Path) -> subprocess.CompletedProcess[str]:
    environment = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env=environment,
    )


def test_importing_the_module_does_not_import_model_signing(tmp_path: Path) -> None:
    run = _python(
        "import sys, mreg.provenance.openssf; print(sorted(m for m in sys.modules if 'model_signing' in m))", tmp_path
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


def test_without_the_extra_signing_says_what_to_install(tmp_path: Path, keys: Keys) -> None:
    model = _file_model(tmp_path / "m")
    run = _python(
        f"""
        import sys
        sys.modules["model_signing"] = None  # what an environment without the library gives an import
        from pathlib import Path
        from mreg.errors import InvalidInputError
        from mreg.provenance.openssf import sign_model
        try:
            sign_model(Path({str(model)!r}), Path({str(keys.p256)!r}), None)
        except InvalidInputError as exc:
            print(exc)
        """,
        tmp_path,
    )
    assert run.returncode == 0, run.stderr
    assert "needs the extra mreg[model-signing] (pip install 'mreg[model-signing]')" in run.stdout


def test_signing_and_verifying_open_no_connection(tmp_path: Path, keys: Keys) -> None:
    model = _directory_model(tmp_path)
    run = _python(
        f"""
        import sys
        from pathlib import Path

        contacts = []
        def audit(event, args):
            if event in {{"socket.connect", "socket.getaddrinfo", "socket.gethostbyname", "socket.sendto",
                          "socket.sendmsg", "urllib.Request"}}:
                contacts.append((event, repr(args)[:120]))
        sys.addaudithook(audit)

        from mreg.provenance.openssf import sign_model, verify_model
        bundle = sign_model(Path({str(model)!r}), Path({str(keys.p256)!r}), None)
        verify_model(Path({str(model)!r}), bundle, Path({str(keys.p256_pub)!r}))
        print(contacts)
        """,
        tmp_path,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"
