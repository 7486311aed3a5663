"""Small projects for tests that build real images."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support import mreg

NOTE = 'it\'s "quoted" $HOME ${PATH} \\ back`id`'
SPEC = """
[model]
name = "tiny"
[python]
base_image = "python:3.11-slim"
[packages]
shared = {shared}
[system_packages]
shared = {system}
[images]
{repository}
[images.labels]
note = {note}
[stages.serve]
copy = ["app.py"]
command = ["python", "app.py", "$HOME"]
"""


def tiny_project(
    directory: Path,
    *,
    repository: str | None = None,
    shared: tuple[str, ...] = (),
    system: tuple[str, ...] = (),
    extra: str = "",
) -> Path:
    """A small spec (no Python packages unless asked; `extra` TOML appended), locked."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "app.py").write_text("import sys\nprint('tiny says', *sys.argv[1:])\n")
    text = SPEC.format(
        shared=json.dumps(list(shared)),
        system=json.dumps(list(system)),
        repository=f'repository = "{repository}"' if repository else "",
        note=json.dumps(NOTE),
    )
    (directory / "registry.toml").write_text(text + extra)
    if not shared or all(" " not in requirement and ";" not in requirement for requirement in shared):
        mreg("lock", cwd=directory, check=False)
    return directory
