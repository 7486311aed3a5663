"""Commands that annotate, retire and compare versions, read the event log, and collect garbage: tag,
describe, yank, unyank, diff, events, gc."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import click

from mreg.cli._app import cli, registry_of, say, spec_of
from mreg.cli._ecosystem import complete_model_ref

if TYPE_CHECKING:
    from mreg.records._annotations import Annotations
    from mreg.records._diff import VersionDiff

_DURATION_RE = re.compile(r"(?P<number>\d+)(?P<unit>[smhd])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


class Duration(click.ParamType[timedelta]):
    """`90s`, `30m`, `24h`, `7d` (or `0`)."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> timedelta:
        if isinstance(value, timedelta):
            return value
        text = str(value).strip()
        if text == "0":
            return timedelta(0)
        match = _DURATION_RE.fullmatch(text)
        if match is None:
            self.fail(f"{text!r} is not a duration (a whole number and s, m, h or d: 90s, 30m, 24h, 7d).", param, ctx)
        return timedelta(**{_UNITS[match["unit"]]: int(match["number"])})


class Moment(click.ParamType[datetime]):
    """An ISO 8601 date or timestamp (UTC unless it says otherwise), or a duration before now (`1h`)."""

    name = "time"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> datetime:
        if isinstance(value, datetime):
            return value
        text = str(value).strip()
        if _DURATION_RE.fullmatch(text):
            return datetime.now(UTC) - Duration().convert(text, param, ctx)
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            self.fail(f"{text!r} is not an ISO 8601 date or timestamp, nor a duration such as 1h or 7d.", param, ctx)
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def annotations_document(annotations: Annotations) -> dict[str, Any]:
    """The annotations as `show --json`, `tag --json` and the others print them."""
    return annotations.model_dump(mode="json", exclude={"schema_version", "name", "version"})


def warn_if_yanked(annotations: Annotations) -> None:
    """A warning on stderr when a version someone named exactly is yanked (or purged)."""
    ref = f"{annotations.name}:{annotations.version}"
    if annotations.purged is not None:
        say(f"warning: {ref} is yanked and was purged by gc; its model is gone.")
    elif annotations.yanked is not None:
        say(f"warning: {ref} is yanked ({annotations.yanked.reason}).")


def _print_annotations(annotations: Annotations, as_json: bool) -> None:
    ref = f"{annotations.name}:{annotations.version}"
    if as_json:
        click.echo(json.dumps({"name": annotations.name, "version": annotations.version,
                               **annotations_document(annotations)}, indent=2))  # fmt: skip
        return
    tags = ", ".join(f"{key}={value}" for key, value in sorted(annotations.tags.items())) or "-"
    click.echo(f"{ref}  tags: {tags}")
    if annotations.description:
        click.echo(f"  description: {annotations.description}")
    if annotations.yanked:
        click.echo(f"  yanked: {annotations.yanked.reason} (by {annotations.yanked.by}, {annotations.yanked.at})")


@cli.command()
@click.argument("model_ref", metavar="NAME[:VERSION|@ALIAS]", shell_complete=complete_model_ref)
@click.argument("pairs", nargs=-1, metavar="[KEY=VALUE]...")
@click.option("--delete", "deleted", multiple=True, metavar="KEY", help="Remove this tag (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the version's annotations as JSON.")
@click.pass_context
def tag(ctx: click.Context, model_ref: str, pairs: tuple[str, ...], deleted: tuple[str, ...], as_json: bool) -> None:
    """Set or delete tags of a version.

    Tags are kept beside the record: its digest does not change. Every change is recorded with who made it
    and when; concurrent changes are all applied. Example: `mreg tag iris-rf:3 stage=prod --delete candidate`.
    """
    from mreg.records._metadata import split_pair

    tags: dict[str, str] = {}
    for pair in pairs:
        key, value = split_pair(pair, "tag")
        if key in tags:
            raise click.UsageError(f"tag {key!r} is given twice.")
        tags[key] = value
    _print_annotations(registry_of(ctx).tag(model_ref, set=tags, delete=deleted), as_json)


@cli.command()
@click.argument("model_ref", metavar="NAME[:VERSION|@ALIAS]", shell_complete=complete_model_ref)
@click.argument("text")
@click.option("--json", "as_json", is_flag=True, help="Print the version's annotations as JSON.")
@click.pass_context
def describe(ctx: click.Context, model_ref: str, text: str, as_json: bool) -> None:
    """Set the description of a version ('' removes it).

    Example: `mreg describe iris-rf:3 "retrained on the May data"`.
    """
    _print_annotations(registry_of(ctx).describe(model_ref, text), as_json)


@cli.command()
@click.argument("model_ref", metavar="NAME:VERSION", shell_complete=complete_model_ref)
@click.option("--reason", required=True, help="Why the version must not be used.")
@click.option("--force", is_flag=True, help="Yank it even though an alias points to it (the alias stays).")
@click.option("--json", "as_json", is_flag=True, help="Print the version's annotations as JSON.")
@click.pass_context
def yank(ctx: click.Context, model_ref: str, reason: str, force: bool, as_json: bool) -> None:
    """Yank a version so that NAME and `list` skip it.

    The version stays, and NAME:VERSION still resolves, with a warning; no alias may move to it. Example:
    `mreg yank iris-rf:3 --reason "trained on leaked test data"`.
    """
    _print_annotations(registry_of(ctx).yank(model_ref, reason, force=force), as_json)


@cli.command()
@click.argument("model_ref", metavar="NAME:VERSION", shell_complete=complete_model_ref)
@click.option("--json", "as_json", is_flag=True, help="Print the version's annotations as JSON.")
@click.pass_context
def unyank(ctx: click.Context, model_ref: str, as_json: bool) -> None:
    """Make a yanked version usable again.

    Example: `mreg unyank iris-rf:3`.
    """
    _print_annotations(registry_of(ctx).unyank(model_ref), as_json)


@cli.command()
@click.argument("ref_a", metavar="REF_A")
@click.argument("ref_b", metavar="REF_B")
@click.option("--json", "as_json", is_flag=True, help="Print the differences as JSON.")
@click.pass_context
def diff(ctx: click.Context, ref_a: str, ref_b: str, as_json: bool) -> None:
    """Show what changed from one version to another.

    Packages of each image, image digests, base image, metrics, params, datasets, spec digest and git
    commit, from REF_A to REF_B. Example: `mreg diff iris-rf:2 iris-rf@production`.
    """
    found = registry_of(ctx).diff(ref_a, ref_b)
    click.echo(json.dumps(found.to_dict(), indent=2) if as_json else _diff_text(found))


def _diff_text(found: VersionDiff) -> str:
    lines = [f"{found.a} -> {found.b}"]
    for image, changes in found.packages.items():
        for change in changes:
            if change.old is None:
                lines.append(f"  {image:<6} + {change.name}=={change.new}")
            elif change.new is None:
                lines.append(f"  {image:<6} - {change.name}=={change.old}")
            else:
                lines.append(f"  {image:<6} ~ {change.name} {change.old} -> {change.new}")
    lines += [f"  {change.field}: {_shown(change.old)} -> {_shown(change.new)}" for change in found.changes]
    if len(lines) == 1:
        lines.append("  no differences")
    return "\n".join(lines)


def _shown(value: Any) -> str:
    if value is None:
        return "-"
    return ", ".join(str(item) for item in value) if isinstance(value, list) else str(value)


@cli.command()
@click.argument("name", required=False, shell_complete=complete_model_ref)
@click.option("--since", type=Moment(), help="Only events at or after this time (ISO 8601, or a duration ago: 1h).")
@click.option("--json", "as_json", is_flag=True, help="Print the CloudEvents as a JSON list.")
@click.pass_context
def events(ctx: click.Context, name: str | None, since: datetime | None, as_json: bool) -> None:
    """Print the registry's events, oldest first.

    One CloudEvents 1.0 document per change, of model NAME or of all models. Example:
    `mreg events iris-rf --since 1d --json`.
    """
    found = registry_of(ctx).events(name, since)
    if as_json:
        click.echo(json.dumps([event.model_dump(mode="json", exclude_none=True) for event in found], indent=2))
        return
    for event in found:
        data = ", ".join(f"{key}={value}" for key, value in event.data.items() if key not in {"name", "version"})
        click.echo(
            f"{event.time.isoformat()}  {event.type.removeprefix('io.mreg.'):<18}  {event.subject or '-'}  {data}"
        )


@cli.command()
@click.option("--dry-run", is_flag=True, help="Only report what would be deleted and purged.")
@click.option(
    "--grace",
    type=Duration(),
    default="24h",
    show_default=True,
    help="Never delete an object younger than this (a register may still be writing its record).",
)
@click.option(
    "--purge-yanked-older-than",
    "purge_after",
    type=Duration(),
    help="Also delete the objects of versions yanked longer ago than this (their records stay).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_context
def gc(ctx: click.Context, dry_run: bool, grace: timedelta, purge_after: timedelta | None, as_json: bool) -> None:
    """Delete store objects that no record references.

    Objects left by failed uploads or purged versions are deleted once older than the grace period. The
    object store must belong to this registry alone: objects of another registry sharing it look
    unreferenced here. Example: `mreg gc --dry-run`.
    """
    from mreg.registry import Registry

    if ctx.find_root().obj[1]:
        raise click.UsageError("gc sweeps the object store of the spec (--spec); it does not take --registry.")
    report = Registry.from_spec(spec_of(ctx)).gc(dry_run=dry_run, grace=grace, purge_yanked_older_than=purge_after)
    if as_json:
        document = {
            "dry_run": report.dry_run,
            "deleted": [{"uri": o.uri, "size": o.size, "modified": o.modified.isoformat()} for o in report.deleted],
            "young": len(report.young),
            "referenced": report.referenced,
            "purged": report.purged,
        }
        click.echo(json.dumps(document, indent=2))
        return
    verb = "would delete" if dry_run else "deleted"
    for found in report.deleted:
        click.echo(f"{verb}  {found.uri}  {found.size} bytes  (written {found.modified.isoformat()})")
    for ref in report.purged:
        click.echo(f"{'would purge' if dry_run else 'purged'}  {ref}")
    size = sum(found.size for found in report.deleted)
    say(
        f"{verb} {len(report.deleted)} objects ({size} bytes); kept {report.referenced} referenced and "
        f"{len(report.young)} younger than {_duration(grace)}"
    )


def _duration(span: timedelta) -> str:
    """A duration in its largest whole unit, as the options take it (`24h` is `1d`)."""
    seconds = int(span.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
