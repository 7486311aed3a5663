"""The bad-spec corpus: every spec in tests/data/bad_specs is refused up front, with its exact message.

Each `NN-short-name.toml` is a complete registry.toml that must be refused; `NN-short-name.expected` holds
the exact stderr of mreg run beside it (as registry.toml), with `{root}` where the spec's directory appears.
Both `mreg render` and `mreg build` must refuse it with exit code 2 before locking, rendering or talking to
Docker: nothing may be written beside the spec.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tests.support import REPO, mreg_in_process

CORPUS = REPO / "tests" / "data" / "bad_specs"
SPECS = sorted(CORPUS.glob("*.toml"))
MIN_CASES = 45
# Guard rails, should a bad spec ever get through validation: no engine to build with, no index to lock from.
ISOLATED = {
    "MREG_SPEC": "registry.toml",
    "DOCKER_HOST": "unix:///nonexistent/mreg-bad-specs/docker.sock",
    "UV_OFFLINE": "1",
}


def test_the_corpus_has_enough_well_formed_cases() -> None:
    assert len(SPECS) >= MIN_CASES, f"only {len(SPECS)} bad specs in {CORPUS}"
    for spec in SPECS:
        assert re.fullmatch(r"[0-9]{2,3}-[a-z0-9]+(?:-[a-z0-9]+)*", spec.stem), spec.name
    numbers = [spec.stem.split("-", 1)[0] for spec in SPECS]
    assert len(numbers) == len(set(numbers)), "two cases share a number"
    assert sorted(path.name for path in CORPUS.iterdir()) == sorted(
        name for spec in SPECS for name in (spec.name, f"{spec.stem}.expected")
    ), "every case is a .toml with its .expected, and nothing else"


@pytest.mark.parametrize("source", SPECS, ids=[spec.stem for spec in SPECS])
def test_bad_spec_is_refused_before_anything_happens(
    tmp_path: Path, source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = tmp_path / "registry.toml"
    shutil.copyfile(source, spec)
    original = spec.read_bytes()
    expected = source.with_suffix(".expected").read_text(encoding="utf-8").replace("{root}", str(tmp_path.resolve()))
    assert expected.startswith("error: registry.toml: "), f"{source.stem}.expected does not start with the prefix"
    for key, value in ISOLATED.items():
        monkeypatch.setenv(key, value)
    for command in ("render", "build"):
        # in this process for speed; tests/unit/test_cli.py runs the same refusals as separate processes
        code, stdout, stderr = mreg_in_process(command, cwd=tmp_path, monkeypatch=monkeypatch)
        assert "Traceback" not in stdout + stderr, f"mreg {command} crashed:\n{stderr}"
        assert stderr == expected, f"mreg {command}"
        assert stdout == "", f"mreg {command}"
        assert code == 2, f"mreg {command}"
        assert sorted(path.name for path in tmp_path.iterdir()) == ["registry.toml"], f"mreg {command} wrote files"
        assert spec.read_bytes() == original, f"mreg {command} changed the spec"
