"""Golden files: compared first; `MREG_UPDATE_GOLDEN=1` rewrites a file that differs and fails the test
while doing so, so that the update mode can never make a test pass on its own."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "golden"


def check_golden(name: str, text: str) -> None:
    """`text` must equal the golden file `tests/data/golden/NAME`."""
    path = GOLDEN / name
    expected = path.read_text() if path.exists() else None
    if text == expected:
        return
    if os.environ.get("MREG_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        pytest.fail(f"rewrote {path}: review the diff, then run the tests again without MREG_UPDATE_GOLDEN")
    pytest.fail(f"{name} differs from {path}; rerun with MREG_UPDATE_GOLDEN=1 if the change is intended")
