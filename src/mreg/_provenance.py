"""What `register` attests about a registration: each image's SBOM, and the SLSA predicate of what mreg knows
about the build (spec, lock, base image, git, who and when). The pipeline's bridge to `mreg.provenance`."""

from __future__ import annotations

import hashlib
import os
import uuid
from datetime import datetime
from importlib.metadata import version as distribution_version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mreg.errors import InvalidInputError
from mreg.lock import Lock, lock_path

if TYPE_CHECKING:
    from mreg.pipeline import BuildResult
    from mreg.provenance._keys import SigningKey
    from mreg.records import Record
    from mreg.spec import Spec

SIGNING_KEY_ENV = "MREG_SIGNING_KEY"
PASSWORD_ENV = "MREG_SIGNING_KEY_PASSWORD"  # noqa: S105 (the variable's name, not a password)


def signing_key(path: Path | None) -> SigningKey | None:
    """The key to sign with: `path`, else MREG_SIGNING_KEY (none when neither is set), decrypted with
    MREG_SIGNING_KEY_PASSWORD. The passphrase is only ever read from the environment."""
    path = _key_path(path)
    if path is None:
        return None
    from mreg.provenance._keys import load_signing_key

    return load_signing_key(path, os.environ.get(PASSWORD_ENV) or None)


def model_bundle(model_path: Path, key_path: Path | None) -> bytes:
    """The OpenSSF model-signing bundle of the model at `model_path`, signed with the key `key_path` (else
    MREG_SIGNING_KEY) and MREG_SIGNING_KEY_PASSWORD."""
    named = _key_path(key_path)
    if named is None:
        raise InvalidInputError("--model-signature needs a signing key (--signing-key FILE or MREG_SIGNING_KEY).")
    from mreg.provenance.openssf import sign_model

    return sign_model(model_path, named, os.environ.get(PASSWORD_ENV) or None)


def _key_path(path: Path | None) -> Path | None:
    """`path`, else the file MREG_SIGNING_KEY names (None when neither is set)."""
    named = os.environ.get(SIGNING_KEY_ENV)
    return path or (Path(named) if named else None)


def image_sboms(spec: Spec, built: BuildResult, lock: Lock) -> dict[str, bytes]:
    """The CycloneDX SBOM of each built image, from what the skew guard read out of it and the lock's hashes."""
    from mreg.provenance.sbom import image_sbom

    hashes = {package.name: package.hashes for package in lock.packages}
    return {
        stage: image_sbom(
            model_name=spec.model.name,
            stage=stage,
            image_ref=image.ref,
            image_digest=image.digest,
            python=built.environments[stage].python,
            packages=built.environments[stage].packages,
            hashes=hashes,
            base_image=spec.python.image,
            base_image_digest=built.base_image_digest,
        )
        for stage, image in sorted(built.images.items())
    }


def register_predicate(
    spec: Spec, built: BuildResult, record: Record, *, actor: str, started_on: datetime, finished_on: datetime
) -> dict[str, Any]:
    """The SLSA provenance v1 predicate of one registration."""
    from mreg.provenance.statement import provenance_predicate

    try:
        lock_sha256 = hashlib.sha256(lock_path(spec).read_bytes()).hexdigest()
    except OSError as exc:
        raise InvalidInputError(f"{lock_path(spec)}: cannot read the lock ({exc.strerror or exc}).") from exc
    return provenance_predicate(
        mreg_version=distribution_version("mreg"),
        model_name=record.name,
        spec_sha256=record.spec_sha256,
        lock_sha256=lock_sha256,
        base_image=spec.python.image,
        base_image_digest=built.base_image_digest,
        git_commit=record.git.commit if record.git else None,
        git_dirty=record.git.dirty if record.git else False,
        actor=actor,
        invocation_id=invocation_id(),
        started_on=started_on,
        finished_on=finished_on,
        buildkit_refs=built.buildkit_refs,
        engine="buildkit" if built.buildkit else "classic",
    )


def invocation_id() -> str:
    """The CI run this registration is part of (GitHub Actions' run URL and attempt), else a fresh UUID URN."""
    names = ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID")
    server, repository, run = (os.environ.get(name) for name in names)
    if server and repository and run:
        return f"{server}/{repository}/actions/runs/{run}/attempts/{os.environ.get('GITHUB_RUN_ATTEMPT', '1')}"
    return uuid.uuid4().urn
