"""Signing keys (PEM private keys) and trusted keys (PEM public keys, or a TOML/JSON list with names and
validity windows). ECDSA P-256 (SHA-256), ECDSA P-384 (SHA-384) and Ed25519 only.

A key id is the hex SHA-256 of the public key's SubjectPublicKeyInfo DER. No message names a passphrase or
shows key material.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeAlias

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from mreg.errors import InvalidInputError

PrivateKey: TypeAlias = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PublicKey: TypeAlias = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey

SUPPORTED = "ECDSA P-256, ECDSA P-384 or Ed25519"
_CURVE_HASHES: dict[str, type[hashes.SHA256 | hashes.SHA384]] = {
    "secp256r1": hashes.SHA256,
    "secp384r1": hashes.SHA384,
}
_PEM_BLOCK_RE = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n.*?-----END \1-----", re.DOTALL)
_KEY_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}")
_ENTRY_FIELDS = frozenset({"name", "key", "path", "not_before", "not_after"})


def key_id(public_key: PublicKey) -> str:
    """Hex SHA-256 of the key's SubjectPublicKeyInfo DER."""
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def _ecdsa(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> ec.ECDSA:
    """ECDSA with the hash that matches the key's curve."""
    return ec.ECDSA(_CURVE_HASHES[key.curve.name]())


@dataclass(frozen=True)
class SigningKey:
    """A private key mreg signs with; its repr shows the key id only."""

    private_key: PrivateKey = field(repr=False)
    keyid: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "keyid", key_id(self.private_key.public_key()))

    def sign(self, data: bytes) -> bytes:
        """The signature of `data`: DER-encoded ECDSA, or raw Ed25519."""
        if isinstance(self.private_key, ed25519.Ed25519PrivateKey):
            return self.private_key.sign(data)
        return self.private_key.sign(data, _ecdsa(self.private_key))

    def public_pem(self) -> str:
        """The public key as a PEM `PUBLIC KEY` block (SubjectPublicKeyInfo)."""
        return (
            self.private_key.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode("ascii")
        )


@dataclass(frozen=True)
class TrustedKey:
    """A public key a reader trusts, by name, optionally only within [not_before, not_after]."""

    name: str
    public_key: PublicKey = field(repr=False)
    not_before: datetime | None = None
    not_after: datetime | None = None
    keyid: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "keyid", key_id(self.public_key))

    def verify(self, data: bytes, signature: bytes) -> bool:
        """Whether `signature` is this key's signature of `data`."""
        try:
            if isinstance(self.public_key, ed25519.Ed25519PublicKey):
                self.public_key.verify(signature, data)
            else:
                self.public_key.verify(signature, data, _ecdsa(self.public_key))
        except InvalidSignature:
            return False
        return True

    def valid_at(self, when: datetime) -> bool:
        """Whether the key's validity window (both ends inclusive) holds `when` (an aware datetime)."""
        return self.window_refusal(when) is None

    def window_refusal(self, when: datetime) -> str | None:
        """Why the key is not valid at `when` (`the key NAME was valid only until ...`), None when it is."""
        if self.not_before is not None and when < self.not_before:
            return f"the key {self.name} is valid only from {self.not_before.isoformat()}"
        if self.not_after is not None and when > self.not_after:
            return f"the key {self.name} was valid only until {self.not_after.isoformat()}"
        return None


def load_signing_key(path: Path, password: str | None) -> SigningKey:
    """The PEM private key in `path`, decrypted with `password` when it is encrypted."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidInputError(f"{path}: cannot read the signing key ({exc.strerror or exc}).") from exc
    encrypted = b"ENCRYPTED" in data
    try:
        key = serialization.load_pem_private_key(data, None if password is None else password.encode())
    except TypeError as exc:  # cryptography's way of saying the passphrase is missing or superfluous
        reason = (
            "is encrypted, but no passphrase was given" if encrypted else "is not encrypted, but a passphrase was given"
        )
        raise InvalidInputError(f"{path}: the signing key {reason}.") from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        reason = "the passphrase is wrong" if encrypted else "it is not a PEM private key mreg can read"
        raise InvalidInputError(f"{path}: cannot load the signing key: {reason}.") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey) or not _supported(key):
        raise InvalidInputError(f"{path}: the signing key is {_describe(key)}; mreg signs with {SUPPORTED} keys.")
    return SigningKey(key)


def load_trusted_keys(path: Path) -> list[TrustedKey]:
    """The keys in a trusted-keys file: `.toml` (`[[keys]]` tables), `.json` (`{"keys": [...]}`), else PEM
    `PUBLIC KEY` blocks (named `<file name>#1`, `#2`, ...). An entry has a `name`, a PEM `key` or a `path`
    (relative to the file), and optional `not_before`/`not_after` dates with a time zone."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidInputError(f"{path}: cannot read the trusted keys ({exc.strerror or exc}).") from exc
    if path.suffix in {".toml", ".json"}:
        return _load_key_list(path, data)
    keys = [
        TrustedKey(f"{path.name}#{number}", public_key)
        for number, public_key in enumerate(_public_keys(data, str(path)), start=1)
    ]
    if not keys:
        raise InvalidInputError(f"{path}: holds no PEM PUBLIC KEY block.")
    return keys


def _load_key_list(path: Path, data: bytes) -> list[TrustedKey]:
    document: Any
    try:
        document = tomllib.loads(data.decode()) if path.suffix == ".toml" else json.loads(data)
    except (UnicodeDecodeError, tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInputError(f"{path}: is not valid {path.suffix[1:].upper()} ({exc}).") from exc
    if not isinstance(document, dict) or set(document) != {"keys"} or not isinstance(document["keys"], list):
        raise InvalidInputError(f"{path}: must hold one list `keys` of key entries and nothing else.")
    if not document["keys"]:
        raise InvalidInputError(f"{path}: the list `keys` is empty.")
    keys = [_entry(path, number, entry) for number, entry in enumerate(document["keys"], start=1)]
    names = [key.name for key in keys]
    for name in names:
        if names.count(name) > 1:
            raise InvalidInputError(f"{path}: more than one key is named {name!r}.")
    return keys


def _entry(path: Path, number: int, entry: object) -> TrustedKey:
    """One `keys` entry, checked; messages name the file and the entry."""
    where = f"{path}: keys entry {number}"
    if not isinstance(entry, dict):
        raise InvalidInputError(f"{where}: is not a table of name, key or path, not_before and not_after.")
    name = entry.get("name")
    if not isinstance(name, str) or _KEY_NAME_RE.fullmatch(name) is None:
        raise InvalidInputError(
            f"{where}: `name` must be 1-64 letters, digits and '._@+-', starting with a letter or digit."
        )
    where += f" ({name})"
    unknown = sorted(set(entry) - _ENTRY_FIELDS)
    if unknown:
        raise InvalidInputError(
            f"{where}: unknown field {unknown[0]!r} (use name, key or path, not_before, not_after)."
        )
    if ("key" in entry) == ("path" in entry):
        raise InvalidInputError(f"{where}: give exactly one of `key` (PEM text) and `path` (a PEM file).")
    if "key" in entry:
        if not isinstance(entry["key"], str):
            raise InvalidInputError(f"{where}: `key` must be the PEM text of a public key.")
        pem, origin = entry["key"].encode(), where
    else:
        if not isinstance(entry["path"], str) or not entry["path"]:
            raise InvalidInputError(f"{where}: `path` must name a PEM file.")
        key_path = path.parent / entry["path"]
        try:
            pem = key_path.read_bytes()
        except OSError as exc:
            raise InvalidInputError(f"{where}: cannot read {key_path} ({exc.strerror or exc}).") from exc
        origin = f"{where}: {key_path}"
    public_keys = _public_keys(pem, origin)
    if len(public_keys) != 1:
        raise InvalidInputError(f"{origin}: must hold exactly one PEM PUBLIC KEY block, not {len(public_keys)}.")
    not_before, not_after = (_date(where, entry, bound) for bound in ("not_before", "not_after"))
    if not_before is not None and not_after is not None and not_after < not_before:
        raise InvalidInputError(f"{where}: not_after ({not_after.isoformat()}) is before not_before.")
    return TrustedKey(name, public_keys[0], not_before, not_after)


def _date(where: str, entry: Mapping[str, object], bound: str) -> datetime | None:
    value = entry.get(bound)
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError as exc:
            raise InvalidInputError(
                f"{where}: {bound} {value!r} is not an ISO 8601 date and time (2026-01-01T00:00:00Z)."
            ) from exc
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise InvalidInputError(f"{where}: {bound} must be a date and time with a time zone (2026-01-01T00:00:00Z).")
    return value


def _public_keys(data: bytes, origin: str) -> list[PublicKey]:
    """The supported public keys of every PEM block in `data`; any other block or key is refused."""
    keys: list[PublicKey] = []
    for number, block in enumerate(_PEM_BLOCK_RE.finditer(data), start=1):
        label = block[1].decode("ascii")
        if label != "PUBLIC KEY":
            raise InvalidInputError(f"{origin}: PEM block {number} is a {label}; trusted keys are PUBLIC KEY blocks.")
        try:
            key = serialization.load_pem_public_key(block[0])
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise InvalidInputError(f"{origin}: PEM block {number} is not a valid public key.") from exc
        if not isinstance(key, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey) or not _supported(key):
            raise InvalidInputError(f"{origin}: PEM block {number} is {_describe(key)}; use {SUPPORTED} keys.")
        keys.append(key)
    return keys


def _supported(key: PrivateKey | PublicKey) -> bool:
    return (
        not isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) or key.curve.name in _CURVE_HASHES
    )


def _describe(key: object) -> str:
    """`an RSA key`, `an ECDSA key on curve secp521r1`, ... (for messages)."""
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        return f"an ECDSA key on curve {key.curve.name}"
    kind = type(key).__name__.removeprefix("_").removesuffix("PrivateKey").removesuffix("PublicKey")
    return f"an {kind} key" if kind[:1] in set("AEIORX") else f"a {kind} key"
