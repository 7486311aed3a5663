"""The in-toto Statement v1 mreg signs: its subjects (record, model, images, SBOMs by digest) and a SLSA
provenance v1 predicate of what mreg knows about the build and the registration.

The predicate keeps to SLSA v1's field names; the one thing SLSA has no field for, who registered, is the
extension field `runDetails.metadata.mreg_actor` (SLSA's `<vendor>_<field>` form). The actor is who mreg
was told registered (MREG_ACTOR, GITHUB_ACTOR or user@host): a claim of the signer, not an identity proof.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mreg.errors import IntegrityError
from mreg.provenance.sbom import image_purl

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
"""The DSSE payload type of an in-toto statement."""
BUILDER_ID = "pkg:generic/mreg@{version}"
"""Who built and registered: this version of the mreg tool (there is no hosted build platform to name)."""
BUILD_TYPE = "pkg:generic/mreg#build-type/register/v1"
"""How to read externalParameters and internalParameters: mreg's register, version 1 of this layout."""
_DIGEST_RE = re.compile(r"sha256:([0-9a-f]{64})")
_HEX_RE = re.compile(r"[0-9a-f]{64}")
_FIELDS = frozenset({"_type", "subject", "predicateType", "predicate"})


def build_statement(*, subjects: list[tuple[str, str]], predicate: dict[str, Any]) -> bytes:
    """The canonical JSON (sorted keys, compact, ASCII) of an in-toto Statement v1 of `subjects` (name,
    `sha256:<hex>`) with a SLSA provenance v1 predicate."""
    names = [name for name, _ in subjects]
    if not subjects or len(set(names)) != len(names):
        raise ValueError(f"a statement needs subjects with distinct names, not {names}")
    entries = []
    for name, digest in subjects:
        match = _DIGEST_RE.fullmatch(digest)
        if match is None:
            raise ValueError(f"the digest of subject {name} is not sha256:<64 hex digits>: {digest!r}")
        entries.append({"name": name, "digest": {"sha256": match[1]}})
    statement = {"_type": STATEMENT_TYPE, "subject": entries, "predicateType": PREDICATE_TYPE, "predicate": predicate}
    return json.dumps(statement, sort_keys=True, separators=(",", ":")).encode("ascii")


def provenance_predicate(
    *,
    mreg_version: str,
    model_name: str,
    spec_sha256: str,
    lock_sha256: str,
    base_image: str,
    base_image_digest: str | None,
    git_commit: str | None,
    git_dirty: bool,
    actor: str,
    invocation_id: str,
    started_on: datetime,
    finished_on: datetime,
    buildkit_refs: Mapping[Any, str] | None = None,
    engine: str | None = None,
) -> dict[str, Any]:
    """The SLSA provenance v1 predicate of one registration. Digests are hex (spec, lock) or
    `sha256:<hex>` (the base image's manifest); times must be aware. `buildkit_refs` are BuildKit's
    references of the builds that made the images, by stage."""
    internal: dict[str, Any] = {"buildkitRefs": dict(sorted(buildkit_refs.items()))} if buildkit_refs else {}
    if engine is not None:
        internal["engine"] = engine
    definition: dict[str, Any] = {
        "buildType": BUILD_TYPE,
        "externalParameters": {
            "model": model_name,
            "spec": {"digest": {"sha256": _hex(spec_sha256, "spec")}},
            "lock": {"digest": {"sha256": _hex(lock_sha256, "lock")}},
        },
        "resolvedDependencies": _dependencies(base_image, base_image_digest, git_commit, git_dirty),
    }
    if internal:
        definition["internalParameters"] = internal
    return {
        "buildDefinition": definition,
        "runDetails": {
            "builder": {"id": BUILDER_ID.format(version=mreg_version), "version": {"mreg": mreg_version}},
            "metadata": {
                "invocationId": invocation_id,
                "startedOn": _timestamp(started_on),
                "finishedOn": _timestamp(finished_on),
                "mreg_actor": actor,
            },
        },
    }


def _dependencies(
    base_image: str, base_image_digest: str | None, git_commit: str | None, git_dirty: bool
) -> list[dict[str, Any]]:
    base: dict[str, Any] = {"name": "base-image", "uri": image_purl(base_image, base_image_digest)}
    if base_image_digest is not None:
        base["digest"] = {"sha256": _hex(base_image_digest.removeprefix("sha256:"), "base image")}
    dependencies = [base]
    if git_commit is not None:
        dependencies.append({"name": "git", "digest": {"gitCommit": git_commit}, "annotations": {"dirty": git_dirty}})
    return dependencies


def _hex(value: str, what: str) -> str:
    if _HEX_RE.fullmatch(value) is None:
        raise ValueError(f"the {what} digest is not 64 lower-case hex digits: {value!r}")
    return value


def _timestamp(when: datetime) -> str:
    """RFC 3339 in UTC (`...Z`)."""
    if when.utcoffset() is None:
        raise ValueError(f"{when!r} has no time zone")
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Statement:
    """A parsed statement: its subjects (name -> `sha256:<hex>`) and its predicate."""

    subjects: dict[str, str]
    predicate_type: str
    predicate: dict[str, Any]

    def subject_digest(self, name: str) -> str | None:
        """`sha256:<hex>` of the subject `name`, None when the statement has no such subject."""
        return self.subjects.get(name)


def parse_statement(payload: bytes) -> Statement:
    """A statement of mreg's shape (in-toto v1, SLSA provenance v1, each subject named once with a sha256
    digest); IntegrityError naming what is wrong otherwise."""
    try:
        document = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IntegrityError("the signed statement is not JSON.") from exc
    if not isinstance(document, dict) or set(document) != _FIELDS:
        raise IntegrityError(
            "the signed statement is not an in-toto statement (_type, subject, predicateType, predicate)."
        )
    if document["_type"] != STATEMENT_TYPE:
        raise IntegrityError(f"the signed statement's _type is {document['_type']!r}, not {STATEMENT_TYPE}.")
    if document["predicateType"] != PREDICATE_TYPE:
        raise IntegrityError(
            f"the signed statement's predicateType is {document['predicateType']!r}, not {PREDICATE_TYPE}."
        )
    if not isinstance(document["predicate"], dict):
        raise IntegrityError("the signed statement's predicate is not an object.")
    subjects = document["subject"]
    if not isinstance(subjects, list) or not subjects:
        raise IntegrityError("the signed statement has no subjects.")
    found: dict[str, str] = {}
    for subject in subjects:
        name, digest = _subject(subject)
        if name in found:
            raise IntegrityError(f"the signed statement names the subject {name!r} twice.")
        found[name] = digest
    return Statement(found, document["predicateType"], document["predicate"])


def _subject(subject: object) -> tuple[str, str]:
    if not isinstance(subject, dict) or not isinstance(subject.get("name"), str):
        raise IntegrityError("a subject of the signed statement has no name.")
    name = subject["name"]
    digest = subject.get("digest")
    value = digest.get("sha256") if isinstance(digest, dict) else None
    if not isinstance(value, str) or _HEX_RE.fullmatch(value) is None:
        raise IntegrityError(f"the subject {name[:80]!r} of the signed statement has no sha256 digest.")
    return name, f"sha256:{value}"
