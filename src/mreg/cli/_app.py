"""The `mreg` group, the options commands share, and the helpers every command uses to read input and
print: the spec, the registry, progress on stderr, tables."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from mreg.registry import Registry
    from mreg.spec import Spec

STAGE_CHOICES = ("train", "serve", "all")


def engine_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """`--engine` and `--builder`, shared by every command that may talk to Docker."""
    command = click.option(
        "--builder", envvar="MREG_BUILDER", help="The buildx builder to use (e.g. a remote BuildKit)."
    )(command)
    return click.option(
        "--engine",
        "engine_name",
        type=click.Choice(["auto", "buildx", "docker"]),
        default="auto",
        show_default=True,
        envvar="MREG_ENGINE",
        help="buildx (BuildKit) or docker (the SDK's classic builder); auto prefers buildx.",
    )(command)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--spec",
    "spec_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("registry.toml"),
    show_default=True,
    envvar="MREG_SPEC",
    help="The spec file (env MREG_SPEC).",
)
@click.option(
    "--registry",
    "registry_uri",
    envvar="MREG_REGISTRY",
    help=(
        "The registry to read (s3://BUCKET/PREFIX, gs://BUCKET/PREFIX or file://PATH) instead of the spec's "
        "(env MREG_REGISTRY)."
    ),
)
@click.option(
    "--debug",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=lambda ctx, param, value: os.environ.__setitem__("MREG_DEBUG", "1") if value else None,
    help="On error, also show its cause chain: the docker and S3/GCS calls that failed (env MREG_DEBUG=1).",
)
@click.version_option(package_name="mreg")
@click.pass_context
def cli(ctx: click.Context, spec_path: Path, registry_uri: str | None) -> None:
    """Build train and serve images pinned to the same libraries, and register models with them."""
    ctx.obj = (spec_path, registry_uri)


def spec_of(ctx: click.Context) -> Spec:
    from mreg.spec import load_spec

    spec_path, _ = ctx.find_root().obj
    return load_spec(spec_path)


def registry_of(ctx: click.Context) -> Registry:
    """--registry (with boto3's endpoint configuration) when given, else the spec's registry."""
    from mreg.registry import Registry

    _, registry_uri = ctx.find_root().obj
    if registry_uri:
        return Registry.open(registry_uri)
    return Registry.from_spec(spec_of(ctx))


def say(message: str) -> None:
    click.echo(message, err=True)


@contextmanager
def build_progress(title: str) -> Iterator[Callable[[str], None]]:
    """Build output on stderr: a live line under a spinner on a terminal, plain lines otherwise.

    Nothing is shown before the first line, so that input refused up front prints only its error. rich is
    only imported for a terminal (its import costs a CI step some 60 ms).
    """
    if not sys.stderr.isatty():
        started = False

        def plain(line: str) -> None:
            nonlocal started
            if not started:
                say(f"mreg: {title}")
                started = True
            say(line)

        yield plain
        return
    from rich.console import Console

    with Console(stderr=True, highlight=False).status(title) as status:
        yield lambda line: status.update(f"{title}\n[dim]{_clip(line)}[/dim]")


@contextmanager
def transfer_progress(total: int, title: str = "uploading") -> Iterator[Callable[[int], None] | None]:
    """A transfer bar on a terminal; nothing in CI logs."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

    console = Console(stderr=True)
    with Progress(*Progress.get_default_columns(), DownloadColumn(), TransferSpeedColumn(), console=console) as bar:
        task = bar.add_task(title, total=total)
        yield lambda count: bar.advance(task, count)


def _clip(line: str, width: int = 120) -> str:
    from rich.markup import escape

    return escape(line if len(line) <= width else line[: width - 1] + "…")


def table(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=False)]
    for row in (header, *rows):
        click.echo("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
