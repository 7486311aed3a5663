"""Commands that read the registry and move aliases: show, deps, list, alias, pull, verify."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from mreg.cli._app import (
    cli,
    engine_options,
    registry_of,
    say,
    table,
    transfer_progress,
    trust_of,
    trust_options,
)
from mreg.cli._ecosystem import complete_model_ref

if TYPE_CHECKING:
    from mreg.records import Record
    from mreg.records._annotations import Annotations
    from mreg.records.store import VersionInfo


@cli.command()
@click.argument("model_ref", metavar="NAME[:VERSION|@ALIAS]", shell_complete=complete_model_ref)
@click.option("--json", "as_json", is_flag=True, help="Print the record as JSON (with its annotations, if any).")
@click.pass_context
def show(ctx: click.Context, model_ref: str, as_json: bool) -> None:
    """Show one version of a model, its tags and yank state.

    NAME alone is the latest version that is not yanked. `--json` prints the record exactly as registered,
    plus the key `annotations` once the version has any. Example: `mreg show iris-rf@production --json`.
    """
    from mreg.cli._lifecycle import warn_if_yanked

    registry = registry_of(ctx)
    record = registry.get(model_ref)
    annotations = registry.annotations(record)
    warn_if_yanked(annotations)
    click.echo(json.dumps(_document(record, annotations), indent=2) if as_json else _describe(record, annotations))


@cli.command()
@click.argument("model_ref", metavar="NAME[:VERSION|@ALIAS]", shell_complete=complete_model_ref)
@click.option("--stage", type=click.Choice(["train", "serve"]), default="serve", show_default=True)
@click.option(
    "--format",
    "output",
    type=click.Choice(["requirements", "python-env", "conda"]),
    default="requirements",
    show_default=True,
    help="requirements.txt, MLflow's python_env.yaml, or conda.yaml.",
)
@click.pass_context
def deps(ctx: click.Context, model_ref: str, stage: str, output: str) -> None:
    """Print the exact packages recorded for one image.

    Example: `mreg deps iris-rf:3 --stage serve --format requirements`.
    """
    from mreg.export import export

    record = registry_of(ctx).get(model_ref)
    click.echo(export(record, stage, output), nl=False)  # type: ignore[arg-type]


@cli.command("list")
@click.argument("name", required=False, shell_complete=complete_model_ref)
@click.option(
    "--filter", "filter_text", metavar="EXPR", help="e.g. \"metrics.accuracy >= 0.9 and tags.stage = 'prod'\"."
)
@click.option("--order-by", metavar="FIELD [asc|desc]", help="e.g. 'metrics.accuracy desc' (default: newest first).")
@click.option("--include-yanked", is_flag=True, help="Also list yanked versions.")
@click.option("--limit", type=click.IntRange(min=1, max=1000), default=20, show_default=True, help="Versions per page.")
@click.option("--before", type=click.IntRange(min=2), help="Show versions older than this one (the next page).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@click.pass_context
def list_(
    ctx: click.Context,
    name: str | None,
    filter_text: str | None,
    order_by: str | None,
    include_yanked: bool,
    limit: int,
    before: int | None,
    as_json: bool,
) -> None:
    """List models, or the versions of model NAME.

    Versions come newest first, a page at a time, with their aliases, key metrics and tags. A filter
    compares `version`, `created`, `metrics.KEY`, `params.KEY`, `tags.KEY`, `alias`, `yanked` and
    `package.NAME` (as a PEP 440 version) with = != < <= > >=, like, in (...), and/or/not and parentheses.
    Yanked versions are left out unless --include-yanked or the filter names `yanked`. Example:
    `mreg list iris-rf --filter "metrics.accuracy >= 0.9" --order-by "metrics.accuracy desc"`.
    """
    registry = registry_of(ctx)
    if name is None:
        if filter_text or order_by:
            raise click.UsageError("--filter and --order-by need a model NAME.")
        models = registry.models()
        click.echo(json.dumps(models) if as_json else "\n".join(models))
        return
    page = registry.find(name, filter_text, order_by, limit=limit, include_yanked=include_yanked, before=before)
    if as_json:
        documents = [{**_document(info.record, info.annotations), "aliases": list(info.aliases)} for info in page]
        click.echo(json.dumps(documents, indent=2))
        return
    first_metric = (
        order_by.split()[0].removeprefix("metrics.") if order_by and order_by.startswith("metrics.") else None
    )
    table(("VERSION", "CREATED", "ALIASES", "METRICS", "TAGS", "SHA256"), [_row(info, first_metric) for info in page])
    if page and not (filter_text or order_by) and page[-1].record.version > 1 and len(page) == limit:
        say(f"older versions: mreg list {name} --before {page[-1].record.version}")


@cli.command()
@click.argument("name", shell_complete=complete_model_ref)
@click.argument("args", nargs=-1, metavar="[VERSION] ALIAS")
@click.option("--delete", is_flag=True, help="Remove the alias (its history is kept).")
@click.option("--history", is_flag=True, help="Show every move of the alias.")
@click.option("--json", "as_json", is_flag=True, help="Print the alias document as JSON.")
@click.pass_context
def alias(ctx: click.Context, name: str, args: tuple[str, ...], delete: bool, history: bool, as_json: bool) -> None:
    """Point NAME@ALIAS at a version, or delete or trace it.

    Example: `mreg alias iris-rf 3 production` (then `mreg alias iris-rf --history production`).
    """
    registry = registry_of(ctx)
    if delete or history:
        if len(args) != 1:
            raise click.UsageError("give NAME and ALIAS with --delete or --history.")
        result = registry.alias(name, args[0], None) if delete else registry.alias_history(name, args[0])
    else:
        if len(args) != 2 or not args[0].isdigit():
            raise click.UsageError("give NAME VERSION ALIAS, e.g. `mreg alias iris-rf 3 production`.")
        result = registry.alias(name, args[1], int(args[0]))
    if as_json:
        click.echo(result.model_dump_json(indent=2))
    elif history:
        for event in result.history:
            moved = f"{event.previous or '-'} -> {event.version or 'deleted'}"
            click.echo(f"{event.at.isoformat()}  {moved:<16}  {event.by}")
    else:
        target = f"version {result.version}" if result.version else "nothing (deleted)"
        click.echo(f"{result.name}@{result.alias} -> {target}")


@cli.command()
@click.argument("model_ref", metavar="NAME[:VERSION|@ALIAS]", shell_complete=complete_model_ref)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    default=Path(),
    show_default=True,
    help="A directory (the model keeps its file or directory name) or a path.",
)
@click.option("--force", is_flag=True, help="Replace a directory model already at the destination.")
@click.option(
    "--model-signature",
    is_flag=True,
    help="Also write the model's OpenSSF model-signing bundle beside it, as PATH.sig.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the path, digest and serve image as JSON.")
@click.pass_context
def pull(ctx: click.Context, model_ref: str, output: Path, force: bool, model_signature: bool, as_json: bool) -> None:
    """Download a model, check it, and print its serve image.

    The SHA-256 is checked before anything is published. A directory model is checked file by file in a
    staging directory beside the destination and then published with one rename; nothing is left behind on
    failure. With --model-signature, `model_signing verify key --signature PATH.sig --public_key KEY PATH`
    checks the pulled model too. Example: `mreg pull iris-rf@production -o /models`.
    """
    from mreg._fileio import incoming
    from mreg.cli._lifecycle import warn_if_yanked

    registry = registry_of(ctx)
    record = registry.get(model_ref)
    warn_if_yanked(registry.annotations(record))
    bundle = registry.model_bundle(record) if model_signature else None  # before the download: none, no pull
    with transfer_progress(record.model.size, "downloading") as on_progress:
        path = registry.download(record, output, overwrite=force, on_progress=on_progress)
    if bundle is not None:
        with incoming(path.parent) as (handle, temporary):
            handle.write(bundle)
            handle.close()
            temporary.replace(path.with_name(f"{path.name}.sig"))
    serve = record.images["serve"].image
    if as_json:
        document = {"name": record.name, "version": record.version, "path": str(path), "sha256": record.model.sha256}
        click.echo(json.dumps({**document, "serve_image": serve, "train_image": record.images["train"].image}))
    else:
        say(f"pulled {record.name}:{record.version} to {path} (sha256 {record.model.sha256} checked)")
        click.echo(serve)


@cli.command()
@click.argument("model_ref", metavar="NAME[:VERSION|@ALIAS]", shell_complete=complete_model_ref)
@trust_options
@engine_options
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
@click.pass_context
def verify(
    ctx: click.Context,
    model_ref: str,
    trusted_keys: Path | None,
    require_signature: bool,
    engine_name: str,
    builder: str | None,
    as_json: bool,
) -> None:
    """Check a version's record, signature, model and images.

    The record's own digest, the model's bytes, and both image digests in their registries. With trusted
    keys, also that one of them signed a statement of exactly this record and that its SBOMs are intact; with
    --require-signature an unsigned version fails. Offline but for the stores and the image registry.
    Example: `mreg verify iris-rf@production --trusted-keys keys.toml --require-signature`.
    """
    from mreg.cli._lifecycle import warn_if_yanked
    from mreg.engine import open_engine
    from mreg.errors import IntegrityError

    trust = trust_of(ctx, trusted_keys, require_signature)
    registry = registry_of(ctx, checked=False)  # the signature is one of the checks here, not a refusal
    record = registry.get(model_ref, fresh=True)  # the store's own copy: that is what is verified
    warn_if_yanked(registry.annotations(record))
    checks = registry.verify(
        record,
        lambda: open_engine(engine_name, builder=builder),  # type: ignore[arg-type]
        trust=trust,
    )
    if as_json:
        click.echo(json.dumps([{"subject": c.subject, "ok": c.ok, "detail": c.detail} for c in checks], indent=2))
    else:
        for check in checks:
            click.echo(f"{'ok  ' if check.ok else 'FAIL'}  {check.subject:<10}  {check.detail}")
    failed = [check.subject for check in checks if not check.ok]
    if failed:
        raise IntegrityError(f"{record.name}:{record.version} failed verification: {', '.join(failed)}.")


def _document(record: Record, annotations: Annotations) -> dict[str, object]:
    """The record's own document, with its annotations under `annotations` once it has any."""
    from mreg.cli._lifecycle import annotations_document

    document: dict[str, object] = record.model_dump(mode="json")
    if annotations.revision:
        document["annotations"] = annotations_document(annotations)
    return document


def _row(info: VersionInfo, first_metric: str | None) -> tuple[str, ...]:
    record, annotations = info.record, info.annotations
    keys = sorted(record.metrics, key=lambda key: (key != first_metric, key))
    metrics = ", ".join(f"{key}={record.metrics[key]:g}" for key in keys[:3]) + (", ..." if len(keys) > 3 else "")
    tags = ", ".join(f"{key}={value}" for key, value in sorted(annotations.tags.items()))
    version = f"{record.name}:{record.version}" + (" (yanked)" if annotations.yanked else "")
    created = record.created_at.isoformat()
    return (version, created, ", ".join(info.aliases) or "-", metrics or "-", tags or "-", record.model.sha256[:12])


def _describe(record: Record, annotations: Annotations) -> str:
    lines = [
        f"{record.name}:{record.version}  created {record.created_at.isoformat()}",
        f"  model   {record.model.filename}  {record.model.size} bytes  sha256:{record.model.sha256}",
        f"          {record.model.uri}",
    ]
    lines += [f"  {stage:<7} {image.image}" for stage, image in record.images.items()]
    for group, packages in record.packages.items():
        lines.append(f"  {group:<7} {', '.join(packages) or '-'}")
    if record.git:
        lines.append(f"  git     {record.git.commit}{' (dirty)' if record.git.dirty else ''}")
    lines += [f"  metric  {key} = {value:g}" for key, value in sorted(record.metrics.items())]
    lines += [f"  param   {key} = {value}" for key, value in sorted(record.params.items())]
    lines += [f"  data    {d.uri}" + (f"  sha256:{d.sha256}" if d.sha256 else "") for d in record.datasets]
    if record.run_url:
        lines.append(f"  run     {record.run_url}")
    lines += [f"  tag     {key} = {value}" for key, value in sorted(annotations.tags.items())]
    if annotations.description:
        lines.append(f"  about   {annotations.description}")
    if annotations.yanked:
        yanked = annotations.yanked
        lines.append(f"  YANKED  {yanked.reason} (by {yanked.by}, {yanked.at.isoformat()})")
    if annotations.purged:
        lines.append(f"  PURGED  by gc, {annotations.purged.at.isoformat()}: the model is gone, the record stays")
    return "\n".join(lines)
