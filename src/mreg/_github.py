"""GitHub Actions: step outputs in `$GITHUB_OUTPUT` and a summary table in `$GITHUB_STEP_SUMMARY`.

Outputs use the multiline form (`name<<DELIMITER`, the value, `DELIMITER`) with a delimiter the value cannot
hold, and every value is checked against its grammar first, so that nothing a record or a build holds can
add an output or a line of its own.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from mreg._grammar import REFERENCE_RE, SHA256_DIGEST_RE
from mreg.errors import InvalidInputError, MregError

if TYPE_CHECKING:
    from mreg.engine import BuiltImage
    from mreg.records import Record
    from mreg.spec import Stage

_VERSION_RE = re.compile(r"[1-9][0-9]{0,9}")
_GRAMMARS: dict[str, re.Pattern[str]] = {
    "train-image": REFERENCE_RE,
    "serve-image": REFERENCE_RE,
    "version": _VERSION_RE,
    "record-digest": SHA256_DIGEST_RE,
}
"""The outputs mreg writes, each with the grammar its value must match."""


def publish_build(images: Mapping[Stage, BuiltImage], *, requested: bool | None) -> None:
    """`train-image` and `serve-image` (pinned references) and a table of the images, when in Actions."""
    rows = [(stage, f"`{image.image}`", f"`{image.ref}`") for stage, image in images.items()]
    _publish(
        {f"{stage}-image": image.image for stage, image in images.items()},
        "mreg build",
        ("image", "pinned reference", "tag"),
        rows,
        requested=requested,
    )


def publish_record(record: Record, *, requested: bool | None) -> None:
    """`version`, `record-digest` and both images of a registered version, and a table of it, when in Actions."""
    if record.digest is None:
        raise MregError(f"record {record.name}:{record.version} has no digest to publish.")
    outputs = {"version": str(record.version), "record-digest": record.digest}
    outputs.update({f"{stage}-image": image.image for stage, image in record.images.items()})
    rows = [
        ("model", f"`{record.name}:{record.version}`"),
        ("model sha256", f"`{record.model.sha256}`"),
        ("record digest", f"`{record.digest}`"),
        *((f"{stage} image", f"`{image.image}`") for stage, image in record.images.items()),
    ]
    _publish(outputs, "mreg register", ("", "value"), rows, requested=requested)


def output_text(outputs: Mapping[str, str]) -> str:
    """`outputs` in GitHub's multiline output format, each value checked against its grammar."""
    lines = []
    for name, value in outputs.items():
        grammar = _GRAMMARS.get(name)
        if grammar is None or grammar.fullmatch(value) is None:
            raise MregError(f"the GitHub output {name}={value!r} is not one mreg writes; nothing was written.")
        delimiter = f"mreg_{secrets.token_hex(16)}"  # a value matching its grammar cannot hold it
        lines += [f"{name}<<{delimiter}", value, delimiter]
    return "\n".join(lines) + "\n"


def summary_text(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table under a heading; `|`, `<`, `>` and line breaks in cells are escaped."""

    def cell(text: str) -> str:
        return " ".join(text.split()).replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")

    lines = [f"### {cell(title)}", "", "| " + " | ".join(cell(h) for h in header) + " |"]
    lines.append("|" + "---|" * len(header))
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines) + "\n\n"


def _publish(
    outputs: Mapping[str, str],
    title: str,
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    requested: bool | None,
) -> None:
    """Append the outputs and the summary to the files the runner named, when asked or detected."""
    files = _files(requested)
    if files is None:
        return
    output_file, summary_file = files
    text = output_text(outputs)  # checked before either file is touched
    _append(output_file, text, "GITHUB_OUTPUT")
    if summary_file is not None:
        _append(summary_file, summary_text(title, header, rows), "GITHUB_STEP_SUMMARY")


def _files(requested: bool | None) -> tuple[Path, Path | None] | None:
    """GITHUB_OUTPUT and GITHUB_STEP_SUMMARY: with --github-output, or inside Actions (GITHUB_ACTIONS=true
    and GITHUB_OUTPUT set) unless --no-github-output; None when outputs are not to be written."""
    output = os.environ.get("GITHUB_OUTPUT", "")
    if requested is False or (requested is None and not (os.environ.get("GITHUB_ACTIONS") == "true" and output)):
        return None
    if not output:
        raise InvalidInputError("--github-output needs GITHUB_OUTPUT, the file GitHub Actions names; it is not set.")
    summary = os.environ.get("GITHUB_STEP_SUMMARY", "")
    return _runner_file(output, "GITHUB_OUTPUT"), _runner_file(summary, "GITHUB_STEP_SUMMARY") if summary else None


def _runner_file(value: str, variable: str) -> Path:
    """A file the runner created for the step: an absolute path to an existing regular file."""
    path = Path(value)
    if not path.is_absolute() or path.is_symlink() or not path.is_file():
        raise InvalidInputError(f"{variable}={value!r}: not an absolute path to an existing regular file.")
    return path


def _append(path: Path, text: str, variable: str) -> None:
    try:
        with path.open("a", encoding="utf-8") as handle:
            handle.write(text)
    except OSError as exc:
        raise MregError(f"{variable}: cannot append to {path} ({exc.strerror}).") from exc
