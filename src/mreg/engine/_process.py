"""Run the `docker` CLI: argv lists only (never a shell), output streamed or captured, errors wrapped."""

from __future__ import annotations

import collections
import os
import subprocess
from collections.abc import Callable, Mapping, Sequence

from mreg.errors import EngineError

LineSink = Callable[[str], None]
TAIL_LINES = 25


def stream(
    argv: Sequence[str],
    *,
    on_line: LineSink,
    what: str,
    env: Mapping[str, str] | None = None,
    redact: Callable[[str], str] | None = None,
) -> None:
    """Run `argv`, passing each output line (stdout and stderr merged) to `on_line`.

    `env` is added to the child's environment (secrets travel there, never in argv); `redact` masks
    secrets in the lines passed on and in errors. On failure raise EngineError naming `what`
    with the output's last lines. On any interruption (Ctrl-C, SIGTERM turned into an exception) the
    child is stopped before the exception goes on.
    """
    returncode, tail = follow(argv, on_line=on_line, what=what, env=env, redact=redact)
    if returncode != 0:
        output = "\n".join(f"  {line}" for line in tail)
        raise EngineError(f"{what} failed (exit code {returncode}). Last lines of its output:\n{output}") from (
            subprocess.CalledProcessError(returncode, list(argv))
        )


def follow(
    argv: Sequence[str],
    *,
    on_line: LineSink,
    what: str,
    env: Mapping[str, str] | None = None,
    redact: Callable[[str], str] | None = None,
) -> tuple[int, list[str]]:
    """Run `argv` as `stream` does, and return its exit code and the last lines of its output, whatever the
    code; only a failure to start raises."""
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    try:
        proc = subprocess.Popen(
            list(argv),
            env={**os.environ, **env} if env else None,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            bufsize=1,
        )
    except OSError as exc:
        raise EngineError(f"{what} could not start {argv[0]!r}: {exc.strerror}.") from exc
    try:
        assert proc.stdout is not None  # noqa: S101 - set by stdout=PIPE
        for raw in proc.stdout:
            line = raw.rstrip("\n")
            line = redact(line) if redact else line
            tail.append(line)
            on_line(line)
        return proc.wait(), list(tail)
    except BaseException:
        _stop(proc)
        raise


def run(argv: Sequence[str], *, what: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run `argv` to completion, capturing its output; only a failure to start raises."""
    try:
        return subprocess.run(list(argv), input=stdin, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise EngineError(f"{what} could not start {argv[0]!r}: {exc.strerror}.") from exc


def capture(argv: Sequence[str], *, what: str, stdin: str | None = None) -> str:
    """Run `argv` to completion and return its stdout; on failure raise EngineError with its stderr."""
    result = run(argv, what=what, stdin=stdin)
    if result.returncode != 0:
        raise EngineError(f"{what} failed (exit code {result.returncode}): {error_text(result)}") from (
            subprocess.CalledProcessError(result.returncode, result.args)
        )
    return result.stdout


def error_text(result: subprocess.CompletedProcess[str]) -> str:
    """The useful part of a failed command's output."""
    return (result.stderr or result.stdout).strip() or "no output"


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
