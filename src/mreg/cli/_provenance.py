"""Commands for signed provenance: sign a version, print an image's SBOM."""

from __future__ import annotations

from pathlib import Path

import click

from mreg.cli._app import attest_images_option, cli, registry_of, say, signing_key_option
from mreg.cli._ecosystem import complete_model_ref


@cli.command()
@click.argument("model_ref", metavar="NAME[:VERSION|@ALIAS]", shell_complete=complete_model_ref)
@signing_key_option
@attest_images_option
@click.pass_context
def sign(ctx: click.Context, model_ref: str, signing_key: Path | None, attest_images: bool) -> None:
    """Sign a version's provenance statement with another key.

    For a second party (a reviewer, a release manager) or a version registered without a key. The statement
    is checked to be of exactly that record first; the record itself does not change. Signing again with the
    same key changes nothing. Example: `mreg sign iris-rf:3 --signing-key release.pem`.
    """
    from mreg import _provenance
    from mreg.errors import InvalidInputError

    key = _provenance.signing_key(signing_key)
    if key is None:
        raise InvalidInputError("sign: give a key with --signing-key FILE or MREG_SIGNING_KEY.")
    registry = registry_of(ctx, checked=False)
    record = registry.get(model_ref)
    where = f"{record.name}:{record.version}"
    if registry.sign(record, key):
        say(f"signed {where} with the key {key.keyid}")
    else:
        say(f"{where} was already signed with the key {key.keyid}; nothing changed")
    if attest_images:  # again, too: pushing the same attestation changes nothing
        for attestation in registry.push_attestations(record, key.keyid):
            say(f"pushed the attestation {attestation}")


@cli.command()
@click.argument("model_ref", metavar="NAME[:VERSION|@ALIAS]", shell_complete=complete_model_ref)
@click.option("--stage", type=click.Choice(["train", "serve"]), default="serve", show_default=True)
@click.pass_context
def sbom(ctx: click.Context, model_ref: str, stage: str) -> None:
    """Print the CycloneDX 1.6 SBOM of a version's image.

    Checked against the digest its statement names (the signed one, with trusted keys). Example:
    `mreg sbom iris-rf@production --stage serve > sbom.json`.
    """
    click.echo(registry_of(ctx).sbom(model_ref, stage).decode(), nl=False)
