"""OpenSSF model-signing bundles of a model's files (the optional extra `mreg[model-signing]`).

`sign_model` makes the Sigstore bundle that OpenSSF model signing's key method makes (`model_signing sign
key`): an in-toto statement of the SHA-256 of each of the model's files, in a DSSE envelope signed with an
ECDSA P-256 or P-384 key, offline (no Sigstore service, no transparency log). `verify_model` checks a model
against such a bundle the way `model_signing verify key --signature BUNDLE --public_key KEY MODEL` does.

Both use model_signing's default hashing, the one its command line uses without options, so that either can
check what the other made. It covers a file's bytes (not its name), or every regular file in a directory by
relative path and bytes except model_signing's ignore list (`.git`, `.github`, `.gitattributes` and
`.gitignore` at the top of the directory); not empty directories, nor executable bits. Keep the bundle
beside the model: inside a directory model, `verify_model` would count it as an added file.

The library is imported only when a function is called: importing it takes half a second or more.
"""

from __future__ import annotations

import ast
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mreg.errors import IntegrityError, InvalidInputError
from mreg.provenance._keys import _describe, load_signing_key

if TYPE_CHECKING:
    from model_signing import hashing
    from pydantic import ValidationError

__all__ = ["EXTRA", "sign_model", "verify_model"]

EXTRA = "mreg[model-signing]"
_CURVES = frozenset({"secp256r1", "secp384r1"})
_KEY_KINDS = "OpenSSF model signing's key method takes ECDSA P-256 or P-384 keys only"


def sign_model(model_path: Path, key_path: Path, password: str | None) -> bytes:
    """The Sigstore bundle (JSON) of the model at `model_path` (a file or a directory), signed offline with
    the PEM private key in `key_path` (ECDSA P-256 or P-384), decrypted with `password` when encrypted."""
    key = load_signing_key(key_path, password)
    if not isinstance(key.private_key, ec.EllipticCurvePrivateKey):
        raise InvalidInputError(f"{key_path}: the signing key is {_describe(key.private_key)}; {_KEY_KINDS}.")
    _require_model(model_path)
    _require_library()
    from model_signing import signing

    # model_signing hands the password to cryptography's load_pem_private_key, which takes bytes only
    secret = None if password is None else password.encode()
    config = signing.Config()  # type: ignore[no-untyped-call]
    config.use_elliptic_key_signer(private_key=key_path, password=secret)  # type: ignore[arg-type]
    with tempfile.TemporaryDirectory(prefix="mreg-model-signing-") as scratch:
        bundle = Path(scratch) / "model.sig"
        try:
            config.set_hashing_config(_hashing_config()).sign(model_path, bundle)
        except (OSError, ValueError) as exc:
            raise InvalidInputError(f"{model_path}: cannot be signed: {_one_line(exc)}.") from exc
        return bundle.read_bytes()


def verify_model(model_path: Path, bundle: bytes, public_key_path: Path) -> None:
    """Check the model at `model_path` against its Sigstore `bundle` and the PEM public key in
    `public_key_path`; IntegrityError with the reason when the bundle does not verify or the model is not
    the signed one (a file model's bytes changed; a file of a directory model changed, added, removed or
    renamed)."""
    _require_public_key(public_key_path)
    _require_model(model_path)
    _require_key_bundle(model_path, bundle)
    _require_library()
    from model_signing import verifying
    from pydantic import ValidationError

    config = verifying.Config()  # type: ignore[no-untyped-call]
    config.use_elliptic_key_verifier(public_key=public_key_path)
    with tempfile.TemporaryDirectory(prefix="mreg-model-signing-") as scratch:
        bundle_path = Path(scratch) / "model.sig"
        bundle_path.write_bytes(bundle)
        try:
            config.set_hashing_config(_hashing_config()).verify(model_path, bundle_path)
        except InvalidSignature as exc:
            raise IntegrityError(
                f"{model_path}: its model-signing bundle's signature does not verify with {public_key_path}."
            ) from exc
        except ValidationError as exc:
            raise IntegrityError(f"{model_path}: its model-signing bundle is malformed ({_first_error(exc)}).") from exc
        except (KeyError, TypeError, IndexError) as exc:
            raise IntegrityError(f"{model_path}: its model-signing bundle is malformed ({_one_line(exc)}).") from exc
        except (OSError, ValueError) as exc:
            raise IntegrityError(f"{model_path}: does not match its model-signing bundle: {_mismatch(exc)}.") from exc


def _hashing_config() -> hashing.Config:
    """model_signing's default hashing, the command line's: a SHA-256 per file, its ignore list, no links."""
    from model_signing import hashing

    return hashing.Config()  # type: ignore[no-untyped-call]


def _require_library() -> None:
    try:
        import model_signing  # noqa: F401
    except ImportError as exc:
        raise InvalidInputError(
            f"OpenSSF model signing needs the extra {EXTRA} (pip install '{EXTRA}'); importing it failed: {exc}."
        ) from exc


def _require_model(model_path: Path) -> None:
    try:
        mode = os.lstat(model_path).st_mode
    except OSError as exc:
        raise InvalidInputError(f"{model_path}: cannot be examined ({exc.strerror or exc}).") from exc
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise InvalidInputError(f"{model_path}: is neither a regular file nor a directory (links are refused).")


def _require_public_key(path: Path) -> None:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidInputError(f"{path}: cannot read the public key ({exc.strerror or exc}).") from exc
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise InvalidInputError(f"{path}: is not a PEM public key.") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name not in _CURVES:
        raise InvalidInputError(f"{path}: the public key is {_describe(key)}; {_KEY_KINDS}.")


def _require_key_bundle(model_path: Path, bundle: bytes) -> None:
    """Refuse what is not a key-method bundle before model_signing reads it (it prints a warning to stdout
    for a bundle that names no public key)."""
    try:
        document = json.loads(bundle)
        hint = document["verificationMaterial"]["publicKey"]["hint"]
    except (ValueError, KeyError, TypeError) as exc:
        raise IntegrityError(
            f"{model_path}: its model-signing bundle is not a JSON Sigstore bundle that names a public key."
        ) from exc
    if not isinstance(hint, str) or not hint:
        raise IntegrityError(f"{model_path}: its model-signing bundle names no public key.")


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"])
    return f"{where}: {error['msg']}" if where else error["msg"]


def _mismatch(exc: OSError | ValueError) -> str:
    """model_signing's reason, with its list of differences (`Signature mismatch: [...]`) shown without the
    digests' byte strings."""
    text = str(exc)
    prefix = "Signature mismatch: "
    if not text.startswith(prefix):
        return _one_line(exc)
    try:
        differences = ast.literal_eval(text.removeprefix(prefix))
    except (ValueError, SyntaxError):
        return _one_line(exc)
    if not isinstance(differences, list) or not all(isinstance(item, str) for item in differences):
        return _one_line(exc)
    return "; ".join(item.split(": Expected ", 1)[0] for item in differences) or _one_line(exc)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()).rstrip(".") or type(exc).__name__
