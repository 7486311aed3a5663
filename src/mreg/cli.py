"""The `mreg` command: thin click wiring over `mreg.pipeline`. The only place that prints or exits."""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn

import click

from mreg.errors import Interrupted, MregError

if TYPE_CHECKING:
    from mreg.records import Record
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
    help="The registry to read (s3://BUCKET/PREFIX or file://PATH) instead of the spec's (env MREG_REGISTRY).",
)
@click.version_option(package_name="mreg")
@click.pass_context
def cli(ctx: click.Context, spec_path: Path, registry_uri: str | None) -> None:
    """Build train and serve images pinned to the same libraries, and register models with them."""
    ctx.obj = (spec_path, registry_uri)


def _spec(ctx: click.Context) -> Spec:
    from mreg.spec import load_spec

    spec_path, _ = ctx.find_root().obj
    return load_spec(spec_path)


def _registry(ctx: click.Context) -> Registry:
    """--registry (with boto3's endpoint configuration) when given, else the spec's registry."""
    from mreg.registry import Registry

    spec_path, registry_uri = ctx.find_root().obj
    if registry_uri:
        return Registry.open(registry_uri)
    return Registry.from_spec(spec_path)


@cli.command()
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write the Dockerfile here.")
@click.option(
    "--context",
    "context_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write the whole build context (Dockerfile and copied files) into this directory.",
)
@click.option("--classic", is_flag=True, help="Render for the classic builder (no BuildKit mounts).")
@click.pass_context
def render(ctx: click.Context, output: Path | None, context_dir: Path | None, classic: bool) -> None:
    """Render the multi-stage Dockerfile (base -> train, base -> serve)."""
    from mreg.indexes import PackageIndexes
    from mreg.lock import load_lock
    from mreg.render import render as render_context

    spec = _spec(ctx)
    secrets = PackageIndexes.from_environment().urls.keys()
    context = render_context(spec, load_lock(spec), buildkit=not classic, index_secrets=secrets)
    if context_dir is not None:
        context.write(context_dir)
        _say(f"wrote the build context to {context_dir}")
    if output is not None:
        output.write_text(context.dockerfile)
        _say(f"wrote {output}")
    if output is None and context_dir is None:
        click.echo(context.dockerfile, nl=False)


@cli.command()
@click.option("--check", is_flag=True, help="Only check that registry.lock is current; exit 2 when it is not.")
@click.pass_context
def lock(ctx: click.Context, check: bool) -> None:
    """Resolve the packages into registry.lock: exact versions and hashes for both images."""
    from mreg.indexes import PackageIndexes
    from mreg.lock import load_lock, lock_path, resolve, write_lock

    spec = _spec(ctx)
    if check:
        load_lock(spec)
        _say(f"{lock_path(spec)} is up to date")
        return
    resolved = resolve(spec, PackageIndexes.from_environment())
    path = write_lock(spec, resolved)
    counts = ", ".join(f"{name} {len(resolved.pins(name))}" for name in ("base", "train", "serve"))
    click.echo(f"wrote {path} for Python {spec.python.version} on {spec.python.platform} ({counts} distributions)")


@cli.command()
@click.option("--target", type=click.Choice(STAGE_CHOICES), default="all", show_default=True)
@click.option("--push", is_flag=True, help="Push both images to images.repository and pin them by digest.")
@click.option("--json", "as_json", is_flag=True, help="Print the images as JSON on stdout.")
@engine_options
@click.option(
    "--network",
    envvar="MREG_BUILD_NETWORK",
    default="auto",
    show_default=True,
    help="Network of the build's RUN steps; auto means host when the engine has no bridge network.",
)
@click.option("--rebuild", is_flag=True, help="Build even when images with the same content tag exist.")
@click.option("--lock", "relock", is_flag=True, help="Write registry.lock first when it is missing or out of date.")
@click.pass_context
def build(
    ctx: click.Context,
    target: str,
    push: bool,
    as_json: bool,
    engine_name: str,
    builder: str | None,
    network: str,
    rebuild: bool,
    relock: bool,
) -> None:
    """Build the train and serve images (and push them)."""
    from mreg import pipeline
    from mreg.engine import open_engine

    spec = _spec(ctx)
    engine = open_engine(engine_name, builder=builder)  # type: ignore[arg-type]
    targets = ("train", "serve") if target == "all" else (target,)
    with _progress(f"building {', '.join(targets)} with {engine.name}") as on_line:
        result = pipeline.build(
            spec,
            engine,
            targets=targets,  # type: ignore[arg-type]
            push=push,
            network=network or None,
            rebuild=rebuild,
            relock=relock,
            on_line=on_line,
        )
    if as_json:
        click.echo(json.dumps(result.summary(), indent=2))
    else:
        for stage, image in result.images.items():
            click.echo(f"{stage}: {image.image}  ({image.ref})")


@cli.command()
@click.argument("model_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the record as JSON on stdout.")
@click.option(
    "--build-result",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The build result to register against (default: .mreg/build.json beside the spec).",
)
@engine_options
@click.pass_context
def register(
    ctx: click.Context,
    model_file: Path,
    as_json: bool,
    build_result: Path | None,
    engine_name: str,
    builder: str | None,
) -> None:
    """Upload MODEL_FILE and write the next version of the model's record.

    An ONNX model is first loaded by the serve image's onnxruntime; a model it cannot load is refused.
    """
    from mreg import pipeline
    from mreg.engine import open_engine

    spec = _spec(ctx)
    size = model_file.stat().st_size if model_file.is_file() else 0
    with _upload_progress(size) as on_progress:
        record = pipeline.register(
            spec,
            model_file,
            engine=lambda: open_engine(engine_name, builder=builder),  # type: ignore[arg-type]
            build_result=build_result,
            on_progress=on_progress,
        )
    if as_json:
        click.echo(record.to_json())
    else:
        click.echo(f"registered {record.name}:{record.version}  sha256:{record.model.sha256}  {record.model.uri}")


@cli.command()
@click.argument("model_ref", metavar="NAME[:VERSION|@ALIAS]")
@click.option("--json", "as_json", is_flag=True, help="Print the record as JSON.")
@click.pass_context
def show(ctx: click.Context, model_ref: str, as_json: bool) -> None:
    """Show one version of a model (the latest when neither version nor alias is given)."""
    record = _registry(ctx).get(model_ref)
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

    record = _registry(ctx).get(model_ref)
    click.echo(export(record, stage, output), nl=False)  # type: ignore[arg-type]


@cli.command("list")
@click.argument("name", required=False)
@click.option("--limit", type=click.IntRange(min=1, max=1000), default=20, show_default=True, help="Versions per page.")
@click.option("--before", type=click.IntRange(min=2), help="Show versions older than this one (the next page).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@click.pass_context
def list_(ctx: click.Context, name: str | None, limit: int, before: int | None, as_json: bool) -> None:
    """List models, or the versions of model NAME, newest first, a page at a time."""
    from mreg.records import check_name

    records = _registry(ctx).records
    if name is None:
        models = records.models()
        click.echo(json.dumps(models) if as_json else "\n".join(models))
        return
    page = records.versions(check_name(name), limit=limit, before=before)
    if as_json:
        click.echo(json.dumps([record.model_dump(mode="json") for record in page], indent=2))
        return
    rows = [
        (f"{r.name}:{r.version}", r.created_at.isoformat(), r.model.sha256[:12], r.images["serve"].image) for r in page
    ]
    _table(("VERSION", "CREATED", "SHA256", "SERVE IMAGE"), rows)
    if page and page[-1].version > 1:
        _say(f"older versions: mreg list {name} --before {page[-1].version}")


@cli.command()
@click.argument("name")
@click.argument("args", nargs=-1, metavar="[VERSION] ALIAS")
@click.option("--delete", is_flag=True, help="Remove the alias (its history is kept).")
@click.option("--history", is_flag=True, help="Show every move of the alias.")
@click.option("--json", "as_json", is_flag=True, help="Print the alias document as JSON.")
@click.pass_context
def alias(ctx: click.Context, name: str, args: tuple[str, ...], delete: bool, history: bool, as_json: bool) -> None:
    """Point NAME@ALIAS at VERSION (e.g. `mreg alias iris-rf 3 production`), or --delete / --history it."""
    registry = _registry(ctx)
    if delete or history:
        if len(args) != 1:
            raise click.UsageError("give NAME and ALIAS with --delete or --history.")
        result = registry.delete_alias(name, args[0]) if delete else registry.alias(name, args[0])
    else:
        if len(args) != 2 or not args[0].isdigit():
            raise click.UsageError("give NAME VERSION ALIAS, e.g. `mreg alias iris-rf 3 production`.")
        result = registry.move_alias(name, int(args[0]), args[1])
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
    help="A directory (the model keeps its file name) or a file path.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the path, digest and serve image as JSON.")
@click.pass_context
def pull(ctx: click.Context, model_ref: str, output: Path, as_json: bool) -> None:
    """Download a model, check its SHA-256, and print the serve image it belongs with."""
    registry = _registry(ctx)
    record = registry.get(model_ref)
    with _upload_progress(record.model.size, "downloading") as on_progress:
        path = registry.download(record, output, on_progress=on_progress)
    serve = record.images["serve"].image
    if as_json:
        document = {"name": record.name, "version": record.version, "path": str(path), "sha256": record.model.sha256}
        click.echo(json.dumps({**document, "serve_image": serve, "train_image": record.images["train"].image}))
    else:
        _say(f"pulled {record.name}:{record.version} to {path} (sha256 {record.model.sha256} checked)")
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
    from mreg.pipeline import verify as verify_record

    registry = _registry(ctx)
    record = registry.get(model_ref)
    checks = verify_record(registry, record, lambda: open_engine(engine_name, builder=builder))  # type: ignore[arg-type]
    if as_json:
        click.echo(json.dumps([{"subject": c.subject, "ok": c.ok, "detail": c.detail} for c in checks], indent=2))
    else:
        for check in checks:
            click.echo(f"{'ok  ' if check.ok else 'FAIL'}  {check.subject:<6}  {check.detail}")
    failed = [check.subject for check in checks if not check.ok]
    if failed:
        raise IntegrityError(f"{record.name}:{record.version} failed verification: {', '.join(failed)}.")


def main() -> NoReturn:
    """Entry point: run the CLI and leave with its exit code, without the interpreter's teardown (freeing
    botocore's loaded models alone takes ~0.1 s): all mreg writes is complete and closed by then."""
    signal.signal(signal.SIGTERM, _terminated)
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")  # no entry-point scan on every start
    code = run()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def run(args: list[str] | None = None) -> int:
    """Run the CLI; turn mreg's errors into messages and exit codes, never tracebacks."""
    try:
        code = cli.main(args, standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except (click.exceptions.Abort, KeyboardInterrupt):
        return _fail(Interrupted("interrupted; nothing was recorded."))
    except MregError as exc:
        return _fail(exc)
    return code if isinstance(code, int) else 0


def _terminated(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _fail(error: MregError) -> int:
    click.echo(f"error: {error}", err=True)
    return error.exit_code


def _say(message: str) -> None:
    click.echo(message, err=True)


@contextmanager
def _progress(title: str) -> Iterator[Callable[[str], None]]:
    """Build output on stderr: a live line under a spinner on a terminal, plain lines otherwise.

    Nothing is shown before the first line, so that input refused up front prints only its error. rich is
    only imported for a terminal (its import costs a CI step some 60 ms).
    """
    if not sys.stderr.isatty():
        started = False

        def plain(line: str) -> None:
            nonlocal started
            if not started:
                _say(f"mreg: {title}")
                started = True
            _say(line)

        yield plain
        return
    from rich.console import Console

    with Console(stderr=True, highlight=False).status(title) as status:
        yield lambda line: status.update(f"{title}\n[dim]{_clip(line)}[/dim]")


@contextmanager
def _upload_progress(total: int, title: str = "uploading") -> Iterator[Callable[[int], None] | None]:
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


def _table(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=False)]
    for row in (header, *rows):
        click.echo("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
