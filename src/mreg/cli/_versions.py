"""Commands that read the registry and move aliases: show, deps, list, alias, pull, verify."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from mreg.cli._app import cli, engine_options, registry_of, say, table, transfer_progress

if TYPE_CHECKING:
    from mreg.records import Record


@cli.command()
@click.argument("model_ref", metavar="NAME[:VERSION|@ALIAS]")
@click.option("--json", "as_json", is_flag=True, help="Print the record as JSON.")
@click.pass_context
def show(ctx: click.Context, model_ref: str, as_json: bool) -> None:
    """Show one version of a model (the latest when neither version nor alias is given)."""
    record = registry_of(ctx).get(model_ref)
    click.echo(record.to_json() if as_json else _describe(record))


@cli.command()
@click.argument("model_ref", metavar="NAME[:VERSION|@ALIAS]")
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
    """Print the exact packages recorded for one image of a model version."""
    from mreg.export import export

    record = registry_of(ctx).get(model_ref)
    click.echo(export(record, stage, output), nl=False)  # type: ignore[arg-type]


@cli.command("list")
@click.argument("name", required=False)
@click.option("--limit", type=click.IntRange(min=1, max=1000), default=20, show_default=True, help="Versions per page.")
@click.option("--before", type=click.IntRange(min=2), help="Show versions older than this one (the next page).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@click.pass_context
def list_(ctx: click.Context, name: str | None, limit: int, before: int | None, as_json: bool) -> None:
    """List models, or the versions of model NAME, newest first, a page at a time."""
    registry = registry_of(ctx)
    if name is None:
        models = registry.models()
        click.echo(json.dumps(models) if as_json else "\n".join(models))
        return
    page = registry.versions(name, limit=limit, before=before)
    if as_json:
        click.echo(json.dumps([record.model_dump(mode="json") for record in page], indent=2))
        return
    rows = [
        (f"{r.name}:{r.version}", r.created_at.isoformat(), r.model.sha256[:12], r.images["serve"].image) for r in page
    ]
    table(("VERSION", "CREATED", "SHA256", "SERVE IMAGE"), rows)
    if page and page[-1].version > 1:
        say(f"older versions: mreg list {name} --before {page[-1].version}")


@cli.command()
@click.argument("name")
@click.argument("args", nargs=-1, metavar="[VERSION] ALIAS")
@click.option("--delete", is_flag=True, help="Remove the alias (its history is kept).")
@click.option("--history", is_flag=True, help="Show every move of the alias.")
@click.option("--json", "as_json", is_flag=True, help="Print the alias document as JSON.")
@click.pass_context
def alias(ctx: click.Context, name: str, args: tuple[str, ...], delete: bool, history: bool, as_json: bool) -> None:
    """Point NAME@ALIAS at VERSION (e.g. `mreg alias iris-rf 3 production`), or --delete / --history it."""
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
@click.argument("model_ref", metavar="NAME[:VERSION|@ALIAS]")
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    default=Path(),
    show_default=True,
    help="A directory (the model keeps its file or directory name) or a path.",
)
@click.option("--force", is_flag=True, help="Replace a directory model already at the destination.")
@click.option("--json", "as_json", is_flag=True, help="Print the path, digest and serve image as JSON.")
@click.pass_context
def pull(ctx: click.Context, model_ref: str, output: Path, force: bool, as_json: bool) -> None:
    """Download a model, check its SHA-256, and print the serve image it belongs with.

    A directory model is checked file by file in a staging directory beside the destination and then
    published with one rename; nothing is left behind on failure.
    """
    registry = registry_of(ctx)
    record = registry.get(model_ref)
    with transfer_progress(record.model.size, "downloading") as on_progress:
        path = registry.download(record, output, overwrite=force, on_progress=on_progress)
    serve = record.images["serve"].image
    if as_json:
        document = {"name": record.name, "version": record.version, "path": str(path), "sha256": record.model.sha256}
        click.echo(json.dumps({**document, "serve_image": serve, "train_image": record.images["train"].image}))
    else:
        say(f"pulled {record.name}:{record.version} to {path} (sha256 {record.model.sha256} checked)")
        click.echo(serve)


@cli.command()
@click.argument("model_ref", metavar="NAME[:VERSION|@ALIAS]")
@engine_options
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
@click.pass_context
def verify(ctx: click.Context, model_ref: str, engine_name: str, builder: str | None, as_json: bool) -> None:
    """Check a version: its record's digest, its model bytes, and both image digests in their registries."""
    from mreg.engine import open_engine
    from mreg.errors import IntegrityError

    registry = registry_of(ctx)
    record = registry.get(model_ref)
    checks = registry.verify(record, lambda: open_engine(engine_name, builder=builder))  # type: ignore[arg-type]
    if as_json:
        click.echo(json.dumps([{"subject": c.subject, "ok": c.ok, "detail": c.detail} for c in checks], indent=2))
    else:
        for check in checks:
            click.echo(f"{'ok  ' if check.ok else 'FAIL'}  {check.subject:<6}  {check.detail}")
    failed = [check.subject for check in checks if not check.ok]
    if failed:
        raise IntegrityError(f"{record.name}:{record.version} failed verification: {', '.join(failed)}.")


def _describe(record: Record) -> str:
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
    return "\n".join(lines)
