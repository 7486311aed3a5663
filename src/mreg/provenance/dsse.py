"""DSSE v1 envelopes: sign a payload, add a second party's signature, verify against trusted keys.

What is signed is the pre-authentication encoding (PAE) of the payload type and the payload, so neither can
be changed alone. A signature's `keyid` is only a hint of which trusted key to try first: a signature counts
when a trusted key, valid at the time of verification, verifies it.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mreg.errors import IntegrityError, InvalidInputError
from mreg.provenance._keys import SigningKey, TrustedKey

MAX_SIGNATURES = 16
_FIELDS = frozenset({"payloadType", "payload", "signatures"})


def pae(payload_type: str, payload: bytes) -> bytes:
    """`DSSEv1 SP LEN(type) SP type SP LEN(body) SP body`, lengths in ASCII decimal bytes."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %b %d %b" % (len(kind), kind, len(payload), payload)


def sign_envelope(payload: bytes, payload_type: str, key: SigningKey) -> dict[str, Any]:
    """A DSSE envelope of `payload` signed by `key`."""
    return {
        "payloadType": payload_type,
        "payload": _encode(payload),
        "signatures": [_signature(key, payload_type, payload)],
    }


def add_signature(envelope: Mapping[str, Any], key: SigningKey) -> dict[str, Any]:
    """A copy of `envelope` with `key`'s signature of the same payload added."""
    payload_type, payload, signatures = _parse(envelope)
    if any(signature.get("keyid") == key.keyid for signature in signatures):
        raise InvalidInputError(f"the envelope is already signed by the key {key.keyid}.")
    return {
        "payloadType": payload_type,
        "payload": _encode(payload),
        "signatures": [*signatures, _signature(key, payload_type, payload)],
    }


@dataclass(frozen=True)
class VerifiedEnvelope:
    """A verified envelope's payload and the names of the trusted keys whose signatures of it hold."""

    payload_type: str
    payload: bytes
    key_names: tuple[str, ...]


def verify_envelope(
    envelope: Mapping[str, Any], trusted_keys: Sequence[TrustedKey], *, at: datetime
) -> VerifiedEnvelope:
    """The envelope's payload, when at least one trusted key valid `at` (an aware datetime) signed it;
    IntegrityError saying why not otherwise (malformed, altered, untrusted signer, key out of its window)."""
    payload_type, payload, signatures = _parse(envelope)
    message = pae(payload_type, payload)
    accepted: list[str] = []
    out_of_window: list[TrustedKey] = []
    failed_hints: list[TrustedKey] = []
    unknown_hints: list[str] = []
    for signature in signatures:
        hint, sig = signature.get("keyid", ""), _decode(signature["sig"], "a signature's `sig`")
        verified = _signers(message, sig, hint, trusted_keys, at)
        in_window = [key for key in verified if key.valid_at(at)]
        accepted += [key.name for key in in_window if key.name not in accepted]
        if not in_window:
            out_of_window += verified
        if not verified:
            hinted = [key for key in trusted_keys if key.keyid == hint]
            if hinted:
                failed_hints += hinted
            else:
                unknown_hints.append(hint)
    if accepted:
        return VerifiedEnvelope(payload_type, payload, tuple(accepted))
    raise IntegrityError(_refusal(out_of_window, failed_hints, unknown_hints, at))


def _signers(
    message: bytes, sig: bytes, hint: str, trusted_keys: Sequence[TrustedKey], at: datetime
) -> list[TrustedKey]:
    """The trusted keys that verify `sig`, the hinted ones tried first; stops at the first one valid `at`."""
    verified: list[TrustedKey] = []
    for key in sorted(trusted_keys, key=lambda key: key.keyid != hint):
        if key.verify(message, sig):
            verified.append(key)
            if key.valid_at(at):
                break
    return verified


def _refusal(
    out_of_window: list[TrustedKey], failed_hints: list[TrustedKey], unknown_hints: list[str], at: datetime
) -> str:
    """Why no signature counts, the most telling reason first."""
    if out_of_window:
        key = out_of_window[0]
        return f"the envelope is signed by a trusted key, but {key.window_refusal(at)} (verified at {at.isoformat()})."
    if failed_hints:
        key = failed_hints[0]
        return (
            f"the signature that names the trusted key {key.name} (keyid {key.keyid}) does not match the "
            "envelope's payload: the payload or the signature was altered."
        )
    shown = ", ".join(repr(hint[:80]) if hint else "none given" for hint in unknown_hints)
    return f"the envelope is signed by an untrusted key (keyid {shown}); no trusted key made its signature."


def _parse(envelope: Mapping[str, Any]) -> tuple[str, bytes, list[dict[str, Any]]]:
    """(payload type, payload bytes, signatures) of a well-formed envelope; IntegrityError otherwise."""
    if not isinstance(envelope, Mapping) or set(envelope) != _FIELDS:
        raise IntegrityError("the envelope is malformed: a DSSE envelope holds payloadType, payload and signatures.")
    payload_type, signatures = envelope["payloadType"], envelope["signatures"]
    if not isinstance(payload_type, str) or not payload_type:
        raise IntegrityError("the envelope is malformed: its payloadType is not a non-empty string.")
    if not isinstance(signatures, list) or not 1 <= len(signatures) <= MAX_SIGNATURES:
        raise IntegrityError(f"the envelope is malformed: it must hold 1 to {MAX_SIGNATURES} signatures.")
    for signature in signatures:
        if (
            not isinstance(signature, dict)
            or not set(signature) <= {"keyid", "sig"}
            or not isinstance(signature.get("sig"), str)
            or not isinstance(signature.get("keyid", ""), str)
        ):
            raise IntegrityError("the envelope is malformed: each signature is {keyid (a string), sig}.")
    return payload_type, _decode(envelope["payload"], "its payload"), [dict(signature) for signature in signatures]


def _signature(key: SigningKey, payload_type: str, payload: bytes) -> dict[str, str]:
    return {"keyid": key.keyid, "sig": _encode(key.sign(pae(payload_type, payload)))}


def _encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _decode(text: object, what: str) -> bytes:
    """Standard or URL-safe base64, padded."""
    if not isinstance(text, str):
        raise IntegrityError(f"the envelope is malformed: {what} is not a base64 string.")
    try:
        return base64.b64decode(text, altchars=b"-_" if "-" in text or "_" in text else None, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise IntegrityError(f"the envelope is malformed: {what} is not valid base64.") from exc
