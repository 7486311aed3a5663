"""`mreg export`: deployment manifests for one registered version."""

from __future__ import annotations

from pathlib import Path

import click

from mreg.cli._app import cli, registry_of, say
from mreg.cli._ecosystem import complete_model_ref


@cli.command()
@click.argument("format_name", metavar="kubernetes|kserve", type=click.Choice(["kubernetes", "kserve"]))
@click.argument("model_ref", metavar="NAME[:VERSION|@ALIAS]", shell_complete=complete_model_ref)
@click.option("--namespace", help="The namespace of every object (a DNS-1123 label); default: none set.")
@click.option("--replicas", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), help="The server's port; default: the recorded serve stage's.")
@click.option("--health", help="The server's health path (HTTP probes); default: the recorded one, else TCP probes.")
@click.option(
    "--credentials-secret",
    default="mreg-storage",
    show_default=True,
    help="The Secret whose keys (AWS_ACCESS_KEY_ID, ...) the pod's fetch step receives.",
)
@click.option("--endpoint-url", help="The S3 endpoint as the cluster reaches it (e.g. a MinIO Service).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write the YAML here.")
@click.pass_context
def export(
    ctx: click.Context,
    format_name: str,
    model_ref: str,
    namespace: str | None,
    replicas: int,
    port: int | None,
    health: str | None,
    credentials_secret: str,
    endpoint_url: str | None,
    output: Path | None,
) -> None:
    """Write Kubernetes or KServe manifests for one version.

    Kubernetes: a Deployment and a Service; KServe: an InferenceService. The serve image is pinned by
    digest, and an init container fetches the model and checks it against the record's SHA-256 before the
    server starts. Example: `mreg export kserve iris-rf@production -o isvc.yaml`.
    """
    from mreg.deploy.manifests import kserve_manifest, kubernetes_manifests

    record = registry_of(ctx).get(model_ref)
    contract = record.serving
    port = port or (contract.port if contract else 8080)
    health = health or (contract.health if contract else None)
    make = kubernetes_manifests if format_name == "kubernetes" else kserve_manifest
    text = make(
        record,
        namespace=namespace,
        replicas=replicas,
        port=port,
        health=health,
        credentials_secret=credentials_secret,
        endpoint_url=endpoint_url,
    )
    if output is None:
        click.echo(text, nl=False)
        return
    output.write_text(text)
    say(f"wrote {output} for {record.name}:{record.version}")
