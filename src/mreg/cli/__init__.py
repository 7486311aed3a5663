"""The `mreg` command: thin click wiring over the registry and the pipeline; the only place that prints or
exits. Commands live in the private modules beside this one, by what they touch."""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType
from typing import NoReturn

import click

from mreg.cli import _build, _ecosystem, _export, _lifecycle, _provenance, _serve, _ui, _versions
from mreg.cli._app import cli
from mreg.errors import Interrupted, MregError

__all__ = ["cli", "main", "run"]
# importing them registers their commands on `cli`
_COMMANDS = (_build, _ecosystem, _export, _lifecycle, _provenance, _serve, _ui, _versions)


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
    """One line (or one per problem) on stderr; with --debug, each cause below it."""
    click.echo(f"error: {error}", err=True)
    if os.environ.get("MREG_DEBUG") == "1":
        cause = error.__cause__ or error.__context__
        while cause is not None:
            kind = type(cause)
            click.echo(f"  caused by {kind.__module__}.{kind.__qualname__}: {cause}", err=True)
            cause = cause.__cause__ or cause.__context__
    return error.exit_code
