"""Commands that make images and versions: render, lock, build, register."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import click

from mreg.cli._app import STAGE_CHOICES, build_progress, cli, engine_options, say, spec_of, transfer_progress


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

    spec = spec_of(ctx)
    secrets = PackageIndexes.from_environment().urls.keys()
    context = render_context(spec, load_lock(spec), buildkit=not classic, index_secrets=secrets)
    if context_dir is not None:
        context.write(context_dir)
        say(f"wrote the build context to {context_dir}")
    if output is not None:
        output.write_text(context.dockerfile)
        say(f"wrote {output}")
    if output is None and context_dir is None:
        click.echo(context.dockerfile, nl=False)


@cli.command()
@click.option("--check", is_flag=True, help="Only check that registry.lock is current; exit 2 when it is not.")
@click.pass_context
def lock(ctx: click.Context, check: bool) -> None:
    """Resolve the packages into registry.lock: exact versions and hashes for both images."""
    from mreg.indexes import PackageIndexes
    from mreg.lock import load_lock, lock_path, resolve, write_lock

    spec = spec_of(ctx)
    if check:
        load_lock(spec)
        say(f"{lock_path(spec)} is up to date")
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

    spec = spec_of(ctx)
    engine = open_engine(engine_name, builder=builder)  # type: ignore[arg-type]
    targets = ("train", "serve") if target == "all" else (target,)
    with build_progress(f"building {', '.join(targets)} with {engine.name}") as on_line:
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
@click.argument("model_path", metavar="MODEL", type=click.Path(path_type=Path))
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
    model_path: Path,
    as_json: bool,
    build_result: Path | None,
    engine_name: str,
    builder: str | None,
) -> None:
    """Upload MODEL (a file or a directory) and write the next version of the model's record.

    A directory (a SavedModel, a Hugging Face folder, ONNX with external data) is stored as one object per
    file plus a manifest; files the store already holds are not uploaded again. An ONNX model is first
    loaded by the serve image's onnxruntime; a model it cannot load is refused.
    """
    from mreg import pipeline
    from mreg.engine import open_engine

    spec = spec_of(ctx)
    with transfer_progress(_size_of(model_path)) as on_progress:
        record = pipeline.register(
            spec,
            model_path,
            engine=lambda: open_engine(engine_name, builder=builder),  # type: ignore[arg-type]
            build_result=build_result,
            on_progress=on_progress,
        )
    if as_json:
        click.echo(record.to_json())
    else:
        click.echo(f"registered {record.name}:{record.version}  sha256:{record.model.sha256}  {record.model.uri}")


def _size_of(path: Path) -> int:
    """Bytes a register will read (for the progress bar; links are not followed, 0 when unreadable)."""
    if path.is_symlink():
        return 0
    if path.is_file():
        return path.stat().st_size
    total = 0
    for directory, _, names in os.walk(path):
        for name in names:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(directory, name)).st_size  # noqa: PTH118 - os.walk gives strings
    return total
