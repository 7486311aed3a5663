"""What mreg signs about a record, and how a signed statement is tied back to it.

A record's statement names six subjects: the record (its digest), the model (its SHA-256: a file's bytes, or a
directory's manifest), each image (its manifest digest, or its ID for a local image) and each image's SBOM. A
signature counts for a record only when a trusted key signed a statement whose subjects are exactly that
record's; nothing here reads a store.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from mreg.errors import IntegrityError, InvalidInputError
from mreg.provenance._keys import TrustedKey
from mreg.provenance.dsse import verify_envelope
from mreg.provenance.statement import PAYLOAD_TYPE, Statement, parse_statement
from mreg.records.model import Record

RECORD_SUBJECT = "record"
MODEL_SUBJECT = "model"


def image_subject(stage: str) -> str:
    """The subject name of a stage's image: `image/serve`."""
    return f"image/{stage}"


def sbom_subject(stage: str) -> str:
    """The subject name of a stage's SBOM: `sbom/serve`."""
    return f"sbom/{stage}"


def record_subjects(record: Record, sboms: Mapping[str, str]) -> list[tuple[str, str]]:
    """(name, `sha256:<hex>`) of everything the statement of `record` names; `sboms` maps stage to the digest
    of its SBOM."""
    if record.digest is None:
        raise ValueError(f"record {record.name}:{record.version} is not sealed")
    subjects = [(RECORD_SUBJECT, record.digest), (MODEL_SUBJECT, f"sha256:{record.model.sha256}")]
    subjects += [(image_subject(stage), image.digest) for stage, image in sorted(record.images.items())]
    subjects += [(sbom_subject(stage), digest) for stage, digest in sorted(sboms.items())]
    return subjects


def statement_problems(record: Record, statement: Statement) -> list[str]:
    """How `statement` differs from what `record` is (empty when it is that record's statement)."""
    expected = dict(record_subjects(record, {}))
    problems = [
        f"it names {name} {statement.subject_digest(name) or 'nowhere'}; {record.name}:{record.version} has {digest}"
        for name, digest in expected.items()
        if statement.subject_digest(name) != digest
    ]
    stages = set(record.images)
    extra = sorted(
        name
        for name in statement.subjects
        if name not in expected and name not in {sbom_subject(stage) for stage in stages}
    )
    problems += [f"it names the subject {name!r}, which {record.name}:{record.version} does not have" for name in extra]
    return problems


def sbom_digests(statement: Statement, stages: Sequence[str]) -> dict[str, str]:
    """The SBOM digest the statement names for each of `stages` that has one."""
    return {stage: digest for stage in stages if (digest := statement.subject_digest(sbom_subject(stage))) is not None}


@dataclass(frozen=True)
class Trust:
    """Which keys a reader trusts, and whether an unsigned record is refused."""

    keys: tuple[TrustedKey, ...] = ()
    required: bool = False

    def __post_init__(self) -> None:
        if self.required and not self.keys:
            raise InvalidInputError(
                "a signature is required, but no trusted keys were given (--trusted-keys FILE or MREG_TRUSTED_KEYS)."
            )

    @property
    def active(self) -> bool:
        """Whether reads check signatures at all."""
        return bool(self.keys)


@dataclass(frozen=True)
class SignatureStatus:
    """What the signatures stored beside a record prove about it."""

    keyids: tuple[str, ...]
    """The key id each stored envelope's first signature claims (a hint, not a proof)."""
    signed_by: tuple[str, ...] = ()
    """Names of the trusted keys whose signature of a statement of exactly this record holds."""
    problems: tuple[str, ...] = ()
    """Why each envelope that was not accepted was refused."""
    statement: Statement | None = field(default=None, compare=False)
    """The accepted statement (None when no envelope was accepted)."""

    @property
    def signed(self) -> bool:
        """Whether any envelope is stored beside the record."""
        return bool(self.keyids)

    @property
    def verified(self) -> bool:
        """Whether a trusted key signed this record's statement."""
        return bool(self.signed_by)

    def summary(self) -> str:
        """One line: who signed, or why nothing counts."""
        if self.verified:
            return f"signed by {', '.join(self.signed_by)}"
        if not self.signed:
            return "not signed"
        return f"no valid signature by a trusted key: {self.problems[0]}" if self.problems else "not checked"


def check_signatures(
    record: Record, envelopes: Sequence[Mapping[str, Any]], trusted_keys: Sequence[TrustedKey], *, at: datetime
) -> SignatureStatus:
    """Which of the envelopes stored beside `record` a trusted key (valid `at`) signed over a statement of
    exactly this record."""
    keyids = tuple(_claimed_keyid(envelope) for envelope in envelopes)
    if not trusted_keys:
        return SignatureStatus(keyids)
    signed_by: list[str] = []
    problems: list[str] = []
    accepted: Statement | None = None
    for envelope in envelopes:
        try:
            verified = verify_envelope(envelope, trusted_keys, at=at)
            if verified.payload_type != PAYLOAD_TYPE:
                raise IntegrityError(f"the envelope's payload type is {verified.payload_type!r}, not {PAYLOAD_TYPE}.")
            statement = parse_statement(verified.payload)
        except IntegrityError as exc:
            problems.append(str(exc).rstrip("."))
            continue
        mismatch = statement_problems(record, statement)
        if mismatch:
            problems.append(f"the signed statement is not of this record: {mismatch[0]}")
            continue
        accepted = accepted or statement
        signed_by += [name for name in verified.key_names if name not in signed_by]
    return SignatureStatus(keyids, tuple(signed_by), tuple(problems), accepted)


def enforce(record: Record, status: SignatureStatus, trust: Trust) -> None:
    """Refuse `record` (IntegrityError) unless `trust` accepts it: signed by a trusted key, or unsigned when
    no signature is required. A signature that does not verify is refused either way."""
    where = f"{record.name}:{record.version}"
    if status.verified or not trust.active:
        return
    if not status.signed:
        if trust.required:
            raise IntegrityError(f"{where} is not signed, and a signature by a trusted key is required.")
        return
    raise IntegrityError(f"{where} has no valid signature by a trusted key: {status.problems[0]}.")


def _claimed_keyid(envelope: Mapping[str, Any]) -> str:
    signatures = envelope.get("signatures")
    first = signatures[0] if isinstance(signatures, list) and signatures else None
    keyid = first.get("keyid") if isinstance(first, dict) else None
    return keyid if isinstance(keyid, str) and keyid else "unknown"
