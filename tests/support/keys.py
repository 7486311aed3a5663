"""Signing keys for tests: a private key file and its public key file."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes


def write_key(
    directory: Path, name: str, key: PrivateKeyTypes | None = None, *, password: str | None = None
) -> tuple[Path, Path]:
    """`NAME.pem` (`key`, else a new ECDSA P-256 key; encrypted with `password`) and `NAME.pub` in `directory`."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    encryption = serialization.BestAvailableEncryption(password.encode()) if password else serialization.NoEncryption()
    private = directory / f"{name}.pem"
    public = directory / f"{name}.pub"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption))
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return private, public


def ed25519_key() -> ed25519.Ed25519PrivateKey:
    """A new Ed25519 private key."""
    return ed25519.Ed25519PrivateKey.generate()
