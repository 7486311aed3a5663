"""Model and alias names: one grammar for the spec, the records and the CLI (a dependency-free module)."""

from __future__ import annotations

import re

NAME_RE = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
"""Also a valid path component of an image repository (`mreg/<name>`), so Docker can use it."""
MAX_NAME = 64
NAME_RULE = (
    "1-64 lower-case letters and digits, in words joined by '.', '_', '__' or dashes; it starts and ends with "
    "a letter or digit"
)


def is_name(text: str) -> bool:
    """Whether `text` is a valid model or alias name."""
    return len(text) <= MAX_NAME and NAME_RE.fullmatch(text) is not None
