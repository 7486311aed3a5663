"""Commands that make images and versions: render, lock, build, register."""

from __future__ import annotations

import contextlib
import json
import os
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING

import click

from mreg.cli._app import (
    STAGE_CHOICES,
    Phase,
    Report,
    attest_images_option,
    cli,
    engine_options,
    github_output_option,
    say,
    signing_key_option,
    spec_of,
    timed_engine,
    transfer_progress,
)

if TYPE_CHECKING:
    from mreg.lock import LockMode
    from mreg.records._metadata import Metadata


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
    """Render the multi-stage Dockerfile (base, train, serve).

    Example: `mreg render --context build/` writes the Dockerfile and every file it copies.
    """
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
    """Resolve the packages into registry.lock, exact and hashed.

    One version of each distribution, with its hashes, for both images. Example: `mreg lock --check` in CI.
    """
    from mreg.indexes import PackageIndexes
    from mreg.lock import load_lock, lock_path, resolve, write_lock

    spec = spec_of(ctx)
    if check:
        load_lock(spec)
        say(f"{lock_path(spec)} is up to date")
        return
    with Report().phase(f"resolving {spec.source.name} with uv"):
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
@click.option(
    "--locked",
    "lock_mode",
    flag_value="locked",
    help="Refuse a missing or stale registry.lock (exit 2) instead of writing it first; for CI.",
)
@click.option(
    "--frozen", "lock_mode", flag_value="frozen", help="Build from registry.lock as it is, without checking it."
)
@github_output_option
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
    lock_mode: LockMode | None,
    github_output: bool | None,
) -> None:
    """Build the train and serve images, check them, push them.

    The images are built from the lock and checked for train/serve skew; --push pushes them. A missing or
    stale registry.lock is written first, and stderr says so (as `uv run` and `cargo build` do); `--locked`
    refuses it instead, `--frozen` takes it as it is. Example: `mreg build --locked --push`.
    """
    from mreg import _github, pipeline
    from mreg.engine import open_engine

    spec = spec_of(ctx)
    report = Report()
    engine = open_engine(engine_name, builder=builder)  # type: ignore[arg-type]
    result = pipeline.build(
        spec,
        timed_engine(engine, report),
        targets=("train", "serve") if target == "all" else (target,),  # type: ignore[arg-type]
        push=push,
        network=network or None,
        rebuild=rebuild,
        lock_mode=lock_mode or "auto",
        relocking=lambda reason: _relocking(report, reason),
        on_line=report.line,
    )
    _github.publish_build(result.images, requested=github_output)
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
@click.option(
    "--metrics",
    "metrics_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A JSON file holding a flat object of metric names and numbers.",
)
@click.option("--metric", "metric_pairs", multiple=True, metavar="KEY=NUMBER", help="A metric (repeatable).")
@click.option("--param", "param_pairs", multiple=True, metavar="KEY=VALUE", help="A training parameter (repeatable).")
@click.option(
    "--dataset",
    "datasets",
    multiple=True,
    metavar="URI[@sha256:HEX]",
    help="Data the model was trained on (repeatable).",
)
@click.option("--run-url", help="The training run's page (default: the GitHub Actions run, when there is one).")
@signing_key_option
@attest_images_option
@click.option(
    "--model-signature",
    is_flag=True,
    help="Also sign the model's files as an OpenSSF model-signing bundle (needs mreg[model-signing], an ECDSA key).",
)
@github_output_option
@engine_options
@click.pass_context
def register(
    ctx: click.Context,
    model_path: Path,
    as_json: bool,
    build_result: Path | None,
    metrics_file: Path | None,
    metric_pairs: tuple[str, ...],
    param_pairs: tuple[str, ...],
    datasets: tuple[str, ...],
    run_url: str | None,
    signing_key: Path | None,
    attest_images: bool,
    model_signature: bool,
    github_output: bool | None,
    engine_name: str,
    builder: str | None,
) -> None:
    """Upload MODEL (a file or a directory) as the next version.

    The record is written once the model is stored and checked. Example: `mreg register out/model.joblib`.

    A directory (a SavedModel, a Hugging Face folder, ONNX with external data) is stored as one object per
    file plus a manifest; files the store already holds are not uploaded again. An ONNX model is first
    loaded by the serve image's onnxruntime; a model it cannot load is refused. Metrics, params, datasets and
    the run URL are recorded with the version, under its digest.

    Beside the record go each image's CycloneDX SBOM and an in-toto statement of the registration, signed
    when a key is given (--signing-key or MREG_SIGNING_KEY, passphrase in MREG_SIGNING_KEY_PASSWORD);
    with --model-signature, also an OpenSSF model-signing bundle of the model (`mreg pull --model-signature`).
    """
    from mreg import _github, _provenance, pipeline
    from mreg.engine import open_engine
    from mreg.errors import InvalidInputError
    from mreg.registry import Registry

    metadata = _metadata(metrics_file, metric_pairs, param_pairs, datasets, run_url)
    key = _provenance.signing_key(signing_key)  # a bad key or passphrase stops here, before any upload
    if attest_images and key is None:
        raise InvalidInputError("--attest-images needs a signing key (--signing-key FILE or MREG_SIGNING_KEY).")
    bundle = _provenance.model_bundle(model_path, signing_key) if model_signature else None
    spec = spec_of(ctx)
    with transfer_progress(_size_of(model_path)) as on_progress:
        record = pipeline.register(
            spec,
            model_path,
            engine=lambda: open_engine(engine_name, builder=builder),  # type: ignore[arg-type]
            build_result=build_result,
            on_progress=on_progress,
            metadata=metadata,
            signing_key=key,
            model_bundle=bundle,
        )
    if key is not None:
        say(f"signed {record.name}:{record.version} with the key {key.keyid}")
        if attest_images:
            for attestation in Registry.from_spec(spec).push_attestations(record, key.keyid):
                say(f"pushed the attestation {attestation}")
    _github.publish_record(record, requested=github_output)
    if as_json:
        click.echo(record.to_json())
    else:
        click.echo(f"registered {record.name}:{record.version}  sha256:{record.model.sha256}  {record.model.uri}")


def _relocking(report: Report, reason: str) -> AbstractContextManager[Phase]:
    """Say why the build locks first, then show the lock as a phase."""
    from mreg.lock import LOCK_NAME

    report.note(f"{reason}; locking first")
    return report.phase(f"locking {LOCK_NAME}")


def _metadata(
    metrics_file: Path | None,
    metric_pairs: tuple[str, ...],
    param_pairs: tuple[str, ...],
    datasets: tuple[str, ...],
    run_url: str | None,
) -> Metadata:
    """The register options' metadata, checked before anything is uploaded."""
    from mreg.errors import InvalidInputError
    from mreg.records._metadata import Metadata, parse_number, shown, split_pair

    metadata = Metadata()
    if metrics_file is not None:
        try:
            document = json.loads(metrics_file.read_bytes())
        except OSError as exc:
            raise InvalidInputError(f"{metrics_file}: cannot be read ({exc.strerror}).") from exc
        except ValueError as exc:
            raise InvalidInputError(f"{metrics_file}: not a JSON file ({exc}).") from exc
        metadata.add_metrics(document, str(metrics_file))
    for pair in metric_pairs:
        key, value = split_pair(pair, "--metric")
        where = f"--metric {shown(pair)}"
        metadata.add_metric(key, parse_number(value, key, where), where)
    for pair in param_pairs:
        key, value = split_pair(pair, "--param")
        metadata.add_param(key, value, f"--param {shown(pair)}")
    metadata.add_datasets(datasets, "--dataset")
    url = run_url or _ci_run_url()
    if url:
        metadata.set_run_url(url, "--run-url" if run_url else "GITHUB_SERVER_URL/GITHUB_REPOSITORY/GITHUB_RUN_ID")
    return metadata


def _ci_run_url() -> str | None:
    """The GitHub Actions run this register happens in, when it does."""
    parts = [os.environ.get(name) for name in ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID")]
    if not all(parts):
        return None
    server, repository, run_id = parts
    return f"{server}/{repository}/actions/runs/{run_id}"


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
