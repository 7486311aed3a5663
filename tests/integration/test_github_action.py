"""The Action's build step on a real engine: `mreg build --locked` writes the image outputs itself."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support import copy_example
from tests.unit.test_ecosystem import parse_outputs, run_step

pytestmark = pytest.mark.docker


def test_the_actions_build_step_writes_the_image_outputs(tmp_path: Path) -> None:
    project = copy_example(tmp_path / "project")
    output = tmp_path / "output"
    output.touch()
    env = {"GITHUB_ACTIONS": "true", "GITHUB_OUTPUT": str(output)}
    result = run_step("build", {"spec": "registry.toml", "push": "false"}, cwd=project, env=env)
    assert result.returncode == 0, result.stderr
    built = json.loads((project / ".mreg" / "build.json").read_text())["images"]
    assert parse_outputs(output.read_text()) == {f"{stage}-image": built[stage]["image"] for stage in built}
