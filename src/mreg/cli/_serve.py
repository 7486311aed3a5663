"""Commands that run the built images by the serving contract: train, serve."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from mreg.cli._app import cli, engine_options, registry_of, say, spec_of
from mreg.cli._ecosystem import complete_model_ref

if TYPE_CHECKING:
    from mreg.serving import Served


@cli.command()
@click.argument("args", nargs=-1, metavar="[-- ARGS...]")
@click.option("--register", is_flag=True, help="Register what training wrote (metrics.json becomes its metrics).")
@click.option("--json", "as_json", is_flag=True, help="Print {output, model, record} as JSON on stdout.")
@click.option(
    "-o",
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    help="The output directory, mounted at stages.train.output (default: out/ beside the spec).",
)
@click.option(
    "-e", "--env", "env_pairs", multiple=True, metavar="KEY=VALUE", help="Add to the container's environment."
)
@engine_options
@click.pass_context
def train(
    ctx: click.Context,
    args: tuple[str, ...],
    register: bool,
    as_json: bool,
    output: Path | None,
    env_pairs: tuple[str, ...],
    engine_name: str,
    builder: str | None,
) -> None:
    """Run the built train image with its command and ARGS.

    The image is the exact one of the last `mreg build`. The output directory is mounted at the train
    stage's `output` (default /out) and the container runs as you, so that what it writes is yours. Its
    output streams to stderr; a failure exits 4 with the container's exit code and last lines, and
    registers nothing. Example: `mreg train --register -- --seed 3`.
    """
    from mreg import serving
    from mreg.engine import open_engine
    from mreg.records._metadata import split_pair

    spec = spec_of(ctx)
    env = dict(split_pair(pair, "-e") for pair in env_pairs)
    engine = open_engine(engine_name, builder=builder)  # type: ignore[arg-type]
    trained = serving.train(spec, engine, output=output, extra_args=args, env=env, register=register, on_line=say)
    if as_json:
        click.echo(json.dumps(trained.summary(), indent=2))
        return
    click.echo(f"trained: wrote {trained.output}")
    if trained.record is not None:
        record = trained.record
        click.echo(f"registered {record.name}:{record.version}  sha256:{record.model.sha256}  {record.model.uri}")


@cli.command()
@click.argument("model_ref", metavar="NAME[:VERSION|@ALIAS]", shell_complete=complete_model_ref)
@click.option("--port", type=click.IntRange(1, 65535), help="Port on 127.0.0.1 (default: the serve stage's port).")
@click.option("--detach", is_flag=True, help="Leave the server running in the background once it is ready.")
@click.option("--json", "as_json", is_flag=True, help="Print {container, url, image, model} as JSON on stdout.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=60.0,
    show_default=True,
    help="Seconds the server has to become ready.",
)
@click.option("--allow-yanked", is_flag=True, help="Serve a yanked version.")
@engine_options
@click.pass_context
def serve(
    ctx: click.Context,
    model_ref: str,
    port: int | None,
    detach: bool,
    as_json: bool,
    timeout: float,
    allow_yanked: bool,
    engine_name: str,
    builder: str | None,
) -> None:
    """Serve one version in its recorded serve image.

    The image is pinned by digest and listens on 127.0.0.1. The model is downloaded once into a cache keyed
    by its SHA-256 ($XDG_CACHE_HOME/mreg/models) and mounted read-only at /mnt/models. Once the server is
    ready, its URL is printed; in the foreground its output streams to stderr until Ctrl-C stops and
    removes it. Example: `mreg serve iris-rf@production --port 8080`.
    """
    from mreg import serving
    from mreg.engine import open_engine

    registry = registry_of(ctx)
    engine = open_engine(engine_name, builder=builder)  # type: ignore[arg-type]

    def ready(served: Served) -> None:
        click.echo(json.dumps(served.summary(), indent=2) if as_json else served.url)
        record = served.record
        where = f"{record.name}:{record.version} in container {served.container[:12]}"
        say(
            f"serving {where}; stop it with `docker rm --force {served.container[:12]}`"
            if detach
            else f"serving {where}; Ctrl-C stops it"
        )

    served = serving.serve(
        registry,
        model_ref,
        engine,
        port=port,
        detach=detach,
        allow_yanked=allow_yanked,
        timeout=timeout,
        on_line=say,
        on_ready=ready,
    )
    if not detach:
        say(f"stopped and removed container {served.container[:12]}")
