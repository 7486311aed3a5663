"""The `mreg` group, the options commands share, and the helpers every command uses to read input and
print: the spec, the registry, progress on stderr (live, plain or quiet), tables."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, cast

import click

if TYPE_CHECKING:
    from mreg.engine import Built, BuiltImage, Engine
    from mreg.provenance.attestation import Trust
    from mreg.registry import Registry
    from mreg.spec import Spec

STAGE_CHOICES = ("train", "serve", "all")
ProgressMode = Literal["live", "plain", "quiet"]


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


def github_output_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """`--github-output/--no-github-output`: GitHub Actions step outputs and job summary (default: detected)."""
    return click.option(
        "--github-output/--no-github-output",
        default=None,
        help=(
            "Write the step outputs to $GITHUB_OUTPUT and a summary table to $GITHUB_STEP_SUMMARY "
            "(default: when GITHUB_ACTIONS is true and GITHUB_OUTPUT is set)."
        ),
    )(command)


def signing_key_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """`--signing-key FILE` (MREG_SIGNING_KEY); its passphrase only ever comes from MREG_SIGNING_KEY_PASSWORD."""
    return click.option(
        "--signing-key",
        type=click.Path(dir_okay=False, path_type=Path),
        envvar="MREG_SIGNING_KEY",
        help="A PEM private key (ECDSA P-256/P-384 or Ed25519) to sign with; passphrase in MREG_SIGNING_KEY_PASSWORD.",
    )(command)


def attest_images_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """`--attest-images`: push the signature to the images' registries as cosign attestations."""
    return click.option(
        "--attest-images",
        is_flag=True,
        help="Push the signed statement to each pushed image's registry as a cosign attestation.",
    )(command)


def trust_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """`--trusted-keys FILE` (MREG_TRUSTED_KEYS) and `--require-signature` (MREG_REQUIRE_SIGNATURE)."""
    command = click.option(
        "--require-signature",
        is_flag=True,
        default=False,
        envvar="MREG_REQUIRE_SIGNATURE",
        help="Refuse a version no trusted key signed (also the spec's registry.require_signature).",
    )(command)
    return click.option(
        "--trusted-keys",
        type=click.Path(dir_okay=False, path_type=Path),
        envvar="MREG_TRUSTED_KEYS",
        help="Public keys to trust: PEM, or a TOML/JSON list with names and validity windows.",
    )(command)


class Options(NamedTuple):
    """The group's options, as every command finds them on the root context."""

    spec_path: Path
    registry_uri: str | None
    quiet: bool
    verbose: bool = False


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
    "-q", "--quiet", is_flag=True, envvar="MREG_QUIET", help="Print only the result and errors: no progress, no notes."
)
@click.option(
    "-v",
    "--verbose",
    is_flag=True,
    envvar="MREG_VERBOSE",
    help="Outside a terminal, also print every line of each phase's output (BuildKit's log, docker push).",
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
def cli(ctx: click.Context, spec_path: Path, registry_uri: str | None, quiet: bool, verbose: bool) -> None:
    """Build train and serve images pinned to the same libraries, and register models with them."""
    ctx.obj = Options(spec_path, registry_uri, quiet, verbose)


def spec_of(ctx: click.Context) -> Spec:
    """The spec --spec names, read once per command."""
    from mreg.spec import load_spec

    root = ctx.find_root()
    if "mreg.spec" not in root.meta:
        root.meta["mreg.spec"] = load_spec(root.obj.spec_path)
    spec: Spec = root.meta["mreg.spec"]
    return spec


def registry_of(ctx: click.Context, *, checked: bool = True) -> Registry:
    """--registry (with boto3's endpoint configuration) when given, else the spec's registry. Unless not
    `checked`, its reads check signatures as MREG_TRUSTED_KEYS, MREG_REQUIRE_SIGNATURE and the spec say."""
    from mreg.registry import Registry

    trust = trust_of(ctx) if checked else None
    registry_uri = ctx.find_root().obj.registry_uri
    if registry_uri:
        return Registry.open(registry_uri, trust=trust)
    return Registry.from_spec(spec_of(ctx), trust=trust)


def trust_of(ctx: click.Context, keys: Path | None = None, required: bool = False) -> Trust | None:
    """Which keys to trust: `keys`, else MREG_TRUSTED_KEYS, else the spec's registry.trusted_keys (when the
    registry is the spec's); a signature is required with `required`, MREG_REQUIRE_SIGNATURE or the spec's
    registry.require_signature. None when nothing asks for signatures."""
    spec = None if ctx.find_root().obj.registry_uri else spec_of(ctx)
    named = os.environ.get("MREG_TRUSTED_KEYS")
    if keys is None and named:
        keys = Path(named)
    if keys is None and spec is not None and spec.registry.trusted_keys:
        keys = spec.resolve_path(spec.registry.trusted_keys)
    required = required or _env_flag("MREG_REQUIRE_SIGNATURE") or (spec is not None and spec.registry.require_signature)
    if keys is None and not required:
        return None
    from mreg.provenance._keys import load_trusted_keys
    from mreg.provenance.attestation import Trust

    return Trust(tuple(load_trusted_keys(keys)) if keys else (), required=required)


def _env_flag(name: str) -> bool:
    """A boolean environment variable, read as click reads a flag's (1/0, true/false, yes/no, on/off)."""
    from mreg.errors import InvalidInputError

    value = os.environ.get(name)
    if not value:
        return False
    try:
        return bool(click.BOOL.convert(value, None, None))
    except click.BadParameter as exc:
        raise InvalidInputError(f"{name}={value!r} is not a boolean (1 or 0, true or false, yes or no).") from exc


def say(message: str) -> None:
    """A note on stderr (none with --quiet)."""
    if progress_mode() != "quiet":
        click.echo(message, err=True)


def progress_mode() -> ProgressMode:
    """`quiet` with --quiet, else `live` on a terminal and `plain` elsewhere (CI logs, pipes)."""
    ctx = click.get_current_context(silent=True)
    options = ctx.find_root().obj if ctx is not None else None
    if isinstance(options, Options) and options.quiet:
        return "quiet"
    return "live" if sys.stderr.isatty() else "plain"


class Phase:
    """One step of a command as its progress shows it: output lines and bytes done arrive here."""

    def __init__(self, on_line: Callable[[str], None], on_bytes: Callable[[int], None]) -> None:
        self.done = 0
        self._on_line = on_line
        self._on_bytes = on_bytes

    def line(self, text: str) -> None:
        """The step's latest line of output (shown live on a terminal only)."""
        self._on_line(text)

    def advance(self, count: int) -> None:
        """`count` more bytes transferred."""
        self.done += count
        self._on_bytes(count)


class Report:
    """A command's progress on stderr, phase by phase.

    `live` (a terminal): a display per phase with its latest line or its bytes, rate and time left, kept as
    one finished line. `plain` (CI): one line per phase once it has ended well, with its duration (and size
    and rate for a transfer); nothing before or on failure, so that refused input prints only its error.
    `quiet`: nothing. rich is only imported for a terminal (its import costs a CI step some 60 ms).
    """

    def __init__(self, mode: ProgressMode | None = None) -> None:
        self.mode = mode or progress_mode()
        self.in_phase = False

    def line(self, text: str) -> None:
        """A line of the command's own (not of a phase's output): kept as a note."""
        if not self.in_phase:
            self.note(text)

    def note(self, message: str) -> None:
        """A line that stays (none with --quiet)."""
        if self.mode != "quiet":
            click.echo(f"mreg: {message}", err=True)

    @contextmanager
    def phase(self, title: str, *, total: int | None = None) -> Iterator[Phase]:
        """Show `title` while the block runs; `total` bytes make it a transfer."""
        self.in_phase = True
        try:
            if self.mode == "live":
                with _live_phase(title, total) as phase:
                    yield phase
            else:
                with self._plain_phase(title, total) as phase:
                    yield phase
        finally:
            self.in_phase = False

    @contextmanager
    def _plain_phase(self, title: str, total: int | None) -> Iterator[Phase]:
        if self.mode == "quiet":
            yield Phase(lambda text: None, lambda count: None)
            return
        phase = Phase(_echo_line if _verbose() else lambda text: None, lambda count: None)
        started = time.monotonic()
        yield phase  # a failure prints its error alone
        self.note(f"{title}: {_summary(phase, total, time.monotonic() - started)}")


def _verbose() -> bool:
    ctx = click.get_current_context(silent=True)
    options = ctx.find_root().obj if ctx is not None else None
    return isinstance(options, Options) and options.verbose


def _echo_line(text: str) -> None:
    click.echo(text, err=True)


@contextmanager
def _live_phase(title: str, total: int | None) -> Iterator[Phase]:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        ProgressColumn,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns: list[ProgressColumn | str] = [SpinnerColumn(finished_text="[green]✓"), TextColumn("{task.description}")]
    if total is not None:
        columns += [BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn()]
    else:
        columns += [TimeElapsedColumn(), TextColumn("[dim]{task.fields[detail]}")]
    title = _clip(title)
    with Progress(*columns, console=Console(stderr=True, highlight=False)) as display:
        task = display.add_task(title, total=total, detail="")
        phase = Phase(lambda text: display.update(task, detail=_clip(text)), lambda count: display.advance(task, count))
        try:
            yield phase
        except BaseException:
            display.update(task, description=f"[red]{title}: failed", detail="")
            display.stop_task(task)
            raise
        display.update(task, total=total if total is not None else 1, completed=total or 1, detail="")


def _summary(phase: Phase, total: int | None, seconds: float) -> str:
    if total is None:
        return f"done in {_seconds(seconds)}"
    rate = phase.done / seconds if seconds > 0 else 0.0
    return f"{_size(phase.done)} in {_seconds(seconds)} ({_size(round(rate))}/s)"


def _seconds(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 60 else f"{int(seconds // 60)} min {seconds % 60:02.0f} s"


def _size(count: int) -> str:
    for unit, scale in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} bytes"


@contextmanager
def transfer_progress(total: int, title: str = "uploading") -> Iterator[Callable[[int], None] | None]:
    """A transfer of `total` bytes as a phase of its own; None with --quiet (nothing to count)."""
    report = Report()
    if report.mode == "quiet":
        yield None
        return
    with report.phase(title, total=total) as phase:
        yield phase.advance


def timed_engine(engine: Engine, report: Report) -> Engine:
    """`engine`, with each build and push shown as a phase of `report`."""
    return cast("Engine", _TimedEngine(engine, report))


class _TimedEngine:
    """Delegates to an engine; its slow calls become phases (the pipeline needs no progress API)."""

    def __init__(self, engine: Engine, report: Report) -> None:
        self._engine = engine
        self._report = report

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def build(self, context: Path, targets: Mapping[str, str], **options: Any) -> Built:
        with self._report.phase(f"building {', '.join(targets)} with {self._engine.name}") as phase:
            return self._engine.build(context, targets, **{**options, "on_line": _tee(options["on_line"], phase)})

    def push(self, ref: str, *, on_line: Callable[[str], None]) -> BuiltImage:
        with self._report.phase(f"pushing {ref}") as phase:
            return self._engine.push(ref, on_line=_tee(on_line, phase))


def _tee(on_line: Callable[[str], None], phase: Phase) -> Callable[[str], None]:
    def both(line: str) -> None:
        phase.line(line)
        on_line(line)

    return both


def _clip(line: str, width: int = 100) -> str:
    from rich.markup import escape

    return escape(line if len(line) <= width else line[: width - 1] + "…")


def table(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=False)]
    for row in (header, *rows):
        click.echo("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
